/**
 * Acceptance: @azure/msal-node (pinned 7.2.3) runs unchanged against the emulator, with only the
 * authority, knownAuthorities and a custom network client trusting the emulator CA (§1.8, §10).
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { ConfidentialClientApplication, ServerError } from '@azure/msal-node';
import type { Configuration } from '@azure/msal-node';
import { startEmulator } from '../../emulator/index.js';
import type { Emulator } from '../../emulator/index.js';
import { UndiciNetworkClient, decodePart, parseForm } from './helpers.js';

const here = dirname(fileURLToPath(import.meta.url));

function runChild(env: Record<string, string>, input: unknown): Promise<{ results: Array<{ accessToken?: string; fromCache?: boolean; error?: string }>; sent: string[] }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [join(here, 'fixtures', 'msal-mi-child.js'), JSON.stringify(input)], { env: { ...process.env, ...env }, timeout: 15_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`child failed: ${err.message} ${stderr}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop() as string));
    });
  });
}

describe('emulator: msal-node runs unchanged against it', function () {
  let emu: Emulator;
  let net: UndiciNetworkClient;
  let tenantId: string;
  let host: string;

  before(async function () {
    this.timeout(30_000);
    emu = await startEmulator();
    net = new UndiciNetworkClient(emu.caPem);
    tenantId = emu.scenario.tenants.primary.id;
    host = new URL(emu.origin).host;
  });

  after(async () => {
    await net?.close();
    await emu?.close();
  });

  beforeEach(() => {
    emu.reset();
    net.sent.length = 0;
  });

  function cca(auth: Partial<Configuration['auth']>, clientId = emu.scenario.apps.sidecarApi.appId): ConfidentialClientApplication {
    return new ConfidentialClientApplication({
      auth: { clientId, authority: emu.instance + tenantId, knownAuthorities: [host], ...auth },
      system: { networkClient: net },
    });
  }

  it('acquires a client-credentials token with a secret and serves the repeat from msal cache', async () => {
    const app = cca({ clientSecret: emu.scenario.apps.sidecarApi.secrets[0].value });
    const first = await app.acquireTokenByClientCredential({ scopes: ['api://downstream/.default'] });
    expect(first?.fromCache).to.equal(false);
    const claims = decodePart(first!.accessToken, 1);
    expect(claims.aud).to.equal(emu.scenario.apps.downstreamApi.appId);
    expect(claims.azp).to.equal(emu.scenario.apps.sidecarApi.appId);
    expect(claims.azpacr).to.equal('1');
    expect(claims.roles).to.deep.equal(['Data.Read']);
    expect(claims.iss).to.equal(`${emu.origin}/${tenantId}/v2.0`);
    expect(emu.counters().metadata).to.equal(1);
    expect(emu.counters()['token:client_credentials']).to.equal(1);

    const second = await app.acquireTokenByClientCredential({ scopes: ['api://downstream/.default'] });
    expect(second?.fromCache).to.equal(true);
    expect(second?.accessToken).to.equal(first?.accessToken);
    expect(emu.counters().token).to.equal(1);
  });

  it('acquires a token with a certificate by SHA-256 thumbprint (PS256, x5t#S256)', async () => {
    const cert = emu.scenario.apps.sidecarApi.certificates[0];
    const app = cca({ clientCertificate: { thumbprintSha256: cert.thumbprintSha256!, privateKey: cert.keyPem! } });
    const result = await app.acquireTokenByClientCredential({ scopes: ['https://graph.microsoft.com/.default'] });
    const claims = decodePart(result!.accessToken, 1);
    expect(claims.ver).to.equal('1.0');
    expect(claims.appidacr).to.equal('2');
    const post = net.sent.find((s) => s.method === 'POST');
    const assertion = parseForm(post?.body).client_assertion;
    const header = decodePart(assertion, 0);
    expect(header.alg).to.equal('PS256');
    expect(header['x5t#S256']).to.equal(cert.x5tS256);
  });

  it('acquires a token with a certificate by SHA-1 thumbprint (RS256, x5t)', async () => {
    const cert = emu.scenario.apps.sidecarApi.certificates[0];
    const app = cca({ clientCertificate: { thumbprint: cert.thumbprintSha1!, privateKey: cert.keyPem! } });
    const result = await app.acquireTokenByClientCredential({ scopes: ['api://downstream/.default'] });
    expect(decodePart(result!.accessToken, 1).azpacr).to.equal('2');
    const header = decodePart(parseForm(net.sent.find((s) => s.method === 'POST')?.body).client_assertion, 0);
    expect(header.alg).to.equal('RS256');
    expect(header.x5t).to.equal(cert.x5t);
  });

  it('acquires an OBO token for a minted user token and caches it per assertion', async () => {
    const userToken = await emu.mint({ kind: 'user' });
    const app = cca({ clientSecret: emu.scenario.apps.sidecarApi.secrets[0].value });
    const first = await app.acquireTokenOnBehalfOf({ oboAssertion: userToken, scopes: ['api://downstream/read'] });
    const claims = decodePart(first!.accessToken, 1);
    expect(claims.oid).to.equal(emu.scenario.users.normal.oid);
    expect(claims.scp).to.equal('read');
    expect(claims.azp).to.equal(emu.scenario.apps.sidecarApi.appId);
    expect(claims.idtyp).to.equal('user');
    expect(first?.account?.homeAccountId).to.contain(emu.scenario.users.normal.oid);
    const form = parseForm(net.sent.find((s) => s.method === 'POST')?.body);
    expect(form.requested_token_use).to.equal('on_behalf_of');

    const second = await app.acquireTokenOnBehalfOf({ oboAssertion: userToken, scopes: ['api://downstream/read'] });
    expect(second?.fromCache).to.equal(true);
    expect(emu.counters()['token:urn:ietf:params:oauth:grant-type:jwt-bearer']).to.equal(1);
  });

  it('surfaces a wrong secret as an msal ServerError carrying AADSTS7000215', async () => {
    const app = cca({ clientSecret: 'definitely-not-the-secret' });
    let caught: unknown;
    try {
      await app.acquireTokenByClientCredential({ scopes: ['api://downstream/.default'] });
    } catch (err) {
      caught = err;
    }
    expect(caught).to.be.instanceOf(ServerError);
    expect((caught as ServerError).errorCode).to.equal('invalid_client');
    expect((caught as ServerError).message).to.contain('AADSTS7000215');
    expect((caught as ServerError).message).not.to.contain('definitely-not-the-secret');
  });

  it('runs the agent legs with msal: fmi_path T1, T2 as the agent identity, then user_fic', async () => {
    const blueprint = cca({ clientSecret: emu.scenario.apps.sidecarApi.secrets[0].value });
    const agentId = emu.scenario.apps.agentIdentity1.appId;
    const t1 = await blueprint.acquireTokenByClientCredential({ scopes: ['api://AzureADTokenExchange/.default'], fmiPath: agentId });
    expect(decodePart(t1!.accessToken, 1).sub).to.match(new RegExp(`/${agentId}$`));
    const agent = cca({ clientAssertion: async () => t1!.accessToken }, agentId);
    const t2 = await agent.acquireTokenByClientCredential({ scopes: ['api://AzureADTokenExchange/.default'] });
    const t2Claims = decodePart(t2!.accessToken, 1);
    expect(t2Claims.azp).to.equal(agentId);
    const userResult = await agent.acquireTokenByUserFederatedIdentityCredential({
      scopes: ['api://downstream/read'],
      assertion: t2!.accessToken,
      username: emu.scenario.users.agentUser1.upn,
    });
    const claims = decodePart(userResult!.accessToken, 1);
    expect(claims.oid).to.equal(emu.scenario.users.agentUser1.oid);
    expect(claims.xms_sub_fct).to.equal('13');
    expect(emu.counters()['token:user_fic']).to.equal(1);
  });

  it('acquires managed-identity tokens from IMDS via AZURE_POD_IDENTITY_AUTHORITY_HOST (child process)', async function () {
    this.timeout(20_000);
    const uami = emu.scenario.managedIdentities.userAssigned;
    const out = await runChild({ AZURE_POD_IDENTITY_AUTHORITY_HOST: emu.imdsOrigin }, {
      userAssignedClientId: uami.clientId,
      resources: ['api://downstream/.default', 'api://downstream/.default'],
    });
    expect(out.results[0].error).to.equal(undefined);
    const claims = decodePart(out.results[0].accessToken!, 1);
    expect(claims.oid).to.equal(uami.objectId);
    expect(claims.roles).to.deep.equal(['Data.Read']);
    expect(out.results[1].fromCache).to.equal(true);
    expect(emu.counters().imds).to.equal(1);
    const logged = emu.requests().find((r) => r.route === 'imds');
    expect(logged?.path).to.equal('/metadata/identity/oauth2/token/');
    expect(logged?.query.resource).to.equal('api://downstream');
    expect(logged?.query.client_id).to.equal(uami.clientId);
  });

  it('acquires a system-assigned token from the App Service endpoint (child process)', async function () {
    this.timeout(20_000);
    const out = await runChild({ IDENTITY_ENDPOINT: `${emu.imdsOrigin}/msi/token`, IDENTITY_HEADER: emu.appServiceSecret }, {
      resources: ['https://vault.azure.net'],
    });
    expect(out.results[0].error).to.equal(undefined);
    const claims = decodePart(out.results[0].accessToken!, 1);
    expect(claims.oid).to.equal(emu.scenario.managedIdentities.systemAssigned.objectId);
    expect(claims.aud).to.equal('https://vault.azure.net');
    expect(emu.counters().appservice).to.equal(1);
  });
});
