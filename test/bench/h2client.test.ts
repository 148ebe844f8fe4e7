/**
 * The bench load generator's HTTP/2 client (bench/h2client.ts) against a real grpc-js server: it
 * decides which answers the bench counts as errors, so a client that took a gRPC error for a
 * success would hide a failing server behind good figures.
 */
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { GrpcH2Connection } from '../../bench/h2client.js';
import { CHECK_PATH, GRPC_REQUEST_HEADERS, decodeCheckFrame, encodeCheckFrame, envoyCheckRequest } from '../../bench/wire.js';
import { loadExtAuthzProtos } from '../../src/extauthz/protos.js';

interface ReadCheck {
  attributes?: { request?: { http?: { path?: string } } };
}

const OK = { status: { code: 0 }, ok_response: { headers: [{ header: { key: 'authorization', value: 'Bearer downstream' } }] } };

/** Answers by the request path: `/fail` → PERMISSION_DENIED, `/extra-trailer` → OK plus a trailer, else OK. */
async function startServer(): Promise<{ server: grpc.Server; port: number; calls: () => number }> {
  const protos = loadExtAuthzProtos();
  const server = new grpc.Server();
  let calls = 0;
  server.addService(protos.authorizationService, {
    Check: (call: grpc.ServerUnaryCall<ReadCheck, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      calls++;
      const path = call.request.attributes?.request?.http?.path;
      if (path === '/fail') {
        callback({ code: grpc.status.PERMISSION_DENIED, details: 'no' });
      } else if (path === '/extra-trailer') {
        const trailer = new grpc.Metadata();
        trailer.set('x-extra', 'yes');
        callback(null, OK, trailer);
      } else {
        callback(null, OK);
      }
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, port, calls: () => calls };
}

function call(c: GrpcH2Connection, frame: Buffer, keepBody = true): Promise<{ error: string | undefined; body: Buffer | undefined }> {
  return new Promise((resolve) => c.call(frame, keepBody, (error, body) => resolve({ error, body })));
}

describe('bench HTTP/2 client (h2client)', () => {
  let s: Awaited<ReturnType<typeof startServer>>;
  let conn: GrpcH2Connection | undefined;
  const frameFor = (path: string) => encodeCheckFrame(envoyCheckRequest({ token: 'x'.repeat(1300), path }));

  beforeEach(async () => {
    s = await startServer();
  });
  afterEach(() => {
    conn?.close();
    conn = undefined;
    s.server.forceShutdown();
  });

  it('completes 300 concurrent calls on one connection and returns each message when asked for it', async () => {
    conn = await GrpcH2Connection.open('127.0.0.1', s.port, CHECK_PATH, GRPC_REQUEST_HEADERS);
    const frame = frameFor('/ok');
    const results = await Promise.all(Array.from({ length: 300 }, (_, i) => call(conn!, frame, i % 2 === 0)));
    expect(results.filter((r) => r.error !== undefined)).to.deep.equal([]);
    expect(s.calls()).to.equal(300);
    for (const [i, r] of results.entries()) {
      if (i % 2 === 0) expect(decodeCheckFrame(r.body!)?.ok_response?.headers?.[0]?.header?.value).to.equal('Bearer downstream');
      else expect(r.body).to.equal(undefined);
    }
  });

  it('counts a gRPC error (trailers-only), an unknown method and changed trailers as errors, and goes on', async () => {
    conn = await GrpcH2Connection.open('127.0.0.1', s.port, CHECK_PATH, GRPC_REQUEST_HEADERS);
    expect((await call(conn, frameFor('/ok'))).error).to.equal(undefined);
    expect((await call(conn, frameFor('/fail'))).error).to.match(/trailers-only/);
    expect((await call(conn, frameFor('/extra-trailer'))).error).to.match(/trailers differ/);
    expect((await call(conn, Buffer.from([0, 0, 0, 0, 3, 0xff, 0xff, 0xff]))).error).to.match(/trailers-only/);
    expect((await call(conn, frameFor('/ok'))).error).to.equal(undefined);

    const wrongMethod = await GrpcH2Connection.open('127.0.0.1', s.port, '/no.Such/Method', GRPC_REQUEST_HEADERS);
    try {
      expect((await call(wrongMethod, frameFor('/ok'))).error).to.match(/trailers-only/);
    } finally {
      wrongMethod.close();
    }
  });

  it('fails calls on a closed connection and refuses to open one to a closed port', async () => {
    conn = await GrpcH2Connection.open('127.0.0.1', s.port, CHECK_PATH, GRPC_REQUEST_HEADERS);
    conn.close();
    expect((await call(conn, frameFor('/ok'))).error).to.match(/closed/);
    s.server.forceShutdown();
    let refused: unknown;
    try {
      await GrpcH2Connection.open('127.0.0.1', s.port, CHECK_PATH, GRPC_REQUEST_HEADERS);
    } catch (err) {
      refused = err;
    }
    expect(refused).to.be.instanceOf(Error);
  });

  it('refuses a peer that closes the connection or never sends its SETTINGS', async () => {
    const sockets: Socket[] = [];
    const closer = createServer((sock) => sock.destroy());
    const mute = createServer((sock) => sockets.push(sock));
    await Promise.all([closer, mute].map((srv) => new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))));
    try {
      const outcome = (port: number, timeoutMs?: number) =>
        GrpcH2Connection.open('127.0.0.1', port, CHECK_PATH, GRPC_REQUEST_HEADERS, timeoutMs).then(
          () => 'opened',
          (err: Error) => err.message,
        );
      expect(await outcome((closer.address() as AddressInfo).port)).to.match(/closed|ECONNRESET/);
      expect(await outcome((mute.address() as AddressInfo).port, 200)).to.match(/closed/);
    } finally {
      for (const sock of sockets) sock.destroy();
      closer.close();
      mute.close();
    }
  });

  it('fails the calls in flight when the server goes away', async () => {
    conn = await GrpcH2Connection.open('127.0.0.1', s.port, CHECK_PATH, GRPC_REQUEST_HEADERS);
    expect((await call(conn, frameFor('/ok'))).error).to.equal(undefined);
    const pending = call(conn, frameFor('/ok'));
    s.server.forceShutdown();
    const r = await pending;
    // Either it was answered before the shutdown or it failed: never a hang.
    if (r.error !== undefined) expect(r.error).to.match(/GOAWAY|closed|RST_STREAM|socket/);
    expect((await call(conn, frameFor('/ok'))).error).to.not.equal(undefined);
  });

  it('sends no more DATA than the server connection window allows until the server opens it', async () => {
    // A bare HTTP/2 peer that never widens its window on its own (grpc-js and node:http2 do at once).
    let dataBytes = 0;
    let peer: Socket | undefined;
    const fake = createServer((sock) => {
      peer = sock;
      let buf = Buffer.alloc(0);
      let prefaceSeen = false;
      sock.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        if (!prefaceSeen) {
          if (buf.length < 24) return;
          buf = buf.subarray(24);
          prefaceSeen = true;
          sock.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])); // our SETTINGS (empty)
        }
        while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
          const length = buf.readUIntBE(0, 3);
          if (buf[3] === 0x0) dataBytes += length;
          buf = buf.subarray(9 + length);
        }
      });
    });
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    try {
      conn = await GrpcH2Connection.open('127.0.0.1', (fake.address() as AddressInfo).port, CHECK_PATH, GRPC_REQUEST_HEADERS);
      const frame = frameFor('/ok');
      const settled: Array<ReturnType<typeof call>> = [];
      for (let i = 0; i < 100; i++) settled.push(call(conn, frame, false));
      const until = async (cond: () => boolean) => {
        for (let i = 0; i < 100 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
      };
      await until(() => dataBytes >= 65_535 - frame.length);
      await new Promise((r) => setTimeout(r, 100));
      expect(dataBytes).to.be.greaterThan(0).and.at.most(65_535);
      const increment = Buffer.from([0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
      increment.writeUInt32BE(1_000_000, 9);
      peer!.write(increment);
      await until(() => dataBytes === 100 * frame.length);
      expect(dataBytes).to.equal(100 * frame.length);
      conn.close();
      for (const r of await Promise.all(settled)) expect(r.error).to.match(/closed/);
      conn = undefined;
    } finally {
      peer?.destroy();
      fake.close();
    }
  });
});
