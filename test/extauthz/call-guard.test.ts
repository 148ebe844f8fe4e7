/**
 * The ext_authz call guard (src/extauthz/call-guard.ts) over a real node:http2 server: what open
 * calls hold together is bounded, the calls still receiving their request go first (oldest
 * first), a call whose request does not arrive in time is reset, and a closed call gives back what
 * it held. The built sidecar's own test is in test/abuse/limits.test.ts.
 */
import { expect } from 'chai';
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { CALL_CHARGE_BYTES, guardCalls, type CallGuard } from '../../src/extauthz/call-guard.js';

const { NGHTTP2_REFUSED_STREAM, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_CANCEL } = http2.constants;

describe('ext_authz call guard', function () {
  this.timeout(20_000);
  let server: Http2Server;
  let guard: CallGuard;
  let session: ClientHttp2Session;
  /** The server's side of every call, to end them from there. */
  let calls: ServerHttp2Stream[];
  /** What a call counts before any request byte: CALL_CHARGE_BYTES and its headers (as open() sends them). */
  let perCall: number;

  /** Starts the server, the guard's limit being `callCount` calls with their headers plus `extra` bytes. */
  async function start(callCount: number, extra: number, receiveTimeoutMs = 60_000): Promise<void> {
    // The server never answers: every call stays open until the guard or the client ends it.
    server = http2.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const authority = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    perCall = CALL_CHARGE_BYTES + [':path', '/x', ':method', 'POST', ':authority', authority, ':scheme', 'http'].join('').length;
    calls = [];
    server.on('stream', (stream) => {
      stream.on('error', () => {});
      calls.push(stream);
    });
    guard = guardCalls([server], { maxHeldBytes: callCount * perCall + extra, receiveTimeoutMs });
    session = http2.connect(`http://${authority}`);
    session.on('error', () => {});
    await new Promise((resolve) => session.once('remoteSettings', resolve));
  }
  afterEach(async function () {
    endCalls();
    await sleep(50);
    session?.destroy();
    guard?.stop();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  });

  /**
   * Ends every call from the server's side. Not from the client's: its close() (or destroy) of a
   * call after the server reset another on the same connection spun in node:http2 (20.x) when the
   * server ran in the same process, as it does here (not with the server in another process).
   */
  function endCalls(): void {
    for (const call of calls ?? []) if (!call.closed) call.close();
  }
  /** Opens a call, sends `bytes` and ends its side when `end`. */
  function open(bytes: number, end: boolean): ClientHttp2Stream {
    const call = session.request({ ':method': 'POST', ':path': '/x' });
    call.on('error', () => {});
    if (bytes > 0) call.write(Buffer.alloc(bytes, 0x41));
    if (end) call.end();
    return call;
  }
  const closed = (call: ClientHttp2Stream): Promise<number> => new Promise((resolve) => (call.closed ? resolve(call.rstCode ?? 0) : call.once('close', () => resolve(call.rstCode ?? 0))));
  const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
  /** Waits until the guard has counted `bytes` (calls are counted as their frames arrive). */
  async function held(bytes: number): Promise<void> {
    const by = Date.now() + 5_000;
    while (guard.heldBytes !== bytes && Date.now() < by) await sleep(10);
    expect(guard.heldBytes).to.equal(bytes);
  }

  it('refuses a new call with REFUSED_STREAM when the open calls hold the limit and none is still receiving', async function () {
    await start(4, 0);
    const done = Array.from({ length: 4 }, () => open(0, true));
    await held(4 * perCall);
    const refused = open(0, true);
    expect(await closed(refused)).to.equal(NGHTTP2_REFUSED_STREAM);
    for (const call of done) expect(call.closed, 'a call whose request is complete is never reset').to.equal(false);
    endCalls();
    await held(0);
  });

  it('resets the oldest call still receiving with ENHANCE_YOUR_CALM when another would pass the limit', async function () {
    await start(2, 48 * 1024);
    const older = open(30 * 1024, false);
    await held(perCall + 30 * 1024);
    const newer = open(30 * 1024, false);
    expect(await closed(older)).to.equal(NGHTTP2_ENHANCE_YOUR_CALM);
    await held(perCall + 30 * 1024);
    expect(newer.closed).to.equal(false);
    endCalls();
    await held(0);
  });

  it('resets a call whose request has not arrived in full within the receive time, and never one whose request has', async function () {
    await start(2, 1024 * 1024, 1_000);
    const t0 = Date.now();
    const stalled = open(1024, false);
    const complete = open(1024, true);
    expect(await closed(stalled)).to.equal(NGHTTP2_CANCEL);
    // Reset between one and two sweeps (1 s each) after it opened.
    expect(Date.now() - t0).to.be.within(1_000, 3_500);
    await sleep(1_500);
    expect(complete.closed).to.equal(false);
    await held(perCall + 1024);
    endCalls();
    await held(0);
  });
});
