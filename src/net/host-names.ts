/**
 * Host names as the identity API and the authority builder accept them: strict DNS names (RFC 1123
 * labels) and the loopback names of RFC 6761 §6.3. Nothing here resolves a name.
 */

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

/**
 * True for a DNS name of letters, digits and hyphens in dot-separated labels of 1–63 characters (no
 * leading or trailing hyphen, no empty label, no trailing dot), 253 characters at most. A tenant ID
 * GUID is one such label, a tenant domain such as `contoso.onmicrosoft.com` several.
 */
export function isDnsName(text: string): boolean {
  if (text.length === 0 || text.length > 253) return false;
  let start = 0;
  for (;;) {
    const dot = text.indexOf('.', start);
    const label = dot < 0 ? text.slice(start) : text.slice(start, dot);
    if (!LABEL.test(label)) return false;
    if (dot < 0) return true;
    start = dot + 1;
  }
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** True for a dotted-quad IPv4 literal in 127.0.0.0/8. */
export function isIpv4LoopbackLiteral(text: string): boolean {
  const m = IPV4.exec(text);
  return m !== null && m[1] === '127' && Number(m[2]) <= 255 && Number(m[3]) <= 255 && Number(m[4]) <= 255;
}

/**
 * True for a (lower-case) host that names this machine whatever any DNS server answers: `localhost`
 * and `*.localhost` (RFC 6761 §6.3; browsers resolve them to loopback themselves, so no rebinding
 * domain can be one), an IPv4 literal in 127.0.0.0/8, and `[::1]`. The IPv6 literal must be written as
 * browsers serialise it; another spelling of ::1 is not loopback here (a client that is not a browser
 * writes what it likes, and `localhost` serves it).
 */
export function isLoopbackHostName(host: string): boolean {
  if (host === 'localhost' || host === '[::1]') return true;
  if (host.endsWith('.localhost')) return isDnsName(host);
  return isIpv4LoopbackLiteral(host);
}

/**
 * The lower-case host of a `Host` header value (`host[:port]`, `[v6]:port`), or undefined when the
 * value is not of that shape (a path, userinfo, a second colon, a port that is not digits).
 */
export function hostOfHostHeader(value: string): string | undefined {
  let host: string;
  let rest: string;
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    if (end < 0) return undefined;
    host = value.slice(0, end + 1);
    rest = value.slice(end + 1);
  } else {
    const colon = value.indexOf(':');
    host = colon < 0 ? value : value.slice(0, colon);
    rest = colon < 0 ? '' : value.slice(colon);
  }
  // RFC 3986 §3.2.3: the port may be empty after its colon.
  if (rest !== '' && !/^:\d{0,5}$/.test(rest)) return undefined;
  return host === '' ? undefined : host.toLowerCase();
}
