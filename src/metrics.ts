/**
 * Prometheus metrics for the sidecar (issue 7). One `Registry` per sidecar instance, created here and
 * never prom-client's global default, so tests and parallel instances do not collide.
 *
 * Label sets are closed (reference style-and-ecosystem Part 2 (d)): route names, status classes,
 * error codes, flows and outbound targets. No label ever carries a token, user, tenant, scope,
 * client IP, raw path or downstream URL. The downstream API name is bounded by configuration, but
 * it is deliberately NOT a label either: it would tie series cardinality to config size and is not
 * needed to alert on the sidecar's health; Authorino's opt-in "deep metrics" is the model if
 * per-API detail is ever wanted.
 *
 * Hot paths call small methods (`observeCheck`, `observeHttpRequest`, ...). Each method looks its
 * label child up in a nested Map built once per label combination, so a request allocates no label
 * object. Values outside the closed sets are folded into `other` instead of growing a series.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import eventLoopLag from 'prom-client/lib/metrics/eventLoopLag.js';
import gc from 'prom-client/lib/metrics/gc.js';
import heapSizeAndUsed from 'prom-client/lib/metrics/heapSizeAndUsed.js';
import heapSpacesSizeAndUsed from 'prom-client/lib/metrics/heapSpacesSizeAndUsed.js';
import osMemoryHeap from 'prom-client/lib/metrics/osMemoryHeap.js';
import processCpuTotal from 'prom-client/lib/metrics/processCpuTotal.js';
import processHandles from 'prom-client/lib/metrics/processHandles.js';
import processMaxFileDescriptors from 'prom-client/lib/metrics/processMaxFileDescriptors.js';
import processOpenFileDescriptors from 'prom-client/lib/metrics/processOpenFileDescriptors.js';
import processRequests from 'prom-client/lib/metrics/processRequests.js';
import processResources from 'prom-client/lib/metrics/processResources.js';
import processStartTime from 'prom-client/lib/metrics/processStartTime.js';
import version from 'prom-client/lib/metrics/version.js';
import { ERROR_TABLE, type ErrorCode } from './errors.js';

/** ext_authz Check decision. */
export type CheckDecision = 'allow' | 'deny';

/** `ok` for success, otherwise the stable error code that decided the outcome. */
export type Outcome = 'ok' | ErrorCode;

/** How a downstream token was obtained (reference sidecar-http-api §5.1). */
export type TokenFlow = 'client_credentials' | 'on_behalf_of' | 'long_running_on_behalf_of' | 'managed_identity' | 'agent';

/** Token cache events counted by `entra_sidecar_token_cache_*_total`. */
export type TokenCacheEvent = 'hit' | 'miss' | 'coalesced' | 'refresh' | 'eviction';

/** Who an outbound HTTP call went to. */
export type OutboundTarget = 'metadata' | 'jwks' | 'token' | 'managed_identity' | 'key_vault' | 'downstream';

/** Cumulative token-cache counters as the acquisition module reports them (`TokenCacheStats`). */
export interface TokenCacheCounters {
  readonly cacheHits: number;
  readonly cacheMisses: number;
  readonly coalesced: number;
  readonly refreshes: number;
  readonly evictions: number;
  readonly size: number;
}

/** What the hot paths and the management listener call. Every method is cheap and never throws. */
export interface Metrics {
  /** The registry behind these metrics (for tests and custom collectors). */
  readonly registry: Registry;
  /** `Content-Type` of `render()`'s output. */
  readonly contentType: string;
  /** One identity-API request: `route` is the route's template name (e.g. `AuthorizationHeader`), never a raw path. */
  observeHttpRequest(route: string, status: number, seconds: number): void;
  /** One ext_authz Check. */
  observeCheck(decision: CheckDecision, reason: Outcome, seconds: number): void;
  /** One ext_authz call reset because its CheckRequest did not arrive whole in time. */
  countCheckReceiveTimeout(): void;
  /** One call to the token acquirer. */
  countTokenAcquisition(flow: TokenFlow, outcome: Outcome): void;
  /** `count` token-cache events of one kind. */
  countTokenCache(event: TokenCacheEvent, count?: number): void;
  /** Current number of cached downstream tokens. */
  setTokenCacheEntries(entries: number): void;
  /** Brings the token-cache counters up to a cumulative snapshot (adds the difference since the last call). */
  syncTokenCache(stats: TokenCacheCounters): void;
  /** One outbound HTTP call: `status` is the response status, or `'error'` when no response arrived. */
  observeOutbound(target: OutboundTarget, status: number | 'error', seconds: number): void;
  /** One OpenID metadata + JWKS (re)load. */
  countSigningKeysRefresh(outcome: 'ok' | 'error'): void;
  /** Signing keys in the current set. */
  setSigningKeys(keys: number): void;
  /** One inbound token that failed validation, by its stable code. */
  countValidationFailure(reason: ErrorCode): void;
  /** Runs `hook` before every render, e.g. to copy gauges from a module's `stats()`. */
  addScrapeHook(hook: () => void): void;
  /** The Prometheus text exposition of every metric in the registry. */
  render(): Promise<string>;
}

