/**
 * Turns a downstream response into the `DownstreamApiResult` shape Microsoft's sidecar returns
 * (`{ statusCode, headers, content }`, reference sidecar-http-api §2.4 step 8), with two
 * documented extensions: bodies that are not valid text as base64 (`contentEncoding: 'base64'`)
 * and, when configured, every end-to-end response header instead of only the content headers.
 */
import { TextDecoder } from 'node:util';
import { isTextualEssence, parseMediaType } from './media-type.js';

/** Content headers in the casing .NET's HttpContentHeaders uses (what Microsoft's sample shows). */
const CONTENT_HEADERS: ReadonlyMap<string, string> = new Map([
  ['content-type', 'Content-Type'],
  ['content-length', 'Content-Length'],
  ['content-encoding', 'Content-Encoding'],
  ['content-language', 'Content-Language'],
  ['content-location', 'Content-Location'],
  ['content-disposition', 'Content-Disposition'],
  ['content-range', 'Content-Range'],
  ['content-md5', 'Content-MD5'],
  ['expires', 'Expires'],
  ['last-modified', 'Last-Modified'],
  ['allow', 'Allow'],
]);

/** Well-known names whose casing is not plain Title-Case. */
const SPECIAL_CASING: ReadonlyMap<string, string> = new Map([
  ['etag', 'ETag'],
  ['www-authenticate', 'WWW-Authenticate'],
  ['content-md5', 'Content-MD5'],
  ['odata-version', 'OData-Version'],
  ['x-ms-request-id', 'x-ms-request-id'],
  ['x-ms-ags-diagnostic', 'x-ms-ags-diagnostic'],
  ['request-id', 'request-id'],
  ['client-request-id', 'client-request-id'],
]);

/** Headers .NET parses as comma-separated lists, so Microsoft returns one array element per item. */
const LIST_VALUED = new Set(['allow', 'content-encoding', 'content-language']);

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

export type RawResponseHeaders = Record<string, string | string[] | undefined>;

/** One canonical spelling for a lower-case header name. */
export function canonicalHeaderName(lower: string): string {
  return CONTENT_HEADERS.get(lower) ?? SPECIAL_CASING.get(lower) ?? lower.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());
}

function valuesOf(lower: string, value: string | string[]): string[] {
  const lines = Array.isArray(value) ? value : [value];
  if (!LIST_VALUED.has(lower)) return lines;
  return lines.flatMap((l) => l.split(',')).map((v) => v.trim()).filter((v) => v !== '');
}

/**
 * The headers to return: only content headers by default (Microsoft), or every header except
 * hop-by-hop ones (RFC 9110 §7.6.1, including those named in Connection) and Set-Cookie.
 *
 * `bodyLength` (the length of the body as received) becomes `Content-Length` when the downstream
 * sent none (a chunked answer, a 204): Microsoft's endpoint reads .NET's
 * `HttpContentHeaders.ContentLength` before it copies the headers, and for a buffered body that
 * getter computes the length and stores it as a header. A length the server sent is kept (a HEAD
 * answer reports what a GET would carry).
 */
export function selectResponseHeaders(raw: RawResponseHeaders, returnAll: boolean, bodyLength?: number): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  const connectionListed = new Set<string>();
  const connection = raw['connection'];
  for (const line of connection === undefined ? [] : Array.isArray(connection) ? connection : [connection]) {
    for (const name of line.split(',')) connectionListed.add(name.trim().toLowerCase());
  }
  for (const [name, value] of Object.entries(raw)) {
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    const keep = returnAll
      ? !HOP_BY_HOP.has(lower) && !lower.startsWith('proxy-') && lower !== 'set-cookie' && !connectionListed.has(lower)
      : CONTENT_HEADERS.has(lower);
    if (!keep) continue;
    const key = canonicalHeaderName(lower);
    out[key] = [...(out[key] ?? []), ...valuesOf(lower, value)];
  }
  if (bodyLength !== undefined && out['Content-Length'] === undefined) out['Content-Length'] = [String(bodyLength)];
  return out;
}

export interface DecodedContent {
  readonly content: string | null;
  readonly contentEncoding?: 'base64';
}

/**
 * The body as the caller sees it (reference §2.4 step 8: "decoded as text, charset from
 * Content-Type"); null when empty. Base64 is kept for bodies text would corrupt:
 * - a textual media type (isTextualEssence): decoded with its charset, UTF-8 by default, invalid
 *   bytes replaced as .NET's ReadAsStringAsync does;
 * - any other type that declares a charset: decoded with it when the bytes are valid in it;
 * - any other type, none or an unparseable one: UTF-8 when the bytes are valid UTF-8 (vendor
 *   and unlisted text types such as application/toml or application/vnd.acme.v1);
 * - in both of these a leading byte order mark stays in the text (U+FEFF), so the text encodes
 *   back to exactly the bytes received;
 * - otherwise (a PNG, invalid bytes), for a charset Node cannot decode, or with a
 *   Content-Encoding (gzip, br, ...): base64.
 */
export function decodeContent(body: Buffer, contentType: string | undefined, contentEncoding: string | undefined): DecodedContent {
  if (body.length === 0) return { content: null };
  const base64 = (): DecodedContent => ({ content: body.toString('base64'), contentEncoding: 'base64' });

  const coded = (contentEncoding ?? '').split(',').map((c) => c.trim().toLowerCase()).filter((c) => c !== '' && c !== 'identity');
  if (coded.length > 0) return base64();

  const type = parseMediaType(contentType);
  // A textual type is text whatever its bytes (invalid ones replaced, as .NET's ReadAsStringAsync
  // does); any other body is text only when its bytes are valid in its charset, UTF-8 by default.
  const lenient = type !== undefined && isTextualEssence(type.essence);
  let decoder: TextDecoder;
  try {
    // A strict decode must give back the exact bytes when the text is encoded again, so it keeps a
    // leading byte order mark as U+FEFF (TextDecoder drops it by default: an octet-stream starting
    // EF BB BF would lose three bytes without a trace). The lenient path strips it, as .NET's
    // ReadAsStringAsync does for the textual types Microsoft's sidecar returns.
    decoder = new TextDecoder(type?.parameters.get('charset') ?? 'utf-8', { fatal: !lenient, ignoreBOM: !lenient });
  } catch {
    return base64(); // a charset we cannot decode: keep the bytes intact instead of guessing
  }
  try {
    return { content: decoder.decode(body) };
  } catch {
    return base64(); // not valid in the charset it (or UTF-8 by default) implies: bytes, not text
  }
}
