/**
 * The bench's baselines (bench/setup.ts): the do-nothing server (startBaselineGrpc) and the
 * verify-only reference (startVerifyOnlyGrpc) run with V8's defaults, and with `imageEnv()` with
 * the image's NODE_OPTIONS and malloc setting: the third saturation candidate of check-warm and
 * the fourth of check-first-sight; and the bare node:http server, alone or with the sidecar's
 * dependencies loaded (http-warm's third candidate). Checked in what the started process really got.
 */
import { expect } from 'chai';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { placement } from '../../bench/processes.js';
import { imageEnv, startBaselineGrpc, startBaselineHttp, startVerifyOnlyGrpc } from '../../bench/setup.js';
import { BUNDLED_AT_START } from '../../src/build-bundle.js';
import { createAuthorizationClient } from '../../src/extauthz/protos.js';
import { check } from '../extauthz/fixtures.js';
import { envoyCheckRequest } from '../../bench/wire.js';

/** One Check with `token` to the server at `grpcUrl`; resolves with the CheckResponse's status code. */
async function checkStatus(grpcUrl: string, token: string): Promise<number> {
  const client = createAuthorizationClient(grpcUrl.replace(/^http:\/\//, ''));
  try {
    return Number((await check(client, envoyCheckRequest({ token }), 10_000)).status?.code ?? 0);
  } finally {
    client.close();
  }
}

/** Unpinned (placement for one core): the test runs on whatever core is free. */
const unpinned = { place: placement(1) };

function environOf(pid: number): Record<string, string> {
  const entries = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
  return Object.fromEntries(entries.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
}

describe('bench baseline gRPC server environment', function () {
  this.timeout(30_000);

  let scratch: string;
  before(() => {
    scratch = mkdtempSync(path.join(tmpdir(), 'bench-baselines-'));
  });
  after(() => rmSync(scratch, { recursive: true, force: true }));

  it("runs with V8's defaults unless told otherwise, and with the image's environment when given it", async () => {
    const image = imageEnv();
    expect(image.NODE_OPTIONS, 'the Dockerfile sets NODE_OPTIONS').to.be.a('string').and.not.equal('');
    const plain = await startBaselineGrpc(unpinned);
    const flagged = await startBaselineGrpc(unpinned, image);
    try {
      expect(environOf(plain.pid)).to.not.have.property('NODE_OPTIONS');
      const env = environOf(flagged.pid);
      for (const [k, v] of Object.entries(image)) expect(env[k], k).to.equal(v);
      // Both answer a Check, with an allow (status 0), whatever the token.
      for (const s of [plain, flagged]) expect(await checkStatus(s.grpcUrl, 'not-even-a-jwt')).to.equal(0);
    } finally {
      await Promise.all([plain.stop(), flagged.stop()]);
    }
  });

  it('runs the verify-only reference the same way: defaults, or the image environment when given it', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const signed = `${part({ alg: 'RS256', kid: 'k1', typ: 'JWT' })}.${part({ exp: Math.floor(Date.now() / 1000) + 600 })}`;
    const valid = `${signed}.${sign('sha256', Buffer.from(signed), privateKey).toString('base64url')}`;
    const sig = valid.split('.')[2];
    const forged = `${signed}.${sig.slice(0, -4)}${sig.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`;
    const jwksFile = path.join(scratch, 'jwks.json');
    writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'RS256', use: 'sig' }] }));
    const image = imageEnv();
    const plain = await startVerifyOnlyGrpc(unpinned, jwksFile);
    const flagged = await startVerifyOnlyGrpc(unpinned, jwksFile, image);
    try {
      expect(environOf(plain.pid)).to.not.have.property('NODE_OPTIONS');
      const env = environOf(flagged.pid);
      for (const [k, v] of Object.entries(image)) expect(env[k], k).to.equal(v);
      // Both are the verify-only reference, not the do-nothing server: the JWKS file is their argument.
      for (const s of [plain, flagged]) expect(readFileSync(`/proc/${s.pid}/cmdline`, 'utf8').split('\0')).to.include(jwksFile);
      // And they verify: a valid signature is allowed, a forged one denied (UNAUTHENTICATED, 16).
      for (const s of [plain, flagged]) {
        expect(await checkStatus(s.grpcUrl, valid)).to.equal(0);
        expect(await checkStatus(s.grpcUrl, forged)).to.equal(16);
      }
    } finally {
      await Promise.all([plain.stop(), flagged.stop()]);
    }
  });
});

describe('bench baseline HTTP server', function () {
  this.timeout(30_000);

  it("answers the same with and without the sidecar's dependencies loaded, and only the loaded one holds them", async () => {
    const bare = await startBaselineHttp(unpinned, 2024);
    const weighted = await startBaselineHttp(unpinned, 2024, true);
    try {
      expect(bare.listening.dependencies).to.equal(0);
      expect(weighted.listening.dependencies).to.equal(BUNDLED_AT_START.length);
      // The packages are really there: grpc-js, protobufjs, pino, prom-client and undici add
      // megabytes of code and data to the heap.
      expect(Number(weighted.listening.heapUsedBytes) - Number(bare.listening.heapUsedBytes)).to.be.greaterThan(2 * 1024 * 1024);
      for (const s of [bare, weighted]) {
        const r = await fetch(`${s.httpUrl}/Validate`, { headers: { authorization: 'Bearer x' } });
        expect(r.status).to.equal(200);
        expect(r.headers.get('content-type')).to.equal('application/json; charset=utf-8');
        expect(r.headers.get('cache-control')).to.equal('no-cache, no-store, must-revalidate');
        expect(Buffer.byteLength(await r.text())).to.equal(2024);
      }
    } finally {
      await Promise.all([bare.stop(), weighted.stop()]);
    }
  });
});
