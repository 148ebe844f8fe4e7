/**
 * What every scenario shares: the run's settings, the local Entra emulator, the sidecar's
 * environment (it is configured only by env, like in production), starting the built sidecar and
 * the baselines pinned to the server core, the load generator process, and frame files.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Agent, fetch } from 'undici';
import YAML from 'yaml';
import type { Emulator } from '../emulator/index.js';
import { sidecarEnv as testSidecarEnv } from '../test/helpers/e2e.js';
import { benchDir, repoRoot, runToEnd, sidecarEntry, startServer, type Placement, type RunningServer } from './processes.js';
import { BUNDLE_FILE, BUNDLED_AT_START } from '../src/build-bundle.js';
import type { LoadgenJob, LoadgenResult } from './loadgen.js';
import { allowMismatch, decodeCheckFrame, encodeCheckFrame, envoyCheckRequest, scanCheckResponse, splitFrames, CHECK_PATH, GRPC_REQUEST_HEADERS, type ExpectedInjection } from './wire.js';
import { GrpcH2Connection } from './h2client.js';

/** Names of the DownstreamApis the bench configures. */
export const APP_TOKEN_API = 'downstream-app';
export const OBO_API = 'downstream-obo';
/** The header the sidecar injects on allow (its default). */
export const INJECTED_HEADER = 'authorization';

/** Durations and counts of one run; `--quick` scales them down. */
export interface Budget {
  rounds: number;
  warmupSec: number;
  saturationSec: number;
  latencyRates: number[];
  latencySec: number;
  latencyRounds: number;
  firstSightPerRound: number;
  firstSightRounds: number;
  httpSec: number;
  coldRounds: number;
  coldCallers: number;
  startupRounds: number;
  checksForRss: number;
  soakSec: number;
}

export const FULL: Budget = {
  rounds: 5,
  warmupSec: 3,
  saturationSec: 6,
  latencyRates: [250, 500, 1000, 2000],
  latencySec: 5,
  latencyRounds: 3,
  firstSightPerRound: 5000,
  firstSightRounds: 4,
  httpSec: 5,
  coldRounds: 5,
  coldCallers: 100,
  startupRounds: 5,
  checksForRss: 100_000,
  soakSec: 540,
};

export const QUICK: Budget = {
  rounds: 2,
  warmupSec: 1,
  saturationSec: 3,
  latencyRates: [250, 500, 1000, 2000],
  latencySec: 2,
  latencyRounds: 2,
  firstSightPerRound: 2000,
  firstSightRounds: 2,
  httpSec: 3,
  coldRounds: 2,
  coldCallers: 100,
  startupRounds: 3,
  checksForRss: 100_000,
  soakSec: 15,
};

export interface BenchContext {
  readonly budget: Budget;
  readonly quick: boolean;
  readonly emu: Emulator;
  readonly place: Placement;
  /** Private scratch folder (tokens, frames, job files), removed at the end. */
  readonly scratch: string;
  /** With `--cpu-prof`: where the shared sidecar writes its V8 CPU profile on exit. */
  readonly profileDir?: string;
  /** Progress line on stderr. */
  log(message: string): void;
}

/** A scratch folder only this user can read (it holds tokens). */
export async function makeScratch(): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'entra-sidecar-bench-'));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * The process tuning the container image sets (`ENV NODE_OPTIONS=…` and glibc's `MALLOC_*`
 * variables in the Dockerfile), so the bench runs the sidecar as it ships.
 */
export function imageEnv(): Record<string, string> {
  const dockerfile = readFileSync(path.join(repoRoot, 'Dockerfile'), 'utf8');
  const env: Record<string, string> = {};
  for (const m of dockerfile.matchAll(/^ENV ((?:NODE_OPTIONS|MALLOC_[A-Z_]+))=("[^"]*"|\S+)\s*$/gm)) {
    env[m[1]] = m[2].startsWith('"') ? m[2].slice(1, -1) : m[2];
  }
  return env;
}

/** A Kubernetes memory quantity (`384Mi`, `1Gi`, `400M`, plain bytes) in bytes. */
export function memoryQuantityBytes(quantity: string): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?$/.exec(quantity.trim());
  if (!m) throw new Error(`not a Kubernetes memory quantity: ${quantity}`);
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, k: 1e3, M: 1e6, G: 1e9 }[m[2] ?? ''] ?? 1;
  return Number(m[1]) * unit;
}

