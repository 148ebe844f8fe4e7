/**
 * The closed set of error codes and the one table that maps each to what every front door says.
 * HTTP routes and the ext_authz Check both render a SidecarError through this table; nothing else
 * decides a status. docs/errors.md is checked against ERROR_TABLE by a test.
 */

/** How a 401/403 challenges the caller (RFC 6750 §3). */
export type ChallengeKind = 'none' | 'bearer' | 'invalid_token' | 'insufficient_scope' | 'insufficient_claims';

export interface ErrorSpec {
  /** Status on the identity HTTP API. */
  readonly httpStatus: number;
  /** google.rpc code in CheckResponse.status (never a failed RPC). */
  readonly grpcCode: number;
  /** DeniedHttpResponse.status Envoy sends to the client. */
  readonly envoyStatus: number;
  readonly challenge: ChallengeKind;
  /** Whether the SidecarError detail may be shown to the caller; otherwise only `message`. */
  readonly expose: boolean;
  /**
   * `false`: the detail is shown on the identity HTTP API (loopback, the app; Microsoft's sidecar
   * shows Entra's description there) but not in an Envoy deny, whose reader is any client behind the
   * proxy: Entra's descriptions name the sidecar's app id, tenant and certificate thumbprint.
   */
  readonly exposeAtEnvoy?: false;
  /** The safe, stable message for the caller. */
  readonly message: string;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error';
  /**
   * A failed authentication on the HTTP API is ASP.NET JwtBearer's challenge: 401 with only
   * `WWW-Authenticate` and no body (reference sidecar-http-api §1.4). Every other error has a
   * ProblemDetails body.
   */
  readonly challengeOnly?: true;
}

// google.rpc.Code values used below.
const UNAUTHENTICATED = 16;
const PERMISSION_DENIED = 7;
const UNAVAILABLE = 14;
const INTERNAL = 13;
const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;
const RESOURCE_EXHAUSTED = 8;

function invalidToken(message: string): ErrorSpec {
  return { httpStatus: 401, grpcCode: UNAUTHENTICATED, envoyStatus: 401, challenge: 'invalid_token', expose: true, message, logLevel: 'info', challengeOnly: true };
}

