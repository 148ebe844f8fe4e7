/**
 * Per-route ext_authz policy: `Sidecar:ExtAuthz:*` defaults; then the first `Sidecar:ExtAuthz:Routes`
 * rule matching the request's path and host (for Istio, whose API has no per-route
 * context_extensions); then Envoy's `ExtAuthzPerRoute.check_settings.context_extensions`, the most
 * specific (reference envoy-ext-authz §2, §3).
 */
import type { ExtAuthzOptions, ExtAuthzRouteRule } from '../config/types.js';
import { SidecarError } from '../errors.js';
import { clip } from '../log.js';
import type { AgentSelection } from '../pipeline/types.js';
import { isToken } from '../net/http-fields.js';
import { hostOfHostHeader } from '../net/host-names.js';

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

/**
 * Bounds on a route's context_extensions, in characters. They are route configuration (envoy.yaml,
 * an Istio EnvoyFilter), where a key is one of the names above and a value a name, a GUID, a UPN or
 * a list of scopes: tens to hundreds of characters. But any peer that reaches the gRPC port can
 * send a map as large as MaxReceiveMessageBytes (1 MiB), and a map is cached by its text and its
 * names quoted in denies and log lines; over these bounds a Check is denied `misconfigured` and
 * nothing of it is kept. The 256 maps the Check caches then hold at most a few MiB.
 */
export const MAX_CONTEXT_EXTENSION_KEY_CHARS = 64;
export const MAX_CONTEXT_EXTENSION_VALUE_CHARS = 4096;
/** All keys and values together. */
export const MAX_CONTEXT_EXTENSIONS_CHARS = 16_384;

/** A name from configuration or a CheckRequest as a deny detail or a log line quotes it: cut to this many characters. */
const MAX_QUOTED_NAME_CHARS = 128;

/** `name` in double quotes for a deny detail or a log line, cut to MAX_QUOTED_NAME_CHARS. */
export function quotedName(name: string): string {
  return `"${clip(name, MAX_QUOTED_NAME_CHARS)}"`;
}

/**
 * Throws SidecarError('misconfigured') for context_extensions that no route configuration holds: a
 * key or value over its bound, a map over MAX_CONTEXT_EXTENSIONS_CHARS, text that is not well-formed
 * UTF-16 (a lone surrogate: defence in depth, since protobufjs decodes invalid UTF-8 from the wire to
 * U+FFFD, and Envoy sends valid UTF-8), or an unknown key.
 */
function checkContextExtensions(ext: PolicySettings): void {
  let chars = 0;
  for (const key in ext) {
    const value = ext[key];
    if (key.length > MAX_CONTEXT_EXTENSION_KEY_CHARS) {
      throw new SidecarError('misconfigured', `A context_extensions key is longer than ${MAX_CONTEXT_EXTENSION_KEY_CHARS} characters: ${quotedName(key)}.`);
    }
    if (value.length > MAX_CONTEXT_EXTENSION_VALUE_CHARS) {
      throw new SidecarError('misconfigured', `context_extensions ${quotedName(key)} is longer than ${MAX_CONTEXT_EXTENSION_VALUE_CHARS} characters.`);
    }
    chars += key.length + value.length;
    if (chars > MAX_CONTEXT_EXTENSIONS_CHARS) {
      throw new SidecarError('misconfigured', `The context_extensions are longer than ${MAX_CONTEXT_EXTENSIONS_CHARS} characters together.`);
    }
    if (!key.isWellFormed() || !value.isWellFormed()) {
      throw new SidecarError('misconfigured', `context_extensions ${quotedName(key.toWellFormed())} is not well-formed text.`);
    }
    if (!KNOWN_KEYS.has(key)) throw new SidecarError('misconfigured', `Unknown context_extensions key ${quotedName(key)}.`);
  }
}

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

/** Policy settings under their context_extensions names: a `Routes` rule's, or a route's context_extensions. */
export type PolicySettings = Readonly<Record<string, string>>;

/** Where a layer sets none of the keys asked for. */
const UNSET = -1;

function hasKeys(settings: PolicySettings): boolean {
  for (const _ in settings) return true;
  return false;
}

/** The index of the most specific layer (the last) that sets one of `keys`, or UNSET. */
function layerSetting(layers: readonly PolicySettings[], ...keys: string[]): number {
  for (let i = layers.length - 1; i >= 0; i--) {
    for (const key of keys) if (layers[i][key] !== undefined) return i;
  }
  return UNSET;
}

