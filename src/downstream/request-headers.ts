/**
 * Which configured/overridden `ExtraHeaderParameters` may reach a downstream API. Reserved names
 * are those that carry the caller's identity, steer proxies or framing, or would let a caller
 * replace the token the sidecar attaches (reference sidecar-http-api §2.4 step 7; Microsoft's
 * ReservedHeaderNames plus the framing headers undici owns).
 */
import { isToken } from './media-type.js';

const RESERVED_NAMES = new Set([
  'authorization', 'cookie', 'host', 'x-original-url',
  'x-ms-client-principal', 'x-ms-client-principal-id', 'x-ms-client-principal-name', 'x-ms-client-principal-idp',
  'content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'keep-alive', 'proxy-authorization',
  // Content-Type belongs to the forwarded body; Expect and Trailer change the framing.
  'content-type', 'expect', 'trailer',
]);
const RESERVED_PREFIXES = ['x-forwarded-', 'x-ms-token-', 'proxy-', 'sec-'];

/** True when a header name may never be set through ExtraHeaderParameters (case-insensitive). */
export function isReservedHeaderName(name: string): boolean {
  const lower = name.toLowerCase();
  return RESERVED_NAMES.has(lower) || RESERVED_PREFIXES.some((p) => lower.startsWith(p));
}

/**
 * Header names that look like they carry a credential; they are dropped, like Authorization,
 * when a redirect leaves the BaseUrl's origin.
 */
export function isCredentialLikeHeaderName(name: string): boolean {
  return /auth|token|key|secret|cookie|session|passw|credential|signature|csrf|xsrf/i.test(name);
}

/** RFC 9110 field-value characters (what undici accepts): no CR, LF, NUL or other controls. */
export function isValidHeaderValue(value: string): boolean {
  return !/[^\t\x20-\x7e\x80-\xff]/.test(value);
}

export interface SkippedHeader {
  readonly name: string;
  readonly reason: 'reserved' | 'invalid_name' | 'invalid_value' | 'duplicate';
}

/**
 * Adds the usable ExtraHeaderParameters to `headers` (which already holds the sidecar's own
 * headers) and reports the skipped ones by name. Never overwrites a header already present.
 */
export function addExtraHeaders(
  headers: Record<string, string>,
  extra: Readonly<Record<string, string>>,
): SkippedHeader[] {
  const skipped: SkippedHeader[] = [];
  const present = new Set(Object.keys(headers).map((n) => n.toLowerCase()));
  for (const [name, value] of Object.entries(extra)) {
    if (!isToken(name)) skipped.push({ name: sanitizeName(name), reason: 'invalid_name' });
    else if (isReservedHeaderName(name)) skipped.push({ name, reason: 'reserved' });
    else if (typeof value !== 'string' || !isValidHeaderValue(value)) skipped.push({ name, reason: 'invalid_value' });
    else if (present.has(name.toLowerCase())) skipped.push({ name, reason: 'duplicate' });
    else {
      headers[name] = value;
      present.add(name.toLowerCase());
    }
  }
  return skipped;
}

/** A header name made safe for a log line (an invalid name could carry CR/LF). */
function sanitizeName(name: string): string {
  return JSON.stringify(name.slice(0, 64));
}
