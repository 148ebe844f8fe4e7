/**
 * Acquisition metrics: a TokenAcquirer that counts what the engine it wraps answers, so the engine
 * itself stays metric-free.
 */
import { toSidecarError } from '../errors.js';
import type { Metrics, TokenFlow } from '../metrics.js';
import type { AcquireRequest, TokenAcquirer } from '../pipeline/types.js';

/** The acquisition flow a request selects (reference sidecar-http-api §5.1), for metrics only. */
function flowOf(req: AcquireRequest): TokenFlow {
  const o = req.options;
  if (req.agent) return 'agent';
  if (o.acquireTokenOptions.managedIdentity) return 'managed_identity';
  if (o.requestAppToken) return 'client_credentials';
  return req.user ? 'on_behalf_of' : 'long_running_on_behalf_of';
}

/**
 * Counts every acquisition (cache hits included, whether answered by acquire() or synchronously by
 * cached()) by flow and outcome; the engine itself stays metric-free.
 */
export function countAcquisitions(engine: TokenAcquirer, metrics: Pick<Metrics, 'countTokenAcquisition'>): TokenAcquirer {
  return {
    cached(req) {
      const token = engine.cached?.(req);
      if (token !== undefined) metrics.countTokenAcquisition(flowOf(req), 'ok');
      return token;
    },
    acquire(req) {
      return engine.acquire(req).then(
        (token) => {
          metrics.countTokenAcquisition(flowOf(req), 'ok');
          return token;
        },
        (err: unknown) => {
          metrics.countTokenAcquisition(flowOf(req), toSidecarError(err).code);
          throw err;
        },
      );
    },
    close: () => engine.close(),
  };
}
