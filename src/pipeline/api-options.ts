/**
 * Per-request downstream API options (reference sidecar-http-api §2.3 steps 1–5): look up the named
 * `DownstreamApis:<apiName>` entry, deep-copy it, merge `optionsOverride.*` (§2.5 grammar, exactly as
 * Microsoft's BindableDownstreamApiOptions parses it) and pick the agent identity parameters (§2.6).
 * The configured objects are never touched: every request gets its own copy (microsoft-identity-web
 * PR #3919 fixed a cross-request leak caused by mutating them).
 */
import type { AcquireTokenOptions, DownstreamApiOptions, SidecarConfig } from '../config/types.js';
import { SidecarError } from '../errors.js';
import { EMPTY_GUID, parseGuid } from '../guid.js';
import { isDnsName } from '../net/host-names.js';
import type { AgentSelection, EffectiveApiOptions } from './types.js';

/** The four routes that each have their own `Sidecar:AllowOverrides:<route>` switch (§3.4). */
export type OverrideRoute = 'GetAuthorizationHeader' | 'GetAuthorizationHeaderUnauthenticated' | 'CallDownstreamApi' | 'CallDownstreamApiUnauthenticated';

export interface ResolvedApiOptions {
  readonly options: EffectiveApiOptions;
  /** Agent identity selection, only when the route allows overrides and `AgentIdentity` was given. */
  readonly agent?: AgentSelection;
  /** `optionsOverride.*` keys were given but the route does not allow overrides (log `OverridesIgnored`). */
  readonly overridesIgnored: boolean;
  /** Agent parameters were given but the route does not allow overrides (log `AgentIdentityOverridesIgnored`). */
  readonly agentParamsIgnored: boolean;
  /** `optionsOverride.BaseUrl` was given; it is never honoured (≥1.1.0, SSRF fix). */
  readonly baseUrlOverrideIgnored: boolean;
}

const OVERRIDE_PREFIX = 'optionsoverride.';

/** What an unknown `apiName` resolves to: .NET named options fall back to a default-constructed object (§2.3 step 1). */
export function defaultApiOptions(): DownstreamApiOptions {
  return {
    relativePath: '',
    httpMethod: 'Get',
    requestAppToken: false,
    acceptHeader: 'application/json',
    contentType: 'application/json',
    protocolScheme: 'Bearer',
    extraHeaderParameters: {},
    extraQueryParameters: {},
    acquireTokenOptions: {
      forceRefresh: false,
      extraQueryParameters: {},
      extraHeadersParameters: {},
      extraParameters: {},
    },
  };
}


/** .NET bool.TryParse: `true`/`false`, case-insensitive, surrounding white space allowed. */
function parseBool(value: string): boolean | undefined {
  const v = value.trim().toLowerCase();
  if (v === 'true') return true;
  if (v === 'false') return false;
  return undefined;
}

/** The overrides a request supplied, collected before merging. */
interface CollectedOverrides {
  any: boolean;
  baseUrl: boolean;
  scopes: string[];
  requestAppToken?: boolean;
  relativePath?: string;
  httpMethod?: string;
  contentType?: string;
  acceptHeader?: string;
  tenant?: string;
  forceRefresh?: boolean;
  claims?: string;
  correlationId?: string;
  fmiPath?: string;
  longRunningWebApiSessionKey?: string;
  popPublicKey?: string;
  userAssignedClientId?: string;
  extraHeaders: Array<[string, string]>;
  extraQuery: Array<[string, string]>;
}

/** One query key as ASP.NET's query collection holds it: the first spelling of the name and every value, in order. */
interface QueryKey {
  readonly name: string;
  readonly values: string[];
}

/**
 * The query as ASP.NET binds it before BindableDownstreamApiOptions reads it: a dictionary whose
 * names compare case-insensitively (`optionsOverride.RelativePath` and `OPTIONSOVERRIDE.relativepath`
 * are one key), keeping the first spelling and all values, in the order the names first appear.
 */
function queryKeys(query: URLSearchParams): Map<string, QueryKey> {
  const keys = new Map<string, QueryKey>();
  for (const [name, value] of query) {
    const lower = name.toLowerCase();
    const key = keys.get(lower);
    if (key === undefined) keys.set(lower, { name, values: [value] });
    else key.values.push(value);
  }
  return keys;
}

/** `value` unless it is empty, the test every string override passes before it replaces a configured value (§2.5). */
function nonEmpty(value: string): string | undefined {
  return value !== '' ? value : undefined;
}