/** Options for createMetrics. */
export interface MetricsOptions {
  /** The sidecar's version, for `entra_sidecar_build_info`. */
  readonly version: string;
  /** Also export Node process metrics (`process_*`, `nodejs_*`, event-loop lag). Default false; main turns it on. */
  readonly collectProcess?: boolean;
  /**
   * With collectProcess, also export `nodejs_gc_duration_seconds` (`Sidecar:Management:GcMetrics`).
   * Default false: see PROCESS_METRICS.
   */
  readonly gcDuration?: boolean;
}

/**
 * prom-client's default metrics (`collectDefaultMetrics.metricsList`), by the names it gives them,
 * without `gc`. Its histogram needs a PerformanceObserver for 'gc' entries, and Node then builds an
 * entry object (on Node 20 with deprecated accessors) and runs a callback for every garbage
 * collection, scavenges included: 40–75 µs each, measured, which under load was 4 % of a warm
 * ext_authz Check and 7 % of a warm `/Validate` (bench/README.md finding 25). The other metrics cost
 * nothing between scrapes but the event-loop-delay timer.
 */
export const PROCESS_METRICS = {
  processCpuTotal,
  processStartTime,
  osMemoryHeap,
  processOpenFileDescriptors,
  processMaxFileDescriptors,
  eventLoopLag,
  processResources,
  processHandles,
  processRequests,
  heapSizeAndUsed,
  heapSpacesSizeAndUsed,
  version,
} as const;

const PREFIX = 'entra_sidecar_';
const OTHER = 'other';
/** At most this many distinct `route` values; the identity API has fewer than ten routes. */
const MAX_ROUTES = 32;
const ROUTE_NAME = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;

/**
 * A cached validation takes tens to hundreds of µs; prom-client's defaults (5 ms+) would hide it.
 * The top bucket is above the Check timeout the Envoy example sets (2 s), so a deny answered just
 * before Envoy's deadline is counted as what it is, not folded into +Inf.
 */
export const CHECK_BUCKETS_SECONDS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5];
/**
 * Identity-API requests may include a cold token acquisition or a downstream call, and a claims
 * challenge's second round; outbound calls may be given up to Microsoft's 100 s. The top buckets keep
 * such slow answers (and timeouts) out of +Inf.
 */
export const HTTP_BUCKETS_SECONDS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Calls to Entra ID, IMDS, Key Vault and downstream APIs. */
export const OUTBOUND_BUCKETS_SECONDS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

const ERROR_CODES: ReadonlySet<string> = new Set(Object.keys(ERROR_TABLE));
const OUTCOMES: ReadonlySet<string> = new Set(['ok', ...ERROR_CODES]);
const DECISIONS: ReadonlySet<string> = new Set(['allow', 'deny']);
const FLOWS: ReadonlySet<string> = new Set(['client_credentials', 'on_behalf_of', 'long_running_on_behalf_of', 'managed_identity', 'agent']);
const TARGETS: ReadonlySet<string> = new Set(['metadata', 'jwks', 'token', 'managed_identity', 'key_vault', 'downstream']);
const REFRESH_OUTCOMES: ReadonlySet<string> = new Set(['ok', 'error']);
const STATUS_CLASSES = ['unknown', '1xx', '2xx', '3xx', '4xx', '5xx'] as const;

/** `404` → `4xx`; anything that is not an HTTP status → `unknown`. */
export function statusClass(status: number): string {
  if (!Number.isInteger(status) || status < 100 || status > 599) return 'unknown';
  return STATUS_CLASSES[Math.floor(status / 100)];
}

/** One-label children, created on first use and kept. */
function children1<C>(make: (a: string) => C): (a: string) => C {
  const byA = new Map<string, C>();
  return (a) => {
    let child = byA.get(a);
    if (child === undefined) {
      child = make(a);
      byA.set(a, child);
    }
    return child;
  };
}

