/**
 * prom-client's default-metric modules that src/metrics.ts imports one by one (CommonJS,
 * `module.exports = (registry, config) => …`), as collectDefaultMetrics() calls them.
 */
declare module 'prom-client/lib/metrics/*.js' {
  import type { Registry } from 'prom-client';
  const collect: (registry: Registry, config: { readonly eventLoopMonitoringPrecision?: number }) => void;
  export = collect;
}
