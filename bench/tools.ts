/**
 * Native load generators from Debian: h2load (nghttp2-client) for gRPC saturation with a
 * pre-encoded body, and wrk for HTTP/1.1 saturation. Both run pinned to the load core; their text
 * output is parsed here.
 */
import { runToEnd } from './processes.js';
import { GRPC_REQUEST_HEADERS } from './wire.js';

export interface SaturationResult {
  rps: number;
  requests: number;
  /**
   * h2load: its `failed` count (which already holds the errored and timed-out requests and the
   * non-2xx answers: each failed request is counted once), requests never done, and answers whose
   * DATA bytes were not the expected allow's (see answerCheck). wrk: non-2xx answers and socket errors.
   */
  errors: number;
  /** h2load: `started` and the DATA bytes of all answers (its `traffic: … data` figure). */
  started?: number;
  dataBytes?: number;
  /**
   * h2load with an expected answer: the DATA bytes every answer must have (the whole gRPC frame of
   * the allow, prefix included) and whether the run's DATA total fits `done` such answers.
   */
  answerCheck?: { bytesPerAnswer: number; ok: boolean; why?: string };
  /** Latency percentiles when the tool reports them (wrk --latency), in ms. */
  p50Ms?: number;
  p99Ms?: number;
  raw: string;
}

/**
 * Parses h2load's summary. Its counters (nghttp2 1.52, h2load.cc): a request is `done` when its
 * stream closed; `failed` holds the answers with a non-2xx status AND the `errored` requests
 * (reset, connection lost or refused), and `timeout` ones are also counted as errored. So `failed`
 * counts each bad request once (100 HTTP 500s are 100 failed, 100 5xx, 0 errored), and
 * `total − succeeded` also covers requests of a fixed-count run that never completed (a refused
 * connection's are failed but not done): errors = max(failed, total − succeeded).
 *
 * With `bytesPerAnswer` (the DATA bytes of the one expected answer: h2load cannot see inside a
 * gRPC message, so a deny, which is HTTP 200 with grpc-status 0, would pass as a success) the
 * DATA total must be exactly `done` such answers, give or take the answers of requests still in
 * flight when a timed run stopped (`started − done`), and a whole multiple of it. h2load's data
 * figure also counts the answers of its --warm-up-time, while `done` does not: runH2load() runs
 * no warm-up inside a checked run.
 */
export function parseH2load(out: string, bytesPerAnswer?: number): SaturationResult {
  const finished = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const traffic = /traffic: .*?, [\d.]+\w*B \((\d+)\) data/.exec(out);
  if (!finished || !req) throw new Error('cannot parse h2load output:\n' + out.slice(-2000));
  const [total, started, done, succeeded, failed] = req.slice(1, 6).map(Number);
  // Requests that failed, or never completed (a refused connection counts its requests as failed and not done: once).
  let errors = Math.max(failed, total - succeeded);
  const dataBytes = traffic ? Number(traffic[1]) : undefined;
  let answerCheck: SaturationResult['answerCheck'];
  if (bytesPerAnswer !== undefined) {
    let why: string | undefined;
    if (dataBytes === undefined) why = 'no data byte count in the output';
    else if (dataBytes % bytesPerAnswer !== 0) why = `${dataBytes} data bytes are not a whole number of ${bytesPerAnswer}-byte answers`;
    else if (dataBytes / bytesPerAnswer < done - failed || dataBytes / bytesPerAnswer > Math.max(done, started)) why = `${dataBytes / bytesPerAnswer} answers' worth of data bytes for ${done - failed} successful requests`;
    answerCheck = { bytesPerAnswer, ok: why === undefined, ...(why ? { why } : {}) };
    if (why !== undefined) errors += Math.max(1, dataBytes === undefined ? done : Math.round(Math.abs(dataBytes - (done - failed) * bytesPerAnswer) / bytesPerAnswer));
  }
  return {
    rps: Number(finished[1]),
    requests: done,
    errors,
    started,
    ...(dataBytes !== undefined ? { dataBytes } : {}),
    ...(answerCheck ? { answerCheck } : {}),
    raw: out,
  };
}

