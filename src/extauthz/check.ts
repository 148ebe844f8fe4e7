/**
 * The ext_authz decision: a thin adapter that turns an Envoy CheckRequest into the shared pipeline
 * (extract credential → validate → authorize → acquire) and its outcome into a CheckResponse.
 *
 * Every outcome is a CheckResponse. A deny is never a failed RPC, because Envoy reads a failed RPC as
 * an Error and `failure_mode_allow: true` would let the request through (reference §1.3).
 */
import { setMaxListeners } from 'node:events';
import type { ExtAuthzOptions } from '../config/types.js';
import { SidecarError, toSidecarError, wwwAuthenticate, type ErrorCode } from '../errors.js';
import { setNewest } from '../bounded-map.js';
import { clip, redactTokens, safeCause, type Logger } from '../log.js';
import { createLogLimiter, LOG_LINES_PER_SECOND } from '../log-limit.js';
import { requireScopesOrRoles } from '../pipeline/authorize.js';
import { parseAuthorization } from '../pipeline/credential.js';
import { authenticate, authenticateNow, isCachedToken } from '../pipeline/authenticate.js';
import type { AcquiredToken, AcquireRequest, EffectiveApiOptions, TokenAcquirer, TokenValidator, ValidatedToken } from '../pipeline/types.js';
import { defaultPolicy, quotedName, routePolicy, routeTable, type RoutePolicy } from './policy.js';
import { needsCallerToken } from '../pipeline/api-options.js';
import { isToken, isValidFieldValue } from '../net/http-fields.js';
import { timerDelay } from '../timer-delay.js';

// ---- Wire shapes (proto-loader with keepCase, enums as names, longs as strings). ----

/** `envoy.config.core.v3.HeaderValue`. */
export interface HeaderValue {
  key?: string;
  value?: string;
  raw_value?: Uint8Array;
}

/**
 * `envoy.service.auth.v3.AttributeContext.HttpRequest`: the fields the checker reads. The server
 * decodes only the fields named in CHECK_REQUEST_FIELDS_READ (protos.ts); reading another one here
 * means adding it there.
 */
export interface HttpRequestAttributes {
  method?: string;
  headers?: Record<string, string>;
  header_map?: { headers?: HeaderValue[] };
  path?: string;
  host?: string;
}

/** `envoy.service.auth.v3.CheckRequest`: the fields the checker reads (see HttpRequestAttributes). */
export interface CheckRequest {
  attributes?: {
    request?: { http?: HttpRequestAttributes };
    context_extensions?: Record<string, string>;
  };
}

/** `envoy.config.core.v3.HeaderValueOption`, always with an explicit append_action (reference §1.3). */
export interface HeaderValueOption {
  header: { key: string; value: string };
  append_action: 'OVERWRITE_IF_EXISTS_OR_ADD';
}

/**
 * `google.protobuf.Struct` in proto-loader object form (string values only). protobufjs supplies
 * the well-known types itself with camelCase field names, so `stringValue` even under keepCase.
 */
export interface StringStruct {
  fields: Record<string, { stringValue: string }>;
}

/** `envoy.service.auth.v3.OkHttpResponse`. */
export interface OkHttpResponse {
  headers: HeaderValueOption[];
  headers_to_remove: string[];
  query_parameters_to_remove?: string[];
}

/** `envoy.service.auth.v3.DeniedHttpResponse`; `status.code` is an `envoy.type.v3.StatusCode` name. */
export interface DeniedHttpResponse {
  status: { code: string };
  headers: HeaderValueOption[];
  body: string;
}

/** `envoy.service.auth.v3.CheckResponse`. */
export interface CheckResponse {
  status: { code: number; message?: string };
  ok_response?: OkHttpResponse;
  denied_response?: DeniedHttpResponse;
  dynamic_metadata?: StringStruct;
}

// ---- Dependencies. ----

export interface CheckDeps {
  readonly options: ExtAuthzOptions;
  readonly validator: TokenValidator;
  readonly acquirer: TokenAcquirer;
  /** The named DownstreamApis entry with no overrides; undefined when the name is not configured. */
  readonly resolveApiOptions: (apiName: string) => EffectiveApiOptions | undefined;
  readonly logger: Logger;
  /** `envoy.type.v3.StatusCode` number → enum name (from protos.ts). */
  readonly httpStatusNames: ReadonlyMap<number, string>;
  /** Sidecar:Outbound:TimeoutMs; the furthest deadline honoured is MAX_DEADLINE_OUTBOUND_TIMEOUTS of it. */
  readonly outboundTimeoutMs: number;
  readonly now?: () => number;
}

