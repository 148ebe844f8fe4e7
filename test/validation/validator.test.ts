import { expect } from 'chai';
import { rejection } from '../helpers/assert.js';
import { createHash, createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { CompactEncrypt, decodeJwt, SignJWT } from 'jose';
import type { Dispatcher } from 'undici';
import type { AzureAdConfig, SidecarSettings } from '../../src/config/types.js';
import { SidecarError, type ErrorCode } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import type { DecryptionKey } from '../../src/validation/decryption.js';
import { createTokenValidator, isSameToken, payloadJson, recentSlot, type TokenValidatorWithStats, type ValidatorDeps } from '../../src/validation/validator.js';
import { eventually } from '../faults/harness.js';
import {
  CLIENT_ID,
  MSA_TENANT,
  OTHER_TENANT,
  TENANT,
  buildAzureAd,
  buildValidationSettings,
  makeSigningKey,
  mint,
  rawToken,
  rsaKeyPair,
  signRs256,
  startFakeEntraWithAgent,
  type FakeEntra,
  type TestSigningKey,
} from './fixtures.js';

const logger = createLogger('silent');


async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<SidecarError> {
  const err = await rejection(p);
  expect(err.code, err.detail).to.equal(code);
  return err;
}

describe('token validator', function () {
  let entra: FakeEntra;
  let key: TestSigningKey;
  let agent: Dispatcher;
  let clockMs: number;
  const validators: TokenValidatorWithStats[] = [];

  let closeEntra: () => Promise<void>;

  before(async function () {
    ({ entra, key, agent, close: closeEntra } = await startFakeEntraWithAgent());
  });
  after(async function () {
    await closeEntra();
  });
  beforeEach(function () {
    clockMs = Date.now();
    entra.keys = [key];
    entra.down = false;
    entra.v1Down = false;
  });
  afterEach(function () {
    for (const v of validators.splice(0)) v.close();
  });

  function deps(azure: Partial<AzureAdConfig> = {}, settings: Partial<SidecarSettings['validation']> = {}, extra: Partial<ValidatorDeps> = {}): ValidatorDeps {
    return {
      azureAd: buildAzureAd(entra.instance, azure),
      settings: buildValidationSettings(settings),
      outbound: { agent, timeoutMs: 2000, maxResponseBytes: 1 << 20 },
      logger,
      now: () => clockMs,
      keyLoadRetry: { initialMs: 20, maxMs: 50 },
      ...extra,
    };
  }

  async function started(azure: Partial<AzureAdConfig> = {}, settings: Partial<SidecarSettings['validation']> = {}, extra: Partial<ValidatorDeps> = {}): Promise<TokenValidatorWithStats> {
    const v = createTokenValidator(deps(azure, settings, extra));
    validators.push(v);
    await v.start();
    return v;
  }

  const nowSec = (): number => Math.floor(clockMs / 1000);

  describe('valid tokens', function () {
    it('accepts a v2 token for the configured tenant and ClientId', async function () {
      const v = await started();
      expect(v.ready()).to.equal(true);
      const token = await mint(entra, { key, nowSec: nowSec() });
      const result = await v.validate(token);
      expect(result.version).to.equal('2.0');
      expect(result.tenantId).to.equal(TENANT);
      expect(result.raw).to.equal(token);
      expect(result.jws).to.equal(token);
      expect(result.claims.aud).to.equal(CLIENT_ID);
      expect(result.header.kid).to.equal(key.kid);
      expect(result.expiresAt).to.equal(nowSec() + 3600);
    });

    it('accepts a v1 token (sts-shaped issuer from the v1 metadata, aud api://ClientId) signed by a v2 key with a templated issuer', async function () {
      const v = await started();
      const token = await mint(entra, { key, version: '1.0', nowSec: nowSec() });
      const result = await v.validate(token);
      expect(result.version).to.equal('1.0');
      expect(result.claims.iss).to.equal(entra.v1Issuer(TENANT));
    });

    it('gives the payload back as the JSON text it was signed as, without the JSON whitespace around it (payloadJson)', async function () {
      const v = await started();
      const minted = await mint(entra, { key, nowSec: nowSec() });
      const text = Buffer.from(minted.split('.')[1], 'base64url').toString('utf8').replace(/}$/, ',"big":12345678901234567890,"f":1.0e2}');
      const input = `${minted.split('.')[0]}.${Buffer.from(` \r\n\t${text}\n `).toString('base64url')}`;
      const token = `${input}.${sign('sha256', Buffer.from(input), key.privateKey).toString('base64url')}`;
      const result = await v.validate(token);
      expect(result.claims.big).to.equal(12345678901234567000);
      expect(payloadJson(result)).to.equal(text);
      expect(payloadJson(v.validateNow(token)!)).to.equal(text);
    });

    it('accepts a token with no kid by trying every key (v1 x5t lookup included)', async function () {
      const v = await started();
      await v.validate(await mint(entra, { key, header: { kid: undefined }, nowSec: nowSec() }));
      await v.validate(await mint(entra, { key, version: '1.0', header: { kid: undefined }, nowSec: nowSec() }));
    });
  });

  describe('audience', function () {
    it('rejects a v1 token whose aud is the bare ClientId and a v2 token whose aud is api://ClientId (RegisterValidAudience)', async function () {
      const v = await started();
      const e1 = await expectCode(v.validate(await mint(entra, { key, version: '1.0', claims: { aud: CLIENT_ID }, nowSec: nowSec() })), 'token_audience_invalid');
      expect(e1.detail).to.equal(`The audience '${CLIENT_ID}' is invalid`);
      await expectCode(v.validate(await mint(entra, { key, claims: { aud: `api://${CLIENT_ID}` }, nowSec: nowSec() })), 'token_audience_invalid');
    });

    it('ignores one trailing slash on either side of an audience, as JwtBearer does', async function () {
      const v = await started();
      await v.validate(await mint(entra, { key, version: '1.0', claims: { aud: `api://${CLIENT_ID}/` }, nowSec: nowSec() }));
      const configured = await started({ audience: 'api://my-api/' });
      await configured.validate(await mint(entra, { key, claims: { aud: 'api://my-api' }, nowSec: nowSec() }));
      await configured.validate(await mint(entra, { key, claims: { aud: 'api://my-api/' }, nowSec: nowSec() }));
      await expectCode(configured.validate(await mint(entra, { key, claims: { aud: 'api://my-api//' }, nowSec: nowSec() })), 'token_audience_invalid');
    });

    it('rejects a token without ver (no default audience) unless an Audience is configured', async function () {
      const token = await mint(entra, { key, claims: { ver: undefined }, nowSec: nowSec() });
      await expectCode((await started()).validate(token), 'token_audience_invalid');
      const configured = await started({ audience: CLIENT_ID });
      expect((await configured.validate(token)).version).to.equal('2.0');
    });

    it('accepts only the configured Audience / ValidAudiences when set', async function () {
      const v = await started({ audience: 'api://my-api', validAudiences: ['api://other'] });
      await v.validate(await mint(entra, { key, claims: { aud: 'api://my-api' }, nowSec: nowSec() }));
      await v.validate(await mint(entra, { key, claims: { aud: 'api://other' }, nowSec: nowSec() }));
      await expectCode(v.validate(await mint(entra, { key, nowSec: nowSec() })), 'token_audience_invalid');
    });
  });

  describe('lifetime', function () {
    it('rejects a token expired beyond the clock skew, naming the expiry time', async function () {
      const v = await started();
      const token = await mint(entra, { key, nowSec: nowSec() - 3600, expiresIn: 3600 - 301 });
      const err = await expectCode(v.validate(token), 'token_expired');
      // JwtBearer's wording and .NET's invariant date format (MM/dd/yyyy HH:mm:ss).
      expect(err.detail).to.match(/^The token expired at '\d\d\/\d\d\/\d{4} \d\d:\d\d:\d\d'$/);
      expect(err.message).to.not.include(token);
    });

    it('rejects a token whose nbf is after its exp, even inside the skew (JwtBearer: lifetime invalid)', async function () {
      const v = await started();
      const now = nowSec();
      const token = await mint(entra, { key, nowSec: now, claims: { nbf: now - 10, exp: now - 20 } });
      const err = await expectCode(v.validate(token), 'token_not_yet_valid');
      expect(err.detail).to.match(/^The token lifetime is invalid; NotBefore: '.+', Expires: '.+'$/);
    });

    it('accepts a token expired within the clock skew', async function () {
      const v = await started();
      await v.validate(await mint(entra, { key, nowSec: nowSec() - 3600, expiresIn: 3600 - 299 }));
    });

    it('honours nbf with the clock skew both ways', async function () {
      const v = await started();
      await expectCode(v.validate(await mint(entra, { key, claims: { nbf: nowSec() + 301 }, nowSec: nowSec() })), 'token_not_yet_valid');
      await v.validate(await mint(entra, { key, claims: { nbf: nowSec() + 299 }, nowSec: nowSec() }));
    });

    it('rejects a token without exp', async function () {
      const v = await started();
      await expectCode(v.validate(await mint(entra, { key, claims: { exp: undefined }, nowSec: nowSec() })), 'token_malformed');
    });
  });

  describe('issuer and tenant', function () {
    it('rejects a wrong issuer with the issuer in the detail', async function () {
      const v = await started();
      const err = await expectCode(v.validate(await mint(entra, { key, issuer: `https://evil.example/${TENANT}/v2.0`, nowSec: nowSec() })), 'token_issuer_invalid');
      expect(err.detail).to.equal(`The issuer 'https://evil.example/${TENANT}/v2.0' is invalid`);
    });

    it("rejects a token from another tenant on a single-tenant configuration", async function () {
      const v = await started();
      await expectCode(v.validate(await mint(entra, { key, tenant: OTHER_TENANT, nowSec: nowSec() })), 'token_issuer_invalid');
      await expectCode(v.validate(await mint(entra, { key, version: '1.0', tenant: OTHER_TENANT, nowSec: nowSec() })), 'token_issuer_invalid');
    });

    it("rejects our issuer with another tenant's tid", async function () {
      const v = await started();
      await expectCode(v.validate(await mint(entra, { key, claims: { tid: OTHER_TENANT }, nowSec: nowSec() })), 'token_tenant_mismatch');
    });

    it("rejects a tid that is some other path segment of our issuer, or not the tenant of a ValidIssuers issuer (entra-protocol §3.2 rule 5)", async function () {
      // A key with no issuer of its own, so only the issuer rule stands between the token and acceptance.
      entra.keys = [{ ...key, issuer: undefined }];
      const v = await started({ validIssuers: [`https://issuer.example/${TENANT}/v2.0`, `https://sts.example/${TENANT}/`] });
      for (const tid of ['v2.0', new URL(entra.origin).host]) {
        const err = await expectCode(v.validate(await mint(entra, { key, claims: { tid }, nowSec: nowSec() })), 'token_tenant_mismatch');
        expect(err.detail, tid).to.equal("The token's 'tid' claim is not a tenant id");
      }
      for (const iss of [`https://issuer.example/${TENANT}/v2.0`, `https://sts.example/${TENANT}/`]) {
        await expectCode(v.validate(await mint(entra, { key, issuer: iss, claims: { tid: 'v2.0' }, nowSec: nowSec() })), 'token_tenant_mismatch');
        await expectCode(v.validate(await mint(entra, { key, issuer: iss, claims: { tid: OTHER_TENANT }, nowSec: nowSec() })), 'token_tenant_mismatch');
        expect((await v.validate(await mint(entra, { key, issuer: iss, nowSec: nowSec() }))).tenantId).to.equal(TENANT);
      }
    });

    it('accepts any tenant on common (v1 and v2) when iss matches the template with the token tid', async function () {
      const v = await started({ tenantId: 'common' });
      const r = await v.validate(await mint(entra, { key, tenant: OTHER_TENANT, nowSec: nowSec() }));
      expect(r.tenantId).to.equal(OTHER_TENANT);
      await v.validate(await mint(entra, { key, tenant: TENANT, version: '1.0', nowSec: nowSec() }));
    });

    it('rejects on common when iss and tid disagree, or tid is not a GUID', async function () {
      const v = await started({ tenantId: 'organizations' });
      await expectCode(v.validate(await mint(entra, { key, tenant: OTHER_TENANT, claims: { tid: TENANT }, nowSec: nowSec() })), 'token_tenant_mismatch');
      await expectCode(v.validate(await mint(entra, { key, tenant: 'not-a-guid', nowSec: nowSec() })), 'token_tenant_mismatch');
      await expectCode(v.validate(await mint(entra, { key, issuer: `https://evil.example/${TENANT}/v2.0`, nowSec: nowSec() })), 'token_issuer_invalid');
    });

    it("refuses v1 tokens on TenantId=consumers, which has no v1 metadata (never common's {tenantid} issuer), and accepts Microsoft-account v2 tokens", async function () {
      // Microsoft-account keys carry the concrete consumers issuer (entra-protocol §3.3).
      const msa = makeSigningKey('RS256', entra.v2Issuer('consumers'));
      entra.keys = [msa];
      const v1Reads = entra.hits.metadataV1;
      const v = await started({ tenantId: 'consumers' });
      expect(entra.hits.metadataV1, 'no v1 metadata is read for consumers').to.equal(v1Reads);
      for (const tenant of [OTHER_TENANT, TENANT, MSA_TENANT]) {
        await expectCode(v.validate(await mint(entra, { key: msa, version: '1.0', tenant, nowSec: nowSec() })), 'token_issuer_invalid');
      }
      await expectCode(v.validate(await mint(entra, { key: msa, tenant: OTHER_TENANT, nowSec: nowSec() })), 'token_issuer_invalid');
      expect((await v.validate(await mint(entra, { key: msa, tenant: MSA_TENANT, nowSec: nowSec() }))).tenantId).to.equal(MSA_TENANT);
    });

    it("lets a signing key with a concrete issuer vouch for v1 tokens of the tenant it names only", async function () {
      // Restricted to our tenant; a templated v1 ValidIssuers entry lets other tenants' v1 issuers through the issuer rule.
      const ours = makeSigningKey('RS256', entra.v2Issuer(TENANT));
      entra.keys = [ours];
      const v = await started({ validIssuers: [`${entra.origin}/{tenantid}/`] });
      const err = await expectCode(v.validate(await mint(entra, { key: ours, version: '1.0', tenant: OTHER_TENANT, nowSec: nowSec() })), 'token_issuer_invalid');
      expect(err.detail).to.include('signing key');
      expect((await v.validate(await mint(entra, { key: ours, version: '1.0', nowSec: nowSec() }))).tenantId).to.equal(TENANT);
    });

    it('accepts ValidIssuers besides the default rule (AadIssuerValidator falls back to the metadata issuer)', async function () {
      entra.keys = [{ ...key, issuer: undefined }];
      const v = await started({ validIssuers: [`https://issuer.example/{tenantid}/v2.0`] });
      await v.validate(await mint(entra, { key, issuer: `https://issuer.example/${TENANT}/v2.0`, nowSec: nowSec() }));
      await v.validate(await mint(entra, { key, nowSec: nowSec() }));
      await expectCode(v.validate(await mint(entra, { key, issuer: `https://evil.example/${TENANT}/v2.0`, nowSec: nowSec() })), 'token_issuer_invalid');
    });

    it('rejects a token signed by a JWKS key whose issuer names another tenant', async function () {
      const restricted = makeSigningKey('RS256', `${entra.origin}/${OTHER_TENANT}/v2.0`);
      entra.keys = [key, restricted];
      const v = await started();
      const err = await expectCode(v.validate(await mint(entra, { key: restricted, nowSec: nowSec() })), 'token_issuer_invalid');
      expect(err.detail).to.include('signing key');
      // The same key is fine for the tenant it names (multi-tenant app).
      const common = await started({ tenantId: 'common' });
      await common.validate(await mint(entra, { key: restricted, tenant: OTHER_TENANT, nowSec: nowSec() }));
    });
  });

  describe('header and signature', function () {
    it("rejects alg 'none' and HS256 (even when keyed with the public key bytes)", async function () {
      const v = await started();
      const payload = { aud: CLIENT_ID, iss: entra.v2Issuer(TENANT), tid: TENANT, ver: '2.0', exp: nowSec() + 600 };
      await expectCode(v.validate(rawToken({ alg: 'none', kid: key.kid }, payload)), 'token_alg_not_allowed');
      await expectCode(v.validate(rawToken({ alg: 'none', kid: key.kid }, payload, 'AAAA')), 'token_alg_not_allowed');
      const publicPem = Buffer.from(key.publicKey.export({ type: 'spki', format: 'pem' }));
      const hs = await new SignJWT(payload).setProtectedHeader({ alg: 'HS256', kid: key.kid }).sign(publicPem);
      await expectCode(v.validate(hs), 'token_alg_not_allowed');
      expect(v.stats().signatureVerifications).to.equal(0);
    });

    it('accepts RS256 only (entra-protocol §3.2 rule 2): PS256, RS384/RS512, PS512 and ES256 are refused before any signature check, even signed by a published key', async function () {
      const ps = makeSigningKey('PS256');
      const es = makeSigningKey('ES256');
      entra.keys = [key, ps, es];
      const v = await started();
      const payload = decodeJwt(await mint(entra, { key, nowSec: nowSec() }));
      const tokens = [
        await mint(entra, { key: ps, nowSec: nowSec() }),
        await mint(entra, { key: es, nowSec: nowSec() }),
        ...(await Promise.all(['RS384', 'RS512', 'PS256', 'PS512'].map((alg) => new SignJWT(payload).setProtectedHeader({ alg, kid: key.kid }).sign(key.privateKey)))),
      ];
      for (const token of tokens) {
        const err = await expectCode(v.validate(token), 'token_alg_not_allowed');
        expect(err.detail).to.equal('The signature is invalid');
      }
      expect(v.stats().signatureVerifications).to.equal(0);
      await v.validate(signRs256({ kid: key.kid }, payload as Record<string, unknown>, key.privateKey));
    });

    it('rejects a tampered payload as an invalid signature', async function () {
      const v = await started();
      const token = await mint(entra, { key, nowSec: nowSec() });
      const [h, p, s] = token.split('.');
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
      claims.scp = 'admin';
      const tampered = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
      const err = await expectCode(v.validate(tampered), 'token_signature_invalid');
      expect(err.detail).to.equal('The signature is invalid');
    });

    it('rejects jku/x5u/jwk/crit headers and Graph tokens with a nonce header, even when validly signed', async function () {
      const v = await started();
      const valid = await mint(entra, { key, nowSec: nowSec() });
      const payload = JSON.parse(Buffer.from(valid.split('.')[1], 'base64url').toString()) as Record<string, unknown>;
      await v.validate(signRs256({ kid: key.kid }, payload, key.privateKey));
      for (const header of [{ jku: 'https://evil.example/keys' }, { x5u: 'https://evil.example/cert' }, { jwk: { kty: 'RSA' } }, { crit: ['exp'], exp: 1 }, { nonce: 'abc' }]) {
        await expectCode(v.validate(signRs256({ kid: key.kid, ...header }, payload, key.privateKey)), 'token_malformed');
      }
    });

    it('accepts each segment in its one base64url spelling only: a signature with unused bits set or a dangling character is refused before any signature check, and never cached', async function () {
      const v = await started();
      const token = await mint(entra, { key, nowSec: nowSec() });
      await v.validate(token);
      await v.validate(token);
      expect(v.stats().cacheSize).to.equal(1);
      const verified = v.stats().signatureVerifications;
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      /** The same bytes spelled with the unused low bits of the last character set (Node's decoder ignores them). */
      const respelled = (segment: string): string => {
        const unused = [0, 0, 15, 3][segment.length % 4];
        return segment.slice(0, -1) + alphabet[alphabet.indexOf(segment.at(-1)!) | unused];
      };
      const [h, p, s] = token.split('.');
      expect(s.length % 4, 'a 2048-bit signature leaves unused bits').to.not.equal(0);
      expect(Buffer.from(respelled(s), 'base64url').equals(Buffer.from(s, 'base64url'))).to.equal(true);
      const dangling = `${s}${'A'.repeat((5 - (s.length % 4)) % 4)}`;
      expect(dangling.length % 4).to.equal(1);
      for (const variant of [`${h}.${p}.${respelled(s)}`, `${h}.${p}.${dangling}`, `${h}.${p}.${s}==`]) {
        await expectCode(v.validate(variant), 'token_malformed');
      }
      // Header and payload too (a real Entra payload is any length; pad it to leave unused bits).
      const padded = await mint(entra, { key, nowSec: nowSec(), claims: { pad: 'x' } });
      const paddedWithUnusedBits = [padded, await mint(entra, { key, nowSec: nowSec(), claims: { pad: 'xx' } }), await mint(entra, { key, nowSec: nowSec(), claims: { pad: 'xxx' } })]
        .find((t) => t.split('.')[1].length % 4 !== 0)!;
      const [ph, pp, ps] = paddedWithUnusedBits.split('.');
      await expectCode(v.validate(`${ph}.${respelled(pp)}.${ps}`), 'token_malformed');
      if (ph.length % 4 !== 0) await expectCode(v.validate(`${respelled(ph)}.${pp}.${ps}`), 'token_malformed');
      // Canonical, but not as long as the key's modulus: no RSA operation is spent on it.
      await expectCode(v.validate(`${h}.${p}.${s.slice(4)}`), 'token_signature_invalid');
      expect(v.stats().signatureVerifications).to.equal(verified);
      expect(v.stats().cacheSize).to.equal(1);
    });

    it('rejects tokens that are not 3-part JWS or 5-part JWE', async function () {
      const v = await started();
      for (const bad of ['', 'abc', 'a.b', 'a.b.c.d', 'a.b.c.d.e.f', '..', '!!.@@.##']) {
        await expectCode(v.validate(bad), 'token_malformed');
      }
    });

    it("rejects a signature made with another key carrying a published key's kid", async function () {
      const v = await started();
      const impostor = { ...makeSigningKey(), kid: key.kid };
      await expectCode(v.validate(await mint(entra, { key: impostor, nowSec: nowSec() })), 'token_signature_invalid');
    });

    it('rejects role- and scope-free tokens when ACL authorization is off, and accepts them when on', async function () {
      const token = await mint(entra, { key, claims: { scp: undefined }, nowSec: nowSec() });
      await (await started()).validate(token);
      const strict = await started({ allowWebApiToBeAuthorizedByACL: false });
      await expectCode(strict.validate(token), 'token_scope_or_role_missing');
      await strict.validate(await mint(entra, { key, claims: { scp: undefined, roles: ['Data.Read'] }, nowSec: nowSec() }));
    });
  });

  describe('signing keys', function () {
    it('re-fetches the JWKS exactly once when 100 concurrent tokens carry an unknown kid, then honours the cooldown', async function () {
      const v = await started({}, { unknownKidCooldownSec: 300 });
      const fetchesAfterStart = entra.hits.jwks;
      expect(v.stats().jwksFetches).to.equal(1);
      const rotated = makeSigningKey();
      const unknown = await mint(entra, { key: rotated, nowSec: nowSec() });
      const results = await Promise.allSettled(Array.from({ length: 100 }, () => v.validate(unknown)));
      expect(entra.hits.jwks - fetchesAfterStart).to.equal(1);
      expect(results.every((r) => r.status === 'rejected' && (r.reason as SidecarError).code === 'token_key_unknown')).to.equal(true);
      // The new key is published, but the cooldown still holds.
      entra.keys = [key, rotated];
      await expectCode(v.validate(unknown), 'token_key_unknown');
      expect(entra.hits.jwks - fetchesAfterStart).to.equal(1);
      // After the cooldown one more fetch finds it.
      clockMs += 301_000;
      const burst = await Promise.all(Array.from({ length: 100 }, () => v.validate(unknown)));
      expect(burst[0].tenantId).to.equal(TENANT);
      expect(entra.hits.jwks - fetchesAfterStart).to.equal(2);
      expect(v.stats().jwksFetches).to.equal(3);
    });

    it('keeps validating with cached keys while the JWKS endpoint is down', async function () {
      const v = await started({}, { signingKeysRefreshIntervalSec: 1 });
      const token = await mint(entra, { key, nowSec: nowSec() });
      entra.down = true;
      const before = entra.hits.jwks + entra.hits.metadataV2;
      // The periodic refresh (1 s after the load) meets the outage; waited for, not timed.
      await eventually(async () => entra.hits.jwks + entra.hits.metadataV2 > before, 3000);
      expect(entra.hits.jwks + entra.hits.metadataV2).to.be.greaterThan(before);
      expect(v.ready()).to.equal(true);
      expect((await v.validate(token)).tenantId).to.equal(TENANT);
      // An unknown kid during the outage still fails as unknown, not as unavailable.
      await expectCode(v.validate(await mint(entra, { key: makeSigningKey(), nowSec: nowSec() })), 'token_key_unknown');
    });

    it('becomes ready and accepts v2 tokens while only the v1 metadata is down, refuses v1 tokens until a retry reads it', async function () {
      entra.v1Down = true;
      const v = await started({}, { signingKeysRefreshIntervalSec: 1 });
      expect(v.ready()).to.equal(true);
      await v.validate(await mint(entra, { key, nowSec: nowSec() }));
      const v1Token = await mint(entra, { key, version: '1.0', nowSec: nowSec() });
      await expectCode(v.validate(v1Token), 'token_issuer_invalid');
      // The failure schedule (20 ms here), not the daily refresh, reads it again.
      const v1Hits = entra.hits.metadataV1;
      entra.v1Down = false;
      const deadline = Date.now() + 3000;
      while (entra.hits.metadataV1 === v1Hits && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 50));
      expect((await v.validate(v1Token)).version).to.equal('1.0');
      // Once read, a later v1 failure (the periodic refresh, 1 s here) keeps the issuer already known.
      entra.v1Down = true;
      const hitsBefore = entra.hits.metadataV1;
      const until = Date.now() + 4000;
      while (entra.hits.metadataV1 === hitsBefore && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 50));
      expect(entra.hits.metadataV1).to.be.greaterThan(hitsBefore);
      const later = await mint(entra, { key, version: '1.0', claims: { jti: 'later' }, nowSec: nowSec() });
      expect((await v.validate(later)).version).to.equal('1.0');
    });

    it('answers signing_keys_unavailable and is not ready until the keys can be loaded, then recovers in the background', async function () {
      entra.down = true;
      const v = await started();
      expect(v.ready()).to.equal(false);
      const token = await mint(entra, { key, nowSec: nowSec() });
      await expectCode(v.validate(token), 'signing_keys_unavailable');
      entra.down = false;
      const deadline = Date.now() + 3000;
      while (!v.ready() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(v.ready()).to.equal(true);
      await v.validate(token);
    });

    it('loads keys once for concurrent start() calls and picks up rotated keys on the periodic refresh', async function () {
      // Made before the clock starts: an RSA key pair can take most of a second on a loaded machine,
      // and blocking the loop that long let a second refresh into a fixed wait.
      const next = makeSigningKey();
      const v = createTokenValidator(deps({}, { signingKeysRefreshIntervalSec: 1 }));
      validators.push(v);
      await Promise.all([v.start(), v.start(), v.start()]);
      expect(v.stats().jwksFetches).to.equal(1);
      expect(v.stats().metadataFetches).to.equal(2);
      entra.keys = [next];
      // The refresh comes 1 s after the load; the one after it 1 s later again.
      await eventually(async () => v.stats().jwksFetches >= 2, 3000);
      expect(v.stats().jwksFetches).to.equal(2);
      expect(v.stats().keyCount).to.equal(1);
      await v.validate(await mint(entra, { key: next, nowSec: nowSec() }));
      // The old key left the JWKS: its tokens are no longer accepted.
      await expectCode(v.validate(await mint(entra, { key, nowSec: nowSec() })), 'token_key_unknown');
    });

    it('waits out a refresh interval longer than a timer can hold instead of fetching again at once', async function () {
      // 30 days: the configuration refuses it (2^31-1 ms is the bound), so this is the scheduler's own guard.
      const v = await started({}, { signingKeysRefreshIntervalSec: 30 * 86_400 });
      const fetched = v.stats().jwksFetches + v.stats().metadataFetches;
      await new Promise((r) => setTimeout(r, 300));
      expect(v.stats().jwksFetches + v.stats().metadataFetches).to.equal(fetched);
    });

    it('ignores JWKS entries with RSA keys shorter than 2048 bits', async function () {
      const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
      const weakKey: TestSigningKey = { kid: 'weak', ...weak, alg: 'RS256' };
      entra.keys = [key, weakKey];
      const v = await started();
      expect(v.stats().keyCount).to.equal(1);
      const payload = { aud: CLIENT_ID, iss: entra.v2Issuer(TENANT), tid: TENANT, ver: '2.0', exp: nowSec() + 600 };
      await expectCode(v.validate(signRs256({ kid: 'weak' }, payload, weak.privateKey)), 'token_key_unknown');
      await v.validate(signRs256({ kid: key.kid }, payload, key.privateKey));
    });
  });

  describe('verified-token cache', function () {
    it('caches a token on its second verification and serves it from then on without another', async function () {
      const v = await started();
      const token = await mint(entra, { key, nowSec: nowSec() });
      const first = await v.validate(token);
      expect(Object.isFrozen(first), 'first sight: a fresh object nobody keeps').to.equal(false);
      expect(v.stats().cacheSize).to.equal(0);
      const verifies = v.stats().signatureVerifications;
      const second = await v.validate(token);
      expect(v.stats().signatureVerifications).to.equal(verifies + 1);
      expect(Object.isFrozen(second) && Object.isFrozen(second.claims)).to.equal(true);
      expect(second).to.deep.equal(first);
      expect(v.stats().cacheSize).to.equal(1);
      const third = await v.validate(token);
      expect(third).to.equal(second);
      expect(v.stats().signatureVerifications).to.equal(verifies + 1);
      expect(v.stats().cacheHits).to.equal(1);
      expect(v.stats().cacheMisses).to.equal(2);
    });

    it('keeps nothing but a bounded doorkeeper for tokens seen once', async function () {
      const v = await started({}, { verifiedTokenCacheSize: 3 });
      const tokens = await Promise.all([0, 1, 2, 3, 4, 5, 6].map((i) => mint(entra, { key, claims: { uti: `once${i}` }, nowSec: nowSec() })));
      for (const t of tokens) await v.validate(t);
      expect(v.stats().cacheSize).to.equal(0);
      // The doorkeeper holds the last six (twice the cache): t6 is admitted on its second request, t0 was forgotten.
      await v.validate(tokens[6]);
      expect(v.stats().cacheSize).to.equal(1);
      await v.validate(tokens[0]);
      expect(v.stats().cacheSize).to.equal(1);
      await v.validate(tokens[0]);
      expect(v.stats().cacheSize).to.equal(2);
      expect(v.stats().cacheHits).to.equal(0);
    });

    it('computes no SHA-256 cache key for a token it has not seen lately', async function () {
      const v = await started({}, { verifiedTokenCacheSize: 3 });
      const tokens = await Promise.all([0, 1, 2, 3].map((i) => mint(entra, { key, claims: { uti: `fresh${i}` }, nowSec: nowSec() })));
      for (const t of tokens) {
        expect(v.cached(t), 'new: not cached').to.equal(undefined);
        expect(Object.isFrozen(v.validateNow(t)), 'new: verified, not cached').to.equal(false);
      }
      expect(v.stats().cacheKeyDigests, 'four new tokens, no digest').to.equal(0);
      // Seen before: one digest, then cached; the hit after it needs none (the token was hashed last).
      const second = await v.validate(tokens[1]);
      expect(Object.isFrozen(second)).to.equal(true);
      expect(v.stats().cacheKeyDigests).to.equal(1);
      expect(await v.validate(tokens[1])).to.equal(second);
      expect(v.stats().cacheKeyDigests).to.equal(1);
      expect(v.stats().cacheHits).to.equal(1);
      // Six more new tokens push the others out of the filter without a digest. tokens[2], cached on
      // its second verification but never hit (so not in the recently-hit table), is verified again,
      // not answered wrongly, and found by its digest after that.
      const cachedTwo = await v.validate(tokens[2]);
      expect(Object.isFrozen(cachedTwo)).to.equal(true);
      const digests = v.stats().cacheKeyDigests;
      const more = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => mint(entra, { key, claims: { uti: `more${i}` }, nowSec: nowSec() })));
      for (const t of more) await v.validate(t);
      expect(v.stats().cacheKeyDigests, 'new tokens, no digest').to.equal(digests);
      const verifies = v.stats().signatureVerifications;
      expect(await v.validate(tokens[2])).to.deep.equal(cachedTwo);
      expect(v.stats().signatureVerifications, 'aged out of the filter: verified again').to.equal(verifies + 1);
      expect(await v.validate(tokens[2])).to.equal(cachedTwo);
      expect(v.stats().signatureVerifications, 'then found by its digest').to.equal(verifies + 1);
      expect(await v.validate(tokens[1])).to.deep.equal(second);
    });

    it('with the cache off, verifies every request and keeps nothing', async function () {
      const v = await started({}, { verifiedTokenCacheSize: 0 });
      const token = await mint(entra, { key, nowSec: nowSec() });
      for (let i = 0; i < 3; i++) expect(Object.isFrozen(await v.validate(token))).to.equal(false);
      expect(v.stats().signatureVerifications).to.equal(3);
      expect(v.stats().cacheSize).to.equal(0);
    });

    it('serves a hit only for the very token verified: same signature, other payload → verified and rejected', async function () {
      const v = await started();
      const token = await mint(entra, { key, nowSec: nowSec() });
      await v.validate(token);
      const first = await v.validate(token);
      const [h, p, sig] = token.split('.');
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Record<string, unknown>;
      const forged = [h, Buffer.from(JSON.stringify({ ...claims, roles: ['Admin'] })).toString('base64url'), sig].join('.');
      expect(forged.slice(-64)).to.equal(token.slice(-64));
      const verifies = v.stats().signatureVerifications;
      await expectCode(v.validate(forged), 'token_signature_invalid');
      await expectCode(v.validate(forged), 'token_signature_invalid');
      expect(v.stats().signatureVerifications).to.equal(verifies + 2);
      // Same length and same last 64 characters, one signature character different: still no hit.
      const at = token.length - 100;
      const flipped = token.slice(0, at) + (token[at] === 'A' ? 'B' : 'A') + token.slice(at + 1);
      await expectCode(v.validate(flipped), 'token_signature_invalid');
      // The real token still hits.
      expect(await v.validate(token)).to.equal(first);
      expect(v.stats().cacheHits).to.equal(1);
    });

    it('never serves a cached token past exp plus skew', async function () {
      const v = await started();
      const token = await mint(entra, { key, nowSec: nowSec(), expiresIn: 60 });
      await v.validate(token);
      await v.validate(token);
      clockMs += (60 + 299) * 1000;
      await v.validate(token);
      expect(v.stats().cacheHits).to.equal(1);
      clockMs += 2000;
      await expectCode(v.validate(token), 'token_expired');
      expect(v.stats().cacheHits).to.equal(1);
    });

    it('is bounded and evicts the least recently used token', async function () {
      const v = await started({}, { verifiedTokenCacheSize: 3 });
      const tokens = await Promise.all([0, 1, 2, 3].map((i) => mint(entra, { key, claims: { uti: `t${i}` }, nowSec: nowSec() })));
      const cached = async (t: string) => {
        await v.validate(t);
        await v.validate(t);
      };
      for (const t of tokens.slice(0, 3)) await cached(t);
      expect(v.stats().cacheSize).to.equal(3);
      await v.validate(tokens[0]); // a hit: t0 is now the most recent → t1 is least recent
      await cached(tokens[3]);
      expect(v.stats().cacheSize).to.equal(3);
      const hits = v.stats().cacheHits;
      await v.validate(tokens[0]);
      expect(v.stats().cacheHits).to.equal(hits + 1);
      await v.validate(tokens[1]);
      expect(v.stats().cacheHits).to.equal(hits + 1);
    });

    it('answers a cached token synchronously through cached(), and nothing else', async function () {
      const v = await started();
      const token = await mint(entra, { key, nowSec: nowSec() });
      expect(v.cached(token), 'never seen').to.equal(undefined);
      await v.validate(token);
      expect(v.cached(token), 'seen once: verified, not cached').to.equal(undefined);
      const kept = await v.validate(token);
      const verifies = v.stats().signatureVerifications;
      // The first hit finds the entry by digest and remembers it; the next ones by the table.
      for (let i = 0; i < 3; i++) expect(v.cached(token)).to.equal(kept);
      expect(v.stats().cacheHits).to.equal(3);
      expect(v.stats().signatureVerifications).to.equal(verifies);
      // Whitespace, a prefix, a different payload with the same signature: never a hit.
      const [h, p, sig] = token.split('.');
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Record<string, unknown>;
      const forged = [h, Buffer.from(JSON.stringify({ ...claims, roles: ['Admin'] })).toString('base64url'), sig].join('.');
      expect(recentSlot(forged)).to.equal(recentSlot(token));
      // The same token with one signature character replaced by a wider one with the same low byte (Ł is U+0141, A is 0x41),
      // one near the end and one just before the constant-time tail: not the token.
      const wide = (at: number) => token.slice(0, at) + String.fromCharCode(token.charCodeAt(at) + 0x100) + token.slice(at + 1);
      for (const other of [forged, ` ${token}`, token.slice(1), `x${token.slice(1)}`, '', 'short', wide(token.length - 3), wide(token.length - 65)]) expect(v.cached(other)).to.equal(undefined);
      await expectCode(v.validate(forged), 'token_signature_invalid');
      expect(v.cached(token)).to.equal(kept);
      // Past exp plus skew, cached() answers nothing and validate() rejects.
      clockMs += (3600 + 301) * 1000;
      expect(v.cached(token)).to.equal(undefined);
      await expectCode(v.validate(token), 'token_expired');
    });

    it('validates a new token synchronously through validateNow(), exactly as validate() would', async function () {
      const v = await started();
      const token = await mint(entra, { key, nowSec: nowSec() });
      const viaPromise = await v.validate(await mint(entra, { key, claims: { uti: 'twin' }, nowSec: nowSec() }));
      const verifies = v.stats().signatureVerifications;
      const now = v.validateNow(token);
      expect(now, 'answered in the same tick').to.not.be.instanceOf(Promise);
      expect(now?.raw).to.equal(token);
      expect(now?.version).to.equal(viaPromise.version);
      expect(now?.tenantId).to.equal(viaPromise.tenantId);
      expect({ ...now?.claims, uti: 'twin' }).to.deep.equal(viaPromise.claims);
      expect(v.stats().signatureVerifications).to.equal(verifies + 1);
      expect(Object.isFrozen(now), 'first sight: verified, not cached').to.equal(false);
      // The doorkeeper counts it like validate(): the second verification caches it.
      const second = v.validateNow(token);
      expect(Object.isFrozen(second)).to.equal(true);
      expect(v.validateNow(token)).to.equal(second);
      expect(await v.validate(token)).to.equal(second);
      expect(v.stats().signatureVerifications).to.equal(verifies + 2);
    });

    it('throws from validateNow() the error validate() rejects with, for every rule', async function () {
      const v = await started({ allowWebApiToBeAuthorizedByACL: false });
      const [h, p] = (await mint(entra, { key, nowSec: nowSec() })).split('.');
      const cases: [string, string][] = [
        [await mint(entra, { key, nowSec: nowSec() - 7200 }), 'token_expired'],
        [await mint(entra, { key, nowSec: nowSec(), claims: { aud: 'api://someone-else' } }), 'token_audience_invalid'],
        [await mint(entra, { key, nowSec: nowSec(), tenant: OTHER_TENANT }), 'token_issuer_invalid'],
        [await mint(entra, { key, nowSec: nowSec(), claims: { scp: undefined } }), 'token_scope_or_role_missing'],
        [`${h}.${p}.${Buffer.alloc(256, 7).toString('base64url')}`, 'token_signature_invalid'],
        [rawToken({ alg: 'HS256', kid: key.kid }, { exp: nowSec() + 60 }, 'c2ln'), 'token_alg_not_allowed'],
        [rawToken({ alg: 'RS256' }, { exp: nowSec() + 60 }, 'not base64url!'), 'token_malformed'],
        ['', 'token_malformed'],
      ];
      for (const [token, code] of cases) {
        let thrown: unknown;
        try {
          v.validateNow(token);
        } catch (err) {
          thrown = err;
        }
        expect(thrown, code).to.be.instanceOf(SidecarError);
        expect((thrown as SidecarError).code, (thrown as SidecarError).detail).to.equal(code);
        const rejected = await rejection(v.validate(token));
        expect(rejected.code).to.equal(code);
        expect(rejected.detail).to.equal((thrown as SidecarError).detail);
      }
    });

    it('leaves to validate() what has to wait: keys not loaded yet, a key id it lacks, a token of another shape', async function () {
      const early = createTokenValidator(deps());
      validators.push(early);
      const token = await mint(entra, { key, nowSec: nowSec() });
      expect(early.validateNow(token), 'no signing keys yet').to.equal(undefined);
      const loading = early.start();
      expect(early.validateNow(token), 'still loading').to.equal(undefined);
      expect((await early.validate(token)).raw, 'validate() waits for the load and answers').to.equal(token);
      await loading;

      const v = await started();
      const rotated = makeSigningKey();
      entra.keys = [key, rotated];
      const unknownKid = await mint(entra, { key: rotated, nowSec: nowSec() });
      expect(v.validateNow(unknownKid), 'a kid the loaded set lacks').to.equal(undefined);
      expect((await v.validate(unknownKid)).header.kid, 'validate() refreshes the keys once').to.equal(rotated.kid);
      expect(v.validateNow(await mint(entra, { key: rotated, nowSec: nowSec() }))?.header.kid, 'then it is at hand').to.equal(rotated.kid);

      // Not three segments, or too long: validate() words the error.
      for (const other of ['a.b.c.d', 'a'.repeat(70_000)]) {
        expect(v.validateNow(other)).to.equal(undefined);
        await expectCode(v.validate(other), 'token_malformed');
      }
    });

    it('keeps two tokens apart that share a slot of the recently-hit table', async function () {
      const v = await started();
      const bySlot = new Map<number, string>();
      let pair: [string, string] | undefined;
      for (let i = 0; pair === undefined && i < 2000; i++) {
        const t = await mint(entra, { key, claims: { uti: `slot${i}` }, nowSec: nowSec() });
        const other = bySlot.get(recentSlot(t));
        if (other !== undefined) pair = [other, t];
        else bySlot.set(recentSlot(t), t);
      }
      if (pair === undefined) throw new Error('no two tokens shared a slot in 2,000');
      const [a, b] = pair;
      for (const t of [a, b]) {
        await v.validate(t);
        await v.validate(t);
      }
      for (let i = 0; i < 3; i++) {
        expect(v.cached(a)?.claims.uti).to.equal(JSON.parse(Buffer.from(a.split('.')[1], 'base64url').toString()).uti);
        expect(v.cached(b)?.claims.uti).to.equal(JSON.parse(Buffer.from(b.split('.')[1], 'base64url').toString()).uti);
      }
      expect(v.stats().cacheHits).to.equal(6);
    });

    it('does not cache rejected tokens', async function () {
      const v = await started();
      const token = await mint(entra, { key, claims: { aud: 'api://someone-else' }, nowSec: nowSec() });
      for (let i = 0; i < 3; i++) await expectCode(v.validate(token), 'token_audience_invalid');
      expect(v.stats().cacheHits).to.equal(0);
      expect(v.stats().cacheSize).to.equal(0);
    });
  });

  describe('encrypted tokens (JWE)', function () {
    const encPair = rsaKeyPair();
    const thumb = createHash('sha1').update('test-encryption-cert').digest('hex').toUpperCase();
    const decryptionKey: DecryptionKey = { privateKey: encPair.privateKey, thumbprintSha1Hex: thumb, x5t: Buffer.from(thumb, 'hex').toString('base64url') };
    const otherPair = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const otherKey: DecryptionKey = { privateKey: otherPair.privateKey, thumbprintSha1Hex: 'AA'.repeat(20), x5t: Buffer.alloc(20, 0xaa).toString('base64url') };

    async function encrypt(inner: string, header: Record<string, unknown>): Promise<string> {
      return new CompactEncrypt(Buffer.from(inner)).setProtectedHeader({ cty: 'JWT', typ: 'JWT', ...header } as unknown as { alg: string; enc: string }).encrypt(createPublicKey(encPair.privateKey));
    }

    it('decrypts RSA-OAEP + A256CBC-HS512 with the key named by kid and validates the inner token', async function () {
      const v = await started({}, {}, { decryptionKeys: [otherKey, decryptionKey] });
      const inner = await mint(entra, { key, nowSec: nowSec() });
      const jwe = await encrypt(inner, { alg: 'RSA-OAEP', enc: 'A256CBC-HS512', kid: thumb });
      expect(v.validateNow(jwe), 'decryption is left to validate()').to.equal(undefined);
      const r = await v.validate(jwe);
      expect(r.raw).to.equal(jwe);
      expect(r.jws).to.equal(inner);
      expect(r.header.kid).to.equal(key.kid);
      // Cached on its first sight: decrypting is the expensive part of an encrypted token.
      expect(v.stats().cacheSize).to.equal(1);
      await v.validate(jwe);
      expect(v.stats().cacheHits).to.equal(1);
      expect(v.validateNow(jwe), 'a cached JWE is answered at once').to.equal(r);
    });

    it('keeps one cache entry per inner token however often it is re-wrapped, so re-wrapped copies cannot flush other callers out', async function () {
      const v = await started({}, { verifiedTokenCacheSize: 20 }, { decryptionKeys: [decryptionKey] });
      const callers: string[] = [];
      for (let i = 0; i < 10; i++) {
        const t = await mint(entra, { key, nowSec: nowSec(), claims: { oid: `caller-${i}` } });
        await v.validate(t);
        await v.validate(t);
        callers.push(t);
      }
      expect(v.stats().cacheSize).to.equal(10);
      // One valid inner token, wrapped again with a fresh content key each time (anyone holding it can).
      const inner = await mint(entra, { key, nowSec: nowSec() });
      let wrapped = '';
      for (let i = 0; i < 40; i++) {
        wrapped = await encrypt(inner, { alg: 'RSA-OAEP', enc: 'A256GCM' });
        expect((await v.validate(wrapped)).raw).to.equal(wrapped);
      }
      expect(v.stats().cacheSize).to.equal(11);
      expect(callers.filter((t) => v.cached(t) === undefined), 'callers evicted').to.deep.equal([]);
      // The copy seen last is the one cached, answered at once with no decryption.
      const decryptions = v.stats().decryptionAttempts;
      expect(v.validateNow(wrapped)?.raw).to.equal(wrapped);
      expect(v.stats().decryptionAttempts).to.equal(decryptions);
    });

    it('refuses a JWE with a segment in non-canonical base64url, or an encrypted key no configured key is as long as, without decrypting', async function () {
      const v = await started({}, {}, { decryptionKeys: [decryptionKey] });
      const jwe = await encrypt(await mint(entra, { key, nowSec: nowSec() }), { alg: 'RSA-OAEP', enc: 'A256GCM' });
      const parts = jwe.split('.');
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      const respell = (i: number): string => {
        const segment = parts[i];
        const unused = [0, 0, 15, 3][segment.length % 4];
        return parts.map((p, j) => (j === i ? p.slice(0, -1) + alphabet[alphabet.indexOf(p.at(-1)!) | unused] : p)).join('.');
      };
      const respellable = [1, 2, 3, 4].filter((i) => parts[i].length % 4 !== 0);
      expect(respellable, 'the 16-byte tag at least leaves unused bits').to.include(4);
      for (const i of respellable) await expectCode(v.validate(respell(i)), 'token_malformed');
      const shortKey = parts.map((p, j) => (j === 1 ? p.slice(4) : p)).join('.');
      await expectCode(v.validate(shortKey), 'token_decryption_failed');
      expect(v.stats().decryptionAttempts).to.equal(0);
      await v.validate(jwe);
      expect(v.stats().decryptionAttempts).to.equal(1);
    });

    it('tries every configured key when the JWE names none (RSA-OAEP-256 + A256GCM)', async function () {
      const v = await started({}, {}, { decryptionKeys: [otherKey, decryptionKey] });
      const jwe = await encrypt(await mint(entra, { key, nowSec: nowSec() }), { alg: 'RSA-OAEP-256', enc: 'A256GCM' });
      expect((await v.validate(jwe)).tenantId).to.equal(TENANT);
    });

    it('rejects disallowed key management and content encryption algorithms before decrypting', async function () {
      const v = await started({}, {}, { decryptionKeys: [decryptionKey] });
      const parts = (h: object): string => `${Buffer.from(JSON.stringify(h)).toString('base64url')}.AAAA.AAAA.AAAA.AAAA`;
      await expectCode(v.validate(parts({ alg: 'RSA1_5', enc: 'A256CBC-HS512' })), 'token_alg_not_allowed');
      await expectCode(v.validate(parts({ alg: 'dir', enc: 'A256GCM' })), 'token_alg_not_allowed');
      await expectCode(v.validate(parts({ alg: 'RSA-OAEP', enc: 'A192GCM' })), 'token_alg_not_allowed');
      const real = await encrypt(await mint(entra, { key, nowSec: nowSec() }), { alg: 'RSA-OAEP', enc: 'A192CBC-HS384' });
      await expectCode(v.validate(real), 'token_alg_not_allowed');
    });

    it('rejects a JWE no configured key can open, a JWE without a signed token inside, and an inner token that fails validation', async function () {
      const onlyOther = await started({}, {}, { decryptionKeys: [otherKey] });
      const jwe = await encrypt(await mint(entra, { key, nowSec: nowSec() }), { alg: 'RSA-OAEP', enc: 'A256CBC-HS512' });
      await expectCode(onlyOther.validate(jwe), 'token_decryption_failed');
      await expectCode((await started()).validate(jwe), 'token_decryption_failed');
      const v = await started({}, {}, { decryptionKeys: [decryptionKey] });
      await expectCode(v.validate(await encrypt('{"sub":"x"}', { alg: 'RSA-OAEP', enc: 'A256CBC-HS512' })), 'token_decryption_failed');
      const expiredInner = await mint(entra, { key, nowSec: nowSec() - 7200, expiresIn: 60 });
      await expectCode(v.validate(await encrypt(expiredInner, { alg: 'RSA-OAEP', enc: 'A128CBC-HS256' })), 'token_expired');
    });
  });
});

