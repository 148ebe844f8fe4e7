/**
 * GET /AuthorizationHeader[Unauthenticated]/{apiName} through the built sidecar against the
 * emulator (issue 3 acceptance): OBO, app tokens, caching and single-flight, override gates,
 * Microsoft's error mapping, and isolation under concurrency.
 */
import { expect } from 'chai';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';
import { startEmulator, redactionFingerprint, type Emulator, type RecordedRequest } from '../../emulator/index.js';
import type { FaultSpec } from '../../emulator/types.js';
import { startSidecar, waitForLine, type RunningSidecar } from '../helpers/sidecar.js';
import { assertNoSecrets, call, secretsOf, sidecarEnv, withEmulatorAndSidecars } from '../helpers/e2e.js';
import { reqCnfFor } from '../../src/pop/shr.js';

function apis(emu: Emulator): Record<string, string> {
  const downstream = emu.scenario.apps.downstreamApi;
  return {
    DownstreamApis__downstream__BaseUrl: 'https://127.0.0.1:1/',
    DownstreamApis__downstream__Scopes__0: 'api://downstream/read',
    DownstreamApis__downstreamApp__Scopes__0: 'api://downstream/.default',
    DownstreamApis__downstreamApp__RequestAppToken: 'true',
    DownstreamApis__noScopes__BaseUrl: 'https://127.0.0.1:1/',
    DownstreamApis__graph__Scopes__0: 'User.Read',
    [`DownstreamApis__byId__Scopes__0`]: `${downstream.appId}/.default`,
    DownstreamApis__byId__RequestAppToken: 'true',
  };
}

function bearer(header: string): Record<string, unknown> {
  expect(header).to.match(/^Bearer ey/);
  return decodeJwt(header.slice('Bearer '.length));
}

