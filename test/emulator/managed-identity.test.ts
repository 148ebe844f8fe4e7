/** Wire-level tests of the managed-identity endpoints (IMDS, App Service) and the Key Vault route. */
import { expect } from 'chai';
import { createSecureContext } from 'node:tls';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { Agent } from 'undici';
import { startEmulator } from '../../emulator/index.js';
import type { Emulator } from '../../emulator/index.js';
import { call, decodePart } from './helpers.js';

describe('emulator: managed identity and Key Vault', function () {
  let emu: Emulator;
  let agent: Agent;

  before(async function () {
    this.timeout(30_000);
    emu = await startEmulator();
    agent = new Agent({ connect: { ca: emu.caPem } });
  });
  after(async () => {
    await agent?.close();
    await emu?.close();
  });
  afterEach(() => emu.reset());

  const imds = (query: string, headers: Record<string, string> = { Metadata: 'true' }, path = '/metadata/identity/oauth2/token') =>
    call(agent, `${emu.imdsOrigin}${path}?${query}`, { headers });

  describe('IMDS', () => {
    it('serves both the plain and the trailing-slash path with string numbers', async () => {
      for (const path of ['/metadata/identity/oauth2/token', '/metadata/identity/oauth2/token/']) {
        const r = await imds('api-version=2018-02-01&resource=https://management.azure.com', { Metadata: 'true' }, path);
        expect(r.status).to.equal(200);
        expect(r.json.expires_in).to.equal('3599');
        expect(r.json.expires_on).to.match(/^\d+$/);
        expect(r.json.not_before).to.match(/^\d+$/);
        expect(r.json.resource).to.equal('https://management.azure.com');
        expect(r.json.token_type).to.equal('Bearer');
        expect(r.json.client_id).to.equal(emu.scenario.managedIdentities.systemAssigned.clientId);
        expect(r.headers['x-ms-request-id']).to.be.a('string');
        const claims = decodePart(r.json.access_token as string, 1);
        expect(claims.aud).to.equal('https://management.azure.com');
        expect(claims.oid).to.equal(emu.scenario.managedIdentities.systemAssigned.objectId);
      }
      expect(emu.counters().imds).to.equal(2);
    });

    it('requires the Metadata header (bad_request_102), api-version and resource', async () => {
      const noHeader = await imds('api-version=2018-02-01&resource=https://management.azure.com', {});
      expect(noHeader.status).to.equal(400);
      expect(noHeader.json.error).to.equal('bad_request_102');
      expect(noHeader.json.error_description).to.equal('Required metadata header not specified');
      const noVersion = await imds('resource=https://management.azure.com');
      expect(noVersion.status).to.equal(400);
      expect(noVersion.json.error).to.equal('invalid_request');
      const noResource = await imds('api-version=2018-02-01');
      expect(noResource.json.error).to.equal('invalid_request');
    });

    it('selects user-assigned identities by client_id, object_id or msi_res_id and rejects unknown ones', async () => {
      const uami = emu.scenario.managedIdentities.userAssigned;
      for (const selector of [`client_id=${uami.clientId}`, `object_id=${uami.objectId}`, `msi_res_id=${encodeURIComponent(uami.resourceId!)}`]) {
        const r = await imds(`api-version=2018-02-01&resource=api://downstream&${selector}`);
        expect(r.status, selector).to.equal(200);
        const claims = decodePart(r.json.access_token as string, 1);
        expect(claims.oid).to.equal(uami.objectId);
        expect(claims.xms_mirid).to.equal(uami.resourceId);
      }
      const unknown = await imds('api-version=2018-02-01&resource=api://downstream&client_id=00000000-0000-4000-8000-00000000ffff');
      expect(unknown.status).to.equal(400);
      expect(unknown.json.error_description).to.equal('Identity not found');
      const unknownResource = await imds('api-version=2018-02-01&resource=api://not-registered');
      expect(unknownResource.status).to.equal(400);
      expect(unknownResource.json.error).to.equal('invalid_resource');
    });
    it('issues the federated-credential assertion (api://AzureADTokenExchange) as a v2 token whose issuer is the FIC issuer, exactly', async () => {
      const uami = emu.scenario.managedIdentities.userAssigned;
      const r = await imds(`api-version=2018-02-01&resource=api://AzureADTokenExchange&client_id=${uami.clientId}`);
      expect(r.status).to.equal(200);
      const header = decodePart(r.json.access_token as string, 0);
      const claims = decodePart(r.json.access_token as string, 1);
      expect(claims).to.include({ ver: '2.0', aud: 'fb60f99c-7a34-4190-8149-302f77469936', azp: uami.clientId, azpacr: '2', sub: uami.objectId, idtyp: 'app' });
      expect(header).not.to.have.property('x5t');
      const fic = emu.scenario.apps.sidecarApi.federatedCredentials.find((f) => f.subject === uami.objectId)!;
      expect(claims.iss).to.equal(fic.issuer);
    });
  });

  describe('App Service', () => {
    const appService = (query: string, headers: Record<string, string>) => call(agent, `${emu.imdsOrigin}/msi/token?${query}`, { headers });

    it('requires X-IDENTITY-HEADER (401 missing, 403 wrong) and api-version 2019-08-01', async () => {
      const missing = await appService('api-version=2019-08-01&resource=https://vault.azure.net', {});
      expect(missing.status).to.equal(401);
      expect(missing.json).to.have.keys('statusCode', 'message', 'correlationId');
      const wrong = await appService('api-version=2019-08-01&resource=https://vault.azure.net', { 'X-IDENTITY-HEADER': 'wrong' });
      expect(wrong.status).to.equal(403);
      const oldVersion = await appService('api-version=2017-09-01&resource=https://vault.azure.net', { 'X-IDENTITY-HEADER': emu.appServiceSecret });
      expect(oldVersion.status).to.equal(400);
    });

    it('issues tokens with expires_on as a string and honours the mi_res_id selector', async () => {
      const uami = emu.scenario.managedIdentities.userAssigned;
      const r = await appService(`api-version=2019-08-01&resource=https://vault.azure.net&mi_res_id=${encodeURIComponent(uami.resourceId!)}`, { 'X-IDENTITY-HEADER': emu.appServiceSecret });
      expect(r.status).to.equal(200);
      expect(r.json).to.have.keys('access_token', 'expires_on', 'resource', 'token_type', 'client_id');
      expect(r.json.expires_on).to.be.a('string');
      expect(r.json.client_id).to.equal(uami.clientId);
      expect(emu.counters().appservice).to.equal(1);
      const log = emu.requests().find((x) => x.route === 'appservice');
      expect(log?.headers['x-identity-header']).to.match(/^\[redacted\] sha256:[0-9a-f]{8}$/);
    });
  });

  describe('Key Vault', () => {
    const vaultUrl = (): string => emu.scenario.keyVaults.main.url!;
    async function vaultToken(query = ''): Promise<string> {
      const r = await imds(`api-version=2018-02-01&resource=https://vault.azure.net${query}`);
      return r.json.access_token as string;
    }

    it('returns the certificate-backed secret as a PFX that Node can load', async () => {
      const r = await call(agent, `${vaultUrl()}/secrets/sidecar-cert?api-version=7.4`, { headers: { authorization: `Bearer ${await vaultToken()}` } });
      expect(r.status, r.text.slice(0, 200)).to.equal(200);
      expect(r.json.contentType).to.equal('application/x-pkcs12');
      expect(r.json.id).to.match(new RegExp(`^${vaultUrl()}/secrets/sidecar-cert/[0-9a-f]{32}$`));
      expect(() => createSecureContext({ pfx: Buffer.from(r.json.value as string, 'base64'), passphrase: '' })).not.to.throw();
      expect(emu.counters().keyvault).to.equal(1);
    });

    it('returns the PEM variant holding the registered key-vault certificate and its key', async () => {
      const r = await call(agent, `${vaultUrl()}/secrets/sidecar-cert-pem?api-version=7.4`, { headers: { authorization: `Bearer ${await vaultToken()}` } });
      expect(r.json.contentType).to.equal('application/x-pem-file');
      const pem = r.json.value as string;
      const cert = new X509Certificate(pem);
      const registered = emu.scenario.apps.sidecarApi.certificates.find((c) => c.name === 'keyvault')!;
      expect(cert.fingerprint256.replace(/:/g, '')).to.equal(registered.thumbprintSha256);
      expect(() => createPrivateKey(pem)).not.to.throw();
    });

    it('answers 401 with a Bearer challenge without a valid vault token, 403 for non-readers and 404 for unknown secrets', async () => {
      const none = await call(agent, `${vaultUrl()}/secrets/sidecar-cert?api-version=7.4`);
      expect(none.status).to.equal(401);
      expect(String(none.headers['www-authenticate'])).to.match(/^Bearer authorization="https:\/\/127\.0\.0\.1:\d+\/[0-9a-f-]+", resource="https:\/\/vault\.azure\.net"$/);
      const wrongAudience = await call(agent, `${vaultUrl()}/secrets/sidecar-cert?api-version=7.4`, { headers: { authorization: `Bearer ${await emu.mint({ kind: 'app' })}` } });
      expect(wrongAudience.status).to.equal(401);
      const expired = await call(agent, `${vaultUrl()}/secrets/sidecar-cert?api-version=7.4`, { headers: { authorization: `Bearer ${await emu.mint({ kind: 'app', audience: 'https://vault.azure.net', client: emu.scenario.managedIdentities.userAssigned.clientId, expiresInSec: -5 })}` } });
      expect(expired.status).to.equal(401);
      const notReader = await call(agent, `${vaultUrl()}/secrets/sidecar-cert?api-version=7.4`, { headers: { authorization: `Bearer ${await emu.mint({ kind: 'app', audience: 'https://vault.azure.net' })}` } });
      expect(notReader.status).to.equal(403);
      expect((notReader.json.error as Record<string, unknown>).code).to.equal('Forbidden');
      const missing = await call(agent, `${vaultUrl()}/secrets/nope?api-version=7.4`, { headers: { authorization: `Bearer ${await vaultToken()}` } });
      expect(missing.status).to.equal(404);
      expect((missing.json.error as Record<string, unknown>).code).to.equal('SecretNotFound');
    });
  });
});
