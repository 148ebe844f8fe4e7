/**
 * Denies are errors: the sidecar answers a deny inside a successful gRPC call (HTTP 200,
 * grpc-status 0, a CheckResponse with a non-zero status and denied_response set), so the load
 * generator must look into every answer, not only the sampled ones it decodes.
 */
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { benchDir, runToEnd } from '../../bench/processes.js';
import type { LoadgenJob, LoadgenResult } from '../../bench/loadgen.js';
import { GrpcH2Connection } from '../../bench/h2client.js';
import { decodeTrailerBlock } from '../../bench/trailers.js';
import { CHECK_PATH, GRPC_REQUEST_HEADERS, allowMismatch, encodeCheckFrame, envoyCheckRequest, scanCheckResponse } from '../../bench/wire.js';
import { loadExtAuthzProtos } from '../../src/extauthz/protos.js';

const ALLOW = { status: { code: 0 }, ok_response: { headers: [{ header: { key: 'authorization', value: 'Bearer downstream' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }] } };
const DENY = { status: { code: 16 }, denied_response: { status: { code: 'Unauthorized' }, headers: [{ header: { key: 'www-authenticate', value: 'Bearer' } }], body: 'no' } };

/** A Check server that denies every second Check it gets (the 2nd, 4th, …). */
async function startHalfDenying(): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  let n = 0;
  server.addService(loadExtAuthzProtos().authorizationService, {
    Check: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, ++n % 2 === 0 ? DENY : ALLOW),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, port };
}

function encoded(response: object): Buffer {
  return loadExtAuthzProtos().authorizationService.Check.responseSerialize(response) as Buffer;
}

describe('bench: an ext_authz deny counts as an error', function () {
  this.timeout(60_000);
  let scratch: string;
  let s: Awaited<ReturnType<typeof startHalfDenying>>;
  before(async () => {
    scratch = mkdtempSync(path.join(tmpdir(), 'bench-deny-'));
    s = await startHalfDenying();
  });
  after(() => {
    s.server.forceShutdown();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('scanCheckResponse: an allow passes; a non-zero status or denied_response does not', () => {
    const scan = (r: object) => {
      const b = encoded(r);
      return scanCheckResponse(b, 0, b.length);
    };
    expect(scan(ALLOW)).to.equal(undefined);
    expect(scan({ status: { code: 0 } })).to.equal(undefined);
    expect(scan({})).to.equal(undefined);
    expect(scan({ ...ALLOW, dynamic_metadata: { fields: { a: { string_value: 'b' } } } })).to.equal(undefined);
    expect(scan(DENY)).to.match(/^denied/);
    expect(scan({ status: { code: 7, message: 'x' } })).to.match(/^denied \(status code 7\)/);
    expect(scan({ status: { code: 0 }, denied_response: {} })).to.match(/^denied/);
    // Offsets are honoured (the client scans a view into a larger read).
    const b = Buffer.concat([Buffer.from([1, 2, 3]), encoded(DENY), Buffer.from([9])]);
    expect(scanCheckResponse(b, 3, b.length - 1)).to.match(/^denied/);
  });

  it('allowMismatch: checks the injected value and its append_action', () => {
    const expected = { header: 'authorization', value: 'Bearer downstream' };
    expect(allowMismatch(ALLOW, expected)).to.equal(undefined);
    expect(allowMismatch(ALLOW, { header: 'authorization', value: 'Bearer other' })).to.match(/other than the expected/);
    expect(allowMismatch({ status: { code: 0 }, ok_response: { headers: [{ header: { key: 'authorization', value: 'Bearer downstream' } }] } }, expected)).to.match(/append_action/);
    expect(allowMismatch({ status: { code: 0 }, denied_response: {} }, undefined)).to.match(/denied_response/);
  });

  it('the HTTP/2 client fails every denied answer when given the scanner', async () => {
    const conn = await GrpcH2Connection.open('127.0.0.1', s.port, CHECK_PATH, GRPC_REQUEST_HEADERS, 5000, scanCheckResponse);
    try {
      const frame = encodeCheckFrame(envoyCheckRequest({ token: 'x' }));
      const results = await Promise.all(Array.from({ length: 40 }, () => new Promise<string | undefined>((resolve) => conn.call(frame, false, (err) => resolve(err)))));
      expect(results.filter((e) => e === undefined)).to.have.length(20);
      expect(results.filter((e) => e !== undefined && /^denied/.test(e))).to.have.length(20);
      // The trailers every success carried really say grpc-status 0.
      expect((await decodeTrailerBlock(conn.referenceTrailers!))['grpc-status']).to.equal('0');
    } finally {
      conn.close();
    }
  });

  for (const mode of ['closed', 'open'] as const) {
    it(`the load generator (${mode} loop, 1 in 25 sampled) counts every second answer as an error`, async () => {
      const frames = path.join(scratch, 'frames');
      writeFileSync(frames, encodeCheckFrame(envoyCheckRequest({ token: 'x' })));
      const job: LoadgenJob =
        mode === 'closed'
          ? { target: `http://127.0.0.1:${s.port}`, mode, connections: 2, framesFile: frames, concurrency: 8, count: 200, sampleEvery: 25, injectedHeader: 'authorization', injectedValue: 'Bearer downstream' }
          : { target: `http://127.0.0.1:${s.port}`, mode, connections: 2, framesFile: frames, rate: 400, durationMs: 500, warmupMs: 250, sampleEvery: 25, injectedHeader: 'authorization' };
      const file = path.join(scratch, `job-${mode}.json`);
      writeFileSync(file, JSON.stringify(job));
      // Asynchronously: the server answers from this process's event loop.
      const r = await runToEnd([], [process.execPath, path.join(benchDir, 'loadgen.js'), file], 30_000);
      expect(r.code, r.stderr).to.equal(0);
      const result = JSON.parse(r.stdout.trim().split('\n').pop()!) as LoadgenResult;
      const all = result.sent + result.unrecorded.sent;
      // The server alternates across phases and connections: half of everything sent, within one.
      expect(result.denied).to.be.closeTo(all / 2, 1);
      expect(result.errors).to.equal(result.denied);
      expect(result.firstError).to.match(/^denied/);
      if (mode === 'open') expect(result.unrecorded.errors, 'the lead-in counts').to.be.greaterThan(0);
      else expect(result.injectedValues).to.deep.equal(['Bearer downstream']);
    });
  }
});