/**
 * Reads the `optionsOverride.*` keys the way Microsoft does (§2.5): Scopes takes every non-blank
 * value; every other key takes only its last value, and then that value alone is parsed and
 * checked. An empty or unparseable last value overrides nothing, even where an earlier one would
 * have: `RelativePath=etag&RelativePath=` calls the configured path, and
 * `RequestAppToken=true&RequestAppToken=bogus` asks for no app token.
 */
function collectOverrides(query: URLSearchParams): CollectedOverrides {
  const o: CollectedOverrides = { any: false, baseUrl: false, scopes: [], extraHeaders: [], extraQuery: [] };
  for (const [lower, { name, values }] of queryKeys(query)) {
    if (!lower.startsWith(OVERRIDE_PREFIX)) continue;
    const sub = lower.slice(OVERRIDE_PREFIX.length);
    if (sub === 'baseurl') {
      // Never honoured and, alone, not an override (§2.5).
      o.baseUrl = true;
      continue;
    }
    o.any = true;
    if (sub === 'scopes') {
      for (const value of values) if (value.trim() !== '') o.scopes.push(value);
      continue;
    }
    applyLastValue(o, sub, name.slice(OVERRIDE_PREFIX.length), values[values.length - 1]);
  }
  return o;
}

/** Applies the last value of one single-valued key; `sub` is the lower-cased sub-key, `subKey` as sent. */
function applyLastValue(o: CollectedOverrides, sub: string, subKey: string, last: string): void {
  switch (sub) {
    case 'requestapptoken':
      o.requestAppToken = parseBool(last);
      break;
    case 'relativepath':
      o.relativePath = nonEmpty(last);
      break;
    case 'httpmethod':
      o.httpMethod = nonEmpty(last);
      break;
    case 'contenttype':
      o.contentType = nonEmpty(last);
      break;
    case 'acceptheader':
      o.acceptHeader = nonEmpty(last);
      break;
    case 'acquiretokenoptions.tenant':
      o.tenant = nonEmpty(last);
      break;
    case 'acquiretokenoptions.forcerefresh':
      o.forceRefresh = parseBool(last);
      break;
    case 'acquiretokenoptions.claims':
      o.claims = nonEmpty(last);
      break;
    case 'acquiretokenoptions.correlationid': {
      const g = parseGuid(last);
      o.correlationId = g !== EMPTY_GUID ? g : undefined;
      break;
    }
    case 'acquiretokenoptions.fmipath':
      o.fmiPath = nonEmpty(last);
      break;
    case 'acquiretokenoptions.longrunningwebapisessionkey':
      o.longRunningWebApiSessionKey = nonEmpty(last);
      break;
    case 'acquiretokenoptions.poppublickey':
      o.popPublicKey = nonEmpty(last);
      break;
    case 'acquiretokenoptions.managedidentity.userassignedclientid':
      o.userAssignedClientId = nonEmpty(last);
      break;
    default:
      if (sub.startsWith('extraheaderparameters.')) {
        const header = subKey.slice('extraheaderparameters.'.length);
        if (header !== '' && last !== '') o.extraHeaders.push([header, last]);
      } else if (sub.startsWith('extraqueryparameters.')) {
        const param = subKey.slice('extraqueryparameters.'.length);
        if (param !== '') o.extraQuery.push([param, last]);
      }
      // Anything else is silently ignored but still counts as an override (§2.5).
      break;
  }
}

/** Adds or overwrites a header by name, matching names case-insensitively (HTTP header semantics). */
function setHeader(target: Record<string, string>, name: string, value: string): void {
  for (const existing of Object.keys(target)) {
    if (existing.toLowerCase() === name.toLowerCase()) delete target[existing];
  }
  target[name] = value;
}

/** A deep, unshared copy of configured options (plain data only: strings, booleans, arrays, records). */
function copyApiOptions(src: DownstreamApiOptions): DownstreamApiOptions {
  const ato = src.acquireTokenOptions;
  const acquireTokenOptions: AcquireTokenOptions = {
    ...ato,
    managedIdentity: ato.managedIdentity ? { ...ato.managedIdentity } : undefined,
    extraQueryParameters: { ...ato.extraQueryParameters },
    extraHeadersParameters: { ...ato.extraHeadersParameters },
    extraParameters: { ...ato.extraParameters },
  };
  return {
    ...src,
    scopes: src.scopes ? [...src.scopes] : undefined,
    extraHeaderParameters: { ...src.extraHeaderParameters },
    extraQueryParameters: { ...src.extraQueryParameters },
    acquireTokenOptions,
  };
}