/** The same limit in MiB (2^20 bytes; the Dockerfile's heap flags are in MiB too). */
export function podMemoryLimitMib(): number {
  return (podMemoryLimitMb().mb * 1e6) / 2 ** 20;
}

/**
 * The memory limit of the entra-sidecar container in k8s/deployment.yaml, in decimal MB (10^6
 * bytes, rssMb()'s unit), so the bench judges the RSS it measures against the limit the example
 * pod ships with. `quantity` is the limit as written there (e.g. `384Mi`).
 */
export function podMemoryLimitMb(): { mb: number; quantity: string } {
  const docs = YAML.parseAllDocuments(readFileSync(path.join(repoRoot, 'k8s', 'deployment.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, any>); // eslint-disable-line @typescript-eslint/no-explicit-any
  const spec = docs.find((d) => d?.kind === 'Deployment')?.spec?.template?.spec;
  const sidecar = [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])].find((c: { name?: string }) => c.name === 'entra-sidecar');
  const limit: unknown = sidecar?.resources?.limits?.memory;
  // A quantity in plain bytes reads as a YAML number.
  if (typeof limit !== 'string' && typeof limit !== 'number') throw new Error('k8s/deployment.yaml: no memory limit on the entra-sidecar container');
  return { mb: memoryQuantityBytes(String(limit)) / 1e6, quantity: String(limit) };
}

/** The sidecar's whole configuration: the emulator as Entra, two downstream APIs, every listener on loopback port 0. */
export function sidecarEnv(emu: Emulator, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const downstream = emu.scenario.apps.downstreamApi.identifierUris[0];
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    NODE_ENV: 'production',
    ...imageEnv(),
    ...testSidecarEnv(emu, {
      // Production's default level, not the tests' debug.
      Sidecar__LogLevel: 'info',
      [`DownstreamApis__${APP_TOKEN_API}__BaseUrl`]: 'https://downstream.example.test/',
      [`DownstreamApis__${APP_TOKEN_API}__Scopes__0`]: `${downstream}/.default`,
      [`DownstreamApis__${APP_TOKEN_API}__RequestAppToken`]: 'true',
      [`DownstreamApis__${OBO_API}__BaseUrl`]: 'https://downstream.example.test/',
      [`DownstreamApis__${OBO_API}__Scopes__0`]: `${downstream}/read`,
      ...extra,
    }),
  };
}

/** The running sidecar with its three listeners. */
export interface BenchSidecar extends RunningServer {
  readonly httpUrl: string;
  readonly grpcUrl: string;
  readonly managementUrl: string;
}

/**
 * Starts the built sidecar (`entry`: another copy of main.js) pinned to the server core and resolves
 * at its listening line; refuses one that runs its compiled modules rather than the bundle the image
 * runs (a bare tsc after the last build).
 */
export async function startBenchSidecar(ctx: Pick<BenchContext, 'emu' | 'place'>, extraEnv: Record<string, string> = {}, nodeArgs: string[] = [], entry = sidecarEntry): Promise<BenchSidecar> {
  const server = await startServer(ctx.place.server, [process.execPath, ...nodeArgs, entry], sidecarEnv(ctx.emu, extraEnv));
  const l = server.listening as { http: Array<{ host: string; port: number }>; extAuthz: { host: string; port: number } | null; management: { host: string; port: number } | null };
  const refuse: (message: string) => never = (message) => {
    server.child.kill('SIGKILL');
    throw new Error(message);
  };
  if (!l.extAuthz || !l.management) refuse('the sidecar started without its ext_authz or management listener');
  // The separate files start ~130 ms slower and hold more heap than the bundle the image runs.
  if (server.listening.bundle !== true) {
    refuse(`the sidecar ran its compiled modules, not ${path.relative(repoRoot, BUNDLE_FILE)} (missing, or older than the modules after a bare tsc): run npm run build (npm run bench does) and measure again`);
  }
  return {
    ...server,
    httpUrl: `http://127.0.0.1:${l.http[0].port}`,
    grpcUrl: `http://127.0.0.1:${l.extAuthz.port}`,
    managementUrl: `http://127.0.0.1:${l.management.port}`,
  };
}