/** Two-label children in a nested Map, so a lookup concatenates no strings. */
function children2<C>(make: (a: string, b: string) => C): (a: string, b: string) => C {
  const byA = new Map<string, Map<string, C>>();
  return (a, b) => {
    let byB = byA.get(a);
    if (byB === undefined) {
      byB = new Map();
      byA.set(a, byB);
    }
    let child = byB.get(b);
    if (child === undefined) {
      child = make(a, b);
      byB.set(b, child);
    }
    return child;
  };
}

function inSet(allowed: ReadonlySet<string>, value: string): string {
  return allowed.has(value) ? value : OTHER;
}

/** A finite, non-negative duration; a broken clock must not throw on a hot path. */
function seconds(value: number): number {
  return Number.isFinite(value) && value > 0 ? value : 0;
}

/**
 * A histogram for the per-request paths. prom-client's Histogram builds a label object, validates
 * and hashes it on every observe (≈1 µs, measured as 2–3 % of a warm Check); here each label
 * combination is bound once to a series and observe() is a bucket search and three additions. It
 * registers in prom-client's Registry as a custom metric and renders exactly as prom-client's
 * Histogram does (same sample names, `le` first, cumulative buckets, `+Inf`, `_sum`, `_count`).
 */
class LeanHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly name: string;
  readonly help: string;
  readonly #labelNames: readonly string[];
  readonly #bounds: readonly number[];
  #series = new Map<string, LeanSeries>();

  constructor(name: string, help: string, labelNames: readonly string[], bounds: readonly number[], registry: Registry) {
    this.name = name;
    this.help = help;
    this.#labelNames = labelNames;
    this.#bounds = bounds;
    // Like prom-client: a histogram without labels shows its (zero) series before the first observation.
    if (labelNames.length === 0) this.series();
    registry.registerMetric(this as unknown as Histogram);
  }

  /** The series for these label values (in labelNames order), created on first use. */
  series(...values: string[]): LeanSeries {
    const key = values.join('\u0000');
    let s = this.#series.get(key);
    if (s === undefined) {
      const labels: Record<string, string> = {};
      this.#labelNames.forEach((n, i) => (labels[n] = values[i]));
      s = new LeanSeries(this.#bounds, labels);
      this.#series.set(key, s);
    }
    return s;
  }

  getForPromString(): { name: string; help: string; type: string; aggregator: string; values: Array<{ labels: Record<string, string | number>; sharedLabels: Record<string, string>; value: number; metricName: string }> } {
    const values: Array<{ labels: Record<string, string | number>; sharedLabels: Record<string, string>; value: number; metricName: string }> = [];
    const bucket = `${this.name}_bucket`;
    for (const s of this.#series.values()) {
      let acc = 0;
      this.#bounds.forEach((le, i) => {
        acc += s.counts[i];
        values.push({ labels: { le }, sharedLabels: s.labels, value: acc, metricName: bucket });
      });
      values.push({ labels: { le: '+Inf' }, sharedLabels: s.labels, value: s.count, metricName: bucket });
      values.push({ labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  get(): ReturnType<LeanHistogram['getForPromString']> {
    const data = this.getForPromString();
    return { ...data, values: data.values.map((v) => ({ ...v, labels: { ...v.labels, ...v.sharedLabels }, sharedLabels: {} })) };
  }

  reset(): void {
    this.#series.clear();
    if (this.#labelNames.length === 0) this.series();
  }
}

class LeanSeries {
  readonly counts: Float64Array;
  readonly labels: Record<string, string>;
  readonly #bounds: readonly number[];
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[], labels: Record<string, string>) {
    this.#bounds = bounds;
    this.counts = new Float64Array(bounds.length);
    this.labels = labels;
  }

  observe(value: number): void {
    const bounds = this.#bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]) {
        this.counts[i]++;
        break;
      }
    }
    this.sum += value;
    this.count++;
  }
}

/**
 * A counter child whose increments are added up locally and handed to prom-client when it is
 * scraped (its `collect` hook), so the per-request cost is one addition.
 */
class PendingCount {
  pending = 0;
  readonly #child: { inc(n: number): void };
  constructor(child: { inc(n: number): void }) {
    this.#child = child;
  }
  inc(): void {
    this.pending++;
  }
  flush(): void {
    if (this.pending > 0) {
      this.#child.inc(this.pending);
      this.pending = 0;
    }
  }
}

