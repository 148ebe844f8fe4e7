/**
 * CheckRequests a client starts and leaves unfinished (through the built sidecar): together they
 * hold at most Sidecar:ExtAuthz:MaxBufferedRequestBytes, the oldest past it is denied in band
 * (never a failed RPC), and one still unfinished after Sidecar:ExtAuthz:RequestReceiveTimeoutMs is
 * reset. Envoy sends each CheckRequest at once; a client speaking gRPC to the port itself does not
 * have to (src/extauthz/call-guard.ts).
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import { assertAlive, checkWith, decision, eventually, sample, scrape, startStack, type Stack } from '../faults/harness.js';
import { envoyCheckRequest, rawCheckClient, type CheckResult } from '../extauthz/fixtures.js';
import { loadExtAuthzProtos } from '../../src/extauthz/protos.js';
import { call } from '../helpers/e2e.js';

const MiB = 1024 * 1024;
const BUDGET_BYTES = 20 * MiB;
const RECEIVE_TIMEOUT_MS = 1_500;
const CHECK_PATH = '/envoy.service.auth.v3.Authorization/Check';
/** What each unfinished call sends of a 15 MiB message. */
const ZEROS = Buffer.alloc(8 * MiB);

/** One raw gRPC call on `session`, and what the sidecar sent back on it. */
interface RawCall {
  readonly stream: http2.ClientHttp2Stream;
  status?: number;
  readonly data: Buffer[];
  trailers?: http2.IncomingHttpHeaders;
  /** Resolves the RST_STREAM code (0 for a stream that ended without one) once the stream closed. */
  readonly closed: Promise<number>;
}

/** Starts a Check whose message declares `declaredBytes` and sends nothing of it yet. */
function startCall(session: http2.ClientHttp2Session, declaredBytes: number): RawCall {
  const stream = session.request({ ':method': 'POST', ':path': CHECK_PATH, 'content-type': 'application/grpc', te: 'trailers' });
  stream.on('error', () => {});
  const raw: RawCall = { stream, data: [], closed: new Promise((resolve) => stream.once('close', () => resolve(stream.rstCode ?? 0))) };
  stream.on('response', (headers) => (raw.status = Number(headers[':status'])));
  stream.on('data', (chunk: Buffer) => raw.data.push(chunk));
  stream.on('trailers', (trailers) => (raw.trailers = trailers));
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(declaredBytes, 1);
  stream.write(prefix);
  return raw;
}

/** Writes `bytes` of the message and resolves once they have left for the socket (or the call ended). */
function send(raw: RawCall, bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    if (raw.stream.closed || raw.stream.destroyed) return resolve();
    raw.stream.write(bytes, () => resolve());
    raw.stream.once('close', () => resolve());
  });
}

function connect(stack: Stack): http2.ClientHttp2Session {
  // Node's client counts the bytes it has queued to send against its own maxSessionMemory (10 MB)
  // and, past it, refuses the sidecar's answers (RST_STREAM ENHANCE_YOUR_CALM): raised, as Envoy has no such bound.
  const session = http2.connect(`http://127.0.0.1:${stack.sidecar.listening.extAuthz!.port}`, { maxSessionMemory: 1_000 });
  session.on('error', () => {});
  return session;
}

/** The CheckResponse in a call's answer (one length-prefixed gRPC message). */
function answer(raw: RawCall): CheckResult {
  const framed = Buffer.concat(raw.data);
  expect(framed.length, 'one gRPC message').to.be.greaterThan(5);
  expect(framed.readUInt32BE(1), 'its length prefix').to.equal(framed.length - 5);
  return loadExtAuthzProtos().authorizationService.Check.responseDeserialize(framed.subarray(5)) as CheckResult;
}