describe('GET /AuthorizationHeader/{apiName} (built sidecar against the emulator)', function () {
  this.timeout(40_000);
  let emu: Emulator;
  let sidecar: RunningSidecar;
  const tokens: string[] = [];
  const userToken = async (extra: Parameters<Emulator['mint']>[0] = { kind: 'user' }) => {
    const t = await emu.mint({ scp: 'access_as_user', ...extra });
    tokens.push(t);
    return t;
  };
  const authHeader = async (api: string, token?: string, query = '') => {
    const r = await call(`${sidecar.url}/AuthorizationHeader/${api}${query}`, { token });
    if (r.status === 200) tokens.push(r.json().authorizationHeader.slice(7));
    return r;
  };

  before(async () => {
    emu = await startEmulator();
    sidecar = await startSidecar(sidecarEnv(emu, { ...apis(emu), Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated: 'false' }));
  });
  after(async () => {
    await sidecar?.stop();
    assertNoSecrets(sidecar?.lines ?? [], secretsOf(emu, tokens));
    await emu?.close();
  });

  it('exchanges the caller\'s token On-Behalf-Of and the emulator sees that token as the assertion', async () => {
    const user = await userToken();
    const r = await authHeader('downstream', user);
    expect(r.status, r.text).to.equal(200);
    expect(r.headers.get('cache-control')).to.equal('no-cache, no-store, must-revalidate');
    expect(r.headers.get('expires')).to.equal('0');
    expect(r.headers.get('pragma')).to.equal('no-cache');
    const claims = bearer(r.json().authorizationHeader);
    expect(claims.aud).to.equal(emu.scenario.apps.downstreamApi.appId);
    expect(claims.scp).to.equal('read');
    expect(claims.oid).to.equal(emu.scenario.users.normal.oid);
    const obo = emu.requests().filter((q) => q.route === 'token' && q.form.grant_type === 'urn:ietf:params:oauth:grant-type:jwt-bearer');
    expect(obo).to.have.length(1);
    expect(obo[0].form.requested_token_use).to.equal('on_behalf_of');
    expect(obo[0].form.assertion).to.include(redactionFingerprint(user));
    expect(obo[0].form.scope.split(' ')).to.include('api://downstream/read');
    expect(obo[0].form.client_id).to.equal(emu.scenario.apps.sidecarApi.appId);
  });

  it('serves the second call from its cache (no new request to Entra)', async () => {
    const user = await userToken();
    const first = await authHeader('downstream', user);
    const before = emu.counters().token;
    const second = await authHeader('downstream', user);
    expect(second.json().authorizationHeader).to.equal(first.json().authorizationHeader);
    expect(emu.counters().token).to.equal(before);
  });

  it('sends exactly one token request for 100 concurrent cold callers', async () => {
    const user = await userToken();
    const before = emu.counters().token;
    const answers = await Promise.all(Array.from({ length: 100 }, () => authHeader('downstream', user)));
    for (const a of answers) expect(a.status).to.equal(200);
    expect(new Set(answers.map((a) => a.json().authorizationHeader)).size).to.equal(1);
    expect(emu.counters().token - before).to.equal(1);
  });

  it('acquires an app token when the API says RequestAppToken', async () => {
    const r = await authHeader('downstreamApp', await userToken());
    expect(r.status, r.text).to.equal(200);
    const claims = bearer(r.json().authorizationHeader);
    expect(claims.idtyp).to.equal('app');
    expect(claims.roles).to.deep.equal(['Data.Read']);
  });

  it('honours optionsOverride.Scopes and RequestAppToken on the authenticated route (overrides allowed by default)', async () => {
    const r = await authHeader('anything', await userToken(), '?optionsOverride.Scopes=api://downstream/.default&optionsOverride.RequestAppToken=true');
    expect(r.status, r.text).to.equal(200);
    expect(bearer(r.json().authorizationHeader).idtyp).to.equal('app');
  });

  it('answers 400 "No scopes found" for an API without scopes and for an unknown API', async () => {
    const user = await userToken();
    for (const api of ['noScopes', 'unknown-api']) {
      const r = await authHeader(api, user);
      expect(r.status).to.equal(400);
      expect(r.headers.get('content-type')).to.equal('application/problem+json');
      const body = r.json();
      expect(body.type).to.equal('https://tools.ietf.org/html/rfc9110#section-15.5.1');
      expect(body.detail).to.equal(`No scopes found for the API '${api}' or in optionsOverride. 'scopes' needs to be either a single value or a list of values.`);
    }
  });

  it('requires a token: 401 with a bare Bearer challenge and no body', async () => {
    const r = await authHeader('downstream');
    expect(r.status).to.equal(401);
    expect(r.headers.get('www-authenticate')).to.equal('Bearer');
    expect(r.text).to.equal('');
  });

  it('keeps 20 concurrent requests with distinct overrides isolated', async () => {
    const user = await userToken();
    const scopes = ['read', 'write'];
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => {
        const scope = `api://downstream/${scopes[i % 2]}`;
        return authHeader('graph', user, `?optionsOverride.Scopes=${encodeURIComponent(scope)}`).then((r) => ({ i, r }));
      }),
    );
    for (const { i, r } of answers) {
      expect(r.status, r.text).to.equal(200);
      expect(bearer(r.json().authorizationHeader).scp).to.equal(scopes[i % 2]);
    }
  });

  it('on the unauthenticated route ignores overrides by default and answers "No account" 401 without a user', async () => {
    const r = await call(`${sidecar.url}/AuthorizationHeaderUnauthenticated/downstream?optionsOverride.RequestAppToken=true`);
    expect(r.status).to.equal(401);
    expect(r.json().detail).to.equal('No account or login hint was passed to the AcquireTokenSilent call.');
    // Microsoft's ProblemDetails carries no challenge here (and no token was sent to call invalid).
    expect(r.headers.get('www-authenticate')).to.equal(null);
    expect(await waitForLine(sidecar, 'OverridesIgnored')).to.equal(true);
  });

  it('writes at most ten OverridesIgnored lines a second per route, the next line saying how many were held back', async () => {
    // A sidecar of its own, so no other test's warnings share the second this one counts in.
    // At info level: debug writes every line (the level for looking at each request).
    const own = await startSidecar(sidecarEnv(emu, { ...apis(emu), Sidecar__LogLevel: 'info' }));
    try {
      const url = `${own.url}/AuthorizationHeaderUnauthenticated/downstreamApp?optionsOverride.Scopes=x`;
      const burst = await Promise.all(Array.from({ length: 30 }, () => call(url)));
      for (const r of burst) expect(r.status, r.text).to.equal(200);
      // The lines reach our pipe after the answers: wait for them to stop coming, then count.
      let seen = -1;
      while (seen !== own.lines.length) {
        seen = own.lines.length;
        await new Promise((r) => setTimeout(r, 200));
      }
      const warned = () => own.lines.filter((l) => l.includes('"event":"OverridesIgnored"')).map((l) => JSON.parse(l) as { suppressed?: number });
      const first = warned();
      expect(first.length).to.be.within(1, 29);
      // Every request was refused its override; a later one, past the second, carries the count.
      await new Promise((r) => setTimeout(r, 1_100));
      const from = own.lines.length;
      expect((await call(url)).status).to.equal(200);
      expect(await waitForLine(own, '"event":"OverridesIgnored"', 5_000, from)).to.equal(true);
      const after = warned();
      expect(after.length).to.equal(first.length + 1);
      expect(after[after.length - 1].suppressed, 'the line after the burst counts what was held back').to.be.above(0);
      // Each line stands for itself and the lines held back before it: every request is accounted for.
      expect(after.reduce((n, l) => n + 1 + (l.suppressed ?? 0), 0)).to.equal(31);
    } finally {
      await own.stop();
    }
  });

  it('with overrides allowed on the unauthenticated route, reads only the last RequestAppToken: an unparseable one asks for no app token (401 "No account")', async () => {
    const own = await startSidecar(sidecarEnv(emu, { ...apis(emu), Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated: 'true' }));
    try {
      const url = (first: string, last: string) =>
        `${own.url}/AuthorizationHeaderUnauthenticated/downstream?optionsOverride.RequestAppToken=${first}&optionsOverride.Scopes=api://downstream/.default&optionsOverride.RequestAppToken=${last}`;
      const tokenRequests = () => emu.requests().filter((q) => q.route === 'token').length;
      const before = tokenRequests();
      const user = await call(url('true', 'bogus'));
      expect(user.status, user.text).to.equal(401);
      expect(user.json().detail).to.equal('No account or login hint was passed to the AcquireTokenSilent call.');
      expect(tokenRequests(), 'no token request for the user flow without a user').to.equal(before);
      const app = await call(url('bogus', 'true'));
      expect(app.status, app.text).to.equal(200);
      tokens.push(app.json().authorizationHeader.slice(7));
      expect(bearer(app.json().authorizationHeader).idtyp).to.equal('app');
    } finally {
      await own.stop();
      assertNoSecrets(own.lines, secretsOf(emu, tokens));
    }
  });

  it('on the unauthenticated route issues an app token for a RequestAppToken API and still OBOs a valid token if sent', async () => {
    const app = await call(`${sidecar.url}/AuthorizationHeaderUnauthenticated/downstreamApp`);
    expect(app.status, app.text).to.equal(200);
    expect(bearer(app.json().authorizationHeader).idtyp).to.equal('app');
    const obo = await call(`${sidecar.url}/AuthorizationHeaderUnauthenticated/downstream`, { token: await userToken() });
    expect(obo.status, obo.text).to.equal(200);
    expect(bearer(obo.json().authorizationHeader).idtyp).to.equal('user');
  });

  it('answers 400 request_invalid to a tenant override that is not a GUID or a domain name, without asking Entra', async () => {
    const user = await userToken();
    const before = emu.requests().length;
    for (const tenant of ['../../x', '..', '@evil.example', 'a#b', 'a/b', 'a?b', 'a\\b', 'a b', 'a%2Fb', `${'a'.repeat(254)}`]) {
      const r = await authHeader('downstreamApp', user, `?optionsOverride.AcquireTokenOptions.Tenant=${encodeURIComponent(tenant)}`);
      expect(r.status, `${tenant}: ${r.text}`).to.equal(400);
      expect(r.json().code, tenant).to.equal('request_invalid');
      expect(r.json().detail).to.equal('optionsOverride.AcquireTokenOptions.Tenant must be a tenant ID (GUID) or a domain name.');
    }
    expect(emu.requests().slice(before), 'requests that reached Entra').to.deep.equal([]);
    // A tenant by ID or by domain is still honoured.
    for (const tenant of [emu.scenario.tenants.primary.id, emu.scenario.tenants.primary.domains[0]]) {
      const r = await authHeader('downstreamApp', user, `?optionsOverride.AcquireTokenOptions.Tenant=${encodeURIComponent(tenant)}`);
      expect(r.status, `${tenant}: ${r.text}`).to.equal(200);
    }
  });

  it('maps an Entra refusal to 401 carrying the AADSTS text, and a throttle to a fast failure honouring Retry-After', async () => {
    emu.fault({ route: 'token', error: 'invalid_scope', aadsts: 70011, status: 400 });
    const refused = await authHeader('byId', await userToken());
    expect(refused.status).to.equal(401);
    expect(refused.json().detail).to.include('AADSTS70011');

    emu.fault({ route: 'token', status: 429, retryAfter: 30, error: 'temporarily_unavailable', aadsts: 50196 });
    const user = await userToken();
    const throttled = await authHeader('downstream', user, '?optionsOverride.Scopes=api://downstream/write');
    expect(throttled.status).to.equal(401);
    const before = emu.counters().token;
    const again = await authHeader('downstream', user, '?optionsOverride.Scopes=api://downstream/write');
    expect(again.status).to.equal(401);
    expect(emu.counters().token, 'no second request inside Retry-After').to.equal(before);
  });

  it('passes on a Retry-After of at most an hour however long Entra asked for', async () => {
    emu.fault({ route: 'token', status: 429, retryAfter: 315_360_000, error: 'temporarily_unavailable', aadsts: 50196 });
    const user = await userToken();
    const first = await authHeader('downstream', user, '?optionsOverride.Scopes=api://downstream/write');
    expect([first.status, first.json().code, first.headers.get('retry-after')]).to.deep.equal([401, 'acquisition_throttled', '3600']);
    const again = await authHeader('downstream', user, '?optionsOverride.Scopes=api://downstream/write');
    expect([again.status, again.headers.get('retry-after')]).to.deep.equal([401, '3600']);
  });

  it('answers 401 with Entra\'s AADSTS text when a tenant override names no tenant, for an app token and On-Behalf-Of alike', async () => {
    // msal reads the tenant's openid-configuration first; Entra refuses it (400 invalid_tenant), and
    // Microsoft maps every Entra refusal to 401 (reference §2.3; §8: tenant `invalid-tenant` → 401).
    const user = await userToken();
    const cases: [string, RegExp][] = [
      ['invalid-tenant', /AADSTS900023: Specified tenant identifier 'invalid-tenant'/],
      ['bbbbbbbb-0000-4000-8000-000000000999', /AADSTS90002: Tenant 'bbbbbbbb-0000-4000-8000-000000000999' not found/],
      ['nonexistent.onmicrosoft.com', /AADSTS90002: Tenant 'nonexistent.onmicrosoft.com' not found/],
    ];
    for (const api of ['downstreamApp', 'downstream']) {
      for (const [tenant, aadsts] of cases) {
        const r = await authHeader(api, user, `?optionsOverride.AcquireTokenOptions.Tenant=${tenant}`);
        expect(r.status, `${api} ${tenant}: ${r.text}`).to.equal(401);
        expect(r.json().code).to.equal('acquisition_rejected');
        expect(r.json().detail).to.match(aadsts);
      }
    }
    const metadata = emu.requests().filter((q) => q.route === 'metadata' && q.status === 400);
    expect(metadata.map((q) => q.path)).to.include('/nonexistent.onmicrosoft.com/v2.0/.well-known/openid-configuration');
  });
});

