/**
 * Step 1 of the pipeline: extract the inbound credential from an Authorization header value.
 * Only the Authorization header is read (no query or cookie tokens, reference sidecar-http-api §4);
 * the scheme word is matched case-insensitively.
 */
import { SidecarError } from '../errors.js';

export type InboundCredential =
  | { readonly kind: 'none' }
  | { readonly kind: 'bearer'; readonly token: string }
  | { readonly kind: 'pop'; readonly token: string };

const NONE: InboundCredential = { kind: 'none' };
/**
 * Longer tokens are refused before any parsing. Entra's are a few KB, but an encrypted token for a
 * user in many groups passes 16 KiB (200 groups: ~16.8 KB), and Microsoft's sidecar takes any token
 * its 32 KB header block holds; `Sidecar:Http:MaxHeaderBytes` (Envoy's header limit, on the
 * ext_authz door) is what bounds a token first. This is the validator's own bound on a token.
 */
export const MAX_TOKEN_LENGTH = 64 * 1024;

/**
 * Parses `Bearer <token>` / `PoP <token>`. Another scheme, or a scheme with no token, counts as no
 * credential (ASP.NET's JwtBearer answers NoResult → a plain `Bearer` challenge); a bearer value
 * that cannot be a compact token throws credential_malformed.
 */
export function parseAuthorization(header: string | undefined): InboundCredential {
  if (header === undefined || header === '') return NONE;
  const space = header.indexOf(' ');
  if (space <= 0) return NONE;
  const scheme = header.slice(0, space).toLowerCase();
  if (scheme !== 'bearer' && scheme !== 'pop') return NONE;
  const token = header.slice(space + 1).trim();
  if (token === '') return NONE;
  if (token.length > MAX_TOKEN_LENGTH || /\s/.test(token)) throw new SidecarError('credential_malformed');
  return scheme === 'bearer' ? { kind: 'bearer', token } : { kind: 'pop', token };
}

/** Whether `header` starts with `Bearer ` (the scheme in any case, one space), without a copy. */
function bearerPrefix(header: string): boolean {
  return (
    header.length > 7 &&
    header.charCodeAt(6) === 0x20 &&
    (header.charCodeAt(0) | 0x20) === 0x62 && // b
    (header.charCodeAt(1) | 0x20) === 0x65 && // e
    (header.charCodeAt(2) | 0x20) === 0x61 && // a
    (header.charCodeAt(3) | 0x20) === 0x72 && // r
    (header.charCodeAt(4) | 0x20) === 0x65 && // e
    (header.charCodeAt(5) | 0x20) === 0x72 // r
  );
}

/**
 * The token of the common form, `Bearer <token>` with exactly one space and no surrounding
 * whitespace, without the copies parseAuthorization makes; undefined for anything else (then call
 * parseAuthorization, which also tells the other forms apart and rejects bad ones). What it returns
 * is what parseAuthorization would return as a bearer token, except that it does not check for
 * whitespace inside: a caller must only use it to look up tokens that passed validation before.
 */
export function plainBearerToken(header: string | undefined): string | undefined {
  if (header === undefined || !bearerPrefix(header)) return undefined;
  if (header.length - 7 > MAX_TOKEN_LENGTH || header.charCodeAt(7) <= 0x20 || header.charCodeAt(header.length - 1) <= 0x20) return undefined;
  return header.slice(7);
}
