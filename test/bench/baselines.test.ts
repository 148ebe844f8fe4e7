/**
 * The bench's do-nothing gRPC baseline (bench/setup.ts startBaselineGrpc): by default it runs with
 * V8's defaults, and with `imageEnv()` it runs with the image's NODE_OPTIONS and malloc setting,
 * the third saturation candidate of check-warm. Checked in what the started process really got.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { placement } from '../../bench/processes.js';
import { imageEnv, startBaselineGrpc } from '../../bench/setup.js';

/** Unpinned (placement for one core): the test runs on whatever core is free. */
const unpinned = { place: placement(1) };

function environOf(pid: number): Record<string, string> {
  const entries = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
  return Object.fromEntries(entries.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
}

describe('bench baseline gRPC server environment', function () {
  this.timeout(30_000);

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
});
