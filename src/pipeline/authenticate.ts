/**
 * Steps 1–2 of the pipeline for callers that present a bearer token: extract, then validate.
 */
import { SidecarError } from '../errors.js';
import { MAX_TOKEN_LENGTH, parseAuthorization } from './credential.js';
import type { TokenValidator, ValidatedToken } from './types.js';

/**
 * Whether `token` is one the validator has cached: then it hands out this very (frozen) object again
 * for every later request with the token, so it is worth keying memos on. A token verified without
 * caching (its first sight) is a fresh object no later request will present (pipeline/types.ts).
 */
export function isCachedToken(token: ValidatedToken): boolean {
  return Object.isFrozen(token);
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
 * The warm path of `authenticate(…, 'required')`, synchronous: the validated token of a plain
 * `Bearer <token>` header when the validator has the token cached, else undefined and the caller
 * takes the full path (which also produces every error). A cached token passed parseAuthorization
 * and validation before and is compared in full, so the answer is the one the full path would give.
 */
export function cachedCaller(validator: TokenValidator, authorization: string | undefined): ValidatedToken | undefined {
  if (authorization === undefined || !bearerPrefix(authorization)) return undefined;
  // Surrounding whitespace is the full path's to trim; a cached token never contains any.
  if (authorization.length - 7 > MAX_TOKEN_LENGTH || authorization.charCodeAt(7) <= 0x20 || authorization.charCodeAt(authorization.length - 1) <= 0x20) return undefined;
  return validator.cached(authorization.slice(7));
}

/**
 * `required`: no credential → credential_missing; a bad one → the validator's error.
 * `optional`: no credential or an invalid one → anonymous (Microsoft's unauthenticated routes still
 * validate a token if one is sent and use it for OBO when it is valid, reference §2 table).
 */
export async function authenticate(
  validator: TokenValidator,
  authorization: string | undefined,
  mode: 'required' | 'optional',
): Promise<ValidatedToken | undefined> {
  if (mode === 'optional') {
    try {
      const credential = parseAuthorization(authorization);
      return credential.kind === 'bearer' ? await validator.validate(credential.token) : undefined;
    } catch {
      return undefined;
    }
  }
  const credential = parseAuthorization(authorization);
  if (credential.kind !== 'bearer') throw new SidecarError('credential_missing');
  return validator.validate(credential.token);
}