export interface H2loadOptions {
  url: string;
  bodyFile: string;
  durationSec: number;
  warmupSec: number;
  clients: number;
  streamsPerClient: number;
  /** Fixed request count instead of a duration. */
  requests?: number;
  /** The DATA bytes of the expected answer (see parseH2load); every run, warm-up included, is checked against it. */
  bytesPerAnswer?: number;
}

/** One h2load process: `-n requests` or `-D durationSec`, no warm-up inside it. */
async function h2loadOnce(prefix: string[], o: H2loadOptions, durationSec: number): Promise<SaturationResult> {
  const args = ['h2load', '-t', '1', '-c', String(o.clients), '-m', String(o.streamsPerClient), '-d', o.bodyFile];
  for (const [k, v] of Object.entries(GRPC_REQUEST_HEADERS)) args.push('-H', `${k}: ${v}`);
  if (o.requests !== undefined) args.push('-n', String(o.requests));
  else args.push('-D', String(durationSec));
  args.push(o.url);
  const timeout = ((o.requests !== undefined ? 300 : durationSec) + 30) * 1000;
  const r = await runToEnd(prefix, args, timeout);
  if (r.code !== 0) throw new Error(`h2load exited ${r.code}: ${r.stderr.slice(-1000)}${r.stdout.slice(-1000)}`);
  return parseH2load(r.stdout, o.bytesPerAnswer);
}

/**
 * Closed-loop gRPC saturation with h2load (one thread, pinned by `prefix`). A timed run's warm-up
 * (`warmupSec`) is a separate, unrecorded h2load run just before the measured one (h2load's own
 * --warm-up-time would mix the warm-up's answers into the data byte count the answer check reads);
 * its errors are added to the result's. `onMeasuredStart` runs between the two (e.g. to read CPU
 * counters over the measured run only).
 */
export async function runH2load(prefix: string[], o: H2loadOptions, onMeasuredStart?: () => void): Promise<SaturationResult & { warmupErrors: number }> {
  const warm = o.requests === undefined && o.warmupSec > 0 ? await h2loadOnce(prefix, o, o.warmupSec) : undefined;
  onMeasuredStart?.();
  const res = await h2loadOnce(prefix, o, o.durationSec);
  const warmupErrors = warm?.errors ?? 0;
  return { ...res, errors: res.errors + warmupErrors, warmupErrors };
}

function toMs(value: string, unit: string): number {
  const v = Number(value);
  if (unit === 'us') return v / 1000;
  if (unit === 's') return v * 1000;
  return v;
}

/** Parses wrk's summary (with --latency). */
export function parseWrk(out: string): SaturationResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const total = /(\d+) requests in/.exec(out);
  if (!rps || !total) throw new Error('cannot parse wrk output:\n' + out.slice(-2000));
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const p50 = /\s50%\s+([\d.]+)(us|ms|s)/.exec(out);
  const p99 = /\s99%\s+([\d.]+)(us|ms|s)/.exec(out);
  return {
    rps: Number(rps[1]),
    requests: Number(total[1]),
    errors: (non2xx ? Number(non2xx[1]) : 0) + (sock ? Number(sock[1]) + Number(sock[2]) + Number(sock[3]) + Number(sock[4]) : 0),
    ...(p50 ? { p50Ms: toMs(p50[1], p50[2]) } : {}),
    ...(p99 ? { p99Ms: toMs(p99[1], p99[2]) } : {}),
    raw: out,
  };
}

export interface WrkOptions {
  url: string;
  durationSec: number;
  connections: number;
  headers: Record<string, string>;
}

/** Closed-loop HTTP/1.1 saturation with wrk (one thread, keep-alive). */
export async function runWrk(prefix: string[], o: WrkOptions): Promise<SaturationResult> {
  const args = ['wrk', '-t', '1', '-c', String(o.connections), '-d', `${o.durationSec}s`, '--latency'];
  for (const [k, v] of Object.entries(o.headers)) args.push('-H', `${k}: ${v}`);
  args.push(o.url);
  const r = await runToEnd(prefix, args, (o.durationSec + 30) * 1000);
  if (r.code !== 0) throw new Error(`wrk exited ${r.code}: ${r.stderr.slice(-1000)}`);
  return parseWrk(r.stdout);
}
