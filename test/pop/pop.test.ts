/**
 * Proof of possession through the BUILT sidecar against the emulator: Microsoft-compatible PoP app
 * tokens (`PopPublicKey` → `token_type=pop` + `req_cnf`, answer `pop <token>`), our SignHttpRequest
 * (the sidecar signs the downstream request with its own key), and inbound PoP on `GET /Validate`
 * with every broken variant refused as `401 PoP error="invalid_token"`.
 */
import { expect } from 'chai';
import { createHash, generateKeyPairSync, createPublicKey, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CompactSign, decodeJwt, type JWK } from 'jose';
import { startEmulator, redactionFingerprint, type Emulator, type RecordedRequest } from '../../emulator/index.js';
import { runSidecarToExit, startSidecar, type RunningSidecar, waitForLine } from '../helpers/sidecar.js';
import { assertNoSecrets, call, secretsOf, sidecarEnv } from '../helpers/e2e.js';
import { decodeShr, jwkThumbprint, publicMembers, reqCnfFor, signShr, verifyShr, type ShrSigningKey } from '../../src/pop/shr.js';

async function rsaSigningKey(): Promise<ShrSigningKey> {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return signingKeyFrom(privateKey, 'RS256');
}

/** base64url(SHA-256(text)): the hash a `q` claim carries, computed here independently of src/pop. */
function sha256b64url(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('base64url');
}

/** A signed HTTP request built claim by claim the way Microsoft's SignedHttpRequestHandler writes one (not by signShr). */
function microsoftShr(key: ShrSigningKey, accessToken: string, claims: Record<string, unknown>): Promise<string> {
  const payload = { at: accessToken, ts: Math.floor(Date.now() / 1000), ...claims, nonce: crypto.randomUUID().replace(/-/g, ''), cnf: { jwk: { ...key.publicJwk, kid: key.thumbprint } } };
  return new CompactSign(Buffer.from(JSON.stringify(payload))).setProtectedHeader({ alg: key.alg, typ: 'pop' }).sign(key.privateKey);
}

async function signingKeyFrom(privateKey: KeyObject, alg: ShrSigningKey['alg']): Promise<ShrSigningKey> {
  const publicJwk = publicMembers(createPublicKey(privateKey).export({ format: 'jwk' }) as JWK);
  return { privateKey, publicJwk, thumbprint: await jwkThumbprint(publicJwk), alg };
}

interface SeenRequest {
  method: string;
  url: string;
  authorization?: string;
}