/** The value of `key` in the most specific layer at or above `from` that sets it. */
function setting(layers: readonly PolicySettings[], key: string, from = 0): string | undefined {
  for (let i = layers.length - 1; i >= from; i--) {
    const value = layers[i][key];
    if (value !== undefined) return value;
  }
  return undefined;
}

/**
 * Resolves a route's policy from three layers, each key from the most specific one that sets it:
 * the defaults, then the `Routes` rule the request falls under (`rule`, when one does), then the
 * route's context_extensions (`ext`), as Envoy merges per-route settings (reference envoy-ext-authz
 * §2). Resolving the raw layers, not overlaying `ext` on the rule's resolved policy, keeps what the
 * rule set (an agent identity, a downstream API) under an ext that does not name it, and brings
 * back a default the rule dropped only by saying `validate: none` once ext turns validation on.
 *
 * Unknown keys and bad values throw SidecarError('misconfigured') so a typo in envoy.yaml fails
 * closed instead of silently skipping a scope check or a token injection; so do context_extensions
 * over their bounds (checkContextExtensions).
 */
export function routePolicy(defaults: RoutePolicy, ext: PolicySettings | undefined, rule?: PolicySettings): RoutePolicy {
  const layers: PolicySettings[] = [];
  if (rule !== undefined && hasKeys(rule)) layers.push(rule);
  if (ext !== undefined && hasKeys(ext)) {
    checkContextExtensions(ext);
    layers.push(ext);
  }
  if (layers.length === 0) return defaults;
  const agentIdentity = setting(layers, 'agent_identity') || undefined;
  // An agent user is named by username or by object id; the most specific layer naming either
  // decides, so a route's agent_user_id is not outranked by the rule's agent_username (username
  // wins only within one layer, as in Microsoft's AgentOverrides).
  const agentUserLayer = layerSetting(layers, 'agent_username', 'agent_user_id');
  const agentUsername = agentUserLayer === UNSET ? undefined : layers[agentUserLayer].agent_username;
  const agentUserId = agentUserLayer === UNSET ? undefined : layers[agentUserLayer].agent_user_id;
  if (!agentIdentity && (agentUsername || agentUserId)) {
    throw new SidecarError('misconfigured', 'context_extensions agent_username/agent_user_id need agent_identity.');
  }
  const validateLayer = layerSetting(layers, 'validate');
  const validate = validateLayer === UNSET ? defaults.validate : parseValidate('context_extensions', layers[validateLayer].validate);
  // A layer that turns validation off (`/public`, egress) does not inherit the required scopes and
  // roles of the layers under it (the defaults; the rule, under a route's context_extensions), which
  // it could never check; only rules it or a more specific layer names make it a misconfiguration.
  // A layer above that turns validation on again inherits them all.
  const exempt = validate === 'none' && validateLayer !== UNSET;
  const rulesFrom = exempt ? validateLayer : 0;
  const scopes = setting(layers, 'required_scopes', rulesFrom);
  const roles = setting(layers, 'required_roles', rulesFrom);
  const downstreamApi = setting(layers, 'downstream_api');
  const injectHeader = setting(layers, 'inject_header');
  const requireAll = setting(layers, 'require_all');
  const strip = setting(layers, 'strip_inbound_authorization');
  const policy: RoutePolicy = {
    validate,
    // Set but empty: no token on this route, whatever the layers under it name.
    downstreamApi: downstreamApi !== undefined ? downstreamApi || undefined : defaults.downstreamApi,
    injectHeader: injectHeader !== undefined ? injectHeader.toLowerCase() : defaults.injectHeader,
    requiredScopes: scopes !== undefined ? splitList(scopes) : exempt ? [] : defaults.requiredScopes,
    requiredRoles: roles !== undefined ? splitList(roles) : exempt ? [] : defaults.requiredRoles,
    requireAll: requireAll !== undefined ? parseBool('require_all', requireAll) : defaults.requireAll,
    stripInboundAuthorization: strip !== undefined ? parseBool('strip_inbound_authorization', strip) : defaults.stripInboundAuthorization,
    agent: agentIdentity
      ? {
          agentIdentity,
          ...(agentUsername ? { username: agentUsername } : {}),
          ...(agentUserId ? { userId: agentUserId } : {}),
        }
      : undefined,
  };
  return checkConsistent(policy, 'context_extensions');
}

