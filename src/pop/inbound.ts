/**
 * Inbound PoP on `GET /Validate` (reference sidecar-http-api §2.2 "PoP variant"): the caller sends
 * `Authorization: PoP <SHR>` with `original-method` and `original-uri` naming the request the SHR
 * was signed over. The embedded access token is validated like a bearer token, must be app-only
 * and bound (`cnf.kid`) to the SHR's key; the SHR's signature, age and request binding are checked
 * per `Sidecar:PopValidation:*`. Every failure is one answer, `401 WWW-Authenticate: PoP
 * error="invalid_token"`, with the reason only in the log.
 *
 * Beyond Microsoft (which has none): an optional bounded replay cache (`ReplayCache`).
 */
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { clip, redactTokens, type Logger } from '../log.js';
import type { LogLimiter } from '../log-limit.js';
import type { SidecarConfig } from '../config/types.js';
import { SidecarError } from '../errors.js';
import { setNewest } from '../bounded-map.js';
import type { TokenValidator, ValidatedToken } from '../pipeline/types.js';
import { decodeShr, jwkThumbprint, ShrError, verifyShr } from './shr.js';

/** The challenge every inbound PoP failure answers with (no description, like Microsoft's). */
export const POP_CHALLENGE = 'PoP error="invalid_token"';

/** Most signed requests remembered at once; the oldest go first when it is full. */
export const REPLAY_CACHE_MAX_ENTRIES = 100_000;

/** The largest SHR we parse (an SHR carries a whole access token plus a public key). */
const MAX_SHR_LENGTH = 32 * 1024;

const POP_FAILED_EVENT = 'PopValidationFailed';
/** Longest failure reason a log line carries. */
const MAX_REASON_LENGTH = 200;

/** The compact SHR of an `Authorization: PoP <shr>` header (scheme case-insensitive), else undefined. */
export function popCredential(authorization: string | undefined): string | undefined {
  if (authorization === undefined) return undefined;
  const m = /^pop\s+(\S+)\s*$/i.exec(authorization);
  return m ? m[1] : undefined;
}

/** Remembers recently accepted SHRs until their lifetime ends; bounded by count. */
export class ReplayCache {
  private readonly seen = new Map<string, number>();
  private readonly maxEntries: number;

  constructor(maxEntries = REPLAY_CACHE_MAX_ENTRIES) {
    this.maxEntries = maxEntries;
  }

  /** Records `id` until `expiresAtSec`; false when it is already there (a replay). */
  admit(id: string, expiresAtSec: number, nowSec: number): boolean {
    const until = this.seen.get(id);
    if (until !== undefined && until >= nowSec) return false;
    this.seen.delete(id);
    // Entries go in roughly by expiry; drop expired ones from the front, then the oldest past the bound.
    for (const [k, exp] of this.seen) {
      if (exp >= nowSec) break;
      this.seen.delete(k);
    }
    setNewest(this.seen, id, expiresAtSec, this.maxEntries);
    return true;
  }

  get size(): number {
    return this.seen.size;
  }
}

export interface PopValidationDeps {
  readonly config: SidecarConfig;
  readonly validator: TokenValidator;
  readonly logger: Logger;
  /** Bounds the failure lines: any caller can send `Authorization: PoP <junk>` as often as it likes. */
  readonly logLimiter: LogLimiter;
  /** Set when `Sidecar:PopValidation:ReplayCache` is on (main creates one per process). */
  readonly replayCache?: ReplayCache;
  /** Epoch seconds; tests pass a fixed clock. */
  readonly nowSec?: () => number;
}

export type PopValidationResult = { readonly ok: true; readonly token: ValidatedToken } | { readonly ok: false };

function single(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? (v.length === 1 ? v[0] : undefined) : v;
}

/** App-only: no `scp`, and `idtyp` absent or `app` (reference §2.2). */
function isAppOnly(claims: Record<string, unknown>): boolean {
  if (claims.scp !== undefined || claims['http://schemas.microsoft.com/identity/claims/scope'] !== undefined) return false;
  return claims.idtyp === undefined || (typeof claims.idtyp === 'string' && claims.idtyp.toLowerCase() === 'app');
}

