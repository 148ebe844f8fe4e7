/**
 * The identity API's routes (reference sidecar-http-api §2). Each is a thin adapter: read the wire
 * request, run the pipeline (authenticate → resolve options → acquire → call), write the wire answer.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../log.js';
import type { LogLimiter } from '../log-limit.js';
import type { SidecarConfig } from '../config/types.js';
import { SidecarError } from '../errors.js';
import { ANONYMOUS, authenticate, authenticateNow, isCachedToken } from '../pipeline/authenticate.js';
import { firstScopeClaim } from '../pipeline/authorize.js';
import { assertScopes, overridesAllowed, resolveApiOptions, type OverrideRoute } from '../pipeline/api-options.js';
import type { AcquiredToken, AcquireRequest, TokenAcquirer, TokenValidator, ValidatedToken } from '../pipeline/types.js';
import type { DownstreamCallDeps } from '../downstream/call.js';
import type { Metrics } from '../metrics.js';
import { callDownstreamApi, forwardsBody } from '../downstream/call.js';
import { sendEmpty, sendJson, sendJsonText, sendText } from './problem.js';
import { POP_CHALLENGE, popCredential, validatePopRequest, type ReplayCache } from '../pop/inbound.js';
import { OPENAPI_DOCUMENT } from './openapi.js';
import { payloadJson } from '../validation/validator.js';
import type { BodyBudget } from './body-budget.js';

export interface RouteDeps {
  readonly config: SidecarConfig;
  readonly logger: Logger;
  readonly validator: TokenValidator;
  readonly acquirer: TokenAcquirer;
  readonly downstream: DownstreamCallDeps;
  readonly metrics: Metrics;
  /** Present when Sidecar:PopValidation:ReplayCache is on. */
  readonly popReplayCache?: ReplayCache;
  /** Sidecar:Http:MaxBufferedBodyBytes, shared by every request that reads a body. */
  readonly bodyBudget: BodyBudget;
}

export interface RouteContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The request path without its query string, as sent (not normalised). */
  readonly path: string;
  /** The query string's parameters (empty when there is none). */
  readonly query: URLSearchParams;
  /** The decoded `{apiName}` segment ('' for routes without one). */
  readonly apiName: string;
  /** The Authorization header (several lines joined with ",", from which no credential parses). */
  readonly authorization: string | undefined;
  /** The handler's bound on the log lines callers cause (the warnings about ignored input go through it). */
  readonly logLimiter: LogLimiter;
}

export interface Route {
  readonly name: string;
  /**
   * The one method the route answers (others get 405, as ASP.NET's MapGet/MapPost), or 'ANY' for a
   * route mapped without a method constraint (ASP.NET's `endpoints.Map`, which MapHealthChecks uses).
   */
  readonly method: 'GET' | 'POST' | 'ANY';
  /** The lower-cased first path segments the route can match. */
  readonly firstSegments: readonly string[];
  /** `first` is the lower-cased first path segment; `count` the number of segments. */
  matches(first: string, count: number, development: boolean): boolean;
  /** Answers synchronously when it can (a warm caller), else returns the promise of its answer. */
  handle(ctx: RouteContext, deps: RouteDeps): void | Promise<void>;
}

const NO_BODY = Buffer.alloc(0);

/** Seconds a caller refused by the body budget is asked to wait: most bodies in flight are read within one. */
const BODY_BUDGET_RETRY_AFTER_SEC = 1;

/**
 * Reads the request body up to `max` bytes (413 beyond). Its bytes are reserved in `budget`
 * (Sidecar:Http:MaxBufferedBodyBytes, shared by every request) before they are kept: a declared
 * length at once, before anything is read, and then read into one buffer of that size (so the body
 * is held once, not in chunks and again joined); a body without one chunk by chunk. One that does
 * not fit is refused with 503 request_body_budget_exceeded and Retry-After, and nothing of it is
 * kept. The caller releases `body.length` once done with the body; on any failure here (too large,
 * over budget, the client gone) what was reserved is released before the error propagates.
 */
