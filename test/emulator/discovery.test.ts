/** Wire-level tests of the discovery routes: instance discovery, OpenID metadata, JWKS (§1.2–§1.6). */
import { expect } from 'chai';
import { createHash, X509Certificate } from 'node:crypto';
import { Agent } from 'undici';
import { createLocalJWKSet, jwtVerify } from 'jose';
import type { JSONWebKeySet } from 'jose';
import { startEmulator } from '../../emulator/index.js';
import type { Emulator } from '../../emulator/index.js';
import { call } from './helpers.js';

describe('emulator: discovery routes', function () {
  let emu: Emulator;
  let agent: Agent;
  let tid: string;

  before(async function () {
    this.timeout(30_000);
    emu = await startEmulator();
    agent = new Agent({ connect: { ca: emu.caPem } });
    tid = emu.scenario.tenants.primary.id;
  });
  after(async () => {
    await agent?.close();
    await emu?.close();
  });

  it('serves v2 metadata by tenant GUID with the emulator origin in issuer and endpoints', async () => {
    const r = await call(agent, `${emu.origin}/${tid}/v2.0/.well-known/openid-configuration`);
    expect(r.status).to.equal(200);
    expect(r.json.issuer).to.equal(`${emu.origin}/${tid}/v2.0`);
    expect(r.json.token_endpoint).to.equal(`${emu.origin}/${tid}/oauth2/v2.0/token`);
    expect(r.json.jwks_uri).to.equal(`${emu.origin}/${tid}/discovery/v2.0/keys`);
    expect(r.json.authorization_endpoint).to.equal(`${emu.origin}/${tid}/oauth2/v2.0/authorize`);
    expect(r.json.token_endpoint_auth_methods_supported).to.deep.equal(['client_secret_post', 'private_key_jwt', 'client_secret_basic']);
    expect(r.headers['cache-control']).to.equal('max-age=86400, private');
    expect(r.headers['content-type']).to.equal('application/json; charset=utf-8');
    expect(r.headers['x-ms-request-id']).to.match(/^[0-9a-f-]{36}$/);
  });

  it('puts the tenant GUID in every URL when the tenant is given by domain, case-insensitively', async () => {
    const r = await call(agent, `${emu.origin}/CONTOSO.onmicrosoft.com/v2.0/.well-known/openid-configuration`);
    expect(r.status).to.equal(200);
    expect(r.json.issuer).to.equal(`${emu.origin}/${tid}/v2.0`);
    expect(r.json.token_endpoint).to.equal(`${emu.origin}/${tid}/oauth2/v2.0/token`);
  });

  it('templates the issuer for common and organizations but keeps the meta-tenant in endpoints', async () => {
    for (const meta of ['common', 'organizations']) {
      const r = await call(agent, `${emu.origin}/${meta}/v2.0/.well-known/openid-configuration`);
      expect(r.json.issuer).to.equal(`${emu.origin}/{tenantid}/v2.0`);
      expect(r.json.token_endpoint).to.equal(`${emu.origin}/${meta}/oauth2/v2.0/token`);
      expect(r.json.tenant_region_scope).to.equal(null);
    }
  });

  it('gives consumers the concrete issuer of the Microsoft-account tenant, keeping consumers in endpoints', async () => {
    const r = await call(agent, `${emu.origin}/consumers/v2.0/.well-known/openid-configuration`);
    expect(r.status).to.equal(200);
    expect(r.json.issuer).to.equal(`${emu.origin}/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0`);
    expect(r.json.token_endpoint).to.equal(`${emu.origin}/consumers/oauth2/v2.0/token`);
  });

  it('serves the v1 document with the trailing-slash issuer and v1 endpoints', async () => {
    const r = await call(agent, `${emu.origin}/${tid}/.well-known/openid-configuration`);
    expect(r.json.issuer).to.equal(`${emu.origin}/${tid}/`);
    expect(r.json.token_endpoint).to.equal(`${emu.origin}/${tid}/oauth2/token`);
    expect(r.json.jwks_uri).to.equal(`${emu.origin}/${tid}/discovery/keys`);
    expect(r.json.microsoft_multi_refresh_token).to.equal(true);
    const common = await call(agent, `${emu.origin}/common/.well-known/openid-configuration`);
    expect(common.json.issuer).to.equal(`${emu.origin}/{tenantid}/`);
    // The v1 endpoint has no organizations / consumers tenant (Entra: AADSTS90002).
    for (const meta of ['organizations', 'consumers']) {
      const r1 = await call(agent, `${emu.origin}/${meta}/.well-known/openid-configuration`);
      expect(r1.status, meta).to.equal(400);
      expect(r1.json.error_codes).to.deep.equal([90002]);
    }
  });

  it('answers an unknown tenant with AADSTS90002 in Entra\'s exact error shape', async () => {
    const unknown = '12345678-1234-4234-8234-123456789012';
    const r = await call(agent, `${emu.origin}/${unknown}/v2.0/.well-known/openid-configuration?client-request-id=corr-1`);
    expect(r.status).to.equal(400);
    expect(r.json.error).to.equal('invalid_tenant');
    expect(r.json.error_codes).to.deep.equal([90002]);
    expect(String(r.json.error_description)).to.match(/^AADSTS90002: .*\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: corr-1\r\nTimestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/s);
    expect(r.json.timestamp).to.match(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/);
    expect(r.json.trace_id).to.match(/^[0-9a-f-]{36}$/);
    expect(r.json.correlation_id).to.equal('corr-1');
    expect(r.json.error_uri).to.equal('https://login.microsoftonline.com/error?code=90002');
    const byDomain = await call(agent, `${emu.origin}/nobody.example/v2.0/.well-known/openid-configuration`);
    expect(byDomain.json.error_codes).to.deep.equal([90002]);
    const malformed = await call(agent, `${emu.origin}/not_a_tenant!/v2.0/.well-known/openid-configuration`);
    expect(malformed.json.error).to.equal('invalid_tenant');
    expect(malformed.json.error_codes).to.deep.equal([900023]);
  });

  it('answers instance discovery for its own host and rejects other hosts with invalid_instance', async () => {
    const authz = encodeURIComponent(`${emu.origin}/${tid}/oauth2/v2.0/authorize`);
    const ok = await call(agent, `${emu.origin}/common/discovery/instance?api-version=1.1&authorization_endpoint=${authz}`);
    const host = new URL(emu.origin).host;
    expect(ok.status).to.equal(200);
    expect(ok.json.tenant_discovery_endpoint).to.equal(`${emu.origin}/${tid}/v2.0/.well-known/openid-configuration`);
    expect(ok.json.metadata).to.deep.equal([{ preferred_network: host, preferred_cache: host, aliases: [host] }]);
    const bad = await call(agent, `${emu.origin}/common/discovery/instance?api-version=1.1&authorization_endpoint=${encodeURIComponent('https://evil.example/x/oauth2/v2.0/authorize')}`);
    expect(bad.status).to.equal(400);
    expect(bad.json.error).to.equal('invalid_instance');
    expect(bad.json.error_codes).to.deep.equal([50049]);
  });

  it('publishes at least two RSA keys whose kid and x5t are the base64url SHA-1 of the certificate', async () => {
    const r = await call(agent, `${emu.origin}/${tid}/discovery/v2.0/keys`);
    const keys = r.json.keys as Array<Record<string, unknown>>;
    expect(keys.length).to.be.greaterThanOrEqual(2);
    for (const k of keys) {
      const der = Buffer.from((k.x5c as string[])[0], 'base64');
      const thumb = createHash('sha1').update(der).digest('base64url');
      expect(k.kid).to.equal(thumb);
      expect(k.x5t).to.equal(thumb);
      expect(k.kty).to.equal('RSA');
      expect(k.use).to.equal('sig');
      expect(k).not.to.have.property('alg');
      expect(k.issuer).to.equal(`${emu.origin}/{tenantid}/v2.0`);
      const cert = new X509Certificate(der);
      expect(cert.publicKey.export({ format: 'jwk' }).n).to.equal(k.n);
    }
    const v1 = await call(agent, `${emu.origin}/common/discovery/keys`);
    for (const k of v1.json.keys as Array<Record<string, unknown>>) expect(k).not.to.have.property('issuer');
  });

  it('signs tokens that verify against the published JWKS with the metadata issuer', async () => {
    const jwksDoc = await call(agent, `${emu.origin}/${tid}/discovery/v2.0/keys`);
    const token = await emu.mint({ kind: 'app' });
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwksDoc.json as unknown as JSONWebKeySet), {
      issuer: `${emu.origin}/${tid}/v2.0`,
      audience: emu.scenario.apps.sidecarApi.appId,
      algorithms: ['RS256'],
    });
    expect(payload.ver).to.equal('2.0');
    expect(protectedHeader).not.to.have.property('x5t');
  });
});
