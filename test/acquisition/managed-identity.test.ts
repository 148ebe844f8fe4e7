import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startEmulator } from '../../emulator/index.js';
import type { Emulator, FaultSpec } from '../../emulator/types.js';
import { acquireTokenOptions, credential } from './fixtures.js';
import { apiOptions, emulatorConfig } from './harness.js';
import type { SidecarConfig } from '../../src/config/types.js';
import type { EffectiveApiOptions } from '../../src/pipeline/types.js';
import { MAX_APPLICATIONS } from '../../src/acquisition/managed-identity.js';

const CHILD = fileURLToPath(new URL('./mi-child.js', import.meta.url));

interface ChildResult {
  label: string;
  ok: boolean;
  scheme?: string;
  claims?: Record<string, unknown>;
  code?: string;
  detail?: string;
  /** The acquirer's token requests (POSTs and managed-identity GETs) so far. */
  entraRequests: number;
}

/** Environment without any managed-identity source variables of the test runner. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(IDENTITY_|MSI_|IMDS_|AZURE_POD_IDENTITY_|AZURE_FEDERATED_TOKEN_FILE|MSAL_FORCE_REGION|REGION_NAME)/.test(k)) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

interface Group {
  config: SidecarConfig;
  /** `claims`: a downstream claims challenge; `fault`: set on the emulator just before the request. */
  requests: Array<{ label: string; options: EffectiveApiOptions; claims?: string; fault?: FaultSpec }>;
}

