/** Token minting (§9.4): mint variants for validator tests, JWE (§3.4) and signing-key rotation. */
import { expect } from 'chai';
import { createHmac, createPrivateKey, createPublicKey } from 'node:crypto';
import { Agent } from 'undici';
import { compactDecrypt, createLocalJWKSet, jwtVerify } from 'jose';
import type { JSONWebKeySet } from 'jose';
import { defaultScenario, startEmulator } from '../../emulator/index.js';
import type { Emulator } from '../../emulator/index.js';
import { call, decodePart } from './helpers.js';

describe('emulator: minting, JWE and key rotation', function () {
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

  async function jwks(): Promise<ReturnType<typeof createLocalJWKSet>> {
    const r = await call(agent, `${emu.origin}/${tid}/discovery/v2.0/keys`);
    return createLocalJWKSet(r.json as unknown as JSONWebKeySet);
  }

  it('mints v2 user tokens for the sidecar API with the consented scopes by default', async () => {
    const claims = decodePart(await emu.mint({ kind: 'user' }), 1);
    expect(claims.aud).to.equal(emu.scenario.apps.sidecarApi.appId);
    expect(claims.azp).to.equal(emu.scenario.apps.clientApp.appId);
    expect(claims.scp).to.equal('access_as_user');
    expect(claims.idtyp).to.equal('user');
    expect(claims.preferred_username).to.equal(emu.scenario.users.normal.upn);
    expect(claims.sub).to.be.a('string').and.not.equal(claims.oid);
    expect(claims.uti).to.match(/^[A-Za-z0-9_-]{22}$/);
  });

  it('mints v1 tokens with api://{clientId} audience, x5t header, upn and unique_name', async () => {
    const token = await emu.mint({ kind: 'user', version: 1 });
    const header = decodePart(token, 0);
    const claims = decodePart(token, 1);
    expect(header.x5t).to.equal(header.kid);
    expect(claims.aud).to.equal(`api://${emu.scenario.apps.sidecarApi.appId}`);
    expect(claims.iss).to.equal(`${emu.origin}/${tid}/`);
    expect(claims.upn).to.equal(emu.scenario.users.normal.upn);
    expect(claims.unique_name).to.equal(emu.scenario.users.normal.upn);
    expect(claims.appid).to.equal(emu.scenario.apps.clientApp.appId);
  });

  it('mints expired, not-yet-valid, other-tenant and claim-overridden tokens', async () => {
    const now = Math.floor(Date.now() / 1000);
    expect(decodePart(await emu.mint({ kind: 'app', expiresInSec: -60 }), 1).exp as number).to.be.lessThan(now);
    expect(decodePart(await emu.mint({ kind: 'app', notBeforeOffsetSec: 600 }), 1).nbf as number).to.be.greaterThan(now + 500);
    const other = decodePart(await emu.mint({ kind: 'user', tenant: 'secondary', user: 'secondaryUser' }), 1);
    expect(other.tid).to.equal(emu.scenario.tenants.secondary.id);
    expect(other.iss).to.equal(`${emu.origin}/${emu.scenario.tenants.secondary.id}/v2.0`);
    const overridden = decodePart(await emu.mint({ kind: 'app', claims: { iss: 'https://evil.example/', roles: ['X'], uti: null } }), 1);
    expect(overridden.iss).to.equal('https://evil.example/');
    expect(overridden.roles).to.deep.equal(['X']);
    expect(overridden).not.to.have.property('uti');
  });

  it('mints tokens that a strict validator must reject: unknown key, alg none, HS256 keyed with the public key', async () => {
    const keySet = await jwks();
    const unknown = await emu.mint({ kind: 'app', signWith: 'unknown-key' });
    let failed = false;
    try {
      await jwtVerify(unknown, keySet);
    } catch {
      failed = true;
    }
    expect(failed).to.equal(true);
    const none = await emu.mint({ kind: 'app', signWith: 'none' });
    expect(decodePart(none, 0).alg).to.equal('none');
    expect(none.endsWith('.')).to.equal(true);
    const hs = await emu.mint({ kind: 'app', signWith: 'hs256-public-key' });
    const [h, p, s] = hs.split('.');
    const jwksDoc = await call(agent, `${emu.origin}/${tid}/discovery/v2.0/keys`);
    const kid = decodePart(await emu.mint({ kind: 'app' }), 0).kid;
    const key = (jwksDoc.json.keys as Array<Record<string, unknown>>).find((k) => k.kid === kid)!;
    const pem = createPublicKey({ key: { kty: 'RSA', n: key.n as string, e: key.e as string }, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString();
    expect(createHmac('sha256', pem).update(`${h}.${p}`).digest('base64url')).to.equal(s);
    const overridden = await emu.mint({ kind: 'app', headerOverrides: { kid: 'not-a-real-kid', nonce: 'graph-style' } });
    expect(decodePart(overridden, 0)).to.include({ kid: 'not-a-real-kid', nonce: 'graph-style' });
  });

  it('wraps tokens as JWE (RSA-OAEP, A256CBC-HS512, cty JWT) that decrypt with the encryption key', async () => {
    const enc = emu.scenario.apps.sidecarApi.encryptionCertificate!;
    const jwe = await emu.mint({ kind: 'user', encrypt: true });
    expect(jwe.split('.')).to.have.length(5);
    const { plaintext, protectedHeader } = await compactDecrypt(jwe, createPrivateKey(enc.keyPem!));
    expect(protectedHeader).to.include({ alg: 'RSA-OAEP', enc: 'A256CBC-HS512', cty: 'JWT', kid: enc.thumbprintSha1, x5t: enc.x5t });
    const inner = Buffer.from(plaintext).toString('utf8');
    const { payload } = await jwtVerify(inner, await jwks(), { issuer: `${emu.origin}/${tid}/v2.0` });
    expect(payload.scp).to.equal('access_as_user');
  });

  it('issues JWE access tokens from the token endpoint for an API with token encryption, and takes only the decrypted inner token as an OBO assertion', async () => {
    const scenario = defaultScenario();
    scenario.apps.sidecarApi.encryptTokens = true;
    const enc = await startEmulator({ scenario });
    const encAgent = new Agent({ connect: { ca: enc.caPem } });
    try {
      const client = enc.scenario.apps.clientApp;
      const url = `${enc.origin}/${tid}/oauth2/v2.0/token`;
      const r = await call(encAgent, url, { form: { grant_type: 'client_credentials', client_id: client.appId, client_secret: client.secrets[0].value, scope: `api://${scenario.apps.sidecarApi.appId}/.default` } });
      expect(r.status).to.equal(200);
      const jwe = r.json.access_token as string;
      expect(jwe.split('.')).to.have.length(5);
      const key = createPrivateKey(enc.scenario.apps.sidecarApi.encryptionCertificate!.keyPem!);
      const { plaintext } = await compactDecrypt(jwe, key);
      expect(JSON.parse(Buffer.from(Buffer.from(plaintext).toString().split('.')[1], 'base64url').toString()).roles).to.deep.equal(['Sidecar.Invoke']);
      const sidecar = enc.scenario.apps.sidecarApi;
      const userJwe = await enc.mint({ kind: 'user', encrypt: true });
      const obo = (assertion: string) => call(encAgent, url, { form: { grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', requested_token_use: 'on_behalf_of', client_id: sidecar.appId, client_secret: sidecar.secrets[0].value, assertion, scope: 'api://downstream/read' } });
      // Entra has only the public half of the API's encryption certificate: it cannot read the JWE.
      const refused = await obo(userJwe);
      expect(refused.status).to.equal(400);
      expect(refused.json.error).to.equal('invalid_grant');
      expect(refused.json.error_codes).to.deep.equal([50013]);
      expect(String(refused.json.error_description)).to.match(/^AADSTS50013: Assertion failed signature validation\. The token is encrypted \(JWE\)/);
      const inner = Buffer.from((await compactDecrypt(userJwe, key)).plaintext).toString();
      const accepted = await obo(inner);
      expect(accepted.status, JSON.stringify(accepted.json)).to.equal(200);
    } finally {
      await encAgent.close();
      await enc.close();
    }
  });

  it('gives Graph-audience tokens a nonce header that makes them unverifiable, unless the scenario turns it off', async () => {
    const verifies = async (token: string, keys: ReturnType<typeof createLocalJWKSet>): Promise<boolean> => jwtVerify(token, keys).then(() => true, () => false);
    const sidecarApi = emu.scenario.apps.sidecarApi;
    const form = (scope: string): Record<string, string> => ({ client_id: sidecarApi.appId, client_secret: sidecarApi.secrets[0].value, grant_type: 'client_credentials', scope });
    const graph = (await call(agent, `${emu.origin}/${tid}/oauth2/v2.0/token`, { form: form('https://graph.microsoft.com/.default') })).json.access_token as string;
    expect(decodePart(graph, 0).nonce).to.be.a('string').and.not.equal('');
    expect(await verifies(graph, await jwks()), 'a Graph token does not verify').to.equal(false);
    const minted = await emu.mint({ kind: 'app', audience: 'https://graph.microsoft.com' });
    expect(decodePart(minted, 0)).to.have.property('nonce');
    expect(await verifies(minted, await jwks())).to.equal(false);
    // Entra itself can verify it: as an OBO assertion it fails on its audience, not its signature.
    const userGraph = await emu.mint({ kind: 'user', audience: 'https://graph.microsoft.com' });
    const obo = await call(agent, `${emu.origin}/${tid}/oauth2/v2.0/token`, { form: { ...form('api://downstream/read'), grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', requested_token_use: 'on_behalf_of', assertion: userGraph } });
    expect(obo.json.error_codes).to.deep.equal([50013]);
    expect(String(obo.json.error_description)).to.match(/^AADSTS50013: Assertion audience does not match/);
    const downstream = (await call(agent, `${emu.origin}/${tid}/oauth2/v2.0/token`, { form: form('api://downstream/.default') })).json.access_token as string;
    expect(decodePart(downstream, 0)).not.to.have.property('nonce');
    expect(await verifies(downstream, await jwks())).to.equal(true);

    const scenario = defaultScenario();
    scenario.apps.graph.nonceHeader = false;
    const plain = await startEmulator({ scenario });
    const plainAgent = new Agent({ connect: { ca: plain.caPem } });
    try {
      const app = plain.scenario.apps.sidecarApi;
      const r = await call(plainAgent, `${plain.origin}/${tid}/oauth2/v2.0/token`, { form: { client_id: app.appId, client_secret: app.secrets[0].value, grant_type: 'client_credentials', scope: 'https://graph.microsoft.com/.default' } });
      const token = r.json.access_token as string;
      expect(decodePart(token, 0)).not.to.have.property('nonce');
      const keys = createLocalJWKSet((await call(plainAgent, `${plain.origin}/${tid}/discovery/keys`)).json as unknown as JSONWebKeySet);
      expect(await verifies(token, keys)).to.equal(true);
    } finally {
      await plainAgent.close();
      await plain.close();
    }
  });

  it('rotates the signing key, keeps old keys published, and drops them on request', async () => {
    const before = (await call(agent, `${emu.origin}/${tid}/discovery/v2.0/keys`)).json.keys as Array<Record<string, unknown>>;
    const oldToken = await emu.mint({ kind: 'app' });
    emu.rotateKeys();
    const after = (await call(agent, `${emu.origin}/${tid}/discovery/v2.0/keys`)).json.keys as Array<Record<string, unknown>>;
    expect(after).to.have.length(before.length + 1);
    const newKid = decodePart(await emu.mint({ kind: 'app' }), 0).kid;
    expect(before.map((k) => k.kid)).not.to.include(newKid);
    await jwtVerify(oldToken, await jwks());
    emu.rotateKeys({ dropOld: true });
    const dropped = (await call(agent, `${emu.origin}/${tid}/discovery/v2.0/keys`)).json.keys as Array<Record<string, unknown>>;
    expect(dropped).to.have.length(1);
    let failed = false;
    try {
      await jwtVerify(oldToken, await jwks());
    } catch {
      failed = true;
    }
    expect(failed).to.equal(true);
  });
});
