/**
 * Shared fixtures for the reliability suites (faults, abuse, security, soak): the fault catalogue,
 * a sidecar + emulator stack with short outbound timeouts, a downstream API whose behaviour each
 * test sets, liveness checks that catch a crash or an unhandled rejection (the sidecar exits 70 on
 * those), and small readers for /metrics and the ext_authz Check.
 */
import { expect } from 'chai';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import type { FaultSpec } from '../../emulator/types.js';
import { createAuthorizationClient, type AuthorizationClient } from '../../src/extauthz/protos.js';
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js';
import { call, sidecarEnv, type HttpAnswer } from '../helpers/e2e.js';
import { check, envoyCheckRequest, type CheckResult } from '../extauthz/fixtures.js';

/** Outbound deadline every reliability sidecar runs with, so "slow" faults are decided quickly. */
export const OUTBOUND_TIMEOUT_MS = 800;
/** How long an emulator fault stalls: comfortably beyond OUTBOUND_TIMEOUT_MS. */
export const SLOW_MS = 2_500;
/** Retry-After the throttling fault sends, in seconds. */
export const RETRY_AFTER_SEC = 1;

/** One fault of the matrix, as the emulator injects it (route added per dependency). */
export interface FaultCase {
  readonly name: string;
  readonly spec: Omit<FaultSpec, 'route'>;
  /** What the fault is, in the vocabulary of the expectations tables. */
  readonly kind: 'status500' | 'status502' | 'status503' | 'throttledRetryAfter' | 'throttled' | 'slow' | 'drop' | 'nonJson' | 'hugeBody';
}

/** Every fault the matrix injects into every dependency (issue 9). */
export const FAULTS: readonly FaultCase[] = [
  { name: 'HTTP 500', kind: 'status500', spec: { status: 500 } },
  { name: 'HTTP 502', kind: 'status502', spec: { status: 502 } },
  { name: 'HTTP 503', kind: 'status503', spec: { status: 503 } },
  { name: `429 with Retry-After: ${RETRY_AFTER_SEC}`, kind: 'throttledRetryAfter', spec: { status: 429, retryAfter: RETRY_AFTER_SEC } },
  { name: '429 without Retry-After', kind: 'throttled', spec: { status: 429 } },
  { name: `no answer for ${SLOW_MS} ms (beyond the timeout)`, kind: 'slow', spec: { delayMs: SLOW_MS } },
  { name: 'connection reset', kind: 'drop', spec: { drop: true } },
  { name: 'malformed JSON (HTML with 200)', kind: 'nonJson', spec: { nonJson: true, status: 200 } },
  { name: 'huge body (4 MiB)', kind: 'hugeBody', spec: { hugeBody: true } },
];

/** A running emulator + built sidecar + ext_authz client. */
export interface Stack {
  readonly emu: Emulator;
  readonly sidecar: RunningSidecar;
  readonly client: AuthorizationClient;
  /** `http://127.0.0.1:PORT` of the management listener. */
  readonly management: string;
  /** Tokens handed out during the run (must never be logged). */
  readonly tokens: string[];
  close(): Promise<void>;
}

/** Starts a sidecar (short timeouts) against `emu`, or a fresh emulator when none is given. */
export async function startStack(extraEnv: Record<string, string> = {}, emu?: Emulator): Promise<Stack> {
  const own = emu === undefined;
  const e = emu ?? (await startEmulator());
  const sidecar = await startSidecar(
    sidecarEnv(e, {
      Sidecar__LogLevel: 'info',
      Sidecar__Outbound__TimeoutMs: String(OUTBOUND_TIMEOUT_MS),
      Sidecar__Outbound__ConnectTimeoutMs: String(OUTBOUND_TIMEOUT_MS),
      ...extraEnv,
    }),
  );
  const client = createAuthorizationClient(`127.0.0.1:${sidecar.listening.extAuthz!.port}`);
  const m = sidecar.listening.management!;
  return {
    emu: e,
    sidecar,
    client,
    management: `http://127.0.0.1:${m.port}`,
    tokens: [],
    async close() {
      client.close();
      await sidecar.stop();
      if (own) await e.close();
    },
  };
}

/** Mints a user token for the sidecar API (remembered so logs can be checked for it). */
export async function userToken(stack: Stack, extra: Partial<Parameters<Emulator['mint']>[0]> = {}): Promise<string> {
  const t = await stack.emu.mint({ kind: 'user', scp: 'access_as_user', ...extra });
  stack.tokens.push(t);
  return t;
}

