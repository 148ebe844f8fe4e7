/**
 * GET /Validate through the built sidecar against the emulator (issue 2 acceptance): every rule of
 * reference sidecar-http-api §4, the IDW10203 gate, JWE, key refresh behaviour, and no secret in logs.
 */
import { expect } from 'chai';
import { createPrivateKey } from 'node:crypto';
import { connect } from 'node:net';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { compactDecrypt, decodeJwt } from 'jose';
import { redactionFingerprint, startEmulator, type Emulator } from '../../emulator/index.js';
import { runSidecarToExit, startSidecar, type RunningSidecar } from '../helpers/sidecar.js';
import { assertNoSecrets, call, secretsOf, sidecarEnv, withEmulatorAndSidecars } from '../helpers/e2e.js';
import { createAuthorizationClient } from '../../src/extauthz/protos.js';
import { check, envoyCheckRequest } from '../extauthz/fixtures.js';

describe('GET /Validate (built sidecar against the emulator)', function () {
  this.timeout(30_000);
  let emu: Emulator;
  let sidecar: RunningSidecar;
  const tokens: string[] = [];
  const mint = async (req: Parameters<Emulator['mint']>[0]) => {
    const t = await emu.mint(req);
    tokens.push(t);
    return t;
  };
  const validate = (token?: string) => call(`${sidecar.url}/Validate`, { token });

  before(async () => {
    emu = await startEmulator();
    sidecar = await startSidecar(sidecarEnv(emu, { Sidecar__Validation__UnknownKidCooldownSec: '300' }));
  });
  after(async () => {
    const code = await sidecar?.stop();
    assertNoSecrets(sidecar?.lines ?? [], secretsOf(emu, tokens));
    await emu?.close();
    expect(code, 'graceful exit').to.equal(0);
  });

  it('accepts a valid v2 token and returns protocol, the token unchanged and its raw claims', async () => {
    const token = await mint({ kind: 'user', scp: 'access_as_user' });
    const r = await validate(token);
    expect(r.status).to.equal(200);
    expect(r.headers.get('content-type')).to.equal('application/json; charset=utf-8');
    expect(r.headers.get('cache-control')).to.equal('no-cache, no-store, must-revalidate');
    expect(r.headers.get('expires')).to.equal('0');
    expect(r.headers.get('pragma')).to.equal('no-cache');
    const body = r.json();
    expect(body.protocol).to.equal('Bearer');
    expect(body.token).to.equal(token);
    expect(body.claims.ver).to.equal('2.0');
    expect(body.claims.aud).to.equal(emu.scenario.apps.sidecarApi.appId);
    expect(body.claims.scp).to.equal('access_as_user');
    expect(body.claims.exp).to.be.a('number');
  });

  it('returns the claims exactly as issued: a 20-digit integer and decimals keep their spelling, cold and warm', async () => {
    // Reference §2.2 step 5: `claims` is the raw payload (a re-serialisation prints 12345678901234567000 and 100).
    const token = await mint({ kind: 'user', scp: 'access_as_user', rawClaims: { big: '12345678901234567890', hundred: '1.0e2', tenth: '0.1', nested: '{"n": [1.50, -0.0]}' } });
    const payload = Buffer.from(token.split('.')[1], 'base64url').toString('utf8');
    expect(payload).to.include('"big":12345678901234567890,"hundred":1.0e2,"tenth":0.1,"nested":{"n": [1.50, -0.0]}');
    // First sight, second sight (cached from here on), then the synchronous warm path.
    for (let i = 0; i < 3; i++) {
      const r = await validate(token);
      expect(r.status, r.text).to.equal(200);
      expect(r.text).to.equal(`{"protocol":"Bearer","token":"${token}","claims":${payload}}`);
      expect(r.json().claims.scp).to.equal('access_as_user');
    }
  });

  it('accepts a valid v1 token whose audience is api://{ClientId}', async () => {
    const token = await mint({ kind: 'user', version: 1, audience: `api://${emu.scenario.apps.sidecarApi.appId}`, scp: 'access_as_user' });
    const r = await validate(token);
    expect(r.status, r.text).to.equal(200);
    expect(r.json().claims.ver).to.equal('1.0');
  });

  it('accepts an app token with roles, and a role-free app token in ACL mode', async () => {
    expect((await validate(await mint({ kind: 'app', roles: ['Sidecar.Invoke'] }))).status).to.equal(200);
    expect((await validate(await mint({ kind: 'app', roles: [] }))).status).to.equal(200);
  });

  it('answers a warm caller the same on every request, whatever the scheme case, spacing or duplicate headers', async () => {
    const token = await mint({ kind: 'user', scp: 'access_as_user' });
    const url = `${sidecar.url}/Validate`;
    // First sight, second sight (cached from here on), then the synchronous warm path.
    const bodies = [];
    for (let i = 0; i < 4; i++) {
      const r = await validate(token);
      expect(r.status).to.equal(200);
      bodies.push(r.text);
    }
    expect(new Set(bodies).size).to.equal(1);
    for (const header of [`bearer ${token}`, `BEARER ${token}`, `Bearer  ${token}`, `Bearer ${token} `]) {
      const r = await call(url, { headers: { authorization: header } });
      expect([r.status, r.text], header.slice(0, 8)).to.deep.equal([200, bodies[0]]);
    }
    for (const header of [`Bearer\t${token}`, `Bearer ${token}x`, `Bearer ${token.slice(0, -1)}`, `Token ${token}`]) {
      expect((await call(url, { headers: { authorization: header } })).status, header.slice(0, 8)).to.equal(401);
    }
    // Two Authorization lines are one value joined with "," (as ASP.NET's StringValues.ToString()
    // gives JwtBearer in Microsoft's sidecar), from which no token parses: refused whichever comes
    // first. node:http alone would keep the first line and authenticate it.
    const raw = (first: string, second: string) =>
      new Promise<string>((resolve, reject) => {
        const port = Number(new URL(sidecar.url).port);
        const socket = connect(port, '127.0.0.1', () =>
          socket.end(`GET /Validate HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${first}\r\nAuthorization: ${second}\r\nConnection: close\r\n\r\n`),
        );
        let data = '';
        socket.on('data', (d: Buffer) => (data += d.toString()));
        socket.on('end', () => resolve(data));
        socket.on('error', reject);
      });
    expect(await raw(`Bearer ${token}`, 'Bearer not.a.token')).to.match(/^HTTP\/1\.1 401 /);
    expect(await raw('Bearer not.a.token', `Bearer ${token}`)).to.match(/^HTTP\/1\.1 401 /);
    expect(await raw(`Bearer ${token}`, `Bearer ${token}`), 'the same token twice').to.match(/^HTTP\/1\.1 401 /);
    expect(await raw(`Bearer ${token}`, 'Basic dXNlcjpwYXNz')).to.match(/^HTTP\/1\.1 401 /);
  });

  it('challenges with a bare Bearer and no body when no token is sent', async () => {
    const r = await validate();
    expect(r.status).to.equal(401);
    expect(r.headers.get('www-authenticate')).to.equal('Bearer');
    expect(r.text).to.equal('');
  });

  const rejected: Array<[string, () => Promise<string>, RegExp?]> = [
    ['an expired token (beyond the 5-minute skew)', () => mint({ kind: 'user', expiresInSec: -400 }), /expired/i],
    ['a token not valid for another 10 minutes', () => mint({ kind: 'user', notBeforeOffsetSec: 600 }), /not valid before/i],
    ['a token for another audience', () => mint({ kind: 'user', audience: emu.scenario.apps.downstreamApi.appId }), /audience/i],
    ['a v1 token whose audience is the bare client id', () => mint({ kind: 'user', version: 1, audience: emu.scenario.apps.sidecarApi.appId, claims: { aud: emu.scenario.apps.sidecarApi.appId } }), /audience/i],
    ['a token with a foreign issuer', () => mint({ kind: 'user', claims: { iss: 'https://evil.example/' + emu.scenario.tenants.primary.id + '/v2.0' } }), /issuer/i],
    ['a token from another tenant', () => mint({ kind: 'user', tenant: emu.scenario.tenants.secondary.id, user: 'secondaryUser' }), /issuer/i],
    // JsonWebTokenHandler checks the audience before the issuer: Microsoft names the audience here.
    ['a token for another API from another tenant', () => mint({ kind: 'user', tenant: emu.scenario.tenants.secondary.id, user: 'secondaryUser', audience: emu.scenario.apps.downstreamApi.appId }), /audience/i],
    ['an unsigned alg:none token', () => mint({ kind: 'user', signWith: 'none' }), /The signature is invalid/],
    ['an HS256 token keyed with the public key', () => mint({ kind: 'user', signWith: 'hs256-public-key' }), /The signature is invalid/],
    ['a token expired 400 s ago, dated as JwtBearer writes it', () => mint({ kind: 'user', expiresInSec: -400 }), /The token expired at '\d\d\/\d\d\/\d{4} \d\d:\d\d:\d\d'/],
    ['a token with a tampered payload', async () => {
      const [h, p, s] = (await mint({ kind: 'user', scp: 'access_as_user' })).split('.');
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
      claims.scp = 'access_as_user admin';
      return [h, Buffer.from(JSON.stringify(claims)).toString('base64url'), s].join('.');
    }, /signature/i],
    // Node's decoder ignores the unused low bits of the last character: the same signature bytes in another spelling.
    ['a token whose signature is spelled with the unused bits of its last character set', async () => {
      const token = await mint({ kind: 'user', scp: 'access_as_user' });
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      const unused = [0, 0, 15, 3][token.split('.')[2].length % 4];
      expect(unused, 'the signature leaves unused bits').to.not.equal(0);
      return token.slice(0, -1) + alphabet[alphabet.indexOf(token.at(-1)!) | unused];
    }, /The token signature is not base64url/],
    ['a token without ver', () => mint({ kind: 'user', claims: { ver: null } })],
    ['garbage', async () => 'not-a-jwt'],
    // String() throws on this object; the description must still be a 401's, not a 500.
    ['a JWE whose alg is an object', async () => `${Buffer.from('{"alg":{"toString":1,"valueOf":1},"enc":"A256GCM"}').toString('base64url')}.a.b.c.d`, /error_description="The key management algorithm '\(object\)' is not allowed"/],
    // The wrong part of an issuer is its tenant, at the end: a real issuer (74 characters here) is shown whole.
    ['a token from a tenant the app does not accept, its issuer shown whole', () => mint({ kind: 'user', tenant: 'secondary', user: 'secondaryUser', scp: 'access_as_user' }), /error_description="The issuer 'https:\/\/[^']+\/bbbbbbbb-0000-4000-8000-000000000002\/v2\.0' is invalid"/],
  ];
  for (const [what, make, description] of rejected) {
    it(`rejects ${what} with 401 invalid_token`, async () => {
      const r = await validate(await make());
      expect(r.status).to.equal(401);
      const challenge = r.headers.get('www-authenticate') ?? '';
      expect(challenge).to.match(/^Bearer error="invalid_token"/);
      if (description) expect(challenge).to.match(description);
      expect(r.text).to.equal('');
    });
  }

  it('accepts a token expired less than the clock skew ago', async () => {
    const r = await validate(await mint({ kind: 'user', expiresInSec: -120 }));
    expect(r.status).to.equal(200);
  });

  it('re-fetches the JWKS exactly once when a burst of 100 tokens with an unknown kid arrives', async () => {
    const before = emu.counters().jwks ?? 0;
    const token = await mint({ kind: 'user', signWith: 'unknown-key' });
    const answers = await Promise.all(Array.from({ length: 100 }, () => validate(token)));
    for (const a of answers) expect(a.status).to.equal(401);
    expect((emu.counters().jwks ?? 0) - before).to.equal(1);
    // Within the cooldown, another unknown kid causes no fetch at all.
    await validate(await mint({ kind: 'user', signWith: 'unknown-key' }));
    expect((emu.counters().jwks ?? 0) - before).to.equal(1);
  });

  it('keeps validating with cached keys while the JWKS endpoint is down', async () => {
    emu.fault({ route: 'jwks', sticky: true, status: 500 });
    emu.fault({ route: 'metadata', sticky: true, status: 500 });
    try {
      const r = await validate(await mint({ kind: 'user', scp: 'access_as_user' }));
      expect(r.status).to.equal(200);
    } finally {
      emu.clearFaults();
    }
  });

  it('never logs a token or secret (checked on stop)', () => {
    expect(sidecar.lines.length).to.be.greaterThan(0);
    assertNoSecrets(sidecar.lines, secretsOf(emu, tokens));
  });
});

