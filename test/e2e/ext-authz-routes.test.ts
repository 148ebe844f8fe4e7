/**
 * `Sidecar:ExtAuthz:Routes`: the per-route policy chosen in the sidecar by path and host, for
 * proxies that send no context_extensions (Istio's CUSTOM provider). Through the BUILT sidecar against
 * the emulator, with the policy of envoy/envoy.yaml's routes written as rules.
 */
import { expect } from 'chai';
import { decodeJwt } from 'jose';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { createAuthorizationClient, type AuthorizationClient } from '../../src/extauthz/protos.js';
import { runSidecarToExit, startSidecar, type RunningSidecar } from '../helpers/sidecar.js';
import { assertNoSecrets, secretsOf, sidecarEnv, withEmulatorAndSidecars } from '../helpers/e2e.js';
import { check, envoyCheckRequest, headerMap, type CheckResult } from '../extauthz/fixtures.js';

/** envoy.yaml's ingress routes and an egress-style host rule, as Istio users would write them. */
function routes(): Record<string, string> {
  return {
    DownstreamApis__graph__Scopes__0: 'api://downstream/read',
    DownstreamApis__partner__Scopes__0: 'api://downstream/.default',
    DownstreamApis__partner__RequestAppToken: 'true',
    Sidecar__ExtAuthz__Routes__0__PathPrefix: '/public',
    Sidecar__ExtAuthz__Routes__0__Validate: 'none',
    Sidecar__ExtAuthz__Routes__1__PathPrefix: '/api',
    Sidecar__ExtAuthz__Routes__1__RequiredScopes__0: 'access_as_user',
    Sidecar__ExtAuthz__Routes__1__DownstreamApi: 'graph',
    Sidecar__ExtAuthz__Routes__1__InjectHeader: 'x-graph-authorization',
    Sidecar__ExtAuthz__Routes__2__Hosts__0: '*.partner.test',
    Sidecar__ExtAuthz__Routes__2__Path: '/hook',
    Sidecar__ExtAuthz__Routes__2__Validate: 'none',
    Sidecar__ExtAuthz__Routes__2__DownstreamApi: 'partner',
  };
}

function allowed(res: CheckResult): Record<string, string> {
  expect(res.status?.code ?? 0, JSON.stringify(res.denied_response ?? {})).to.equal(0);
  return headerMap(res.ok_response?.headers ?? []);
}

function deniedWith(res: CheckResult, envoyStatus: string, code: string): void {
  expect(res.status?.code, 'a deny').to.not.equal(0);
  expect(res.denied_response.status.code).to.equal(envoyStatus);
  expect(JSON.parse(res.denied_response.body).code).to.equal(code);
}

