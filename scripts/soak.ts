/**
 * `npm run soak [-- --seconds N]` (default 60): mixed traffic on every route and on the ext_authz
 * Check against the BUILT sidecar, run with the Docker image's NODE_OPTIONS heap caps and malloc
 * setting (bench/setup.ts imageEnv()), and the emulator, sampling the sidecar's RSS, event-loop lag and
 * handle count from /metrics. Exits 1 on any unexpected answer or on a growth trend (least-squares
 * slope of RSS over the second half, or handles that keep climbing). Bounded and self-stopping.
 * test/abuse/soak.test.ts runs the same module for ~10 s.
 */
import { pathToFileURL } from 'node:url';
import { call } from '../test/helpers/e2e.js';
import { checkWith, decision, eventually, sample, scrape, startDownstream, startStack, type Stack } from '../test/faults/harness.js';
import { imageEnv } from '../bench/setup.js';

export interface SoakOptions {
  readonly seconds: number;
  /** Concurrent client loops. */
  readonly concurrency?: number;
  /** RSS growth allowed over the second half, as a least-squares slope (bytes per second). */
  readonly maxRssSlopeBytesPerSec?: number;
  /**
   * Keep going past `seconds` until every kind of request was sent at least this often (so a slow
   * machine still covers every route), stopping at `maxSeconds` at the latest. Default 0.
   */
  readonly minPerKind?: number;
  /** Hard stop when minPerKind is not yet met (default: 3 × seconds). */
  readonly maxSeconds?: number;
  readonly log?: (line: string) => void;
}

export interface SoakSample {
  readonly atMs: number;
  readonly rssBytes: number;
  readonly lagSeconds: number;
  readonly handles: number;
}

export interface SoakResult {
  readonly requests: number;
  /** Wall time of the traffic, in seconds (≥ `seconds`; more when minPerKind had to be met). */
  readonly seconds: number;
  readonly errors: readonly string[];
  readonly byKind: Record<string, number>;
  readonly samples: readonly SoakSample[];
  readonly rssSlopeBytesPerSec: number;
  readonly handlesGrowth: number;
  readonly maxLagMs: number;
  readonly latencyMs: { p50: number; p99: number; max: number };
  readonly ok: boolean;
  readonly reasons: readonly string[];
  readonly sidecarLines: readonly string[];
  readonly tokens: readonly string[];
  readonly secrets: readonly string[];
}

