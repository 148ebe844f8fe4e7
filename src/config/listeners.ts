/**
 * Listener addresses in the forms ASP.NET accepts (reference sidecar-http-api §1.1): `http://host:port`
 * URLs where `+` and `*` mean all interfaces and `localhost` means loopback, bare port lists
 * (ASPNETCORE_HTTP_PORTS), and our `host:port` for the ext_authz gRPC listener. Plain HTTP only.
 */
import { isIP } from 'node:net';
import { ANY_HOST } from '../net/listen.js';
import type { ListenAddress } from './types.js';

export type ParsedListen = { ok: true; address: ListenAddress } | { ok: false; problem: string };

/** Maps an ASP.NET host spelling to the address Node should bind. */
function bindHost(host: string): string | undefined {
  const h = host.toLowerCase();
  // `+` and `*` are Kestrel's ListenAnyIP: a dual-stack `::` (IPv4 only where the host has no IPv6,
  // net/listen.ts). An explicit 0.0.0.0 stays IPv4 only, as in Kestrel.
  if (h === '+' || h === '*') return ANY_HOST;
  if (h === '0.0.0.0') return '0.0.0.0';
  if (h === 'localhost') return '127.0.0.1';
  if (h.startsWith('[') && h.endsWith(']')) {
    const inner = h.slice(1, -1);
    return isIP(inner) === 6 ? inner : undefined;
  }
  return isIP(h) === 4 ? h : undefined;
}

function parsePort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

/** Parses one listener URL (`http://127.0.0.1:5000`, `http://+:8080`, `http://[::]:0`). */
export function parseListenUrl(url: string): ParsedListen {
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(\[[^\]]*\]|[^:/?#]*)(?::([^/?#]*))?(.*)$/.exec(url.trim());
  if (!m) return { ok: false, problem: 'is not a URL of the form http://host:port' };
  const [, scheme, host, portText, rest] = m;
  if (scheme.toLowerCase() === 'https') {
    return { ok: false, problem: 'uses https, which is not supported: entra-sidecar serves plain HTTP (keep it on loopback or let the mesh terminate TLS)' };
  }
  if (scheme.toLowerCase() !== 'http') return { ok: false, problem: 'must be an http:// URL' };
  const address = bindHost(host);
  if (address === undefined) {
    return { ok: false, problem: 'must name an IP address, localhost, + or * as host' };
  }
  const port = portText === undefined ? 80 : parsePort(portText);
  if (port === undefined) return { ok: false, problem: 'has an invalid port (0-65535)' };
  if (rest !== '' && rest !== '/') return { ok: false, problem: 'must not contain a path, query or fragment' };
  return { ok: true, address: { host: address, port } };
}

/** Parses `host:port` (`127.0.0.1:9191`, `[::1]:0`, `*:9191`). */
export function parseHostPort(text: string): ParsedListen {
  const m = /^(\[[^\]]*\]|[^:]*):(\d+)$/.exec(text.trim());
  if (!m) return { ok: false, problem: 'must be host:port (e.g. 127.0.0.1:9191)' };
  const address = bindHost(m[1]);
  if (address === undefined) return { ok: false, problem: 'must name an IP address, localhost, + or * as host' };
  const port = parsePort(m[2]);
  if (port === undefined) return { ok: false, problem: 'has an invalid port (0-65535)' };
  return { ok: true, address: { host: address, port } };
}

/** `host:port`, the host in brackets when it is an IPv6 address (parseHostPort's inverse). */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** True when two listeners would fight over the same port (port 0 never collides). */
export function listenersCollide(a: ListenAddress, b: ListenAddress): boolean {
  if (a.port === 0 || a.port !== b.port) return false;
  const any = (h: string): boolean => h === '0.0.0.0' || h === '::';
  return a.host === b.host || any(a.host) || any(b.host);
}