/** Creates the sidecar's metrics on a fresh Registry. */
export function createMetrics(opts: MetricsOptions): Metrics {
  const registry = new Registry();
  const registers = [registry];

  // Counters on per-request paths keep their increments in PendingCount slots until a scrape.
  const pendingCounts: PendingCount[] = [];
  const flushPending = (): void => {
    for (const p of pendingCounts) p.flush();
  };
  const httpRequests = new Counter({ name: `${PREFIX}http_requests_total`, help: 'Identity HTTP API requests, by route template name and status class.', labelNames: ['route', 'status_class'] as const, registers, collect: flushPending });
  const httpDuration = new LeanHistogram(`${PREFIX}http_request_duration_seconds`, 'Identity HTTP API request duration in seconds, by route template name.', ['route'], HTTP_BUCKETS_SECONDS, registry);
  const checks = new Counter({ name: `${PREFIX}ext_authz_checks_total`, help: 'ext_authz Check decisions; reason is the stable error code of a deny, or ok.', labelNames: ['decision', 'reason'] as const, registers, collect: flushPending });
  // By decision: a deny is mostly a quick refusal and an allow may wait on Entra, so one latency
  // figure for both would hide either. Both series exist from the start (no gap before the first deny).
  const checkDuration = new LeanHistogram(`${PREFIX}ext_authz_check_duration_seconds`, 'ext_authz Check duration in seconds, by decision.', ['decision'], CHECK_BUCKETS_SECONDS, registry);
  const allowDuration = checkDuration.series('allow');
  const denyDuration = checkDuration.series('deny');
  const receiveTimeouts = new Counter({ name: `${PREFIX}ext_authz_receive_timeouts_total`, help: 'ext_authz calls reset because their CheckRequest was still unfinished after Sidecar:ExtAuthz:RequestReceiveTimeoutMs.', registers });
  const acquisitions = new Counter({ name: `${PREFIX}token_acquisitions_total`, help: 'Calls to the token acquirer, by flow and outcome (ok or the stable error code).', labelNames: ['flow', 'outcome'] as const, registers, collect: flushPending });
  const cacheCounters: Record<TokenCacheEvent, Counter> = {
    hit: new Counter({ name: `${PREFIX}token_cache_hits_total`, help: 'Downstream tokens served from the token cache.', registers }),
    miss: new Counter({ name: `${PREFIX}token_cache_misses_total`, help: 'Token cache lookups that found no usable token.', registers }),
    coalesced: new Counter({ name: `${PREFIX}token_cache_coalesced_total`, help: 'Callers that joined a token acquisition already in flight.', registers }),
    refresh: new Counter({ name: `${PREFIX}token_cache_refreshes_total`, help: 'Background refresh-ahead acquisitions started.', registers }),
    eviction: new Counter({ name: `${PREFIX}token_cache_evictions_total`, help: 'Tokens evicted from the bounded token cache.', registers }),
  };
  const cacheEntries = new Gauge({ name: `${PREFIX}token_cache_entries`, help: 'Downstream tokens currently cached.', registers });
  const outbound = new Counter({ name: `${PREFIX}outbound_requests_total`, help: 'Outbound HTTP calls, by target and status class (error when no response arrived).', labelNames: ['target', 'status_class'] as const, registers });
  const outboundDuration = new Histogram({ name: `${PREFIX}outbound_request_duration_seconds`, help: 'Outbound HTTP call duration in seconds, by target.', labelNames: ['target'] as const, buckets: [...OUTBOUND_BUCKETS_SECONDS], registers });
  const keyRefreshes = new Counter({ name: `${PREFIX}signing_keys_refreshes_total`, help: 'OpenID metadata and JWKS loads, by outcome.', labelNames: ['outcome'] as const, registers });
  const signingKeys = new Gauge({ name: `${PREFIX}signing_keys`, help: 'Signing keys in the current JWKS.', registers });
  const validationFailures = new Counter({ name: `${PREFIX}token_validation_failures_total`, help: 'Inbound tokens that failed validation, by stable error code.', labelNames: ['reason'] as const, registers });
  const buildInfo = new Gauge({ name: `${PREFIX}build_info`, help: 'Always 1; labels carry the sidecar version and the Node.js version.', labelNames: ['version', 'node'] as const, registers });
  buildInfo.labels(opts.version, process.versions.node).set(1);

  if (opts.collectProcess === true) {
    // The config collectDefaultMetrics() would pass them.
    const config = { eventLoopMonitoringPrecision: 10 };
    for (const collect of Object.values(PROCESS_METRICS)) collect(registry, config);
    if (opts.gcDuration === true) gc(registry, config);
  }

  const pending = (child: { inc(n: number): void }): PendingCount => {
    const p = new PendingCount(child);
    pendingCounts.push(p);
    return p;
  };
  const httpRequestChild = children2((route, cls) => pending(httpRequests.labels(route, cls)));
  const httpDurationChild = children1((route) => httpDuration.series(route));
  const checkChild = children2((decision, reason) => pending(checks.labels(decision, reason)));
  const acquisitionChild = children2((flow, outcome) => pending(acquisitions.labels(flow, outcome)));
  const outboundChild = children2((target, cls) => outbound.labels(target, cls));
  const outboundDurationChild = children1((target) => outboundDuration.labels(target));
  const keyRefreshChild = children1((outcome) => keyRefreshes.labels(outcome));
  const validationFailureChild = children1((reason) => validationFailures.labels(reason));

  // Route names come from the HTTP server's route table; anything else (or too many) folds into `other`.
  const knownRoutes = new Set<string>();
  function boundedRoute(route: string): string {
    if (knownRoutes.has(route)) return route;
    if (knownRoutes.size >= MAX_ROUTES || !ROUTE_NAME.test(route)) return OTHER;
    knownRoutes.add(route);
    return route;
  }

  const scrapeHooks: Array<() => void> = [];
  const lastCacheCounters = { cacheHits: 0, cacheMisses: 0, coalesced: 0, refreshes: 0, evictions: 0 };
  function addDelta(event: TokenCacheEvent, field: keyof typeof lastCacheCounters, current: number): void {
    if (!Number.isFinite(current)) return;
    const delta = current - lastCacheCounters[field];
    // A smaller value means the source was recreated; count from its new base.
    if (delta > 0) cacheCounters[event].inc(delta);
    lastCacheCounters[field] = current;
  }

  return {
    registry,
    contentType: registry.contentType,
    observeHttpRequest(route, status, duration) {
      const r = boundedRoute(route);
      httpRequestChild(r, statusClass(status)).inc();
      httpDurationChild(r).observe(seconds(duration));
    },
    observeCheck(decision, reason, duration) {
      checkChild(inSet(DECISIONS, decision), inSet(OUTCOMES, reason)).inc();
      (decision === 'deny' ? denyDuration : allowDuration).observe(seconds(duration));
    },
    countCheckReceiveTimeout() {
      receiveTimeouts.inc();
    },
    countTokenAcquisition(flow, outcome) {
      acquisitionChild(inSet(FLOWS, flow), inSet(OUTCOMES, outcome)).inc();
    },
    countTokenCache(event, count = 1) {
      const counter = cacheCounters[event] as Counter | undefined;
      if (counter !== undefined && Number.isFinite(count) && count > 0) counter.inc(count);
    },
    setTokenCacheEntries(entries) {
      if (Number.isFinite(entries)) cacheEntries.set(entries);
    },
    syncTokenCache(stats) {
      addDelta('hit', 'cacheHits', stats.cacheHits);
      addDelta('miss', 'cacheMisses', stats.cacheMisses);
      addDelta('coalesced', 'coalesced', stats.coalesced);
      addDelta('refresh', 'refreshes', stats.refreshes);
      addDelta('eviction', 'evictions', stats.evictions);
      if (Number.isFinite(stats.size)) cacheEntries.set(stats.size);
    },
    observeOutbound(target, status, duration) {
      const t = inSet(TARGETS, target);
      outboundChild(t, status === 'error' ? 'error' : statusClass(status)).inc();
      outboundDurationChild(t).observe(seconds(duration));
    },
    countSigningKeysRefresh(outcome) {
      keyRefreshChild(inSet(REFRESH_OUTCOMES, outcome)).inc();
    },
    setSigningKeys(keys) {
      if (Number.isFinite(keys)) signingKeys.set(keys);
    },
    countValidationFailure(reason) {
      validationFailureChild(inSet(ERROR_CODES, reason)).inc();
    },
    addScrapeHook(hook) {
      scrapeHooks.push(hook);
    },
    async render() {
      // A failing hook must not take the whole scrape down; its gauges just keep their last value.
      for (const hook of scrapeHooks) {
        try {
          hook();
        } catch {
          /* ignored on purpose, see above */
        }
      }
      return registry.metrics();
    },
  };
}

/** Metrics that record nothing, for modules constructed without a registry (tests, tools). */
export const NOOP_METRICS: Metrics = Object.freeze({
  registry: new Registry(),
  contentType: 'text/plain; version=0.0.4; charset=utf-8',
  observeHttpRequest() {},
  observeCheck() {},
  countCheckReceiveTimeout() {},
  countTokenAcquisition() {},
  countTokenCache() {},
  setTokenCacheEntries() {},
  syncTokenCache() {},
  observeOutbound() {},
  countSigningKeysRefresh() {},
  setSigningKeys() {},
  countValidationFailure() {},
  addScrapeHook() {},
  async render() {
    return '';
  },
});
