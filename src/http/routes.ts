/**
 * The identity API's routes (reference sidecar-http-api §2). Each is a thin adapter: read the wire
 * request, run the pipeline (authenticate → resolve options → acquire → call), write the wire answer.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import type { SidecarConfig } from '../config/types.js';
import { SidecarError } from '../errors.js';
import { authenticate, isCachedToken } from '../pipeline/authenticate.js';
import { tokenScopes } from '../pipeline/authorize.js';
import { assertScopes, overridesAllowed, resolveApiOptions, type OverrideRoute } from '../pipeline/api-options.js';
import type { AcquiredToken, TokenAcquirer, TokenValidator, ValidatedToken } from '../pipeline/types.js';
import type { DownstreamCallDeps } from '../downstream/call.js';
import type { Metrics } from '../metrics.js';
import { callDownstreamApi } from '../downstream/call.js';
import { sendEmpty, sendJson, sendJsonText, sendText } from './problem.js';
import { POP_CHALLENGE, popCredential, validatePopRequest, type ReplayCache } from '../pop/inbound.js';
import { OPENAPI_DOCUMENT } from './openapi.js';

export interface RouteDeps {
  readonly config: SidecarConfig;
  readonly logger: Logger;
  readonly validator: TokenValidator;
  readonly acquirer: TokenAcquirer;
  readonly downstream: DownstreamCallDeps;
  readonly metrics: Metrics;
  /** Present when Sidecar:PopValidation:ReplayCache is on. */
  readonly popReplayCache?: ReplayCache;
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
  readBody(): Promise<Buffer>;
}

export interface Route {
  readonly name: string;
  readonly method: 'GET' | 'POST';
  /** `first` is the lower-cased first path segment; `count` the number of segments. */
  matches(first: string, count: number, development: boolean): boolean;
  handle(ctx: RouteContext, deps: RouteDeps): Promise<void>;
}

/** GET /Validate (reference §2.2). */
async function validate(ctx: RouteContext, deps: RouteDeps): Promise<void> {
  // PoP variant (§2.2): src/pop/inbound.ts decides; the AzureAd:Scopes gate does not apply.
  if (popCredential(ctx.req.headers.authorization) !== undefined) {
    const result = await validatePopRequest({ config: deps.config, validator: deps.validator, logger: deps.logger, replayCache: deps.popReplayCache }, ctx.req.headers);
    if (!result.ok) {
      // Microsoft answers every PoP failure the same way: no body, no error_description.
      sendEmpty(ctx.res, 401, { 'WWW-Authenticate': POP_CHALLENGE });
      return;
    }
    sendJson(ctx.res, 200, { protocol: 'PoP', token: result.token.raw, claims: result.token.claims });
    return;
  }
  const token = await authenticate(deps.validator, ctx.req.headers.authorization, 'required');
  if (!token) throw new SidecarError('credential_missing');
  const required = deps.config.azureAd.scopes;
  if (required !== undefined && required.trim() !== '') {
    // The whole configured string is one accepted scope (Microsoft's IDW10203 check, §2.2 step 2).
    if (!tokenScopes(token.claims).includes(required)) {
      sendText(ctx.res, 403, `IDW10203: The 'scope' or 'scp' claim does not contain scopes '${required}' or was not found. `);
      return;
    }
  }
  // A first-sight token would only add an entry for the garbage collector to walk.
  const kept = isCachedToken(token);
  let body = kept ? validateBodies.get(token) : undefined;
  if (body === undefined) {
    body = JSON.stringify({ protocol: 'Bearer', token: token.raw, claims: token.claims });
    if (kept) validateBodies.set(token, body);
  }
  sendJsonText(ctx.res, 200, body);
}

/** The /Validate answer per cached validated token (isCachedToken: the same object on every request). */
const validateBodies = new WeakMap<ValidatedToken, string>();
/** The /AuthorizationHeader answer per acquired token: the acquirer returns the same object for a cached token. */
const authorizationHeaderBodies = new WeakMap<AcquiredToken, string>();

