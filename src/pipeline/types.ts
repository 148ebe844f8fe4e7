/**
 * The contracts between the pipeline steps (extract credential → validate → authorize → acquire →
 * respond). Front doors (HTTP routes, ext_authz Check) depend on these types, not on the modules
 * that implement them; main.ts wires the implementations.
 */
import type { JWTHeaderParameters, JWTPayload } from 'jose';
import type { DownstreamApiOptions } from '../config/types.js';

/**
 * A token that passed every validation rule. The validator hands out the same deep-frozen object
 * for a token it has cached, and a fresh, unfrozen one for a token it verified without caching (its
 * first sight): only cached ones are worth keying anything on (isCachedToken in authenticate.ts).
 */
export interface ValidatedToken {
  /** The compact token as received (JWS or JWE). */
  readonly raw: string;
  /** The signed inner token (=== raw for a JWS); what OBO sends as `assertion`. */
  readonly jws: string;
  readonly header: JWTHeaderParameters;
  /** The raw payload, exactly as issued. */
  readonly claims: JWTPayload;
  readonly version: '1.0' | '2.0';
  /** `tid`. */
  readonly tenantId: string;
  /** `exp`, epoch seconds. */
  readonly expiresAt: number;
}

/** Validates inbound Entra tokens (signature, issuer, audience, lifetime, decryption). */
export interface TokenValidator {
  /** Resolves a ValidatedToken or throws a SidecarError with a `token_*`/`signing_keys_unavailable` code. */
  validate(compact: string): Promise<ValidatedToken>;
  /**
   * validate() without a promise when it needs none: the token validate() would resolve (cached, or
   * a compact JWS verified now with a signing key already loaded), or throws the SidecarError
   * validate() would reject with; undefined when validation has to wait (an encrypted token, signing
   * keys not loaded yet, a key id the loaded set lacks): then call validate().
   */
  validateNow(compact: string): ValidatedToken | undefined;
  /** True once signing keys have been loaded at least once. */
  ready(): boolean;
  /** Loads metadata and signing keys (retrying in the background on failure). */
  start(): Promise<void>;
  close(): void;
}

/** Agent identity selection (reference sidecar-http-api §2.6). */
export interface AgentSelection {
  readonly agentIdentity: string;
  readonly username?: string;
  readonly userId?: string;
}

/** Per-request options: a deep copy of `DownstreamApis:<apiName>` with overrides merged. Never shared. */
export interface EffectiveApiOptions extends DownstreamApiOptions {
  readonly apiName: string;
}

export interface AcquireRequest {
  readonly options: EffectiveApiOptions;
  /** The validated inbound token, when one was sent (drives OBO). */
  readonly user?: ValidatedToken;
  readonly agent?: AgentSelection;
  readonly correlationId?: string;
  /** Claims challenge from a downstream 401 (forces a fresh token). */
  readonly claims?: string;
  /** Abort when the caller's deadline passes (ext_authz grpc-timeout, HTTP request timeout). */
  readonly signal?: AbortSignal;
}

export interface AcquiredToken {
  /** `Bearer`, or `pop` for PoP-bound app tokens. */
  readonly scheme: string;
  readonly token: string;
  /** Epoch seconds. */
  readonly expiresOn: number;
}

/** Acquires tokens for downstream APIs (client credentials, OBO, managed identity, agents). */
export interface TokenAcquirer {
  /** Resolves a token or throws a SidecarError (`acquisition_*`, `scopes_missing`, `misconfigured`, ...). */
  acquire(req: AcquireRequest): Promise<AcquiredToken>;
  /**
   * The warm path, synchronous: the token acquire() would resolve at once from its cache (the same
   * object), or undefined when acquire() has work to do. Never throws.
   */
  cached(req: AcquireRequest): AcquiredToken | undefined;
  close(): void;
}
