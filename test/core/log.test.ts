/** The process logger's redaction (src/log.ts): secret-carrying field names and token-shaped text. */
import { expect } from 'chai';
import { clip, redactTokens, safeCause } from '../../src/log.js';
import { memoryLogger } from '../helpers/logger.js';

describe('log redaction', function () {
  it('censors every secret-carrying field name down to three levels, in the spellings this code uses', function () {
    const { logger, lines } = memoryLogger();
    logger.info({ a: { b: { token: 'S4' } } }, 'deep');
    logger.info({ headers: { AUTHORIZATION: 'Bearer S5', Cookie: 'S6' } }, 'caps');
    logger.info({ result: { authorizationHeader: 'Bearer S7' }, session: { refreshToken: 'S8' }, cert: { base64EncodedValue: 'S9', keyPem: 'S10' } }, 'fields');
    const text = lines.join('');
    for (const secret of ['S4', 'S5', 'S6', 'S7', 'S8', 'S9', 'S10']) expect(text).not.to.contain(`"${secret}"`);
    expect(text.match(/\[redacted\]/g)).to.have.length(7);
  });

  it('cuts JWS and JWE strings out of free text, and caps a logged cause', function () {
    const jws = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl';
    const jwe = 'eyJhbGciOiJSU0EtT0FFUCJ9.a2V5.aXY.Y2lwaGVy.dGFn';
    expect(redactTokens(`before ${jws} and ${jwe} after`)).to.equal('before [redacted] and [redacted] after');
    const cause = safeCause(new Error(`${jws} ${'x'.repeat(1000)}`));
    expect(cause.startsWith('Error: [redacted] ')).to.equal(true);
    expect(cause.length).to.equal(501);
  });

  it('clips a text to its first characters, never between the halves of a surrogate pair', function () {
    expect(clip('abcdef', 6)).to.equal('abcdef');
    expect(clip('abcdef', 3)).to.equal('abc…');
    // A lone half has no UTF-8 form; a clipped name can reach a proto3 string (an ext_authz deny).
    expect(clip('ab\u{1F600}cd', 3)).to.equal('ab…');
    expect(clip('ab\u{1F600}cd', 4)).to.equal('ab\u{1F600}…');
  });

  it('looks at no more than 8,192 characters, so a pathological text cannot make it slow', function () {
    const hostile = 'eyJ'.repeat(100_000);
    const started = performance.now();
    const out = redactTokens(hostile);
    expect(out.length).to.be.at.most(8193);
    // Quadratic over 300,000 characters would take minutes; over 8,192 it is milliseconds.
    expect(performance.now() - started).to.be.below(2_000);
  });
});
