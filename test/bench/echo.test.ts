/**
 * The TCP echo floor of the latency figures (bench/baseline-echo.ts) and the load generator's echo
 * client (bench/echo.ts, `protocol: 'echo'` in bench/loadgen.ts): a floor that counted a wrong or
 * missing echo as an answer would read lower than the host really allows.
 */
import { expect } from 'chai';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ECHO_MESSAGE_BYTES, EchoConnection } from '../../bench/echo.js';
import type { LoadgenJob, LoadgenResult } from '../../bench/loadgen.js';
import { placement } from '../../bench/processes.js';
import { runLoadgen as runBenchLoadgen, startBaselineEcho } from '../../bench/setup.js';

/** Unpinned (placement for one core): the tests run the bench's own helpers on whatever core is free. */
const place = placement(1);

/** The echo floor as the bench starts it (bench/baseline-echo.js), with its port. */
async function startEchoServer(): Promise<Awaited<ReturnType<typeof startBaselineEcho>> & { port: number }> {
  const server = await startBaselineEcho({ place });
  return { ...server, port: Number(new URL(server.echoUrl).port) };
}

/** A bare TCP peer whose behaviour each test chooses. */
async function startPeer(onSocket: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer(onSocket);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}

function call(c: EchoConnection): Promise<{ error: string | undefined; body: Buffer | undefined }> {
  return new Promise((resolve) => c.call(Buffer.alloc(0), true, (error, body) => resolve({ error, body })));
}

/** Runs the load generator's CLI on a job as the bench does (a job file in a private scratch folder) and returns its result. */
async function runLoadgen(job: LoadgenJob): Promise<LoadgenResult> {
  const scratch = mkdtempSync(path.join(tmpdir(), 'echo-job-'));
  try {
    return await runBenchLoadgen({ place, scratch }, job);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

describe('bench TCP echo floor (baseline-echo, echo client, loadgen echo mode)', () => {
  const cleanup: Array<() => void> = [];
  afterEach(() => {
    for (const f of cleanup.splice(0)) f();
  });
  /** An echo client connected to a bare peer that behaves as `onSocket` says; both closed after the test. */
  async function connectedTo(onSocket: (s: Socket) => void): Promise<EchoConnection> {
    const peer = await startPeer(onSocket);
    cleanup.push(() => peer.server.close());
    const c = await EchoConnection.open('127.0.0.1', peer.port);
    cleanup.push(() => c.close());
    return c;
  }

  it('echoes 300 concurrent calls, each answered with exactly the bytes it sent', async () => {
    const echo = await startEchoServer();
    cleanup.push(() => void echo.stop());
    const c = await EchoConnection.open('127.0.0.1', echo.port);
    cleanup.push(() => c.close());
    const results = await Promise.all(Array.from({ length: 300 }, () => call(c)));
    expect(results.filter((r) => r.error !== undefined)).to.deep.equal([]);
    const seqs = results.map((r) => r.body!.readUInt32BE(4));
    expect(seqs).to.deep.equal(Array.from({ length: 300 }, (_, i) => i));
    expect(results.every((r) => r.body!.length === ECHO_MESSAGE_BYTES)).to.equal(true);
  });

  it('reassembles echoes that arrive one byte at a time', async () => {
    const c = await connectedTo((s) =>
      s.on('data', (d: Buffer) => {
        for (const byte of d) s.write(Buffer.from([byte]));
      }),
    );
    const results = await Promise.all(Array.from({ length: 20 }, () => call(c)));
    expect(results.map((r) => r.error)).to.deep.equal(Array(20).fill(undefined));
  });

  it('fails a call whose echo differs, and every call after it on that connection', async () => {
    const c = await connectedTo((s) => s.on('data', (d: Buffer) => s.write(Buffer.alloc(d.length, 0x58))));
    expect((await call(c)).error).to.equal('the echo differs from the message sent');
    expect((await call(c)).error).to.equal('the echo differs from the message sent');
  });

  it('fails on bytes nobody asked for, and on a peer that closes with calls waiting', async () => {
    const c1 = await connectedTo((s) => s.write(Buffer.alloc(ECHO_MESSAGE_BYTES)));
    await new Promise((r) => setTimeout(r, 100));
    expect((await call(c1)).error).to.equal('an echo arrived for no call');

    const c2 = await connectedTo((s) => s.once('data', () => s.destroy()));
    expect((await call(c2)).error).to.equal('connection closed');
    expect((await call(c2)).error).to.equal('connection closed');
  });

  it('rejects a connection to a port nobody listens on', async () => {
    const peer = await startPeer(() => {});
    const port = peer.port;
    await new Promise((r) => peer.server.close(r));
    let error: unknown;
    await EchoConnection.open('127.0.0.1', port).catch((err: unknown) => (error = err));
    expect(String(error)).to.match(/ECONNREFUSED/);
  });

  it('drives the load generator open loop: every message echoed at the rate asked, a mute peer counted as errors', async function () {
    this.timeout(20_000);
    const echo = await startEchoServer();
    cleanup.push(() => void echo.stop());
    const ok = await runLoadgen({ target: `http://127.0.0.1:${echo.port}`, protocol: 'echo', mode: 'open', connections: 2, rate: 500, durationMs: 1000, warmupMs: 200, sampleEvery: 10 });
    expect(ok).to.include({ sent: 500, completed: 500, errors: 0, incorrect: 0, sampled: 50 });
    expect(ok.latencyMs.p50).to.be.above(0).and.below(50);

    const mute = await startPeer(() => {});
    cleanup.push(() => mute.server.close());
    const bad = await runLoadgen({ target: `http://127.0.0.1:${mute.port}`, protocol: 'echo', mode: 'open', connections: 2, rate: 200, durationMs: 500, sampleEvery: 10, drainMs: 300 });
    expect(bad.sent).to.equal(100);
    expect(bad.errors).to.equal(100);
    expect(bad.firstError).to.match(/timeout/);
  });
});
