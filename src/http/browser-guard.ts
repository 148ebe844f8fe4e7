/**
 * Refuses what only a web browser sends to the identity API. The loopback-peer rule (loopback.ts)
 * does not stop a browser on this machine: its requests come from loopback too.
 *
 * - DNS rebinding: a page on `rebind.attacker.example:5000`, whose name is re-pointed at 127.0.0.1,
 *   reads the sidecar's answers as its own origin. Over plain http the browser sends no Fetch
 *   Metadata (Sec-Fetch-* go only to potentially trustworthy URLs, and `rebind.attacker.example` is
 *   not one) and a same-origin GET carries no Origin, so only the Host header gives it away. Outside
 *   Development the Host must name a loopback host (or a `Sidecar:Http:AllowedHosts` entry): every
 *   caller is a loopback peer there. This is the host filtering Microsoft's sidecar had in
 *   1.0.0-rc.2 (400 "Invalid Hostname"), which 1.1.0 dropped for the peer rule because it refused
 *   `Host: sidecar` in compose setups; those callers are not loopback peers, so the peer rule
 *   refuses them anyway.
 *   Development lifts the peer rule, and compose callers (`http://sidecar:5000`) are served there,
 *   so the Host rule is wider but still applies: it also accepts IP literals and single-label names.
 *   A rebinding attack needs a DNS name the attacker controls, which has a dot: no resolver sends a
 *   browser's lookup of a dotless name to the attacker's DNS, and an IP literal resolves nowhere.
 *   It cannot hinge on the peer being loopback either: Docker Desktop's `-p 127.0.0.1:5000:5000`
 *   shows the container a bridge address for a browser on the host.
 * - Cross-site requests: `<img src>`, a form post or a no-cors fetch from any site reaches
 *   `http://localhost:5000` with a loopback Host; the browser marks them with Origin (every
 *   cross-origin fetch and every POST) or `Sec-Fetch-Site` (all browsers since 2023, to
 *   `localhost` and 127.0.0.1 too, which are potentially trustworthy). No caller of the sidecar is a
 *   browser, so this applies in Development too.
 */
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { hostOfHostHeader, isLoopbackHostName } from '../net/host-names.js';

export interface BrowserRefusal {
  readonly code: 'host_not_allowed' | 'request_from_browser';
  /** The header that decided it (for the log). */
  readonly header: string;
}

const ABSOLUTE_FORM = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i;

/** Which Host names the identity API accepts besides the loopback ones. */
export interface HostRule {
  /** `Sidecar:Http:AllowedHosts`, lower case. */
  readonly allowedHosts: ReadonlySet<string>;
  /** Development: IP literals and single-label names too (no rebinding domain is one). */
  readonly development: boolean;
}

/** Why `req` is refused, or undefined. */
export function browserRefusal(req: IncomingMessage, hostRule: HostRule): BrowserRefusal | undefined {
  // One pass over rawHeaders: req.headers would build an object per request, and it keeps only the
  // first of two Host headers where RFC 9112 §3.2 says a request with two is invalid.
  const raw = req.rawHeaders;
  let host: string | undefined;
  let hosts = 0;
  let browser: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i];
    if (name.length === 4) {
      if (name.toLowerCase() === 'host') {
        host = raw[i + 1];
        hosts++;
      }
    } else if (name.length === 6) {
      // Any Origin, `null` included (sandboxed frames, file: pages, redirects across origins).
      if (name.toLowerCase() === 'origin') browser ??= 'origin';
    } else if (name.length === 14) {
      const lower = name.toLowerCase();
      const value = raw[i + 1].trim().toLowerCase();
      // `none` is a request the user started (address bar, bookmark): no page sent it. Every other
      // value, `same-origin` included, means a page did; the sidecar serves no page of its own.
      if (lower === 'sec-fetch-site' && value !== 'none') browser ??= 'sec-fetch-site';
      // A navigation (a link opened from a mail or a chat arrives as `none`) is a browser window on
      // a token endpoint, never a client. Not `cors`: Node's fetch sends `Sec-Fetch-Mode: cors`.
      else if (lower === 'sec-fetch-mode' && value.includes('navigate')) browser ??= 'sec-fetch-mode';
    }
  }
  if (!(hosts === 1 && host !== undefined && hostAllowed(host, hostRule) && targetHostAllowed(req.url, hostRule))) {
    // No Host at all (HTTP/1.0) is refused too: browsers always send one, but every HTTP/1.1
    // client must (Node answers 400 itself there), and a rule with an exception is one more to reason about.
    return { code: 'host_not_allowed', header: 'host' };
  }
  return browser === undefined ? undefined : { code: 'request_from_browser', header: browser };
}

function hostAllowed(value: string, rule: HostRule): boolean {
  const host = hostOfHostHeader(value.trim());
  if (host === undefined) return false;
  if (isLoopbackHostName(host) || rule.allowedHosts.has(host)) return true;
  return rule.development && (SINGLE_LABEL.test(host) || isIpLiteral(host));
}

/**
 * A compose or Docker service name (`sidecar`, `entra-sidecar`, `my_sidecar`): letters, digits,
 * hyphens and underscores, no dot. A browser resolves such a name through the machine's own resolver
 * (hosts file, search domains), never through a DNS server an attacker runs.
 */
const SINGLE_LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** A dotted-quad IPv4 literal, or an IPv6 literal in brackets as RFC 3986 writes it in a Host. */
function isIpLiteral(host: string): boolean {
  if (host.startsWith('[')) return host.endsWith(']') && isIP(host.slice(1, -1)) === 6;
  return isIP(host) === 4;
}

/** An absolute-form target (RFC 9112 §3.2.2) names the host the request is for; it must pass too. */
function targetHostAllowed(url: string | undefined, rule: HostRule): boolean {
  if (url === undefined || url.startsWith('/')) return true;
  const m = ABSOLUTE_FORM.exec(url);
  return m === null || (!m[1].includes('@') && hostAllowed(m[1], rule));
}