/** Runs acquirers in a fresh process (msal's managed-identity source is static per process). */
function runChild(env: Record<string, string>, groups: Group[], adminOrigin?: string): Promise<{ results: ChildResult[]; stats: Array<Record<string, number>> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, JSON.stringify({ groups, adminOrigin })], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill(), 15_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`child exited ${code}: ${err}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').at(-1) ?? '') as { results: ChildResult[]; stats: Array<Record<string, number>> });
      } catch {
        reject(new Error(`unexpected child output: ${out} ${err}`));
      }
    });
  });
}

function byLabel(results: ChildResult[], label: string): ChildResult {
  const r = results.find((x) => x.label === label);
  if (!r) throw new Error(`no result ${label}`);
  return r;
}

describe('managed identity (each source in its own process)', function () {
  this.timeout(30_000);
  let emu: Emulator;

  before(async () => {
    emu = await startEmulator();
  });
  after(async () => {
    await emu.close();
  });

  function requests() {
    const s = emu.scenario;
    const ua = s.managedIdentities.userAssigned.clientId;
    return [
      { label: 'system', options: apiOptions({ scopes: ['api://downstream/.default'], acquireTokenOptions: acquireTokenOptions({ managedIdentity: {} }) }) },
      { label: 'user-assigned', options: apiOptions({ scopes: ['api://downstream/.default'], acquireTokenOptions: acquireTokenOptions({ managedIdentity: { userAssignedClientId: ua } }) }) },
      { label: 'user-assigned-again', options: apiOptions({ scopes: ['api://downstream/.default'], acquireTokenOptions: acquireTokenOptions({ managedIdentity: { userAssignedClientId: ua } }) }) },
      { label: 'unknown-identity', options: apiOptions({ scopes: ['api://downstream/.default'], acquireTokenOptions: acquireTokenOptions({ managedIdentity: { userAssignedClientId: '0badc0de-0000-4000-8000-000000000000' } }) }) },
      // A caller can name any client id in an override; "system" must not reach the system-assigned identity's cached token.
      { label: 'named-system', options: apiOptions({ scopes: ['api://downstream/.default'], acquireTokenOptions: acquireTokenOptions({ managedIdentity: { userAssignedClientId: 'system' } }) }) },
    ];
  }

  function check(results: ChildResult[], stats: Record<string, number>) {
    const s = emu.scenario;
    const system = byLabel(results, 'system');
    expect(system.ok, system.detail).to.equal(true);
    expect(system.claims?.oid).to.equal(s.managedIdentities.systemAssigned.objectId);
    const user = byLabel(results, 'user-assigned');
    expect(user.ok, user.detail).to.equal(true);
    expect(user.claims?.oid).to.equal(s.managedIdentities.userAssigned.objectId);
    expect(user.claims?.roles).to.deep.equal(['Data.Read']);
    expect(byLabel(results, 'user-assigned-again').ok).to.equal(true);
    const unknown = byLabel(results, 'unknown-identity');
    expect(unknown.ok).to.equal(false);
    expect(unknown.code, unknown.detail).to.equal('acquisition_rejected');
    const named = byLabel(results, 'named-system');
    expect(named.ok, 'a user-assigned id "system" got the system-assigned token').to.equal(false);
    // The repeat is served from our cache.
    expect(stats.cacheHits).to.be.at.least(1);
  }

  it('gets system- and user-assigned tokens from IMDS and caches them', async () => {
    const before = emu.counters().imds ?? 0;
    const { results, stats } = await runChild({ AZURE_POD_IDENTITY_AUTHORITY_HOST: emu.imdsOrigin }, [{ config: emulatorConfig(emu), requests: requests() }]);
    check(results, stats[0]);
    expect((emu.counters().imds ?? 0) - before).to.equal(4);
  });

  it('gets tokens from the App Service identity endpoint', async () => {
    const before = emu.counters().appservice ?? 0;
    const { results, stats } = await runChild({ IDENTITY_ENDPOINT: `${emu.imdsOrigin}/msi/token`, IDENTITY_HEADER: emu.appServiceSecret }, [{ config: emulatorConfig(emu), requests: requests() }]);
    check(results, stats[0]);
    expect((emu.counters().appservice ?? 0) - before).to.equal(4);
  });

  it('uses a managed-identity token as the client assertion and reads the certificate from Key Vault', async () => {
    const s = emu.scenario;
    const ua = s.managedIdentities.userAssigned.clientId;
    const vault = s.keyVaults.main.url ?? '';
    const app = (label: string, creds: Parameters<typeof credential>[0][]) => ({ label, creds });
    const cases = [
      app('mi-fic', [{ sourceType: 'SignedAssertionFromManagedIdentity', managedIdentityClientId: ua }]),
      app('keyvault-pfx', [{ sourceType: 'KeyVault', keyVaultUrl: vault, keyVaultCertificateName: 'sidecar-cert', managedIdentityClientId: ua }]),
      app('keyvault-pem', [{ sourceType: 'KeyVault', keyVaultUrl: vault, keyVaultCertificateName: 'sidecar-cert-pem' }]),
    ];
    const tokenBefore = emu.requests().filter((r) => r.route === 'token').length;
    const kvBefore = emu.counters().keyvault ?? 0;
    const groups = cases.map((c) => ({
      config: emulatorConfig(emu, { clientCredentials: c.creds.map((d) => credential(d)) }),
      requests: [{ label: c.label, options: apiOptions({ scopes: ['api://downstream/.default'], requestAppToken: true }) }],
    }));
    const { results } = await runChild({ AZURE_POD_IDENTITY_AUTHORITY_HOST: emu.imdsOrigin }, groups);
    for (const c of cases) {
      const r = byLabel(results, c.label);
      expect(r.ok, `${c.label}: ${r.code} ${r.detail}`).to.equal(true);
      expect(r.claims?.azp ?? r.claims?.appid).to.equal(s.apps.sidecarApi.appId);
    }
    const sent = emu.requests().filter((x) => x.route === 'token').slice(tokenBefore);
    expect(sent).to.have.length(3);
    for (const x of sent) expect(x.form.client_assertion_type).to.equal('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    // Each Key Vault credential read its certificate once.
    expect((emu.counters().keyvault ?? 0) - kvBefore).to.equal(2);
  });

  it('keeps a bounded number of managed-identity applications however many identities callers name', async () => {
    // UserAssignedClientId can come from a caller (optionsOverride); each new one made an msal
    // application that was never dropped.
    const ua = emu.scenario.managedIdentities.userAssigned.clientId;
    const mi = (label: string, id: string) => ({ label, options: apiOptions({ scopes: ['api://downstream/.default'], acquireTokenOptions: acquireTokenOptions({ managedIdentity: { userAssignedClientId: id } }) }) });
    const strangers = Array.from({ length: MAX_APPLICATIONS * 3 }, (_, i) => mi(`stranger-${i}`, `0badc0de-0000-4000-8000-${String(i).padStart(12, '0')}`));
    const { results, stats } = await runChild({ AZURE_POD_IDENTITY_AUTHORITY_HOST: emu.imdsOrigin }, [
      { config: emulatorConfig(emu), requests: [mi('before', ua), ...strangers, mi('after', ua)] },
    ]);
    for (const r of strangers) expect(byLabel(results, r.label).code).to.equal('acquisition_rejected');
    expect(byLabel(results, 'before').ok).to.equal(true);
    // Its application was dropped among the strangers and is made again; the token comes from our cache.
    expect(byLabel(results, 'after').ok).to.equal(true);
    expect(stats[0].managedIdentityApplications).to.be.within(1, MAX_APPLICATIONS);
  });

  it('reports an unreachable managed-identity endpoint as acquisition_unavailable', async () => {
    const config = emulatorConfig(emu, { timeoutMs: 500 });
    const { results } = await runChild({ AZURE_POD_IDENTITY_AUTHORITY_HOST: 'http://127.0.0.1:9' }, [
      { config, requests: [{ label: 'down', options: apiOptions({ scopes: ['api://downstream/.default'], acquireTokenOptions: acquireTokenOptions({ managedIdentity: {} }) }) }] },
    ]);
    const r = byLabel(results, 'down');
    expect(r.ok).to.equal(false);
    expect(r.code).to.equal('acquisition_unavailable');
  });
});

describe('managed identity: claims, a refused assertion and msal\u2019s own cache (one process)', function () {
  this.timeout(30_000);
  let emu: Emulator;
  let tokenRequestsBefore: number;
  let run: { results: ChildResult[]; stats: Array<Record<string, number>> };
  const CHALLENGE = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}';

  // One child process for every case below (each group has its own acquirer): starting one costs seconds.
  before(async () => {
    // The admin API lets the child set a fault between two of its requests.
    emu = await startEmulator({ admin: true });
    const s = emu.scenario;
    const ua = s.managedIdentities.userAssigned.clientId;
    const mi = (id: string | undefined, resource = 'api://downstream/.default') =>
      apiOptions({ scopes: [resource], acquireTokenOptions: acquireTokenOptions({ managedIdentity: id ? { userAssignedClientId: id } : {} }) });
    const app = (forceRefresh: boolean) => apiOptions({ scopes: ['api://downstream/.default'], requestAppToken: true, acquireTokenOptions: acquireTokenOptions({ forceRefresh }) });
    tokenRequestsBefore = emu.requests().filter((r) => r.route === 'token').length;
    run = await runChild(
      { AZURE_POD_IDENTITY_AUTHORITY_HOST: emu.imdsOrigin },
      [
        {
          config: emulatorConfig(emu),
          requests: [
            { label: 'plain', options: mi(undefined) },
            { label: 'challenged', options: mi(undefined), claims: CHALLENGE },
            { label: 'plain-again', options: mi(undefined) },
          ],
        },
        {
          config: emulatorConfig(emu, { clientCredentials: [credential({ sourceType: 'SignedAssertionFromManagedIdentity', managedIdentityClientId: ua })] }),
          requests: [
            { label: 'fic-first', options: app(false) },
            // Entra refuses the managed-identity assertion the sidecar cached (AADSTS700024: outside its valid time range).
            { label: 'fic-refused', options: app(true), fault: { route: 'token', status: 401, error: 'invalid_client', aadsts: 700024 } },
            // Then Entra refuses every assertion (a wrong federated credential): the fresh one is kept, not fetched again per request.
            { label: 'fic-persistent-1', options: app(true), fault: { route: 'token', status: 401, error: 'invalid_client', aadsts: 700213, sticky: true } },
            { label: 'fic-persistent-2', options: app(true) },
          ],
        },
        {
          config: emulatorConfig(emu),
          requests: [undefined, ua].flatMap((id, i) =>
            ['api://downstream/.default', `api://${s.apps.sidecarApi.appId}/.default`].map((resource, j) => ({ label: `msal-cache-${i}-${j}`, options: mi(id, resource) })),
          ),
        },
        // Last, so that its IMDS request is the last one the emulator records.
        { config: emulatorConfig(emu, { clientCapabilities: ['cp1'] }), requests: [{ label: 'cp1', options: mi(ua) }] },
      ],
      emu.origin,
    );
  });
  after(async () => {
    await emu.close();
  });

  it('replaces the refused managed-identity token with the one got for a claims challenge', () => {
    const [plain, challenged, again] = ['plain', 'challenged', 'plain-again'].map((l) => byLabel(run.results, l));
    for (const r of [plain, challenged, again]) expect(r.ok, `${r.label}: ${r.code} ${r.detail}`).to.equal(true);
    expect(challenged.claims?.uti).to.not.equal(plain.claims?.uti);
    // A caller without claims now gets the token that satisfied the challenge, from our cache.
    expect(again.claims?.uti, 'the refused token was served again').to.equal(challenged.claims?.uti);
    expect(again.entraRequests).to.equal(2);
  });

  it('fetches a fresh managed-identity assertion after Entra refused the cached one, and retries with it', () => {
    const first = byLabel(run.results, 'fic-first');
    expect(first.ok, `${first.code} ${first.detail}`).to.equal(true);
    const refused = byLabel(run.results, 'fic-refused');
    expect(refused.ok, `${refused.code} ${refused.detail}`).to.equal(true);
    // Only the assertion group posts to the token endpoint: its first request, the refused one and the retry.
    const sent = emu.requests().filter((r) => r.route === 'token').slice(tokenRequestsBefore, tokenRequestsBefore + 3).map((r) => r.form.client_assertion);
    expect(sent).to.have.length(3);
    expect(sent[1], 'the cached assertion was sent').to.equal(sent[0]);
    expect(sent[2], 'the refused assertion was sent again').to.not.equal(sent[1]);
    // One managed-identity GET per assertion: the first and the fresh one.
    expect(refused.entraRequests - first.entraRequests).to.equal(3);
  });

  it('does not fetch a managed-identity assertion per request while Entra keeps refusing it: one token request each, no IMDS call', () => {
    const refused = byLabel(run.results, 'fic-refused');
    const [p1, p2] = ['fic-persistent-1', 'fic-persistent-2'].map((l) => byLabel(run.results, l));
    for (const r of [p1, p2]) expect([r.ok, r.code], r.label).to.deep.equal([false, 'acquisition_rejected']);
    expect(p1.entraRequests - refused.entraRequests).to.equal(1);
    expect(p2.entraRequests - p1.entraRequests).to.equal(1);
    const sent = emu.requests().filter((r) => r.route === 'token').slice(tokenRequestsBefore + 2, tokenRequestsBefore + 5).map((r) => r.form.client_assertion);
    // The assertion that succeeded on the retry is the one sent, refused, twice.
    expect(sent).to.have.length(3);
    expect(new Set(sent).size).to.equal(1);
  });

  it('sends AzureAd:ClientCapabilities to the managed-identity endpoint (xms_cc), as msal does when told them', () => {
    const r = byLabel(run.results, 'cp1');
    expect(r.ok, `${r.code} ${r.detail}`).to.equal(true);
    const imds = emu.requests().filter((q) => q.route === 'imds');
    expect(imds.at(-1)?.query.xms_cc).to.equal('cp1');
    for (const q of imds.slice(0, -1)) expect(q.query, 'no capabilities configured').to.not.have.property('xms_cc');
  });

  it('leaves nothing in msal\u2019s own process-wide managed-identity cache', () => {
    const many = run.results.filter((r) => r.label.startsWith('msal-cache-'));
    expect(many).to.have.length(4);
    for (const r of many) expect(r.ok, `${r.label}: ${r.code} ${r.detail}`).to.equal(true);
    // Each group's count is taken after its last token; the acquirer's own cache holds them.
    expect(run.stats.map((st) => st.msalAccessTokens)).to.deep.equal([0, 0, 0, 0]);
    expect(run.stats[2].size).to.equal(4);
  });
});
