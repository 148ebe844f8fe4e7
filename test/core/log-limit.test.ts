/** The per-code bound on failure log lines (src/log-limit.ts), on a controlled clock. */
import { expect } from 'chai';
import { createLogLimiter } from '../../src/log-limit.js';

describe('log limiter', function () {
  it('allows a number of lines per second per key, then reports how many it held back', function () {
    let t = 0;
    const limiter = createLogLimiter(3, false, () => t);
    expect([1, 2, 3, 4, 5].map(() => limiter.allow('a'))).to.deep.equal([true, true, true, false, false]);
    // Another key has its own budget.
    expect(limiter.allow('b')).to.equal(true);
    expect(limiter.suppressed('b')).to.deep.equal({});
    t = 999;
    expect(limiter.allow('a')).to.equal(false);
    t = 1000;
    expect(limiter.allow('a')).to.equal(true);
    expect(limiter.suppressed('a')).to.deep.equal({ suppressed: 3 });
    expect(limiter.suppressed('a')).to.deep.equal({});
  });

  it('holds nothing back when unlimited (debug level)', function () {
    const limiter = createLogLimiter(1, true, () => 0);
    expect(Array.from({ length: 100 }, () => limiter.allow('a')).every(Boolean)).to.equal(true);
  });

  it('keeps at most 64 keys', function () {
    const limiter = createLogLimiter(1, false, () => 0);
    for (let i = 0; i < 64; i++) expect(limiter.allow(`k${i}`)).to.equal(true);
    expect(limiter.allow('one-too-many')).to.equal(false);
    expect(limiter.allow('k0')).to.equal(false);
  });
});
