/**
 * The Node gRPC load generator, run as its own process (pinned to the other core) by the bench.
 * It sends pre-encoded gRPC frames over its own minimal HTTP/2 client (h2client.ts: no grpc-js and
 * no node:http2 streams on the client side, so the client costs little CPU and little garbage) and
 * has two modes:
 *
 * - `open`: a fixed request rate. Request i is due at t0 + i/rate and its latency is measured from
 *   that intended send time, not from when it was actually written, so a stalled server is charged
 *   for the requests it delayed (no coordinated omission, as in wrk2). The sender spins on
 *   setImmediate rather than a 1 ms timer so requests leave on time (to within microseconds).
 * - `closed`: a fixed number of requests with a fixed number in flight; reports the rate reached.
 *
 * Every answer must be HTTP 200 with `grpc-status: 0` and its CheckResponse must not be a deny:
 * the top-level fields of EVERY message are scanned (wire.ts scanCheckResponse: a non-zero
 * status.code or denied_response counts as an error, `denied`). Every `sampleEvery`-th body is
 * also decoded and must be an allow carrying `injectedHeader` with append_action
 * OVERWRITE_IF_EXISTS_OR_ADD and, when given, exactly `injectedValue`. After the run each
 * connection's reference trailers are decoded once (trailers.ts): unless they say grpc-status 0,
 * every call that succeeded on that connection counts as an error.
 *
 * Errors of the unrecorded phases (the open-loop lead-in and `prime`) count too: they are added
 * to `errors` and `incorrect` and shown apart in `unrecorded`; only their timings are left out.
 *
 * With `protocol: 'echo'` the same loops send 8-byte messages to the TCP echo floor
 * (baseline-echo.ts, over echo.ts) instead, and every echo must equal the message sent.
 *
 * Usage: node loadgen.js <job.json>; prints one JSON line (LoadgenResult) on stdout.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { CHECK_PATH, GRPC_REQUEST_HEADERS, allowMismatch, decodeCheckFrame, scanCheckResponse, splitFrames, type ExpectedInjection } from './wire.js';
import { GrpcH2Connection, type CallDone } from './h2client.js';
import { trailersNotOk } from './trailers.js';
import { EchoConnection } from './echo.js';
import { loadExtAuthzProtos } from '../src/extauthz/protos.js';
import { summarizeLatencies, type LatencySummary } from './stats.js';

export interface LoadgenJob {
  /** `http://127.0.0.1:PORT` of the server. */
  target: string;
  /** `grpc` (default): Check calls from `framesFile`; `echo`: 8-byte messages to baseline-echo.ts, each checked when it comes back. */
  protocol?: 'grpc' | 'echo';
  mode: 'open' | 'closed';
  /** HTTP/2 connections, used round robin. */
  connections: number;
  /** A file of concatenated gRPC frames; requests cycle through them in order (unused for echo). */
  framesFile?: string;
  /** open: requests per second and how long to send. */
  rate?: number;
  durationMs?: number;
  /** closed: requests in flight and how many to send in all. */
  concurrency?: number;
  count?: number;
  /** Decode every n-th response body (1 = all). */
  sampleEvery: number;
  /** Header an allow must inject (undefined for the do-nothing baseline). */
  injectedHeader?: string;
  /** The exact value the injected header must carry (e.g. `Bearer <downstream token>`); undefined: any non-empty value. */
  injectedValue?: string;
  /** open: an unrecorded lead-in at the same rate. */
  warmupMs?: number;
  /** Requests sent (closed loop, unrecorded) on the same connections before the measured phase, e.g. warm-token Checks before a cold burst. */
  prime?: { framesFile: string; count: number; concurrency: number; injectedHeader?: string };
  /** How long to wait for stragglers after the last send before counting them as timeouts. */
  drainMs?: number;
}

export interface LoadgenResult {
  sent: number;
  completed: number;
  /** Transport errors, non-200 answers, non-zero grpc-status, denies (any CheckResponse that is not an allow) and timeouts, unrecorded phases included. */
  errors: number;
  /** Of `errors`: answers whose CheckResponse was a deny (non-zero status.code or denied_response). */
  denied: number;
  /** Sampled bodies that were not the expected allow (unrecorded phases included). */
  incorrect: number;
  /** The distinct values of the injected header seen in sampled answers (at most 4). */
  injectedValues: string[];
  /** Of errors and incorrect: what the unrecorded phases (prime, open-loop lead-in) contributed. */
  unrecorded: { sent: number; errors: number; incorrect: number };
  sampled: number;
  elapsedMs: number;
  /** Completed requests per second over the sending period (closed: until the last answer). */
  rps: number;
  latencyMs: LatencySummary;
  /** Worst lateness of the sender itself behind the schedule (open mode); large values mean the client saturated. */
  maxSendLagMs: number;
  firstError?: string;
}

