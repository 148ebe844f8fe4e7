/**
 * The five scenarios of `npm run bench`. Each measures the sidecar and its baseline in the same
 * run, alternating them round by round (A B A B …) after a warm-up, and reports medians with
 * min/max plus whether the issue's targets were met.
 */
import { performance } from 'node:perf_hooks';
import { cpuSeconds, rssFileMb, rssMb, sleep, type RunningServer } from './processes.js';
import { BUNDLED_AT_START } from '../src/build-bundle.js';
import type { LoadgenResult } from './loadgen.js';
import type { Figure, ScenarioResult, TargetCheck } from './report.js';
import { pairedRatios, slope, spread, type Spread } from './stats.js';
import { runH2load, runWrk, type SaturationResult } from './tools.js';
import {
  APP_TOKEN_API,
  INJECTED_HEADER,
  OBO_API,
  mintUserTokens,
  podMemoryLimitMb,
  expectedAnswer,
  downstreamHeader,
  runLoadgen,
  startBaselineEcho,
  startBaselineGrpc,
  startBaselineHttp,
  startBenchSidecar,
  startVerifyOnlyGrpc,
  writeEmulatorJwks,
  waitReady,
  writeCheckFrames,
  imageEnv,
  type BenchContext,
  type BenchSidecar,
} from './setup.js';
import { createAuthorizationClient } from '../src/extauthz/protos.js';
import { check } from '../test/extauthz/fixtures.js';
import { CHECK_PATH, envoyCheckRequest, type ExpectedInjection } from './wire.js';

/** Processes and tokens that several scenarios share within one run (started on first use). */
export class SharedFixtures {
  private sidecarP: Promise<BenchSidecar> | undefined;
  private baselineP: Promise<RunningServer & { grpcUrl: string }> | undefined;
  private warmTokenP: Promise<string> | undefined;
  private poolP: Promise<string[]> | undefined;
  readonly ctx: BenchContext;

  constructor(ctx: BenchContext) {
    this.ctx = ctx;
  }

  /** The sidecar under test, ready (signing keys loaded). */
  sidecar(): Promise<BenchSidecar> {
    this.sidecarP ??= (async () => {
      const s = await startBenchSidecar(this.ctx, {}, this.ctx.profileDir ? ['--cpu-prof', '--cpu-prof-dir', this.ctx.profileDir] : []);
      await waitReady(s);
      return s;
    })();
    return this.sidecarP;
  }

  baselineGrpc(): Promise<RunningServer & { grpcUrl: string }> {
    this.baselineP ??= startBaselineGrpc(this.ctx);
    return this.baselineP;
  }

  /** One valid user token that every warm scenario reuses. */
  warmToken(): Promise<string> {
    this.warmTokenP ??= this.ctx.emu.mint({ kind: 'user', scp: 'access_as_user' });
    return this.warmTokenP;
  }