/** A dot segment or an empty one (`//`). */
const DOT_OR_EMPTY_SEGMENT = /\/\.\.?(?:\/|$)|\/\//;

/**
 * Bytes that have no business percent-encoded in a path in normal form (RFC 3986 §6.2.2.2 decodes
 * the unreserved ones), or that only serve to hide a separator: ALPHA, DIGIT, `-._~`, `/`, `\`, `;`,
 * `%` itself (double encoding, `%252e`), the overlong UTF-8 leads C0 and C1 (`%c0%ae` is `.` to a
 * lax decoder), and controls.
 */
function suspiciousEncoded(byte: number): boolean {
  return (
    (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) ||
    byte === 0x2d || byte === 0x2e || byte === 0x5f || byte === 0x7e ||
    byte === 0x2f || byte === 0x5c || byte === 0x3b || byte === 0x25 ||
    byte === 0xc0 || byte === 0xc1 || byte < 0x20 || byte === 0x7f
  );
}

/**
 * Whether a path's text is the only reading an app can give it, so the rule chosen by its text is
 * the rule for the route the app serves. Not so for: a dot segment or `//` (Envoy resolves them
 * only when told to, `normalize_path` and `merge_slashes`, and many frameworks resolve them
 * themselves); a backslash (a separator to IIS and some Windows stacks); a `;` (Tomcat, Jetty and
 * Spring drop `;params` from each segment and read `..;` as `..`, which Envoy's normaliser keeps:
 * `/public/..;/api`, `/api;x/orders`); a percent-encoding of the bytes above or a malformed one
 * (`%u002e`, IIS); and anything outside printable ASCII (fullwidth dots, raw UTF-8). `%20` and the
 * like, which name the same segment to everyone, stay allowed.
 */
export function isNormalPath(path: string): boolean {
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || c === 0x5c || c === 0x3b) return false;
    if (c === 0x25) {
      const byte = i + 2 < path.length ? Number.parseInt(path.slice(i + 1, i + 3), 16) : Number.NaN;
      if (!/^[0-9a-f]{2}$/i.test(path.slice(i + 1, i + 3)) || suspiciousEncoded(byte)) return false;
      i += 2;
    }
  }
  return !DOT_OR_EMPTY_SEGMENT.test(path);
}

/** The path without query or fragment. */
function pathOnly(path: string): string {
  let end = path.length;
  const q = path.indexOf('?');
  if (q >= 0) end = q;
  const f = path.indexOf('#');
  if (f >= 0 && f < end) end = f;
  return end === path.length ? path : path.slice(0, end);
}

/** The host a rule compares: lower-case, without port or a trailing dot ('' for a value of another shape). */
function ruleHost(authority: string): string {
  const host = hostOfHostHeader(authority) ?? '';
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
      return Object.freeze(routePolicy(defaults, undefined, rule.settings));
    } catch (err) {
      throw new SidecarError('misconfigured', `${rule.key}: ${err instanceof SidecarError ? err.detail : String(err)}`);
    }
  });
  const compiled = rules.map((rule) => ({
    hosts: rule.hosts,
    // `/hook/` is `/hook`: either takes both (below).
    path: rule.path === undefined ? undefined : rule.path.toLowerCase().replace(/(.)\/+$/, '$1'),
    prefix: rule.pathPrefix === undefined ? undefined : rule.pathPrefix.toLowerCase().replace(/\/+$/, ''),
  }));
  return {
    policies,
    match(rawPath, authority) {
      const path = pathOnly(rawPath);
      // `*` (OPTIONS *) and an empty path (CONNECT) name no route; any other path starts with `/`.
      if (path !== '' && path !== '*' && (!path.startsWith('/') || !isNormalPath(path))) throw new SidecarError('path_not_normalized');
      const lower = path.toLowerCase();
      const host = authority === undefined ? undefined : ruleHost(authority);
      for (let i = 0; i < compiled.length; i++) {
        const r = compiled[i];
        if (r.hosts.length > 0 && (host === undefined || !hostMatches(r.hosts, host))) continue;
        // An exact path takes its trailing-slash twin: ASP.NET Core and Express route both to one handler.
        if (r.path !== undefined && lower !== r.path && lower !== `${r.path}/`) continue;
        // '' is the prefix `/`: every path.
        if (r.prefix !== undefined && r.prefix !== '' && lower !== r.prefix && !lower.startsWith(`${r.prefix}/`)) continue;
        return i;
      }
      return -1;
    },
  };
}
