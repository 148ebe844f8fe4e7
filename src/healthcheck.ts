/**
 * Container HEALTHCHECK probe, a separate process entry (not part of the sidecar): distroless has no
 * shell or curl, so Docker runs `node dist/src/healthcheck.js [url]`. It GETs the management
 * listener's `/healthz` and exits 0 on a 2xx answer within the timeout, 1 otherwise.
 *
 * The URL comes from argv (default below) and nothing else, so the config loader stays the only
 * reader of the environment. When `Sidecar__Management__Url` moves the port, pass the new URL in an
 * exec-form check (Compose `healthcheck.test: ["CMD", "/nodejs/bin/node", "dist/src/healthcheck.js",
 * URL]`, or HEALTHCHECK CMD [...] in a derived image); `docker run --health-cmd` cannot, since it runs
 * the command through /bin/sh, which the image lacks. With the management listener off, turn the
 * check off (`--no-healthcheck`). Kubernetes ignores HEALTHCHECK and uses probes instead.
 */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

// Through require, not an import: an ES module import of node:http reads all its exports once, and
// on Node >= 22 its lazy WebSocket loads Node's own undici, which took the probe from 80 to 140 ms
// and 47 to 60 MB of peak RSS on Node 24, every 30 s inside the sidecar's memory limit (bench/README.md
// finding 39).
const { request } = createRequire(import.meta.url)('node:http') as typeof import('node:http');

/** Where the management listener answers by default (`Sidecar:Management:Url` = http://+:9090). */
export const DEFAULT_HEALTH_URL = 'http://127.0.0.1:9090/healthz';
const TIMEOUT_MS = 2_000;

/** Resolves true when `url` answers 2xx within `timeoutMs`; never rejects. */
export function probe(url: string, timeoutMs = TIMEOUT_MS): Promise<boolean> {
  return new Promise((resolve) => {
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      resolve(false);
      return;
    }
    if (target.protocol !== 'http:') {
      resolve(false);
      return;
    }
    // One deadline for connect + response, not an idle timeout that a slow trickle could reset.
    const deadline = setTimeout(() => req.destroy(new Error('timeout')), timeoutMs);
    const req = request(target, { method: 'GET', headers: { connection: 'close' } }, (res) => {
      clearTimeout(deadline);
      res.resume();
      const status = res.statusCode ?? 0;
      resolve(status >= 200 && status < 300);
    });
    req.on('error', () => {
      clearTimeout(deadline);
      resolve(false);
    });
    req.end();
  });
}

// Run only when started as a script, so tests can import probe() without exiting.
const isEntry = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isEntry) {
  const healthy = await probe(process.argv[2] ?? DEFAULT_HEALTH_URL);
  process.exit(healthy ? 0 : 1);
}
