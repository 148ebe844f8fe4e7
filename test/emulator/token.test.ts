/** Wire-level tests of the token endpoint: every grant's success path and the AADSTS errors of §2.9. */
import { expect } from 'chai';
import { createPrivateKey, generateKeyPairSync, randomUUID } from 'node:crypto';
import { Agent } from 'undici';
import { SignJWT } from 'jose';
import { defaultScenario, startEmulator } from '../../emulator/index.js';
import type { Emulator } from '../../emulator/index.js';
import { call, decodePart } from './helpers.js';
import type { RawResponse } from './helpers.js';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

describe('emulator: token endpoint', function () {
  let emu: Emulator;
  let agent: Agent;
  let tid: string;
  let tokenUrl: string;
  let sidecar: { appId: string; secret: string; keyPem: string; x5t: string; x5tS256: string };

  before(async function () {
    this.timeout(30_000);
    emu = await startEmulator();
    agent = new Agent({ connect: { ca: emu.caPem } });
    tid = emu.scenario.tenants.primary.id;
    tokenUrl = `${emu.origin}/${tid}/oauth2/v2.0/token`;
    const app = emu.scenario.apps.sidecarApi;
    const cert = app.certificates[0];
    sidecar = { appId: app.appId, secret: app.secrets[0].value, keyPem: cert.keyPem!, x5t: cert.x5t!, x5tS256: cert.x5tS256! };
  });
  after(async () => {
    await agent?.close();
    await emu?.close();
  });
  afterEach(() => emu.reset());

  const post = (form: Record<string, string>, url = tokenUrl, headers: Record<string, string> = {}): Promise<RawResponse> => call(agent, url, { form, headers });
  const secretForm = (extra: Record<string, string>): Record<string, string> => ({ client_id: sidecar.appId, client_secret: sidecar.secret, ...extra });
  const expectAadsts = (r: RawResponse, status: number, error: string, code: number): void => {
    expect(r.status, JSON.stringify(r.json)).to.equal(status);
    expect(r.json.error).to.equal(error);
    expect(r.json.error_codes).to.deep.equal([code]);
    expect(String(r.json.error_description)).to.match(new RegExp(`^AADSTS${code}: `));
  };

  async function certAssertion(overrides: { header?: Record<string, unknown>; payload?: Record<string, unknown>; key?: string; alg?: 'RS256' | 'PS256' } = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const alg = overrides.alg ?? 'PS256';
    return new SignJWT({ aud: tokenUrl, iss: sidecar.appId, sub: sidecar.appId, jti: randomUUID(), nbf: now, iat: now, exp: now + 600, ...overrides.payload })
      .setProtectedHeader({ alg, typ: 'JWT', ...(alg === 'PS256' ? { 'x5t#S256': sidecar.x5tS256 } : { x5t: sidecar.x5t }), ...overrides.header })
      .sign(createPrivateKey(overrides.key ?? sidecar.keyPem));
  }
  const assertionForm = (assertion: string, extra: Record<string, string>): Record<string, string> =>
    ({ client_id: sidecar.appId, client_assertion_type: ASSERTION_TYPE, client_assertion: assertion, ...extra });

  describe('client_credentials', () => {
    it('accepts client_secret_basic and omits scope from the reply', async () => {
      const basic = Buffer.from(`${encodeURIComponent(sidecar.appId)}:${encodeURIComponent(sidecar.secret)}`).toString('base64');
      const r = await post({ grant_type: 'client_credentials', scope: 'api://downstream/.default' }, tokenUrl, { authorization: `Basic ${basic}` });
      expect(r.status).to.equal(200);
      expect(r.json.token_type).to.equal('Bearer');
      expect(r.json.expires_in).to.equal(3599);
      expect(r.json.ext_expires_in).to.equal(3599);
      expect(r.json).not.to.have.property('scope');
      expect(r.headers['cache-control']).to.equal('no-store, no-cache');
      expect(r.headers['x-ms-request-id']).to.be.a('string');
    });

    it('accepts certificate assertions signed RS256 with x5t and PS256 with x5t#S256', async () => {
      for (const alg of ['RS256', 'PS256'] as const) {
        const r = await post(assertionForm(await certAssertion({ alg }), { grant_type: 'client_credentials', scope: 'api://downstream/.default' }));
        expect(r.status, JSON.stringify(r.json)).to.equal(200);
        expect(decodePart(r.json.access_token as string, 1).azpacr).to.equal('2');
      }
    });

    it('issues v1 tokens (x5t header, appid, identifier-URI audience) for a v1 resource', async () => {
      const r = await post(secretForm({ grant_type: 'client_credentials', scope: 'api://legacy-v1/.default' }));
      const header = decodePart(r.json.access_token as string, 0);
      const claims = decodePart(r.json.access_token as string, 1);
      expect(header.x5t).to.equal(header.kid);
      expect(claims.ver).to.equal('1.0');
      expect(claims.aud).to.equal('api://legacy-v1');
      expect(claims.iss).to.equal(`${emu.origin}/${tid}/`);
      expect(claims.appid).to.equal(sidecar.appId);
      expect(claims.appidacr).to.equal('1');
      expect(claims.roles).to.deep.equal(['Legacy.Read']);
      for (const c of ['tid', 'oid', 'sub', 'iat', 'nbf', 'exp', 'uti', 'rh', 'aio']) expect(claims).to.have.property(c);
      expect(claims.idtyp).to.equal('app');
    });

    it('serves the v1 token endpoint with resource= and string numbers', async () => {
      const r = await post(secretForm({ grant_type: 'client_credentials', resource: 'https://graph.microsoft.com' }), `${emu.origin}/${tid}/oauth2/token`);
      expect(r.status).to.equal(200);
      expect(r.json.expires_in).to.equal('3599');
      expect(r.json.resource).to.equal('https://graph.microsoft.com');
      expect(r.json.expires_on).to.match(/^\d+$/);
    });

    it('requires resource on the v1 token endpoint, which ignores scope (900144)', async () => {
      const v1 = `${emu.origin}/${tid}/oauth2/token`;
      const r = await post(secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default' }), v1);
      expectAadsts(r, 400, 'invalid_request', 900144);
      expect(String(r.json.error_description)).to.contain("'resource'");
      const both = await post(secretForm({ grant_type: 'client_credentials', resource: 'api://downstream', scope: 'https://graph.microsoft.com/.default' }), v1);
      expect(both.status).to.equal(200);
      expect(decodePart(both.json.access_token as string, 1).aud).to.equal(emu.scenario.apps.downstreamApi.appId);
    });

    it('rejects a wrong secret (7000215), an expired secret (7000222) and no credential (7000218) with 401', async () => {
      expectAadsts(await post({ ...secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default' }), client_secret: 'nope' }), 401, 'invalid_client', 7000215);
      const expired = emu.scenario.apps.sidecarApi.secrets[1].value;
      expectAadsts(await post({ ...secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default' }), client_secret: expired }), 401, 'invalid_client', 7000222);
      expectAadsts(await post({ grant_type: 'client_credentials', client_id: sidecar.appId, scope: 'api://downstream/.default' }), 401, 'invalid_client', 7000218);
    });

    it('checks request shape, tenant, grant type and client before credentials', async () => {
      const get = await call(agent, tokenUrl);
      expectAadsts(get, 400, 'invalid_request', 900561);
      expectAadsts(await post({ client_id: sidecar.appId }), 400, 'invalid_request', 900144);
      expectAadsts(await post(secretForm({ grant_type: 'password' })), 400, 'unsupported_grant_type', 70003);
      expectAadsts(await post(secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default' }), `${emu.origin}/common/oauth2/v2.0/token`), 400, 'invalid_request', 9001023);
      expectAadsts(await post(secretForm({ grant_type: 'client_credentials', scope: 'x/.default' }), `${emu.origin}/99999999-9999-4999-8999-999999999999/oauth2/v2.0/token`), 400, 'invalid_request', 90002);
      expectAadsts(await post({ ...secretForm({ grant_type: 'client_credentials' }), client_id: randomUUID() }), 400, 'unauthorized_client', 700016);
    });

    it('echoes the client-request-id (query, body, or the client-request-id / x-ms-client-request-id header) as correlation_id', async () => {
      const bad = { ...secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default' }), client_secret: 'nope' };
      const id = (n: number): string => `11111111-2222-4333-8444-55555555555${n}`;
      expect((await post(bad, `${tokenUrl}?client-request-id=${id(1)}`)).json.correlation_id).to.equal(id(1));
      expect((await post({ ...bad, 'client-request-id': id(2) })).json.correlation_id).to.equal(id(2));
      expect((await post(bad, tokenUrl, { 'client-request-id': id(3) })).json.correlation_id).to.equal(id(3));
      expect((await post(bad, tokenUrl, { 'x-ms-client-request-id': id(4) })).json.correlation_id).to.equal(id(4));
      expect((await post(bad)).json.correlation_id).to.match(/^[0-9a-f-]{36}$/);
    });

    it('enforces the .default scope rules (1002012, 700022, 500011)', async () => {
      expectAadsts(await post(secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/read' })), 400, 'invalid_scope', 1002012);
      expectAadsts(await post(secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default https://graph.microsoft.com/.default' })), 400, 'invalid_scope', 700022);
      expectAadsts(await post(secretForm({ grant_type: 'client_credentials', scope: 'api://nothing-here/.default' })), 400, 'invalid_resource', 500011);
    });

    it('rejects bad certificate assertions: audience 50027, iss/sub 50048, time 700024, unknown cert or bad signature 700027', async () => {
      const cc = { grant_type: 'client_credentials', scope: 'api://downstream/.default' };
      expectAadsts(await post(assertionForm(await certAssertion({ payload: { aud: 'https://elsewhere.example/token' } }), cc)), 401, 'invalid_client', 50027);
      expectAadsts(await post(assertionForm(await certAssertion({ payload: { sub: 'someone-else' } }), cc)), 401, 'invalid_client', 50048);
      const past = Math.floor(Date.now() / 1000) - 7200;
      expectAadsts(await post(assertionForm(await certAssertion({ payload: { nbf: past, iat: past, exp: past + 600 } }), cc)), 401, 'invalid_client', 700024);
      expectAadsts(await post(assertionForm(await certAssertion({ header: { 'x5t#S256': 'AAAA' } }), cc)), 401, 'invalid_client', 700027);
      const otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
      expectAadsts(await post(assertionForm(await certAssertion({ key: otherKey }), cc)), 401, 'invalid_client', 700027);
    });

    it('takes as client-assertion aud only the tenant\u2019s v2 or v1 token URL (by GUID or domain) or its issuer, as a string', async () => {
      const cc = { grant_type: 'client_credentials', scope: 'api://downstream/.default' };
      const withAud = async (aud: unknown): Promise<RawResponse> => post(assertionForm(await certAssertion({ payload: { aud } }), cc));
      for (const aud of [
        `${emu.origin}/${tid}/oauth2/v2.0/token`,
        `${emu.origin}/contoso.onmicrosoft.com/oauth2/v2.0/token`,
        `${emu.origin}/${tid}/oauth2/token`,
        `${emu.origin}/contoso.example/oauth2/token`,
        `${emu.origin}/${tid}/v2.0`,
      ]) {
        const r = await withAud(aud);
        expect(r.status, `${aud}: ${JSON.stringify(r.json)}`).to.equal(200);
      }
      for (const aud of [
        `${emu.origin}/${tid}`,
        `${emu.origin}/${tid}/`,
        `${emu.origin}/${tid}/oauth2/v2.0/token/`,
        `${emu.origin}/${tid}/OAUTH2/V2.0/TOKEN`,
        `${emu.origin}/${emu.scenario.tenants.secondary.id}/oauth2/v2.0/token`,
        [`${emu.origin}/${tid}/oauth2/v2.0/token`],
        ['https://elsewhere.example/token', `${emu.origin}/${tid}/oauth2/v2.0/token`],
      ]) {
        expectAadsts(await withAud(aud), 401, 'invalid_client', 50027);
      }
    });
  });

  describe('federated credentials', () => {
    it('accepts a Kubernetes service-account token matching the FIC and names each mismatch', async () => {
      const cc = { grant_type: 'client_credentials', scope: 'api://downstream/.default' };
      const ok = await post(assertionForm(await emu.mintFederatedAssertion(), cc));
      expect(ok.status, JSON.stringify(ok.json)).to.equal(200);
      expectAadsts(await post(assertionForm(await emu.mintFederatedAssertion({ subject: 'system:serviceaccount:other:sa' }), cc)), 401, 'invalid_client', 700213);
      expectAadsts(await post(assertionForm(await emu.mintFederatedAssertion({ audience: 'api://wrong' }), cc)), 401, 'invalid_client', 700212);
      const now = Math.floor(Date.now() / 1000);
      const foreign = await new SignJWT({ iss: 'https://untrusted.example', sub: 'x', aud: 'api://AzureADTokenExchange', exp: now + 600 })
        .setProtectedHeader({ alg: 'RS256' }).sign(createPrivateKey(sidecar.keyPem));
      expectAadsts(await post(assertionForm(foreign, cc)), 401, 'invalid_client', 700211);
    });

    it('writes a projected service-account token file the emulator accepts', async () => {
      const { readFile } = await import('node:fs/promises');
      const file = await emu.writeFederatedAssertionFile();
      const assertion = (await readFile(file, 'utf8')).trim();
      const r = await post(assertionForm(assertion, { grant_type: 'client_credentials', scope: 'api://downstream/.default' }));
      expect(r.status).to.equal(200);
    });

    it('accepts a managed-identity token as the client assertion and rejects user tokens (700229)', async () => {
      const mi = await call(agent, `${emu.imdsOrigin}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://AzureADTokenExchange&client_id=${emu.scenario.managedIdentities.userAssigned.clientId}`, { headers: { Metadata: 'true' } });
      expect(mi.status).to.equal(200);
      const r = await post(assertionForm(mi.json.access_token as string, { grant_type: 'client_credentials', scope: 'api://downstream/.default' }));
      expect(r.status, JSON.stringify(r.json)).to.equal(200);
      const userToken = await emu.mint({ kind: 'user', audience: 'api://AzureADTokenExchange' });
      expectAadsts(await post(assertionForm(userToken, { grant_type: 'client_credentials', scope: 'api://downstream/.default' })), 401, 'invalid_client', 700229);
    });

    it('matches a federated credential\u2019s issuer exactly: a v1-issuer managed-identity token does not match a v2-issuer FIC (700211)', async () => {
      const cc = { grant_type: 'client_credentials', scope: 'api://downstream/.default' };
      const uami = emu.scenario.managedIdentities.userAssigned.clientId;
      const v2 = await emu.mint({ kind: 'app', client: uami, audience: 'api://AzureADTokenExchange', version: 2 });
      expect((await post(assertionForm(v2, cc))).status).to.equal(200);
      const v1 = await emu.mint({ kind: 'app', client: uami, audience: 'api://AzureADTokenExchange', version: 1 });
      expect(decodePart(v1, 1).iss).to.equal(`${emu.origin}/${tid}/`);
      expectAadsts(await post(assertionForm(v1, cc)), 401, 'invalid_client', 700211);
    });
  });

  describe('on-behalf-of', () => {
    const obo = (assertion: string, scope: string, client = secretForm({})): Record<string, string> =>
      ({ ...client, grant_type: JWT_BEARER, requested_token_use: 'on_behalf_of', assertion, scope });

    it('returns a user token with scp, scope, refresh_token, id_token and client_info', async () => {
      const r = await post(obo(await emu.mint({ kind: 'user' }), 'api://downstream/.default openid profile offline_access'));
      expect(r.status, JSON.stringify(r.json)).to.equal(200);
      const claims = decodePart(r.json.access_token as string, 1);
      expect(claims.scp).to.equal('read write');
      expect(claims.preferred_username).to.equal(emu.scenario.users.normal.upn);
      expect(String(r.json.scope).split(' ')).to.include.members(['api://downstream/read', 'api://downstream/write', 'api://downstream/.default', 'openid', 'profile']);
      expect(r.json.refresh_token).to.be.a('string');
      expect(decodePart(r.json.id_token as string, 1).aud).to.equal(sidecar.appId);
      expect(JSON.parse(Buffer.from(r.json.client_info as string, 'base64url').toString())).to.deep.equal({ uid: emu.scenario.users.normal.oid, utid: tid });
    });

    it('refuses .default beside explicit scopes of the same resource (70011), keeps it with OIDC scopes', async () => {
      for (const scope of ['api://downstream/.default api://downstream/read', 'api://downstream/read openid api://downstream/.default']) {
        expectAadsts(await post(obo(await emu.mint({ kind: 'user' }), scope)), 400, 'invalid_scope', 70011);
      }
      const ok = await post(obo(await emu.mint({ kind: 'user' }), 'api://downstream/.default openid offline_access'));
      expect(ok.status).to.equal(200);
    });

    it('rejects expired (500133), foreign-audience, unknown-key and unsigned assertions (50013)', async () => {
      expectAadsts(await post(obo(await emu.mint({ kind: 'user', expiresInSec: -60 }), 'api://downstream/read')), 400, 'invalid_grant', 500133);
      expectAadsts(await post(obo(await emu.mint({ kind: 'user', audience: 'api://downstream' }), 'api://downstream/read')), 400, 'invalid_grant', 50013);
      expectAadsts(await post(obo(await emu.mint({ kind: 'user', signWith: 'unknown-key' }), 'api://downstream/read')), 400, 'invalid_grant', 50013);
      expectAadsts(await post(obo(await emu.mint({ kind: 'user', signWith: 'none' }), 'api://downstream/read')), 400, 'invalid_grant', 50013);
      expectAadsts(await post({ ...secretForm({}), grant_type: JWT_BEARER, requested_token_use: 'on_behalf_of', scope: 'api://downstream/read' }), 400, 'invalid_request', 900144);
    });

    it('requires consent (65001 consent_required) and allowOnBehalfOf (7000114)', async () => {
      const r = await post(obo(await emu.mint({ kind: 'user' }), 'api://legacy-v1/.default', secretForm({})));
      expect(r.status).to.equal(200); // consented
      const noConsent = await post(obo(await emu.mint({ kind: 'user' }), 'https://management.azure.com/user_impersonation'));
      expectAadsts(noConsent, 400, 'invalid_grant', 65001);
      expect(noConsent.json.suberror).to.equal('consent_required');

      const scenario = defaultScenario();
      scenario.apps.sidecarApi.allowOnBehalfOf = false;
      const strict = await startEmulator({ scenario });
      const strictAgent = new Agent({ connect: { ca: strict.caPem } });
      try {
        const form = { client_id: scenario.apps.sidecarApi.appId, client_secret: strict.scenario.apps.sidecarApi.secrets[0].value, grant_type: JWT_BEARER, requested_token_use: 'on_behalf_of', assertion: await strict.mint({ kind: 'user' }), scope: 'api://downstream/read' };
        expectAadsts(await call(strictAgent, `${strict.origin}/${tid}/oauth2/v2.0/token`, { form }), 400, 'unauthorized_client', 7000114);
      } finally {
        await strictAgent.close();
        await strict.close();
      }
    });

    it('redeems refresh tokens without revoking them and rejects unknown (50173), garbage (9002313) and expired (700082) ones', async () => {
      const first = await post(obo(await emu.mint({ kind: 'user' }), 'api://downstream/read offline_access'));
      const rt = first.json.refresh_token as string;
      const refreshed = await post({ ...secretForm({}), grant_type: 'refresh_token', refresh_token: rt, scope: 'api://downstream/read offline_access' });
      expect(refreshed.status, JSON.stringify(refreshed.json)).to.equal(200);
      expect(refreshed.json.refresh_token).to.be.a('string').and.not.equal(rt);
      expect(decodePart(refreshed.json.access_token as string, 1).oid).to.equal(emu.scenario.users.normal.oid);
      // Entra does not revoke a refresh token when it is redeemed: the old one still works, also
      // for two concurrent redemptions for different resources.
      const [again, graph] = await Promise.all([
        post({ ...secretForm({}), grant_type: 'refresh_token', refresh_token: rt, scope: 'api://downstream/write' }),
        post({ ...secretForm({}), grant_type: 'refresh_token', refresh_token: rt, scope: 'User.Read' }),
      ]);
      expect(again.status, JSON.stringify(again.json)).to.equal(200);
      expect(decodePart(again.json.access_token as string, 1).scp).to.equal('write');
      expect(graph.status, JSON.stringify(graph.json)).to.equal(200);
      expect(decodePart(graph.json.access_token as string, 1).aud).to.equal('https://graph.microsoft.com');
      expectAadsts(await post({ ...secretForm({}), grant_type: 'refresh_token', refresh_token: `1.emu.${'A'.repeat(64)}`, scope: 'api://downstream/read' }), 400, 'invalid_grant', 50173);
      expectAadsts(await post({ ...secretForm({}), grant_type: 'refresh_token', refresh_token: 'garbage', scope: 'api://downstream/read' }), 400, 'invalid_grant', 9002313);
      emu.setClockOffset(emu.scenario.refreshTokenLifetimeSec + 10);
      expectAadsts(await post({ ...secretForm({}), grant_type: 'refresh_token', refresh_token: refreshed.json.refresh_token as string, scope: 'api://downstream/read' }), 400, 'invalid_grant', 700082);
      expectAadsts(await post({ ...secretForm({}), grant_type: 'refresh_token', refresh_token: rt, scope: 'api://downstream/read' }), 400, 'invalid_grant', 700082);
    });

    describe('claims challenges for an authentication context (acrs)', () => {
      const acrs = (value: string): string => JSON.stringify({ access_token: { acrs: { essential: true, value } } });

      it('puts satisfied authentication contexts in the token as acrs', async () => {
        const r = await post({ ...obo(await emu.mint({ kind: 'user' }), 'api://downstream/read'), claims: acrs('c1') });
        expect(r.status, JSON.stringify(r.json)).to.equal(200);
        expect(decodePart(r.json.access_token as string, 1).acrs).to.deep.equal(['c1']);
        const plain = await post(obo(await emu.mint({ kind: 'user' }), 'api://downstream/read'));
        expect(decodePart(plain.json.access_token as string, 1)).not.to.have.property('acrs');
      });

      it('refuses an unsatisfied one with interaction_required (50076), suberror and the claims to step up to', async () => {
        emu.conditionalAccess({ unsatisfiedAcrs: ['c1'] });
        const r = await post({ ...obo(await emu.mint({ kind: 'user' }), 'api://downstream/read'), claims: acrs('c1') });
        expectAadsts(r, 400, 'interaction_required', 50076);
        expect(r.json.suberror).to.equal('basic_action');
        expect(JSON.parse(r.json.claims as string)).to.deep.equal({ access_token: { acrs: { essential: true, value: 'c1' } } });
        expect(String(r.json.error_description)).to.contain(`'${emu.scenario.apps.downstreamApi.appId}'`);
        // The values form, and the refresh-token grant, are held to the same rule.
        const values = JSON.stringify({ access_token: { acrs: { essential: true, values: ['c2', 'c1'] } } });
        expectAadsts(await post({ ...obo(await emu.mint({ kind: 'user' }), 'api://downstream/read'), claims: values }), 400, 'interaction_required', 50076);
        const rt = (await post(obo(await emu.mint({ kind: 'user' }), 'api://downstream/read offline_access'))).json.refresh_token as string;
        expectAadsts(await post({ ...secretForm({}), grant_type: 'refresh_token', refresh_token: rt, scope: 'api://downstream/read', claims: acrs('c1') }), 400, 'interaction_required', 50076);
        // Other contexts, requests without claims, and app tokens are unaffected.
        const c2 = await post({ ...obo(await emu.mint({ kind: 'user' }), 'api://downstream/read'), claims: acrs('c2') });
        expect(decodePart(c2.json.access_token as string, 1).acrs).to.deep.equal(['c2']);
        expect((await post(obo(await emu.mint({ kind: 'user' }), 'api://downstream/read'))).status).to.equal(200);
        const app = await post(secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default', claims: acrs('c1') }));
        expect(app.status).to.equal(200);
        expect(decodePart(app.json.access_token as string, 1)).not.to.have.property('acrs');
      });

      it('applies to the named users only, and is cleared by conditionalAccess() and reset()', async () => {
        emu.conditionalAccess({ unsatisfiedAcrs: ['c1'], users: ['secondaryUser'] });
        expect((await post({ ...obo(await emu.mint({ kind: 'user' }), 'api://downstream/read'), claims: acrs('c1') })).status).to.equal(200);
        emu.conditionalAccess({ unsatisfiedAcrs: ['c1'], users: [emu.scenario.users.normal.upn] });
        expect((await post({ ...obo(await emu.mint({ kind: 'user' }), 'api://downstream/read'), claims: acrs('c1') })).status).to.equal(400);
        emu.conditionalAccess();
        expect((await post({ ...obo(await emu.mint({ kind: 'user' }), 'api://downstream/read'), claims: acrs('c1') })).status).to.equal(200);
        emu.conditionalAccess({ unsatisfiedAcrs: ['c1'] });
        emu.reset();
        expect((await post({ ...obo(await emu.mint({ kind: 'user' }), 'api://downstream/read'), claims: acrs('c1') })).status).to.equal(200);
      });
    });
  });

  describe('agents, PoP and claims', () => {
    async function t1(agentId: string): Promise<string> {
      const r = await post(secretForm({ grant_type: 'client_credentials', scope: 'api://AzureADTokenExchange/.default', fmi_path: agentId }));
      expect(r.status, JSON.stringify(r.json)).to.equal(200);
      return r.json.access_token as string;
    }
    const agentForm = (agentId: string, assertion: string, extra: Record<string, string>): Record<string, string> =>
      ({ client_id: agentId, client_assertion_type: ASSERTION_TYPE, client_assertion: assertion, ...extra });

    it('mints T1 with the FMI subject path and refuses fmi_path for non-blueprints or unknown agents', async () => {
      const agentId = emu.scenario.apps.agentIdentity1.appId;
      const claims = decodePart(await t1(agentId), 1);
      expect(claims.aud).to.equal('fb60f99c-7a34-4190-8149-302f77469936');
      expect(claims.azp).to.equal(sidecar.appId);
      expect(claims.sub).to.match(/^\/eid1\/c\/pub\/t\/[A-Za-z0-9_-]+\/a\/[A-Za-z0-9_-]+\/5ca1ab1e-0000-4000-8000-00000000a101$/);
      const clientApp = emu.scenario.apps.clientApp;
      expectAadsts(await post({ client_id: clientApp.appId, client_secret: clientApp.secrets[0].value, grant_type: 'client_credentials', scope: 'api://AzureADTokenExchange/.default', fmi_path: agentId }), 400, 'invalid_request', 90014);
      expectAadsts(await post(secretForm({ grant_type: 'client_credentials', scope: 'api://AzureADTokenExchange/.default', fmi_path: randomUUID() })), 400, 'invalid_request', 90014);
    });

    it('issues autonomous agent tokens with agent claims and rejects a T1 naming another agent', async () => {
      const agent1 = emu.scenario.apps.agentIdentity1.appId;
      const r = await post(agentForm(agent1, await t1(agent1), { grant_type: 'client_credentials', scope: 'api://downstream/.default' }));
      expect(r.status, JSON.stringify(r.json)).to.equal(200);
      const claims = decodePart(r.json.access_token as string, 1);
      expect(claims.azp).to.equal(agent1);
      expect(claims.idtyp).to.equal('app');
      expect(claims.xms_act_fct).to.equal('11');
      expect(claims.xms_par_app_azp).to.equal(sidecar.appId);
      expect(claims.roles).to.deep.equal(['Data.Read']);
      const agent2 = emu.scenario.apps.agentIdentity2.appId;
      expectAadsts(await post(agentForm(agent2, await t1(agent1), { grant_type: 'client_credentials', scope: 'api://downstream/.default' })), 401, 'invalid_client', 700213);
    });

    it('runs user_fic and the legacy jwt-bearer form for the agent user, and rejects other users', async () => {
      const agent1 = emu.scenario.apps.agentIdentity1.appId;
      const assertion = await t1(agent1);
      const t2 = (await post(agentForm(agent1, assertion, { grant_type: 'client_credentials', scope: 'api://AzureADTokenExchange/.default' }))).json.access_token as string;
      const r = await post(agentForm(agent1, assertion, { grant_type: 'user_fic', user_federated_identity_credential: t2, user_id: emu.scenario.users.agentUser1.oid, scope: 'api://downstream/read openid offline_access' }));
      expect(r.status, JSON.stringify(r.json)).to.equal(200);
      const claims = decodePart(r.json.access_token as string, 1);
      expect(claims.idtyp).to.equal('user');
      expect(claims.xms_act_fct).to.equal('11');
      expect(claims.xms_sub_fct).to.equal('13');
      expect(r.json.refresh_token).to.be.a('string');
      const legacy = await post(agentForm(agent1, assertion, { grant_type: JWT_BEARER, assertion: t2, username: emu.scenario.users.agentUser1.upn, scope: 'api://downstream/read' }));
      expect(legacy.status, JSON.stringify(legacy.json)).to.equal(200);
      expect(emu.counters()['token:user_fic']).to.equal(1);
      expectAadsts(await post(agentForm(agent1, assertion, { grant_type: 'user_fic', user_federated_identity_credential: t2, username: emu.scenario.users.agentUser2.upn, scope: 'api://downstream/read' })), 400, 'invalid_grant', 50034);
      expectAadsts(await post(agentForm(agent1, assertion, { grant_type: 'user_fic', user_federated_identity_credential: t2, username: 'nobody@contoso.onmicrosoft.com', scope: 'api://downstream/read' })), 400, 'invalid_grant', 50034);
      expectAadsts(await post(secretForm({ grant_type: 'user_fic', user_federated_identity_credential: t2, username: emu.scenario.users.agentUser1.upn, scope: 'api://downstream/read' })), 400, 'unauthorized_client', 82001);
    });

    it('binds PoP tokens to req_cnf and rejects a missing or malformed req_cnf', async () => {
      const reqCnf = Buffer.from(JSON.stringify({ kid: 'thumbprint-123', xms_ksl: 'sw' })).toString('base64url');
      const r = await post(secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default', token_type: 'pop', req_cnf: reqCnf }));
      expect(r.json.token_type).to.equal('pop');
      expect(decodePart(r.json.access_token as string, 1).cnf).to.deep.equal({ kid: 'thumbprint-123', xms_ksl: 'sw' });
      expectAadsts(await post(secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default', token_type: 'pop' })), 400, 'invalid_request', 900144);
      expectAadsts(await post(secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default', token_type: 'pop', req_cnf: Buffer.from('{"nokid":1}').toString('base64url') })), 400, 'invalid_request', 5000811);
    });

    it('gives CAE-capable clients (claims xms_cc cp1) long-lived tokens for CAE-capable resources only, and rejects invalid claims JSON', async () => {
      const claims = JSON.stringify({ access_token: { xms_cc: { values: ['cp1'] } } });
      const r = await post(secretForm({ grant_type: 'client_credentials', scope: 'https://graph.microsoft.com/.default', claims }));
      expect(r.json.expires_in).to.equal(86399);
      expect(r.json.refresh_in).to.equal(43199);
      expect(decodePart(r.json.access_token as string, 1).xms_cc).to.deep.equal(['cp1']);
      const user = await post({ ...secretForm({}), grant_type: JWT_BEARER, requested_token_use: 'on_behalf_of', assertion: await emu.mint({ kind: 'user' }), scope: 'User.Read', claims });
      expect(user.json.expires_in).to.equal(86399);
      // A resource that does not take part in CAE gets the normal lifetime and no xms_cc.
      const custom = await post(secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default', claims }));
      expect(custom.json.expires_in).to.equal(3599);
      expect(custom.json).not.to.have.property('refresh_in');
      expect(decodePart(custom.json.access_token as string, 1)).not.to.have.property('xms_cc');
      expectAadsts(await post(secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default', claims: '{not json' })), 400, 'invalid_request', 90100);
    });

    it('ignores unknown parameters such as telemetry and caller-sdk-id', async () => {
      const r = await post(secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default', 'x-client-SKU': 'msal.js.node', 'caller-sdk-id': 'x', dc: 'y' }));
      expect(r.status).to.equal(200);
    });
  });

  describe('tenants', () => {
    /** A second emulator whose multi-tenant client app holds Graph grants in chosen tenants. */
    async function withGrants(grant: (scenario: ReturnType<typeof defaultScenario>) => void, run: (other: Emulator, otherAgent: Agent) => Promise<void>): Promise<void> {
      const scenario = defaultScenario();
      grant(scenario);
      const other = await startEmulator({ scenario });
      const otherAgent = new Agent({ connect: { ca: other.caPem } });
      try {
        await run(other, otherAgent);
      } finally {
        await otherAgent.close();
        await other.close();
      }
    }

    it('counts an app-role grant in its own tenant only, and gives a multi-tenant app another service principal in each tenant', async () => {
      await withGrants((s) => {
        // Admin consent in the home tenant (the default), and Mail.Read granted in the other tenant.
        s.grants.appRoles.push({ client: s.apps.clientApp.appId, resource: s.apps.graph.appId, roles: ['User.Read.All'] });
        s.grants.appRoles.push({ client: s.apps.clientApp.appId, resource: s.apps.graph.appId, roles: ['Mail.Read'], tenant: 'secondary' });
      }, async (other, otherAgent) => {
        const client = other.scenario.apps.clientApp;
        const graphToken = async (tenant: string): Promise<Record<string, unknown>> => {
          const r = await call(otherAgent, `${other.origin}/${tenant}/oauth2/v2.0/token`, { form: { client_id: client.appId, client_secret: client.secrets[0].value, grant_type: 'client_credentials', scope: 'https://graph.microsoft.com/.default' } });
          expect(r.status, JSON.stringify(r.json)).to.equal(200);
          return decodePart(r.json.access_token as string, 1);
        };
        const home = await graphToken(other.scenario.tenants.primary.id);
        const away = await graphToken(other.scenario.tenants.secondary.id);
        expect(home.roles).to.deep.equal(['User.Read.All']);
        expect(away.roles).to.deep.equal(['Mail.Read']);
        expect(home.oid).to.equal(client.servicePrincipalId);
        expect(away.oid, 'another service principal in the other tenant').to.not.equal(client.servicePrincipalId);
        expect(away.oid).to.equal(client.servicePrincipalIds?.[other.scenario.tenants.secondary.id]);
        expect(away.sub).to.equal(away.oid);
      });
    });

    it('lets every grant through /organizations (OBO in the assertion\u2019s tenant, others in the client\u2019s home tenant) and refuses /common and /consumers (9001023)', async () => {
      const orgs = `${emu.origin}/organizations/oauth2/v2.0/token`;
      const cc = await post(secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default' }), orgs);
      expect(cc.status, JSON.stringify(cc.json)).to.equal(200);
      expect(decodePart(cc.json.access_token as string, 1).tid).to.equal(tid);
      const assertion = await certAssertion({ payload: { aud: orgs } });
      const cert = await post(assertionForm(assertion, { grant_type: 'client_credentials', scope: 'api://downstream/.default' }), orgs);
      expect(cert.status, JSON.stringify(cert.json)).to.equal(200);
      const obo = await post({ ...secretForm({}), grant_type: JWT_BEARER, requested_token_use: 'on_behalf_of', assertion: await emu.mint({ kind: 'user' }), scope: 'api://downstream/read offline_access' }, orgs);
      expect(obo.status, JSON.stringify(obo.json)).to.equal(200);
      expect(decodePart(obo.json.access_token as string, 1).tid).to.equal(tid);
      const refreshed = await post({ ...secretForm({}), grant_type: 'refresh_token', refresh_token: obo.json.refresh_token as string, scope: 'api://downstream/read' }, orgs);
      expect(refreshed.status, JSON.stringify(refreshed.json)).to.equal(200);
      for (const meta of ['common', 'consumers']) {
        expectAadsts(await post(secretForm({ grant_type: 'client_credentials', scope: 'api://downstream/.default' }), `${emu.origin}/${meta}/oauth2/v2.0/token`), 400, 'invalid_request', 9001023);
      }
    });

    it('runs OBO through /organizations in the tenant of the assertion', async () => {
      await withGrants((s) => {
        s.grants.delegated.push({ client: s.apps.clientApp.appId, resource: s.apps.graph.appId, scopes: ['User.Read'], tenant: 'secondary' });
      }, async (other, otherAgent) => {
        const client = other.scenario.apps.clientApp;
        const r = await call(otherAgent, `${other.origin}/organizations/oauth2/v2.0/token`, {
          form: {
            client_id: client.appId, client_secret: client.secrets[0].value, grant_type: JWT_BEARER, requested_token_use: 'on_behalf_of', scope: 'User.Read',
            assertion: await other.mint({ kind: 'user', tenant: 'secondary', user: 'secondaryUser', audience: client.appId, scp: 'x' }),
          },
        });
        expect(r.status, JSON.stringify(r.json)).to.equal(200);
        expect(decodePart(r.json.access_token as string, 1).tid).to.equal(other.scenario.tenants.secondary.id);
      });
    });

    it('counts delegated consent in its own tenant only', async () => {
      await withGrants((s) => {
        s.grants.delegated.push({ client: s.apps.clientApp.appId, resource: s.apps.graph.appId, scopes: ['User.Read'] });
      }, async (other, otherAgent) => {
        const client = other.scenario.apps.clientApp;
        const obo = async (tenant: 'primary' | 'secondary', user: string): Promise<RawResponse> => call(otherAgent, `${other.origin}/${other.scenario.tenants[tenant].id}/oauth2/v2.0/token`, {
          form: {
            client_id: client.appId, client_secret: client.secrets[0].value, grant_type: JWT_BEARER, requested_token_use: 'on_behalf_of', scope: 'User.Read',
            assertion: await other.mint({ kind: 'user', tenant, user, audience: client.appId, scp: 'x' }),
          },
        });
        expect((await obo('primary', 'normal')).status).to.equal(200);
        expectAadsts(await obo('secondary', 'secondaryUser'), 400, 'invalid_grant', 65001);
      });
    });
  });
});
