/**
 * Signed HTTP Requests (SHR), the PoP format Entra-bound tokens are presented in (reference
 * entra-protocol §6.2, draft-ietf-oauth-signed-http-request-03 as Microsoft uses it): a compact
 * JWS with header `typ: pop` and payload `at` (the PoP access token), `ts`, `m`, `u`, `p`, optional
 * `q`, a random `nonce` and `cnf: { jwk }`, the public key the token's `cnf.kid` names.
 *
 * One module signs (the sidecar's outbound SignHttpRequest) and verifies (inbound PoP on
 * `/Validate`, and test downstreams), so both sides agree on every encoding.
 */
import { createHash, randomUUID, type KeyObject } from 'node:crypto';
import type { JWK, ProtectedHeaderParameters } from 'jose';

// jose is imported where it is used: only PoP deployments need it, and it costs ≈45 ms at start-up.

/** Algorithms an SHR may be signed with; symmetric and `none` are never accepted. */
export const SHR_ALGORITHMS = ['RS256', 'PS256', 'ES256'] as const;

/** Why an SHR was refused (logged, never shown to the caller). */
export class ShrError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ShrError';
  }
}

/** The claims of an SHR this module reads or writes. */
export interface ShrPayload {
  readonly at: string;
  readonly ts: number;
  readonly m?: string;
  readonly u?: string;
  readonly p?: string;
  /** `[[names…], b64url(SHA-256("n1=v1&n2=v2"))]`. */
  readonly q?: [string[], string];
  readonly nonce?: string;
  readonly cnf: { readonly jwk: JWK };
}

/** The RFC 7638 SHA-256 thumbprint of a public JWK (what `cnf.kid` in a PoP token holds). */
export async function jwkThumbprint(jwk: JWK): Promise<string> {
  const { calculateJwkThumbprint } = await import('jose');
  return calculateJwkThumbprint(jwk, 'sha256');
}

/** `req_cnf` for a token request: base64url of `{"kid":"<thumbprint>"}` (MSAL.NET's form, entra-protocol §6.1). */
export function reqCnfFor(thumbprint: string): string {
  return Buffer.from(JSON.stringify({ kid: thumbprint })).toString('base64url');
}

/** The JWK members of a public key (private members stripped, so `d` never leaves). */
export function publicMembers(jwk: JWK): JWK {
  const { kty, n, e, crv, x, y } = jwk;
  return Object.fromEntries(Object.entries({ kty, n, e, crv, x, y }).filter(([, v]) => v !== undefined)) as JWK;
}

function b64urlSha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('base64url');
}

/** The query parameters of a URL as (name, value) pairs, names in first-seen order. */
function queryPairs(url: URL): Array<[string, string]> {
  return [...url.searchParams.entries()];
}

/** `q` over the URL's query: every parameter, in order (names and values percent-encoded as Microsoft does). */
export function queryClaim(url: URL): [string[], string] | undefined {
  const pairs = queryPairs(url);
  if (pairs.length === 0) return undefined;
  const names = pairs.map(([n]) => n);
  if (new Set(names).size !== names.length) return undefined; // repeated names cannot be signed unambiguously
  return [names, b64urlSha256(pairs.map(([n, v]) => `${encodeURIComponent(n)}=${encodeURIComponent(v)}`).join('&'))];
}

/** The signing key of an SHR: its private half, public JWK and RFC 7638 thumbprint. */
export interface ShrSigningKey {
  readonly privateKey: KeyObject;
  readonly publicJwk: JWK;
  readonly thumbprint: string;
  readonly alg: (typeof SHR_ALGORITHMS)[number];
}

export interface ShrRequest {
  readonly accessToken: string;
  readonly method: string;
  readonly url: URL;
  /** Epoch seconds; defaults to now. */
  readonly nowSec?: number;
  readonly nonce?: string;
}

/** Signs an SHR for one HTTP request with `key` (header `typ: pop`, `kid` = the key's thumbprint). */
export async function signShr(key: ShrSigningKey, req: ShrRequest): Promise<string> {
  const q = queryClaim(req.url);
  const payload = {
    at: req.accessToken,
    ts: req.nowSec ?? Math.floor(Date.now() / 1000),
    m: req.method.toUpperCase(),
    u: req.url.host,
    p: req.url.pathname,
    ...(q ? { q } : {}),
    nonce: req.nonce ?? randomUUID().replace(/-/g, ''),
    cnf: { jwk: publicMembers(key.publicJwk) },
  };
  const { CompactSign } = await import('jose');
  return new CompactSign(Buffer.from(JSON.stringify(payload)))
    .setProtectedHeader({ alg: key.alg, typ: 'pop', kid: key.thumbprint })
    .sign(key.privateKey);
}

/** The payload of an SHR before any check (to find the embedded `at`); throws ShrError when it is not one. */
export function decodeShr(shr: string): ShrPayload {
  const parts = shr.split('.');
  if (parts.length !== 3 || parts.some((p) => p === '' || !/^[\w-]+$/.test(p))) throw new ShrError('The signed HTTP request is not a compact JWS.');
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    throw new ShrError('The signed HTTP request payload is not JSON.');
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) throw new ShrError('The signed HTTP request payload is not an object.');
  const p = payload as Record<string, unknown>;
  if (typeof p.at !== 'string' || p.at === '') throw new ShrError("The signed HTTP request has no 'at' claim.");
  const cnf = p.cnf as { jwk?: unknown } | undefined;
  if (!cnf || typeof cnf !== 'object' || !cnf.jwk || typeof cnf.jwk !== 'object' || Array.isArray(cnf.jwk)) throw new ShrError("The signed HTTP request has no 'cnf.jwk' claim.");
  return p as unknown as ShrPayload;
}