/** Polls `/readyz` until 200; resolves with ms since the process was spawned. */
export async function waitReady(sidecar: BenchSidecar, timeoutMs = 20_000): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    try {
      const r = await fetch(`${sidecar.managementUrl}/readyz`);
      await r.arrayBuffer();
      if (r.status === 200) return performance.now() - sidecar.spawnedAt;
    } catch {
      // not accepting yet
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error('the sidecar did not become ready in time');
}

/**
 * Starts the do-nothing grpc-js Check server pinned to the server core, with V8's defaults unless
 * `env` says otherwise (`imageEnv()` runs it with the image's heap flags and malloc setting).
 */
export function startBaselineGrpc(ctx: Pick<BenchContext, 'place'>, env: Record<string, string> = {}): Promise<RunningServer & { grpcUrl: string }> {
  return startGrpcBaseline(ctx, [], env);
}

/** baseline-grpc.js with `args` (none: the do-nothing server; port and JWKS file: the verify-only reference). */
async function startGrpcBaseline(ctx: Pick<BenchContext, 'place'>, args: string[], env: Record<string, string>): Promise<RunningServer & { grpcUrl: string }> {
  const server = await startServer(ctx.place.server, [process.execPath, path.join(benchDir, 'baseline-grpc.js'), ...args], { PATH: process.env.PATH, ...env });
  return { ...server, grpcUrl: `http://127.0.0.1:${server.listening.port as number}` };
}

/** Starts the TCP echo floor (baseline-echo.ts) pinned to the server core; the load generator reaches it with `protocol: 'echo'`. */
export async function startBaselineEcho(ctx: Pick<BenchContext, 'place'>): Promise<RunningServer & { echoUrl: string }> {
  const server = await startServer(ctx.place.server, [process.execPath, path.join(benchDir, 'baseline-echo.js')], { PATH: process.env.PATH });
  return { ...server, echoUrl: `http://127.0.0.1:${server.listening.port as number}` };
}

/**
 * Starts the verify-only reference Check server (baseline-grpc.ts with a JWKS file) pinned to the
 * server core, with V8's defaults unless `env` says otherwise (as for startBaselineGrpc).
 */
export function startVerifyOnlyGrpc(ctx: Pick<BenchContext, 'place'>, jwksFile: string, env: Record<string, string> = {}): Promise<RunningServer & { grpcUrl: string }> {
  return startGrpcBaseline(ctx, ['0', jwksFile], env);
}

/** Fetches the signing keys that verify `token` (from its issuer's metadata at the emulator) into a scratch file; returns its path. */
export async function writeEmulatorJwks(ctx: Pick<BenchContext, 'scratch' | 'emu'>, token: string): Promise<string> {
  const { iss } = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as { iss: string };
  const dispatcher = new Agent({ connect: { ca: ctx.emu.caPem } });
  try {
    const getJson = async (url: string): Promise<Record<string, unknown>> => {
      const res = await fetch(url, { dispatcher, signal: AbortSignal.timeout(10_000) });
      if (res.status !== 200) throw new Error(`GET ${url}: HTTP ${res.status}`);
      return (await res.json()) as Record<string, unknown>;
    };
    const metadata = await getJson(`${iss.replace(/\/$/, '')}/.well-known/openid-configuration`);
    const file = path.join(ctx.scratch, 'jwks.json');
    await writeFile(file, JSON.stringify(await getJson(String(metadata.jwks_uri))), { mode: 0o600 });
    return file;
  } finally {
    await dispatcher.close();
  }
}

/**
 * Starts the bare node:http server answering a JSON body of `bodyBytes`; with `withDependencies`,
 * in a process that has first imported the packages the sidecar loads at start (BUNDLED_AT_START,
 * src/build-bundle.ts; http-warm's third candidate).
 */
export async function startBaselineHttp(ctx: Pick<BenchContext, 'place'>, bodyBytes: number, withDependencies = false): Promise<RunningServer & { httpUrl: string }> {
  const args = [process.execPath, path.join(benchDir, 'baseline-http.js'), String(bodyBytes), ...(withDependencies ? BUNDLED_AT_START : [])];
  const server = await startServer(ctx.place.server, args, { PATH: process.env.PATH });
  return { ...server, httpUrl: `http://127.0.0.1:${server.listening.port as number}` };
}