/** Warns about ignored caller input the way Microsoft's event ids 3–5 do (reference §1.5). */
function logIgnored(logger: Logger, route: OverrideRoute, r: { overridesIgnored: boolean; agentParamsIgnored: boolean; baseUrlOverrideIgnored: boolean }): void {
  if (r.overridesIgnored) logger.warn({ route, event: 'OverridesIgnored' }, `Caller-supplied 'optionsOverride.*' parameters were ignored on route '${route}' because Sidecar:AllowOverrides:${route} is false.`);
  if (r.baseUrlOverrideIgnored) logger.warn({ route, event: 'BaseUrlOverrideIgnored' }, "'optionsOverride.BaseUrl' is never honoured.");
  if (r.agentParamsIgnored) logger.warn({ route, event: 'AgentIdentityOverridesIgnored' }, `Agent identity parameters were ignored because Sidecar:AllowOverrides:${route} is false.`);
}

/** Shared front half of the AuthorizationHeader and DownstreamApi routes (§2.3 steps 1–5). */
async function prepare(ctx: RouteContext, deps: RouteDeps, route: OverrideRoute, authenticated: boolean, scopesNonEmpty: boolean) {
  const user = await authenticate(deps.validator, ctx.req.headers.authorization, authenticated ? 'required' : 'optional');
  const resolved = resolveApiOptions(deps.config, ctx.apiName, ctx.query, overridesAllowed(deps.config, route));
  logIgnored(deps.logger, route, resolved);
  assertScopes(resolved.options, scopesNonEmpty);
  const correlationId = resolved.options.acquireTokenOptions.correlationId;
  return { user, resolved, correlationId };
}

function authorizationHeaderRoute(authenticated: boolean): Route['handle'] {
  const route: OverrideRoute = authenticated ? 'GetAuthorizationHeader' : 'GetAuthorizationHeaderUnauthenticated';
  return async (ctx, deps) => {
    const { user, resolved, correlationId } = await prepare(ctx, deps, route, authenticated, false);
    const token = await deps.acquirer.acquire({ options: resolved.options, user, agent: resolved.agent, correlationId });
    let body = authorizationHeaderBodies.get(token);
    if (body === undefined) authorizationHeaderBodies.set(token, (body = JSON.stringify({ authorizationHeader: `${token.scheme} ${token.token}` })));
    sendJsonText(ctx.res, 200, body);
  };
}

function downstreamApiRoute(authenticated: boolean): Route['handle'] {
  const route: OverrideRoute = authenticated ? 'CallDownstreamApi' : 'CallDownstreamApiUnauthenticated';
  return async (ctx, deps) => {
    const { user, resolved, correlationId } = await prepare(ctx, deps, route, authenticated, true);
    const body = await ctx.readBody();
    const result = await callDownstreamApi(deps.downstream, {
      options: resolved.options,
      user,
      agent: resolved.agent,
      inbound: { contentType: ctx.req.headers['content-type'], body },
      correlationId,
    });
    sendJson(ctx.res, 200, result);
  };
}

function segmentRoute(name: string, method: 'GET' | 'POST', literal: string, withName: boolean, handle: Route['handle']): Route {
  const count = withName ? 2 : 1;
  return { name, method, matches: (first, n) => first === literal && n === count, handle };
}

/** Every route of the identity API; matching is case-insensitive on the literal segment. */
export const ROUTES: readonly Route[] = [
  segmentRoute('Healthz', 'GET', 'healthz', false, async (ctx) => sendText(ctx.res, 200, 'Healthy')),
  segmentRoute('ValidateAuthorizationHeader', 'GET', 'validate', false, validate),
  segmentRoute('AuthorizationHeader', 'GET', 'authorizationheader', true, authorizationHeaderRoute(true)),
  segmentRoute('AuthorizationHeaderUnauthenticated', 'GET', 'authorizationheaderunauthenticated', true, authorizationHeaderRoute(false)),
  segmentRoute('DownstreamApi', 'POST', 'downstreamapi', true, downstreamApiRoute(true)),
  segmentRoute('DownstreamApiUnauthenticated', 'POST', 'downstreamapiunauthenticated', true, downstreamApiRoute(false)),
  {
    name: 'OpenApi',
    method: 'GET',
    // Development only, like Microsoft's MapOpenApi (reference §2 table).
    matches: (first, n, development) => development && first === 'openapi',
    handle: async (ctx) => {
      if (ctx.path.toLowerCase() !== '/openapi/v1.json') {
        ctx.res.statusCode = 404;
        ctx.res.end();
        return;
      }
      sendJson(ctx.res, 200, OPENAPI_DOCUMENT);
    },
  },
];