async function readBody(req: IncomingMessage, res: ServerResponse, max: number, budget: BodyBudget): Promise<Buffer> {
  const header = req.headers['content-length'];
  const declared = header === undefined ? undefined : Number(header);
  if (declared !== undefined && declared > max) {
    // Not drained: node:http would read every declared byte to keep the connection.
    closeAfterAnswer(req, res);
    throw new SidecarError('request_body_too_large');
  }
  if (declared === undefined) return readChunked(req, res, max, budget);
  // A refusal here reads nothing: node:http drains the (at most `max`) declared bytes after the answer.
  if (!budget.tryReserve(declared)) throw budgetExceeded();
  try {
    const body = Buffer.allocUnsafe(declared);
    let size = 0;
    // node:http ends the body at its Content-Length, and fails it (aborted) if the client stops short.
    for await (const chunk of req) size += (chunk as Buffer).copy(body, size);
    if (size !== declared) throw new SidecarError('request_invalid', 'The request body is shorter than its Content-Length.');
    return body;
  } catch (err) {
    budget.release(declared);
    throw clientGone(err);
  }
}

/**
 * A body read that failed because the client went away (node:http's `aborted`, a reset, its own
 * 408 after Sidecar:Http:RequestTimeoutMs) is the caller's doing: request_invalid, a 4xx in the
 * metrics and a line at its level, never `internal`, which says the sidecar has a defect.
 */
function clientGone(err: unknown): unknown {
  return err instanceof SidecarError ? err : new SidecarError('request_invalid', 'The client went away before the request body ended.', { cause: err });
}

/**
 * A body without a Content-Length, reserved chunk by chunk as it arrives. Listened to rather than
 * iterated: leaving a `for await` destroys the request, and with it the socket the refusal (413 or
 * 503) must still be written to. On a refusal the rest is read and dropped until the answer is out,
 * then the connection is closed.
 */
function readChunked(req: IncomingMessage, res: ServerResponse, max: number, budget: BodyBudget): Promise<Buffer> {
  // Gone while the route was authenticating (keys still loading, an unknown kid's refetch): a
  // destroyed stream emits nothing more, so listening would wait for ever.
  if (req.destroyed) return Promise.reject(clientGone(undefined));
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const settle = (err: unknown): void => {
      req.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      budget.release(size);
      reject(err);
    };
    const onData = (chunk: Buffer): void => {
      const refusal = size + chunk.length > max ? new SidecarError('request_body_too_large') : budget.tryReserve(chunk.length) ? undefined : budgetExceeded();
      if (refusal === undefined) {
        size += chunk.length;
        chunks.push(chunk);
        return;
      }
      closeAfterAnswer(req, res);
      settle(refusal);
      // Flowing with no 'data' listener: what else arrives is dropped.
      req.resume();
    };
    const onEnd = (): void => {
      req.off('data', onData).off('error', onError).off('close', onClose);
      resolve(Buffer.concat(chunks, size));
    };
    // node:http destroys a request whose client left mid-body; 'error' is emitted only to a listener.
    const onError = (err: unknown): void => settle(clientGone(err));
    const onClose = (): void => settle(clientGone(undefined));
    req.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  });
}

const budgetExceeded = (): SidecarError => new SidecarError('request_body_budget_exceeded', undefined, { retryAfterSec: BODY_BUDGET_RETRY_AFTER_SEC });

/**
 * Closes the connection once the answer is out, for a request whose body is not read to its end.
 * Before the answer: node:http sends `Connection: close` and closes the socket after it. After it (a
 * fast downstream), the socket would wait for the rest of the body; it is closed once the answer is out.
 */
function closeAfterAnswer(req: IncomingMessage, res: ServerResponse): void {
  const socket = req.socket;
  // node:http calls destroySoon() once a `Connection: close` answer is written.
  if (!res.headersSent) {
    res.shouldKeepAlive = false;
    socket.destroySoon = lingeringClose;
  } else if (res.writableFinished) lingeringClose.call(socket);
  else res.once('finish', () => lingeringClose.call(socket));
}