function merge(base: DownstreamApiOptions, o: CollectedOverrides): DownstreamApiOptions {
  const ato = base.acquireTokenOptions;
  // Microsoft pastes the tenant into the authority as given: `../x`, `@host` or `a#b` would move the
  // token request to another path, and every distinct value builds an msal application and fetches
  // metadata. A tenant is a GUID or a domain, both DNS names; anything else is refused, not ignored,
  // since ignoring it would get a token of the configured tenant instead of the one asked for.
  if (o.tenant !== undefined && !isDnsName(o.tenant)) {
    throw new SidecarError('request_invalid', 'optionsOverride.AcquireTokenOptions.Tenant must be a tenant ID (GUID) or a domain name.');
  }
  const extraHeaderParameters = { ...base.extraHeaderParameters };
  for (const [name, value] of o.extraHeaders) setHeader(extraHeaderParameters, name, value);
  const extraQueryParameters = { ...base.extraQueryParameters };
  for (const [name, value] of o.extraQuery) extraQueryParameters[name] = value;
  return {
    ...base,
    scopes: o.scopes.length > 0 ? [...o.scopes] : base.scopes,
    // Only `true` is applied: an override cannot turn a configured app token off (§2.5).
    requestAppToken: base.requestAppToken || o.requestAppToken === true,
    relativePath: o.relativePath ?? base.relativePath,
    httpMethod: o.httpMethod ?? base.httpMethod,
    contentType: o.contentType ?? base.contentType,
    acceptHeader: o.acceptHeader ?? base.acceptHeader,
    extraHeaderParameters,
    extraQueryParameters,
    acquireTokenOptions: {
      ...ato,
      tenant: o.tenant ?? ato.tenant,
      // Always copied: an override set without it resets a configured `true` (Microsoft's behaviour, §2.5).
      forceRefresh: o.forceRefresh ?? false,
      claims: o.claims ?? ato.claims,
      correlationId: o.correlationId ?? ato.correlationId,
      fmiPath: o.fmiPath ?? ato.fmiPath,
      longRunningWebApiSessionKey: o.longRunningWebApiSessionKey ?? ato.longRunningWebApiSessionKey,
      popPublicKey: o.popPublicKey ?? ato.popPublicKey,
      managedIdentity: o.userAssignedClientId !== undefined ? { userAssignedClientId: o.userAssignedClientId } : ato.managedIdentity,
    },
  };
}

/** Last non-undefined value of a query parameter whose name matches case-insensitively. */
function lastParam(query: URLSearchParams, lowerName: string): string | undefined {
  let found: string | undefined;
  for (const [k, v] of query) if (k.toLowerCase() === lowerName) found = v;
  return found;
}

/** Microsoft's AgentOverrides precedence (§2.6): username wins; a non-GUID user id means a plain agent. */
function selectAgent(identity: string | undefined, username: string | undefined, userId: string | undefined): AgentSelection | undefined {
  if (identity === undefined || identity.trim() === '') return undefined;
  if (username !== undefined && username.trim() !== '') return { agentIdentity: identity, username };
  const oid = userId !== undefined ? parseGuid(userId) : undefined;
  if (oid !== undefined) return { agentIdentity: identity, userId: oid };
  return { agentIdentity: identity };
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
  }
  return value;
}

/**
 * Resolves the effective options for one request: named lookup (case-sensitive), deep copy,
 * `optionsOverride.*` merge and agent parameters, each gated by `allowOverrides`.
 */
export function resolveApiOptions(config: SidecarConfig, apiName: string, query: URLSearchParams, allowOverrides: boolean): ResolvedApiOptions {
  const configured = Object.prototype.hasOwnProperty.call(config.downstreamApis, apiName) ? config.downstreamApis[apiName] : undefined;
  // No query at all (the usual request): nothing to merge, ignore or select, so one frozen answer per name.
  if (query.size === 0 && configured !== undefined) return plainResolution(config, apiName, configured);
  const overrides = collectOverrides(query);
  const merged = overrides.any && allowOverrides;
  // Without merged overrides the result is the configured entry itself, deep-frozen; sharing one
  // frozen copy per configured name keeps the copy off the hot path and still cannot leak between
  // requests, since nobody can write to it.
  let options: DownstreamApiOptions | EffectiveApiOptions;
  if (!merged && configured) options = unmodifiedOptions(config, apiName, configured);
  else options = configured ? copyApiOptions(configured) : defaultApiOptions();
  const overridesIgnored = overrides.any && !allowOverrides;
  if (merged) options = merge(options, overrides);

  const identity = lastParam(query, 'agentidentity');
  const username = lastParam(query, 'agentusername');
  const userId = lastParam(query, 'agentuserid');
  let agent: AgentSelection | undefined;
  let agentParamsIgnored = false;
  if (allowOverrides) agent = selectAgent(identity, username, userId);
  else agentParamsIgnored = [identity, username, userId].some((v) => v !== undefined && v.trim() !== '');

  const effective: EffectiveApiOptions = 'apiName' in options ? options : deepFreeze({ ...options, apiName });
  return {
    options: effective,
    ...(agent ? { agent: deepFreeze(agent) } : {}),
    overridesIgnored,
    agentParamsIgnored,
    baseUrlOverrideIgnored: overrides.baseUrl,
  };
}