export const ERROR_TABLE = {
  // Inbound credential and token validation.
  credential_missing: { httpStatus: 401, grpcCode: UNAUTHENTICATED, envoyStatus: 401, challenge: 'bearer', expose: true, message: 'No bearer token was sent.', logLevel: 'debug', challengeOnly: true },
  credential_malformed: invalidToken('The Authorization header holds a malformed or oversized token.'),
  token_malformed: invalidToken('The token is malformed.'),
  token_alg_not_allowed: invalidToken('The token signing algorithm is not allowed.'),
  token_signature_invalid: invalidToken('The signature is invalid.'),
  token_key_unknown: invalidToken('The signing key was not found.'),
  token_expired: invalidToken('The token is expired.'),
  token_not_yet_valid: invalidToken('The token is not yet valid.'),
  token_audience_invalid: invalidToken('The audience is invalid.'),
  token_issuer_invalid: invalidToken('The issuer is invalid.'),
  token_tenant_mismatch: invalidToken('The token tenant does not match its issuer.'),
  token_scope_or_role_missing: invalidToken('Neither scope nor roles claim was found in the bearer token.'),
  token_decryption_failed: invalidToken('The token could not be decrypted.'),
  token_pop_invalid: { ...invalidToken('The signed HTTP request is invalid.') },
  signing_keys_unavailable: { httpStatus: 503, grpcCode: UNAVAILABLE, envoyStatus: 503, challenge: 'none', expose: false, message: 'Signing keys are not available.', logLevel: 'warn' },

  // Authorization.
  insufficient_scope: { httpStatus: 403, grpcCode: PERMISSION_DENIED, envoyStatus: 403, challenge: 'insufficient_scope', expose: true, message: 'The token lacks a required scope or role.', logLevel: 'info' },

  // Options and acquisition.
  scopes_missing: { httpStatus: 400, grpcCode: INTERNAL, envoyStatus: 500, challenge: 'none', expose: true, message: 'No scopes found.', logLevel: 'info' },
  api_not_configured: { httpStatus: 400, grpcCode: INTERNAL, envoyStatus: 500, challenge: 'none', expose: true, message: 'The downstream API is not configured.', logLevel: 'error' },
  acquisition_ui_required: { httpStatus: 401, grpcCode: UNAUTHENTICATED, envoyStatus: 401, challenge: 'insufficient_claims', expose: true, exposeAtEnvoy: false, message: 'User interaction is required.', logLevel: 'info' },
  acquisition_rejected: { httpStatus: 401, grpcCode: PERMISSION_DENIED, envoyStatus: 403, challenge: 'none', expose: true, exposeAtEnvoy: false, message: 'Entra ID refused the token request.', logLevel: 'warn' },
  // Entra answered 5xx or something that is not a token response: on HTTP an MsalServiceException
  // (401, as Microsoft's sidecar answers); at Envoy a retryable 503, not a refusal.
  acquisition_upstream_failed: { httpStatus: 401, grpcCode: UNAVAILABLE, envoyStatus: 503, challenge: 'none', expose: true, exposeAtEnvoy: false, message: 'Entra ID failed to answer the token request.', logLevel: 'warn' },
  acquisition_throttled: { httpStatus: 401, grpcCode: UNAVAILABLE, envoyStatus: 503, challenge: 'none', expose: true, exposeAtEnvoy: false, message: 'Entra ID is throttling token requests.', logLevel: 'warn' },
  acquisition_unavailable: { httpStatus: 500, grpcCode: UNAVAILABLE, envoyStatus: 503, challenge: 'none', expose: false, message: 'An unexpected error occurred.', logLevel: 'warn' },

  // Downstream API calls.
  downstream_unavailable: { httpStatus: 500, grpcCode: UNAVAILABLE, envoyStatus: 503, challenge: 'none', expose: false, message: 'An unexpected error occurred.', logLevel: 'warn' },
  downstream_response_too_large: { httpStatus: 502, grpcCode: RESOURCE_EXHAUSTED, envoyStatus: 500, challenge: 'none', expose: true, message: 'The downstream response exceeded the configured size limit.', logLevel: 'warn' },

  // Request shape and limits.
  request_invalid: { httpStatus: 400, grpcCode: INVALID_ARGUMENT, envoyStatus: 403, challenge: 'none', expose: true, message: 'The request is invalid.', logLevel: 'info' },
  request_not_http: { httpStatus: 400, grpcCode: PERMISSION_DENIED, envoyStatus: 403, challenge: 'none', expose: true, message: 'Only HTTP requests can be authorized.', logLevel: 'info' },
  request_headers_too_large: { httpStatus: 431, grpcCode: INVALID_ARGUMENT, envoyStatus: 431, challenge: 'none', expose: true, message: 'Request headers are too large.', logLevel: 'info' },
  path_not_normalized: { httpStatus: 400, grpcCode: INVALID_ARGUMENT, envoyStatus: 400, challenge: 'none', expose: true, message: 'The request path is not in normal form (a dot segment, an empty segment, a backslash or an encoded dot, slash or backslash), so its route cannot be told.', logLevel: 'info' },
  request_body_too_large: { httpStatus: 413, grpcCode: INVALID_ARGUMENT, envoyStatus: 413, challenge: 'none', expose: true, message: 'Request body is too large.', logLevel: 'info' },
  // The bodies being received together would pass Sidecar:Http:MaxBufferedBodyBytes: a condition of
  // the moment, not of the request, so 503 with Retry-After, which HTTP clients' retry policies
  // (.NET's standard resilience handler among them) retry; a 413 they would not.
  request_body_budget_exceeded: { httpStatus: 503, grpcCode: UNAVAILABLE, envoyStatus: 503, challenge: 'none', expose: true, message: 'Too many request bodies are being received at once; retry shortly.', logLevel: 'warn' },
  route_not_found: { httpStatus: 404, grpcCode: NOT_FOUND, envoyStatus: 404, challenge: 'none', expose: false, message: 'Not found.', logLevel: 'debug' },
  method_not_allowed: { httpStatus: 405, grpcCode: INVALID_ARGUMENT, envoyStatus: 405, challenge: 'none', expose: false, message: 'Method not allowed.', logLevel: 'debug' },
  caller_not_loopback: { httpStatus: 403, grpcCode: PERMISSION_DENIED, envoyStatus: 403, challenge: 'none', expose: false, message: 'Forbidden.', logLevel: 'warn' },
  // The Host names a host that could be a DNS-rebinding domain: a page in a browser on this machine
  // reading the answers as its own origin. 400, as ASP.NET's host filtering answered (Microsoft's
  // sidecar 1.0.0-rc.2).
  host_not_allowed: { httpStatus: 400, grpcCode: PERMISSION_DENIED, envoyStatus: 403, challenge: 'none', expose: false, message: 'Bad Request.', logLevel: 'warn' },
  // Origin or Sec-Fetch-* say a web page sent the request; no caller of the sidecar is a browser.
  request_from_browser: { httpStatus: 403, grpcCode: PERMISSION_DENIED, envoyStatus: 403, challenge: 'none', expose: false, message: 'Forbidden.', logLevel: 'warn' },

  // Everything else.
  dependency_timeout: { httpStatus: 500, grpcCode: UNAVAILABLE, envoyStatus: 503, challenge: 'none', expose: false, message: 'An unexpected error occurred.', logLevel: 'warn' },
  misconfigured: { httpStatus: 500, grpcCode: INTERNAL, envoyStatus: 500, challenge: 'none', expose: false, message: 'An unexpected error occurred.', logLevel: 'error' },
  internal: { httpStatus: 500, grpcCode: INTERNAL, envoyStatus: 500, challenge: 'none', expose: false, message: 'An unexpected error occurred.', logLevel: 'error' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_TABLE;

/** A failure of the process itself: the line it writes (whatever the log level) and how it exits. */
export interface ProcessFailureSpec {
  readonly exitCode: number;
  /** The line's `msg`. */
  readonly message: string;
  /** What happened and which field says more (docs/errors.md). */
  readonly meaning: string;
}

/**
 * The codes of the lines the process writes when it cannot start or cannot go on. They answer no
 * caller, so they are not in ERROR_TABLE; each is one JSON line with `"level":"fatal"` and `code`,
 * written at every log level (`None` included), like the listening line, so a start that fails
 * always says why.
 */
export const PROCESS_FAILURES = {
  config_invalid: { exitCode: 1, message: 'invalid configuration', meaning: 'The configuration is invalid; `problems` lists every problem, each naming its key. Nothing was started.' },
  start_failed: { exitCode: 1, message: 'failed to start', meaning: 'Something the start needs failed (a listener could not bind, a token decryption certificate could not be loaded, …); `err` names it.' },
  uncaught_exception: { exitCode: 70, message: 'uncaught exception', meaning: 'A defect: an exception nothing caught. `err` and `stack` say where (token-shaped text cut out).' },
  unhandled_rejection: { exitCode: 70, message: 'unhandled rejection', meaning: 'A defect: a rejected promise nothing handled. `err` (and `stack`) say where (token-shaped text cut out).' },
  shutdown_forced: { exitCode: 1, message: 'the shutdown did not finish in time; exiting', meaning: 'A shutdown (SIGTERM/SIGINT) was still running 12 s after the signal, 2 s past the drain grace, after which what is left is cut and outbound calls aborted: a defect. `afterMs` is the wait.' },
} as const satisfies Record<string, ProcessFailureSpec>;

export type ProcessFailureCode = keyof typeof PROCESS_FAILURES;

/**
 * The longest wait the sidecar honours or passes on, in seconds: msal's own bound on `Retry-After`
 * (ThrottlingUtils, reference entra-protocol §2.8). A larger value (a proxy's, a typo, ten years)
 * would otherwise keep a token from being asked for again until the process restarts.
 */
export const MAX_RETRY_AFTER_SEC = 3600;

/** `sec` within [0, MAX_RETRY_AFTER_SEC]; undefined for anything that is not a number. */
export function boundedRetryAfterSec(sec: number | undefined): number | undefined {
  if (sec === undefined || Number.isNaN(sec)) return undefined;
  return Math.min(Math.max(0, sec), MAX_RETRY_AFTER_SEC);
}

/**
 * An error with a stable code from ERROR_TABLE; `detail` must be safe to show (no tokens or secrets).
 *
 * It carries no stack trace. It is an answer, not a fault: every deny and every 4xx is one (a Check
 * without a token, an expired token), and V8 records the stack of an Error when it is made, which
 * walks and translates every optimised frame: 75,000 of the ~420,000 instructions of an ext_authz deny
 * in callgrind (bench/README.md finding 47). Nothing reads it: the code says where it was raised, and a
 * SidecarError wrapping a fault (`internal`) keeps that fault, with its stack, as its `cause`.
 */
export class SidecarError extends Error {
  readonly code: ErrorCode;
  /** Safe detail for the caller when the code's spec says `expose`; always safe to log. */
  readonly detail: string | undefined;
  /** For `insufficient_scope`: the scopes to name in the challenge. */
  readonly scope: string | undefined;
  /** For `insufficient_claims` / claims challenges: the claims JSON to name in the challenge. */
  readonly claims: string | undefined;
  /** Seconds the caller should wait (429/503 from Entra), never more than MAX_RETRY_AFTER_SEC. */
  readonly retryAfterSec: number | undefined;

  constructor(
    code: ErrorCode,
    detail?: string,
    extra: { cause?: unknown; scope?: string; claims?: string; retryAfterSec?: number } = {},
  ) {
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(detail ?? ERROR_TABLE[code].message, extra.cause === undefined ? undefined : { cause: extra.cause });
    } finally {
      Error.stackTraceLimit = stackTraceLimit;
    }
    this.name = 'SidecarError';
    this.code = code;
    this.detail = detail;
    this.scope = extra.scope;
    this.claims = extra.claims;
    // Bounded here, where every Retry-After the sidecar passes on (HTTP and ext_authz) comes from.
    this.retryAfterSec = boundedRetryAfterSec(extra.retryAfterSec);
  }

  get spec(): ErrorSpec {
    return ERROR_TABLE[this.code];
  }

  /** What the caller may read. */
  get publicMessage(): string {
    const spec = ERROR_TABLE[this.code];
    return spec.expose && this.detail !== undefined ? this.detail : spec.message;
  }

  /** What a client behind Envoy may read (see ErrorSpec.exposeAtEnvoy). */
  get envoyMessage(): string {
    const spec: ErrorSpec = ERROR_TABLE[this.code];
    return spec.exposeAtEnvoy === false ? spec.message : this.publicMessage;
  }
}

/** Wraps anything thrown into a SidecarError without leaking its message to callers. */
export function toSidecarError(err: unknown): SidecarError {
  if (err instanceof SidecarError) return err;
  return new SidecarError('internal', undefined, { cause: err });
}

/** What RFC 6750 §3 allows in the error, error_description and scope attributes: %x20-21 / %x23-5B / %x5D-7E. */
const OUTSIDE_RFC6750_VALUE = /[^\x20\x21\x23-\x5b\x5d-\x7e]/g;

/**
 * A value as a quoted-string in WWW-Authenticate. A description can echo token content (an
 * audience, an issuer), and RFC 6750 §3 allows neither `"` nor `\` nor anything outside printable
 * ASCII there, escaped or not: a strict client parser may reject the whole challenge. So those
 * become `?` rather than quoted-pair escapes (which also keeps CR and LF out of the header).
 */
function quoted(value: string): string {
  return '"' + value.replace(OUTSIDE_RFC6750_VALUE, '?') + '"';
}

/**
 * The `WWW-Authenticate` value for an error, or undefined when the code does not challenge.
 * `description` is only added for invalid_token (Microsoft's JwtBearer does the same).
 */
export function wwwAuthenticate(err: SidecarError, scheme = 'Bearer'): string | undefined {
  switch (err.spec.challenge) {
    case 'none':
      return undefined;
    case 'bearer':
      return scheme;
    case 'invalid_token':
      return `${scheme} error="invalid_token", error_description=${quoted(err.publicMessage)}`;
    case 'insufficient_scope':
      return err.scope
        ? `${scheme} error="insufficient_scope", scope=${quoted(err.scope)}`
        : `${scheme} error="insufficient_scope"`;
    case 'insufficient_claims':
      return err.claims
        ? `${scheme} error="insufficient_claims", claims=${quoted(Buffer.from(err.claims).toString('base64'))}`
        : scheme; // nothing to step up to: a plain challenge to authenticate (RFC 6750 §3.1)
  }
}
