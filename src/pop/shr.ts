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
  /** `[[names…], b64url(SHA-256("n1=v1&n2=v2"))]`, the raw escaped pieces (see queryClaim). */
  readonly q?: [string[], string];
  /** `[[header names…], b64url(SHA-256("name: value\n…"))]`; we never sign one. */
  readonly h?: unknown;
  /** b64url(SHA-256(body)); we never sign one. */
  readonly b?: unknown;
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

/*
 * `q` and `p` are computed exactly as Microsoft's SignedHttpRequestHandler computes them, so an SHR
 * we sign passes Microsoft's ValidateQClaim/ValidatePClaim and one Microsoft signs passes ours
 * (Microsoft.IdentityModel.Protocols.SignedHttpRequest, SignedHttpRequestHandler.cs in
 * AzureAD/azure-activedirectory-identitymodel-extensions-for-dotnet: SanitizeQueryParams, AddQClaim,
 * ValidateQClaim, AddPClaim, ValidatePClaim):
 *
 * - The query is `Uri.Query` minus its leading '?'s, split on '&', each piece split on '='. Only a
 *   piece with exactly one '=', a non-empty name and a non-empty value is signed; a name that occurs
 *   again is dropped altogether (draft-ietf-oauth-signed-http-request-03 §7.5), not the whole `q`.
 *   Names and values are hashed as they stand in `Uri.Query`, still percent-escaped: never decoded,
 *   never re-encoded. `q` = [[names in request order], b64url(SHA-256(UTF-8 "n1=v1&n2=v2"))], written
 *   even when nothing is signed (`[[], b64url(SHA-256(""))]`).
 * - Validation recomputes the hash in the order `q` lists the names; each must be among the request's
 *   signed parameters (once); parameters left over are refused unless AcceptUnsignedQueryParameters.
 * - `p` is `Uri.AbsolutePath`; validation trims every leading and trailing '/' from both sides.
 *
 * `Uri.Query` and `Uri.AbsolutePath` are the text as written with every character outside RFC 3986
 * unreserved + reserved ('#' excepted) percent-encoded as UTF-8 with upper-case hex, an existing %XX
 * kept as it is, and a '%' not followed by two hex digits written %25 (dotnet/runtime
 * System.Private.Uri: Uri.CheckCanonical, Uri.RecreateParts, Uri.GetCanonicalPath,
 * UriHelper.EscapeString with checkExistingEscaped and UnreservedReservedExceptHash). A WHATWG URL
 * differs: it leaves a bare % and | ^ alone (in a query also { } ` \), writes ' in a query as %27,
 * and URLSearchParams decodes. Not reproduced: .NET's IRI pass, which for a URI string holding raw
 * non-ASCII characters also unescapes some %XX (IriHelper.EscapeUnescapeIri).
 */

/** The characters .NET's Uri leaves unescaped in a query or path: RFC 3986 unreserved and reserved, except '#'. */
const URI_UNESCAPED = new Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,/:;=?@[]");

/** `text` escaped as .NET's Uri escapes a query or a path (UriHelper.EscapeString, existing escapes kept). */
function dotnetEscaped(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; ) {
    const c = text[i];
    if (c === '%' && /^[0-9A-Fa-f]{2}$/.test(text.slice(i + 1, i + 3))) {
      out += text.slice(i, i + 3);
      i += 3;
    } else if (URI_UNESCAPED.has(c)) {
      out += c;
      i += 1;
    } else {
      const ch = String.fromCodePoint(text.codePointAt(i) as number);
      // A lone surrogate becomes U+FFFD (EF BF BD), as in .NET.
      for (const byte of Buffer.from(ch, 'utf8')) out += '%' + byte.toString(16).toUpperCase().padStart(2, '0');
      i += ch.length;
    }
  }
  return out;
}

/**
 * The query of a request as .NET's `Uri.Query` holds it, without the '?'. A string (the inbound
 * `original-uri`) is read as written; a URL by what goes on the wire (`url.search`).
 */
function dotnetQuery(uri: URL | string): string {
  let raw: string;
  if (typeof uri === 'string') {
    const text = uri.trim();
    const hash = text.indexOf('#');
    const beforeFragment = hash < 0 ? text : text.slice(0, hash);
    const q = beforeFragment.indexOf('?');
    raw = q < 0 ? '' : beforeFragment.slice(q + 1);
  } else {
    raw = uri.search.slice(1);
  }
  return dotnetEscaped(raw);
}

/** The path of a request as .NET's `Uri.AbsolutePath` holds it (the WHATWG path is already dot-compressed). */
function dotnetPath(url: URL): string {
  return dotnetEscaped(url.pathname);
}

