/**
 * GUIDs as .NET's Guid.TryParse reads the common forms, for every GUID a caller or the config
 * names (query overrides, agent user ids, AcquireTokenOptions:CorrelationId): one parser, so a
 * value the query accepts is never refused in the config, or the other way round.
 */

const GUID = /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$/i;
const BRACED_GUID = /^(?:\{([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\}|\(([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\))$/i;

/** The all-zero GUID (.NET's Guid.Empty). */
export const EMPTY_GUID = '00000000-0000-0000-0000-000000000000';

/**
 * Parses the `D` (hyphens), `N` (32 digits), `B` (`{…}`) and `P` (`(…)`) forms, surrounding white
 * space allowed; returns the `D` form in lower case (what a token request sends) or undefined.
 */
export function parseGuid(value: string): string | undefined {
  const v = value.trim();
  const braced = BRACED_GUID.exec(v);
  const bare = braced ? (braced[1] ?? braced[2]) : v;
  if (!GUID.test(bare)) return undefined;
  const hex = bare.replace(/-/g, '').toLowerCase();
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
