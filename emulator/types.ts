/** Public types of the emulator library API (see emulator/README.md). */
import type { EmulatorScenario } from './scenario.js';

/** Routes that counters, the request log and faults name. */
export type EmulatorRoute = 'instance' | 'metadata' | 'jwks' | 'token' | 'imds' | 'appservice' | 'keyvault' | 'admin' | 'other';

/** Options for `startEmulator`. */
export interface StartEmulatorOptions {
  /** Default: `defaultScenario()`. */
  scenario?: EmulatorScenario;
  /** Enable the test-only `/_emulator/*` HTTP admin API (default false). */
  admin?: boolean;
  /** Access-token lifetime in seconds (default 3599). */
  tokenLifetimeSec?: number;
  /** Fixed HTTPS port (default: a random free port). */
  port?: number;
  /** Fixed plain-HTTP managed-identity port (default: a random free port). */
  imdsPort?: number;
  /**
   * The name the login origin goes by (default `127.0.0.1`): its metadata, issuers and endpoints
   * name it. Only `EMULATOR_HOST_NAME` is in the emulator's certificate (with its regional names,
   * `<region>.EMULATOR_HOST_NAME`); it resolves nowhere, so a client reaches it through a proxy
   * that maps it to 127.0.0.1, as an egress proxy reaches Entra (test/helpers/connect-proxy.ts).
   */
  hostName?: typeof EMULATOR_HOST_NAME;
}

/** The DNS name the emulator can be given (a reserved `.test` name: RFC 6761 §6.2). */
export const EMULATOR_HOST_NAME = 'login.emulator.test';

/** A token to mint in-process (or via `POST /_emulator/tokens`). */
export interface MintRequest {
  kind: 'user' | 'app';
  /** Tenant id, domain or scenario key (default: the primary tenant). */
  tenant?: string;
  /** A client id or identifier URI (default: the scenario's sidecar API). Unknown values are used verbatim as `aud`. */
  audience?: string;
  /** Default: the resource's accessTokenAcceptedVersion (2 for unknown audiences). */
  version?: 1 | 2;
  /** UPN, oid or scenario key of a user (default: the scenario's normal user). */
  user?: string;
  /** App id, scenario key or managed-identity client id of the calling client (default: the scenario's client app). */
  client?: string;
  scp?: string;
  roles?: string[];
  /** Merged last: can override any claim (e.g. `iss`, `tid`); a value of null removes the claim. */
  claims?: Record<string, unknown>;
  /**
   * Claims given as JSON text, appended to the payload verbatim: numbers JSON.stringify cannot
   * spell (`12345678901234567890`, `1.0e2`), for checking that a consumer passes them on as issued.
   */
  rawClaims?: Record<string, string>;
  /** Lifetime from now; negative gives an already expired token. */
  expiresInSec?: number;
  /** `nbf` = now + this (positive gives a not-yet-valid token). */
  notBeforeOffsetSec?: number;
  signWith?: 'active' | 'unknown-key' | 'none' | 'hs256-public-key';
  /** Wrap as JWE for the audience's (else the sidecar API's) encryption certificate. */
  encrypt?: boolean;
  headerOverrides?: Record<string, unknown>;
}

/** Fault injection: the next `count` matching requests get this answer instead. */
export interface FaultSpec {
  route: 'metadata' | 'jwks' | 'token' | 'imds' | 'appservice' | 'keyvault' | 'instance' | 'any';
  /** How many matching requests to hit (default 1). */
  count?: number;
  /** Hit every matching request until cleared. */
  sticky?: boolean;
  tenant?: string;
  grant_type?: string;
  client_id?: string;
  status?: number;
  error?: string;
  aadsts?: number;
  suberror?: string;
  claims?: string;
  /** Seconds, sent as `Retry-After`. */
  retryAfter?: number;
  /** Delay before answering (alone: delay, then answer normally). */
  delayMs?: number;
  /** Destroy the socket without answering. */
  drop?: true;
  /** Answer with an HTML body. */
  nonJson?: true;
  /** Answer with a ~4 MiB JSON body. */
  hugeBody?: true;
  /** Answer the status (default 503) with an empty body, as a proxy or a crashed endpoint may. */
  emptyBody?: true;
}

/**
 * Conditional Access (§2.5): authentication contexts a user has not satisfied. A user-token request
 * whose `claims` asks for one of them (`access_token.acrs`) fails with `interaction_required`.
 */
export interface ConditionalAccessSpec {
  /** Authentication-context ids (`acrs` values, e.g. `c1`) that need a new sign-in. */
  unsatisfiedAcrs: string[];
  /** UPNs, object ids or scenario keys of the users concerned (default: every user). */
  users?: string[];
}

/** One entry of the redacted request log. */
export interface RecordedRequest {
  route: EmulatorRoute;
  method: string;
  path: string;
  query: Record<string, string>;
  /** Form body; secrets, assertions and tokens read `[redacted] sha256:xxxxxxxx`. */
  form: Record<string, string>;
  headers: Record<string, string>;
  status: number;
  at: string;
}

/** Options for a projected Kubernetes service-account token. */
export interface FederatedAssertionOptions {
  /** Default: the scenario's Kubernetes subject. */
  subject?: string;
  /** Default: `api://AzureADTokenExchange`. */
  audience?: string;
  /** Default: the scenario's Kubernetes issuer (key `kubernetes`). */
  issuer?: string;
  expiresInSec?: number;
}

/** A running emulator. */
export interface Emulator {
  origin: string;
  instance: string;
  caPem: string;
  caFile: string;
  imdsOrigin: string;
  appServiceSecret: string;
  scenario: EmulatorScenario;
  mint(req: MintRequest): Promise<string>;
  /** Mints a Kubernetes service-account token signed by the fake issuer the emulator trusts. */
  mintFederatedAssertion(opts?: FederatedAssertionOptions): Promise<string>;
  /** Writes a fresh federated assertion to a temp file (removed on close) and returns its path. */
  writeFederatedAssertionFile(opts?: FederatedAssertionOptions): Promise<string>;
  /** New active signing key; with `dropOld` earlier keys are no longer published. */
  rotateKeys(opts?: { dropOld?: boolean }): void;
  setClockOffset(seconds: number): void;
  fault(spec: FaultSpec): void;
  clearFaults(): void;
  /** Replaces the Conditional Access state; `undefined` (or no `unsatisfiedAcrs`) clears it. */
  conditionalAccess(spec?: ConditionalAccessSpec): void;
  counters(): Record<string, number>;
  requests(): RecordedRequest[];
  reset(): void;
  close(): Promise<void>;
}