/** Least-squares slope of y over x. */
export function slope(points: ReadonlyArray<readonly [number, number]>): number {
  const n = points.length;
  if (n < 2) return 0;
  let sx = 0;
  let sy = 0;
  for (const [x, y] of points) {
    sx += x;
    sy += y;
  }
  const mx = sx / n;
  const my = sy / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Runs the soak; never throws for a failed run (see `ok`/`reasons`), only for a failed setup. */
export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const log = opts.log ?? (() => {});
  const concurrency = opts.concurrency ?? 8;
  const maxSlope = opts.maxRssSlopeBytesPerSec ?? 512 * 1024;
  const api = await startDownstream();
  let stack: Stack | undefined;
  try {
    stack = await startStack({
      // As the image runs it: the Dockerfile's heap caps (NODE_OPTIONS) and malloc setting.
      ...imageEnv(),
      Sidecar__Outbound__TimeoutMs: '5000',
      Sidecar__LogLevel: 'warn',
      DownstreamApis__orders__Scopes__0: 'api://downstream/read',
      DownstreamApis__app__Scopes__0: 'api://downstream/.default',
      DownstreamApis__app__RequestAppToken: 'true',
      DownstreamApis__items__BaseUrl: `${api.origin}/items`,
      DownstreamApis__items__Scopes__0: 'api://downstream/read',
      DownstreamApis__items__HttpMethod: 'Post',
      'Sidecar__ExtAuthz__ClaimsToHeaders__x-entra-oid': 'oid',
    });
    const s = stack;
    if (!(await eventually(async () => (await call(`${s.management}/readyz`)).status === 200, 15_000))) throw new Error('the soak sidecar never became ready (/readyz)');
    const users = await Promise.all(Array.from({ length: 40 }, () => s.emu.mint({ kind: 'user', scp: 'access_as_user' })));
    const expired = await s.emu.mint({ kind: 'user', expiresInSec: -3600 });
    s.tokens.push(...users, expired);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)];
    const url = s.sidecar.url;

    /** Each kind: one request and its expected outcome (true = as expected). */
    const kinds: Record<string, () => Promise<boolean>> = {
      validate: async () => (await call(`${url}/Validate`, { token: pick(users) })).status === 200,
      validateFresh: async () => {
        const t = await s.emu.mint({ kind: 'user', scp: 'access_as_user' });
        return (await call(`${url}/Validate`, { token: t })).status === 200;
      },
      validateExpired: async () => (await call(`${url}/Validate`, { token: expired })).status === 401,
      obo: async () => {
        const r = await call(`${url}/AuthorizationHeader/orders`, { token: pick(users) });
        return r.status === 200;
      },
      appToken: async () => (await call(`${url}/AuthorizationHeaderUnauthenticated/app`)).status === 200,
      downstream: async () => {
        const r = await call(`${url}/DownstreamApi/items`, { method: 'POST', token: pick(users), body: '{"q":1}', headers: { 'content-type': 'application/json' } });
        return r.status === 200 && r.json().statusCode === 200;
      },
      checkValidate: async () => decision(await checkWith(s, { headers: { authorization: `Bearer ${pick(users)}` } })) === 'allow',
      checkObo: async () => decision(await checkWith(s, { headers: { authorization: `Bearer ${pick(users)}` }, contextExtensions: { downstream_api: 'orders' } })) === 'allow',
      checkDeny: async () => decision(await checkWith(s, {})) === 'credential_missing',
      healthz: async () => (await call(`${url}/healthz`)).status === 200,
    };
    const names = Object.keys(kinds);
    const byKind: Record<string, number> = Object.fromEntries(names.map((n) => [n, 0]));
    const errors: string[] = [];
    const latencies: number[] = [];
    const samples: SoakSample[] = [];
    const t0 = Date.now();
    const end = t0 + opts.seconds * 1000;
    const minPerKind = opts.minPerKind ?? 0;
    const hardEnd = t0 + (opts.maxSeconds ?? opts.seconds * 3) * 1000;
    const short = (): string[] => names.filter((n) => byKind[n] < minPerKind);
    /** Runs until `seconds` passed and every kind met minPerKind (or the hard stop). */
    const running = (): boolean => {
      const now = Date.now();
      return now < end || (now < hardEnd && short().length > 0);
    };
    let workersDone = false;

    const sampler = (async () => {
      while (!workersDone) {
        try {
          const text = await scrape(s);
          samples.push({
            atMs: Date.now() - t0,
            rssBytes: sample(text, 'process_resident_memory_bytes') ?? 0,
            lagSeconds: sample(text, 'nodejs_eventloop_lag_p99_seconds') ?? sample(text, 'nodejs_eventloop_lag_seconds') ?? 0,
            handles: sample(text, 'nodejs_active_handles_total') ?? 0,
          });
        } catch (err) {
          errors.push(`metrics scrape failed: ${(err as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    const worker = async () => {
      while (running()) {
        // Past `seconds`, only the kinds still short of minPerKind.
        const missing = Date.now() < end ? [] : short();
        const kind = pick(missing.length > 0 ? missing : names);
        const started = performance.now();
        try {
          if (!(await kinds[kind]())) errors.push(`${kind}: unexpected answer`);
        } catch (err) {
          errors.push(`${kind}: ${(err as Error).message}`);
        }
        latencies.push(performance.now() - started);
        byKind[kind]++;
        if (errors.length > 50) return;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    workersDone = true;
    await sampler;
    const seconds = (Date.now() - t0) / 1000;
    if (s.sidecar.child.exitCode !== null) errors.push(`the sidecar exited with ${s.sidecar.child.exitCode}`);

    const secondHalf = samples.filter((x) => x.atMs >= (opts.seconds * 1000) / 2);
    const rssSlope = slope(secondHalf.map((x) => [x.atMs / 1000, x.rssBytes] as const));
    const handlesGrowth = secondHalf.length >= 2 ? secondHalf[secondHalf.length - 1].handles - Math.min(...secondHalf.map((x) => x.handles)) : 0;
    const maxLagMs = Math.max(0, ...samples.map((x) => x.lagSeconds * 1000));
    const sorted = [...latencies].sort((a, b) => a - b);
    const reasons: string[] = [];
    if (errors.length > 0) reasons.push(`${errors.length} unexpected answers (first: ${errors[0]})`);
    if (rssSlope > maxSlope) reasons.push(`RSS grows by ${Math.round(rssSlope / 1024)} KiB/s over the second half (limit ${Math.round(maxSlope / 1024)} KiB/s)`);
    if (handlesGrowth > 64) reasons.push(`active handles grew by ${handlesGrowth} over the second half`);
    if (samples.length < 2) reasons.push('too few metric samples');
    if (errors.length <= 50 && short().length > 0) reasons.push(`after ${seconds.toFixed(1)} s, sent fewer than ${minPerKind} of: ${short().join(', ')}`);
    const result: SoakResult = {
      requests: latencies.length,
      seconds,
      errors,
      byKind,
      samples,
      rssSlopeBytesPerSec: rssSlope,
      handlesGrowth,
      maxLagMs,
      latencyMs: { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? 0 },
      ok: reasons.length === 0,
      reasons,
      sidecarLines: s.sidecar.lines,
      tokens: s.tokens,
      secrets: [],
    };
    const last = samples.at(-1);
    log(
      `soak: ${result.requests} requests in ${seconds.toFixed(1)} s (${Math.round(result.requests / seconds)}/s), ` +
        `p50 ${result.latencyMs.p50.toFixed(1)} ms, p99 ${result.latencyMs.p99.toFixed(1)} ms, ` +
        `RSS ${Math.round((samples[0]?.rssBytes ?? 0) / 1048576)} → ${Math.round((last?.rssBytes ?? 0) / 1048576)} MiB (slope ${Math.round(rssSlope / 1024)} KiB/s), ` +
        `event-loop p99 lag ≤ ${maxLagMs.toFixed(1)} ms, handles ${samples[0]?.handles ?? 0} → ${last?.handles ?? 0}; ${result.ok ? 'OK' : 'FAILED: ' + reasons.join('; ')}`,
    );
    return result;
  } finally {
    await stack?.close();
    if (stack) await stack.emu.close();
    await api.close();
  }
}

async function cli(): Promise<void> {
  const i = process.argv.indexOf('--seconds');
  const seconds = i >= 0 ? Number(process.argv[i + 1]) : 60;
  if (!Number.isFinite(seconds) || seconds <= 0) {
    process.stderr.write('usage: npm run soak -- --seconds N\n');
    process.exit(2);
  }
  const result = await runSoak({ seconds, log: (l) => process.stdout.write(l + '\n') });
  process.stdout.write(JSON.stringify({ requests: result.requests, byKind: result.byKind, latencyMs: result.latencyMs, rssSlopeBytesPerSec: Math.round(result.rssSlopeBytesPerSec), maxLagMs: result.maxLagMs, handlesGrowth: result.handlesGrowth, ok: result.ok, reasons: result.reasons }) + '\n');
  process.exit(result.ok ? 0 : 1);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await cli();