describe('token acquisition edge cases (built sidecar)', function () {
  this.timeout(40_000);
  const suite = withEmulatorAndSidecars(apis);
  const start = suite.start;
  let emu: Emulator;
  before(() => {
    emu = suite.emu();
  });

  it('answers 401 with AADSTS7000215 when the client secret is wrong', async () => {
    const s = await start({ AzureAd__ClientCredentials__0__ClientSecret: 'wrong-secret-value' });
    const r = await call(`${s.url}/AuthorizationHeaderUnauthenticated/downstreamApp`);
    expect(r.status).to.equal(401);
    expect(r.json().detail).to.include('AADSTS7000215');
    expect(r.text).to.not.include('wrong-secret-value');
  });

  it('starts with a braced GUID as AcquireTokenOptions:CorrelationId and sends it in the plain form', async () => {
    // .NET binds `{…}` to a Guid, as the query override parser (Guid.TryParse) reads it too.
    const s = await start({
      DownstreamApis__correlated__Scopes__0: 'api://downstream/.default',
      DownstreamApis__correlated__RequestAppToken: 'true',
      DownstreamApis__correlated__AcquireTokenOptions__CorrelationId: '{0A0A0A0A-1111-4222-8333-444455556666}',
    });
    const r = await call(`${s.url}/AuthorizationHeaderUnauthenticated/correlated`);
    expect(r.status, r.text).to.equal(200);
    const sent = emu.requests().filter((q) => q.route === 'token' && q.query['client-request-id'] === '0a0a0a0a-1111-4222-8333-444455556666');
    expect(sent).to.have.length(1);
  });

  it('answers 500 when the tenant\'s metadata fails with a 5xx: Entra did not refuse, it did not answer', async () => {
    const s = await start();
    const tenant = emu.scenario.tenants.secondary.id;
    emu.fault({ route: 'metadata', tenant, status: 503, sticky: true });
    try {
      const token = await emu.mint({ kind: 'user', scp: 'access_as_user' });
      const r = await call(`${s.url}/AuthorizationHeader/downstreamApp?optionsOverride.AcquireTokenOptions.Tenant=${tenant}`, { token });
      expect(r.status, r.text).to.equal(500);
      expect(r.json().code).to.equal('acquisition_unavailable');
      expect(emu.requests().some((q) => q.route === 'metadata' && q.status === 503), 'the metadata GET met the fault').to.equal(true);
    } finally {
      emu.clearFaults();
    }
  });

  it('answers 500 within the configured bound when the token endpoint hangs', async () => {
    const s = await start({ Sidecar__Outbound__TimeoutMs: '1000' });
    emu.fault({ route: 'token', delayMs: 5_000 });
    const t0 = Date.now();
    const r = await call(`${s.url}/AuthorizationHeaderUnauthenticated/downstreamApp`);
    const elapsed = Date.now() - t0;
    expect(r.status).to.equal(500);
    expect(r.json().detail).to.equal('An unexpected error occurred.');
    expect(elapsed).to.be.lessThan(4_000);
    emu.clearFaults();
  });

  it('falls back to the next credential when the first is refused as invalid_client', async () => {
    const s = await start({
      AzureAd__ClientCredentials__0__ClientSecret: 'definitely-not-it',
      AzureAd__ClientCredentials__1__SourceType: 'ClientSecret',
      AzureAd__ClientCredentials__1__ClientSecret: emu.scenario.apps.sidecarApi.secrets[0].value,
    });
    const r = await call(`${s.url}/AuthorizationHeaderUnauthenticated/downstreamApp`);
    expect(r.status, r.text).to.equal(200);
  });

  it('uses a workload-identity assertion file, re-reading it on every acquisition', async () => {
    const file = await emu.writeFederatedAssertionFile();
    const s = await start({
      AzureAd__ClientCredentials__0__SourceType: 'SignedAssertionFilePath',
      AzureAd__ClientCredentials__0__SignedAssertionFileDiskPath: file,
      AzureAd__ClientCredentials__0__ClientSecret: '',
    });
    const r = await call(`${s.url}/AuthorizationHeaderUnauthenticated/downstreamApp`);
    expect(r.status, r.text).to.equal(200);
    const req = emu.requests().filter((q) => q.route === 'token').at(-1)!;
    expect(req.form.client_assertion_type).to.equal('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
  });

  it('acquires a managed-identity token from IMDS for an API that names a managed identity', async () => {
    const mi = emu.scenario.managedIdentities.userAssigned;
    const s = await start({
      AZURE_POD_IDENTITY_AUTHORITY_HOST: emu.imdsOrigin,
      DownstreamApis__mi__Scopes__0: 'api://downstream/.default',
      DownstreamApis__mi__AcquireTokenOptions__ManagedIdentity__UserAssignedClientId: mi.clientId,
    });
    const r = await call(`${s.url}/AuthorizationHeaderUnauthenticated/mi`);
    expect(r.status, r.text).to.equal(200);
    const claims = bearer(r.json().authorizationHeader);
    expect(claims.oid).to.equal(mi.objectId);
    expect(emu.counters().imds).to.be.greaterThan(0);
  });

  it('never hands out an empty bearer when the managed-identity endpoint or Entra fails with an empty body, and calls no API with one', async () => {
    // An error status with no body at all (a proxy, a crashed endpoint) once became a "token" of ''.
    const seen: string[] = [];
    const api = createServer((req, res) => {
      seen.push(req.headers.authorization ?? '');
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
    await new Promise<void>((r) => api.listen(0, '127.0.0.1', r));
    try {
      const s = await start({
        AZURE_POD_IDENTITY_AUTHORITY_HOST: emu.imdsOrigin,
        DownstreamApis__mi__Scopes__0: 'api://downstream/.default',
        DownstreamApis__mi__BaseUrl: `http://127.0.0.1:${(api.address() as AddressInfo).port}/`,
        DownstreamApis__mi__AcquireTokenOptions__ManagedIdentity__UserAssignedClientId: emu.scenario.managedIdentities.userAssigned.clientId,
      });
      // Throttling keeps its meaning without a body; any other status is a failed answer.
      const cases: Array<[FaultSpec['route'], string, number, string]> = [
        ['imds', 'AuthorizationHeaderUnauthenticated/mi', 503, 'acquisition_throttled'],
        ['imds', 'AuthorizationHeaderUnauthenticated/mi', 429, 'acquisition_throttled'],
        ['imds', 'AuthorizationHeaderUnauthenticated/mi', 500, 'acquisition_upstream_failed'],
        ['imds', 'AuthorizationHeaderUnauthenticated/mi', 400, 'acquisition_upstream_failed'],
        ['imds', 'AuthorizationHeaderUnauthenticated/mi', 200, 'acquisition_upstream_failed'],
        ['imds', 'DownstreamApiUnauthenticated/mi', 503, 'acquisition_throttled'],
        ['token', 'AuthorizationHeaderUnauthenticated/downstreamApp', 503, 'acquisition_throttled'],
        ['token', 'AuthorizationHeaderUnauthenticated/downstreamApp', 500, 'acquisition_upstream_failed'],
        ['token', 'AuthorizationHeaderUnauthenticated/downstreamApp', 400, 'acquisition_upstream_failed'],
        ['token', 'AuthorizationHeaderUnauthenticated/downstreamApp', 200, 'acquisition_upstream_failed'],
      ];
      for (const [route, path, status, code] of cases) {
        emu.fault({ route, status, emptyBody: true, sticky: true });
        try {
          const r = await call(`${s.url}/${path}`, path.startsWith('Downstream') ? { method: 'POST' } : {});
          expect(r.status, `${route} ${status} ${path}: ${r.text}`).to.equal(401);
          expect(r.json().code, `${route} ${status} ${path}`).to.equal(code);
        } finally {
          emu.clearFaults();
        }
      }
      expect(seen, 'requests that reached the API').to.deep.equal([]);
    } finally {
      await new Promise((r) => api.close(r));
    }
  });
});

describe('AcquireTokenOptions:ExtraHeadersParameters (built sidecar against the emulator)', function () {
  this.timeout(40_000);
  const suite = withEmulatorAndSidecars();
  let emu: Emulator;
  let s: RunningSidecar;
  const headers = (api: string, value: string): Record<string, string> => ({ [`DownstreamApis__${api}__AcquireTokenOptions__ExtraHeadersParameters__X-Token-Hint`]: value });
  before(async () => {
    emu = suite.emu();
    s = await suite.start({
      DownstreamApis__obo__Scopes__0: 'api://downstream/read',
      ...headers('obo', 'obo-value'),
      DownstreamApis__app__Scopes__0: 'api://downstream/.default',
      DownstreamApis__app__RequestAppToken: 'true',
      ...headers('app', 'app-value'),
      DownstreamApis__plainApp__Scopes__0: 'api://downstream/.default',
      DownstreamApis__plainApp__RequestAppToken: 'true',
      DownstreamApis__popApp__Scopes__0: 'api://downstream/.default',
      DownstreamApis__popApp__RequestAppToken: 'true',
      DownstreamApis__popApp__AcquireTokenOptions__PopPublicKey: reqCnfFor('x'.repeat(43)),
      ...headers('popApp', 'pop-value'),
    });
  });
  /** The token requests the emulator received while `run` ran. */
  const tokenRequestsDuring = async (run: () => Promise<void>): Promise<RecordedRequest[]> => {
    const before = emu.requests().length;
    await run();
    return emu.requests().slice(before).filter((q) => q.route === 'token');
  };

  it('sends them on the On-Behalf-Of token request', async () => {
    const user = await emu.mint({ kind: 'user', scp: 'access_as_user' });
    const sent = await tokenRequestsDuring(async () => {
      const r = await call(`${s.url}/AuthorizationHeader/obo`, { token: user });
      expect(r.status, r.text).to.equal(200);
    });
    expect(sent.map((q) => [q.form.grant_type, q.headers['x-token-hint']])).to.deep.equal([['urn:ietf:params:oauth:grant-type:jwt-bearer', 'obo-value']]);
  });

  it('sends them on the client-credentials and the PoP token requests', async () => {
    const app = await tokenRequestsDuring(async () => {
      expect((await call(`${s.url}/AuthorizationHeaderUnauthenticated/app`)).status).to.equal(200);
    });
    expect(app.map((q) => [q.form.grant_type, q.headers['x-token-hint']])).to.deep.equal([['client_credentials', 'app-value']]);
    const pop = await tokenRequestsDuring(async () => {
      const r = await call(`${s.url}/AuthorizationHeaderUnauthenticated/popApp`);
      expect(r.status, r.text).to.equal(200);
    });
    expect(pop.map((q) => [q.form.token_type, q.headers['x-token-hint']])).to.deep.equal([['pop', 'pop-value']]);
  });

  it('keys the token cache by them: an API without the header does not get the token acquired with it', async () => {
    expect((await call(`${s.url}/AuthorizationHeaderUnauthenticated/app`)).status).to.equal(200);
    const again = await tokenRequestsDuring(async () => {
      expect((await call(`${s.url}/AuthorizationHeaderUnauthenticated/app`)).status).to.equal(200);
    });
    expect(again, 'the same API is served from the cache').to.have.length(0);
    const plain = await tokenRequestsDuring(async () => {
      expect((await call(`${s.url}/AuthorizationHeaderUnauthenticated/plainApp`)).status).to.equal(200);
    });
    expect(plain.map((q) => q.headers['x-token-hint'])).to.deep.equal([undefined]);
  });
});

describe('refresh-ahead (built sidecar, short-lived tokens)', function () {
  this.timeout(30_000);
  it('refreshes a token in the background before it expires and keeps serving the old one meanwhile', async () => {
    // The cache stores msal's expiresOn, which is `exp` or `exp + 1` (msal rounds the clock where the
    // emulator floors it), and refreshes after 75 % of the time left when it stores the token. With a
    // 12 s lifetime and no expiry buffer, one second before `exp` is past the refresh point (at most
    // iat + 10.1 s even when the first answer took a second) and before expiry, with a second to spare
    // either way on a slow host.
    const emu = await startEmulator({ tokenLifetimeSec: 12 });
    const s = await startSidecar(sidecarEnv(emu, { ...apis(emu), Sidecar__TokenCache__ExpiryBufferSec: '0' }));
    try {
      const url = `${s.url}/AuthorizationHeaderUnauthenticated/downstreamApp`;
      const first = (await call(url)).json().authorizationHeader;
      const base = emu.counters().token;
      const exp = decodeJwt(first.slice('Bearer '.length)).exp!;
      await new Promise((r) => setTimeout(r, Math.max(0, (exp - 1) * 1000 - Date.now())));
      const during = (await call(url)).json().authorizationHeader;
      expect(during).to.equal(first);
      // The background request: wait for it (a slow host may take more than a moment), then no more.
      for (let waited = 0; emu.counters().token === base && waited < 5_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 200));
      expect(emu.counters().token - base).to.equal(1);
      const after = (await call(url)).json().authorizationHeader;
      expect(after).to.not.equal(first);
      expect(emu.counters().token - base).to.equal(1);
    } finally {
      await s.stop();
      await emu.close();
    }
  });
});
