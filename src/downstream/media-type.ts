/**
 * Media types (RFC 9110 §8.3.1) as far as the downstream call needs them: is the inbound
 * Content-Type usable, which charset does a response declare, and is a body text or bytes.
 */

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export interface MediaType {
  /** `type/subtype`, lower-case. */
  readonly essence: string;
  /** Parameter names lower-case, values unquoted. */
  readonly parameters: ReadonlyMap<string, string>;
}

/** True when `s` is an RFC 9110 token (method names, header names, media type parts). */
export function isToken(s: string): boolean {
  return TOKEN.test(s);
}

/** Parses `type/subtype *(; name=value)`; undefined for blank or malformed values. */
export function parseMediaType(value: string | undefined): MediaType | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (text === '' || /[\r\n\0]/.test(text)) return undefined;
  const semi = text.indexOf(';');
  const essence = (semi < 0 ? text : text.slice(0, semi)).trim();
  const slash = essence.indexOf('/');
  if (slash <= 0 || !isToken(essence.slice(0, slash)) || !isToken(essence.slice(slash + 1))) return undefined;

  const parameters = new Map<string, string>();
  let rest = semi < 0 ? '' : text.slice(semi + 1);
  while (rest.trim() !== '') {
    const m = /^\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*(?:;|$)/.exec(rest);
    if (!m) return undefined;
    const raw = m[2];
    parameters.set(m[1].toLowerCase(), raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw);
    rest = rest.slice(m[0].length);
  }
  return { essence: essence.toLowerCase(), parameters };
}

/**
 * Whether the media type itself names text: text/*, JSON and XML (also `+json`/`+xml` suffixes),
 * YAML (also `+yaml`), newline-delimited JSON, compact JWTs, JavaScript and form-urlencoded.
 * A body of such a type is text even when its bytes are not valid in its charset.
 */
export function isTextualEssence(essence: string): boolean {
  const e = essence;
  return (
    e.startsWith('text/') ||
    e === 'application/json' ||
    e.endsWith('+json') ||
    e.endsWith('+xml') ||
    e.endsWith('+yaml') ||
    e === 'application/xml' ||
    e === 'application/yaml' ||
    e === 'application/x-yaml' ||
    e === 'application/x-ndjson' ||
    e === 'application/ndjson' ||
    e === 'application/jwt' ||
    e === 'application/javascript' ||
    e === 'application/x-www-form-urlencoded'
  );
}

/**
 * Whether a body of this media type is text: a textual essence, or any type that declares a
 * charset (a charset only means something for text, RFC 2046 §4.1.2). This is a judgement on the
 * type alone: a response of any other type can still be text when its bytes are valid UTF-8
 * (decodeContent), but the request side (forwardedBody) only labels what the type says.
 */
export function isTextualMediaType(type: MediaType): boolean {
  return isTextualEssence(type.essence) || type.parameters.has('charset');
}
