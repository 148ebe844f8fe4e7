/**
 * Our own small client for `POST {authority}/oauth2/v2.0/token`, for the one request msal-node
 * cannot send: a client-credentials token bound to a proof-of-possession key (`token_type=pop`,
 * `req_cnf`, reference entra-protocol §6.1 and §6.3 — msal-node forces Bearer for confidential
 * clients and its client-credentials request has no extra body parameters).
 *
 * It authenticates with the same credential material msal uses (credentials.ts): a client secret,
 * a certificate (we sign the client assertion ourselves, shaped like msal's: PS256 with
 * `x5t#S256`, optional `x5c`), or an assertion callback (federated credentials).
 */
import { createPrivateKey, randomUUID } from 'node:crypto';
import type { Dispatcher } from 'undici';
import { send } from '../net/outbound.js';
import { SidecarError } from '../errors.js';
import type { MsalCredential } from './credentials.js';
import { noAccessToken, type CachedToken } from './token-cache.js';
import { parseRetryAfter, withExtraHeaders } from './msal-network.js';

const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** msal-node's client assertion lifetime (10 minutes). */
const ASSERTION_LIFETIME_SEC = 600;

/** A non-2xx answer from the token endpoint; mapped to the error table by the acquirer. */
export class TokenEndpointError extends Error {
  readonly status: number;
  /** The OAuth `error` value (`invalid_client`, `invalid_grant`, ...). */
  readonly error: string;
  readonly retryAfterSec: number | undefined;
  readonly claims: string | undefined;

  constructor(status: number, error: string, description: string, retryAfterSec: number | undefined, claims: string | undefined) {
    super(description);
    this.name = 'TokenEndpointError';
    this.status = status;
    this.error = error;
    this.retryAfterSec = retryAfterSec;
    this.claims = claims;
  }
}

export interface TokenEndpointDeps {
  readonly agent: Dispatcher;
  readonly timeoutMs: number;
  readonly maxResponseBytes: number;
  /** Called once per request that leaves the process. */
  readonly onTokenRequest?: () => void;
}

const JWT_LIKE = /eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*/g;

function pemBlocksToX5c(pem: string): string[] {
  const out: string[] = [];
  for (const m of pem.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)) out.push(m[1].replace(/\s+/g, ''));
  return out;
}

/** A certificate client assertion for `clientId` at `tokenEndpoint` (RFC 7523, as msal-node builds it). */
export async function certificateAssertion(
  clientId: string,
  tokenEndpoint: string,
  cert: { readonly thumbprintSha256: string; readonly privateKey: string; readonly x5c?: string },
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const x5c = cert.x5c ? pemBlocksToX5c(cert.x5c) : [];
  // Imported here: only certificate credentials on our own token client need it (≈45 ms at start-up otherwise).
  const { SignJWT } = await import('jose');
  return new SignJWT({ jti: randomUUID() })
    .setProtectedHeader({ alg: 'PS256', typ: 'JWT', 'x5t#S256': Buffer.from(cert.thumbprintSha256, 'hex').toString('base64url'), ...(x5c.length > 0 ? { x5c } : {}) })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(tokenEndpoint)
    .setNotBefore(now)
    .setIssuedAt(now)
    .setExpirationTime(now + ASSERTION_LIFETIME_SEC)
    .sign(createPrivateKey(cert.privateKey));
}

/** The body parameters that authenticate `clientId` with `credential`. */
async function clientAuthentication(clientId: string, tokenEndpoint: string, credential: MsalCredential): Promise<Record<string, string>> {
  if ('clientSecret' in credential) return { client_secret: credential.clientSecret };
  if ('clientCertificate' in credential) {
    return { client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: await certificateAssertion(clientId, tokenEndpoint, credential.clientCertificate) };
  }
  const assertion = await credential.clientAssertion({ clientId, tokenEndpoint });
  return { client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: assertion };
}