describe('GET /Validate with options (built sidecar)', function () {
  this.timeout(30_000);
  const suite = withEmulatorAndSidecars();
  const start = suite.start;
  let emu: Emulator;
  /** Temporary directories holding a private key PEM (removed after the suite, whatever happened). */
  const tempDirs: string[] = [];
  const tempDir = (prefix: string): string => {
    const dir = mkdtempSync(path.join(tmpdir(), prefix));
    tempDirs.push(dir);
    return dir;
  };
  after(() => {
    for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  before(() => {
    emu = suite.emu();
  });

  it('enforces AzureAd:Scopes with Microsoft\'s plain-text IDW10203 403', async () => {
    const s = await start({ AzureAd__Scopes: 'access_as_user' });
    const ok = await call(`${s.url}/Validate`, { token: await emu.mint({ kind: 'user', scp: 'access_as_user' }) });
    expect(ok.status).to.equal(200);
    const denied = await call(`${s.url}/Validate`, { token: await emu.mint({ kind: 'user', scp: 'other' }) });
    expect(denied.status).to.equal(403);
    expect(denied.text).to.equal("IDW10203: The 'scope' or 'scp' claim does not contain scopes 'access_as_user' or was not found. ");
    const app = await call(`${s.url}/Validate`, { token: await emu.mint({ kind: 'app', roles: ['Sidecar.Invoke'] }) });
    expect(app.status).to.equal(403);
    // Microsoft reads the first scp claim only, and the long-form scope claim only without one.
    const longForm = 'http://schemas.microsoft.com/identity/claims/scope';
    const both = await call(`${s.url}/Validate`, { token: await emu.mint({ kind: 'user', scp: 'other', claims: { [longForm]: 'access_as_user' } }) });
    expect(both.status).to.equal(403);
    const arrayed = await call(`${s.url}/Validate`, { token: await emu.mint({ kind: 'user', claims: { scp: ['other', 'access_as_user'] } }) });
    expect(arrayed.status).to.equal(403);
    const onlyLong = await call(`${s.url}/Validate`, { token: await emu.mint({ kind: 'user', claims: { scp: null, [longForm]: 'access_as_user' } }) });
    expect(onlyLong.status).to.equal(200);
  });

  it('accepts any tenant with TenantId=organizations and rejects an iss/tid mismatch', async () => {
    const s = await start({ AzureAd__TenantId: 'organizations' });
    const primary = await emu.mint({ kind: 'user' });
    const secondary = await emu.mint({ kind: 'user', tenant: emu.scenario.tenants.secondary.id, user: 'secondaryUser', audience: emu.scenario.apps.sidecarApi.appId });
    expect((await call(`${s.url}/Validate`, { token: primary })).status).to.equal(200);
    const sec = await call(`${s.url}/Validate`, { token: secondary });
    expect(sec.status, sec.headers.get('www-authenticate') ?? '').to.equal(200);
    const mismatch = await emu.mint({ kind: 'user', claims: { tid: emu.scenario.tenants.secondary.id } });
    const r = await call(`${s.url}/Validate`, { token: mismatch });
    expect(r.status).to.equal(401);
  });

  it("refuses a v1 token from a work tenant with TenantId=consumers, which has no v1 metadata (not common's any-tenant issuer)", async () => {
    const s = await start({ AzureAd__TenantId: 'consumers' });
    const v1 = await emu.mint({ kind: 'user', version: 1, audience: `api://${emu.scenario.apps.sidecarApi.appId}`, scp: 'access_as_user' });
    const r = await call(`${s.url}/Validate`, { token: v1 });
    expect(r.status).to.equal(401);
    expect(r.headers.get('www-authenticate') ?? '').to.match(/error="invalid_token", error_description="The issuer '[^']+' is invalid"/);
  });

  it('decrypts a JWE token with TokenDecryptionCredentials and validates the inner token', async () => {
    const enc = emu.scenario.apps.sidecarApi.encryptionCertificate!;
    const dir = tempDir('es-jwe-');
    const file = path.join(dir, 'enc.pem');
    writeFileSync(file, `${enc.certPem}\n${enc.keyPem}`, { mode: 0o600 });
    const s = await start({ AzureAd__TokenDecryptionCredentials__0__SourceType: 'Path', AzureAd__TokenDecryptionCredentials__0__CertificateDiskPath: file });
    const jwe = await emu.mint({ kind: 'user', scp: 'access_as_user', encrypt: true });
    expect(jwe.split('.')).to.have.length(5);
    const r = await call(`${s.url}/Validate`, { token: jwe });
    expect(r.status, r.headers.get('www-authenticate') ?? '').to.equal(200);
    expect(r.json().token).to.equal(jwe);
    expect(r.json().claims.scp).to.equal('access_as_user');
    // Without the decryption key the same token is refused.
    const plain = await start({});
    expect((await call(`${plain.url}/Validate`, { token: jwe })).status).to.equal(401);
    // A user in 220 groups: the encrypted token passes 16 KiB, and Microsoft's sidecar takes it (its
    // header block holds 32 KB); so do both doors here, with the ext_authz Check too.
    const groups = Array.from({ length: 220 }, (_, i) => `0000${i.toString(16).padStart(4, '0')}-1111-4222-8333-444455556666`);
    const big = await emu.mint({ kind: 'user', scp: 'access_as_user', encrypt: true, claims: { groups, onprem_sid: 'S-1-5-21-1234567890-1234567890-1234567890-123456' } });
    expect(big.length).to.be.above(16 * 1024);
    const large = await call(`${s.url}/Validate`, { token: big });
    expect(large.status, large.headers.get('www-authenticate') ?? '').to.equal(200);
    expect(large.json().claims.groups).to.have.length(220);
    const client = createAuthorizationClient(`127.0.0.1:${s.listening.extAuthz!.port}`);
    try {
      const res = await check(client, envoyCheckRequest({ headers: { authorization: `Bearer ${big}` } }));
      expect(res.status?.code, JSON.stringify(res.denied_response ?? {})).to.equal(0);
    } finally {
      client.close();
    }
  });

  it('exchanges a JWE caller token On-Behalf-Of by sending the decrypted inner token, which is all Entra can read', async () => {
    // Entra holds only the public half of the API's encryption certificate and refuses a JWE
    // assertion (AADSTS50013); Microsoft.Identity.Web sends the inner, signed token.
    const enc = emu.scenario.apps.sidecarApi.encryptionCertificate!;
    const dir = tempDir('es-jwe-obo-');
    const file = path.join(dir, 'enc.pem');
    writeFileSync(file, `${enc.certPem}\n${enc.keyPem}`, { mode: 0o600 });
    const s = await start({
      AzureAd__TokenDecryptionCredentials__0__SourceType: 'Path',
      AzureAd__TokenDecryptionCredentials__0__CertificateDiskPath: file,
      DownstreamApis__downstream__Scopes__0: 'api://downstream/read',
    });
    const jwe = await emu.mint({ kind: 'user', scp: 'access_as_user', encrypt: true });
    const inner = Buffer.from((await compactDecrypt(jwe, createPrivateKey(enc.keyPem!))).plaintext).toString('utf8');
    const before = emu.requests().length;
    const r = await call(`${s.url}/AuthorizationHeader/downstream`, { token: jwe });
    expect(r.status, r.text).to.equal(200);
    const obo = decodeJwt(String(r.json().authorizationHeader).slice('Bearer '.length));
    expect(obo.aud).to.equal(emu.scenario.apps.downstreamApi.appId);
    expect(obo.oid).to.equal(emu.scenario.users.normal.oid);
    const sent = emu.requests().slice(before).filter((q) => q.route === 'token' && q.form.requested_token_use === 'on_behalf_of');
    expect(sent).to.have.length(1);
    expect(sent[0].form.assertion).to.equal(`[redacted] ${redactionFingerprint(inner)}`);
  });

  it('decrypts a JWE with a TokenDecryptionCredentials certificate from Key Vault, read with a managed identity at start-up', async () => {
    const before = emu.counters().keyvault;
    const s = await start({
      AZURE_POD_IDENTITY_AUTHORITY_HOST: emu.imdsOrigin,
      AzureAd__TokenDecryptionCredentials__0__SourceType: 'KeyVault',
      AzureAd__TokenDecryptionCredentials__0__KeyVaultUrl: emu.scenario.keyVaults.main.url!,
      AzureAd__TokenDecryptionCredentials__0__KeyVaultCertificateName: 'sidecar-decryption-cert',
      AzureAd__TokenDecryptionCredentials__0__ManagedIdentityClientId: emu.scenario.managedIdentities.userAssigned.clientId,
    });
    expect(emu.counters().keyvault - before, 'read once, before listening').to.equal(1);
    const jwe = await emu.mint({ kind: 'user', scp: 'access_as_user', encrypt: true });
    const r = await call(`${s.url}/Validate`, { token: jwe });
    expect(r.status, r.headers.get('www-authenticate') ?? '').to.equal(200);
    expect(r.json().claims.scp).to.equal('access_as_user');
  });

  it('does not start when the Key Vault decryption certificate cannot be read', async () => {
    const { code, stdout, stderr } = await runSidecarToExit(sidecarEnv(emu, {
      AZURE_POD_IDENTITY_AUTHORITY_HOST: emu.imdsOrigin,
      AzureAd__TokenDecryptionCredentials__0__SourceType: 'KeyVault',
      AzureAd__TokenDecryptionCredentials__0__KeyVaultUrl: emu.scenario.keyVaults.main.url!,
      AzureAd__TokenDecryptionCredentials__0__KeyVaultCertificateName: 'no-such-certificate',
    }));
    expect(code).to.equal(1);
    expect(stdout + stderr).to.include('failed to start').and.to.include('no-such-certificate');
    expect(stdout).not.to.include('"event":"listening"');
  });

  it('stops at once on SIGTERM while its start still waits for a Key Vault certificate', async () => {
    // The signal handlers are in place before the start: as PID 1 in a container an unhandled
    // SIGTERM is not delivered at all, and the pod would wait out its grace period.
    emu.fault({ route: 'keyvault', sticky: true, delayMs: 8_000 });
    try {
      const before = emu.counters().keyvault ?? 0;
      let sentAt = 0;
      const { code, stdout } = await runSidecarToExit(
        sidecarEnv(emu, {
          AZURE_POD_IDENTITY_AUTHORITY_HOST: emu.imdsOrigin,
          AzureAd__TokenDecryptionCredentials__0__SourceType: 'KeyVault',
          AzureAd__TokenDecryptionCredentials__0__KeyVaultUrl: emu.scenario.keyVaults.main.url!,
          AzureAd__TokenDecryptionCredentials__0__KeyVaultCertificateName: 'sidecar-decryption-cert',
        }),
        [],
        15_000,
        (child) => {
          const poll = setInterval(() => {
            if ((emu.counters().keyvault ?? 0) > before) {
              clearInterval(poll);
              sentAt = Date.now();
              child.kill('SIGTERM');
            }
          }, 20);
          child.once('exit', () => clearInterval(poll));
        },
      );
      expect(sentAt, 'the start reached Key Vault').to.be.above(0);
      expect(Date.now() - sentAt).to.be.below(2_000);
      expect(code).to.equal(0);
      expect(stdout).to.include('"signal":"SIGTERM"').and.not.to.include('"event":"listening"');
    } finally {
      emu.clearFaults();
    }
  });

  it('answers 503 while no signing keys could ever be loaded, then recovers', async () => {
    emu.fault({ route: 'metadata', sticky: true, status: 503 });
    emu.fault({ route: 'jwks', sticky: true, status: 503 });
    const s = await start({});
    const token = await emu.mint({ kind: 'user' });
    const down = await call(`${s.url}/Validate`, { token });
    expect(down.status).to.equal(503);
    expect(down.headers.get('content-type')).to.equal('application/problem+json');
    expect(down.json().code).to.equal('signing_keys_unavailable');
    emu.clearFaults();
    const deadline = Date.now() + 15_000;
    let status = 0;
    while (Date.now() < deadline) {
      status = (await call(`${s.url}/Validate`, { token })).status;
      if (status === 200) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(status).to.equal(200);
  });
});

describe('identity API cross-cutting behaviour (built sidecar)', function () {
  this.timeout(30_000);
  let emu: Emulator;
  let s: RunningSidecar;
  before(async () => {
    emu = await startEmulator();
    s = await startSidecar(sidecarEnv(emu));
  });
  after(async () => {
    await s?.stop();
    await emu?.close();
  });

  it('answers /healthz with Healthy as text/plain (no charset, as ASP.NET\'s health check writes it) and no-cache headers', async () => {
    const r = await call(`${s.url}/healthz`);
    expect(r.status).to.equal(200);
    expect(r.text).to.equal('Healthy');
    expect(r.headers.get('content-type')).to.equal('text/plain');
    expect(r.headers.get('pragma')).to.equal('no-cache');
  });
  it('matches routes case-insensitively', async () => {
    expect((await call(`${s.url}/VALIDATE`)).status).to.equal(401);
    expect((await call(`${s.url}/HealthZ`)).status).to.equal(200);
  });
  it('answers unknown paths with an empty 404 and wrong methods with an empty 405', async () => {
    const nf = await call(`${s.url}/nope`);
    expect([nf.status, nf.text]).to.deep.equal([404, '']);
    const m = await call(`${s.url}/AuthorizationHeader/x`, { method: 'POST' });
    expect([m.status, m.text]).to.deep.equal([405, '']);
    const g = await call(`${s.url}/DownstreamApi/x`);
    expect(g.status).to.equal(405);
  });
  it('counts every 404 under route="unrouted", an API name that is no percent-encoding included', async () => {
    const unrouted = async (): Promise<number> => {
      const text = (await call(`http://127.0.0.1:${s.listening.management!.port}/metrics`)).text;
      return Number(/^entra_sidecar_http_requests_total\{route="unrouted",status_class="4xx"\} (\d+)$/m.exec(text)?.[1] ?? 0);
    };
    const from = await unrouted();
    const malformed = await call(`${s.url}/AuthorizationHeaderUnauthenticated/%E0%A4%A`);
    expect([malformed.status, malformed.text]).to.deep.equal([404, '']);
    expect((await call(`${s.url}/nope`)).status).to.equal(404);
    expect(await unrouted()).to.equal(from + 2);
  });
  /** One request on its own connection, as raw bytes (so a HEAD answer's absent body is visible). */
  const rawExchange = (request: string): Promise<string> => {
    const port = Number(new URL(s.url).port);
    return new Promise<string>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => socket.end(request));
      let data = '';
      socket.on('data', (d: Buffer) => (data += d.toString()));
      socket.on('end', () => resolve(data));
      socket.on('error', reject);
    });
  };
  it('answers /healthz to every method, HEAD without a body, as ASP.NET\'s MapHealthChecks (no method constraint)', async () => {
    const head = await rawExchange('HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    expect(head).to.match(/^HTTP\/1\.1 200 /);
    expect(head).to.match(/\r\ncontent-type: text\/plain/i);
    expect(head.endsWith('\r\n\r\n'), 'no body after the headers').to.equal(true);
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
      const r = await call(`${s.url}/healthz`, { method });
      expect([r.status, r.text], method).to.deep.equal([200, 'Healthy']);
    }
  });
  it('keeps the method constraint of every other route: HEAD is 405 like ASP.NET\'s MapGet', async () => {
    for (const path of ['/Validate', '/AuthorizationHeader/x', '/AuthorizationHeaderUnauthenticated/x']) {
      expect((await call(`${s.url}${path}`, { method: 'HEAD' })).status, path).to.equal(405);
    }
    const post = await call(`${s.url}/Validate`, { method: 'POST' });
    expect([post.status, post.headers.get('allow')]).to.deep.equal([405, 'GET']);
  });
  it('accepts an absolute-form request target', async () => {
    const port = new URL(s.url).port;
    const raw = await rawExchange(`GET http://127.0.0.1:${port}/HEALTHZ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    expect(raw).to.match(/^HTTP\/1\.1 200 /);
    expect(raw).to.match(/Healthy$/);
  });
  it('does not serve the OpenAPI document outside Development', async () => {
    expect((await call(`${s.url}/openapi/v1.json`)).status).to.equal(404);
  });
  it('refuses oversized headers with 431', async () => {
    const r = await call(`${s.url}/Validate`, { headers: { 'x-big': 'a'.repeat(40_000) } });
    expect(r.status).to.equal(431);
  });
});