/** The sidecar's peak resident set so far (VmHWM), in bytes: no sampling can miss the peak. */
function peakRss(stack: Stack): number {
  const kib = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${stack.sidecar.child.pid}/status`, 'utf8'))?.[1];
  expect(kib, 'VmHWM in /proc/<pid>/status').to.be.a('string');
  return Number(kib) * 1024;
}

describe('ext_authz: CheckRequests left unfinished (built sidecar)', function () {
  this.timeout(60_000);
  let stack: Stack;
  before(async () => {
    stack = await startStack({
      Sidecar__ExtAuthz__MaxBufferedRequestBytes: String(BUDGET_BYTES),
      Sidecar__ExtAuthz__RequestReceiveTimeoutMs: String(RECEIVE_TIMEOUT_MS),
    });
    expect(await eventually(async () => (await call(`${stack.management}/readyz`)).status === 200, 15_000), '/readyz 200').to.equal(true);
  });
  after(async () => {
    await stack?.close();
  });

  it('denies the oldest in band (503 request_body_budget_exceeded) once together they would hold more than MaxBufferedRequestBytes, and refuses the rest of its request', async () => {
    const session = connect(stack);
    try {
      const [a, b, c] = [startCall(session, 15 * MiB), startCall(session, 15 * MiB), startCall(session, 15 * MiB)];
      await send(a, ZEROS);
      await send(b, ZEROS);
      await send(c, ZEROS); // 24 MiB unfinished: past the 20 MiB budget
      expect(await a.closed, 'RST_STREAM NO_ERROR after the answer (RFC 9113 §8.1)').to.equal(http2.constants.NGHTTP2_NO_ERROR);
      expect(a.status).to.equal(200);
      expect(a.trailers?.['grpc-status'], 'a successful Check, not a failed RPC').to.equal('0');
      const deny = answer(a);
      expect(decision(deny)).to.equal('request_body_budget_exceeded');
      expect(deny.status?.code, 'google.rpc UNAVAILABLE').to.equal(14);
      expect(deny.denied_response?.status?.code).to.equal('ServiceUnavailable');
      expect(deny.denied_response?.headers?.map((h: { header?: { key?: string; value?: string } }) => [h.header?.key, h.header?.value])).to.deep.include(['retry-after', '1']);
      // The two younger ones fit the budget; still unfinished after the receive timeout, they are reset.
      expect(await b.closed).to.equal(http2.constants.NGHTTP2_CANCEL);
      expect(await c.closed).to.equal(http2.constants.NGHTTP2_CANCEL);
      expect(b.status, 'no answer on a reset call').to.equal(undefined);
    } finally {
      session.destroy();
    }
    const metrics = await scrape(stack);
    expect(sample(metrics, 'entra_sidecar_ext_authz_checks_total{decision="deny",reason="request_body_budget_exceeded"}')).to.equal(1);
    expect(sample(metrics, 'entra_sidecar_ext_authz_receive_timeouts_total')).to.equal(2);
    expect(stack.sidecar.lines.some((l) => l.includes('"code":"request_body_budget_exceeded"'))).to.equal(true);
    expect(decision(await checkWith(stack, {})), 'the same port goes on answering').to.equal('credential_missing');
    await assertAlive(stack);
  });

  it('resets a Check still unfinished RequestReceiveTimeoutMs after its first bytes (RST_STREAM CANCEL), a small one too', async () => {
    const session = connect(stack);
    try {
      // An empty CheckRequest, whole, from a client that never ends its request: it holds no
      // unfinished message, so the guard leaves it alone (opened first, it outlives the reset below).
      const whole = startCall(session, 0);
      const started = Date.now();
      // 300 bytes of a 1,000-byte message: one DATA frame, and the message is not whole.
      const small = startCall(session, 1_000);
      await send(small, Buffer.alloc(300));
      expect(await small.closed).to.equal(http2.constants.NGHTTP2_CANCEL);
      const took = Date.now() - started;
      expect(took).to.be.at.least(RECEIVE_TIMEOUT_MS - 50).and.below(RECEIVE_TIMEOUT_MS + 2_000);
      expect(whole.stream.closed, 'a call with a whole message is not reset').to.equal(false);
      expect(decision(await checkWith(stack, {}))).to.equal('credential_missing');
    } finally {
      session.destroy();
    }
    await assertAlive(stack);
  });

  it('holds memory to the budget while 40 calls each leave 15 MiB unfinished over 4 connections', async () => {
    // Unbounded, this held 600 MiB (finding 47: 100 calls took a sidecar from 67 MB to 1.3 GB).
    const before = peakRss(stack);
    const sessions = Array.from({ length: 4 }, () => connect(stack));
    try {
      const calls = sessions.flatMap((s) => Array.from({ length: 10 }, () => startCall(s, 15 * MiB)));
      await Promise.all(
        calls.map(async (raw) => {
          await send(raw, ZEROS);
          await send(raw, ZEROS.subarray(0, 7 * MiB - 1));
        }),
      );
      const peak = peakRss(stack);
      expect(peak - before, `peak RSS grew from ${before} to ${peak}`).to.be.below(200 * MiB);
      const shed = calls.filter((raw) => raw.status === 200).length;
      expect(shed, 'calls denied for the budget').to.be.at.least(30);
    } finally {
      for (const s of sessions) s.destroy();
    }
    await assertAlive(stack);
  });

  it('a gRPC client answered before its request was whole reads the deny as a Check response', async () => {
    // Three grpc-js clients, each on a connection of its own and connected before any sends, send
    // one pre-encoded 15 MiB CheckRequest each at once: the sidecar reads the three sockets in
    // turn, so the messages arrive side by side. (Calls sharing one connection, each encoded as it
    // is sent, can arrive one after another: they did on Node 24.)
    const address = `127.0.0.1:${stack.sidecar.listening.extAuthz!.port}`;
    const clients = Array.from({ length: 3 }, () => rawCheckClient(address, { 'grpc.use_local_subchannel_pool': 1 }));
    try {
      await Promise.all(clients.map((c) => c.ready(10_000)));
      const big = loadExtAuthzProtos().authorizationService.Check.requestSerialize(envoyCheckRequest({ headers: { 'x-pad': 'p'.repeat(15 * MiB) } }));
      const answers = await Promise.all(clients.map((c) => c.send(big)));
      for (const a of answers) expect(a.err, 'a deny in band, not a failed RPC').to.equal(undefined);
      const codes = answers.map((a) => decision(a.res!));
      // Each is a deny in band: for the budget, or, once whole, for its size (431).
      for (const code of codes) expect(['request_body_budget_exceeded', 'request_headers_too_large'], codes.join()).to.include(code);
      expect(codes).to.include('request_body_budget_exceeded');
    } finally {
      for (const c of clients) c.close();
    }
    await assertAlive(stack);
  });
});
