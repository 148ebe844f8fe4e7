/**
 * The bench's gRPC baselines (bench/setup.ts): the do-nothing server (startBaselineGrpc) and the
 * verify-only reference (startVerifyOnlyGrpc) run with V8's defaults, and with `imageEnv()` with
 * the image's NODE_OPTIONS and malloc setting: the third saturation candidate of check-warm and
 * the fourth of check-first-sight. Checked in what the started process really got.
 */
import { expect } from 'chai';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { placement } from '../../bench/processes.js';
import { imageEnv, startBaselineGrpc, startVerifyOnlyGrpc } from '../../bench/setup.js';

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
      expect(plain.grpcUrl).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(flagged.grpcUrl).to.not.equal(plain.grpcUrl);
    } finally {
      await Promise.all([plain.stop(), flagged.stop()]);
    }
  });

  it('runs the verify-only reference the same way: defaults, or the image environment when given it', async () => {
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
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
    } finally {
      await Promise.all([plain.stop(), flagged.stop()]);
    }
  });
});
