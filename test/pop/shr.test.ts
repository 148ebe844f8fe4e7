/** Signed HTTP Request signing and verification (src/pop/shr.ts): each check refuses for its own reason. */
import { expect } from 'chai';
import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
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

/**
 * `q` and `p` as Microsoft computes them. The expected values are written out by hand from
 * SignedHttpRequestHandler.cs (SanitizeQueryParams, AddQClaim, ValidateQClaim, AddPClaim,
 * ValidatePClaim) and .NET's Uri.Query / Uri.AbsolutePath escaping; several rows are Microsoft's own
 * CreateQClaim test vectors (SignedHttpRequestCreationTests.cs).
 */
describe('q and p the way Microsoft.IdentityModel.Protocols.SignedHttpRequest computes them', () => {
  let k: ShrSigningKey;
  const NOW = 1_767_225_600;
  const sha = (text: string) => createHash('sha256').update(text, 'utf8').digest('base64url');
  /** An SHR built by hand, claim by claim, as Microsoft's handler writes one (not by signShr). */
  function microsoftShr(claims: Record<string, unknown>): Promise<string> {
    const payload = { at: 'at.value.sig', ts: NOW, m: 'GET', ...claims, nonce: '0123456789abcdef0123456789abcdef', cnf: { jwk: { ...k.publicJwk, kid: k.thumbprint } } };
    return new CompactSign(Buffer.from(JSON.stringify(payload))).setProtectedHeader({ alg: 'RS256', typ: 'pop' }).sign(k.privateKey);
  }
  const checks = (url: string, over: Partial<ShrVerification> = {}): ShrVerification => ({
    boundKid: k.thumbprint,
    method: 'GET',
    url: new URL(url),
    validateM: true,
    validateU: true,
    validateP: true,
    validateQ: true,
    acceptUnsignedQueryParameters: true,
    lifetimeSec: 300,
    clockSkewSec: 60,
    nowSec: NOW,
    ...over,
  });

  before(async () => {
    k = await key();
  });

  // [request URL, q names, the exact "name=value&…" text Microsoft hashes]
  const vectors: Array<[string, string[], string]> = [
    ['https://api.contoso.test/v1/items?top=10', ['top'], 'top=10'],
    ['https://graph.contoso.test/v1.0/users?$select=id,displayName', ['$select'], '$select=id,displayName'],
    ['https://api.contoso.test/search?q=a+b', ['q'], 'q=a+b'],
    ['https://api.contoso.test/x?at=2026-01-01T00:00:00Z', ['at'], 'at=2026-01-01T00:00:00Z'],
    ['https://api.contoso.test/x?mail=a@b.test&path=/x/y;z', ['mail', 'path'], 'mail=a@b.test&path=/x/y;z'],
    // Escapes stay exactly as sent (never decoded, hex case kept); order is the request's.
    ['https://api.contoso.test/x?b=two%20words&a=%7e', ['b', 'a'], 'b=two%20words&a=%7e'],
    // Microsoft's CreateQClaim vectors: ValidQ3, ValidQ4, ValidQ6, ValidRepeatedQ1/2, RepeatedQEmpty, ValidNoQueryParams1.
    ['https://www.contoso.com/path1?&queryParam1=value1&queryParam2=value2', ['queryParam1', 'queryParam2'], 'queryParam1=value1&queryParam2=value2'],
    ['https://www.contoso.com/path1?query Param1=value1', ['query%20Param1'], 'query%20Param1=value1'],
    ['https://www.contoso.com/path1?&queryParam1=value1&query=Param2=value2', ['queryParam1'], 'queryParam1=value1'],
    ['https://www.contoso.com/path1?queryParam1=value1&repeated=repeated1&repeated=repeate2', ['queryParam1'], 'queryParam1=value1'],
    ['https://www.contoso.com/path1?&repeated=repeated1&queryParam1=value1&repeated=repeate2', ['queryParam1'], 'queryParam1=value1'],
    ['https://www.contoso.com/path1?&repeated=repeated1&repeated=repeate2', [], ''],
    ['https://www.contoso.com/path1', [], ''],
    // A piece without '=' or with an empty value is not signed.
    ['https://api.contoso.test/x?flag&empty=&k=v', ['k'], 'k=v'],
    // Microsoft's quirks, kept: a name counts as seen only once stored; every leading '?' goes.
    ['https://api.contoso.test/x?a=&a=1', ['a'], 'a=1'],
    ['https://api.contoso.test/x??a=1', ['a'], 'a=1'],
    // Characters a WHATWG URL leaves alone in a query but .NET's Uri.Query escapes (and a bare '%').
    ['https://api.contoso.test/x?f={a|b}^`\\&pct=100%', ['f', 'pct'], 'f=%7Ba%7Cb%7D%5E%60%5C&pct=100%25'],
  ];

  for (const [url, names, hashed] of vectors) {
    it(`q for ${url} is [${JSON.stringify(names)}, sha256(${JSON.stringify(hashed)})]`, async () => {
      expect(queryClaim(new URL(url))).to.deep.equal([names, sha(hashed)]);
      // The signed request carries it, and a Microsoft-built SHR with it passes ValidateQ.
      expect(decodeShrPayload(await signShr(k, { accessToken: 'at.value.sig', method: 'GET', url: new URL(url), nowSec: NOW })).q).to.deep.equal([names, sha(hashed)]);
      const u = new URL(url);
      const shr = await microsoftShr({ u: u.host, p: u.pathname, q: [names, sha(hashed)] });
      expect(await verifyShr(shr, checks(url, { acceptUnsignedQueryParameters: false }))).to.have.property('at');
    });
  }

  it("reads the query of a URI's text as written (original-uri), where a URL has re-encoded ' as %27", async () => {
    const text = "https://graph.contoso.test/v1.0/users?$filter=startswith(displayName,'A')&$top=5#frag";
    expect(queryClaim(text)).to.deep.equal([['$filter', '$top'], sha("$filter=startswith(displayName,'A')&$top=5")]);
    expect(queryClaim(new URL(text))).to.deep.equal([['$filter', '$top'], sha('$filter=startswith(displayName,%27A%27)&$top=5')]);
    const shr = await microsoftShr({ u: 'graph.contoso.test', p: '/v1.0/users', q: queryClaim(text) });
    expect(await verifyShr(shr, checks(text, { originalUri: text }))).to.have.property('at');
  });

  it('ValidateQ hashes in the order q names the parameters, and refuses one the request repeats', async () => {
    const url = 'https://api.contoso.test/x?a=1&b=2&r=1&r=2';
    expect(await verifyShr(await microsoftShr({ u: 'api.contoso.test', p: '/x', q: [['b', 'a'], sha('b=2&a=1')] }), checks(url))).to.have.property('at');
    expect(await reason(verifyShr(await microsoftShr({ u: 'api.contoso.test', p: '/x', q: [['a', 'r'], sha('a=1&r=1')] }), checks(url)))).to.contain("'r'");
  });

  it('ValidateQ refuses a signed request without q even when the request has no query (as Microsoft does)', async () => {
    const url = 'https://api.contoso.test/x';
    expect(await reason(verifyShr(await microsoftShr({ u: 'api.contoso.test', p: '/x' }), checks(url)))).to.contain("'q'");
    expect(await verifyShr(await microsoftShr({ u: 'api.contoso.test', p: '/x', q: [[], sha('')] }), checks(url))).to.have.property('at');
  });

  it('p is the path as .NET escapes it, compared with leading and trailing slashes trimmed', async () => {
    const url = 'https://api.contoso.test/a|b^c/100%';
    expect(decodeShrPayload(await signShr(k, { accessToken: 'at.value.sig', method: 'GET', url: new URL(url), nowSec: NOW })).p).to.equal('/a%7Cb%5Ec/100%25');
    for (const p of ['/a%7Cb%5Ec/100%25', 'a%7Cb%5Ec/100%25/']) {
      expect(await verifyShr(await microsoftShr({ u: 'api.contoso.test', p, q: [[], sha('')] }), checks(url)), p).to.have.property('at');
    }
  });

  it('ValidatePresentClaims checks a listed h against no headers (the sidecar never has the signed headers)', async () => {
    const url = 'https://api.contoso.test/x';
    const present = { validateQ: false, validatePresentClaims: true, claimsToValidateWhenPresent: ['h'] };
    expect(await verifyShr(await microsoftShr({ u: 'api.contoso.test', p: '/x', h: [[], sha('')] }), checks(url, present))).to.have.property('at');
    expect(await reason(verifyShr(await microsoftShr({ u: 'api.contoso.test', p: '/x', h: [['content-type'], sha('content-type: application/json')] }), checks(url, present)))).to.contain("'h'");
  });
});

function decodeShrPayload(shr: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(shr.split('.')[1], 'base64url').toString('utf8')) as Record<string, unknown>;
}