  /** Distinct valid tokens, each to be sent once (first sight); minted once per run. */
  tokenPool(): Promise<string[]> {
    const b = this.ctx.budget;
    this.poolP ??= (async () => {
      // The first-sight rounds, the unmeasured warm round before them, and the warm-up.
      const n = b.firstSightPerRound * (b.firstSightRounds + 1) + FIRST_SIGHT_WARMUP;
      const t0 = performance.now();
      this.ctx.log(`minting ${n} distinct tokens at the emulator…`);
      const tokens = await mintUserTokens(this.ctx.emu, n, (d) => this.ctx.log(`  ${d}/${n}`));
      this.ctx.log(`minted in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      return tokens;
    })();
    return this.poolP;
  }

  async close(): Promise<void> {
    const all = await Promise.allSettled([this.sidecarP, this.baselineP]);
    await Promise.all(all.map((r) => (r.status === 'fulfilled' && r.value ? r.value.stop() : undefined)));
  }
}

/** Distinct tokens each first-sight server handles first, before the unmeasured warm round. */
const FIRST_SIGHT_WARMUP = 500;
/** Soak rate: first-sight Checks a loaded 2-core machine sustains with room to spare, so RSS reflects state, not queues. */
const SOAK_RATE = 500;
const WARM_CONTEXT = Object.freeze({ downstream_api: APP_TOKEN_API });
const OBO_CONTEXT = Object.freeze({ downstream_api: OBO_API });
/** Share of the pod's memory limit (k8s/deployment.yaml) the sidecar may use with every cache full: the rest is headroom. */
const POD_LIMIT_SHARE = 0.8;
const H2LOAD_CLIENTS = 4;
/** The do-nothing server run with the image's NODE_OPTIONS and malloc setting (check-warm's third candidate). */
const NOP_IMAGE = 'nop-grpc, image flags';
/** The verify-only reference run with the image's environment (check-first-sight's fourth candidate). */
const VERIFY_IMAGE = 'verify-only, image flags';
const H2LOAD_STREAMS = 8;
const WRK_CONNECTIONS = 16;
/** Sidecar:Validation:VerifiedTokenCacheSize's default: the callers a full cache holds. */
const FULL_CACHE_CALLERS = 10_000;
/** Pause before each measured wrk round (see httpWarm). */
const HTTP_SETTLE_MS = 1000;

function figure(figureName: string, candidate: string, unit: string, values: number[]): Figure {
  return { figure: figureName, candidate, unit, value: spread(values) };
}

/** Errors plus wrong answers of load generator runs. */
function errorsOf(runs: readonly LoadgenResult[]): number {
  return runs.reduce((a, x) => a + x.errors + x.incorrect, 0);
}

/**
 * Whether a ratio target is met: never when the ratio has invalid rounds or a baseline it is taken
 * against had errors (a failing baseline moves the ratio, so the ratio is not judged).
 */
function ratioMet(ratio: Spread, baselineErrors: number, ok: (median: number) => boolean): boolean {
  return !ratio.invalid && baselineErrors === 0 && ok(ratio.median);
}

/** A ratio target's measured text, marked INVALID when a baseline failed or rounds were invalid. */
function ratioText(ratio: Spread, baselineErrors: number): string {
  const text = `${ratio.median.toFixed(2)}× (${ratio.min.toFixed(2)}–${ratio.max.toFixed(2)})`;
  const why = [...(baselineErrors ? [`baseline errors: ${baselineErrors}`] : []), ...(ratio.invalid ? [`${ratio.invalid} rounds without a value`] : [])];
  return why.length ? `INVALID (${why.join('; ')}): ${text}` : text;
}

/** The target every scenario with baselines reports: their errors, which make the ratios invalid. */
function baselineTarget(byName: Record<string, number>): TargetCheck {
  const total = Object.values(byName).reduce((a, n) => a + n, 0);
  return { target: 'zero errors in the baselines (else their ratios are invalid)', measured: Object.entries(byName).map(([k, n]) => `${k} ${n}`).join(', '), met: total === 0 };
}

/**
 * The share of its core a server was busy in each round, in %: requests per second × CPU per
 * request. Well under 100 % means the client, not the server, set the pace of that round.
 */
function busyPercent(rps: readonly number[], cpuUs: readonly number[]): number[] {
  return rps.map((r, i) => (r * cpuUs[i]) / 1e4);
}

/** Figures that say how saturated each server was, and the ratio of their CPU per request (the other view of the saturation ratio). */
function cpuFigures(sidecarName: string, sidecarRps: readonly number[], sidecarCpu: readonly number[], nopRps: readonly number[], nopCpu: readonly number[]): Figure[] {
  return [
    figure('server busy (share of its core)', 'nop-grpc', '%', busyPercent(nopRps, nopCpu)),
    figure('server busy (share of its core)', sidecarName, '%', busyPercent(sidecarRps, sidecarCpu)),
    { figure: 'CPU per request ratio', candidate: `nop µs / ${sidecarName} µs`, unit: '×', value: spread(pairedRatios(nopCpu, sidecarCpu)) },
  ];
}

/** A note when cpuFigures() show a server busy less than 90 % of the time (the client set the pace). */
function clientPaceNote(cpu: readonly Figure[]): string[] {
  const [nopBusy, sideBusy, cpuRatio] = cpu.map((f) => f.value.median);
  if (nopBusy >= 90 && sideBusy >= 90) return [];
  return [
    `the servers were busy ${nopBusy.toFixed(0)} % (NOP) and ${sideBusy.toFixed(0)} % (sidecar) of their core: the client, not the servers, set the pace, so the throughput ratio is not a saturation ratio; by CPU per request the sidecar is at ${cpuRatio.toFixed(2)}× the NOP.`,
  ];
}

function ms(n: number): string {
  return `${n.toFixed(2)} ms`;
}

/** The load generator's fields for an expected injection. */
function injected(expect: ExpectedInjection | undefined): { injectedHeader?: string; injectedValue?: string } {
  return expect ? { injectedHeader: expect.header, ...(expect.value !== undefined ? { injectedValue: expect.value } : {}) } : {};
}

/** A correctness probe: `count` warm Checks, every answer decoded; returns errors + wrong answers. */
async function probeChecks(ctx: BenchContext, url: string, framesFile: string, expect: ExpectedInjection | undefined, count = 300): Promise<LoadgenResult> {
  return runLoadgen(ctx, { target: url, mode: 'closed', connections: 2, framesFile, concurrency: 8, count, sampleEvery: 1, ...injected(expect) });
}

/** One Check with `token` over a grpc-js client (the tests' `check()`); resolves with the CheckResponse's status code. */
async function checkOnce(url: string, token: string): Promise<number> {
  const client = createAuthorizationClient(url.replace(/^http:\/\//, ''));
  try {
    return Number((await check(client, envoyCheckRequest({ token, contextExtensions: WARM_CONTEXT }), 10_000)).status?.code ?? 0);
  } finally {
    client.close();
  }
}

/**
 * The unrecorded lead-in of each open-loop latency job, at the job's own rate. The load generator
 * is a fresh process per job: with 1 s its own first seconds still showed in the tail (the TCP echo
 * floor at 1,000 req/s in 2 s windows: p99 2.4–3.3 ms after 1 s, 1.1–2.9 ms after 3 s).
 */
const LATENCY_LEAD_IN_MS = 3000;

/** Requests in flight in the Node client's closed loop: as many as h2load keeps (connections × streams). */
const CLOSED_LOOP_IN_FLIGHT = H2LOAD_CLIENTS * H2LOAD_STREAMS;

/** `count` Checks from the frames file, closed loop over H2LOAD_CLIENTS connections, every answer scanned for a deny, every 25th decoded. */
function closedLoop(ctx: BenchContext, url: string, framesFile: string, count: number, expect?: ExpectedInjection): Promise<LoadgenResult> {
  return runLoadgen(ctx, { target: url, mode: 'closed', connections: H2LOAD_CLIENTS, framesFile, concurrency: CLOSED_LOOP_IN_FLIGHT, count, sampleEvery: 25, ...injected(expect) });
}

/** Sidecar CPU µs per answered request over a measured interval. */
function cpuPerRequestUs(cpuBefore: number, cpuAfter: number, requests: number): number {
  return requests > 0 ? ((cpuAfter - cpuBefore) * 1e6) / requests : Number.NaN;
}

/**
 * Runs `work` with the processes `pids` stopped (SIGSTOP), and continues them after, whatever
 * happens. For latency rounds: an idle candidate on the same core still wakes up (timers, V8's
 * memory-reducing collections after a burst of load) and the measured server paid for it.
 */
async function whileStopped<T>(pids: readonly number[], work: () => Promise<T>): Promise<T> {
  const stopped: number[] = [];
  try {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGSTOP');
        stopped.push(pid);
      } catch (err) {
        // Gone already: nothing to stop (its own rounds fail and count as errors).
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      }
    }
    return await work();
  } finally {
    for (const pid of stopped) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // Exited while stopped (SIGKILL): nothing to continue.
      }
    }
  }
}

/**
 * The rounds of check-first-sight over `candidates`: first an unmeasured warm round, then
 * `measured` rounds, alternating the given order and its reverse (the warm round is the reverse, so
 * the first measured round has the given order and every round continues the alternation).
 */
export function firstSightSchedule<T>(candidates: readonly T[], measured: number): Array<{ measured: boolean; order: T[] }> {
  const reversed = [...candidates].reverse();
  return Array.from({ length: measured + 1 }, (_, r) => ({ measured: r > 0, order: r % 2 === 1 ? [...candidates] : [...reversed] }));
}

/** `list` with round `r`'s first candidate in front: each candidate goes first in turn. */
function rotated<T>(list: readonly T[], r: number): T[] {
  const first = r % list.length;
  return [...list.slice(first), ...list.slice(0, first)];
}

interface Candidate {
  name: string;
  pid: number;
  url: string;
  expect: ExpectedInjection | undefined;
}

// ---------------------------------------------------------------------------------------------
// 1. ext_authz Check, warm

/** Scenario 1: warm Check (cached verification, cached app token, header injected) vs the NOP server. */
export async function checkWarm(shared: SharedFixtures): Promise<Omit<ScenarioResult, 'durationSec'>> {
  const { ctx } = shared;
  const b = ctx.budget;
  const [sidecar, baseline, token] = await Promise.all([shared.sidecar(), shared.baselineGrpc(), shared.warmToken()]);
  const frames = await writeCheckFrames(ctx, 'warm', [token], WARM_CONTEXT);
  // The exact header a warm allow must inject: the app token the sidecar holds for the route.
  const warmExpect: ExpectedInjection = { header: INJECTED_HEADER, value: await downstreamHeader(sidecar, token, APP_TOKEN_API) };
  const candidates: Candidate[] = [
    { name: 'nop-grpc', pid: baseline.pid, url: baseline.grpcUrl, expect: undefined },
    { name: 'sidecar', pid: sidecar.pid, url: sidecar.grpcUrl, expect: warmExpect },
  ];
  const notes: string[] = [];
  const targets: TargetCheck[] = [];
  const figures: Figure[] = [];

  // A third saturation candidate: the same do-nothing server with the image's NODE_OPTIONS and
  // malloc setting. It tells the cost of the image's heap caps (finding 31: the whole gap on Node 24)
  // from the cost of the sidecar's own work; the target stays against V8's defaults. It runs for the
  // probes and the saturation rounds only, and is gone before the latency jobs, where an idle
  // neighbour on the core would add its own wake-ups.
  const image = imageEnv();
  const nopImage = await startBaselineGrpc(ctx, image);
  const saturated: Candidate[] = [...candidates, { name: NOP_IMAGE, pid: nopImage.pid, url: nopImage.grpcUrl, expect: undefined }];
  const sat: Record<string, SaturationResult[]> = Object.fromEntries(saturated.map((c) => [c.name, []]));
  const cpuUs: Record<string, number[]> = Object.fromEntries(saturated.map((c) => [c.name, []]));
  const answerBytes: Record<string, number> = {};
  const warmupErrors: Record<string, number> = Object.fromEntries(saturated.map((c) => [c.name, 0]));
  let probesBefore: LoadgenResult[];
  try {
    // Correctness first (this also fills the sidecar's caches): every answer decoded. One server at
    // a time: the sidecar's first Checks wait for its first token acquisition, and run beside the
    // other servers' probes on the same core that took up to 1.2 s, past the frames' 1 s deadline.
    probesBefore = [];
    for (const c of saturated) probesBefore.push(await probeChecks(ctx, c.url, frames, c.expect));
    for (const [i, p] of probesBefore.entries()) {
      if (p.errors || p.incorrect) notes.push(`${saturated[i].name}: correctness probe before load: ${p.errors} errors, ${p.incorrect} wrong answers (${p.firstError ?? ''})`);
    }
    // h2load cannot look inside an answer (a deny is HTTP 200, grpc-status 0): each candidate's
    // allow is fetched once, and every h2load run must add up to exactly that many DATA bytes per answer.
    for (const c of saturated) answerBytes[c.name] = (await expectedAnswer(c.url, frames, c.expect)).length;

    // Saturation (closed loop, h2load), each candidate first in turn after one warm-up each.
    ctx.log(`check-warm: saturation, ${b.rounds} rounds × ${b.saturationSec} s per candidate`);
    const h2 = (c: Candidate, durationSec: number, warmupSec: number, onMeasuredStart?: () => void) =>
      runH2load(ctx.place.load, { url: c.url + CHECK_PATH, bodyFile: frames, durationSec, warmupSec, clients: H2LOAD_CLIENTS, streamsPerClient: H2LOAD_STREAMS, bytesPerAnswer: answerBytes[c.name] }, onMeasuredStart);
    for (const c of saturated) warmupErrors[c.name] = (await h2(c, b.warmupSec, 1)).errors;
    for (let r = 0; r < b.rounds; r++) {
      for (const c of rotated(saturated, r)) {
        let cpu0 = Number.NaN;
        // A 1 s h2load warm-up runs first; CPU is read over the measured h2load run only.
        const res = await h2(c, b.saturationSec, 1, () => (cpu0 = cpuSeconds(c.pid)));
        const cpu1 = cpuSeconds(c.pid);
        cpuUs[c.name].push(cpuPerRequestUs(cpu0, cpu1, res.requests));
        sat[c.name].push(res);
      }
    }
  } finally {
    await nopImage.stop();
  }
  const rps = (n: string) => sat[n].map((s) => s.rps);
  const satErrorsOf = (n: string) => sat[n].reduce((a, s) => a + s.errors, 0) + warmupErrors[n];
  const satErrors = satErrorsOf('sidecar');
  figures.push(figure('saturation', 'nop-grpc', 'req/s', rps('nop-grpc')));
  figures.push(figure('saturation', 'sidecar', 'req/s', rps('sidecar')));
  const ratio = spread(pairedRatios(rps('sidecar'), rps('nop-grpc')));
  figures.push({ figure: 'saturation ratio', candidate: 'sidecar / nop', unit: '×', value: ratio });
  figures.push(figure('server CPU per request', 'nop-grpc', 'µs', cpuUs['nop-grpc']));
  figures.push(figure('server CPU per request', 'sidecar', 'µs', cpuUs.sidecar));
  const cpu = cpuFigures('sidecar', rps('sidecar'), cpuUs.sidecar, rps('nop-grpc'), cpuUs['nop-grpc']);
  figures.push(...cpu);
  notes.push(...clientPaceNote(cpu));
  figures.push(figure('saturation', NOP_IMAGE, 'req/s', rps(NOP_IMAGE)));
  figures.push(figure('server CPU per request', NOP_IMAGE, 'µs', cpuUs[NOP_IMAGE]));
  const imageRatio = spread(pairedRatios(rps('sidecar'), rps(NOP_IMAGE)));
  figures.push({ figure: 'saturation ratio', candidate: `sidecar / ${NOP_IMAGE}`, unit: '×', value: imageRatio });
  figures.push({ figure: 'saturation ratio', candidate: `${NOP_IMAGE} / nop`, unit: '×', value: spread(pairedRatios(rps(NOP_IMAGE), rps('nop-grpc'))) });
  notes.push(`${NOP_IMAGE}: the do-nothing server run with the image's environment (${Object.entries(image).map(([k, v]) => `${k}=${v}`).join(' ')}), saturation rounds only. Against it the sidecar reads ${imageRatio.median.toFixed(2)}×: what is left once the image's heap caps are charged to both is the sidecar's own work. The target is against the NOP with V8's defaults.`);
  // Judged once the NOP's latency rounds are in too (its errors there invalidate it as well), in this place of the table.
  const satTargetAt = targets.length;

  // Fixed-rate latency (open loop, measured from the intended send time), with the TCP echo floor
  // beside the two servers: what the host and Node's event loop alone cost at the same rate.
  ctx.log(`check-warm: open-loop latency at ${b.latencyRates.join('/')} req/s, ${b.latencyRounds} rounds × ${b.latencySec} s`);
  const echo = await startBaselineEcho(ctx);
  const timed: Array<Candidate & { protocol: 'grpc' | 'echo' }> = [
    ...candidates.map((c) => ({ ...c, protocol: 'grpc' as const })),
    { name: 'tcp-echo', pid: echo.pid, url: echo.echoUrl, expect: undefined, protocol: 'echo' },
  ];
  const latency: Record<string, Record<number, LoadgenResult[]>> = { 'nop-grpc': {}, sidecar: {}, 'tcp-echo': {} };
  try {
    for (const rate of b.latencyRates) {
      for (let r = 0; r < b.latencyRounds; r++) {
        // A different candidate first in each round.
        for (const c of rotated(timed, r)) {
          const others = timed.filter((o) => o !== c).map((o) => o.pid);
          const res = await whileStopped(others, () => runLoadgen(ctx, {
            target: c.url,
            protocol: c.protocol,
            mode: 'open',
            connections: H2LOAD_CLIENTS,
            ...(c.protocol === 'grpc' ? { framesFile: frames } : {}),
            rate,
            durationMs: b.latencySec * 1000,
            warmupMs: LATENCY_LEAD_IN_MS,
            sampleEvery: 50,
            ...injected(c.expect),
          }));
          (latency[c.name][rate] ??= []).push(res);
        }
      }
      for (const c of timed) {
        const rs = latency[c.name][rate];
        for (const [key, label] of [['p50', 'p50'], ['p90', 'p90'], ['p99', 'p99'], ['p999', 'p99.9']] as const) {
          figures.push(figure(`${label} @ ${rate} req/s`, c.name, 'ms', rs.map((x) => x.latencyMs[key])));
        }
        const lag = Math.max(...rs.map((x) => x.maxSendLagMs));
        if (lag > 20) notes.push(`${c.name} @ ${rate} req/s: the load generator fell up to ${lag.toFixed(0)} ms behind its schedule (that delay is charged to the server).`);
      }
    }
  } finally {
    await echo.stop();
  }
  const echoErrors = Object.values(latency['tcp-echo']).flat().reduce((a, x) => a + x.errors + x.incorrect, 0);
  if (echoErrors > 0) notes.push(`tcp-echo: ${echoErrors} errors (${Object.values(latency['tcp-echo']).flat().find((x) => x.firstError)?.firstError ?? ''}): its figures are not a floor.`);
  const latErrors = Object.values(latency.sidecar).flat().reduce((a, x) => a + x.errors + x.incorrect, 0);
  const nopLatErrors = errorsOf(Object.values(latency['nop-grpc']).flat());
  const baselineErrors = {
    'nop-grpc': satErrorsOf('nop-grpc') + probesBefore[0].errors + probesBefore[0].incorrect + nopLatErrors,
    [NOP_IMAGE]: satErrorsOf(NOP_IMAGE) + probesBefore[2].errors + probesBefore[2].incorrect,
    'tcp-echo': echoErrors,
  };
  if (baselineErrors['nop-grpc'] > 0) notes.push(`nop-grpc: ${baselineErrors['nop-grpc']} errors (saturation ${satErrorsOf('nop-grpc')}, open loop ${nopLatErrors}): the ratios against it are invalid.`);
  if (baselineErrors[NOP_IMAGE] > 0) notes.push(`${NOP_IMAGE}: ${baselineErrors[NOP_IMAGE]} errors: the ratios against it are invalid.`);
  targets.splice(satTargetAt, 0, { target: 'warm Check saturation ≥ 0.90× NOP', measured: ratioText(ratio, baselineErrors['nop-grpc']), met: ratioMet(ratio, baselineErrors['nop-grpc'], (m) => m >= 0.9) });
  const at1000 = latency.sidecar[1000];
  if (at1000) {
    const p50 = spread(at1000.map((x) => x.latencyMs.p50));
    const p99 = spread(at1000.map((x) => x.latencyMs.p99));
    targets.push({ target: 'p50 ≤ 0.5 ms at 1,000 req/s', measured: ms(p50.median), met: p50.median <= 0.5 });
    const p99Of = (name: string) => {
      const runs = latency[name][1000] ?? [];
      const bad = errorsOf(runs);
      return `${ms(spread(runs.map((x) => x.latencyMs.p99)).median)}${bad ? ` INVALID: ${bad} errors` : ''}`;
    };
    targets.push({ target: 'p99 ≤ 3 ms at 1,000 req/s', measured: `${ms(p99.median)} (NOP ${p99Of('nop-grpc')}, TCP echo floor ${p99Of('tcp-echo')})`, met: p99.median <= 3 });
  }

  const probeAfter = await probeChecks(ctx, sidecar.grpcUrl, frames, warmExpect);
  const totalErrors = satErrors + latErrors + probesBefore[1].errors + probesBefore[1].incorrect + probeAfter.errors + probeAfter.incorrect;
  targets.push({
    target: 'zero errors (warm Check)',
    measured: `${totalErrors} (h2load ${satErrors}, every answer's bytes checked against the allow's ${answerBytes.sidecar}; open loop ${latErrors}, every answer scanned for a deny; ${probesBefore[1].sampled + probeAfter.sampled + Object.values(latency.sidecar).flat().reduce((a, x) => a + x.sampled, 0)} answers decoded and compared with the expected downstream token)`,
    met: totalErrors === 0,
  });
  targets.push(baselineTarget(baselineErrors));
  notes.push(`h2load: ${H2LOAD_CLIENTS} connections × ${H2LOAD_STREAMS} streams, 1 s warm-up per round (a separate h2load run: its errors count); every run's DATA bytes must be exactly its answers × the candidate's allow (${Object.entries(answerBytes).map(([k, n]) => `${k} ${n} B`).join(', ')}); open loop: ${H2LOAD_CLIENTS} connections, ${LATENCY_LEAD_IN_MS / 1000} s unrecorded lead-in, every 50th answer decoded.`);
  notes.push('tcp-echo (open loop only): a Node process that echoes 8-byte messages over TCP and does nothing else, pinned like the servers; every echo is compared with what was sent. It is the latency floor the host and Node\'s event loop set at each rate (bench/README.md finding 32).');
  return {
    name: 'check-warm',
    title: 'ext_authz Check, warm (cached verification + cached app token, header injected) vs do-nothing grpc-js',
    figures,
    targets,
    notes,
    details: {
      saturation: Object.fromEntries(Object.entries(sat).map(([k, v]) => [k, v.map(({ raw: _raw, ...rest }) => rest)])),
      latency,
      probes: { before: probesBefore, after: probeAfter },
      sidecarRssMb: rssMb(sidecar.pid),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// 2. ext_authz Check, first sight of each token

/** Scenario 2: every Check carries a token the sidecar has never seen (full RS256 verification). */
export async function checkFirstSight(shared: SharedFixtures): Promise<Omit<ScenarioResult, 'durationSec'>> {
  const { ctx } = shared;
  const b = ctx.budget;
  const [sidecar, baseline, pool] = await Promise.all([shared.sidecar(), shared.baselineGrpc(), shared.tokenPool()]);
  // The verify-only reference: what any server must do for a new token, and nothing else. Also run
  // with the image's environment, as check-warm's third candidate, so the cost of the image's heap
  // caps is told from the sidecar's own work; the target stays against the NOP with V8's defaults.
  const jwksFile = await writeEmulatorJwks(ctx, pool[0]);
  const image = imageEnv();
  const [verifyOnly, verifyOnlyImage] = await Promise.all([startVerifyOnlyGrpc(ctx, jwksFile), startVerifyOnlyGrpc(ctx, jwksFile, image)]);
  try {
    const per = b.firstSightPerRound;
    const warmFrames = await writeCheckFrames(ctx, 'first-sight-warmup', pool.slice(0, FIRST_SIGHT_WARMUP), WARM_CONTEXT);
    // Round 0 is the warm round, unmeasured; 1…firstSightRounds are measured.
    const roundFrames: string[] = [];
    for (let r = 0; r <= b.firstSightRounds; r++) {
      const slice = pool.slice(FIRST_SIGHT_WARMUP + r * per, FIRST_SIGHT_WARMUP + (r + 1) * per);
      roundFrames.push(await writeCheckFrames(ctx, `first-sight-${r}`, slice, WARM_CONTEXT));
    }
    const concurrency = CLOSED_LOOP_IN_FLIGHT;
    const closed = (url: string, framesFile: string, count: number, expect?: ExpectedInjection) => closedLoop(ctx, url, framesFile, count, expect);
    // Every user's Check on the app-token route injects the same app token.
    const appExpect: ExpectedInjection = { header: INJECTED_HEADER, value: await downstreamHeader(sidecar, await shared.warmToken(), APP_TOKEN_API) };

    // The references must really verify: a forged signature is denied, a valid token allowed.
    const [h, p, sig] = pool[0].split('.');
    const forged = `${h}.${p}.${sig.slice(0, -4)}${sig.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`;
    for (const reference of [verifyOnly, verifyOnlyImage]) {
      const probe = await checkOnce(reference.grpcUrl, forged);
      const valid = await checkOnce(reference.grpcUrl, pool[0]);
      if (probe !== 16 || valid !== 0) throw new Error(`the verify-only reference answered ${probe} to a forged token and ${valid} to a valid one (want 16 and 0)`);
    }

    ctx.log(`check-first-sight: ${b.firstSightRounds} rounds × ${per} distinct tokens`);
    // Warm-up: the sidecar sees the warm-up tokens once (never again); the references get the same requests.
    // Their timings are not used; their errors count.
    const warmUps = {
      sidecar: await closed(sidecar.grpcUrl, warmFrames, FIRST_SIGHT_WARMUP, appExpect),
      nop: await closed(baseline.grpcUrl, warmFrames, FIRST_SIGHT_WARMUP * 4),
      verifyOnly: await closed(verifyOnly.grpcUrl, warmFrames, FIRST_SIGHT_WARMUP),
      verifyOnlyImage: await closed(verifyOnlyImage.grpcUrl, warmFrames, FIRST_SIGHT_WARMUP),
    };
    // One record per server; the NOP gets the same frames, cycled to about as many seconds of load as it needs.
    const measuredServer = (server: RunningServer & { grpcUrl: string }, count: number, expect?: ExpectedInjection) => ({
      server,
      count,
      expect,
      results: [] as LoadgenResult[],
      cpuUs: [] as number[],
      warmRound: undefined as LoadgenResult | undefined,
    });
    const nop = measuredServer(baseline, per * 3);
    const ver = measuredServer(verifyOnly, per);
    const verImage = measuredServer(verifyOnlyImage, per);
    const side = measuredServer(sidecar, per, appExpect);
    // The first round after the warm-up cost every server more CPU per Check than the rounds after
    // it (1.2–3.1×, the NOP too, in every run: finding 35), whatever the warm-up's length. So a
    // whole round runs first, in the alternation's order, and is not counted.
    for (const [r, round] of firstSightSchedule([nop, ver, verImage, side], b.firstSightRounds).entries()) {
      for (const m of round.order) {
        const c0 = cpuSeconds(m.server.pid);
        const res = await closed(m.server.grpcUrl, roundFrames[r], m.count, m.expect);
        if (!round.measured) {
          m.warmRound = res;
          continue;
        }
        m.cpuUs.push(cpuPerRequestUs(c0, cpuSeconds(m.server.pid), res.completed));
        m.results.push(res);
      }
    }
    const rps = (m: { results: LoadgenResult[] }) => m.results.map((x) => x.rps);
    const figures: Figure[] = [
      figure('saturation (Node client)', 'nop-grpc', 'req/s', rps(nop)),
      figure('saturation (Node client)', 'verify-only grpc-js', 'req/s', rps(ver)),
      figure('saturation (Node client)', VERIFY_IMAGE, 'req/s', rps(verImage)),
      figure('saturation (Node client)', 'sidecar first sight', 'req/s', rps(side)),
    ];
    const ratio = spread(pairedRatios(rps(side), rps(nop)));
    const verRatio = spread(pairedRatios(rps(ver), rps(nop)));
    figures.push({ figure: 'saturation ratio', candidate: 'sidecar / nop', unit: '×', value: ratio });
    figures.push({ figure: 'saturation ratio', candidate: 'verify-only / nop', unit: '×', value: verRatio });
    figures.push({ figure: 'saturation ratio', candidate: 'sidecar / verify-only', unit: '×', value: spread(pairedRatios(rps(side), rps(ver))) });
    const imageRatio = spread(pairedRatios(rps(side), rps(verImage)));
    figures.push({ figure: 'saturation ratio', candidate: `sidecar / ${VERIFY_IMAGE}`, unit: '×', value: imageRatio });
    figures.push({ figure: 'saturation ratio', candidate: `${VERIFY_IMAGE} / verify-only`, unit: '×', value: spread(pairedRatios(rps(verImage), rps(ver))) });
    figures.push(figure('server CPU per request', 'nop-grpc', 'µs', nop.cpuUs));
    figures.push(figure('server CPU per request', 'verify-only grpc-js', 'µs', ver.cpuUs));
    figures.push(figure('server CPU per request', VERIFY_IMAGE, 'µs', verImage.cpuUs));
    figures.push(figure('server CPU per request', 'sidecar first sight', 'µs', side.cpuUs));
    const busy = cpuFigures('sidecar first sight', rps(side), side.cpuUs, rps(nop), nop.cpuUs);
    figures.push(busy[0], busy[1], figure('server busy (share of its core)', 'verify-only grpc-js', '%', busyPercent(rps(ver), ver.cpuUs)), busy[2]);
    figures.push({ figure: 'CPU per request ratio', candidate: 'nop µs / verify-only µs', unit: '×', value: spread(pairedRatios(nop.cpuUs, ver.cpuUs)) });
    figures.push(figure(`p50 at saturation (${concurrency} in flight)`, 'sidecar first sight', 'ms', side.results.map((x) => x.latencyMs.p50)));
    figures.push(figure(`p99 at saturation (${concurrency} in flight)`, 'sidecar first sight', 'ms', side.results.map((x) => x.latencyMs.p99)));
    // Errors count in the warm round too: only its timings are left out.
    const answered = (m: { results: LoadgenResult[]; warmRound?: LoadgenResult }) => (m.warmRound ? [m.warmRound, ...m.results] : m.results);
    const errors = errorsOf([warmUps.sidecar, ...answered(side)]);
    const nopErrors = errorsOf([warmUps.nop, ...answered(nop)]);
    const verErrors = errorsOf([warmUps.verifyOnly, ...answered(ver)]);
    const verImageErrors = errorsOf([warmUps.verifyOnlyImage, ...answered(verImage)]);
    const refErrors = nopErrors + verErrors + verImageErrors;
    const notes = [
      `each round sends ${per} tokens never seen before (distinct uti claim, so the verified-token cache cannot hit); the downstream app token stays cached. One more round of the same shape runs first, unmeasured (its errors still count).`,
      `load from the Node load generator (h2load sends one fixed body) with ${concurrency} requests in flight over its own HTTP/2 client (bench/h2client.ts), which keeps a server busy at least 90 % of the time unless a note below says otherwise.`,
      `verify-only grpc-js: the NOP server plus, per Check, the bearer token's header and payload decoded and its RS256 signature verified (a forged one is denied: probed before the load); no other rule, no downstream token. The least any server does for a new token; ${verRatio.median.toFixed(2)}× the NOP here.`,
      `${VERIFY_IMAGE}: the same reference run with the image's environment (${Object.entries(image).map(([k, v]) => `${k}=${v}`).join(' ')}), like the sidecar. Against it the sidecar reads ${imageRatio.median.toFixed(2)}×: what is left once the image's heap caps are charged to both is the sidecar's own work beyond verifying.`,
      ...clientPaceNote(busy),
      ...(refErrors > 0 ? [`the reference servers answered ${refErrors} requests wrongly or not at all (a deny counts): the ratios against them are invalid`] : []),
    ];
    return {
      name: 'check-first-sight',
      title: 'ext_authz Check, first sight of each token (RS256 verify every request) vs do-nothing grpc-js, and a verify-only reference',
      figures,
      targets: [
        { target: 'first-sight Check ≥ 0.70× NOP', measured: ratioText(ratio, nopErrors), met: ratioMet(ratio, nopErrors, (m) => m >= 0.7) },
        { target: 'zero errors (first-sight Check)', measured: `${errors} (every answer scanned for a deny; every 25th decoded and compared with the expected downstream token)`, met: errors === 0 },
        baselineTarget({ 'nop-grpc': nopErrors, 'verify-only grpc-js': verErrors, [VERIFY_IMAGE]: verImageErrors }),
      ],
      notes,
      details: {
        sidecar: side.results,
        nop: nop.results,
        verifyOnly: ver.results,
        verifyOnlyImage: verImage.results,
        warmRound: { sidecar: side.warmRound, nop: nop.warmRound, verifyOnly: ver.warmRound, verifyOnlyImage: verImage.warmRound },
        warmUps,
      },
    };
  } finally {
    await Promise.all([verifyOnly.stop(), verifyOnlyImage.stop()]);
  }
}

// ---------------------------------------------------------------------------------------------
// 3. HTTP /Validate and /AuthorizationHeader, warm

/** http-warm's third candidate: the bare server in a process of the sidecar's weight. */
const WEIGHTED = 'bare node:http, dependencies loaded';

/** Scenario 3: the identity HTTP API, warm, vs a bare node:http server answering a body of the same size. */
export async function httpWarm(shared: SharedFixtures): Promise<Omit<ScenarioResult, 'durationSec'>> {
  const { ctx } = shared;
  const b = ctx.budget;
  const [sidecar, token] = await Promise.all([shared.sidecar(), shared.warmToken()]);
  const headers = { authorization: `Bearer ${token}` };
  // The last pass repeats /Validate once the verified-token cache holds as many other callers as it
  // can by default: a warm request must not get slower with the number of callers (finding 18).
  const routes = [
    { name: '/Validate', path: '/Validate', fullCache: false },
    { name: `/AuthorizationHeader/${APP_TOKEN_API}`, path: `/AuthorizationHeader/${APP_TOKEN_API}`, fullCache: false },
    { name: '/Validate, verified-token cache full', path: '/Validate', fullCache: true },
  ];
  const notes: string[] = [];
  const figures: Figure[] = [];
  const targets: TargetCheck[] = [];
  const details: Record<string, unknown> = {};
  const baselineErrorsByRoute: Record<string, number> = {};
  for (const route of routes) {
    if (route.fullCache) {
      const pool = (await shared.tokenPool()).slice(0, FULL_CACHE_CALLERS);
      ctx.log(`http-warm: filling the verified-token cache with ${pool.length} other callers (each token sent twice over gRPC)`);
      const frames = await writeCheckFrames(ctx, 'full-cache', pool.flatMap((t) => [t, t]), WARM_CONTEXT);
      const fill = await closedLoop(ctx, sidecar.grpcUrl, frames, pool.length * 2, { header: INJECTED_HEADER, value: await downstreamHeader(sidecar, token, APP_TOKEN_API) });
      if (fill.errors + fill.incorrect > 0) throw new Error(`filling the verified-token cache: ${fill.errors + fill.incorrect} errors (${fill.firstError ?? ''})`);
      notes.push(`"verified-token cache full": ${pool.length} other callers' tokens verified and cached first (the default cache holds ${FULL_CACHE_CALLERS}).`);
    }
    // The real answer fixes the baseline's body size, and proves the route works before load.
    const res = await fetch(sidecar.httpUrl + route.path, { headers });
    const body = await res.text();
    if (res.status !== 200) throw new Error(`${route.name} answered ${res.status} before load`);
    const [baseline, weighted] = await Promise.all([startBaselineHttp(ctx, Buffer.byteLength(body)), startBaselineHttp(ctx, Buffer.byteLength(body), true)]);
    try {
      const candidates = [
        { name: 'bare node:http', url: baseline.httpUrl + route.path, pid: baseline.pid },
        { name: WEIGHTED, url: weighted.httpUrl + route.path, pid: weighted.pid },
        { name: 'sidecar', url: sidecar.httpUrl + route.path, pid: sidecar.pid },
      ];
      ctx.log(`http-warm ${route.name}: ${b.rounds} rounds × ${b.httpSec} s per candidate`);
      const wrk = (url: string, sec: number) => runWrk(ctx.place.load, { url, durationSec: sec, connections: WRK_CONNECTIONS, headers });
      for (const c of candidates) await wrk(c.url, b.warmupSec);
      const results: Record<string, SaturationResult[]> = Object.fromEntries(candidates.map((c) => [c.name, []]));
      const cpuUs: Record<string, number[]> = Object.fromEntries(candidates.map((c) => [c.name, []]));
      for (let r = 0; r < b.rounds; r++) {
        for (const c of r % 2 === 0 ? candidates : [...candidates].reverse()) {
          // A server that has just been under load keeps working on the shared core for a moment
          // (V8 finishing compilations and sweeping); let that pass before the other one is measured.
          await sleep(HTTP_SETTLE_MS);
          const c0 = cpuSeconds(c.pid);
          const res = await wrk(c.url, b.httpSec);
          cpuUs[c.name].push(cpuPerRequestUs(c0, cpuSeconds(c.pid), res.requests));
          results[c.name].push(res);
        }
      }
      const rpsOf = (n: string) => results[n].map((x) => x.rps);
      for (const c of candidates) figures.push(figure(`${route.name} saturation`, c.name, 'req/s', rpsOf(c.name)));
      const ratio = spread(pairedRatios(rpsOf('sidecar'), rpsOf('bare node:http')));
      figures.push({ figure: `${route.name} ratio`, candidate: 'sidecar / bare', unit: '×', value: ratio });
      figures.push({ figure: `${route.name} ratio`, candidate: `sidecar / ${WEIGHTED}`, unit: '×', value: spread(pairedRatios(rpsOf('sidecar'), rpsOf(WEIGHTED))) });
      figures.push({ figure: `${route.name} ratio`, candidate: `${WEIGHTED} / bare`, unit: '×', value: spread(pairedRatios(rpsOf(WEIGHTED), rpsOf('bare node:http'))) });
      for (const c of candidates) figures.push(figure(`${route.name} server CPU per request`, c.name, 'µs', cpuUs[c.name]));
      figures.push(figure(`${route.name} p99 at saturation (wrk, closed loop)`, 'sidecar', 'ms', results.sidecar.map((x) => x.p99Ms ?? Number.NaN)));
      const errors = results.sidecar.reduce((a, x) => a + x.errors, 0);
      const bareErrors = results['bare node:http'].reduce((a, x) => a + x.errors, 0);
      const weightedErrors = results[WEIGHTED].reduce((a, x) => a + x.errors, 0);
      if (bareErrors + weightedErrors > 0) notes.push(`${route.name}: the baselines had errors (bare ${bareErrors}, ${WEIGHTED} ${weightedErrors}): the ratios against them are invalid.`);
      targets.push({ target: `HTTP ${route.name} warm ≥ 0.85× bare node:http`, measured: `${ratioText(ratio, bareErrors)}, ${errors} errors`, met: ratioMet(ratio, bareErrors, (m) => m >= 0.85) && errors === 0 });
      baselineErrorsByRoute[route.name] = bareErrors + weightedErrors;
      const after = await fetch(sidecar.httpUrl + route.path, { headers });
      const afterBody = await after.text();
      if (after.status !== 200 || Buffer.byteLength(afterBody) !== Buffer.byteLength(body)) notes.push(`${route.name}: answer after load differs (status ${after.status})`);
      details[route.name] = { bodyBytes: Buffer.byteLength(body), results: Object.fromEntries(Object.entries(results).map(([k, v]) => [k, v.map(({ raw: _raw, ...rest }) => rest)])) };
    } finally {
      await Promise.all([baseline.stop(), weighted.stop()]);
    }
  }
  notes.push(`wrk: 1 thread, ${WRK_CONNECTIONS} keep-alive connections, HTTP/1.1; the baseline answers a JSON body of the same byte size with the same content-type and cache-control.`);
  notes.push(`${WEIGHTED}: the same bare server in a process that first imported what the sidecar loads at start (${BUNDLED_AT_START.join(', ')}) and never uses it: the weight of the sidecar's process without its code on the request path (finding 37). The target is against the bare server.`);
  targets.push(baselineTarget(Object.fromEntries(Object.entries(baselineErrorsByRoute).map(([k, n]) => [`bare servers on ${k}`, n]))));
  return { name: 'http-warm', title: 'identity HTTP API, warm token, vs a bare node:http server', figures, targets, notes, details };
}

// ---------------------------------------------------------------------------------------------
// 4. Cold single-flight

/** Scenario 4: N concurrent callers with one never-seen token on an OBO API → exactly one Entra request. */
export async function coldSingleFlight(shared: SharedFixtures): Promise<Omit<ScenarioResult, 'durationSec'>> {
  const { ctx } = shared;
  const b = ctx.budget;
  const sidecar = await shared.sidecar();
  const n = b.coldCallers;
  const grpcCounts: number[] = [];
  const httpCounts: number[] = [];
  const grpcRuns: LoadgenResult[] = [];
  const httpP50: number[] = [];
  const httpP99: number[] = [];
  const httpMax: number[] = [];
  let httpErrors = 0;
  let grpcWrongToken = 0;
  const notes: string[] = [];
  const tokenRequests = () => ctx.emu.counters().token ?? 0;
  // Warm-token Checks first on the same connections, so the burst meets warm connections and a JIT-ed client.
  // (Validate-only Checks: no downstream API, so priming never asks Entra for anything.)
  const primeFrames = await writeCheckFrames(ctx, 'cold-prime', [await shared.warmToken()]);
  const baseline = await shared.baselineGrpc();
  const nopRuns: LoadgenResult[] = [];
  const prime = { framesFile: primeFrames, count: 400, concurrency: 16 };
  ctx.log(`cold-single-flight: ${b.coldRounds} rounds × ${n} concurrent callers (gRPC and HTTP)`);
  for (let r = 0; r < b.coldRounds; r++) {
    // gRPC: one fresh token, n Checks in flight at once.
    const token = await ctx.emu.mint({ kind: 'user', scp: 'access_as_user', claims: { uti: `cold-grpc-${r}-${process.pid}` } });
    const frames = await writeCheckFrames(ctx, `cold-${r}`, [token], OBO_CONTEXT);
    const before = tokenRequests();
    const burst = await runLoadgen(ctx, { target: sidecar.grpcUrl, mode: 'closed', connections: 4, framesFile: frames, concurrency: n, count: n, sampleEvery: 1, injectedHeader: INJECTED_HEADER, prime });
    grpcRuns.push(burst);
    grpcCounts.push(tokenRequests() - before);
    // Every caller must have got the one OBO token, the one the HTTP route now serves from the cache (read after the count).
    const oboHeader = await downstreamHeader(sidecar, token, OBO_API);
    if (burst.injectedValues.length !== 1 || burst.injectedValues[0] !== oboHeader) {
      grpcWrongToken++;
      notes.push(`round ${r}: the burst's answers injected ${burst.injectedValues.length} distinct values, ${burst.injectedValues.includes(oboHeader) ? 'one of them' : 'none of them'} the OBO token the sidecar holds for the caller`);
    }
    // The same burst against the do-nothing server: what n concurrent calls cost with no work at all.
    nopRuns.push(await runLoadgen(ctx, { target: baseline.grpcUrl, mode: 'closed', connections: 4, framesFile: frames, concurrency: n, count: n, sampleEvery: 1, prime }));

    // HTTP: another fresh token, n concurrent /AuthorizationHeader calls.
    const httpToken = await ctx.emu.mint({ kind: 'user', scp: 'access_as_user', claims: { uti: `cold-http-${r}-${process.pid}` } });
    // n warm calls first, so fetch's pool holds n open keep-alive connections when the burst starts.
    const warm = await shared.warmToken();
    await Promise.all(Array.from({ length: n }, async () => (await fetch(`${sidecar.httpUrl}/Validate`, { headers: { authorization: `Bearer ${warm}` } })).arrayBuffer()));
    const before2 = tokenRequests();
    const lat = await Promise.all(
      Array.from({ length: n }, async () => {
        const t0 = performance.now();
        try {
          const res = await fetch(`${sidecar.httpUrl}/AuthorizationHeader/${OBO_API}`, { headers: { authorization: `Bearer ${httpToken}` } });
          const body = (await res.json()) as { authorizationHeader?: string };
          if (res.status !== 200 || !body.authorizationHeader?.startsWith('Bearer ')) httpErrors++;
        } catch {
          httpErrors++;
        }
        return performance.now() - t0;
      }),
    );
    httpCounts.push(tokenRequests() - before2);
    lat.sort((a, c) => a - c);
    httpP50.push(lat[Math.ceil(n * 0.5) - 1]);
    httpP99.push(lat[Math.ceil(n * 0.99) - 1]);
    httpMax.push(lat[n - 1]);
  }
  const grpcErrors = errorsOf(grpcRuns) + grpcWrongToken;
  const nopErrors = errorsOf(nopRuns);
  const allOne = [...grpcCounts, ...httpCounts].every((c) => c === 1);
  return {
    name: 'cold-single-flight',
    title: `${n} concurrent callers, one uncached token, OBO downstream API`,
    figures: [
      figure('Entra token requests per round', 'gRPC Check', 'requests', grpcCounts),
      figure('Entra token requests per round', 'HTTP /AuthorizationHeader', 'requests', httpCounts),
      figure('p50', 'gRPC Check', 'ms', grpcRuns.map((x) => x.latencyMs.p50)),
      figure('p99', 'gRPC Check', 'ms', grpcRuns.map((x) => x.latencyMs.p99)),
      figure('max', 'gRPC Check', 'ms', grpcRuns.map((x) => x.latencyMs.max)),
      figure('p50', 'nop-grpc (same burst)', 'ms', nopRuns.map((x) => x.latencyMs.p50)),
      figure('max', 'nop-grpc (same burst)', 'ms', nopRuns.map((x) => x.latencyMs.max)),
      figure('p50', 'HTTP /AuthorizationHeader', 'ms', httpP50),
      figure('p99', 'HTTP /AuthorizationHeader', 'ms', httpP99),
      figure('max', 'HTTP /AuthorizationHeader', 'ms', httpMax),
    ],
    targets: [
      { target: `cold: exactly 1 Entra request for ${n} callers`, measured: `gRPC ${grpcCounts.join(',')}; HTTP ${httpCounts.join(',')}`, met: allOne },
      { target: 'zero errors (cold)', measured: `gRPC ${grpcErrors}, HTTP ${httpErrors}`, met: grpcErrors + httpErrors === 0 },
      baselineTarget({ 'nop-grpc (same burst)': nopErrors }),
    ],
    notes: ['counted at the emulator (`counters().token`); latency includes the first RS256 verification of the token and the OBO round trip to the local emulator.', 'every gRPC answer is decoded: an allow with the authorization header set (OVERWRITE_IF_EXISTS_OR_ADD) to the one OBO token the sidecar then serves for that caller on /AuthorizationHeader; the warm priming Checks before each burst count too.', ...notes],
    details: { grpcCounts, httpCounts, grpcRuns },
  };
}

// ---------------------------------------------------------------------------------------------
// 5. Memory and start-up

/** When the settled idle RSS is read: after V8's memory reducer has had its first chance (finding 44). */
const SETTLED_AFTER_READY_MS = 12_000;

/** Scenario 5: start-up times, idle RSS, RSS after 100k Checks, and RSS over a soak. */
export async function memoryStartup(shared: SharedFixtures): Promise<Omit<ScenarioResult, 'durationSec'>> {
  const { ctx } = shared;
  const b = ctx.budget;
  const listeningMs: number[] = [];
  const readyMs: number[] = [];
  const bareListeningMs: number[] = [];
  const idleRss: number[] = [];
  const idleRssFile: number[] = [];
  const settledRss: number[] = [];
  const notes: string[] = [];
  let last: BenchSidecar | undefined;
  ctx.log(`memory-startup: ${b.startupRounds} cold starts, each after one of the bare node:http server`);
  try {
    for (let r = 0; r < b.startupRounds; r++) {
      // The host's own cost of starting a Node server, in the same round: the host has phases in
      // which every start takes ~1.4× as long (finding 39), and this shows them in the report.
      const bare = await startBaselineHttp(ctx, 2);
      bareListeningMs.push(bare.listeningAfterMs);
      await bare.stop();
      const s = await startBenchSidecar(ctx);
      listeningMs.push(s.listeningAfterMs);
      readyMs.push(await waitReady(s));
      await sleep(2000);
      idleRss.push(rssMb(s.pid));
      idleRssFile.push(rssFileMb(s.pid));
      // Still idle, after V8's memory reducer: ~8.5 s after start on Node 20 it shrinks the young
      // generation grown during start-up (8 → 1 MB, RSS −5 MB); Node 24 had not run it by 15 s
      // (finding 44). The target stays on the 2 s figure; this one shows what an idle pod settles to.
      await sleep(SETTLED_AFTER_READY_MS - 2000);
      settledRss.push(rssMb(s.pid));
      if (r < b.startupRounds - 1) await s.stop();
      else last = s;
    }
    const sidecar = last as BenchSidecar;
    const token = await shared.warmToken();
    const frames = await writeCheckFrames(ctx, 'rss-warm', [token], WARM_CONTEXT);
    const appExpect: ExpectedInjection = { header: INJECTED_HEADER, value: await downstreamHeader(sidecar, token, APP_TOKEN_API) };
    ctx.log(`memory-startup: ${b.checksForRss} warm Checks`);
    // Decoded probes around the h2load run, and h2load's DATA bytes checked against the allow's.
    const rssProbeBefore = await probeChecks(ctx, sidecar.grpcUrl, frames, appExpect, 100);
    const allowBytes = (await expectedAnswer(sidecar.grpcUrl, frames, appExpect)).length;
    const h2 = await runH2load(ctx.place.load, { url: sidecar.grpcUrl + CHECK_PATH, bodyFile: frames, durationSec: 0, warmupSec: 0, clients: H2LOAD_CLIENTS, streamsPerClient: H2LOAD_STREAMS, requests: b.checksForRss, bytesPerAnswer: allowBytes });
    await sleep(1000);
    const rssAfterChecks = rssMb(sidecar.pid);
    const rssFileAfterChecks = rssFileMb(sidecar.pid);
    const rssProbeAfter = await probeChecks(ctx, sidecar.grpcUrl, frames, appExpect, 100);
    const rssChecksErrors = h2.errors + errorsOf([rssProbeBefore, rssProbeAfter]);

    // Soak: open loop at a sustainable rate over a pool of distinct tokens (larger than the verified-token
    // cache in a full run, so the LRU evicts) while RSS is sampled every second. Each token is sent
    // twice in a row: the validator caches a token on its second verification, so every token enters
    // the cache (the most it can hold). First the whole pool is sent (closed loop, unrecorded) on the
    // OBO route and then on the soak's app-token route, so every bounded cache is full before RSS is
    // judged: the verified-token cache, the acquired-token cache (one On-Behalf-Of token per caller,
    // each a real exchange at the emulator) and the allow memos of both routes. RSS that rises while
    // a bounded cache fills is the bound at work, not a leak; the full caches are the most memory
    // the default settings can hold, which is what the pod's memory limit must fit. The soak itself
    // uses the app-token route (no Entra request per Check), so the verified-token cache churns
    // while the OBO tokens stay cached.
    const pool = await shared.tokenPool();
    const fillFrames = await writeCheckFrames(ctx, 'fill', pool.flatMap((t) => [t, t]), OBO_CONTEXT);
    const soakFrames = await writeCheckFrames(ctx, 'soak', pool.flatMap((t) => [t, t]), WARM_CONTEXT);
    ctx.log(`memory-startup: filling the caches with ${pool.length} distinct tokens, each sent twice on the OBO route, then on the app-token route`);
    // (Each caller gets its own OBO token: any non-empty value is accepted on that route.)
    const fillObo = await closedLoop(ctx, sidecar.grpcUrl, fillFrames, pool.length * 2, { header: INJECTED_HEADER });
    // The OBO fill put more tokens in the bounded token cache than it holds: the least recently used
    // entry, the app token, was evicted, and the sidecar acquires a new one. Expect that one.
    const soakExpect: ExpectedInjection = { header: INJECTED_HEADER, value: await downstreamHeader(sidecar, token, APP_TOKEN_API) };
    // The soak's own route once over the pool too: its allow memo fills here, not during the soak.
    const fillApp = await closedLoop(ctx, sidecar.grpcUrl, soakFrames, pool.length * 2, soakExpect);
    const fills = { obo: fillObo, app: fillApp };
    const fillCompleted = Object.values(fills).reduce((a, f) => a + f.completed, 0);
    const fillErrors = Object.values(fills).reduce((a, f) => a + f.errors + f.incorrect, 0);
    await sleep(1000);
    const rssAfterFill = rssMb(sidecar.pid);
    ctx.log(`memory-startup: ${b.soakSec} s soak at ${SOAK_RATE} req/s over ${pool.length} tokens`);
    const samples: Array<{ t: number; rss: number }> = [];
    const t0 = performance.now();
    const sampler = setInterval(() => samples.push({ t: (performance.now() - t0) / 1000, rss: rssMb(sidecar.pid) }), 1000);
    let soak: LoadgenResult;
    try {
      soak = await runLoadgen(ctx, { target: sidecar.grpcUrl, mode: 'open', connections: H2LOAD_CLIENTS, framesFile: soakFrames, rate: SOAK_RATE, durationMs: b.soakSec * 1000, sampleEvery: 100, ...injected(soakExpect) });
    } finally {
      clearInterval(sampler);
    }
    // The whole soak: the fill phase before it is the warm-up. RSS moves in a sawtooth with V8's
    // collections (≈ ±3.5 MB every 12–15 s under this load), so a short window's slope swings with
    // where the window starts; the soak is long enough to hold a dozen teeth.
    const trend = slope(samples.map((s) => s.t / 60), samples.map((s) => s.rss));
    const rssSoakMin = Math.min(...samples.map((s) => s.rss));
    const rssSoakEnd = samples.length ? samples[samples.length - 1].rss : Number.NaN;
    const rssSoakMax = Math.max(...samples.map((s) => s.rss));
    const readySpread = spread(readyMs);
    const idle = spread(idleRss);
    const { mb: podLimit, quantity: podQuantity } = podMemoryLimitMb();
    const rssFullMax = Math.max(rssAfterFill, rssSoakMax);
    const figures: Figure[] = [
      figure('spawn → listening line', 'sidecar', 'ms', listeningMs),
      figure('spawn → /readyz 200', 'sidecar', 'ms', readyMs),
      figure('spawn → listening line', 'bare node:http', 'ms', bareListeningMs),
      figure('RSS idle (2 s after ready)', 'sidecar', 'MB', idleRss),
      figure('RSS idle: file-backed part (Node binary, libraries)', 'sidecar', 'MB', idleRssFile),
      figure(`RSS idle, settled (${SETTLED_AFTER_READY_MS / 1000} s after ready)`, 'sidecar', 'MB', settledRss),
      figure(`RSS after ${b.checksForRss} warm Checks`, 'sidecar', 'MB', [rssAfterChecks]),
      figure(`RSS after ${b.checksForRss} warm Checks: file-backed part`, 'sidecar', 'MB', [rssFileAfterChecks]),
      figure(`RSS after ${pool.length} distinct tokens, each sent twice on the OBO route and on the app-token route (every cache full)`, 'sidecar', 'MB', [rssAfterFill]),
      figure('RSS during the soak: at the end (min–max)', 'sidecar', 'MB', [rssSoakMin, rssSoakEnd, rssSoakMax]),
      figure('RSS trend over the soak', 'sidecar', 'MB/min', [trend]),
    ];
    const soakErrors = soak.errors + soak.incorrect + fillErrors;
    const noGrowth = Number.isFinite(trend) && trend <= 2;
    notes.push(`MB here are decimal megabytes (10^6 bytes; /proc's kB are KiB, converted), so the 70 MB and 120 MB targets are judged strictly; 1 MiB = 1.048576 MB.`);
    if (h2.errors) notes.push(`h2load reported ${h2.errors} errors during the ${b.checksForRss} Checks${h2.answerCheck && !h2.answerCheck.ok ? ` (${h2.answerCheck.why})` : ''}`);
    if (ctx.quick) notes.push(`quick run: the soak (${b.soakSec} s) is too short to judge a growth trend; its target is not judged.`);
    notes.push(`file-backed part of RSS: pages of Node's binary and the shared libraries read from disk (RssFile), shared with every Node process on the host and dropped by the kernel under memory pressure; the targets are on the whole RSS.`);
    notes.push(`bare node:http: the bare server (V8's defaults, no dependencies) started just before each sidecar, pinned alike: what starting any Node server costs on this host at that moment; a slow phase of the host moves both.`);
    notes.push(
      `soak: ${soak.completed} Checks after ${fillCompleted} that filled the caches, p99 ${soak.latencyMs.p99.toFixed(2)} ms, ${soakErrors} errors; "no growth" means a least-squares RSS slope ≤ 2 MB/min over the whole soak.`,
    );
    return {
      name: 'memory-startup',
      title: 'start-up time and memory (fresh sidecar processes)',
      figures,
      targets: [
        { target: 'RSS ≤ 70 MB idle', measured: `${idle.median.toFixed(1)} MB`, met: idle.median <= 70 },
        { target: `RSS ≤ 120 MB after ${b.checksForRss} Checks (with zero errors)`, measured: `${rssAfterChecks.toFixed(1)} MB, ${rssChecksErrors} errors (h2load ${h2.errors}, every answer's bytes checked against the allow's ${allowBytes}; ${rssProbeBefore.sampled + rssProbeAfter.sampled} answers decoded before and after)`, met: rssAfterChecks <= 120 && rssChecksErrors === 0 },
        {
          target: `RSS with every cache full ≤ ${POD_LIMIT_SHARE * 100} % of the pod's memory limit (k8s/deployment.yaml: ${podQuantity} = ${podLimit.toFixed(0)} MB)`,
          measured: `${rssFullMax.toFixed(0)} MB, ${((100 * rssFullMax) / podLimit).toFixed(0)} % (highest of after the fill and during the soak)`,
          met: rssFullMax <= POD_LIMIT_SHARE * podLimit,
        },
        { target: 'no RSS growth trend in the soak', measured: `${trend.toFixed(2)} MB/min over ${samples.length} samples (${rssSoakMin.toFixed(0)}–${rssSoakMax.toFixed(0)} MB), ${soakErrors} errors${ctx.quick ? ' (quick run: not judged)' : ''}`, met: ctx.quick ? null : noGrowth && soakErrors === 0 },
        { target: 'start-to-ready ≤ 400 ms (emulator local)', measured: `${readySpread.median.toFixed(0)} ms (${readySpread.min.toFixed(0)}–${readySpread.max.toFixed(0)})`, met: readySpread.median <= 400 },
      ],
      notes,
      details: { listeningMs, readyMs, bareListeningMs, idleRss, idleRssFile, settledRss, rssAfterChecks, rssFileAfterChecks, rssAfterFill, fill: Object.fromEntries(Object.entries(fills).map(([route, f]) => [route, { completed: f.completed, errors: f.errors + f.incorrect, rps: f.rps }])), h2load: { rps: h2.rps, requests: h2.requests, errors: h2.errors, dataBytes: h2.dataBytes, answerCheck: h2.answerCheck }, rssProbes: { before: rssProbeBefore, after: rssProbeAfter }, soak, samples },
    };
  } finally {
    await last?.stop();
  }
}

/** Every scenario by its `--scenario` name, in run order. */
export const SCENARIOS: ReadonlyArray<{ name: string; run: (shared: SharedFixtures) => Promise<Omit<ScenarioResult, 'durationSec'>> }> = [
  { name: 'check-warm', run: checkWarm },
  { name: 'check-first-sight', run: checkFirstSight },
  { name: 'http-warm', run: httpWarm },
  { name: 'cold-single-flight', run: coldSingleFlight },
  { name: 'memory-startup', run: memoryStartup },
];

export type { Spread };
