/**
 * An egress proxy for every outbound call, from the environment variables every HTTP client in a
 * pod reads: `https_proxy`, `http_proxy`, `all_proxy` and `no_proxy` (lower case first, then upper
 * case). AKS's HTTP proxy feature and most corporate clusters configure egress that way, and
 * Microsoft's sidecar (.NET's HttpClient) honours them: a drop-in that ignored them could reach
 * neither Entra nor the downstream APIs there.
 *
 * Which proxy: an `https://` destination goes through `https_proxy`, a plain `http://` one through
 * `http_proxy`, and either falls back to `all_proxy` (.NET's HttpEnvironmentProxy). There is no
 * fallback from one scheme's variable to the other's. `https://` destinations are tunnelled (CONNECT)
 * and their TLS is end to end, checked against the same trust as without a proxy; `http://` ones are
 * sent to the proxy in absolute form, as .NET and curl do.
 *
 * Which destinations bypass it: `no_proxy`, read as Go and curl read it (most of what a pod's other
 * containers run): comma- or space-separated entries, each a host name (which also covers its
 * subdomains; a leading `.` or `*.` is the same), an IP literal, a CIDR range, any of them with
 * `:port`, or `*` for every destination. .NET matches a bare name only exactly; the wider rule
 * proxies less, never a destination .NET would not proxy through an entry written for it.
 */
import { BlockList, isIP } from 'node:net';
import type { SecureContext } from 'node:tls';
import type { Dispatcher } from 'undici';
import { Agent, DispatcherClass, ProxyAgent } from './undici.js';

export interface OutboundProxy {
  /** Proxy URL for `http://` destinations (may carry `user:password@`; never logged). */
  readonly http?: string;
  /** Proxy URL for `https://` destinations. */
  readonly https?: string;
  /** The `no_proxy` entries as written, lower-cased. */
  readonly noProxy: readonly string[];
}

export interface ProxyEnvironment {
  readonly proxy?: OutboundProxy;
  /** Start-up errors: a value that is not a usable proxy URL (named by its variable, never quoted). */
  readonly errors: readonly string[];
}

/** The variable's value, lower-case name first as curl, Go and .NET read them; empty = unset. */
function variable(env: Readonly<Record<string, string | undefined>>, name: string): { name: string; value: string } | undefined {
  for (const n of [name, name.toUpperCase()]) {
    const v = env[n]?.trim();
    if (v) return { name: n, value: v };
  }
  return undefined;
}

/**
 * A proxy URL from a variable: `http://` or `https://`, a host, an optional port and
 * `user:password@`; a value without a scheme is `http://` (as .NET, curl and Go read it). Anything
 * else is an error naming the variable; the value is never repeated, since it may hold a password.
 */
function proxyUrl(v: { name: string; value: string }, errors: string[]): string | undefined {
  const text = v.value.includes('://') ? v.value : `http://${v.value}`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    errors.push(`${v.name} is not a URL (expected http://host:port)`);
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    errors.push(`${v.name} must be an http:// or https:// proxy URL (${url.protocol.slice(0, -1).slice(0, 16)} proxies are not supported)`);
    return undefined;
  }
  if (url.hostname === '') {
    errors.push(`${v.name} names no proxy host`);
    return undefined;
  }
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
    errors.push(`${v.name} must be a proxy origin (scheme, host, port), without a path or query`);
    return undefined;
  }
  return url.href;
}

/** Reads the proxy variables (see the module comment). No proxy variable set: no proxy, no_proxy unread. */
export function proxyFromEnvironment(env: Readonly<Record<string, string | undefined>>): ProxyEnvironment {
  const errors: string[] = [];
  const all = variable(env, 'all_proxy');
  const httpVar = variable(env, 'http_proxy') ?? all;
  const httpsVar = variable(env, 'https_proxy') ?? all;
  const http = httpVar && proxyUrl(httpVar, errors);
  const https = httpsVar && (httpsVar === httpVar ? http : proxyUrl(httpsVar, errors));
  if (errors.length > 0 || (http === undefined && https === undefined)) return { errors };
  const noProxy = (variable(env, 'no_proxy')?.value ?? '').toLowerCase().split(/[\s,]+/).filter((e) => e !== '');
  return { proxy: { ...(http !== undefined ? { http } : {}), ...(https !== undefined ? { https } : {}), noProxy }, errors };
}