/** Microsoft's SanitizeQueryParams: the signable `name → value` pieces of a query, in request order. */
function signableParameters(query: string): Map<string, string> {
  const params = new Map<string, string>();
  const repeated = new Set<string>();
  const text = query.replace(/^\?+/, '');
  if (text === '') return params;
  for (const piece of text.split('&')) {
    const parts = piece.split('=');
    if (parts.length !== 2 || parts[0] === '') continue;
    const [name, value] = parts;
    // As in Microsoft's code a name is "seen" only once stored, so `a=&a=1` still signs a=1.
    if (params.has(name)) repeated.add(name);
    else if (value !== '') params.set(name, value);
  }
  for (const name of repeated) params.delete(name);
  return params;
}

/** `q` for a request URL, or for the text of one (see above): `[[names…], b64url(SHA-256("n1=v1&…"))]`. */
export function queryClaim(uri: URL | string): [string[], string] {
  const params = signableParameters(dotnetQuery(uri));
  return [[...params.keys()], b64urlSha256([...params].map(([n, v]) => `${n}=${v}`).join('&'))];
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
  const payload = {
    at: req.accessToken,
    ts: req.nowSec ?? Math.floor(Date.now() / 1000),
    m: req.method.toUpperCase(),
    // URL.host is host[:port], the port only when not the scheme's default (Microsoft's AddUClaim).
    u: req.url.host,
    p: dotnetPath(req.url),
    // Always, like Microsoft's AddQClaim: a validator with ValidateQ refuses an SHR without q.
    q: queryClaim(req.url),
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
  /**
   * The request URI as the caller wrote it (the `original-uri` header), when there is one: the query
   * is read from this text, as .NET would, not from `url`'s re-serialisation (which writes ' as %27).
   */
  readonly originalUri?: string;
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

/** ValidatePClaim compares `p` with `Trim('/')` on both sides. */
function trimSlashes(path: string): string {
  return path.replace(/^\/+|\/+$/g, '');
}

/** Microsoft's ValidateQClaim; `query` is the request's query as .NET's Uri.Query holds it. */
function checkQuery(q: unknown, query: string, acceptUnsigned: boolean): void {
  if (q === undefined || q === null) throw new ShrError("The signed HTTP request has no 'q' claim.");
  if (!Array.isArray(q) || q.length < 2 || !Array.isArray(q[0]) || typeof q[1] !== 'string' || !q[0].every((n) => typeof n === 'string')) {
    throw new ShrError("The 'q' claim is malformed.");
  }
  const params = signableParameters(query);
  const pieces: string[] = [];
  for (const name of q[0] as string[]) {
    const value = params.get(name);
    if (value === undefined) throw new ShrError(`The signed query parameter '${name}' is missing, empty or repeated in the request.`);
    pieces.push(`${name}=${value}`);
    params.delete(name); // covered; a name listed twice in q is then missing
  }
  if (!acceptUnsigned && params.size > 0) throw new ShrError('The request has query parameters the signed HTTP request does not cover.');
  if (b64urlSha256(pieces.join('&')) !== q[1]) throw new ShrError("The 'q' claim does not match the request's query.");
}

/**
 * Microsoft's ValidateHClaim as its sidecar runs it: `/Validate` never has the signed request's
 * headers (PopHttpRequestFactory sets only Uri and Method), so `h` can only cover none.
 */
function checkHeaders(h: unknown): void {
  if (!Array.isArray(h) || h.length < 2 || !Array.isArray(h[0]) || typeof h[1] !== 'string') throw new ShrError("The 'h' claim is malformed.");
  if (h[0].length > 0) throw new ShrError("The 'h' claim covers headers the request to validate does not carry.");
  if (h[1] !== b64urlSha256('')) throw new ShrError("The 'h' claim does not match the request's headers.");
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

  // Microsoft's ShouldValidate: a claim is "present" when it is there and not null.
  const present = (claim: string): boolean =>
    v.validatePresentClaims === true && (v.claimsToValidateWhenPresent ?? []).some((c) => c.toLowerCase() === claim) && (payload as unknown as Record<string, unknown>)[claim] != null;
  if (v.validateM || present('m')) {
    if (typeof payload.m !== 'string' || payload.m.toUpperCase() !== v.method.toUpperCase()) throw new ShrError("The 'm' claim does not match the request method.");
  }
  if (v.validateU || present('u')) {
    if (typeof payload.u !== 'string' || !hostMatches(payload.u, v.url)) throw new ShrError("The 'u' claim does not match the request host.");
  }
  if (v.validateP || present('p')) {
    if (typeof payload.p !== 'string' || trimSlashes(payload.p) !== trimSlashes(dotnetPath(v.url))) throw new ShrError("The 'p' claim does not match the request path.");
  }
  // With ValidateQ an SHR without q is refused even for a request without a query, as Microsoft does.
  if (v.validateQ || present('q')) checkQuery(payload.q, dotnetQuery(v.originalUri ?? v.url), v.acceptUnsignedQueryParameters);
  if (present('h')) checkHeaders(payload.h);
  // Nor does it have the body: a listed b must be the hash of an empty one.
  if (present('b') && payload.b !== b64urlSha256('')) throw new ShrError("The 'b' claim does not match the request's body.");
  return payload;
}