/**
 * Decides Check requests; `deadline` is the call's deadline in epoch ms (Infinity or undefined =
 * none). A warm Check (a cached caller, a cached downstream token) is answered synchronously; the
 * others return the promise of their answer.
 */
export interface Checker {
  check(request: CheckRequest, deadline?: number): CheckResponse | Promise<CheckResponse>;
}

// ---- Constants shared by every response (read-only; protobufjs only reads them). ----

const OVERWRITE = 'OVERWRITE_IF_EXISTS_OR_ADD' as const;
const OK_STATUS = Object.freeze({ code: 0 });
const ACCESS_TOKEN_PARAM = Object.freeze(['access_token']) as unknown as string[];
/** A claim header longer than this is omitted: Envoy's default request header limit is 60 KiB in total. */
const MAX_CLAIM_HEADER_BYTES = 4096;
const UPPER_CASE = /[A-Z]/;
/** Client-sent values that go into log lines are cut to this many characters. */
const MAX_LOGGED_REQUEST_ID = 128;
const MAX_LOGGED_PATH = 256;
const ACCESS_TOKEN_QUERY = /[?&]access_token(?:[=&#]|$)/;
const REQUEST_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const EMPTY_HEADERS: Record<string, string> = Object.freeze(Object.create(null) as Record<string, string>);
/** Answer this long before the caller's deadline so the deny arrives in time (and no less than 20 ms, no more than 250 ms). */
const DEADLINE_MARGIN_FRACTION = 0.1;
const MIN_DEADLINE_MARGIN_MS = 20;
const MAX_DEADLINE_MARGIN_MS = 250;
const MAX_CACHED_API_NAMES = 256;
const MAX_CACHED_POLICIES = 256;
/** Callers whose allow responses are kept per route policy (the warm set: callers the validator has cached). */
const MAX_MEMOISED_CALLERS = 4096;
/**
 * Callers whose allow responses are kept across all route policies: with many routes each gets a
 * share (never fewer than MIN_MEMOISED_PER_POLICY), so the memo's memory does not grow with the
 * number of routes (an entry also keeps its caller's validated token alive after the validator has
 * dropped it).
 */
const MAX_MEMOISED_TOTAL = 16_384;
const MIN_MEMOISED_PER_POLICY = 64;
/** Stands for "no caller" / "no token" as a memo key. */
const NONE = Object.freeze({});

/** What the allow memos keep per key: a pair of values made for one acquired token. */
interface ByQueryForm<V> {
  /** The acquired token the values carry (NONE without one); a refreshed token replaces the entry. */
  readonly token: object;
  /** [no access_token in the query, access_token in the query], each made when first needed. */
  readonly pair: [V | undefined, V | undefined];
}

/** The pair kept for `key` while it carries `token` (a new pair once the token changes); bounded, oldest out. */
function pairFor<K, V>(map: Map<K, ByQueryForm<V>>, key: K, token: object, max: number): [V | undefined, V | undefined] {
  let entry = map.get(key);
  if (entry === undefined || entry.token !== token) {
    entry = { token, pair: [undefined, undefined] };
    setNewest(map, key, entry, max);
  }
  return entry.pair;
}

/** AcquireRequest built field by field (no spreads on the hot path). */
type MutableAcquireRequest = { -readonly [K in keyof AcquireRequest]: AcquireRequest[K] };

function option(key: string, value: string): HeaderValueOption {
  return { header: { key, value }, append_action: OVERWRITE };
}

/**
 * The request headers with lower-case names. Envoy's `headers` map is already lower-cased and
 * comma-joined; the raw `header_map` form (encode_raw_headers) is neither, so it is normalised here.
 */
export function inboundHeaders(http: HttpRequestAttributes): Record<string, string> {
  const raw = http.header_map?.headers;
  if (raw !== undefined && raw.length > 0) {
    const out = Object.create(null) as Record<string, string>;
    for (const h of raw) {
      if (!h.key) continue;
      const name = h.key.toLowerCase();
      const value =
        h.raw_value !== undefined && h.raw_value.length > 0
          ? Buffer.from(h.raw_value.buffer, h.raw_value.byteOffset, h.raw_value.byteLength).toString('latin1')
          : (h.value ?? '');
      const prev = out[name];
      out[name] = prev === undefined ? value : prev + ',' + value;
    }
    return out;
  }
  const map = http.headers;
  if (map === undefined) return EMPTY_HEADERS;
  for (const name in map) {
    if (UPPER_CASE.test(name)) {
      const out = Object.create(null) as Record<string, string>;
      for (const n in map) {
        const lower = n.toLowerCase();
        const prev = out[lower];
        out[lower] = prev === undefined ? map[n] : prev + ',' + map[n];
      }
      return out;
    }
  }
  return map;
}

/** A claim value as a header value: strings as is, numbers/booleans stringified, arrays space-joined. */
export function claimHeaderValue(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) {
    const parts: string[] = [];
    for (const item of value) {
      if (typeof item === 'string' || typeof item === 'number' || typeof item === 'boolean') parts.push(String(item));
      else return undefined;
    }
    return parts.join(' ');
  }
  return undefined;
}

/** A JWS/JWE-shaped run of base64url segments. */
function pathWithoutQuery(path: string): string {
  const q = path.indexOf('?');
  return q < 0 ? path : path.slice(0, q);
}

/** A client-sent value for a log line, cut to `max` characters (a path or request id can be as long as Envoy's header limit). */
function loggable(value: string | undefined, max: number): string | undefined {
  if (value === undefined) return undefined;
  // Token-shaped text goes before the cut: cut first, a token's head would no longer look like one.
  return clip(value.includes('eyJ') ? redactTokens(value) : value, max);
}

/** Where a request went and its id, as the ext_authz log lines show them. */
function requestLogFields(facts: RequestFacts): { path: string | undefined; requestId: string | undefined } {
  return { path: loggable(pathWithoutQuery(facts.path), MAX_LOGGED_PATH), requestId: loggable(facts.headers['x-request-id'], MAX_LOGGED_REQUEST_ID) };
}

/** What the pipeline learned about one request, for the allow response and logs. */
interface RequestFacts {
  readonly headers: Record<string, string>;
  readonly path: string;
}

/** Per-call state shared between the pipeline and its deadline timer. */
interface CallState {
  /** When the acquirer should give up (epoch ms); undefined = the call has no deadline. */
  abortAt: number | undefined;
  /** The call has been answered (by the pipeline or by the deadline timer). */
  answered: boolean;
}

/** Width of one shared abort slice. */
const ABORT_SLICE_MS = 50;

/** What DeadlineSignals.lease() hands out: a shared signal, to give back with release(). */
export interface DeadlineLease {
  readonly signal: AbortSignal;
}

/** One shared abort slice: its controller, its timer, and how many acquisitions hold it. */
interface Slice extends DeadlineLease {
  readonly key: number;
  readonly controller: AbortController;
  readonly timer: NodeJS.Timeout;
  holders: number;
}

/**
 * Abort signals for acquisitions, shared by every call whose abort time falls in the same 50 ms
 * slice. An AbortController per Check costs more than the rest of a warm Check; the signal only
 * releases the acquirer's wait (the deny has already been sent by the call's own timer), so
 * firing up to one slice late is harmless. A slice never fires early.
 *
 * A slice lives while an acquisition holds it: the last release() clears its timer and drops it, so
 * what is kept is one slice per distinct 50 ms of the acquisitions in flight, never one per deadline
 * seen (a caller chooses its deadline, up to ~24.8 days in grpc-js). Callers also clamp the
 * deadline (createChecker), which keeps the slices within MAX_DEADLINE_OUTBOUND_TIMEOUTS outbound
 * timeouts of now.
 */
export class DeadlineSignals {
  readonly #slices = new Map<number, Slice>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Slices kept now. */
  get size(): number {
    return this.#slices.size;
  }

  /** A signal that aborts at or shortly after `abortAt` (epoch ms), held until release(). */
  lease(abortAt: number): DeadlineLease {
    const key = Math.ceil(abortAt / ABORT_SLICE_MS);
    let slice = this.#slices.get(key);
    if (slice === undefined) {
      const controller = new AbortController();
      // Many concurrent acquisitions may listen on one slice; that is by design, not a leak.
      setMaxListeners(0, controller.signal);
      const timer = setTimeout(() => {
        this.#slices.delete(key);
        controller.abort();
      }, Math.max(0, key * ABORT_SLICE_MS - this.#now()));
      timer.unref();
      slice = { key, controller, signal: controller.signal, timer, holders: 0 };
      this.#slices.set(key, slice);
    }
    slice.holders++;
    return slice;
  }

  /** Gives a lease back; the slice goes once nothing holds it (its signal then never aborts). */
  release(lease: DeadlineLease): void {
    const slice = lease as Slice;
    if (--slice.holders > 0 || this.#slices.get(slice.key) !== slice) return;
    clearTimeout(slice.timer);
    this.#slices.delete(slice.key);
  }
}

/**
 * The furthest deadline a Check honours, in Sidecar:Outbound:TimeoutMs: the work of a cold Check is
 * a few outbound calls in a row, each ended by that timeout (signing keys, a credential from managed
 * identity or Key Vault, the token request, one retry with a reloaded credential), so a Check
 * still waiting after six of them has failed anyway. A caller's deadline further off is clamped
 * to it: the Check's timer and its abort slice then never outlive the work (grpc-js accepts up to
 * ~24.8 days), and no timer is asked for more than setTimeout's 2^31-1 ms, beyond which it fires
 * at once.
 */
export const MAX_DEADLINE_OUTBOUND_TIMEOUTS = 6;

/** Builds the Check decision over the injected validator and acquirer. Throws if the defaults are invalid. */
export function createChecker(deps: CheckDeps): Checker {
  const { options, validator, acquirer, resolveApiOptions, logger, httpStatusNames } = deps;
  const now = deps.now ?? Date.now;
  const defaults = defaultPolicy(options);
  const logLimiter = createLogLimiter(LOG_LINES_PER_SECOND, logger.isLevelEnabled('debug'));
  const signals = new DeadlineSignals(now);
  // The configuration bounds TimeoutMs so that this fits a timer; the clamp holds without it.
  const maxDeadlineMs = timerDelay(MAX_DEADLINE_OUTBOUND_TIMEOUTS * deps.outboundTimeoutMs);
  // ext_authz takes no optionsOverride, so a name always resolves to the same deep-frozen options;
  // resolving once per name keeps the deep copy off the hot path. Only configured names are kept
  // (a name that is not costs a property lookup), so what is kept is bounded by the configuration,
  // not by the names a peer sends.
  const resolvedApis = new Map<string, EffectiveApiOptions>();
  function apiOptionsFor(apiName: string): EffectiveApiOptions | undefined {
    let resolved = resolvedApis.get(apiName);
    if (resolved === undefined) {
      resolved = resolveApiOptions(apiName);
      if (resolved !== undefined && resolvedApis.size < MAX_CACHED_API_NAMES) resolvedApis.set(apiName, resolved);
    }
    return resolved;
  }
  const claimHeaders: ReadonlyArray<readonly [header: string, claim: string]> = Object.entries(options.claimsToHeaders).map(
    ([h, c]) => [h.toLowerCase(), c] as const,
  );
  for (const [header] of claimHeaders) {
    if (!isToken(header)) throw new Error(`Sidecar:ExtAuthz:ClaimsToHeaders: "${header}" is not a valid header name.`);
  }
  const internalDeny = renderDeny(new SidecarError('internal'), httpStatusNames);
  const allClaimHeaderNames = Object.freeze(claimHeaders.map(([h]) => h)) as unknown as string[];
  /**
   * The allow for a CORS preflight on a route, one per route policy: it sets nothing and removes
   * every header the route would have set (the claim headers, and the inject header of a route with
   * a downstream API), so a client-sent copy never reaches the app as if the sidecar had set it.
   */
  const preflightAllows = new WeakMap<RoutePolicy, CheckResponse>();
  function corsPreflightResponse(policy: RoutePolicy): CheckResponse {
    let response = preflightAllows.get(policy);
    if (response === undefined) {
      const remove = policy.downstreamApi !== undefined && !allClaimHeaderNames.includes(policy.injectHeader) ? [...allClaimHeaderNames, policy.injectHeader] : allClaimHeaderNames;
      response = Object.freeze({
        status: OK_STATUS,
        ok_response: Object.freeze({ headers: Object.freeze([]) as unknown as HeaderValueOption[], headers_to_remove: Object.freeze(remove) as unknown as string[] }),
      });
      preflightAllows.set(policy, response);
    }
    return response;
  }

  function deny(err: SidecarError, facts: RequestFacts | undefined, log = true): CheckResponse {
    const spec = err.spec;
    if (log && logger.isLevelEnabled(spec.logLevel) && logLimiter.allow(err.code)) {
      const cause = (err as { cause?: unknown }).cause;
      logger[spec.logLevel](
        {
          code: err.code,
          ...(err.detail !== undefined ? { detail: err.detail } : {}),
          ...(cause instanceof Error ? { cause: safeCause(cause) } : {}),
          ...(facts ? requestLogFields(facts) : {}),
          ...logLimiter.suppressed(err.code),
        },
        'ext_authz deny',
      );
    }
    return renderDeny(err, httpStatusNames);
  }

  /**
   * The pipeline's authenticate step with the route's policy on top: `none` skips it; `optional` lets
   * a request without a bearer token through (unless the route requires scopes or roles) but, unlike
   * the HTTP API's unauthenticated routes, a token that is sent must be valid. A PoP credential counts
   * as none: Envoy gives no body to check a signed HTTP request against.
   */
  async function authenticateFor(policy: RoutePolicy, headers: Record<string, string>): Promise<ValidatedToken | undefined> {
    if (policy.validate === 'none') return undefined;
    if (
      policy.validate === 'optional' &&
      policy.requiredScopes.length === 0 &&
      policy.requiredRoles.length === 0 &&
      parseAuthorization(headers.authorization).kind !== 'bearer'
    ) {
      return undefined;
    }
    return authenticate(validator, headers.authorization, 'required');
  }

  /** The acquisition for the route's downstream API (no abort signal yet: a cached token needs none). */
  function acquireRequest(policy: RoutePolicy, user: ValidatedToken | undefined, headers: Record<string, string>): MutableAcquireRequest {
    const apiName = policy.downstreamApi as string;
    const apiOptions = apiOptionsFor(apiName);
    if (apiOptions === undefined) throw new SidecarError('api_not_configured', `The downstream API ${quotedName(apiName)} is not configured.`);
    if (user === undefined && needsCallerToken(apiOptions, policy.agent)) {
      // The acquirer would answer acquisition_ui_required, a 401 that sends the client to sign in.
      // A `none` route never takes a token, so signing in cannot help: the route is misconfigured.
      if (policy.validate === 'none') {
        throw new SidecarError('misconfigured', `The route does not validate tokens (validate none) but its downstream API ${quotedName(apiName)} needs the caller's token (On-Behalf-Of).`);
      }
      // An `optional` route called without one: a token would let it through, so ask for it.
      throw new SidecarError('credential_missing');
    }
    const req: MutableAcquireRequest = { options: apiOptions };
    if (user !== undefined) req.user = user;
    if (policy.agent !== undefined) req.agent = policy.agent;
    const requestId = headers['x-request-id'];
    if (requestId !== undefined && REQUEST_ID.test(requestId)) req.correlationId = requestId;
    return req;
  }

  /**
   * Route policies by context_extensions content. Envoy sends the same few maps (one per route in
   * envoy.yaml) over and over; parsing each once keeps the policy, and so the allow memo below,
   * stable per route. Bounded in entries and, by routePolicy's bounds on context_extensions, in
   * bytes; an invalid or oversized map throws and is not kept, nor is one naming a downstream API
   * that is not configured (its every Check is a deny; a peer could otherwise fill the cache).
   */
  const policies = new Map<string, RoutePolicy>();
  const routes = routeTable(defaults, options.routes);
  function policyFor(ext: Readonly<Record<string, string>> | undefined, http: HttpRequestAttributes, facts: RequestFacts): RoutePolicy {
    let base = defaults;
    let rule = -1;
    if (routes !== undefined) {
      rule = routes.match(facts.path, http.host || facts.headers[':authority'] || facts.headers.host);
      if (rule >= 0) base = routes.policies[rule];
    }
    if (ext === undefined) return base;
    let extKey = '';
    // Length-prefixed, so no two different maps can spell the same key.
    for (const k in ext) extKey += `${k.length}:${k}${ext[k].length}:${ext[k]}`;
    if (extKey === '') return base;
    // Over a rule's policy, the key names the rule too (`<index>#`, which no length prefix spells).
    const key = rule < 0 ? extKey : `${rule}#${extKey}`;
    let policy = policies.get(key);
    if (policy === undefined) {
      // From the raw layers, not over `base`: a rule's resolved policy no longer tells which keys
      // the rule set itself and which it took from (or dropped of) the defaults.
      policy = routePolicy(defaults, ext, rule < 0 ? undefined : options.routes[rule].settings);
      if (policies.size < MAX_CACHED_POLICIES && (policy.downstreamApi === undefined || apiOptionsFor(policy.downstreamApi) !== undefined)) {
        policies.set(key, policy);
      }
    }
    return policy;
  }

  /**
   * Allow responses by (route policy, caller, acquired token, token-in-query): a pure function of
   * those, and the same caller with the same cached downstream token on the same route is the warm
   * path. Bounded Maps, not WeakMaps: with a new token on every request (first sight) a WeakMap
   * entry per caller made each garbage collection slower; here the oldest caller is dropped.
   *
   * Only callers the validator has cached are kept: it hands out the same frozen ValidatedToken for
   * those (from a token's second request on) and a fresh unfrozen one for a token it has seen once,
   * so a one-off caller leaves no entry, no response and no encoding behind. A kept response is
   * frozen, and the server keeps the encoding of a frozen response and sends it again.
   */
  const allowMemo = new Map<RoutePolicy, Map<object, ByQueryForm<CheckResponse>>>();
  let memoisedPerPolicy = MAX_MEMOISED_CALLERS;
  function memoisedAllow(policy: RoutePolicy, user: ValidatedToken | undefined, token: AcquiredToken | undefined, tokenInQuery: boolean): CheckResponse {
    if (user !== undefined && !isCachedToken(user)) return allowResponse(policy, user, token, tokenInQuery);
    let byUser = allowMemo.get(policy);
    if (byUser === undefined) {
      if (allowMemo.size >= MAX_CACHED_POLICIES) allowMemo.clear();
      allowMemo.set(policy, (byUser = new Map()));
      memoisedPerPolicy = Math.min(MAX_MEMOISED_CALLERS, Math.max(MIN_MEMOISED_PER_POLICY, Math.floor(MAX_MEMOISED_TOTAL / allowMemo.size)));
    }
    // A policy's map shrinks to a smaller share when it next takes a new caller.
    const pair = pairFor(byUser, user ?? NONE, token ?? NONE, memoisedPerPolicy);
    return (pair[tokenInQuery ? 1 : 0] ??= Object.freeze(allowResponse(policy, user, token, tokenInQuery)));
  }

  function allow(policy: RoutePolicy, user: ValidatedToken | undefined, token: AcquiredToken | undefined, facts: RequestFacts): CheckResponse {
    const response = memoisedAllow(policy, user, token, ACCESS_TOKEN_QUERY.test(facts.path));
    if (logger.isLevelEnabled('debug')) {
      logger.debug({ ...requestLogFields(facts), downstreamApi: policy.downstreamApi }, 'ext_authz allow');
    }
    return response;
  }

  /**
   * The OkHttpResponse part of allows whose headers depend on no claim (no ClaimsToHeaders): one
   * frozen object per (route policy, acquired token, token-in-query), shared by every caller, so the
   * server encodes it once even for callers whose whole response is not kept (see server.ts).
   */
  const sharedOk = new Map<RoutePolicy, ByQueryForm<OkHttpResponse>>();
  function okFor(policy: RoutePolicy, claims: ValidatedToken['claims'] | undefined, token: AcquiredToken | undefined, tokenInQuery: boolean): OkHttpResponse {
    if (claimHeaders.length > 0) return okResponse(policy, claims, token, tokenInQuery);
    const pair = pairFor(sharedOk, policy, token ?? NONE, MAX_CACHED_POLICIES);
    return (pair[tokenInQuery ? 1 : 0] ??= Object.freeze(okResponse(policy, undefined, token, tokenInQuery)));
  }

  function allowResponse(policy: RoutePolicy, user: ValidatedToken | undefined, token: AcquiredToken | undefined, tokenInQuery: boolean): CheckResponse {
    const response: CheckResponse = { status: OK_STATUS, ok_response: okFor(policy, user?.claims, token, tokenInQuery) };
    if (user !== undefined) response.dynamic_metadata = identityMetadata(user);
    return response;
  }

  function okResponse(policy: RoutePolicy, claims: ValidatedToken['claims'] | undefined, token: AcquiredToken | undefined, tokenInQuery: boolean): OkHttpResponse {
    const headers: HeaderValueOption[] = [];
    const headersToRemove: string[] = [];
    let injected = false;
    if (token !== undefined) {
      const value = `${token.scheme} ${token.token}`;
      if (!isValidFieldValue(value)) throw new SidecarError('internal', 'The acquired token is not a valid header value.');
      headers.push(option(policy.injectHeader, value));
      injected = policy.injectHeader === 'authorization';
    }
    if (policy.stripInboundAuthorization && !injected) headersToRemove.push('authorization');
    // Envoy applies headers_to_remove after the header sets (ext_authz.cc onComplete), so a claim
    // header is either overwritten with our value or removed; a client-sent copy never survives.
    for (const [header, claim] of claimHeaders) {
      const value = claims === undefined ? undefined : claimHeaderValue(claims[claim]);
      if (value === undefined || value === '') {
        headersToRemove.push(header);
      } else if (!isValidFieldValue(value) || Buffer.byteLength(value) > MAX_CLAIM_HEADER_BYTES) {
        if (logLimiter.allow('claim_header_invalid')) {
          logger.warn({ header, claim, ...logLimiter.suppressed('claim_header_invalid') }, 'ext_authz omitted a claim header whose value is not a valid header value');
        }
        headersToRemove.push(header);
      } else {
        headers.push(option(header, value));
      }
    }
    const ok: OkHttpResponse = { headers, headers_to_remove: headersToRemove };
    // Only the Authorization header carries credentials (reference sidecar-http-api §4); a token in
    // the query string must not travel on to the app or its access logs.
    if (tokenInQuery) ok.query_parameters_to_remove = ACCESS_TOKEN_PARAM;
    return ok;
  }

  /**
   * The decision. Every step runs synchronously while it can: a caller the validator answers for at
   * once (cached, or verified with a signing key already loaded) and a downstream token the acquirer
   * has cached make the whole Check synchronous (no promise, no deadline timer); the first step that
   * must wait continues as a promise.
   */
  function decide(request: CheckRequest, state: CallState): CheckResponse | Promise<CheckResponse> {
    let facts: RequestFacts | undefined;
    try {
      const attributes = request.attributes;
      if (attributes === undefined) throw new SidecarError('request_invalid', 'The CheckRequest has no attributes.');
      const http = attributes.request?.http;
      if (http === undefined) throw new SidecarError('request_not_http');
      const headers = inboundHeaders(http);
      facts = { headers, path: http.path || headers[':path'] || '' };
      const policy = policyFor(attributes.context_extensions, http, facts);
      if (
        options.allowCorsPreflight &&
        (http.method || headers[':method']) === 'OPTIONS' &&
        headers.origin !== undefined &&
        headers['access-control-request-method'] !== undefined &&
        headers.authorization === undefined
      ) {
        // Opt-in (Sidecar:ExtAuthz:AllowCorsPreflight): browsers send preflights without credentials
        // (Fetch §4.8), whatever the route requires, for an app that answers CORS itself. Anyone can
        // send these headers, so by default they are checked like any request and Envoy's CORS filter
        // answers preflights. An OPTIONS with an Authorization header is not a browser's preflight.
        return corsPreflightResponse(policy);
      }
      if (policy.validate === 'none') return authorized(policy, undefined, facts, state);
      const user = authenticateNow(validator, headers.authorization, 'required');
      return user !== undefined ? authorized(policy, user, facts, state) : authenticateThenAuthorize(policy, facts, state);
    } catch (err) {
      return deny(toSidecarError(err), facts, !state.answered);
    }
  }

  async function authenticateThenAuthorize(policy: RoutePolicy, facts: RequestFacts, state: CallState): Promise<CheckResponse> {
    try {
      return await authorized(policy, await authenticateFor(policy, facts.headers), facts, state);
    } catch (err) {
      // After the deadline answer went out, a late failure is not worth a second log line.
      return deny(toSidecarError(err), facts, !state.answered);
    }
  }

  /** The steps after authentication: scopes and roles, the downstream token, the allow. Throws a deny's error. */
  function authorized(policy: RoutePolicy, user: ValidatedToken | undefined, facts: RequestFacts, state: CallState): CheckResponse | Promise<CheckResponse> {
    if (user !== undefined) requireScopesOrRoles(user.claims, policy.requiredScopes, policy.requiredRoles, policy.requireAll);
    if (policy.downstreamApi === undefined) return allow(policy, user, undefined, facts);
    const req = acquireRequest(policy, user, facts.headers);
    const token = acquirer.cached(req);
    return token !== undefined ? allow(policy, user, token, facts) : acquireThenAllow(policy, user, req, facts, state);
  }

  async function acquireThenAllow(policy: RoutePolicy, user: ValidatedToken | undefined, req: MutableAcquireRequest, facts: RequestFacts, state: CallState): Promise<CheckResponse> {
    const lease = state.abortAt !== undefined ? signals.lease(state.abortAt) : undefined;
    try {
      if (lease !== undefined) req.signal = lease.signal;
      return allow(policy, user, await acquirer.acquire(req), facts);
    } catch (err) {
      return deny(toSidecarError(err), facts, !state.answered);
    } finally {
      if (lease !== undefined) signals.release(lease);
    }
  }

  return {
    check(request, deadline) {
      if (deadline === undefined || !Number.isFinite(deadline)) return decide(request, { abortAt: undefined, answered: false });
      const t = now();
      // The caller chooses its deadline: one further off than the work can take is clamped.
      const until = Math.min(deadline, t + maxDeadlineMs);
      const remaining = until - t;
      const margin = Math.min(MAX_DEADLINE_MARGIN_MS, Math.max(MIN_DEADLINE_MARGIN_MS, remaining * DEADLINE_MARGIN_FRACTION));
      const budget = Math.max(0, remaining - margin);
      const state: CallState = { abortAt: until - margin, answered: false };
      const decided = decide(request, state);
      if (!(decided instanceof Promise)) return decided;
      return new Promise<CheckResponse>((resolve) => {
        const timer = setTimeout(() => {
          if (state.answered) return;
          state.answered = true;
          resolve(deny(new SidecarError('dependency_timeout', 'A dependency did not answer before the Check deadline.'), undefined));
        }, budget);
        const settle = (response: CheckResponse): void => {
          if (state.answered) return;
          state.answered = true;
          clearTimeout(timer);
          resolve(response);
        };
        // decide() renders its own failures as denies; should rendering one throw (a logger that
        // throws, say), the Check is still answered at once with a deny, not at the deadline.
        decided.then(settle, () => settle(internalDeny));
      });
    },
  };
}

/** The stable code of each deny this module rendered (for metrics), without re-reading its body. */
const denyReasons = new WeakMap<CheckResponse, ErrorCode>();

/** The error code a deny was rendered from; undefined for an allow. */
export function denyReason(response: CheckResponse): ErrorCode | undefined {
  return denyReasons.get(response);
}

/** Renders a SidecarError as a successful Check with a denied_response, all from ERROR_TABLE. */
export function renderDeny(err: SidecarError, httpStatusNames: ReadonlyMap<number, string>): CheckResponse {
  const response = buildDeny(err, httpStatusNames);
  denyReasons.set(response, err.code);
  return response;
}

function buildDeny(err: SidecarError, httpStatusNames: ReadonlyMap<number, string>): CheckResponse {
  const spec = err.spec;
  // status.message is a proto3 string, which Envoy refuses unless it is valid UTF-8 (an RPC error, an
  // allow under failure_mode_allow), and a detail can quote a name whose text is not well-formed:
  // protobufjs writes a lone surrogate in a short string as invalid UTF-8 (see isValidFieldValue).
  const message = err.envoyMessage.toWellFormed();
  const headers = [option('content-type', 'application/json'), option('cache-control', 'no-store')];
  const challenge = wwwAuthenticate(err);
  if (challenge !== undefined) headers.push(option('www-authenticate', challenge));
  if (err.retryAfterSec !== undefined && err.retryAfterSec > 0) headers.push(option('retry-after', String(Math.ceil(err.retryAfterSec))));
  return {
    status: { code: spec.grpcCode, message },
    denied_response: {
      // Envoy needs a defined StatusCode; every envoyStatus in ERROR_TABLE is one (tested).
      status: { code: httpStatusNames.get(spec.envoyStatus) ?? 'Forbidden' },
      headers,
      body: JSON.stringify({ code: err.code, message }),
    },
  };
}

/**
 * Non-secret identity facts for later Envoy filters and access logs (never a token). A claim whose
 * text is not well-formed (JSON's `"\ud800"`) is left out: protobufjs can write it as invalid UTF-8
 * into a proto3 string, which Envoy refuses (see isValidFieldValue).
 */
function identityMetadata(user: ValidatedToken): StringStruct {
  const fields: Record<string, { stringValue: string }> = {};
  if (user.tenantId.isWellFormed()) fields['entra.tid'] = { stringValue: user.tenantId };
  const { oid, azp, appid } = user.claims as { oid?: unknown; azp?: unknown; appid?: unknown };
  if (typeof oid === 'string' && oid.isWellFormed()) fields['entra.oid'] = { stringValue: oid };
  const client = typeof azp === 'string' ? azp : appid;
  if (typeof client === 'string' && client.isWellFormed()) fields['entra.azp'] = { stringValue: client };
  return { fields };
}
