/**
 * Steps 1–2 of the pipeline for callers that present a bearer token: extract, then validate.
 */
import { SidecarError } from '../errors.js';
import { parseAuthorization, plainBearerToken } from './credential.js';
import type { TokenValidator, ValidatedToken } from './types.js';

/**
 * Whether `token` is one the validator has cached: then it hands out this very (frozen) object again
 * for every later request with the token, so it is worth keying memos on. A token verified without
 * caching (its first sight) is a fresh object no later request will present (pipeline/types.ts).
 */
export function isCachedToken(token: ValidatedToken): boolean {
  return Object.isFrozen(token);
}

/** What authenticateNow() answers for a caller who is let in without a token (`optional`). */
export const ANONYMOUS = 'anonymous';

/**
 * authenticate() in the same tick when it can, with the same modes: the validated token of a plain
 * `Bearer <token>` header (cached, or verified now), or ANONYMOUS where `optional` lets the caller in
 * without one; `required` throws the error authenticate() would reject with. undefined when the full
 * path must decide (a header of another shape, or validation has to wait).
 */
export function authenticateNow(validator: TokenValidator, authorization: string | undefined, mode: 'required'): ValidatedToken | undefined;
export function authenticateNow(validator: TokenValidator, authorization: string | undefined, mode: 'required' | 'optional'): ValidatedToken | typeof ANONYMOUS | undefined;
export function authenticateNow(validator: TokenValidator, authorization: string | undefined, mode: 'required' | 'optional'): ValidatedToken | typeof ANONYMOUS | undefined {
  if (mode === 'optional') {
    if (authorization === undefined) return ANONYMOUS;
    try {
      return authenticateNow(validator, authorization, 'required');
    } catch {
      return ANONYMOUS;
    }
  }
  const token = plainBearerToken(authorization);
  return token === undefined ? undefined : validator.validateNow(token);
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
