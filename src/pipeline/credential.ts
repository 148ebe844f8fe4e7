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
/** Entra tokens are far smaller; anything longer is refused before any parsing. */
export const MAX_TOKEN_LENGTH = 16 * 1024;

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
