import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createMetrics, NOOP_METRICS, statusClass, type Metrics } from '../../src/metrics.js';
import { repoRoot } from './paths.js';

const GOLDEN = path.join(repoRoot, 'test', 'ops', 'metrics.golden.txt');

/** A known sequence touching every metric, so every series shape appears in the exposition. */
function observeKnownSequence(m: Metrics): void {
  m.observeHttpRequest('AuthorizationHeader', 200, 0.004);
  m.observeHttpRequest('ValidateAuthorizationHeader', 401, 0.0007);
  m.observeCheck('allow', 'ok', 0.0003);
  m.observeCheck('deny', 'token_expired', 0.0002);
  m.countTokenAcquisition('on_behalf_of', 'ok');
  m.countTokenAcquisition('client_credentials', 'acquisition_rejected');
  for (const event of ['hit', 'miss', 'coalesced', 'refresh', 'eviction'] as const) m.countTokenCache(event);
  m.setTokenCacheEntries(3);
  m.observeOutbound('token', 200, 0.05);
  m.observeOutbound('jwks', 'error', 1.2);
  m.countSigningKeysRefresh('ok');
  m.setSigningKeys(2);
  m.countValidationFailure('token_signature_invalid');
}

/**
 * The deliberate shape of the exposition: `# HELP`/`# TYPE` lines and, per sample name, its label
 * key set. Values vary and are left out; Node's default process metrics are excluded.
 */
function shape(text: string): string[] {
  const lines = new Set<string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      lines.add(line);
      continue;
    }
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s/.exec(line);
    if (!match) throw new Error(`unparseable sample line: ${line}`);
    const keys = [...(match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)].map((k) => k[1]).sort();
    lines.add(`${match[1]}{${keys.join(',')}}`);
  }
  return [...lines].filter((l) => !/(^|\s)(process_|nodejs_)/.test(l)).sort();
}