/** A proxy URL as it may be logged: scheme, host and port, and whether it carries credentials. */
export function describeProxy(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.username !== '' || u.password !== '' ? ' (with credentials)' : ''}`;
}

interface Bypass {
  /** `*`: no destination is proxied. */
  readonly all: boolean;
  /** Host-name entries: the name and its subdomains, on `port` (0: any port). */
  readonly names: readonly { readonly name: string; readonly port: number }[];
  /** IP literals and CIDR ranges, per port (0: any port). */
  readonly addresses: ReadonlyMap<number, BlockList>;
}

/** Splits an optional `:port` off an entry (`[v6]:port`, `host:port`, `v4/cidr:port`); a bare IPv6 literal has none. */
function entryPort(entry: string): { host: string; port: number } {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  if (bracketed) return { host: bracketed[1], port: Number(bracketed[2] ?? 0) };
  const m = /^([^:]+):(\d+)$/.exec(entry);
  return m ? { host: m[1], port: Number(m[2]) } : { host: entry, port: 0 };
}

export function parseNoProxy(entries: readonly string[]): Bypass {
  const names: { name: string; port: number }[] = [];
  const addresses = new Map<number, BlockList>();
  const list = (port: number): BlockList => {
    let l = addresses.get(port);
    if (l === undefined) addresses.set(port, (l = new BlockList()));
    return l;
  };
  let all = false;
  for (const entry of entries) {
    if (entry === '*') {
      all = true;
      continue;
    }
    const { host, port } = entryPort(entry);
    const cidr = /^(.+)\/(\d{1,3})$/.exec(host);
    const family = isIP(cidr ? cidr[1] : host);
    if (family !== 0) {
      const type = family === 6 ? 'ipv6' : 'ipv4';
      const prefix = cidr ? Number(cidr[2]) : family === 6 ? 128 : 32;
      if (prefix <= (family === 6 ? 128 : 32)) list(port).addSubnet(cidr ? cidr[1] : host, prefix, type);
      continue;
    }
    const name = host.replace(/^\*?\./, '').replace(/\.$/, '');
    if (name !== '') names.push({ name, port });
  }
  return { all, names, addresses };
}

/** Whether a destination (host as in a URL, lower case, IPv6 in brackets; port resolved) bypasses the proxy. */
export function bypassesProxy(bypass: Bypass, host: string, port: number): boolean {
  if (bypass.all) return true;
  const bare = host.startsWith('[') ? host.slice(1, -1) : host.replace(/\.$/, '');
  const family = isIP(bare);
  if (family !== 0) {
    const type = family === 6 ? 'ipv6' : 'ipv4';
    return (bypass.addresses.get(0)?.check(bare, type) ?? false) || (bypass.addresses.get(port)?.check(bare, type) ?? false);
  }
  for (const e of bypass.names) {
    if (e.port !== 0 && e.port !== port) continue;
    if (bare === e.name || (bare.length > e.name.length && bare.endsWith(e.name) && bare[bare.length - e.name.length - 1] === '.')) return true;
  }
  return false;
}

export interface ProxiedAgentOptions {
  readonly proxy: OutboundProxy;
  /** What every pool gets (timeouts, keep-alive, connection limits). */
  readonly agent: Record<string, unknown>;
  readonly connectTimeoutMs: number;
  /** The outbound trust, for the destination's TLS through a tunnel and for an https:// proxy. */
  readonly secureContext?: SecureContext;
}

/** At most this many destinations' routes are remembered (a route is cheap to work out again). */
const MAX_ROUTES = 256;

/**
 * A dispatcher that sends each request direct or through the proxy for its scheme, by its origin.
 * It closes and destroys its agents together, so it stands where the plain Agent stood.
 */
export function createProxiedAgent(opts: ProxiedAgentOptions): Dispatcher {
  const tls = { timeout: opts.connectTimeoutMs, ...(opts.secureContext ? { secureContext: opts.secureContext } : {}) };
  const direct = new Agent({ ...opts.agent, connect: tls });
  const proxied = (uri: string, tunnel: boolean): Dispatcher => new ProxyAgent({ ...opts.agent, uri, proxyTunnel: tunnel, requestTls: tls, proxyTls: tls });
  const viaHttps = opts.proxy.https !== undefined ? proxied(opts.proxy.https, true) : undefined;
  // Plain-http destinations in absolute form to an http:// proxy (no CONNECT), as .NET and curl send them.
  const viaHttp = opts.proxy.http !== undefined ? proxied(opts.proxy.http, false) : undefined;
  const bypass = parseNoProxy(opts.proxy.noProxy);
  const routes = new Map<string, Dispatcher>();
  const route = (origin: string): Dispatcher => {
    let d = routes.get(origin);
    if (d !== undefined) return d;
    const u = new URL(origin);
    const https = u.protocol === 'https:';
    const via = https ? viaHttps : viaHttp;
    d = via === undefined || bypassesProxy(bypass, u.hostname.toLowerCase(), Number(u.port) || (https ? 443 : 80)) ? direct : via;
    if (routes.size >= MAX_ROUTES) routes.clear();
    routes.set(origin, d);
    return d;
  };
  const all = [direct, viaHttps, viaHttp].filter((d): d is Dispatcher => d !== undefined);
  class ProxiedAgent extends DispatcherClass {
    override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
      return route(String(options.origin)).dispatch(options, handler);
    }
    // The promise forms only (the sidecar calls no other).
    override async close(): Promise<void> {
      await Promise.all(all.map((d) => d.close()));
    }
    override async destroy(...args: unknown[]): Promise<void> {
      const err = args[0] instanceof Error ? args[0] : null;
      await Promise.all(all.map((d) => d.destroy(err)));
    }
  }
  return new ProxiedAgent() as unknown as Dispatcher;
}