describe('isSameToken (a caller\'s token against a held one)', () => {
  const held = `eyJhbGciOiJSUzI1NiJ9.${'p'.repeat(700)}.${'s'.repeat(280)}AbCd`;
  it('is true only for the same characters, wherever a difference falls', () => {
    expect(isSameToken(`${held}`, held)).to.equal(true);
    expect(isSameToken((' ' + held).slice(1), held), 'a different string object').to.equal(true);
    for (const at of [0, 20, 500, held.length - 65, held.length - 64, held.length - 30, held.length - 1]) {
      const flipped = held.slice(0, at) + (held[at] === 'x' ? 'y' : 'x') + held.slice(at + 1);
      expect(isSameToken(flipped, held), `a difference at ${at}`).to.equal(false);
      const wide = held.slice(0, at) + String.fromCharCode(held.charCodeAt(at) + 0x100) + held.slice(at + 1);
      expect(isSameToken(wide, held), `a wider character at ${at}`).to.equal(false);
    }
    expect(isSameToken(held.slice(1), held)).to.equal(false);
    expect(isSameToken(`${held}x`, held)).to.equal(false);
  });
  it('handles tokens shorter than the constant-time tail, and the empty string', () => {
    expect(isSameToken('abc', 'abc')).to.equal(true);
    expect(isSameToken('abd', 'abc')).to.equal(false);
    expect(isSameToken('', '')).to.equal(true);
    expect(isSameToken('a', '')).to.equal(false);
  });
});
