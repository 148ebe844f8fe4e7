/**
 * A short soak (≈10 s) through scripts/soak.ts: mixed traffic on every route and ext_authz, no
 * unexpected answer, no RSS or handle growth trend, no secret in the logs. `npm run soak` runs it long.
 */
import { expect } from 'chai';
import { assertNoSecrets } from '../helpers/e2e.js';
import { runSoak, slope } from '../../scripts/soak.js';

describe('soak (short, built sidecar)', function () {
  this.timeout(60_000);

  it('computes a least-squares slope', () => {
    expect(slope([[0, 1], [1, 3], [2, 5]])).to.equal(2);
    expect(slope([[0, 5], [1, 5]])).to.equal(0);
  });

  it('serves 10 s of mixed traffic with no error and no growth trend', async () => {
    // Ten seconds are mostly heap warm-up, so only gross growth (4 MiB/s) fails here; `npm run soak` holds 512 KiB/s over 60 s.
    const result = await runSoak({ seconds: Number(process.env.SOAK_SECONDS ?? 10), concurrency: 6, maxRssSlopeBytesPerSec: 4 * 1024 * 1024, log: (l) => console.log(`      ${l}`) });
    expect(result.errors).to.deep.equal([]);
    expect(result.reasons).to.deep.equal([]);
    expect(result.requests).to.be.greaterThan(200);
    for (const [kind, n] of Object.entries(result.byKind)) expect(n, kind).to.be.greaterThan(0);
    assertNoSecrets(result.sidecarLines, [...result.tokens]);
  });
});
