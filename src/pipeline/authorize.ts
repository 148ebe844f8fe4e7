/**
 * Step 3 of the pipeline: scope and role checks on a validated token.
 */
import type { JWTPayload } from 'jose';
import { SidecarError } from '../errors.js';

const SCOPE_CLAIMS = ['scp', 'http://schemas.microsoft.com/identity/claims/scope'] as const;
const ROLE_CLAIMS = ['roles', 'role'] as const;

function claimValues(claims: JWTPayload, names: readonly string[]): string[] {
  const out: string[] = [];
  for (const name of names) {
    const v = claims[name];
    if (typeof v === 'string') out.push(...v.split(' ').filter(Boolean));
    else if (Array.isArray(v)) for (const item of v) if (typeof item === 'string') out.push(item);
  }
  return out;
}

/**
 * The scopes Microsoft.Identity.Web's IDW10203 check reads: the first `scp` claim, else the first
 * long-form scope claim, split on spaces (an array-valued claim is one claim per element, and only
 * the first is read). Narrower than tokenScopes(), which the ext_authz rules use.
 */
export function firstScopeClaim(claims: JWTPayload): string[] {
  for (const name of SCOPE_CLAIMS) {
    const v = claims[name];
    const first = typeof v === 'string' ? v : Array.isArray(v) ? v[0] : undefined;
    if (typeof first === 'string') return first.split(' ').filter(Boolean);
  }
  return [];
}

/** Delegated scopes of a token (`scp`, space-separated). */
export function tokenScopes(claims: JWTPayload): string[] {
  return claimValues(claims, SCOPE_CLAIMS);
}

/** App roles of a token (`roles`). */
export function tokenRoles(claims: JWTPayload): string[] {
  return claimValues(claims, ROLE_CLAIMS);
}

/**
 * Requires the token to carry the given scopes/roles: any one of them by default, every one with
 * `all`. Empty requirements pass. Failure → insufficient_scope naming what was required.
 */
export function requireScopesOrRoles(
  claims: JWTPayload,
  requiredScopes: readonly string[],
  requiredRoles: readonly string[],
  all: boolean,
): void {
  if (requiredScopes.length === 0 && requiredRoles.length === 0) return;
  const scopes = new Set(tokenScopes(claims));
  const roles = new Set(tokenRoles(claims));
  const results = [...requiredScopes.map((s) => scopes.has(s)), ...requiredRoles.map((r) => roles.has(r))];
  const ok = all ? results.every(Boolean) : results.some(Boolean);
  if (!ok) {
    const named = [...requiredScopes, ...requiredRoles].join(' ');
    // The challenge's scope= lists OAuth scopes a client can request (RFC 6750 §3); app roles are
    // assigned, not requested, so they are named in the detail only.
    const scope = requiredScopes.join(' ');
    throw new SidecarError('insufficient_scope', `The token lacks the required scope or role: ${named}.`, scope === '' ? {} : { scope });
  }
}
