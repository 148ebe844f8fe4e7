/** Signed HTTP Request signing and verification (src/pop/shr.ts): each check refuses for its own reason. */
import { expect } from 'chai';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { CompactSign, type JWK } from 'jose';
import { jwkThumbprint, publicMembers, queryClaim, reqCnfFor, ShrError, signShr, verifyShr, type ShrSigningKey, type ShrVerification } from '../../src/pop/shr.js';
import { ReplayCache } from '../../src/pop/inbound.js';

async function key(): Promise<ShrSigningKey> {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const publicJwk = publicMembers(createPublicKey(privateKey).export({ format: 'jwk' }) as JWK);
  return { privateKey, publicJwk, thumbprint: await jwkThumbprint(publicJwk), alg: 'RS256' };
}

async function reason(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(ShrError);
    return (err as Error).message;
  }
  throw new Error('expected a refusal');
}

describe('signed HTTP requests (shr.ts)', () => {
  let k: ShrSigningKey;
  const url = new URL('https://api.contoso.test/orders/42?a=1&b=two%20words');
  const NOW = 1_767_225_600;
  const checks = (over: Partial<ShrVerification> = {}): ShrVerification => ({
    boundKid: k.thumbprint,
    method: 'GET',
    url,
    validateM: true,
    validateU: true,
    validateP: true,
    validateQ: false,
    acceptUnsignedQueryParameters: true,
    lifetimeSec: 300,
    clockSkewSec: 60,
    nowSec: NOW,
    ...over,
  });
  const sign = (over: Partial<Parameters<typeof signShr>[1]> = {}) => signShr(k, { accessToken: 'at.value.sig', method: 'GET', url, nowSec: NOW, ...over });

  before(async () => {
    k = await key();
  });

  it('req_cnf is base64url of {"kid": RFC 7638 thumbprint}', () => {
    expect(JSON.parse(Buffer.from(reqCnfFor(k.thumbprint), 'base64url').toString())).to.deep.equal({ kid: k.thumbprint });
    expect(k.thumbprint).to.match(/^[\w-]{43}$/);
  });

  it('round-trips and carries at, ts, m, u, p, q, nonce and the public cnf.jwk only', async () => {
    const payload = await verifyShr(await sign(), checks({ validateQ: true }));
    expect(payload).to.include({ at: 'at.value.sig', ts: NOW, m: 'GET', u: 'api.contoso.test', p: '/orders/42' });
    expect(payload.q).to.deep.equal(queryClaim(url));
    expect(payload.cnf.jwk).to.not.have.property('d');
  });

  it('accepts u as host:port with the default port and a trailing slash difference in p', async () => {
    expect(await verifyShr(await sign({ url: new URL('https://api.contoso.test/orders/42/') }), checks({ url: new URL('https://api.contoso.test:443/orders/42') }))).to.have.property('at');
  });

  it('refuses each mismatch for its own reason', async () => {
    expect(await reason(verifyShr(await sign({ method: 'DELETE' }), checks()))).to.contain("'m'");
    expect(await reason(verifyShr(await sign({ url: new URL('https://other.test/orders/42') }), checks()))).to.contain("'u'");
    expect(await reason(verifyShr(await sign({ url: new URL('https://api.contoso.test/orders') }), checks()))).to.contain("'p'");
    expect(await reason(verifyShr(await sign({ nowSec: NOW - 301 }), checks()))).to.contain('too old');
    expect(await reason(verifyShr(await sign({ nowSec: NOW + 61 }), checks()))).to.contain('future');
    expect(await reason(verifyShr(await sign(), checks({ boundKid: 'another-thumbprint' })))).to.contain('bound');
  });

  it('checks q only when asked, and refuses unsigned parameters when they are not accepted', async () => {
    const signedWithoutB = await sign({ url: new URL('https://api.contoso.test/orders/42?a=1') });
    expect(await verifyShr(signedWithoutB, checks())).to.have.property('at');
    expect(await verifyShr(signedWithoutB, checks({ validateQ: true }))).to.have.property('at');
    expect(await reason(verifyShr(signedWithoutB, checks({ validateQ: true, acceptUnsignedQueryParameters: false })))).to.contain('does not cover');
    const otherValue = await sign({ url: new URL('https://api.contoso.test/orders/42?a=2&b=two%20words') });
    expect(await reason(verifyShr(otherValue, checks({ validateQ: true })))).to.contain("'q'");
  });

  it('ValidatePresentClaims checks listed claims that are present even when their flag is off', async () => {
    const post = await sign({ method: 'POST' });
    expect(await verifyShr(post, checks({ validateM: false }))).to.have.property('at');
    expect(await reason(verifyShr(post, checks({ validateM: false, validatePresentClaims: true, claimsToValidateWhenPresent: ['m', 'p'] })))).to.contain("'m'");
  });

  it('refuses alg none, a private cnf.jwk and a bad signature', async () => {
    const payload = { at: 'x.y.z', ts: NOW, m: 'GET', u: url.host, p: url.pathname, cnf: { jwk: k.publicJwk } };
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    expect(await reason(verifyShr(`${b64({ alg: 'none', typ: 'pop' })}.${b64(payload)}.sig`, checks()))).to.contain('not allowed');
    const priv = k.privateKey.export({ format: 'jwk' }) as JWK;
    const withPrivate = await new CompactSign(Buffer.from(JSON.stringify({ ...payload, cnf: { jwk: priv } }))).setProtectedHeader({ alg: 'RS256', typ: 'pop' }).sign(k.privateKey);
    expect(await reason(verifyShr(withPrivate, checks()))).to.contain('not a public key');
    const good = await sign();
    const [h, p] = good.split('.');
    const other = await key();
    const resigned = await new CompactSign(Buffer.from(Buffer.from(p, 'base64url'))).setProtectedHeader(JSON.parse(Buffer.from(h, 'base64url').toString())).sign(other.privateKey);
    expect(await reason(verifyShr(resigned, checks()))).to.contain('signature');
  });

  it('the replay cache admits once per id, forgets after expiry and stays bounded', () => {
    const cache = new ReplayCache(3);
    expect(cache.admit('a', NOW + 10, NOW)).to.equal(true);
    expect(cache.admit('a', NOW + 10, NOW)).to.equal(false);
    expect(cache.admit('a', NOW + 30, NOW + 11)).to.equal(true);
    for (const id of ['b', 'c', 'd', 'e']) cache.admit(id, NOW + 100, NOW + 11);
    expect(cache.size).to.equal(3);
  });
});