/** What resolveApiOptions answers for a configured name and an empty query, memoised per (frozen) config. */
const plain = new WeakMap<SidecarConfig, Map<string, ResolvedApiOptions>>();

function plainResolution(config: SidecarConfig, apiName: string, configured: DownstreamApiOptions): ResolvedApiOptions {
  let byName = plain.get(config);
  if (!byName) plain.set(config, (byName = new Map()));
  let resolved = byName.get(apiName);
  if (!resolved) {
    resolved = Object.freeze({ options: unmodifiedOptions(config, apiName, configured), overridesIgnored: false, agentParamsIgnored: false, baseUrlOverrideIgnored: false });
    byName.set(apiName, resolved);
  }
  return resolved;
}

/** Frozen, unmodified options per configured name, memoised per (frozen) config. */
const unmodified = new WeakMap<SidecarConfig, Map<string, EffectiveApiOptions>>();

function unmodifiedOptions(config: SidecarConfig, apiName: string, configured: DownstreamApiOptions): EffectiveApiOptions {
  let byName = unmodified.get(config);
  if (!byName) unmodified.set(config, (byName = new Map()));
  let options = byName.get(apiName);
  if (!options) byName.set(apiName, (options = deepFreeze({ ...copyApiOptions(configured), apiName })));
  return options;
}

/** The exact 400 detail Microsoft returns when no scopes are configured or overridden (§2.3 step 4). */
export function scopesMissingDetail(apiName: string): string {
  return `No scopes found for the API '${apiName}' or in optionsOverride. 'scopes' needs to be either a single value or a list of values.`;
}

/**
 * Throws `scopes_missing` when the effective scopes are null; with `nonEmpty` (the DownstreamApi
 * routes) also when the list is empty.
 */
export function assertScopes(options: EffectiveApiOptions, nonEmpty = false): void {
  if (options.scopes === undefined || (nonEmpty && options.scopes.length === 0)) {
    throw new SidecarError('scopes_missing', scopesMissingDetail(options.apiName));
  }
}

/** The `LongRunningWebApiSessionKey` value that asks for a new session (it needs the caller's token to start). */
const ALLOCATE_SESSION_KEY = 'AllocateForMe';

/**
 * Whether acquiring a token for `options` needs the caller's token: an On-Behalf-Of flow, directly
 * or as an agent identity. Not for an app token (`RequestAppToken`), managed identity, an
 * autonomous agent or an agent user, nor for continuing a long-running OBO session by its key. The
 * same choice the acquirer makes (src/acquisition/acquirer.ts, where it throws
 * `acquisition_ui_required` without a user); asked before acquiring, where a missing token is a
 * configuration or client problem rather than a step-up.
 */
export function needsCallerToken(options: EffectiveApiOptions, agent: AgentSelection | undefined): boolean {
  const ato = options.acquireTokenOptions;
  const appFlow = options.requestAppToken || ato.managedIdentity !== undefined;
  if (agent !== undefined) return agent.username === undefined && agent.userId === undefined && !appFlow;
  if (appFlow) return false;
  const sessionKey = ato.longRunningWebApiSessionKey;
  return !sessionKey || sessionKey === ALLOCATE_SESSION_KEY;
}

/** Whether `Sidecar:AllowOverrides:<route>` lets callers override options and pick agents on that route. */
export function overridesAllowed(config: SidecarConfig, route: OverrideRoute): boolean {
  const a = config.sidecar.allowOverrides;
  switch (route) {
    case 'GetAuthorizationHeader':
      return a.getAuthorizationHeader;
    case 'GetAuthorizationHeaderUnauthenticated':
      return a.getAuthorizationHeaderUnauthenticated;
    case 'CallDownstreamApi':
      return a.callDownstreamApi;
    case 'CallDownstreamApiUnauthenticated':
      return a.callDownstreamApiUnauthenticated;
  }
}