function parseJson(body: Buffer): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(body.toString('utf8')) as unknown;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export interface TokenRequest {
  readonly authority: string;
  readonly clientId: string;
  readonly credential: MsalCredential;
  /** Grant parameters (`grant_type`, `scope`, ...); client authentication is added here. */
  readonly params: Readonly<Record<string, string>>;
  readonly correlationId?: string;
  /** Query string for the token endpoint URL (ExtraQueryParameters), already encoded. */
  readonly query?: string;
  /** Extra HTTP headers (AcquireTokenOptions:ExtraHeadersParameters); never replace the protocol's own. */
  readonly extraHeaders?: Readonly<Record<string, string>>;
  /** Fail closed when Entra answers another token type (a PoP request must never yield a Bearer token). */
  readonly expectTokenType?: string;
}

/** Sends one token request; throws TokenEndpointError for an OAuth error answer, SidecarError for transport failures. */
export async function requestToken(deps: TokenEndpointDeps, req: TokenRequest): Promise<CachedToken> {
  const { authority, clientId, credential, params, expectTokenType } = req;
  // In lower case, as msal canonicalises an authority: Entra compares a certificate assertion's
  // `aud` with its own token URL exactly, so `TenantId=AAAAAAAA-…` or `Contoso.onmicrosoft.com`
  // written as configured would be refused (AADSTS50027) where msal's own requests pass.
  const tokenEndpoint = `${authority.replace(/\/+$/, '').toLowerCase()}/oauth2/v2.0/token`;
  const url = req.query ? `${tokenEndpoint}?${req.query}` : tokenEndpoint;
  const host = new URL(tokenEndpoint).host;
  const form = new URLSearchParams({ client_id: clientId, ...params, ...(await clientAuthentication(clientId, tokenEndpoint, credential)) });
  deps.onTokenRequest?.();
  let res;
  try {
    res = await send(deps.agent, url, {
      method: 'POST',
      headers: withExtraHeaders({ 'content-type': 'application/x-www-form-urlencoded;charset=utf-8', accept: 'application/json', 'client-request-id': req.correlationId ?? randomUUID() }, req.extraHeaders),
      body: form.toString(),
      deadlineMs: deps.timeoutMs,
      maxResponseBytes: deps.maxResponseBytes,
    });
  } catch (err) {
    const detail = err instanceof SidecarError ? err.detail : `Request to ${host} failed.`;
    throw new SidecarError('acquisition_unavailable', detail, { cause: err });
  }
  const body = parseJson(res.body);
  if (res.status < 200 || res.status >= 300) {
    const error = typeof body?.error === 'string' ? body.error : res.status === 429 || res.status >= 500 ? 'temporarily_unavailable' : 'invalid_response';
    const description = typeof body?.error_description === 'string' ? body.error_description.replace(JWT_LIKE, '[redacted]') : `HTTP ${res.status} from ${host}.`;
    const claims = typeof body?.claims === 'string' && body.claims !== '' ? body.claims : undefined;
    throw new TokenEndpointError(res.status, error, description.length > 2000 ? `${description.slice(0, 2000)}…` : description, parseRetryAfter(res.headers['retry-after']), claims);
  }
  const accessToken = body?.access_token;
  if (typeof accessToken !== 'string' || accessToken === '') throw noAccessToken(`The token response from ${host} has no access_token.`);
  const tokenType = typeof body?.token_type === 'string' ? body.token_type : 'Bearer';
  if (expectTokenType !== undefined && tokenType.toLowerCase() !== expectTokenType.toLowerCase()) {
    throw new SidecarError('acquisition_unavailable', `${host} answered token_type '${tokenType}' to a request for '${expectTokenType}'.`);
  }
  const expiresIn = Number(body?.expires_in);
  const refreshIn = Number(body?.refresh_in);
  const now = Math.floor(Date.now() / 1000);
  return {
    scheme: tokenType,
    token: accessToken,
    expiresOn: now + (Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn : 0),
    ...(Number.isFinite(refreshIn) && refreshIn > 0 ? { refreshOn: now + refreshIn } : {}),
  };
}