describe('ext_authz route rules by path and host (built sidecar against the emulator)', function () {
  this.timeout(40_000);
  let emu: Emulator;
  let sidecar: RunningSidecar;
  let client: AuthorizationClient;
  const tokens: string[] = [];
  const user = async (scp = 'access_as_user') => {
    const t = await emu.mint({ kind: 'user', scp });
    tokens.push(t);
    return t;
  };

  before(async () => {
    emu = await startEmulator();
    sidecar = await startSidecar(sidecarEnv(emu, routes()));
    client = createAuthorizationClient(`127.0.0.1:${sidecar.listening.extAuthz!.port}`);
  });
  after(async () => {
    client?.close();
    await sidecar?.stop();
    assertNoSecrets(sidecar?.lines ?? [], secretsOf(emu, tokens));
    await emu?.close();
  });

  it('lets /public and everything under it through without a token, but not /publications (segment boundaries)', async () => {
    for (const path of ['/public', '/public/', '/public/logo.png', '/Public/Logo.png', '/public?next=/api/orders']) {
      const set = allowed(await check(client, envoyCheckRequest({ path })));
      expect(set, path).to.not.have.property('authorization');
    }
    deniedWith(await check(client, envoyCheckRequest({ path: '/publications' })), 'Unauthorized', 'credential_missing');
  });

  it('requires the /api rule\'s scope and injects its downstream token, whatever the path\'s case', async () => {
    deniedWith(await check(client, envoyCheckRequest({ path: '/api/orders', headers: { authorization: `Bearer ${await user('Orders.Read')}` } })), 'Forbidden', 'insufficient_scope');
    for (const path of ['/api/orders?page=2', '/API/Orders']) {
      const set = allowed(await check(client, envoyCheckRequest({ path, headers: { authorization: `Bearer ${await user()}` } })));
      expect(set['x-graph-authorization'], path).to.match(/^Bearer ey/);
      tokens.push(set['x-graph-authorization'].slice(7));
      expect(decodeJwt(set['x-graph-authorization'].slice(7)).aud).to.equal(emu.scenario.apps.downstreamApi.appId);
    }
  });

  it('falls back to the defaults (validate only) where no rule matches', async () => {
    deniedWith(await check(client, envoyCheckRequest({ path: '/orders' })), 'Unauthorized', 'credential_missing');
    const set = allowed(await check(client, envoyCheckRequest({ path: '/orders', headers: { authorization: `Bearer ${await user('Orders.Read')}` } })));
    expect(set).to.not.have.property('x-graph-authorization');
  });

  it('matches hosts without their port, *.name taking names under it only, and an exact Path', async () => {
    const set = allowed(await check(client, envoyCheckRequest({ path: '/hook', host: 'Hooks.Partner.Test:8443' })));
    tokens.push(set.authorization.slice(7));
    expect(decodeJwt(set.authorization.slice(7)).idtyp).to.equal('app');
    deniedWith(await check(client, envoyCheckRequest({ path: '/hook', host: 'partner.test' })), 'Unauthorized', 'credential_missing');
    deniedWith(await check(client, envoyCheckRequest({ path: '/hook', host: 'evilpartner.test' })), 'Unauthorized', 'credential_missing');
    deniedWith(await check(client, envoyCheckRequest({ path: '/hook/more', host: 'hooks.partner.test' })), 'Unauthorized', 'credential_missing');
  });

  it('lets a route\'s context_extensions override the rule it falls under, key by key', async () => {
    const set = allowed(await check(client, envoyCheckRequest({ path: '/api/orders', headers: { authorization: `Bearer ${await user()}` }, contextExtensions: { inject_header: 'x-orders-token' } })));
    // The rule's downstream API, the route's header.
    expect(set['x-orders-token']).to.match(/^Bearer ey/);
    tokens.push(set['x-orders-token'].slice(7));
    expect(set).to.not.have.property('x-graph-authorization');
    deniedWith(await check(client, envoyCheckRequest({ path: '/public/x', contextExtensions: { validate: 'required' } })), 'Unauthorized', 'credential_missing');
  });

  it('denies 400 path_not_normalized for a path whose route depends on how the app resolves it', async () => {
    const token = await user();
    const bypasses = [
      '/public/../api/orders', '/public/./x', '/public/..', '//api/orders', '/public/%2e%2e/api/orders', '/public%2Fx', '/public\\..\\api',
      // `;params`, dropped per segment by Tomcat, Jetty and Spring (`..;` is `..` there; Envoy's normaliser keeps it).
      '/public/..;/api/orders', '/api;x/orders', '/api;/orders', '/api%3bx/orders',
      // Encodings that decode to what the rule's text is not: an unreserved letter, double encoding, overlong UTF-8, IIS's %u, fullwidth dots.
      '/%61pi/orders', '/public/%252e%252e/api/orders', '/public/%c0%ae%c0%ae/api/orders', '/public/%u002e%u002e/api/orders', '/public/\uff0e\uff0e/api/orders', '/public/%2', '/public/a b',
    ];
    for (const path of bypasses) {
      const res = await check(client, envoyCheckRequest({ path, headers: { authorization: `Bearer ${token}` } }));
      expect(res.status?.code, path).to.equal(3);
      deniedWith(res, 'BadRequest', 'path_not_normalized');
    }
  });

  it('keeps percent-encodings that name the same segment to everyone, and takes an exact Path with its trailing slash', async () => {
    allowed(await check(client, envoyCheckRequest({ path: '/public/a%20b%2Bc' })));
    const set = allowed(await check(client, envoyCheckRequest({ path: '/hook/', host: 'hooks.partner.test' })));
    tokens.push(set.authorization.slice(7));
    expect(decodeJwt(set.authorization.slice(7)).idtyp).to.equal('app');
  });

  it('lets a rule clear an On-Behalf-Of default DownstreamApi with an empty value, so a public route can be served', async () => {
    const env = {
      ...routes(),
      Sidecar__ExtAuthz__DownstreamApi: 'graph',
      Sidecar__ExtAuthz__Routes__0__DownstreamApi: '',
      // The egress rule names its own app-token API; /api keeps graph.
    };
    const s = await startSidecar(sidecarEnv(emu, env));
    const c = createAuthorizationClient(`127.0.0.1:${s.listening.extAuthz!.port}`);
    try {
      const set = allowed(await check(c, envoyCheckRequest({ path: '/public/logo.png' })));
      expect(set).to.not.have.property('authorization');
      // Where no rule matches, the default (On-Behalf-Of) applies.
      const obo = allowed(await check(c, envoyCheckRequest({ path: '/orders', headers: { authorization: `Bearer ${await user('Orders.Read')}` } })));
      expect(obo.authorization).to.match(/^Bearer ey/);
      tokens.push(obo.authorization.slice(7));
      expect(decodeJwt(obo.authorization.slice(7)).aud).to.equal(emu.scenario.apps.downstreamApi.appId);
    } finally {
      c.close();
      await s.stop();
      assertNoSecrets(s.lines, secretsOf(emu, tokens));
    }
  });

  it('refuses to start on a rule that could not work, naming its key', async () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ Sidecar__ExtAuthz__Routes__0__Path: '/a', Sidecar__ExtAuthz__Routes__0__PathPrefix: '/a' }, /Sidecar:ExtAuthz:Routes:0 sets both Path and PathPrefix/],
      [{ Sidecar__ExtAuthz__Routes__0__Validate: 'none' }, /Sidecar:ExtAuthz:Routes:0 sets no Path, PathPrefix or Hosts/],
      [{ Sidecar__ExtAuthz__Routes__0__PathPrefix: '/a', Sidecar__ExtAuthz__Routes__0__DownstreamApi: 'nope' }, /Sidecar:ExtAuthz:Routes:0:DownstreamApi names an API that is not configured/],
      [{ Sidecar__ExtAuthz__Routes__0__PathPrefix: '/a', Sidecar__ExtAuthz__Routes__0__Validate: 'none', Sidecar__ExtAuthz__Routes__0__RequiredScopes__0: 'x' }, /Sidecar:ExtAuthz:Routes:0 requires scopes or roles but sets Validate=none/],
      [{ Sidecar__ExtAuthz__Routes__0__PathPrefix: 'api' }, /Sidecar:ExtAuthz:Routes:0:PathPrefix must be a path in normal form/],
      [{ Sidecar__ExtAuthz__Routes__0__PathPrefix: '/a/../b' }, /Sidecar:ExtAuthz:Routes:0:PathPrefix must be a path in normal form/],
      [{ Sidecar__ExtAuthz__Routes__0__PathPrefix: '/a;b' }, /Sidecar:ExtAuthz:Routes:0:PathPrefix must be a path in normal form/],
      [{ Sidecar__ExtAuthz__Routes__0__Hosts__0: 'app.example.com:443' }, /Sidecar:ExtAuthz:Routes:0:Hosts has "app.example.com:443"/],
      [{ Sidecar__ExtAuthz__Routes__0__PathPrefix: '/a', Sidecar__ExtAuthz__Routes__0__AgentUsername: 'u@x' }, /need Sidecar:ExtAuthz:Routes:0:AgentIdentity/],
      [{ Sidecar__ExtAuthz__Routes__0__PathPrefix: '/a', Sidecar__ExtAuthz__Routes__0__RequireAll: 'yes' }, /Sidecar:ExtAuthz:Routes:0:RequireAll must be true or false/],
      [{ Sidecar__ExtAuthz__Routes__0__PathPrefix: '/a', Sidecar__ExtAuthz__Routes__0__Validat: 'none' }, /Sidecar:ExtAuthz:Routes:0:Validat is not a known setting/],
      // No token checked, so none to exchange On-Behalf-Of: every Check would be a 500.
      [{ ...routes(), Sidecar__ExtAuthz__Routes__0__DownstreamApi: 'graph' }, /Sidecar:ExtAuthz:Routes:0 validates no token \(Validate=none\) but its DownstreamApi graph acts on behalf of the caller/],
      [{ ...routes(), Sidecar__ExtAuthz__Validate: 'none', Sidecar__ExtAuthz__DownstreamApi: 'graph' }, /Sidecar:ExtAuthz validates no token \(Validate=none\) but its DownstreamApi graph/],
    ];
    for (const [env, message] of cases) {
      const { code, stdout } = await runSidecarToExit(sidecarEnv(emu, env), [], 15_000);
      expect(code, JSON.stringify(env)).to.equal(1);
      // One JSON line with code config_invalid; its problems are matched as text (a quote is escaped in the JSON).
      const invalid = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { code?: string; problems?: string[] }).find((l) => l.code === 'config_invalid');
      expect(invalid?.problems?.join('\n'), `${JSON.stringify(env)}: ${stdout}`).to.match(message);
    }
  });
});

