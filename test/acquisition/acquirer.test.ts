import { expect } from 'chai';
import { rejection } from '../helpers/assert.js';
import { decodeJwt } from 'jose';
import type { Dispatcher } from 'undici';
import { startEmulator } from '../../emulator/index.js';
import { redactionFingerprint } from '../../emulator/core.js';
import type { Emulator } from '../../emulator/types.js';
import { createTokenAcquirer, NO_ACCOUNT_MESSAGE, type AcquirerDeps } from '../../src/acquisition/acquirer.js';
import type { AcquireRequest, TokenAcquirer } from '../../src/pipeline/types.js';
import { acquireTokenOptions, captureLogger, type ConfigOptions } from './fixtures.js';
import { apiOptions, emulatorAgent, emulatorConfig, secretCredential, sleep, tokenCount, tokenRequests, userToken } from './harness.js';
import { reqCnfFor } from '../../src/pop/shr.js';

const DOWNSTREAM_READ = 'api://downstream/read';
const DOWNSTREAM_APP = 'api://downstream/.default';


describe('token acquirer against the emulator', function () {
  this.timeout(20_000);
  let emu: Emulator;
  let agent: Dispatcher;
  const logs = captureLogger();
  const acquirers: Array<TokenAcquirer> = [];

  function acquirer(over: ConfigOptions = {}, extra: Partial<AcquirerDeps> = {}) {
    const a = createTokenAcquirer({ config: emulatorConfig(emu, over), agent, logger: logs.logger, ...extra });
    acquirers.push(a);
    return a;
  }

  function appRequest(over: Partial<AcquireRequest> = {}, scope = DOWNSTREAM_APP): AcquireRequest {
    return { options: apiOptions({ scopes: [scope], requestAppToken: true }), ...over };
  }

  before(async () => {
    emu = await startEmulator();
    agent = emulatorAgent(emu);
  });
  afterEach(() => emu.clearFaults());
  after(async () => {
    for (const a of acquirers) a.close();
    await agent.close();
    await emu.close();
  });

  describe('on-behalf-of', () => {
    it('sends the inbound token as the assertion with the requested scopes and returns a delegated token', async () => {
      const a = acquirer();
      const user = await userToken(emu);
      const before = tokenRequests(emu).length;
      const token = await a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ] }), user });
      const sent = tokenRequests(emu).slice(before);
      expect(sent).to.have.length(1);
      expect(sent[0].form.grant_type).to.equal('urn:ietf:params:oauth:grant-type:jwt-bearer');
      expect(sent[0].form.requested_token_use).to.equal('on_behalf_of');
      expect(sent[0].form.assertion).to.contain(redactionFingerprint(user.jws));
      expect(sent[0].form.scope.split(' ')).to.include(DOWNSTREAM_READ);
      expect(sent[0].path).to.contain(emu.scenario.tenants.primary.id);
      expect(token.scheme).to.equal('Bearer');
      const claims = decodeJwt(token.token);
      expect(claims.oid).to.equal(user.claims.oid);
      expect(String(claims.scp)).to.contain('read');
      expect(token.expiresOn).to.be.greaterThan(Date.now() / 1000);
    });

    it('answers a repeated call from the cache without calling Entra', async () => {
      const a = acquirer();
      const user = await userToken(emu);
      const first = await a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ] }), user });
      const count = tokenCount(emu);
      const second = await a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ] }), user });
      expect(second.token).to.equal(first.token);
      expect(tokenCount(emu)).to.equal(count);
      expect(a.stats()).to.include({ cacheHits: 1, entraRequests: 1 });
    });

    it('gives 20 concurrent distinct callers each their own token', async () => {
      const a = acquirer();
      const users = await Promise.all(Array.from({ length: 20 }, () => userToken(emu)));
      const count = tokenCount(emu);
      const tokens = await Promise.all(users.map((user) => a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ] }), user })));
      expect(new Set(tokens.map((t) => t.token)).size).to.equal(20);
      expect(tokenCount(emu) - count).to.equal(20);
      for (const t of tokens) expect(decodeJwt(t.token).oid).to.equal(emu.scenario.users.normal.oid);
    });

    it('continues a long-running session with the refresh token when no user token is sent', async () => {
      const a = acquirer();
      const user = await userToken(emu);
      const session = acquireTokenOptions({ longRunningWebApiSessionKey: 'job-42' });
      const first = await a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ], acquireTokenOptions: session }), user });
      const cached = await a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ], acquireTokenOptions: session }) });
      expect(cached.token).to.equal(first.token);
      const before = tokenRequests(emu).length;
      const forced = await a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ], acquireTokenOptions: acquireTokenOptions({ longRunningWebApiSessionKey: 'job-42', forceRefresh: true }) }) });
      const sent = tokenRequests(emu).slice(before);
      expect(sent.map((r) => r.form.grant_type)).to.deep.equal(['refresh_token']);
      expect(decodeJwt(forced.token).oid).to.equal(user.claims.oid);
      const unknown = await rejection(a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ], acquireTokenOptions: acquireTokenOptions({ longRunningWebApiSessionKey: 'never-started' }) }) }));
      expect(unknown.code).to.equal('acquisition_ui_required');
    });

    it('keys a long-running session\u2019s tokens by a tenant override too', async () => {
      const a = acquirer();
      const user = await userToken(emu);
      const session = (tenant?: string) => apiOptions({ scopes: [DOWNSTREAM_READ], acquireTokenOptions: acquireTokenOptions({ longRunningWebApiSessionKey: 'job-43', ...(tenant ? { tenant } : {}) }) });
      const first = await a.acquire({ options: session(), user });
      expect((await a.acquire({ options: session() })).token).to.equal(first.token);
      // Another tenant named for the same session: not the first tenant's cached token.
      const other = emu.scenario.tenants.secondary.id;
      const before = tokenRequests(emu).length;
      await a.acquire({ options: session(other) }).catch(() => undefined);
      const sent = tokenRequests(emu).slice(before);
      expect(sent, 'a token request for the named tenant').to.have.length(1);
      expect(sent[0].path).to.contain(other);
    });

    it('continues one long-running session for two APIs at once: both redeem the same refresh token, which Entra does not revoke', async () => {
      const a = acquirer();
      const user = await userToken(emu);
      const session = acquireTokenOptions({ longRunningWebApiSessionKey: 'job-44' });
      await a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ], acquireTokenOptions: session }), user });
      const before = tokenRequests(emu).length;
      const [write, graph] = await Promise.all([
        a.acquire({ options: apiOptions({ scopes: ['api://downstream/write'], acquireTokenOptions: session }) }),
        a.acquire({ options: apiOptions({ scopes: ['User.Read'], acquireTokenOptions: session }) }),
      ]);
      const sent = tokenRequests(emu).slice(before);
      expect(sent.map((r) => r.form.grant_type)).to.deep.equal(['refresh_token', 'refresh_token']);
      expect(sent[0].form.refresh_token, 'the same refresh token, twice').to.equal(sent[1].form.refresh_token);
      expect(sent.map((r) => r.status)).to.deep.equal([200, 200]);
      expect(decodeJwt(write.token)).to.include({ scp: 'write', oid: user.claims.oid });
      expect(decodeJwt(graph.token)).to.include({ aud: 'https://graph.microsoft.com', oid: user.claims.oid });
    });

    it('serves a session key restarted by another user\u2019s token that user\u2019s tokens for every scope, never the first user\u2019s', async () => {
      const a = acquirer();
      const [alice, bob] = [await userToken(emu), await userToken(emu, 'agentUser1')];
      expect(alice.claims.oid).to.not.equal(bob.claims.oid);
      const session = (scope: string) => apiOptions({ scopes: [scope], acquireTokenOptions: acquireTokenOptions({ longRunningWebApiSessionKey: 'job-45' }) });
      const oid = async (scope: string, user?: typeof alice) => decodeJwt((await a.acquire({ options: session(scope), ...(user ? { user } : {}) })).token).oid;
      expect(await oid(DOWNSTREAM_READ, alice)).to.equal(alice.claims.oid);
      expect(await oid('api://downstream/write'), 'continued as alice').to.equal(alice.claims.oid);
      expect(await oid(DOWNSTREAM_READ, bob)).to.equal(bob.claims.oid);
      expect(await oid(DOWNSTREAM_READ), 'continued as bob').to.equal(bob.claims.oid);
      expect(await oid('api://downstream/write'), 'the scope alice continued before: bob\u2019s token, not hers').to.equal(bob.claims.oid);
      // Alice starts it again with the token whose On-Behalf-Of answer is still cached: the session is hers again.
      expect(await oid(DOWNSTREAM_READ, alice)).to.equal(alice.claims.oid);
      expect(await oid('api://downstream/write'), 'continued as alice again').to.equal(alice.claims.oid);
      expect(await oid(DOWNSTREAM_READ), 'continued as alice again').to.equal(alice.claims.oid);
    });

    it('keeps a session restarted by another user while a continuation of the first start was in flight: its rotated refresh token does not take the session back', async () => {
      const a = acquirer();
      const [alice, bob] = [await userToken(emu), await userToken(emu, 'agentUser1')];
      const session = (scope: string) => apiOptions({ scopes: [scope], acquireTokenOptions: acquireTokenOptions({ longRunningWebApiSessionKey: 'job-46' }) });
      await a.acquire({ options: session(DOWNSTREAM_READ), user: alice });
      emu.fault({ route: 'token', grant_type: 'refresh_token', delayMs: 800 });
      const slow = a.acquire({ options: session('api://downstream/write') });
      await a.acquire({ options: session(DOWNSTREAM_READ), user: bob });
      expect(decodeJwt((await slow).token).oid, 'continued the start it was made for').to.equal(alice.claims.oid);
      expect(decodeJwt((await a.acquire({ options: session('User.Read') })).token).oid).to.equal(bob.claims.oid);
    });

    it('lets a 400 with Retry-After for one user hold back nobody else (msal\u2019s own throttle has no user in its key)', async () => {
      const a = acquirer();
      const [alice, bob] = await Promise.all([userToken(emu), userToken(emu)]);
      emu.fault({ route: 'token', status: 400, error: 'invalid_grant', aadsts: 50013, retryAfter: 60 });
      expect((await rejection(a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ] }), user: alice }))).code).to.be.a('string');
      const count = tokenCount(emu);
      const token = await a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ] }), user: bob });
      expect(decodeJwt(token.token).oid).to.equal(bob.claims.oid);
      expect(tokenCount(emu)).to.equal(count + 1);
    });

    it('answers a user flow without a user with Microsoft\u2019s "no account" 401', async () => {
      const err = await rejection(acquirer().acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ] }) }));
      expect(err.code).to.equal('acquisition_ui_required');
      expect(err.detail).to.equal(NO_ACCOUNT_MESSAGE);
      expect(err.detail).to.equal('No account or login hint was passed to the AcquireTokenSilent call.');
    });

    it('surfaces a Conditional Access challenge as ui_required with its claims', async () => {
      emu.fault({ route: 'token', status: 400, error: 'interaction_required', aadsts: 50076, claims: '{"access_token":{"capolids":{"essential":true,"values":["x"]}}}' });
      const err = await rejection(acquirer().acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ] }), user: await userToken(emu) }));
      expect(err.code).to.equal('acquisition_ui_required');
      expect(err.detail).to.contain('AADSTS50076');
      expect(err.claims).to.contain('capolids');
    });
  });

  describe('client credentials', () => {
    it('returns an app token with the granted roles', async () => {
      const token = await acquirer().acquire(appRequest());
      const claims = decodeJwt(token.token);
      expect(claims.roles).to.deep.equal(['Data.Read']);
      expect(claims.azp ?? claims.appid).to.equal(emu.scenario.apps.sidecarApi.appId);
      const last = tokenRequests(emu).at(-1);
      expect(last?.form.grant_type).to.equal('client_credentials');
      expect(last?.form.scope).to.equal(DOWNSTREAM_APP);
    });

    it('makes exactly one token request for 100 concurrent cold callers', async () => {
      const a = acquirer();
      const count = tokenCount(emu);
      const tokens = await Promise.all(Array.from({ length: 100 }, () => a.acquire(appRequest())));
      expect(tokenCount(emu) - count).to.equal(1);
      expect(new Set(tokens.map((t) => t.token)).size).to.equal(1);
      expect(a.stats()).to.include({ entraRequests: 1, coalesced: 99 });
    });

    it('refreshes ahead of expiry in the background and serves the old token meanwhile', async () => {
      let offsetMs = 0;
      const a = acquirer({}, { now: () => Date.now() + offsetMs });
      const first = await a.acquire(appRequest());
      const lifetimeMs = first.expiresOn * 1000 - Date.now();
      offsetMs = lifetimeMs * 0.8; // past 75 %, before the 5-minute buffer
      const count = tokenCount(emu);
      const during = await a.acquire(appRequest());
      expect(during.token).to.equal(first.token);
      // The background refresh reaches Entra, then its answer replaces the cached token: wait for
      // each (generous deadlines for a loaded machine) instead of guessing how long they take.
      const refreshBy = Date.now() + 10_000;
      while (tokenCount(emu) === count && Date.now() < refreshBy) await sleep(20);
      expect(tokenCount(emu), 'one refresh request').to.equal(count + 1);
      const replacedBy = Date.now() + 10_000;
      let after = await a.acquire(appRequest());
      while (after.token === first.token && Date.now() < replacedBy) {
        await sleep(20);
        after = await a.acquire(appRequest());
      }
      expect(after.token).to.not.equal(first.token);
      expect(tokenCount(emu), 'still one refresh request').to.equal(count + 1);
      expect(a.stats().refreshes).to.equal(1);
    });

    it('bypasses the cache for ForceRefresh and for a claims challenge', async () => {
      const a = acquirer();
      const first = await a.acquire(appRequest());
      const forced = await a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_APP], requestAppToken: true, acquireTokenOptions: acquireTokenOptions({ forceRefresh: true }) }) });
      expect(forced.token).to.not.equal(first.token);
      const before = tokenRequests(emu).length;
      await a.acquire(appRequest({ claims: '{"access_token":{"xms_cc":{"values":["cp1"]}}}' }));
      const sent = tokenRequests(emu).slice(before);
      expect(sent).to.have.length(1);
      expect(sent[0].form.claims).to.contain('xms_cc');
    });

    it('passes FmiPath, CorrelationId and ExtraQueryParameters through to the token request', async () => {
      const correlationId = '0a0a0a0a-1111-4222-8333-444455556666';
      const before = tokenRequests(emu).length;
      await acquirer()
        .acquire({
          options: apiOptions({ scopes: ['api://AzureADTokenExchange/.default'], requestAppToken: true, acquireTokenOptions: acquireTokenOptions({ fmiPath: emu.scenario.apps.agentIdentity1.appId, extraQueryParameters: { slice: 'testslice' } }) }),
          correlationId,
        })
        .catch(() => undefined);
      const sent = tokenRequests(emu).slice(before);
      expect(sent.length).to.be.greaterThan(0);
      expect(sent[0].form.fmi_path).to.equal(emu.scenario.apps.agentIdentity1.appId);
      expect(sent[0].query['client-request-id']).to.equal(correlationId);
      expect(sent[0].query.slice).to.equal('testslice');
    });

    it('refuses an app scope that does not end in /.default and a meta-tenant, without calling Entra', async () => {
      const a = acquirer();
      const count = tokenCount(emu);
      expect((await rejection(a.acquire(appRequest({}, DOWNSTREAM_READ)))).code).to.equal('misconfigured');
      for (const tenant of ['common', 'Organizations', 'consumers']) {
        const err = await rejection(a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_APP], requestAppToken: true, acquireTokenOptions: acquireTokenOptions({ tenant }) }) }));
        expect(err.code).to.equal('misconfigured');
      }
      expect((await rejection(acquirer({ tenantId: 'organizations' }).acquire(appRequest()))).code).to.equal('misconfigured');
      expect(tokenCount(emu)).to.equal(count);
    });

    it('sends AzureAd:ClientCapabilities with a PoP app token as msal does with a Bearer one, merged into a claims challenge', async () => {
      const a = acquirer({ clientCapabilities: ['cp1'] });
      const pop = (claims?: string) => ({ options: apiOptions({ scopes: [DOWNSTREAM_APP], requestAppToken: true, acquireTokenOptions: acquireTokenOptions({ popPublicKey: reqCnfFor('y'.repeat(43)) }) }), ...(claims ? { claims } : {}) });
      const before = tokenRequests(emu).length;
      await a.acquire(appRequest());
      await a.acquire(pop());
      await a.acquire(pop('{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}'));
      const sent = tokenRequests(emu).slice(before);
      expect(sent.map((r) => r.form.token_type ?? 'bearer')).to.deep.equal(['bearer', 'pop', 'pop']);
      const claims = sent.map((r) => JSON.parse(r.form.claims ?? '{}') as { access_token?: Record<string, unknown> });
      for (const c of claims) expect(c.access_token?.xms_cc, JSON.stringify(c)).to.deep.equal({ values: ['cp1'] });
      expect(claims[2].access_token?.nbf, 'the challenge is kept').to.deep.equal({ essential: true, value: '1700000000' });
    });

    it('refuses MSAuth AT-PoP (PopClaim) rather than sending an unbound token (agents and PoP: test/agents, test/pop)', async () => {
      const a = acquirer();
      const count = tokenCount(emu);
      const pop = await rejection(a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_APP], requestAppToken: true, acquireTokenOptions: acquireTokenOptions({ popPublicKey: 'eyJraWQiOiJ4In0', popClaim: '{"x":1}' }) }) }));
      expect(pop.code).to.equal('misconfigured');
      expect(pop.detail).to.contain('PopClaim');
      expect(tokenCount(emu)).to.equal(count);
    });
  });

  describe('errors', () => {
    it('maps a wrong secret to acquisition_rejected with the AADSTS text', async () => {
      const err = await rejection(acquirer({ clientCredentials: [secretCredential('wrong-secret')] }).acquire(appRequest()));
      expect(err.code).to.equal('acquisition_rejected');
      expect(err.detail).to.contain('AADSTS7000215');
      expect(err.detail).to.not.contain('wrong-secret');
    });

    it('falls back to the next credential on invalid_client and sticks with it', async () => {
      const a = acquirer({ clientCredentials: [secretCredential('wrong-secret'), secretCredential(emu.scenario.apps.sidecarApi.secrets[0].value)] });
      const count = tokenCount(emu);
      await a.acquire(appRequest());
      expect(tokenCount(emu) - count).to.equal(2);
      await a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_APP], requestAppToken: true, acquireTokenOptions: acquireTokenOptions({ forceRefresh: true }) }) });
      expect(tokenCount(emu) - count).to.equal(3);
    });

    it('honours 429 Retry-After: fails fast inside the window, then calls Entra again', async () => {
      const a = acquirer();
      emu.fault({ route: 'token', status: 429, error: 'temporarily_unavailable', retryAfter: 1 });
      const first = await rejection(a.acquire(appRequest()));
      expect(first.code).to.equal('acquisition_throttled');
      expect(first.retryAfterSec).to.equal(1);
      const count = tokenCount(emu);
      const second = await rejection(a.acquire(appRequest()));
      expect(second.code).to.equal('acquisition_throttled');
      expect(tokenCount(emu)).to.equal(count);
      await sleep(1100);
      const ok = await a.acquire(appRequest());
      expect(ok.token).to.be.a('string');
      expect(tokenCount(emu)).to.equal(count + 1);
    });

    it('bounds an absurd Retry-After to an hour: the caller is told 3600 s and Entra is asked again after it, for Bearer and PoP alike', async () => {
      let offsetMs = 0;
      const a = acquirer({}, { now: () => Date.now() + offsetMs });
      const pop = { options: apiOptions({ scopes: [DOWNSTREAM_APP], requestAppToken: true, acquireTokenOptions: acquireTokenOptions({ popPublicKey: reqCnfFor('x'.repeat(43)) }) }) };
      for (const req of [appRequest(), pop]) {
        emu.fault({ route: 'token', status: 429, error: 'temporarily_unavailable', retryAfter: 315_360_000 });
        expect((await rejection(a.acquire(req))).retryAfterSec).to.equal(3600);
        const count = tokenCount(emu);
        const inside = await rejection(a.acquire(req));
        expect([inside.code, inside.retryAfterSec]).to.deep.equal(['acquisition_throttled', 3600]);
        expect(tokenCount(emu), 'no request inside the window').to.equal(count);
      }
      offsetMs = 3600_000 + 1000;
      const count = tokenCount(emu);
      expect((await a.acquire(appRequest())).token).to.be.a('string');
      expect((await a.acquire(pop)).scheme).to.equal('pop');
      expect(tokenCount(emu), 'both asked Entra again').to.equal(count + 2);
    });

    it('maps a 503 outage to acquisition_throttled', async () => {
      emu.fault({ route: 'token', status: 503, error: 'temporarily_unavailable', aadsts: 90006 });
      const err = await rejection(acquirer().acquire(appRequest()));
      expect(err.code).to.equal('acquisition_throttled');
    });

    it('gives up on a silent token endpoint within the configured timeout (acquisition_unavailable)', async () => {
      const slowAgent = emulatorAgent(emu, 400);
      try {
        const a = createTokenAcquirer({ config: emulatorConfig(emu, { timeoutMs: 400 }), agent: slowAgent, logger: logs.logger });
        acquirers.push(a);
        await a.acquire(appRequest()); // metadata is fetched once per msal app; warm it up
        emu.fault({ route: 'token', delayMs: 3000 });
        const started = Date.now();
        const err = await rejection(a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_APP], requestAppToken: true, acquireTokenOptions: acquireTokenOptions({ forceRefresh: true }) }) }));
        expect(err.code).to.equal('acquisition_unavailable');
        expect(Date.now() - started).to.be.lessThan(1500);
      } finally {
        emu.clearFaults();
        await slowAgent.close();
      }
    });
  });

  describe('logs', () => {
    it('never contain a secret, an inbound token or an issued token', async () => {
      const log = captureLogger();
      const secret = emu.scenario.apps.sidecarApi.secrets[0].value;
      const a = createTokenAcquirer({ config: emulatorConfig(emu), agent, logger: log.logger });
      acquirers.push(a);
      const user = await userToken(emu);
      const obo = await a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ] }), user });
      const app = await a.acquire(appRequest());
      await rejection(createTokenAcquirer({ config: emulatorConfig(emu, { clientCredentials: [secretCredential('wrong-secret-value')] }), agent, logger: log.logger }).acquire(appRequest()));
      emu.fault({ route: 'token', status: 429, error: 'temporarily_unavailable', retryAfter: 1 });
      await rejection(a.acquire({ options: apiOptions({ scopes: [DOWNSTREAM_READ] }), user: await userToken(emu) }));
      const text = log.text();
      expect(text.length).to.be.greaterThan(0);
      for (const s of [secret, 'wrong-secret-value', user.jws, obo.token, app.token]) expect(text).to.not.contain(s);
      expect(logs.text()).to.not.contain(secret);
    });
  });
});
