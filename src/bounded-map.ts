/**
 * The one way this codebase bounds an insertion-ordered Map: the key goes to the newest end and the
 * oldest entries beyond `max` are dropped. Used by every cache and memo that has no eviction
 * bookkeeping of its own.
 */
export function setNewest<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) map.delete(map.keys().next().value as K);
}