describe('context_extensions over a route rule, key by key (built sidecar against the emulator)', function () {
  this.timeout(40_000);
  const env = withEmulatorAndSidecars(() => ({
    ...routes(),
    DownstreamApis__AgentApp__Scopes__0: 'api://downstream/.default',
    DownstreamApis__AgentApp__RequestAppToken: 'true',
    DownstreamApis__AgentUser__Scopes__0: 'api://downstream/read',
    // The strictest policy in the defaults; /public (rule 0) drops it by Validate=none.
    Sidecar__ExtAuthz__RequiredScopes__0: 'access_as_user',
  }));
  const tokens: string[] = [];
  let client: AuthorizationClient;
  let sidecar: RunningSidecar;
  let agent1: string;
  let agent2: string;

  before(async () => {
    const emu = env.emu();
    agent1 = emu.scenario.apps.agentIdentity1.appId;
    agent2 = emu.scenario.apps.agentIdentity2.appId;
    sidecar = await env.start({
      Sidecar__ExtAuthz__Routes__3__PathPrefix: '/agent',
      Sidecar__ExtAuthz__Routes__3__Validate: 'none',
      Sidecar__ExtAuthz__Routes__3__DownstreamApi: 'AgentApp',
      Sidecar__ExtAuthz__Routes__3__AgentIdentity: agent1,
    });
    client = createAuthorizationClient(`127.0.0.1:${sidecar.listening.extAuthz!.port}`);
  });
  after(() => {
    client?.close();
    assertNoSecrets(sidecar?.lines ?? [], secretsOf(env.emu(), tokens));
  });

  /** The claims of the token injected into `header`. */
  function injected(res: CheckResult, header: string): Record<string, unknown> {
    const value = allowed(res)[header];
    expect(value, header).to.match(/^Bearer ey/);
    tokens.push(value.slice(7));
    return decodeJwt(value.slice(7));
  }

  it('keeps the rule\'s AgentIdentity under context_extensions that name no agent key', async () => {
    for (const contextExtensions of [undefined, { inject_header: 'x-agent-authorization' }]) {
      const res = await check(client, envoyCheckRequest({ path: '/agent/run', ...(contextExtensions ? { contextExtensions } : {}) }), 10_000);
      const claims = injected(res, contextExtensions?.inject_header ?? 'authorization');
      // The agent's token, not the blueprint's own app token.
      expect(claims.azp, JSON.stringify(contextExtensions)).to.equal(agent1);
      expect(claims.oid).to.equal(env.emu().scenario.apps.agentIdentity1.servicePrincipalId);
    }
  });

  it('acts as the agent user a route names (agent_username) for the rule\'s AgentIdentity', async () => {
    const { upn, oid } = env.emu().scenario.users.agentUser1;
    const res = await check(client, envoyCheckRequest({ path: '/agent/run', contextExtensions: { downstream_api: 'AgentUser', agent_username: upn } }), 10_000);
    const claims = injected(res, 'authorization');
    expect(claims.azp).to.equal(agent1);
    expect(claims.oid).to.equal(oid);
  });

  it('lets a route\'s value override the rule\'s for the same key', async () => {
    const res = await check(client, envoyCheckRequest({ path: '/agent/run', contextExtensions: { agent_identity: agent2 } }), 10_000);
    expect(injected(res, 'authorization').azp).to.equal(agent2);
    // Emptied by the route: no agent, so the blueprint's own app token.
    const plain = await check(client, envoyCheckRequest({ path: '/agent/run', contextExtensions: { agent_identity: '' } }), 10_000);
    expect(injected(plain, 'authorization').azp).to.equal(env.emu().scenario.agentBlueprint.appId);
  });

  it('brings back the default RequiredScopes when a route turns validation on under a Validate=none rule', async () => {
    const other = await env.emu().mint({ kind: 'user', scp: 'other.scope' });
    const good = await env.emu().mint({ kind: 'user', scp: 'access_as_user' });
    tokens.push(other, good);
    const ext = { validate: 'required' };
    // The same answer as where no rule matches.
    for (const path of ['/public/admin', '/orders']) {
      deniedWith(await check(client, envoyCheckRequest({ path, headers: { authorization: `Bearer ${other}` }, contextExtensions: ext })), 'Forbidden', 'insufficient_scope');
      allowed(await check(client, envoyCheckRequest({ path, headers: { authorization: `Bearer ${good}` }, contextExtensions: ext })));
    }
    // Without context_extensions the rule's Validate=none still applies.
    allowed(await check(client, envoyCheckRequest({ path: '/public/admin', headers: { authorization: `Bearer ${other}` } })));
  });
});