let jobSeq = 0;

/** Runs the Node load generator in its own process on the load core. */
export async function runLoadgen(ctx: Pick<BenchContext, 'place' | 'scratch'>, job: LoadgenJob): Promise<LoadgenResult> {
  const file = path.join(ctx.scratch, `job-${++jobSeq}.json`);
  await writeFile(file, JSON.stringify(job), { mode: 0o600 });
  const budgetMs = (job.durationMs ?? 120_000) + (job.drainMs ?? 5000) + 60_000;
  const r = await runToEnd(ctx.place.load, [process.execPath, path.join(benchDir, 'loadgen.js'), file], budgetMs);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (r.code !== 0 || !line.startsWith('{')) throw new Error(`load generator failed (exit ${r.code}): ${r.stderr.slice(-1500)}`);
  return JSON.parse(line) as LoadgenResult;
}

/** Writes the frames of Envoy-shaped Checks, one per token, to a scratch file; returns its path. */
export async function writeCheckFrames(ctx: Pick<BenchContext, 'scratch'>, name: string, tokens: readonly (string | undefined)[], contextExtensions?: Record<string, string>): Promise<string> {
  const file = path.join(ctx.scratch, `${name}.frames`);
  const frames = tokens.map((token) => encodeCheckFrame(envoyCheckRequest({ ...(token !== undefined ? { token } : {}), ...(contextExtensions ? { contextExtensions } : {}) })));
  await writeFile(file, Buffer.concat(frames), { mode: 0o600 });
  return file;
}

/** Mints `count` distinct valid user tokens for the sidecar's audience. */
export async function mintUserTokens(emu: Emulator, count: number, onProgress?: (done: number) => void): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    // Distinct claims make every token (and so every verified-token cache key) unique.
    out.push(await emu.mint({ kind: 'user', scp: 'access_as_user', claims: { uti: `bench${i.toString(36)}x${process.pid}` } }));
    if (onProgress && (i + 1) % 5000 === 0) onProgress(i + 1);
  }
  return out;
}

/**
 * The answer a Check server gives to the first request of `framesFile`, as the exact bytes of its
 * DATA (the whole gRPC frame, prefix included: what h2load's data byte count adds up), after
 * checking it is the expected allow. Used to check h2load runs, which cannot look inside answers.
 */
export async function expectedAnswer(url: string, framesFile: string, expected: ExpectedInjection | undefined): Promise<Buffer> {
  const u = new URL(url);
  const conn = await GrpcH2Connection.open(u.hostname, Number(u.port), CHECK_PATH, GRPC_REQUEST_HEADERS, 5000, scanCheckResponse);
  try {
    const frame = splitFrames(readFileSync(framesFile))[0];
    const body = await new Promise<Buffer>((resolve, reject) =>
      conn.call(frame, true, (err, b) => (err !== undefined || b === undefined ? reject(new Error(`${url}: ${err ?? 'no body'}`)) : resolve(b))),
    );
    const why = allowMismatch(decodeCheckFrame(body), expected);
    if (why !== undefined) throw new Error(`${url}: the reference answer is not the expected allow: ${why}`);
    return body;
  } finally {
    conn.close();
  }
}

/**
 * The Authorization header value the sidecar injects for `api` when called with `token`, from its
 * HTTP route `/AuthorizationHeader/{api}` (the same token cache as the Check's), so Check answers
 * can be compared with it for equality.
 */
export async function downstreamHeader(sidecar: Pick<BenchSidecar, 'httpUrl'>, token: string, api: string): Promise<string> {
  const res = await fetch(`${sidecar.httpUrl}/AuthorizationHeader/${api}`, { headers: { authorization: `Bearer ${token}` } });
  const body = (await res.json()) as { authorizationHeader?: string };
  if (res.status !== 200 || typeof body.authorizationHeader !== 'string' || !body.authorizationHeader.startsWith('Bearer ')) {
    throw new Error(`/AuthorizationHeader/${api} answered ${res.status} without a Bearer header`);
  }
  return body.authorizationHeader;
}
