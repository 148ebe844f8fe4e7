/**
 * Per-route ext_authz policy: `Sidecar:ExtAuthz:*` defaults; then the first `Sidecar:ExtAuthz:Routes`
 * rule matching the request's path and host (for Istio, whose API has no per-route
 * context_extensions); then Envoy's `ExtAuthzPerRoute.check_settings.context_extensions`, the most
 * specific (reference envoy-ext-authz §2, §3).
 */
import type { ExtAuthzOptions, ExtAuthzRouteRule } from '../config/types.js';
import { SidecarError } from '../errors.js';
import type { AgentSelection } from '../pipeline/types.js';
import { isToken } from '../net/http-fields.js';

export type ValidateMode = 'required' | 'optional' | 'none';

/** What one Check must do, resolved from config defaults and the route's context_extensions. */
export interface RoutePolicy {
  readonly validate: ValidateMode;
  /** A `DownstreamApis` name whose token is injected; undefined → validate only. */
  readonly downstreamApi: string | undefined;
  /** Lower-case request header that receives `<scheme> <token>`. */
  readonly injectHeader: string;
  readonly requiredScopes: readonly string[];
  readonly requiredRoles: readonly string[];
  readonly requireAll: boolean;
  readonly stripInboundAuthorization: boolean;
  readonly agent: AgentSelection | undefined;
}

/** The context_extensions keys a route may set; any other key is a configuration mistake. */
export const CONTEXT_EXTENSION_KEYS = [
  'validate',
  'downstream_api',
  'inject_header',
  'required_scopes',
  'required_roles',
  'require_all',
  'strip_inbound_authorization',
  'agent_identity',
  'agent_username',
  'agent_user_id',
] as const;

const KNOWN_KEYS: ReadonlySet<string> = new Set(CONTEXT_EXTENSION_KEYS);


function splitList(value: string): string[] {
  return value.split(' ').filter((s) => s !== '');
}

function parseBool(key: string, value: string): boolean {
  const v = value.toLowerCase();
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new SidecarError('misconfigured', `context_extensions ${key} must be true or false.`);
}

function parseValidate(source: string, value: string): ValidateMode {
  if (value === 'required' || value === 'optional' || value === 'none') return value;
  throw new SidecarError('misconfigured', `${source} validate must be required, optional or none.`);
}

function checkConsistent(policy: RoutePolicy, source: string): RoutePolicy {
  if (!isToken(policy.injectHeader)) throw new SidecarError('misconfigured', `${source} inject_header is not a valid header name.`);
  if (policy.validate === 'none' && (policy.requiredScopes.length > 0 || policy.requiredRoles.length > 0)) {
    throw new SidecarError('misconfigured', `${source} requires scopes or roles but does not validate tokens.`);
  }
  return policy;
}

/** The policy of a route without context_extensions; throws SidecarError('misconfigured') on bad defaults. */
export function defaultPolicy(options: ExtAuthzOptions): RoutePolicy {
  return Object.freeze(
    checkConsistent(
      {
        validate: parseValidate('Sidecar:ExtAuthz', options.validate),
        downstreamApi: options.downstreamApi || undefined,
        injectHeader: options.injectHeader.toLowerCase(),
        requiredScopes: Object.freeze([...options.requiredScopes]),
        requiredRoles: Object.freeze([...options.requiredRoles]),
        requireAll: options.requireAll,
        stripInboundAuthorization: options.stripInboundAuthorization,
        agent: undefined,
      },
      'Sidecar:ExtAuthz',
    ),
  );
}

/**
 * Overlays a route's context_extensions on the defaults. Unknown keys and bad values throw
 * SidecarError('misconfigured') so a typo in envoy.yaml fails closed instead of silently skipping
 * a scope check or a token injection.
 */