describe('start-up warning: ext_authz listener on an address that is not loopback (built sidecar)', function () {
  this.timeout(40_000);
  const env = withEmulatorAndSidecars();
  const warnings = (s: RunningSidecar) => s.lines.filter((l) => l.includes('"config_warning"') && l.includes('SECURITY:') && l.includes('Sidecar:ExtAuthz:Address'));

  it('names the address and says any peer that reaches it chooses the policy', async () => {
    const s = await env.start({ Sidecar__ExtAuthz__Address: '0.0.0.0:0' });
    const w = warnings(s);
    expect(w, s.lines.join('\n')).to.have.length(1);
    expect(w[0]).to.include('0.0.0.0:0').and.include('context_extensions').and.include('NetworkPolicy');
    expect(JSON.parse(w[0]).level).to.equal('warn');
  });

  it('stays silent on loopback, and when the listener is off', async () => {
    expect(warnings(await env.start({ Sidecar__ExtAuthz__Address: '127.0.0.1:0' }))).to.deep.equal([]);
    expect(warnings(await env.start({ Sidecar__ExtAuthz__Address: 'localhost:0' }))).to.deep.equal([]);
    expect(warnings(await env.start({ Sidecar__ExtAuthz__Address: '0.0.0.0:0', Sidecar__ExtAuthz__Enabled: 'false' }))).to.deep.equal([]);
  });
});