/** What the request the SHR claims to describe must match, and which claims to check. */
export interface ShrVerification {
  /** Thumbprint the access token's `cnf.kid` binds it to. */
  readonly boundKid: string;
  readonly method: string;
  readonly url: URL;
  readonly validateM: boolean;
  readonly validateU: boolean;
  readonly validateP: boolean;
  readonly validateQ: boolean;
  readonly acceptUnsignedQueryParameters: boolean;
  /** Check the claims named in `claimsToValidateWhenPresent` whenever the SHR carries them. */
  readonly validatePresentClaims?: boolean;
  readonly claimsToValidateWhenPresent?: readonly string[];
  readonly lifetimeSec: number;
  /** Tolerated clock difference for a `ts` in the future. */
  readonly clockSkewSec: number;
  readonly nowSec?: number;
}

function hostMatches(u: string, url: URL): boolean {
  const claimed = u.toLowerCase();
  // `u` is host or host:port (reference §2.2); URL.host omits a default port.
  return claimed === url.host.toLowerCase() || claimed === url.hostname.toLowerCase() || claimed === `${url.hostname}:${url.port || (url.protocol === 'https:' ? '443' : '80')}`.toLowerCase();
}

function trimSlash(path: string): string {
  return path.length > 1 ? path.replace(/\/+$/, '') : path;
}

function checkQuery(q: unknown, url: URL, acceptUnsigned: boolean): void {
  if (!Array.isArray(q) || q.length !== 2 || !Array.isArray(q[0]) || typeof q[1] !== 'string' || !q[0].every((n) => typeof n === 'string')) {
    throw new ShrError("The 'q' claim is malformed.");
  }
  const names = q[0] as string[];
  const pairs = queryPairs(url);
  const values: string[] = [];
  for (const name of names) {
    const matching = pairs.filter(([n]) => n === name);
    if (matching.length !== 1) throw new ShrError(`The signed query parameter '${name}' is missing or repeated in the request.`);
    values.push(`${encodeURIComponent(name)}=${encodeURIComponent(matching[0][1])}`);
  }
  if (b64urlSha256(values.join('&')) !== q[1]) throw new ShrError("The 'q' claim does not match the request's query.");
  if (!acceptUnsigned && pairs.some(([n]) => !names.includes(n))) throw new ShrError('The request has query parameters the signed HTTP request does not cover.');
}

/**
 * Verifies an SHR: its key is the one the access token is bound to, its signature, its age and the
 * request binding. Returns the payload or throws ShrError. The embedded `at` must be validated by
 * the caller (it knows the issuer rules).
 */
export async function verifyShr(shr: string, v: ShrVerification): Promise<ShrPayload> {
  const payload = decodeShr(shr);
  const { compactVerify, decodeProtectedHeader, importJWK } = await import('jose');
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(shr);
  } catch {
    throw new ShrError('The signed HTTP request header is not JSON.');
  }
  const alg = header.alg;
  if (typeof alg !== 'string' || !(SHR_ALGORITHMS as readonly string[]).includes(alg)) throw new ShrError(`The signed HTTP request algorithm '${String(alg)}' is not allowed.`);
  if (header.typ !== undefined && String(header.typ).toLowerCase() !== 'pop') throw new ShrError("The signed HTTP request header 'typ' is not 'pop'.");
  const jwk = payload.cnf.jwk;
  if ('d' in jwk || 'k' in jwk) throw new ShrError("The 'cnf.jwk' claim is not a public key.");
  let thumbprint: string;
  try {
    thumbprint = await jwkThumbprint(jwk);
  } catch {
    throw new ShrError("The 'cnf.jwk' claim is not a usable key.");
  }
  if (thumbprint !== v.boundKid) throw new ShrError("The 'cnf.jwk' key is not the key the access token is bound to.");
  try {
    const key = await importJWK(jwk, alg);
    await compactVerify(shr, key, { algorithms: [alg] });
  } catch {
    throw new ShrError('The signed HTTP request signature is invalid.');
  }

  const now = v.nowSec ?? Math.floor(Date.now() / 1000);
  if (typeof payload.ts !== 'number' || !Number.isFinite(payload.ts)) throw new ShrError("The signed HTTP request has no numeric 'ts' claim.");
  if (payload.ts + v.lifetimeSec < now) throw new ShrError('The signed HTTP request is too old.');
  if (payload.ts > now + v.clockSkewSec) throw new ShrError('The signed HTTP request is from the future.');

  const present = (claim: string): boolean =>
    v.validatePresentClaims === true && (v.claimsToValidateWhenPresent ?? []).some((c) => c.toLowerCase() === claim) && (payload as unknown as Record<string, unknown>)[claim] !== undefined;
  if (v.validateM || present('m')) {
    if (typeof payload.m !== 'string' || payload.m.toUpperCase() !== v.method.toUpperCase()) throw new ShrError("The 'm' claim does not match the request method.");
  }
  if (v.validateU || present('u')) {
    if (typeof payload.u !== 'string' || !hostMatches(payload.u, v.url)) throw new ShrError("The 'u' claim does not match the request host.");
  }
  if (v.validateP || present('p')) {
    if (typeof payload.p !== 'string' || trimSlash(payload.p) !== trimSlash(v.url.pathname)) throw new ShrError("The 'p' claim does not match the request path.");
  }
  if (payload.q !== undefined && (v.validateQ || present('q'))) {
    checkQuery(payload.q, v.url, v.acceptUnsignedQueryParameters);
  } else if (v.validateQ && queryPairs(v.url).length > 0) {
    throw new ShrError("The signed HTTP request has no 'q' claim although the request has a query.");
  }
  return payload;
}