export function routePolicy(defaults: RoutePolicy, ext: Readonly<Record<string, string>> | undefined): RoutePolicy {
  if (ext === undefined) return defaults;
  let any = false;
  for (const key in ext) {
    if (!KNOWN_KEYS.has(key)) throw new SidecarError('misconfigured', `Unknown context_extensions key "${key}".`);
    any = true;
  }
  if (!any) return defaults;
  const agentIdentity = ext.agent_identity || undefined;
  if (!agentIdentity && (ext.agent_username || ext.agent_user_id)) {
    throw new SidecarError('misconfigured', 'context_extensions agent_username/agent_user_id need agent_identity.');
  }
  const validate = ext.validate !== undefined ? parseValidate('context_extensions', ext.validate) : defaults.validate;
  // A route that turns validation off (`/public`, egress) does not inherit the default required scopes
  // and roles, which it could never check; only rules it names itself make it a misconfiguration.
  const inheritsRules = ext.validate === undefined || validate !== 'none';
  const policy: RoutePolicy = {
    validate,
    downstreamApi: ext.downstream_api !== undefined ? ext.downstream_api || undefined : defaults.downstreamApi,
    injectHeader: ext.inject_header !== undefined ? ext.inject_header.toLowerCase() : defaults.injectHeader,
    requiredScopes: ext.required_scopes !== undefined ? splitList(ext.required_scopes) : inheritsRules ? defaults.requiredScopes : [],
    requiredRoles: ext.required_roles !== undefined ? splitList(ext.required_roles) : inheritsRules ? defaults.requiredRoles : [],
    requireAll: ext.require_all !== undefined ? parseBool('require_all', ext.require_all) : defaults.requireAll,
    stripInboundAuthorization:
      ext.strip_inbound_authorization !== undefined
        ? parseBool('strip_inbound_authorization', ext.strip_inbound_authorization)
        : defaults.stripInboundAuthorization,
    agent: agentIdentity
      ? {
          agentIdentity,
          ...(ext.agent_username ? { username: ext.agent_username } : {}),
          ...(ext.agent_user_id ? { userId: ext.agent_user_id } : {}),
        }
      : undefined,
  };
  return checkConsistent(policy, 'context_extensions');
}

/**
 * A path an app could resolve to another route than the one its text names: a dot segment, an
 * empty segment (`//`), a backslash, or an encoded `.`, `/` or `\`. Envoy resolves the first two
 * only when told to (`normalize_path`, `merge_slashes`; Istio's meshConfig.pathNormalization), and
 * many app frameworks resolve them all, so `/public/../api` or `//api` chosen by its text could take
 * a weaker rule than the app's own reading of it.
 */
const NOT_NORMAL_PATH = /\/\.\.?(?:\/|$)|\/\/|\\|%2e|%2f|%5c/i;

/** The path without query or fragment. */
function pathOnly(path: string): string {
  let end = path.length;
  const q = path.indexOf('?');
  if (q >= 0) end = q;
  const f = path.indexOf('#');
  if (f >= 0 && f < end) end = f;
  return end === path.length ? path : path.slice(0, end);
}

/** The host a rule compares: lower-case, without port or a trailing dot. */
export function normalizeHost(authority: string): string {
  let host = authority.toLowerCase();
  if (host.startsWith('[')) {
    const close = host.indexOf(']');
    host = close > 0 ? host.slice(0, close + 1) : host;
  } else {
    const colon = host.indexOf(':');
    if (colon >= 0) host = host.slice(0, colon);
  }
  return host.endsWith('.') ? host.slice(0, -1) : host;
}

function hostMatches(patterns: readonly string[], host: string): boolean {
  for (const p of patterns) {
    if (p.startsWith('*.') ? host.endsWith(p.slice(1)) && host.length > p.length - 1 : host === p) return true;
  }
  return false;
}

/** `Sidecar:ExtAuthz:Routes` compiled: each rule's policy resolved once over the defaults. */
export interface RouteTable {
  readonly policies: readonly RoutePolicy[];
  /**
   * The index of the first rule that takes this request, or -1 for none (the defaults). Throws
   * SidecarError('path_not_normalized') for a path not in normal form, since which rule it falls
   * under depends on how the app resolves it.
   */
  match(path: string, authority: string | undefined): number;
}

/** Compiles the rules; undefined when there are none (the Check then never looks at path or host). */
export function routeTable(defaults: RoutePolicy, rules: readonly ExtAuthzRouteRule[]): RouteTable | undefined {
  if (rules.length === 0) return undefined;
  const policies = rules.map((rule) => {
    try {
      return Object.freeze(routePolicy(defaults, rule.settings));
    } catch (err) {
      throw new SidecarError('misconfigured', `${rule.key}: ${err instanceof SidecarError ? err.detail : String(err)}`);
    }
  });
  const compiled = rules.map((rule) => ({
    hosts: rule.hosts,
    path: rule.path?.toLowerCase(),
    prefix: rule.pathPrefix === undefined ? undefined : rule.pathPrefix.toLowerCase().replace(/\/+$/, ''),
  }));
  return {
    policies,
    match(rawPath, authority) {
      const path = pathOnly(rawPath);
      if (path.startsWith('/') && NOT_NORMAL_PATH.test(path)) throw new SidecarError('path_not_normalized');
      const lower = path.toLowerCase();
      const host = authority === undefined ? undefined : normalizeHost(authority);
      for (let i = 0; i < compiled.length; i++) {
        const r = compiled[i];
        if (r.hosts.length > 0 && (host === undefined || !hostMatches(r.hosts, host))) continue;
        if (r.path !== undefined && lower !== r.path) continue;
        // '' is the prefix `/`: every path.
        if (r.prefix !== undefined && r.prefix !== '' && lower !== r.prefix && !lower.startsWith(`${r.prefix}/`)) continue;
        return i;
      }
      return -1;
    },
  };
}