/** How long a connection closed with a body still arriving keeps dropping it before it is reset. */
const LINGER_MS = 2_000;

/**
 * Ends the socket and lets the client's remaining bytes arrive, dropped, until it closes its side
 * or LINGER_MS pass (a lingering close, as nginx and Kestrel do). Destroyed at once, the socket
 * would answer those bytes with a reset, which can reach the client before it has read the answer
 * (it then sees EPIPE or ECONNRESET, not the 413 or 503).
 */
function lingeringClose(this: Socket): void {
  if (this.destroyed) return;
  this.end();
  const timer = setTimeout(() => this.destroy(), LINGER_MS);
  timer.unref();
  this.once('close', () => clearTimeout(timer));
}

/**
 * Discards a body the route does not use, without buffering it. Up to `max` bytes are read off the
 * wire so the connection can carry the next request (keep-alive); past that (declared or sent), the
 * connection is closed once answered, rather than spend the request timeout on bytes nobody reads.
 */
function discardBody(req: IncomingMessage, res: ServerResponse, max: number): void {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > max) {
    closeAfterAnswer(req, res);
    req.resume();
    return;
  }
  let size = 0;
  const count = (chunk: Buffer): void => {
    size += chunk.length;
    if (size <= max) return;
    req.off('data', count);
    closeAfterAnswer(req, res);
  };
  // A 'data' listener puts the stream in flowing mode: every chunk is dropped once counted, and
  // still dropped (flowing, no listener) after the listener is gone.
  req.on('data', count);
}

/** GET /Validate (reference §2.2): a caller the validator can answer for at once is answered synchronously. */
function validate(ctx: RouteContext, deps: RouteDeps): void | Promise<void> {
  const now = authenticateNow(deps.validator, ctx.authorization, 'required');
  if (now !== undefined) {
    answerValidated(ctx, deps, now);
    return undefined;
  }
  return validateFully(ctx, deps);
}

async function validateFully(ctx: RouteContext, deps: RouteDeps): Promise<void> {
  // PoP variant (§2.2): src/pop/inbound.ts decides; the AzureAd:Scopes gate does not apply.
  if (popCredential(ctx.authorization) !== undefined) {
    const result = await validatePopRequest({ config: deps.config, validator: deps.validator, logger: deps.logger, logLimiter: ctx.logLimiter, replayCache: deps.popReplayCache }, ctx.req.headers);
    if (!result.ok) {
      // Microsoft answers every PoP failure the same way: no body, no error_description.
      deps.metrics.countValidationFailure('token_pop_invalid');
      sendEmpty(ctx.res, 401, { 'WWW-Authenticate': POP_CHALLENGE });
      return;
    }
    sendJsonText(ctx.res, 200, validateBody('PoP', result.token));
    return;
  }
  const token = await authenticate(deps.validator, ctx.authorization, 'required');
  if (!token) throw new SidecarError('credential_missing');
  answerValidated(ctx, deps, token);
}

/** The rest of /Validate once the caller is authenticated: the AzureAd:Scopes gate, then the claims. */
function answerValidated(ctx: RouteContext, deps: RouteDeps, token: ValidatedToken): void {
  const required = deps.config.azureAd.scopes;
  if (required !== undefined && required.trim() !== '') {
    // The whole configured string is one accepted scope (Microsoft's IDW10203 check, §2.2 step 2).
    if (!firstScopeClaim(token.claims).includes(required)) {
      sendText(ctx.res, 403, `IDW10203: The 'scope' or 'scp' claim does not contain scopes '${required}' or was not found. `);
      return;
    }
  }
  // A first-sight token would only add an entry for the garbage collector to walk.
  const kept = isCachedToken(token);
  let body = kept ? validateBodies.get(token) : undefined;
  if (body === undefined) {
    body = Buffer.from(validateBody('Bearer', token));
    if (kept) validateBodies.set(token, body);
  }
  sendJsonText(ctx.res, 200, body);
}

