/**
 * The one way this codebase bounds an insertion-ordered Map it writes to: the key goes to the newest
 * end and the oldest entries beyond `max` are dropped. Used by every memo that has no eviction
 * bookkeeping of its own. A cache whose reads should keep an entry alive is an LruMap (below): never
 * call this on every read of the same key.
 */
export function setNewest<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) map.delete(map.keys().next().value as K);
}

/**
 * A Map bounded to `max` entries that drops the least recently used one, nearly: a read moves an
 * entry to the newest end only once a quarter of the map has been added or moved after it.
 *
 * Why not delete and re-add on every hit: V8 leaves a deleted Map entry in its bucket's chain until
 * the table is next rehashed, so deleting and re-adding one key again and again lengthens that
 * key's own chain by one per hit, and every lookup of it walks the chain. On a 10,000-entry Map one
 * such hit cost 27 µs, and a warm /Validate with a full verified-token cache 72 µs instead of 39
 * (bench/README.md, finding 18). Moved at most once per max/4 operations, a hot key's chain stays
 * short. Small maps (up to 7 entries) are exact LRU; an entry read at least once every max/4
 * operations is never evicted.
 */
export class LruMap<K, V> {
  readonly #entries = new Map<K, { value: V; stamp: number }>();
  readonly #max: number;
  /** Counts insertions and moves; an entry's stamp is the count when it last reached the newest end. */
  #clock = 0;

  constructor(max: number) {
    this.#max = Math.max(0, Math.floor(max));
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The value, marked as recently used. */
  get(key: K): V | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (this.#clock - entry.stamp > this.#entries.size >>> 2) {
      this.#entries.delete(key);
      this.#entries.set(key, entry);
      entry.stamp = ++this.#clock;
    }
    return entry.value;
  }

  /** The value, without marking it as used. */
  peek(key: K): V | undefined {
    return this.#entries.get(key)?.value;
  }

  /** Stores `value` as the newest entry; returns how many of the oldest were dropped to stay within `max`. */
  set(key: K, value: V): number {
    this.#entries.delete(key);
    this.#entries.set(key, { value, stamp: ++this.#clock });
    let evicted = 0;
    while (this.#entries.size > this.#max) {
      this.#entries.delete(this.#entries.keys().next().value as K);
      evicted++;
    }
    return evicted;
  }

  delete(key: K): boolean {
    return this.#entries.delete(key);
  }

  clear(): void {
    this.#entries.clear();
  }
}