/** What the two loops need of a connection (GrpcH2Connection, EchoConnection). */
interface Connection {
  call(message: Buffer, keepBody: boolean, done: CallDone): void;
  close(): void;
}

async function connect(target: string, protocol: 'grpc' | 'echo'): Promise<Connection> {
  const url = new URL(target);
  if (url.protocol !== 'http:') throw new Error('the load generator speaks cleartext only: ' + target);
  if (protocol === 'echo') return EchoConnection.open(url.hostname, Number(url.port));
  return GrpcH2Connection.open(url.hostname, Number(url.port), CHECK_PATH, GRPC_REQUEST_HEADERS, 5000, scanCheckResponse);
}

/** The request bodies of a job: its gRPC frames, or one placeholder for echo (EchoConnection writes its own bytes). */
function framesOf(job: Pick<LoadgenJob, 'protocol' | 'framesFile'>): Buffer[] {
  if (job.protocol === 'echo') return [Buffer.alloc(0)];
  if (job.framesFile === undefined) throw new Error('a gRPC job needs a framesFile');
  return splitFrames(readFileSync(job.framesFile));
}

/** Runs one job against the target and resolves with its result. */
export async function runJob(job: LoadgenJob): Promise<LoadgenResult> {
  const protocol = job.protocol ?? 'grpc';
  const frames = framesOf(job);
  if (frames.length === 0) throw new Error('no frames in ' + job.framesFile);
  // Load the protos now: their first use would otherwise stall the event loop mid-measurement.
  loadExtAuthzProtos();
  const sessions = await Promise.all(Array.from({ length: Math.max(1, job.connections) }, () => connect(job.target, protocol)));
  const unrecorded: LoadgenResult[] = [];
  if (job.prime) {
    const primeFrames = framesOf({ protocol, framesFile: job.prime.framesFile });
    const { injectedHeader: _h, injectedValue: _v, ...rest } = job;
    const primeJob: LoadgenJob = { ...rest, mode: 'closed', count: job.prime.count, concurrency: job.prime.concurrency, sampleEvery: 1, ...(job.prime.injectedHeader ? { injectedHeader: job.prime.injectedHeader } : {}) };
    unrecorded.push(await runPhase(sessions, primeFrames, primeJob));
  }
  // Open loop: send at the same rate for a while first, so JIT, connection windows and the
  // server's caches settle before anything is recorded.
  if (job.mode === 'open' && (job.warmupMs ?? 0) > 0) unrecorded.push(await runPhase(sessions, frames, { ...job, durationMs: job.warmupMs }));
  const result = await runPhase(sessions, frames, job);
  for (const s of sessions) s.close();
  for (const u of unrecorded) {
    result.unrecorded.sent += u.sent;
    result.unrecorded.errors += u.errors;
    result.unrecorded.incorrect += u.incorrect;
    result.errors += u.errors;
    result.denied += u.denied;
    result.incorrect += u.incorrect;
    result.firstError ??= u.firstError;
  }
  // The trailers every successful call carried, decoded once per connection.
  for (const s of sessions) {
    if (!(s instanceof GrpcH2Connection) || s.referenceTrailers === undefined) continue;
    const why = await trailersNotOk(s.referenceTrailers);
    if (why !== undefined) {
      result.errors += s.succeeded;
      result.firstError ??= why;
    }
  }
  return result;
}