/**
 * The /Validate body: `claims` is the payload text as issued (payloadJson), not a re-serialisation
 * of the parsed claims, so numbers keep their digits (reference §2.2 step 5). The text is the one
 * the validator parsed as a JSON object, so the body is valid JSON with the same members as before.
 */
function validateBody(protocol: 'Bearer' | 'PoP', token: ValidatedToken): string {
  return `{"protocol":${JSON.stringify(protocol)},"token":${JSON.stringify(token.raw)},"claims":${payloadJson(token)}}`;
}

/** The /Validate answer per cached validated token (isCachedToken: the same object on every request). */
const validateBodies = new WeakMap<ValidatedToken, Buffer>();
/** The /AuthorizationHeader answer per acquired token: the acquirer returns the same object for a cached token. */
const authorizationHeaderBodies = new WeakMap<AcquiredToken, Buffer>();

/**
 * Warns about ignored caller input the way Microsoft's event ids 3–5 do (reference §1.5). The caller
 * decides how often these lines are written, so they go through the log limiter like the failures
 * do: at most LOG_LINES_PER_SECOND per event and route, the next line saying how many were held back.
 */
function logIgnored(logger: Logger, limiter: LogLimiter, route: OverrideRoute, r: { overridesIgnored: boolean; agentParamsIgnored: boolean; baseUrlOverrideIgnored: boolean }): void {
  if (r.overridesIgnored) warnIgnored(logger, limiter, route, 'OverridesIgnored', `Caller-supplied 'optionsOverride.*' parameters were ignored on route '${route}' because Sidecar:AllowOverrides:${route} is false.`);
  if (r.baseUrlOverrideIgnored) warnIgnored(logger, limiter, route, 'BaseUrlOverrideIgnored', "'optionsOverride.BaseUrl' is never honoured.");
  if (r.agentParamsIgnored) warnIgnored(logger, limiter, route, 'AgentIdentityOverridesIgnored', `Agent identity parameters were ignored because Sidecar:AllowOverrides:${route} is false.`);
}

function warnIgnored(logger: Logger, limiter: LogLimiter, route: OverrideRoute, event: string, message: string): void {
  const key = `${event}:${route}`;
  if (limiter.allow(key)) logger.warn({ route, event, ...limiter.suppressed(key) }, message);
}

/** Shared front half of the AuthorizationHeader and DownstreamApi routes (§2.3 steps 1–5). */
async function prepare(ctx: RouteContext, deps: RouteDeps, route: OverrideRoute, authenticated: boolean, scopesNonEmpty: boolean): Promise<AcquireRequest> {
  const user = await authenticate(deps.validator, ctx.authorization, authenticated ? 'required' : 'optional');
  return acquireRequest(ctx, deps, route, user, scopesNonEmpty);
}

/** Steps 3–5 for an authenticated (or anonymous) caller: the API's options with overrides, checked. */
function acquireRequest(ctx: RouteContext, deps: RouteDeps, route: OverrideRoute, user: ValidatedToken | undefined, scopesNonEmpty: boolean): AcquireRequest {
  const resolved = resolveApiOptions(deps.config, ctx.apiName, ctx.query, overridesAllowed(deps.config, route));
  logIgnored(deps.logger, ctx.logLimiter, route, resolved);
  assertScopes(resolved.options, scopesNonEmpty);
  return { options: resolved.options, user, agent: resolved.agent, correlationId: resolved.options.acquireTokenOptions.correlationId };
}

function sendAuthorizationHeader(ctx: RouteContext, token: AcquiredToken): void {
  let body = authorizationHeaderBodies.get(token);
  if (body === undefined) authorizationHeaderBodies.set(token, (body = Buffer.from(JSON.stringify({ authorizationHeader: `${token.scheme} ${token.token}` }))));
  sendJsonText(ctx.res, 200, body);
}