/** Sample value of `name{labels}` exactly as rendered, or undefined. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

describe('metrics: exposition', () => {
  it('renders exactly the committed golden set of names, types and label keys', async () => {
    const m = createMetrics({ version: '1.2.3', collectProcess: false });
    observeKnownSequence(m);
    const actual = shape(await m.render()).join('\n') + '\n';
    if (process.env.UPDATE_GOLDEN === '1') writeFileSync(GOLDEN, actual);
    const golden = readFileSync(GOLDEN, 'utf8');
    expect(actual, 'metric names, types or labels changed; rerun with UPDATE_GOLDEN=1 if deliberate').to.equal(golden);
  });

  it('uses a fresh registry per instance and never the global default registry', async () => {
    const { register } = await import('prom-client');
    const a = createMetrics({ version: 'a', collectProcess: false });
    const b = createMetrics({ version: 'b', collectProcess: false });
    a.observeCheck('allow', 'ok', 0.001);
    expect(a.registry).to.not.equal(b.registry);
    expect(a.registry).to.not.equal(register);
    expect(register.getSingleMetric('entra_sidecar_ext_authz_checks_total')).to.equal(undefined);
    expect(sample(await b.render(), 'entra_sidecar_ext_authz_checks_total{decision="allow",reason="ok"}')).to.equal(undefined);
  });

  it('exports Node process metrics only when collectProcess is on', async () => {
    const withProcess = await createMetrics({ version: 'x', collectProcess: true }).render();
    const without = await createMetrics({ version: 'x' }).render();
    expect(withProcess).to.match(/^# TYPE process_cpu_user_seconds_total counter$/m);
    expect(withProcess).to.match(/^# TYPE nodejs_eventloop_lag_seconds gauge$/m);
    expect(without).to.not.match(/process_|nodejs_/);
  });

  it("exports every one of prom-client's default metrics but the GC histogram, which gcDuration adds", async () => {
    const { Registry, collectDefaultMetrics } = await import('prom-client');
    const families = (text: string): string[] => [...text.matchAll(/^# TYPE ((?:process_|nodejs_)\S+) \S+$/gm)].map((m) => m[1]).sort();
    const reference = new Registry();
    collectDefaultMetrics({ register: reference });
    const all = families(await reference.metrics());
    expect(all).to.include('nodejs_gc_duration_seconds');
    const lean = families(await createMetrics({ version: 'x', collectProcess: true }).render());
    expect(lean).to.deep.equal(all.filter((name) => name !== 'nodejs_gc_duration_seconds'));
    const withGc = families(await createMetrics({ version: 'x', collectProcess: true, gcDuration: true }).render());
    expect(withGc).to.deep.equal(all);
    // gcDuration alone adds nothing: it only widens the process metrics.
    expect(await createMetrics({ version: 'x', gcDuration: true }).render()).to.not.match(/process_|nodejs_/);
  });

  it('sets build_info to 1 with the version and the Node.js version', async () => {
    const text = await createMetrics({ version: '9.8.7', collectProcess: false }).render();
    expect(sample(text, `entra_sidecar_build_info{version="9.8.7",node="${process.versions.node}"}`)).to.equal(1);
  });

  it('gives the check histogram sub-millisecond buckets from 0.0001 s, and one above the example\'s 2 s Check timeout', async () => {
    const m = createMetrics({ version: 'x', collectProcess: false });
    m.observeCheck('allow', 'ok', 0.00015);
    // A deny answered shortly before Envoy's 2 s deadline.
    m.observeCheck('deny', 'dependency_timeout', 1.8);
    const text = await m.render();
    expect(sample(text, 'entra_sidecar_ext_authz_check_duration_seconds_bucket{le="0.0001",decision="allow"}')).to.equal(0);
    expect(sample(text, 'entra_sidecar_ext_authz_check_duration_seconds_bucket{le="0.00025",decision="allow"}')).to.equal(1);
    expect(sample(text, 'entra_sidecar_ext_authz_check_duration_seconds_bucket{le="1",decision="deny"}')).to.equal(0);
    expect(sample(text, 'entra_sidecar_ext_authz_check_duration_seconds_bucket{le="2.5",decision="deny"}')).to.equal(1);
  });
});

describe('metrics: the per-request histograms and counters render as prom-client\'s own', () => {
  it('matches a prom-client Histogram and Counter fed the same observations, line for line, across scrapes', async () => {
    const { Counter, Histogram, Registry } = await import('prom-client');
    const { HTTP_BUCKETS_SECONDS } = await import('../../src/metrics.js');
    const reference = new Registry();
    const refCount = new Counter({ name: 'entra_sidecar_http_requests_total', help: 'x', labelNames: ['route', 'status_class'], registers: [reference] });
    const refHist = new Histogram({ name: 'entra_sidecar_http_request_duration_seconds', help: 'x', labelNames: ['route'], buckets: [...HTTP_BUCKETS_SECONDS], registers: [reference] });
    const m = createMetrics({ version: 'x', collectProcess: false });
    const relevant = (text: string) => text.split('\n').filter((l) => l.startsWith('entra_sidecar_http_request'));
    const durations = [0.0001, 0.0005, 0.0007, 0.003, 0.03, 0.3, 3, 30, 0.0025];
    for (const [i, d] of durations.entries()) {
      const route = i % 2 === 0 ? 'Validate' : 'AuthorizationHeader';
      const status = i % 3 === 0 ? 401 : 200;
      m.observeHttpRequest(route, status, d);
      refCount.labels(route, status === 401 ? '4xx' : '2xx').inc();
      refHist.labels(route).observe(d);
      if (i === 4) expect(relevant(await m.render())).to.deep.equal(relevant(await reference.metrics()));
    }
    expect(relevant(await m.render())).to.deep.equal(relevant(await reference.metrics()));
  });
});

describe('metrics: counting', () => {
  it('adds up N allows and M denies by decision and reason', async () => {
    const m = createMetrics({ version: 'x', collectProcess: false });
    const allows = 7;
    const denies = { token_expired: 3, insufficient_scope: 2, credential_missing: 4 } as const;
    for (let i = 0; i < allows; i++) m.observeCheck('allow', 'ok', 0.0002);
    for (const [reason, n] of Object.entries(denies)) {
      for (let i = 0; i < n; i++) m.observeCheck('deny', reason as keyof typeof denies, 0.0004);
    }
    const text = await m.render();
    expect(sample(text, 'entra_sidecar_ext_authz_checks_total{decision="allow",reason="ok"}')).to.equal(allows);
    for (const [reason, n] of Object.entries(denies)) {
      expect(sample(text, `entra_sidecar_ext_authz_checks_total{decision="deny",reason="${reason}"}`)).to.equal(n);
    }
    expect(sample(text, 'entra_sidecar_ext_authz_check_duration_seconds_count{decision="allow"}')).to.equal(allows);
    expect(sample(text, 'entra_sidecar_ext_authz_check_duration_seconds_count{decision="deny"}')).to.equal(9);
  });

  it('counts identity API requests by route and status class', async () => {
    const m = createMetrics({ version: 'x', collectProcess: false });
    m.observeHttpRequest('DownstreamApi', 200, 0.01);
    m.observeHttpRequest('DownstreamApi', 204, 0.01);
    m.observeHttpRequest('DownstreamApi', 502, 0.01);
    const text = await m.render();
    expect(sample(text, 'entra_sidecar_http_requests_total{route="DownstreamApi",status_class="2xx"}')).to.equal(2);
    expect(sample(text, 'entra_sidecar_http_requests_total{route="DownstreamApi",status_class="5xx"}')).to.equal(1);
    expect(sample(text, 'entra_sidecar_http_request_duration_seconds_count{route="DownstreamApi"}')).to.equal(3);
  });

  it('counts outbound calls by target, with error when no response arrived', async () => {
    const m = createMetrics({ version: 'x', collectProcess: false });
    m.observeOutbound('metadata', 200, 0.02);
    m.observeOutbound('downstream', 'error', 5);
    m.observeOutbound('downstream', 429, 0.1);
    const text = await m.render();
    expect(sample(text, 'entra_sidecar_outbound_requests_total{target="metadata",status_class="2xx"}')).to.equal(1);
    expect(sample(text, 'entra_sidecar_outbound_requests_total{target="downstream",status_class="error"}')).to.equal(1);
    expect(sample(text, 'entra_sidecar_outbound_requests_total{target="downstream",status_class="4xx"}')).to.equal(1);
    expect(sample(text, 'entra_sidecar_outbound_request_duration_seconds_count{target="downstream"}')).to.equal(2);
  });

  it('brings token-cache counters up to cumulative stats by adding only the difference', async () => {
    const m = createMetrics({ version: 'x', collectProcess: false });
    let stats = { cacheHits: 5, cacheMisses: 2, coalesced: 1, refreshes: 0, evictions: 0, size: 2 };
    m.addScrapeHook(() => m.syncTokenCache(stats));
    let text = await m.render();
    expect(sample(text, 'entra_sidecar_token_cache_hits_total')).to.equal(5);
    expect(sample(text, 'entra_sidecar_token_cache_entries')).to.equal(2);
    stats = { cacheHits: 9, cacheMisses: 2, coalesced: 1, refreshes: 1, evictions: 1, size: 1 };
    text = await m.render();
    expect(sample(text, 'entra_sidecar_token_cache_hits_total')).to.equal(9);
    expect(sample(text, 'entra_sidecar_token_cache_misses_total')).to.equal(2);
    expect(sample(text, 'entra_sidecar_token_cache_refreshes_total')).to.equal(1);
    expect(sample(text, 'entra_sidecar_token_cache_evictions_total')).to.equal(1);
    expect(sample(text, 'entra_sidecar_token_cache_entries')).to.equal(1);
  });

  it('keeps rendering when a scrape hook throws', async () => {
    const m = createMetrics({ version: 'x', collectProcess: false });
    m.addScrapeHook(() => {
      throw new Error('stats unavailable');
    });
    m.setSigningKeys(4);
    expect(sample(await m.render(), 'entra_sidecar_signing_keys')).to.equal(4);
  });

  it('counts signing-key refreshes, validation failures and acquisitions by closed labels', async () => {
    const m = createMetrics({ version: 'x', collectProcess: false });
    m.countSigningKeysRefresh('ok');
    m.countSigningKeysRefresh('error');
    m.countSigningKeysRefresh('error');
    m.countValidationFailure('token_audience_invalid');
    m.countTokenAcquisition('managed_identity', 'ok');
    m.countTokenAcquisition('managed_identity', 'ok');
    const text = await m.render();
    expect(sample(text, 'entra_sidecar_signing_keys_refreshes_total{outcome="error"}')).to.equal(2);
    expect(sample(text, 'entra_sidecar_token_validation_failures_total{reason="token_audience_invalid"}')).to.equal(1);
    expect(sample(text, 'entra_sidecar_token_acquisitions_total{flow="managed_identity",outcome="ok"}')).to.equal(2);
  });

  it('maps statuses to classes', () => {
    expect([statusClass(101), statusClass(200), statusClass(302), statusClass(404), statusClass(503)]).to.deep.equal(['1xx', '2xx', '3xx', '4xx', '5xx']);
    expect([statusClass(0), statusClass(600), statusClass(Number.NaN)]).to.deep.equal(['unknown', 'unknown', 'unknown']);
  });
});

describe('metrics: bounded labels', () => {
  // Shaped like a JWT; it must never become a label value even if a caller passes it by mistake.
  const tokenLike = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl';

  it('folds values outside the closed sets into "other" instead of creating a series', async () => {
    const m = createMetrics({ version: 'x', collectProcess: false });
    m.observeHttpRequest(tokenLike, 200, 0.001);
    m.observeHttpRequest('/AuthorizationHeader/graph?x=1', 200, 0.001);
    m.observeCheck('deny', tokenLike as never, 0.001);
    m.countValidationFailure('user@example.com' as never);
    m.countTokenAcquisition('graph' as never, 'ok');
    m.observeOutbound('https://graph.microsoft.com/v1.0/me' as never, 200, 0.001);
    const text = await m.render();
    expect(text).to.not.include('eyJ');
    expect(text).to.not.include('example.com');
    expect(text).to.not.include('graph');
    expect(sample(text, 'entra_sidecar_http_requests_total{route="other",status_class="2xx"}')).to.equal(2);
    expect(sample(text, 'entra_sidecar_ext_authz_checks_total{decision="deny",reason="other"}')).to.equal(1);
    expect(sample(text, 'entra_sidecar_token_validation_failures_total{reason="other"}')).to.equal(1);
    expect(sample(text, 'entra_sidecar_token_acquisitions_total{flow="other",outcome="ok"}')).to.equal(1);
    expect(sample(text, 'entra_sidecar_outbound_requests_total{target="other",status_class="2xx"}')).to.equal(1);
  });

  it('caps the number of distinct route names at 32', async () => {
    const m = createMetrics({ version: 'x', collectProcess: false });
    for (let i = 0; i < 100; i++) m.observeHttpRequest(`Route${i}`, 200, 0.001);
    const text = await m.render();
    const routes = new Set([...text.matchAll(/^entra_sidecar_http_requests_total\{route="([^"]+)"/gm)].map((r) => r[1]));
    expect(routes.size).to.equal(33);
    expect(routes.has('other')).to.equal(true);
    expect(sample(text, 'entra_sidecar_http_requests_total{route="other",status_class="2xx"}')).to.equal(68);
  });

  it('ignores negative or non-finite durations instead of throwing', async () => {
    const m = createMetrics({ version: 'x', collectProcess: false });
    m.observeCheck('allow', 'ok', Number.NaN);
    m.observeCheck('allow', 'ok', -1);
    m.countTokenCache('hit', Number.POSITIVE_INFINITY);
    const text = await m.render();
    expect(sample(text, 'entra_sidecar_ext_authz_check_duration_seconds_count{decision="allow"}')).to.equal(2);
    expect(sample(text, 'entra_sidecar_ext_authz_check_duration_seconds_sum{decision="allow"}')).to.equal(0);
    expect(sample(text, 'entra_sidecar_token_cache_hits_total')).to.equal(0);
  });
});

describe('metrics: NOOP_METRICS', () => {
  it('accepts every call and renders nothing', async () => {
    observeKnownSequence(NOOP_METRICS);
    expect(await NOOP_METRICS.render()).to.equal('');
    expect((await NOOP_METRICS.registry.metrics()).trim()).to.equal('');
  });
});