describe('proof of possession (built sidecar against the emulator)', function () {
  this.timeout(30_000);
  let emu: Emulator;
  let sidecar: RunningSidecar;
  let downstream: Server;
  let downstreamOrigin: string;
  let tmp: string;
  let sidecarKey: ShrSigningKey;
  let callerKey: ShrSigningKey;
  const seen: SeenRequest[] = [];
  const tokens: string[] = [];

  async function tokenRequestsOf<T>(run: () => Promise<T>): Promise<{ result: T; legs: RecordedRequest[] }> {
    const before = emu.requests().length;
    const result = await run();
    return { result, legs: emu.requests().slice(before).filter((r) => r.route === 'token') };
  }

  before(async () => {
    emu = await startEmulator();
    tmp = mkdtempSync(path.join(tmpdir(), 'agp-pop-'));
    // The sidecar's own key from Sidecar:Pop:KeyFile (EC P-256 here, so the ES256 path runs too).
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(path.join(tmp, 'pop.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    sidecarKey = await signingKeyFrom(privateKey, 'ES256');
    callerKey = await rsaSigningKey();
    downstream = createServer((req, res) => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization });
      res.setHeader('content-type', 'application/json');
      res.end('{"ok":true}');
    });
    await new Promise<void>((r) => downstream.listen(0, '127.0.0.1', r));
    const address = downstream.address();
    downstreamOrigin = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
    sidecar = await startSidecar(
      sidecarEnv(emu, {
        AzureAd__Scopes: 'access_as_user',
        Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated: 'true',
        Sidecar__PopValidation__ReplayCache: 'true',
        Sidecar__PopValidation__ValidateQ: 'true',
        Sidecar__Pop__KeyFile: path.join(tmp, 'pop.pem'),
        DownstreamApis__PopApp__Scopes__0: 'api://downstream/.default',
        DownstreamApis__PopApp__RequestAppToken: 'true',
        DownstreamApis__PopApp__AcquireTokenOptions__PopPublicKey: reqCnfFor(callerKey.thumbprint),
        DownstreamApis__PopUser__Scopes__0: 'api://downstream/read',
        DownstreamApis__PopUser__AcquireTokenOptions__PopPublicKey: reqCnfFor(callerKey.thumbprint),
        DownstreamApis__Signed__BaseUrl: `${downstreamOrigin}/`,
        DownstreamApis__Signed__RelativePath: 'api/items',
        DownstreamApis__Signed__ExtraQueryParameters__page: '2',
        DownstreamApis__Signed__Scopes__0: 'api://downstream/.default',
        DownstreamApis__Signed__RequestAppToken: 'true',
        DownstreamApis__Signed__SignHttpRequest: 'true',
        DownstreamApis__Graph__BaseUrl: `${downstreamOrigin}/`,
        DownstreamApis__Graph__RelativePath: 'v1.0/users?$select=id,displayName&q=a+b',
        DownstreamApis__Graph__Scopes__0: 'api://downstream/.default',
        DownstreamApis__Graph__RequestAppToken: 'true',
        DownstreamApis__Graph__SignHttpRequest: 'true',
        DownstreamApis__SignedUser__BaseUrl: `${downstreamOrigin}/`,
        DownstreamApis__SignedUser__Scopes__0: 'api://downstream/read',
        DownstreamApis__SignedUser__SignHttpRequest: 'true',
      }),
    );
  });
  after(async () => {
    const code = await sidecar?.stop();
    assertNoSecrets(sidecar?.lines ?? [], secretsOf(emu, tokens));
    await new Promise((r) => downstream?.close(r));
    await emu?.close();
    rmSync(tmp, { recursive: true, force: true });
    expect(code, 'graceful exit').to.equal(0);
  });

  describe('outbound PoP tokens (PopPublicKey, Microsoft-compatible)', () => {
    it('sends token_type=pop and req_cnf verbatim and answers "pop <token>" bound to the key', async () => {
      const { result, legs } = await tokenRequestsOf(() => call(`${sidecar.url}/AuthorizationHeaderUnauthenticated/PopApp`));
      expect(result.status, result.text).to.equal(200);
      const [scheme, token] = String(result.json().authorizationHeader).split(' ');
      tokens.push(token);
      expect(scheme).to.equal('pop');
      expect(legs).to.have.length(1);
      expect(legs[0].form).to.include({ client_id: emu.scenario.apps.sidecarApi.appId, grant_type: 'client_credentials', scope: 'api://downstream/.default', token_type: 'pop', req_cnf: reqCnfFor(callerKey.thumbprint) });
      expect(legs[0].form.client_secret).to.contain(redactionFingerprint(emu.scenario.apps.sidecarApi.secrets[0].value));
      expect(decodeJwt(token).cnf).to.deep.equal({ kid: callerKey.thumbprint });
      const again = await tokenRequestsOf(() => call(`${sidecar.url}/AuthorizationHeaderUnauthenticated/PopApp`));
      expect(again.legs, 'served from the cache').to.have.length(0);
      expect(again.result.json().authorizationHeader).to.equal(`pop ${token}`);
    });

    it('keys the cache by the PoP key: an overridden PopPublicKey gets its own token', async () => {
      const other = await rsaSigningKey();
      const r = await call(`${sidecar.url}/AuthorizationHeaderUnauthenticated/PopApp?optionsOverride.AcquireTokenOptions.PopPublicKey=${reqCnfFor(other.thumbprint)}`);
      expect(r.status, r.text).to.equal(200);
      const token = String(r.json().authorizationHeader).split(' ')[1];
      tokens.push(token);
      expect(decodeJwt(token).cnf).to.deep.equal({ kid: other.thumbprint });
    });

    it('ignores PopPublicKey on the user (OBO) flow and returns Bearer', async () => {
      const user = await emu.mint({ kind: 'user', scp: 'access_as_user' });
      tokens.push(user);
      const { result, legs } = await tokenRequestsOf(() => call(`${sidecar.url}/AuthorizationHeader/PopUser`, { token: user }));
      expect(result.status, result.text).to.equal(200);
      expect(String(result.json().authorizationHeader)).to.match(/^Bearer /);
      tokens.push(String(result.json().authorizationHeader).slice(7));
      expect(legs[0].form).to.not.have.property('token_type');
      expect(legs[0].form).to.not.have.property('req_cnf');
    });
  });

  describe('SignHttpRequest (the sidecar signs downstream requests)', () => {
    it('binds the app token to the sidecar key and sends a signed HTTP request the downstream can verify', async () => {
      seen.length = 0;
      const { result, legs } = await tokenRequestsOf(() => call(`${sidecar.url}/DownstreamApiUnauthenticated/Signed`, { method: 'POST' }));
      expect(result.status, result.text).to.equal(200);
      expect(result.json().statusCode).to.equal(200);
      expect(legs[0].form).to.include({ token_type: 'pop', req_cnf: reqCnfFor(sidecarKey.thumbprint) });
      expect(seen).to.have.length(1);
      const auth = seen[0].authorization ?? '';
      expect(auth).to.match(/^PoP /);
      const shr = auth.slice(4);
      const at = decodeShr(shr).at;
      tokens.push(at);
      const boundKid = String((decodeJwt(at).cnf as { kid: string }).kid);
      expect(boundKid).to.equal(sidecarKey.thumbprint);
      const url = new URL(seen[0].url, downstreamOrigin);
      expect(url.pathname).to.equal('/api/items');
      const payload = await verifyShr(shr, {
        boundKid,
        method: seen[0].method,
        url,
        validateM: true,
        validateU: true,
        validateP: true,
        validateQ: true,
        acceptUnsignedQueryParameters: false,
        lifetimeSec: 60,
        clockSkewSec: 5,
      });
      expect(payload.m).to.equal('GET');
      expect(payload.q?.[0]).to.deep.equal(['page']);
      expect(payload.nonce).to.match(/^[0-9a-f]{32}$/);
      expect(payload.cnf.jwk).to.deep.equal(sidecarKey.publicJwk);
    });

    it('signs q as Microsoft does for ?$select=id,displayName&q=a+b: the raw name=value pieces, not re-encoded', async () => {
      seen.length = 0;
      const r = await call(`${sidecar.url}/DownstreamApiUnauthenticated/Graph`, { method: 'POST' });
      expect(r.status, r.text).to.equal(200);
      expect(seen).to.have.length(1);
      expect(seen[0].url).to.equal('/v1.0/users?$select=id,displayName&q=a+b');
      const payload = decodeShr((seen[0].authorization ?? '').slice(4));
      tokens.push(payload.at);
      expect(payload.p).to.equal('/v1.0/users');
      expect(payload.q).to.deep.equal([['$select', 'q'], sha256b64url('$select=id,displayName&q=a+b')]);
    });

    it('signs every request afresh but reuses the cached PoP token', async () => {
      seen.length = 0;
      const { legs } = await tokenRequestsOf(async () => {
        await call(`${sidecar.url}/DownstreamApiUnauthenticated/Signed`, { method: 'POST' });
        await call(`${sidecar.url}/DownstreamApiUnauthenticated/Signed`, { method: 'POST' });
      });
      expect(legs).to.have.length(0);
      const [a, b] = seen.map((s) => decodeShr((s.authorization ?? '').slice(4)));
      expect(a.at).to.equal(b.at);
      expect(a.nonce).to.not.equal(b.nonce);
    });

    it('fails closed on a delegated API: no Bearer token is sent in place of a signed request', async () => {
      seen.length = 0;
      const user = await emu.mint({ kind: 'user', scp: 'access_as_user' });
      tokens.push(user);
      const r = await call(`${sidecar.url}/DownstreamApi/SignedUser`, { method: 'POST', token: user });
      expect(r.status).to.equal(500);
      expect(seen).to.have.length(0);
    });

    it('refuses to start with a Sidecar:Pop:KeyFile that holds no private key', async () => {
      writeFileSync(path.join(tmp, 'bad.pem'), 'not a key');
      const { code, stdout, stderr } = await runSidecarToExit(sidecarEnv(emu, { Sidecar__Pop__KeyFile: path.join(tmp, 'bad.pem') }));
      expect(code).to.not.equal(0);
      expect(stdout + stderr).to.contain('Sidecar:Pop:KeyFile');
    });
  });

  describe('inbound PoP on GET /Validate', () => {
    const target = new URL('https://api.contoso.test:8443/orders/42?expand=lines');

    async function popToken(over: Parameters<Emulator['mint']>[0] = { kind: 'app' }, key: ShrSigningKey = callerKey): Promise<string> {
      const t = await emu.mint({ roles: ['Sidecar.Invoke'], ...over, claims: { cnf: { kid: key.thumbprint }, ...over.claims } });
      tokens.push(t);
      return t;
    }

    function validate(shr: string | undefined, headers: Record<string, string> = { 'original-method': 'GET', 'original-uri': target.href }) {
      return call(`${sidecar.url}/Validate`, { headers: { ...(shr ? { authorization: `PoP ${shr}` } : {}), ...headers } });
    }

    function expectRefused(r: Awaited<ReturnType<typeof validate>>, why: string): void {
      expect(r.status, why).to.equal(401);
      expect(r.headers.get('www-authenticate'), why).to.equal('PoP error="invalid_token"');
      expect(r.text, why).to.equal('');
    }

    it('accepts a valid signed request for an app-only bound token, without the AzureAd:Scopes gate', async () => {
      const at = await popToken();
      // The same token as Bearer is refused by the scope gate (app tokens have no scp): PoP skips it.
      expect((await call(`${sidecar.url}/Validate`, { token: at })).status).to.equal(403);
      const r = await validate(await signShr(callerKey, { accessToken: at, method: 'GET', url: target }));
      expect(r.status, r.text).to.equal(200);
      const body = r.json();
      expect(body.protocol).to.equal('PoP');
      expect(body.token).to.equal(at);
      expect(body.claims.cnf).to.deep.equal({ kid: callerKey.thumbprint });
    });

    it('accepts a signed method in lower case (methods compare case-insensitively)', async () => {
      const at = await popToken();
      const shr = await signShr(callerKey, { accessToken: at, method: 'get', url: target });
      expect((await validate(shr, { 'original-method': 'GET', 'original-uri': target.href })).status).to.equal(200);
    });

    it('refuses a missing original-uri, a missing original-method and a relative original-uri', async () => {
      const shr = await signShr(callerKey, { accessToken: await popToken(), method: 'GET', url: target });
      expectRefused(await validate(shr, { 'original-method': 'GET' }), 'no original-uri');
      expectRefused(await validate(shr, { 'original-uri': target.href }), 'no original-method');
      expectRefused(await validate(shr, { 'original-method': 'GET', 'original-uri': '/orders/42' }), 'relative original-uri');
      expect(await waitForLine(sidecar, "Missing required 'original-uri' header for PoP validation.")).to.equal(true);
    });

    it('refuses a signed request for another method, path or host', async () => {
      const at = await popToken();
      expectRefused(await validate(await signShr(callerKey, { accessToken: at, method: 'POST', url: target })), 'wrong method');
      expectRefused(await validate(await signShr(callerKey, { accessToken: at, method: 'GET', url: new URL('https://api.contoso.test:8443/orders/43') })), 'wrong path');
      expectRefused(await validate(await signShr(callerKey, { accessToken: at, method: 'GET', url: new URL('https://evil.example:8443/orders/42') })), 'wrong host');
    });

    it('counts every refused signed request in token_validation_failures_total (token_pop_invalid)', async () => {
      const metrics = `http://127.0.0.1:${sidecar.listening.management!.port}/metrics`;
      const count = async () => Number(/^entra_sidecar_token_validation_failures_total\{reason="token_pop_invalid"\} (\d+)$/m.exec((await call(metrics)).text)?.[1] ?? 0);
      const before = await count();
      const at = await popToken();
      for (let i = 0; i < 3; i++) expectRefused(await validate(await signShr(callerKey, { accessToken: at, method: 'POST', url: target })), 'wrong method');
      expect((await count()) - before).to.equal(3);
    });

    it('refuses a stale and a future-dated signed request', async () => {
      const at = await popToken();
      const now = Math.floor(Date.now() / 1000);
      expectRefused(await validate(await signShr(callerKey, { accessToken: at, method: 'GET', url: target, nowSec: now - 301 - 5 })), 'stale ts');
      expectRefused(await validate(await signShr(callerKey, { accessToken: at, method: 'GET', url: target, nowSec: now + 3600 })), 'future ts');
    });

    it('refuses a delegated embedded token, an unbound token and an invalid embedded token', async () => {
      const delegated = await popToken({ kind: 'user', scp: 'access_as_user' });
      expectRefused(await validate(await signShr(callerKey, { accessToken: delegated, method: 'GET', url: target })), 'delegated');
      const unbound = await emu.mint({ kind: 'app', roles: ['Sidecar.Invoke'] });
      tokens.push(unbound);
      expectRefused(await validate(await signShr(callerKey, { accessToken: unbound, method: 'GET', url: target })), 'no cnf');
      const expired = await popToken({ kind: 'app', expiresInSec: -3600 });
      expectRefused(await validate(await signShr(callerKey, { accessToken: expired, method: 'GET', url: target })), 'expired at');
      expect(await waitForLine(sidecar, 'not an app-only token')).to.equal(true);
    });

    it('never logs a token quoted in a signed request, whole or cut: token-shaped text is cut out before the reason is cut short', async () => {
      const quoted = await emu.mint({ kind: 'user', scp: 'access_as_user' });
      tokens.push(quoted);
      const at = await popToken();
      const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
      // The algorithm named in the header is quoted in the reason: here, a whole token.
      const shr = `${b64({ alg: quoted, typ: 'pop' })}.${b64({ at, ts: Math.floor(Date.now() / 1000), m: 'GET', u: target.host, p: target.pathname, cnf: { jwk: { kty: 'RSA', n: 'AQAB', e: 'AQAB' } } })}.AAAA`;
      // The refusals of the tests before may have used this second's share of the log limiter.
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const from = sidecar.lines.length;
      expectRefused(await validate(shr), 'a token as the algorithm');
      expect(await waitForLine(sidecar, 'PopValidationFailed', 3_000, from)).to.equal(true);
      const logged = sidecar.lines.slice(from).filter((l) => l.includes('PopValidationFailed'));
      expect(logged.length).to.be.greaterThan(0);
      const [head, claims] = quoted.split('.');
      for (const line of logged) {
        expect(line, 'the token\'s header').to.not.include(head);
        expect(line, 'the token\'s claims').to.not.include(claims.slice(0, 24));
        expect(line).to.include('[redacted]');
      }
    });

    it('refuses a request signed with a key other than the one the token is bound to', async () => {
      const at = await popToken();
      const thief = await rsaSigningKey();
      expectRefused(await validate(await signShr(thief, { accessToken: at, method: 'GET', url: target })), 'wrong key');
      // Claiming the bound key in cnf.jwk but signing with another fails the signature check.
      const forged = await signShr({ ...thief, publicJwk: callerKey.publicJwk, thumbprint: callerKey.thumbprint }, { accessToken: at, method: 'GET', url: target });
      expectRefused(await validate(forged), 'forged signature');
    });

    it('with ValidateQ, accepts a Microsoft-built signed request for ?$select=id,displayName and refuses it for another query', async () => {
      const at = await popToken();
      const uri = 'https://graph.contoso.test/v1.0/users?$select=id,displayName';
      const shr = await microsoftShr(callerKey, at, { m: 'GET', u: 'graph.contoso.test', p: '/v1.0/users', q: [['$select'], sha256b64url('$select=id,displayName')] });
      expectRefused(await validate(shr, { 'original-method': 'GET', 'original-uri': 'https://graph.contoso.test/v1.0/users?$select=id,mail' }), 'other query');
      const r = await validate(shr, { 'original-method': 'GET', 'original-uri': uri });
      expect(r.status, r.text).to.equal(200);
      expect(r.json().token).to.equal(at);
    });

    it("with ValidateQ, reads the query of original-uri as written (an apostrophe is not re-encoded as %27)", async () => {
      const at = await popToken();
      const filter = "$filter=startswith(displayName,'A')";
      const shr = await microsoftShr(callerKey, at, { m: 'GET', u: 'graph.contoso.test', p: '/v1.0/users', q: [['$filter'], sha256b64url(filter)] });
      const r = await validate(shr, { 'original-method': 'GET', 'original-uri': `https://graph.contoso.test/v1.0/users?${filter}` });
      expect(r.status, r.text).to.equal(200);
    });

    it('refuses a replayed signed request when the replay cache is on', async () => {
      const shr = await signShr(callerKey, { accessToken: await popToken(), method: 'GET', url: target });
      expect((await validate(shr)).status).to.equal(200);
      expectRefused(await validate(shr), 'replay');
    });
  });
});
