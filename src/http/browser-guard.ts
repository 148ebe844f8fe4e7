/**
 * Refuses what only a web browser sends to the identity API. The loopback-peer rule (loopback.ts)
 * does not stop a browser on this machine: its requests come from loopback too.
 *
 * - DNS rebinding: a page on `rebind.attacker.example:5000`, whose name is re-pointed at 127.0.0.1,
 *   reads the sidecar's answers as its own origin, so the browser adds no Origin to a GET and
 *   calls it `same-origin`. Only the Host header gives it away: where the loopback rule applies, the
 *   Host must name a loopback host (or a `Sidecar:Http:AllowedHosts` entry). This is the host
 *   filtering Microsoft's sidecar had in 1.0.0-rc.2 (400 "Invalid Hostname"), which 1.1.0 dropped for
 *   the peer rule because it refused `Host: sidecar` in compose setups; those callers are not
 *   loopback peers, so the peer rule refuses them anyway.
 * - Cross-site requests: `<img src>`, a form post or a no-cors fetch from any site reaches
 *   `http://localhost:5000` with a loopback Host; the browser marks them with Origin (every
 *   cross-origin fetch and every POST) or `Sec-Fetch-Site` (all browsers since 2023).
 *
 * No caller of the sidecar is a browser, so both apply in Development too (the Host rule does not:
 * Development lifts the loopback rule it belongs to; `Sec-Fetch-Site: same-origin` still catches a
 * rebinding page in current browsers there).
 */
import type { IncomingMessage } from 'node:http';
import { hostOfHostHeader, isLoopbackHostName } from '../net/host-names.js';

export interface BrowserRefusal {
  readonly code: 'host_not_allowed' | 'request_from_browser';
  /** The header that decided it (for the log). */
  readonly header: string;
}

const ABSOLUTE_FORM = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i;

/**
 * Why `req` is refused, or undefined. `allowedHosts` (lower case) holds the non-loopback Host names
 * to accept besides the loopback ones; undefined skips the Host rule (Development).
 */
export function browserRefusal(req: IncomingMessage, allowedHosts: ReadonlySet<string> | undefined): BrowserRefusal | undefined {
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
  if (allowedHosts !== undefined && !(hosts === 1 && host !== undefined && hostAllowed(host, allowedHosts) && targetHostAllowed(req.url, allowedHosts))) {
    // No Host at all (HTTP/1.0) is refused too: browsers always send one, but every HTTP/1.1
    // client must (Node answers 400 itself there), and a rule with an exception is one more to reason about.
    return { code: 'host_not_allowed', header: 'host' };
  }
  return browser === undefined ? undefined : { code: 'request_from_browser', header: browser };
}

function hostAllowed(value: string, allowedHosts: ReadonlySet<string>): boolean {
  const host = hostOfHostHeader(value.trim());
  return host !== undefined && (isLoopbackHostName(host) || allowedHosts.has(host));
}

/** An absolute-form target (RFC 9112 §3.2.2) names the host the request is for; it must pass too. */
function targetHostAllowed(url: string | undefined, allowedHosts: ReadonlySet<string>): boolean {
  if (url === undefined || url.startsWith('/')) return true;
  const m = ABSOLUTE_FORM.exec(url);
  return m === null || (!m[1].includes('@') && hostAllowed(m[1], allowedHosts));
}