/** The thumbprint the access token is bound to: `cnf.kid`, or the thumbprint of `cnf.jwk`. */
async function boundKid(claims: Record<string, unknown>): Promise<string | undefined> {
  const cnf = claims.cnf as { kid?: unknown; jwk?: unknown } | undefined;
  if (!cnf || typeof cnf !== 'object') return undefined;
  if (typeof cnf.kid === 'string' && cnf.kid !== '') return cnf.kid;
  if (cnf.jwk && typeof cnf.jwk === 'object') {
    try {
      return await jwkThumbprint(cnf.jwk as Parameters<typeof jwkThumbprint>[0]);
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/**
 * Validates an inbound PoP request. Resolves `{ ok: false }` for every caller mistake (logged with
 * the reason) and throws only when the sidecar itself cannot decide (signing keys unavailable).
 */
export async function validatePopRequest(deps: PopValidationDeps, headers: IncomingHttpHeaders): Promise<PopValidationResult> {
  const { config, logger, logLimiter } = deps;
  const settings = config.sidecar.popValidation;
  const refuse = (reason: string): PopValidationResult => {
    // At most LOG_LINES_PER_SECOND lines, as for every other failure a caller causes (the metric
    // counts each one). A reason can quote the caller's SHR (an algorithm, a query name): token-shaped
    // text is cut out before the reason is cut short (a token's head and claims, cut, no longer
    // look like a token), and the reason is said once, in its own field.
    if (logger.isLevelEnabled('info') && logLimiter.allow(POP_FAILED_EVENT)) {
      logger.info({ event: POP_FAILED_EVENT, reason: clip(redactTokens(reason), MAX_REASON_LENGTH), ...logLimiter.suppressed(POP_FAILED_EVENT) }, 'PoP validation failed');
    }
    return { ok: false };
  };
  const shr = popCredential(single(headers, 'authorization'));
  if (shr === undefined) return refuse('The Authorization header is not a PoP credential.');
  if (shr.length > MAX_SHR_LENGTH) return refuse('The signed HTTP request is too large.');
  const method = single(headers, 'original-method')?.trim();
  if (!method) return refuse("Missing required 'original-method' header for PoP validation.");
  const uriText = single(headers, 'original-uri')?.trim();
  if (!uriText) return refuse("Missing required 'original-uri' header for PoP validation.");
  let uri: URL;
  try {
    uri = new URL(uriText);
  } catch {
    return refuse("The 'original-uri' header must be an absolute URI.");
  }
  if (uri.protocol !== 'https:' && uri.protocol !== 'http:') return refuse("The 'original-uri' header must be an absolute http(s) URI.");

  let at: string;
  try {
    at = decodeShr(shr).at;
  } catch (err) {
    return refuse(err instanceof ShrError ? err.message : 'The signed HTTP request is malformed.');
  }
  let token: ValidatedToken;
  try {
    token = await deps.validator.validate(at);
  } catch (err) {
    if (err instanceof SidecarError && !err.code.startsWith('token_') && err.code !== 'credential_malformed') throw err;
    return refuse(`The embedded access token is invalid (${err instanceof SidecarError ? err.code : 'error'}).`);
  }
  const claims = token.claims as Record<string, unknown>;
  if (!isAppOnly(claims)) return refuse('The embedded access token is not an app-only token (it has scp, or idtyp is not app).');
  const kid = await boundKid(claims);
  if (kid === undefined) return refuse("The embedded access token has no 'cnf' binding.");

  const now = deps.nowSec?.() ?? Math.floor(Date.now() / 1000);
  let payload;
  try {
    payload = await verifyShr(shr, {
      boundKid: kid,
      method,
      url: uri,
      originalUri: uriText,
      validateM: settings.validateM,
      validateU: settings.validateU,
      validateP: settings.validateP,
      validateQ: settings.validateQ,
      acceptUnsignedQueryParameters: settings.acceptUnsignedQueryParameters,
      validatePresentClaims: settings.validatePresentClaims,
      claimsToValidateWhenPresent: settings.claimsToValidateWhenPresent,
      lifetimeSec: settings.signedHttpRequestLifetimeSec,
      clockSkewSec: config.sidecar.validation.clockSkewSec,
      nowSec: now,
    });
  } catch (err) {
    return refuse(err instanceof ShrError ? err.message : 'The signed HTTP request could not be verified.');
  }
  if (settings.replayCache) {
    // Keyed by the signing input (header.payload, nonce included): it cannot change without breaking the signature.
    const signingInput = shr.slice(0, shr.lastIndexOf('.'));
    const id = createHash('sha256').update(signingInput).digest('base64url');
    if (!deps.replayCache?.admit(id, payload.ts + settings.signedHttpRequestLifetimeSec, now)) {
      return refuse('The signed HTTP request was already used (replay).');
    }
  }
  return { ok: true, token };
}