async function runPhase(sessions: Connection[], frames: Buffer[], job: LoadgenJob): Promise<LoadgenResult> {
  const expectedTotal = job.mode === 'open' ? Math.ceil(((job.rate ?? 0) * (job.durationMs ?? 0)) / 1000) : (job.count ?? frames.length);
  const latencies = new Float64Array(expectedTotal);
  const intendedAt = new Float64Array(expectedTotal);
  const answered = new Uint8Array(expectedTotal);
  let sent = 0;
  let completed = 0;
  let errors = 0;
  let incorrect = 0;
  let denied = 0;
  let sampled = 0;
  const injectedValues: string[] = [];
  const expected: ExpectedInjection | undefined = job.injectedHeader ? { header: job.injectedHeader, ...(job.injectedValue !== undefined ? { value: job.injectedValue } : {}) } : undefined;
  let firstError: string | undefined;
  let lastDone = 0;

  const fail = (why: string) => {
    errors++;
    firstError ??= why;
  };

  /** Sends request number i, due at `intended` (performance.now() ms); calls done() once answered. */
  function send(i: number, intended: number, done: () => void): void {
    intendedAt[i] = intended;
    const session = sessions[i % sessions.length];
    const frame = frames[i % frames.length];
    const sample = job.sampleEvery > 0 && i % job.sampleEvery === 0;
    session.call(frame, sample, (err, body) => {
      const now = performance.now();
      lastDone = now;
      completed++;
      answered[i] = 1;
      latencies[i] = now - intended;
      if (err !== undefined) {
        if (err.startsWith('denied')) denied++;
        fail(err);
      } else if (sample) {
        sampled++;
        // An echo was compared byte for byte by EchoConnection before it got here.
        if (job.protocol !== 'echo') {
          const decoded = decodeCheckFrame(body ?? Buffer.alloc(0));
          const why = allowMismatch(decoded, expected);
          if (why !== undefined) {
            incorrect++;
            firstError ??= `unexpected response body: ${why}`;
          }
          if (expected !== undefined && injectedValues.length < 4) {
            const value = decoded?.ok_response?.headers?.find((h) => h.header?.key === expected.header)?.header?.value;
            if (value !== undefined && !injectedValues.includes(value)) injectedValues.push(value);
          }
        }
      }
      done();
    });
  }

  let maxSendLagMs = 0;
  const t0 = performance.now();
  if (job.mode === 'open') {
    const rate = job.rate ?? 0;
    const interval = 1000 / rate;
    const total = expectedTotal;
    await new Promise<void>((resolve) => {
      let outstanding = 0;
      let scheduled = false;
      const onDone = () => {
        outstanding--;
        if (scheduled && outstanding === 0) resolve();
      };
      const tick = () => {
        const now = performance.now();
        while (sent < total) {
          const intended = t0 + sent * interval;
          if (intended > now) break;
          maxSendLagMs = Math.max(maxSendLagMs, now - intended);
          outstanding++;
          send(sent, intended, onDone);
          sent++;
        }
        if (sent >= total) {
          scheduled = true;
          if (outstanding === 0) resolve();
          else setTimeout(() => resolve(), job.drainMs ?? 5000).unref();
        } else {
          // Spin through the event loop (I/O is polled between immediates) instead of a timer:
          // Node's timers fire at best every ~1 ms, which would send each request up to a
          // millisecond late and charge that to the server. This process has a core of its own.
          setImmediate(tick);
        }
      };
      tick();
    });
  } else {
    const total = expectedTotal;
    const concurrency = Math.max(1, job.concurrency ?? 16);
    await new Promise<void>((resolve) => {
      let outstanding = 0;
      // A server that stops answering must not hang the bench: give up after drainMs of silence.
      let lastProgress = performance.now();
      const watchdog = setInterval(() => {
        if (performance.now() - lastProgress > (job.drainMs ?? 5000)) {
          clearInterval(watchdog);
          resolve();
        }
      }, 100);
      const next = () => {
        lastProgress = performance.now();
        if (sent < total) {
          outstanding++;
          const i = sent++;
          // Closed loop: each request is "intended" when it is sent, so latency is service time.
          send(i, performance.now(), onDone);
        } else if (outstanding === 0) {
          clearInterval(watchdog);
          resolve();
        }
      };
      const onDone = () => {
        outstanding--;
        next();
      };
      for (let k = 0; k < concurrency; k++) next();
    });
  }
  // Unanswered requests count as errors and, for the percentiles, as late as the drain deadline.
  const giveUp = performance.now();
  for (let i = 0; i < sent; i++) {
    if (answered[i] === 0) {
      latencies[i] = giveUp - intendedAt[i];
      fail('timeout: no answer before the drain deadline');
    }
  }
  const end = job.mode === 'open' ? t0 + (job.durationMs ?? 0) : lastDone;
  const elapsedMs = Math.max(1, end - t0);
  return {
    sent,
    completed,
    errors,
    denied,
    incorrect,
    injectedValues,
    unrecorded: { sent: 0, errors: 0, incorrect: 0 },
    sampled,
    elapsedMs,
    rps: (completed / elapsedMs) * 1000,
    latencyMs: summarizeLatencies(latencies.subarray(0, sent)),
    maxSendLagMs,
    ...(firstError !== undefined ? { firstError } : {}),
  };
}

const job = JSON.parse(readFileSync(process.argv[2], 'utf8')) as LoadgenJob;
const result = await runJob(job);
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(0);