function authorizationHeaderRoute(authenticated: boolean): Route['handle'] {
  const route: OverrideRoute = authenticated ? 'GetAuthorizationHeader' : 'GetAuthorizationHeaderUnauthenticated';
  const fully = async (ctx: RouteContext, deps: RouteDeps, prepared?: AcquireRequest): Promise<void> => {
    const req = prepared ?? (await prepare(ctx, deps, route, authenticated, false));
    sendAuthorizationHeader(ctx, await deps.acquirer.acquire(req));
  };
  // A caller validated at once whose downstream token is cached is answered without a promise.
  return (ctx, deps) => {
    const caller = authenticateNow(deps.validator, ctx.authorization, authenticated ? 'required' : 'optional');
    if (caller === undefined) return fully(ctx, deps);
    const req = acquireRequest(ctx, deps, route, caller === ANONYMOUS ? undefined : caller, false);
    const token = deps.acquirer.cached(req);
    if (token === undefined) return fully(ctx, deps, req);
    sendAuthorizationHeader(ctx, token);
    return undefined;
  };
}

function downstreamApiRoute(authenticated: boolean): Route['handle'] {
  const route: OverrideRoute = authenticated ? 'CallDownstreamApi' : 'CallDownstreamApiUnauthenticated';
  return async (ctx, deps) => {
    const { options, user, agent, correlationId } = await prepare(ctx, deps, route, authenticated, true);
    const contentType = ctx.req.headers['content-type'];
    const maxBodyBytes = deps.config.sidecar.http.maxBodyBytes;
    // Without a usable Content-Type nothing is forwarded (§2.4 step 6), so the body is not read,
    // nor held to the size limit: Microsoft calls the API whatever was sent.
    let body: Buffer = NO_BODY;
    if (forwardsBody(contentType)) body = await readBody(ctx.req, ctx.res, maxBodyBytes, deps.bodyBudget);
    else discardBody(ctx.req, ctx.res, maxBodyBytes);
    try {
      const result = await callDownstreamApi(deps.downstream, {
        options,
        user,
        agent,
        inbound: { contentType, body },
        correlationId,
      });
      sendJson(ctx.res, 200, result);
    } finally {
      // Held until the downstream call is over, whatever its outcome (the call may still send it).
      deps.bodyBudget.release(body.length);
    }
  };
}

function segmentRoute(name: string, method: Route['method'], literal: string, withName: boolean, handle: Route['handle']): Route {
  const count = withName ? 2 : 1;
  return { name, method, firstSegments: [literal], matches: (first, n) => first === literal && n === count, handle };
}

/** Every route of the identity API; matching is case-insensitive on the literal segment. */
export const ROUTES: readonly Route[] = [
  // Microsoft maps it with MapHealthChecks, i.e. `endpoints.Map(pattern, pipeline)`: every method gets
  // 200 Healthy (node:http sends no body to HEAD). Its writer (HealthCheckResponseWriters.
  // WriteMinimalPlaintext) sets exactly `text/plain`, no charset (reference §2.1).
  segmentRoute('Healthz', 'ANY', 'healthz', false, (ctx) => sendText(ctx.res, 200, 'Healthy', 'text/plain')),
  segmentRoute('ValidateAuthorizationHeader', 'GET', 'validate', false, validate),
  segmentRoute('AuthorizationHeader', 'GET', 'authorizationheader', true, authorizationHeaderRoute(true)),
  segmentRoute('AuthorizationHeaderUnauthenticated', 'GET', 'authorizationheaderunauthenticated', true, authorizationHeaderRoute(false)),
  segmentRoute('DownstreamApi', 'POST', 'downstreamapi', true, downstreamApiRoute(true)),
  segmentRoute('DownstreamApiUnauthenticated', 'POST', 'downstreamapiunauthenticated', true, downstreamApiRoute(false)),
  {
    name: 'OpenApi',
    method: 'GET',
    firstSegments: ['openapi'],
    // Development only, like Microsoft's MapOpenApi (reference §2 table).
    matches: (first, n, development) => development && first === 'openapi',
    handle: (ctx) => {
      if (ctx.path.toLowerCase() !== '/openapi/v1.json') {
        ctx.res.statusCode = 404;
        ctx.res.end();
        return;
      }
      sendJson(ctx.res, 200, OPENAPI_DOCUMENT);
    },
  },
];
