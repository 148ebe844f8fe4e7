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
  /** Failed/errored/timed-out requests plus non-2xx answers (h2load cannot see grpc-status). */
  errors: number;
  /** Latency percentiles when the tool reports them (wrk --latency), in ms. */
  p50Ms?: number;
  p99Ms?: number;
  raw: string;
}

/** Parses h2load's summary. */
export function parseH2load(out: string): SaturationResult {
  const finished = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  if (!finished || !req) throw new Error('cannot parse h2load output:\n' + out.slice(-2000));
  const non2xx = codes ? Number(codes[2]) + Number(codes[3]) + Number(codes[4]) : 0;
  return {
    rps: Number(finished[1]),
    requests: Number(req[3]),
    errors: Number(req[5]) + Number(req[6]) + Number(req[7]) + non2xx,
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
}

/** Closed-loop gRPC saturation with h2load (one thread, pinned by `prefix`). */
export async function runH2load(prefix: string[], o: H2loadOptions): Promise<SaturationResult> {
  const args = ['h2load', '-t', '1', '-c', String(o.clients), '-m', String(o.streamsPerClient), '-d', o.bodyFile];
  for (const [k, v] of Object.entries(GRPC_REQUEST_HEADERS)) args.push('-H', `${k}: ${v}`);
  if (o.requests !== undefined) args.push('-n', String(o.requests));
  else args.push('-D', String(o.durationSec), '--warm-up-time', String(o.warmupSec));
  args.push(o.url);
  const timeout = ((o.requests !== undefined ? 300 : o.durationSec + o.warmupSec) + 30) * 1000;
  const r = await runToEnd(prefix, args, timeout);
  if (r.code !== 0) throw new Error(`h2load exited ${r.code}: ${r.stderr.slice(-1000)}${r.stdout.slice(-1000)}`);
  return parseH2load(r.stdout);
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
