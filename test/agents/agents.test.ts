/**
 * Agent identities (reference sidecar-http-api §2.6, §5.6; entra-protocol §5) through the BUILT
 * sidecar against the emulator: the exact token requests of every leg, caching and single-flight
 * per leg, the AgentIdentity/AgentUsername/AgentUserId precedence, the AllowOverrides gates, and
 * isolation between concurrent requests for different agents.
 */
import { expect } from 'chai';
import { createPrivateKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { compactDecrypt, decodeJwt } from 'jose';
import { startEmulator, redactionFingerprint, type Emulator, type RecordedRequest } from '../../emulator/index.js';
import { startSidecar, type RunningSidecar, waitForLine } from '../helpers/sidecar.js';
import { assertNoSecrets, call, secretsOf, sidecarEnv } from '../helpers/e2e.js';
import { createAuthorizationClient } from '../../src/extauthz/protos.js';
import { check, envoyCheckRequest, headerMap } from '../extauthz/fixtures.js';

const EXCHANGE_SCOPE = 'api://AzureADTokenExchange/.default';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** Config shared by the sidecars below: one app-token API and one delegated API on the emulator. */
function apis(): Record<string, string> {
  return {
    DownstreamApis__AgentApp__Scopes__0: 'api://downstream/.default',
    DownstreamApis__AgentApp__RequestAppToken: 'true',
    DownstreamApis__AgentUser__Scopes__0: 'api://downstream/read',
  };
}

describe('agent identities (built sidecar against the emulator)', function () {
  this.timeout(30_000);
  let emu: Emulator;
  let sidecar: RunningSidecar;
  let gated: RunningSidecar;
  const tokens: string[] = [];
  let blueprint: string;
  let agent1: string;
  let agent2: string;

  /** Token requests the emulator received while `run` ran. */
  async function legsOf<T>(run: () => Promise<T>): Promise<{ result: T; legs: RecordedRequest[] }> {
    const before = emu.requests().length;
    const result = await run();
    return { result, legs: emu.requests().slice(before).filter((r) => r.route === 'token') };
  }

  async function header(path: string, token?: string, on: RunningSidecar = sidecar): Promise<{ status: number; scheme: string; token: string; text: string }> {
    const r = await call(`${on.url}${path}`, token !== undefined ? { token } : {});
    if (r.status !== 200) return { status: r.status, scheme: '', token: '', text: r.text };
    const value = String(r.json().authorizationHeader);
    const [scheme, t] = value.split(' ');
    tokens.push(t);
    return { status: r.status, scheme, token: t, text: r.text };
  }

  async function userToken(): Promise<string> {
    const t = await emu.mint({ kind: 'user', audience: blueprint, scp: 'access_as_user' });
    tokens.push(t);
    return t;
  }

  before(async () => {
    emu = await startEmulator();
    blueprint = emu.scenario.agentBlueprint.appId;
    agent1 = emu.scenario.apps.agentIdentity1.appId;
    agent2 = emu.scenario.apps.agentIdentity2.appId;
    [sidecar, gated] = await Promise.all([
      startSidecar(sidecarEnv(emu, { ...apis(), Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated: 'true' })),
      startSidecar(sidecarEnv(emu, { ...apis(), Sidecar__AllowOverrides__GetAuthorizationHeader: 'false' })),
    ]);
  });
  after(async () => {
    const codes = await Promise.all([sidecar?.stop(), gated?.stop()]);
    assertNoSecrets([...(sidecar?.lines ?? []), ...(gated?.lines ?? [])], secretsOf(emu, tokens));
    await emu?.close();
    expect(codes, 'graceful exits').to.deep.equal([0, 0]);
  });

  it('autonomous agent: T1 (blueprint, fmi_path) then client credentials as the agent with T1 as client assertion', async () => {
    const { result, legs } = await legsOf(() => header(`/AuthorizationHeaderUnauthenticated/AgentApp?AgentIdentity=${agent1}`));
    expect(result.status, result.text).to.equal(200);
    expect(result.scheme).to.equal('Bearer');
    expect(legs).to.have.length(2);
    const [t1, leg2] = legs;
    expect(t1.form).to.include({ client_id: blueprint, grant_type: 'client_credentials', scope: EXCHANGE_SCOPE, fmi_path: agent1 });
    expect(t1.form.client_secret).to.contain(redactionFingerprint(emu.scenario.apps.sidecarApi.secrets[0].value));
    expect(t1.status).to.equal(200);
    expect(leg2.form).to.include({ client_id: agent1, grant_type: 'client_credentials', scope: 'api://downstream/.default', client_assertion_type: ASSERTION_TYPE });
    expect(leg2.form).to.not.have.property('client_secret');
    expect(leg2.form).to.not.have.property('fmi_path');
    expect(leg2.form.client_assertion).to.match(/^\[redacted\] sha256:[0-9a-f]{8}$/);
    expect(leg2.status).to.equal(200);
    const claims = decodeJwt(result.token);
    expect(claims.azp).to.equal(agent1);
    expect(claims.idtyp).to.equal('app');
    expect(claims.oid).to.equal(emu.scenario.apps.agentIdentity1.servicePrincipalId);
    expect(claims.xms_par_app_azp).to.equal(blueprint);
    expect(claims.roles).to.deep.equal(['Data.Read']);
  });

  it('answers a repeated autonomous request from the cache, and a second API for the same agent reuses T1', async () => {
    const first = await legsOf(() => header(`/AuthorizationHeaderUnauthenticated/AgentApp?AgentIdentity=${agent1}`));
    expect(first.legs).to.have.length(0);
    const other = await legsOf(() => header(`/AuthorizationHeaderUnauthenticated/AgentApp?AgentIdentity=${agent1}&optionsOverride.Scopes=api://legacy-v1/.default`));
    expect(other.result.status, other.result.text).to.equal(200);
    expect(other.legs.map((l) => [l.form.client_id, l.form.scope])).to.deep.equal([[agent1, 'api://legacy-v1/.default']]);
  });

  it('agent user by UPN: T1, T2 (agent, exchange scope, T1 assertion), then user_fic with T2 and username', async () => {
    const upn = emu.scenario.users.agentUser1.upn;
    const { result, legs } = await legsOf(() => header(`/AuthorizationHeaderUnauthenticated/AgentUser?AgentIdentity=${agent1}&AgentUsername=${encodeURIComponent(upn)}`));
    expect(result.status, result.text).to.equal(200);
    // T1 for agent 1 is still cached from the autonomous test: only T2 and the user_fic leg go out.
    expect(legs).to.have.length(2);
    const [t2, t3] = legs;
    expect(t2.form).to.include({ client_id: agent1, grant_type: 'client_credentials', scope: EXCHANGE_SCOPE, client_assertion_type: ASSERTION_TYPE });
    expect(t3.form).to.include({ client_id: agent1, grant_type: 'user_fic', username: upn, client_assertion_type: ASSERTION_TYPE });
    expect(t3.form).to.not.have.property('user_id');
    expect(t3.form.scope.split(' ')).to.include('api://downstream/read');
    // The same T1 authenticates both agent legs; T2 is what user_fic presents.
    expect(t3.form.client_assertion).to.equal(t2.form.client_assertion);
    expect(t3.form.user_federated_identity_credential).to.match(/^\[redacted\] sha256:[0-9a-f]{8}$/);
    expect(t3.form.user_federated_identity_credential).to.not.equal(t3.form.client_assertion);
    const claims = decodeJwt(result.token);
    expect(claims.oid).to.equal(emu.scenario.users.agentUser1.oid);
    expect(claims.azp).to.equal(agent1);
    expect(claims.idtyp).to.equal('user');
    expect(claims.xms_sub_fct).to.equal('13');
    expect(claims.scp).to.equal('read');
  });

  it('agent user by object id sends user_id, reuses T1 and T2, and caches per user', async () => {
    const oid = emu.scenario.users.agentUser1.oid;
    const { result, legs } = await legsOf(() => header(`/AuthorizationHeaderUnauthenticated/AgentUser?AgentIdentity=${agent1}&AgentUserId=${oid}`));
    expect(result.status, result.text).to.equal(200);
    expect(legs).to.have.length(1);
    expect(legs[0].form).to.include({ client_id: agent1, grant_type: 'user_fic', user_id: oid });
    expect(legs[0].form).to.not.have.property('username');
    expect(decodeJwt(result.token).oid).to.equal(oid);
    const again = await legsOf(() => header(`/AuthorizationHeaderUnauthenticated/AgentUser?AgentIdentity=${agent1}&AgentUserId=${oid}`));
    expect(again.legs).to.have.length(0);
    expect(again.result.token).to.equal(result.token);
  });

  it('caches agent users under their names folded in ASCII only: a look-alike name (ſ, ı) goes to Entra, which refuses it', async () => {
    const upn = emu.scenario.users.agentUser2.upn;
    const ask = (name: string) => legsOf(() => header(`/AuthorizationHeaderUnauthenticated/AgentUser?AgentIdentity=${agent2}&AgentUsername=${encodeURIComponent(name)}`));
    const real = await ask(upn.toUpperCase());
    expect(real.result.status, real.result.text).to.equal(200);
    expect((await ask(upn)).legs, 'the same name in another ASCII case: from the cache').to.have.length(0);
    // JavaScript's toUpperCase() maps ſ to S and ı to I: a key folded that way served the real user's token.
    for (const lookAlike of [upn.replace('user', 'uſer'), upn.replace('microsoft', 'mıcrosoft')]) {
      const { result, legs } = await ask(lookAlike);
      expect(result.status, `${lookAlike}: ${result.text}`).to.equal(401);
      expect(result.text).to.contain('AADSTS50034');
      expect(legs.map((l) => l.form.grant_type)).to.include('user_fic');
    }
  });

  it('username wins over user id; a non-GUID user id means the plain agent (no 400)', async () => {
    const u1 = emu.scenario.users.agentUser1;
    const both = await legsOf(() => header(`/AuthorizationHeaderUnauthenticated/AgentUser?AgentIdentity=${agent1}&AgentUserId=${u1.oid}&AgentUsername=${encodeURIComponent(u1.upn.toUpperCase())}`));
    expect(both.result.status, both.result.text).to.equal(200);
    // The UPN is cached case-insensitively (upper-cased like Microsoft), so this came from the cache.
    expect(both.legs).to.have.length(0);
    const plain = await legsOf(() => header(`/AuthorizationHeaderUnauthenticated/AgentApp?AgentIdentity=${agent1}&AgentUserId=not-a-guid`));
    expect(plain.result.status).to.equal(200);
    expect(decodeJwt(plain.result.token).idtyp).to.equal('app');
    const noIdentity = await legsOf(() => header(`/AuthorizationHeaderUnauthenticated/AgentApp?AgentUsername=${encodeURIComponent(u1.upn)}`));
    expect(noIdentity.result.status).to.equal(200);
    // Without AgentIdentity the user parameters are ignored: a plain blueprint app token.
    expect(decodeJwt(noIdentity.result.token).azp).to.equal(blueprint);
  });

  it('the agent on behalf of the calling user: OBO as the agent with T1 and the inbound token', async () => {
    const user = await userToken();
    const { result, legs } = await legsOf(() => header(`/AuthorizationHeader/AgentUser?AgentIdentity=${agent1}`, user));
    expect(result.status, result.text).to.equal(200);
    expect(legs).to.have.length(1);
    expect(legs[0].form).to.include({ client_id: agent1, grant_type: JWT_BEARER, requested_token_use: 'on_behalf_of', client_assertion_type: ASSERTION_TYPE });
    expect(legs[0].form.assertion).to.contain(redactionFingerprint(user));
    const claims = decodeJwt(result.token);
    expect(claims.oid).to.equal(emu.scenario.users.normal.oid);
    expect(claims.azp).to.equal(agent1);
    expect(claims.xms_act_fct).to.equal('11');
  });

  it('the agent on behalf of a user whose token is encrypted (JWE): the decrypted, signed inner token is the assertion', async () => {
    // Entra cannot read a JWE assertion (AADSTS50013; the API alone holds the decryption key), on
    // the agent's OBO leg as on the app's.
    const enc = emu.scenario.agentBlueprint.encryptionCertificate!;
    const dir = mkdtempSync(path.join(tmpdir(), 'es-agent-jwe-'));
    const file = path.join(dir, 'enc.pem');
    writeFileSync(file, `${enc.certPem}\n${enc.keyPem}`, { mode: 0o600 });
    const decrypting = await startSidecar(sidecarEnv(emu, {
      ...apis(),
      AzureAd__TokenDecryptionCredentials__0__SourceType: 'Path',
      AzureAd__TokenDecryptionCredentials__0__CertificateDiskPath: file,
    }));
    try {
      const jwe = await emu.mint({ kind: 'user', audience: blueprint, scp: 'access_as_user', encrypt: true });
      tokens.push(jwe);
      expect(jwe.split('.')).to.have.length(5);
      const inner = Buffer.from((await compactDecrypt(jwe, createPrivateKey(enc.keyPem!))).plaintext).toString('utf8');
      const { result, legs } = await legsOf(() => header(`/AuthorizationHeader/AgentUser?AgentIdentity=${agent1}`, jwe, decrypting));
      expect(result.status, result.text).to.equal(200);
      const obo = legs.filter((l) => l.form.requested_token_use === 'on_behalf_of');
      expect(obo).to.have.length(1);
      expect(obo[0].form).to.include({ client_id: agent1, grant_type: JWT_BEARER });
      expect(obo[0].form.assertion).to.equal(`[redacted] ${redactionFingerprint(inner)}`);
      const claims = decodeJwt(result.token);
      expect(claims.oid).to.equal(emu.scenario.users.normal.oid);
      expect(claims.azp).to.equal(agent1);
    } finally {
      await decrypting.stop();
      assertNoSecrets(decrypting.lines, secretsOf(emu, tokens));
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a plain agent on the user flow without an inbound token answers 401 "No account"', async () => {
    const r = await call(`${sidecar.url}/AuthorizationHeaderUnauthenticated/AgentUser?AgentIdentity=${agent2}`);
    expect(r.status).to.equal(401);
    expect(r.text).to.contain('No account or login hint');
  });

  it('a tenant override reaches every leg', async () => {
    const tenant = emu.scenario.tenants.primary.domains[0];
    const u2 = emu.scenario.users.agentUser2;
    const { result, legs } = await legsOf(() =>
      header(`/AuthorizationHeaderUnauthenticated/AgentUser?AgentIdentity=${agent2}&AgentUsername=${encodeURIComponent(u2.upn)}&optionsOverride.AcquireTokenOptions.Tenant=${tenant}`),
    );
    expect(result.status, result.text).to.equal(200);
    expect(legs.map((l) => l.form.grant_type)).to.deep.equal(['client_credentials', 'client_credentials', 'user_fic']);
    for (const leg of legs) expect(leg.path).to.equal(`/${tenant}/oauth2/v2.0/token`);
    expect(decodeJwt(result.token).oid).to.equal(u2.oid);
  });

  it('an agent the blueprint does not own is refused by Entra: 401, nothing cached', async () => {
    const stranger = '5ca1ab1e-0000-4000-8000-00000000ffff';
    const r = await call(`${sidecar.url}/AuthorizationHeaderUnauthenticated/AgentApp?AgentIdentity=${stranger}`);
    expect(r.status).to.equal(401);
    expect(r.json().code).to.equal('acquisition_rejected');
  });

  it('20 concurrent requests for different agents each get their own agent token, one token request per leg', async () => {
    const before = emu.counters();
    const path = (agent: string) => `/AuthorizationHeaderUnauthenticated/AgentApp?AgentIdentity=${agent}&optionsOverride.Scopes=api://downstream/.default&optionsOverride.AcquireTokenOptions.Tenant=${emu.scenario.tenants.primary.domains[1]}`;
    const wanted = Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? agent1 : agent2));
    const answers = await Promise.all(wanted.map((a) => header(path(a))));
    answers.forEach((answer, i) => {
      expect(answer.status, answer.text).to.equal(200);
      const claims = decodeJwt(answer.token);
      expect(claims.azp, `request ${i}`).to.equal(wanted[i]);
      expect(claims.appid ?? claims.azp).to.equal(wanted[i]);
      const sp = wanted[i] === agent1 ? emu.scenario.apps.agentIdentity1 : emu.scenario.apps.agentIdentity2;
      expect(claims.oid).to.equal(sp.servicePrincipalId);
    });
    const after = emu.counters();
    // A new tenant segment: per agent one T1 and one agent token, however many callers (single-flight).
    expect((after['token:client_credentials'] ?? 0) - (before['token:client_credentials'] ?? 0)).to.equal(4);
  });

  it('agent parameters are ignored where the route does not allow overrides', async () => {
    const user = await userToken();
    const unauth = await legsOf(() => header(`/AuthorizationHeaderUnauthenticated/AgentApp?AgentIdentity=${agent1}`, undefined, gated));
    expect(unauth.result.status).to.equal(200);
    expect(decodeJwt(unauth.result.token).azp).to.equal(blueprint);
    expect(unauth.legs.every((l) => l.form.client_id === blueprint && l.form.fmi_path === undefined)).to.equal(true);
    const auth = await header(`/AuthorizationHeader/AgentUser?AgentIdentity=${agent1}&AgentUsername=${encodeURIComponent(emu.scenario.users.agentUser1.upn)}`, user, gated);
    expect(auth.status, auth.text).to.equal(200);
    // Plain OBO as the blueprint for the calling user.
    const claims = decodeJwt(auth.token);
    expect(claims.azp).to.equal(blueprint);
    expect(claims.oid).to.equal(emu.scenario.users.normal.oid);
    expect(await waitForLine(gated, 'AgentIdentityOverridesIgnored')).to.equal(true);
  });

  it('an agent from one request never leaks into the next', async () => {
    const withAgent = await header(`/AuthorizationHeaderUnauthenticated/AgentApp?AgentIdentity=${agent2}`);
    const without = await header('/AuthorizationHeaderUnauthenticated/AgentApp');
    expect(decodeJwt(withAgent.token).azp).to.equal(agent2);
    expect(decodeJwt(without.token).azp).to.equal(blueprint);
  });

  it('ext_authz injects an agent-user token named by the route\'s context_extensions', async () => {
    const extAuthz = sidecar.listening.extAuthz;
    expect(extAuthz, 'ext_authz listener').to.not.equal(null);
    const client = createAuthorizationClient(`127.0.0.1:${extAuthz!.port}`);
    try {
      const user = await userToken();
      const upn = emu.scenario.users.agentUser1.upn;
      const res = await check(
        client,
        envoyCheckRequest({
          headers: { authorization: `Bearer ${user}` },
          contextExtensions: { downstream_api: 'AgentUser', agent_identity: agent1, agent_username: upn },
        }),
        10_000,
      );
      expect(res.status?.code ?? 0, JSON.stringify(res.status)).to.equal(0);
      const injected = headerMap(res.ok_response?.headers).authorization;
      expect(injected).to.match(/^Bearer /);
      const token = injected.slice('Bearer '.length);
      tokens.push(token);
      const claims = decodeJwt(token);
      expect(claims.oid).to.equal(emu.scenario.users.agentUser1.oid);
      expect(claims.azp).to.equal(agent1);
      expect(claims.xms_sub_fct).to.equal('13');
    } finally {
      client.close();
    }
  });
});