/** Fails when the sidecar has exited or logged a crash (it exits 70 on an unhandled rejection). */
export async function assertAlive(stack: Stack): Promise<void> {
  const { child, lines } = stack.sidecar;
  expect(child.exitCode, `sidecar exited:\n${lines.slice(-20).join('\n')}`).to.equal(null);
  expect(child.signalCode).to.equal(null);
  const crash = lines.find((l) => l.includes('unhandled rejection') || l.includes('uncaught exception'));
  expect(crash, 'crash line in the sidecar log').to.equal(undefined);
  const health = await call(`${stack.sidecar.url}/healthz`);
  expect(health.status).to.equal(200);
}

/** Runs `fn` and returns its result with the elapsed wall time in ms. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - t0 };
}

/** Polls `probe` every 100 ms until it returns true or `timeoutMs` passes; returns whether it did. */
export async function eventually(probe: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > end) return false;
    await sleep(100);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The `code` of a ProblemDetails body, or undefined for an empty/other body. */
export function problemCode(r: HttpAnswer): string | undefined {
  if (r.text === '') return undefined;
  try {
    return (r.json() as { code?: string }).code;
  } catch {
    return undefined;
  }
}

/** One ext_authz Check with an Envoy-shaped request; resolves the decoded CheckResponse. */
export function checkWith(stack: Stack, init: Parameters<typeof envoyCheckRequest>[0], timeoutMs = 5_000): Promise<CheckResult> {
  return check(stack.client, envoyCheckRequest(init), timeoutMs);
}

/** A deny's stable code (from the denied body), or 'allow'. */
export function decision(res: CheckResult): string {
  if ((res.status?.code ?? 0) === 0) return 'allow';
  return (JSON.parse(res.denied_response.body) as { code: string }).code;
}

/** Reads the management /metrics text. */
export async function scrape(stack: Stack): Promise<string> {
  const r = await call(`${stack.management}/metrics`);
  expect(r.status).to.equal(200);
  return r.text;
}

/** The value of one un-labelled (or exact-label) sample in a Prometheus text exposition. */
export function sample(text: string, name: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(name + ' ') || line.startsWith(name + '{')) {
      const v = Number(line.slice(line.lastIndexOf(' ') + 1));
      if (Number.isFinite(v)) return v;
    }
  }
  return undefined;
}

export type DownstreamBehaviour = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

/** A loopback downstream API: records every request and answers with the current behaviour. */
export interface Downstream {
  readonly origin: string;
  readonly seen: Array<{ method: string; url: string; headers: IncomingMessage['headers'] }>;
  behaviour: DownstreamBehaviour;
  close(): Promise<void>;
}

export const OK_BEHAVIOUR: DownstreamBehaviour = (_req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end('{"ok":true}');
};

/** Starts a downstream API on 127.0.0.1:0. */
export async function startDownstream(): Promise<Downstream> {
  const sockets = new Set<Socket>();
  const d: Downstream = {
    origin: '',
    seen: [],
    behaviour: OK_BEHAVIOUR,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      d.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
      d.behaviour(req, res, Buffer.concat(chunks));
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  (d as { origin: string }).origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return d;
}

/** The downstream behaviour that plays one fault of the catalogue. */
export function downstreamFault(kind: FaultCase['kind']): DownstreamBehaviour {
  const status = (code: number, headers: Record<string, string> = {}): DownstreamBehaviour => (_q, res) => {
    res.writeHead(code, { 'content-type': 'application/json', ...headers });
    res.end(`{"error":"injected ${code}"}`);
  };
  switch (kind) {
    case 'status500':
      return status(500);
    case 'status502':
      return status(502);
    case 'status503':
      return status(503);
    case 'throttledRetryAfter':
      return status(429, { 'retry-after': String(RETRY_AFTER_SEC) });
    case 'throttled':
      return status(429);
    case 'slow':
      return (_q, res) => {
        const t = setTimeout(() => OK_BEHAVIOUR(_q, res, Buffer.alloc(0)), SLOW_MS);
        res.on('close', () => clearTimeout(t));
      };
    case 'drop':
      return (req) => req.socket.destroy();
    case 'nonJson':
      return (_q, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('<html>not json{');
      };
    case 'hugeBody':
      return (_q, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ padding: 'x'.repeat(4 * 1024 * 1024) }));
      };
  }
}
