import { expect } from 'chai';
import { parseRetryAfter } from '../../src/acquisition/msal-network.js';
import { MAX_RETRY_AFTER_SEC } from '../../src/errors.js';

describe('Retry-After from Entra and managed-identity endpoints', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');

  it('reads delta-seconds and an HTTP-date as whole seconds from now', () => {
    expect(parseRetryAfter('30', now)).to.equal(30);
    expect(parseRetryAfter(' 0 ', now)).to.equal(0);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:01:30 GMT', now)).to.equal(90);
    expect(parseRetryAfter('Wed, 31 Dec 2025 23:00:00 GMT', now), 'a date in the past').to.equal(0);
  });

  it('bounds it to an hour, as msal does, whether it is a number of seconds or a date', () => {
    expect(MAX_RETRY_AFTER_SEC).to.equal(3600);
    expect(parseRetryAfter('3600', now)).to.equal(3600);
    expect(parseRetryAfter('315360000', now)).to.equal(3600);
    expect(parseRetryAfter('9'.repeat(400), now), 'beyond a double').to.equal(3600);
    expect(parseRetryAfter('Sat, 01 Jan 2126 00:00:00 GMT', now)).to.equal(3600);
  });

  it('ignores what is neither', () => {
    for (const v of [undefined, '', '  ', 'soon', 'in a minute']) expect(parseRetryAfter(v, now), String(v)).to.equal(undefined);
  });
});
