/**
 * envoy.service.auth.v3.Authorization/Check through the BUILT sidecar with the real validator and
 * acquirer against the emulator (issue 5 acceptance): Envoy-shaped requests in, full CheckResponses out.
 */
import { expect } from 'chai';
import { decodeJwt } from 'jose';
import { startEmulator, redactionFingerprint, type Emulator } from '../../emulator/index.js';
import { createAuthorizationClient, loadExtAuthzProtos, type AuthorizationClient } from '../../src/extauthz/protos.js';
import { startSidecar, waitForLine, type RunningSidecar } from '../helpers/sidecar.js';
import { assertNoSecrets, call, healthCheck, secretsOf, sidecarEnv, withEmulatorAndSidecars } from '../helpers/e2e.js';
import { applyOkResponse, check, envoyCheckRequest, headerMap, rawCheckClient } from '../extauthz/fixtures.js';

/** Where `bytes` hold a UTF-16 surrogate encoded as UTF-8 (ED A0..BF xx, never valid UTF-8), or -1. */
function encodedSurrogateAt(bytes: Buffer): number {
  for (let i = 0; i + 1 < bytes.length; i++) if (bytes[i] === 0xed && bytes[i + 1] >= 0xa0 && bytes[i + 1] <= 0xbf) return i;
  return -1;
}

const STEP_UP_CLAIMS = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}';

function apis(): Record<string, string> {
  return {
    DownstreamApis__orders__Scopes__0: 'api://downstream/read',
    DownstreamApis__partner__Scopes__0: 'api://downstream/.default',
    DownstreamApis__partner__RequestAppToken: 'true',
    DownstreamApis__stepUp__Scopes__0: 'api://downstream/read',
    DownstreamApis__stepUp__AcquireTokenOptions__Claims: STEP_UP_CLAIMS,
    'Sidecar__ExtAuthz__ClaimsToHeaders__x-entra-oid': 'oid',
    'Sidecar__ExtAuthz__ClaimsToHeaders__x-entra-tid': 'tid',
    'Sidecar__ExtAuthz__ClaimsToHeaders__x-entra-scp': 'scp',
  };
}

describe('ext_authz Check (built sidecar against the emulator)', function () {
  this.timeout(40_000);
  let emu: Emulator;
  let sidecar: RunningSidecar;
  let client: AuthorizationClient;
  const tokens: string[] = [];
  const user = async (claims: Record<string, unknown> = {}) => {
    const t = await emu.mint({ kind: 'user', scp: 'access_as_user', claims });
    tokens.push(t);
    return t;
  };

  before(async () => {
    emu = await startEmulator();
    sidecar = await startSidecar(sidecarEnv(emu, { ...apis(), Sidecar__Outbound__TimeoutMs: '3000' }));
    client = createAuthorizationClient(`127.0.0.1:${sidecar.listening.extAuthz!.port}`);
  });
  after(async () => {
    client?.close();
    await sidecar?.stop();
    assertNoSecrets(sidecar?.lines ?? [], secretsOf(emu, tokens));
    await emu?.close();
  });

  it('reports the Authorization service SERVING once signing keys are loaded', async () => {
    const deadline = Date.now() + 10_000;
    let status = '';
    while (Date.now() < deadline && status !== 'SERVING') {
      status = await healthCheck(`127.0.0.1:${sidecar.listening.extAuthz!.port}`, 'envoy.service.auth.v3.Authorization');
      if (status !== 'SERVING') await new Promise((r) => setTimeout(r, 100));
    }
    expect(status).to.equal('SERVING');
  });

  it('allows with the OBO token injected (overwrite) and spoofed identity headers replaced', async () => {
    const token = await user();
    const req = envoyCheckRequest({ headers: { authorization: `Bearer ${token}`, 'x-entra-oid': 'spoofed', 'x-entra-tid': 'spoofed' }, contextExtensions: { downstream_api: 'orders' } });
    const res = await check(client, req);
    expect(res.status?.code ?? 0).to.equal(0);
    const set = headerMap(res.ok_response.headers);
    for (const h of res.ok_response.headers) expect(h.append_action).to.equal('OVERWRITE_IF_EXISTS_OR_ADD');
    expect(set.authorization).to.match(/^Bearer ey/);
    tokens.push(set.authorization.slice(7));
    const obo = decodeJwt(set.authorization.slice(7));
    expect(obo.aud).to.equal(emu.scenario.apps.downstreamApi.appId);
    expect(obo.scp).to.equal('read');
    const upstream = applyOkResponse((req.attributes as any).request.http.headers, res);
    expect(upstream['x-entra-oid']).to.equal(emu.scenario.users.normal.oid);
    expect(upstream['x-entra-tid']).to.equal(emu.scenario.tenants.primary.id);
    expect(upstream.authorization).to.equal(set.authorization);
    const oboReq = emu.requests().filter((q) => q.form.grant_type === 'urn:ietf:params:oauth:grant-type:jwt-bearer').at(-1)!;
    expect(oboReq.form.assertion).to.include(redactionFingerprint(token));
  });

  it('serves a repeat Check from the caches (no Entra request) and accepts the raw header_map form', async () => {
    const token = await user();
    const first = await check(client, envoyCheckRequest({ headers: { authorization: `Bearer ${token}` }, contextExtensions: { downstream_api: 'orders' } }));
    const before = emu.counters().token;
    const second = await check(client, envoyCheckRequest({ raw: true, headers: { authorization: `Bearer ${token}` }, contextExtensions: { downstream_api: 'orders' } }));
    expect(headerMap(second.ok_response.headers).authorization).to.equal(headerMap(first.ok_response.headers).authorization);
    expect(emu.counters().token).to.equal(before);
  });

  it('sends exactly one token request for 50 concurrent cold Checks', async () => {
    const token = await user();
    const before = emu.counters().token;
    const req = envoyCheckRequest({ headers: { authorization: `Bearer ${token}` }, contextExtensions: { downstream_api: 'orders' } });
    const answers = await Promise.all(Array.from({ length: 50 }, () => check(client, req)));
    for (const a of answers) expect(a.status?.code ?? 0).to.equal(0);
    expect(emu.counters().token - before).to.equal(1);
  });

  it('injects an app token on the egress pattern with no inbound token', async () => {
    const res = await check(client, envoyCheckRequest({ contextExtensions: { validate: 'none', downstream_api: 'partner' } }));
    expect(res.status?.code ?? 0).to.equal(0);
    const auth = headerMap(res.ok_response.headers).authorization;
    tokens.push(auth.slice(7));
    expect(decodeJwt(auth.slice(7)).idtyp).to.equal('app');
  });

  const denials: Array<[string, () => Promise<Record<string, unknown>>, number, string, RegExp | null, string]> = [
    ['no token', async () => envoyCheckRequest({}), 16, 'Unauthorized', /^Bearer$/, 'credential_missing'],
    ['an expired token', async () => envoyCheckRequest({ headers: { authorization: `Bearer ${await emu.mint({ kind: 'user', expiresInSec: -900 })}` } }), 16, 'Unauthorized', /^Bearer error="invalid_token"/, 'token_expired'],
    ['a token for another audience', async () => envoyCheckRequest({ headers: { authorization: `Bearer ${await emu.mint({ kind: 'user', audience: 'api://downstream' })}` } }), 16, 'Unauthorized', /invalid_token/, 'token_audience_invalid'],
    ['a missing scope', async () => envoyCheckRequest({ headers: { authorization: `Bearer ${await user()}` }, contextExtensions: { required_scopes: 'Orders.Admin' } }), 7, 'Forbidden', /^Bearer error="insufficient_scope", scope="Orders.Admin"$/, 'insufficient_scope'],
    ['an unknown downstream_api', async () => envoyCheckRequest({ headers: { authorization: `Bearer ${await user()}` }, contextExtensions: { downstream_api: 'nope' } }), 13, 'InternalServerError', null, 'api_not_configured'],
    ['a TCP (non-HTTP) request', async () => ({ attributes: { source: { address: { socket_address: { address: '10.0.0.1', port_value: 1 } } } } }), 7, 'Forbidden', null, 'request_not_http'],
  ];
  for (const [what, make, grpcCode, envoyStatus, challenge, code] of denials) {
    it(`denies ${what} with status ${grpcCode}, HTTP ${envoyStatus} and code ${code} (a successful RPC)`, async () => {
      const res = await check(client, await make());
      expect(res.status.code).to.equal(grpcCode);
      expect(res.denied_response.status.code).to.equal(envoyStatus);
      const headers = headerMap(res.denied_response.headers);
      expect(headers['content-type']).to.equal('application/json');
      if (challenge) expect(headers['www-authenticate']).to.match(challenge);
      else expect(headers['www-authenticate']).to.equal(undefined);
      expect(JSON.parse(res.denied_response.body).code).to.equal(code);
    });
  }

  it('keeps token content echoed in error_description to RFC 6750\'s characters (no " or \\) on both doors', async () => {
    // RFC 6750 §3: error_description holds only %x20-21 / %x23-5B / %x5D-7E, so not even a quoted-pair.
    const token = await emu.mint({ kind: 'user', audience: 'x"y\\z<>' });
    tokens.push(token);
    const expected = `Bearer error="invalid_token", error_description="The audience 'x?y?z<>' is invalid"`;
    const res = await check(client, envoyCheckRequest({ headers: { authorization: `Bearer ${token}` } }));
    expect(JSON.parse(res.denied_response.body).code).to.equal('token_audience_invalid');
    expect(headerMap(res.denied_response.headers)['www-authenticate']).to.equal(expected);
    const http = await call(`${sidecar.url}/Validate`, { token });
    expect(http.status).to.equal(401);
    expect(http.headers.get('www-authenticate')).to.equal(expected);
  });

  it('leaves out a claim header and identity metadata whose text has no UTF-8 form (a lone surrogate), so the allow is valid UTF-8 Envoy can read', async () => {
    // JSON's "\ud800" parses to a lone surrogate, which protobufjs writes as ED A0 80: invalid UTF-8
    // in a proto3 string. Envoy refuses such an answer, an RPC error that failure_mode_allow turns
    // into an allow (and status_on_error into a deny the route never asked for).
    const token = await user({ oid: '\ud800', azp: 'a\udc00b' });
    const req = envoyCheckRequest({ headers: { authorization: `Bearer ${token}`, 'x-entra-oid': 'spoofed' } });
    const raw = rawCheckClient(`127.0.0.1:${sidecar.listening.extAuthz!.port}`);
    try {
      // The second Check is answered from the allow memo (a cached caller).
      for (const attempt of ['first', 'second']) {
        const { err, res, bytes } = await raw.send(loadExtAuthzProtos().authorizationService.Check.requestSerialize(req));
        expect(err, attempt).to.equal(undefined);
        expect(res!.status?.code ?? 0, attempt).to.equal(0);
        expect(encodedSurrogateAt(bytes!), `${attempt}: UTF-8-encoded surrogate in the answer`).to.equal(-1);
        expect(headerMap(res!.ok_response.headers), attempt).to.not.have.property('x-entra-oid');
        expect(res!.ok_response.headers_to_remove, attempt).to.include('x-entra-oid');
        expect(applyOkResponse((req.attributes as any).request.http.headers, res!)['x-entra-oid'], attempt).to.equal(undefined);
        expect(Object.keys(res!.dynamic_metadata.fields).sort(), attempt).to.deep.equal(['entra.tid']);
      }
    } finally {
      raw.close();
    }
  });

  it('denies bytes that are no CheckRequest (not protobuf) in band with request_invalid, never with a failed RPC', async () => {
    // A failed RPC is an error to Envoy, and failure_mode_allow turns an error into an allow.
    const raw = rawCheckClient(`127.0.0.1:${sidecar.listening.extAuthz!.port}`);
    try {
      const garbage = [
        Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), // wire type 7 at once
        Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01]), // attributes claims 4 GiB, 1 byte follows
        Buffer.from([0x0a, 0x05, 0x22, 0x10, 0x12]), // request → http, cut short
        Buffer.from([0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), // an 11-byte varint
      ];
      for (const bytes of garbage) {
        const { err, res } = await raw.send(bytes);
        expect(err, `${bytes.toString('hex')}: RPC error`).to.equal(undefined);
        expect(res!.status.code, bytes.toString('hex')).to.equal(3);
        expect(res!.denied_response.status.code).to.equal('Forbidden');
        expect(JSON.parse(res!.denied_response.body)).to.deep.equal({ code: 'request_invalid', message: 'The CheckRequest is not a valid protobuf message.' });
      }
    } finally {
      raw.close();
    }
  });

  describe('a route whose downstream API acts on behalf of the caller (On-Behalf-Of) but that may have no caller token', () => {
    it('denies a validate-none route whose downstream API is On-Behalf-Of as misconfigured (500), not with a 401 that sends the client to sign in', async () => {
      // No token is ever taken on such a route, so no sign-in could satisfy it: the route is wrong.
      const before = emu.counters().token;
      const lines = sidecar.lines.length;
      const res = await check(client, envoyCheckRequest({ headers: { authorization: `Bearer ${await user()}` }, contextExtensions: { validate: 'none', downstream_api: 'orders' } }));
      expect(res.status.code).to.equal(13);
      expect(res.denied_response.status.code).to.equal('InternalServerError');
      const headers = headerMap(res.denied_response.headers);
      expect(headers['www-authenticate']).to.equal(undefined);
      expect(JSON.parse(res.denied_response.body)).to.deep.equal({ code: 'misconfigured', message: 'An unexpected error occurred.' });
      expect(emu.counters().token, 'no token request').to.equal(before);
      // The log line reaches our pipe some time after the answer: wait for it, however loaded the machine.
      expect(await waitForLine(sidecar, /"code":"misconfigured".*validate none.*orders|orders.*validate none.*"code":"misconfigured"/, 5_000, lines), 'misconfigured log line').to.equal(true);
    });

    it('asks for a token (401 credential_missing, bare Bearer challenge) on an optional On-Behalf-Of route called without one, and allows it with one', async () => {
      const ext = { validate: 'optional', downstream_api: 'orders' };
      const res = await check(client, envoyCheckRequest({ contextExtensions: ext }));
      expect(res.status.code).to.equal(16);
      expect(res.denied_response.status.code).to.equal('Unauthorized');
      expect(headerMap(res.denied_response.headers)['www-authenticate']).to.equal('Bearer');
      expect(JSON.parse(res.denied_response.body)).to.deep.equal({ code: 'credential_missing', message: 'No bearer token was sent.' });
      const withToken = await check(client, envoyCheckRequest({ headers: { authorization: `Bearer ${await user()}` }, contextExtensions: ext }));
      expect(withToken.status?.code ?? 0).to.equal(0);
      tokens.push(headerMap(withToken.ok_response.headers).authorization.slice(7));
    });
  });

  describe('a CheckRequest over Sidecar:ExtAuthz:MaxReceiveMessageBytes (1 MiB by default), denied in band', () => {
    /** A request with a valid token whose http attributes get `extra` (Envoy's with_request_body fields). */
    const withHttp = async (extra: Record<string, unknown>, headers: Record<string, string> = {}) => {
      const req = envoyCheckRequest({ headers: { authorization: `Bearer ${await user()}`, ...headers } });
      Object.assign((req.attributes as any).request.http, extra);
      return req;
    };
    const expectDeny = (res: Record<string, any>, envoyStatus: string, code: string) => {
      expect(res.status.code).to.equal(3);
      expect(res.denied_response.status.code).to.equal(envoyStatus);
      expect(JSON.parse(res.denied_response.body).code).to.equal(code);
    };

    it('answers 413 request_body_too_large when a forwarded body (raw_body or body) is what overflows', async () => {
      const body = Buffer.alloc(1.5 * 1024 * 1024, 0x61);
      expectDeny(await check(client, await withHttp({ raw_body: body, size: String(body.length) })), 'PayloadTooLarge', 'request_body_too_large');
      expectDeny(await check(client, await withHttp({ body: body.toString('latin1'), size: String(body.length) })), 'PayloadTooLarge', 'request_body_too_large');
    });

    it('still answers 431 request_headers_too_large when the headers overflow, a small body or not', async () => {
      const headers: Record<string, string> = {};
      for (let i = 0; i < 200; i++) headers[`x-pad-${i}`] = 'p'.repeat(8 * 1024);
      expectDeny(await check(client, await withHttp({}, headers)), 'RequestHeaderFieldsTooLarge', 'request_headers_too_large');
      expectDeny(await check(client, await withHttp({ raw_body: Buffer.from('{"small":true}') }, headers)), 'RequestHeaderFieldsTooLarge', 'request_headers_too_large');
    });

    it('checks a request whose body fits as usual', async () => {
      const res = await check(client, await withHttp({ raw_body: Buffer.alloc(512 * 1024, 0x61) }));
      expect(res.status?.code ?? 0).to.equal(0);
    });
  });

  it('denies with 401 and Entra\'s claims challenge when the user has not satisfied an authentication context the API asks for', async () => {
    const request = async () => envoyCheckRequest({ headers: { authorization: `Bearer ${await user()}` }, contextExtensions: { downstream_api: 'stepUp' } });
    const granted = await check(client, await request());
    expect(granted.status.code).to.equal(0);
    emu.conditionalAccess({ unsatisfiedAcrs: ['c1'] });
    try {
      const res = await check(client, await request());
      expect(res.status.code).to.equal(16);
      expect(res.denied_response.status.code).to.equal('Unauthorized');
      const headers = headerMap(res.denied_response.headers);
      expect(headers['www-authenticate']).to.equal(`Bearer error="insufficient_claims", claims="${Buffer.from(STEP_UP_CLAIMS).toString('base64')}"`);
      expect(JSON.parse(res.denied_response.body)).to.deep.equal({ code: 'acquisition_ui_required', message: 'User interaction is required.' });
    } finally {
      emu.conditionalAccess();
    }
  });

  it('denies with 503 before Envoy\'s deadline when Entra is slow, never with a gRPC error', async () => {
    // The sidecar answers 10 % of the time left before the deadline, at most 250 ms (src/extauthz/check.ts):
    // with this deadline the margin is the full 250 ms, and Entra (10 s) answers far beyond it.
    const deadlineMs = 3_000;
    const maxMarginMs = 250;
    const token = await user();
    const OBO = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
    const oboSent = () => emu.requests().filter((q) => q.form.grant_type === OBO).length;
    const oboBefore = oboSent();
    // Only this Check's OBO request is held; the fault is spent by it and cleared whatever happens.
    emu.fault({ route: 'token', grant_type: OBO, delayMs: 10_000, count: 1 });
    try {
      const t0 = Date.now();
      const res = await check(client, envoyCheckRequest({ headers: { authorization: `Bearer ${token}` }, contextExtensions: { downstream_api: 'orders' } }), deadlineMs);
      const elapsed = Date.now() - t0;
      expect(elapsed, 'answered before the deadline').to.be.lessThan(deadlineMs);
      expect(elapsed, 'not before the deadline minus the margin').to.be.at.least(deadlineMs - maxMarginMs - 50);
      expect(res.status.code).to.equal(14);
      expect(res.denied_response.status.code).to.equal('ServiceUnavailable');
      expect(JSON.parse(res.denied_response.body).code).to.equal('dependency_timeout');
      expect(oboSent() - oboBefore, 'the OBO request reached the (slow) token endpoint').to.equal(1);
    } finally {
      emu.clearFaults();
    }
  });

  it('denies with 503 when Entra is down', async () => {
    emu.fault({ route: 'token', status: 503, error: 'temporarily_unavailable', aadsts: 90033, count: 3 });
    const res = await check(client, envoyCheckRequest({ headers: { authorization: `Bearer ${await user()}` }, contextExtensions: { downstream_api: 'orders' } }));
    expect(res.status.code).to.equal(14);
    expect(res.denied_response.status.code).to.equal('ServiceUnavailable');
    emu.clearFaults();
  });

  it("keeps Entra's error description (app id, tenant, trace ids) out of an Envoy deny, which any client reads; the loopback HTTP API shows it as Microsoft's does", async () => {
    emu.fault({ route: 'token', error: 'invalid_client', aadsts: 7000215, count: 1 });
    const res = await check(client, envoyCheckRequest({ headers: { authorization: `Bearer ${await user()}` }, contextExtensions: { downstream_api: 'orders' } }));
    expect(res.status.code).to.equal(7);
    expect(res.denied_response.status.code).to.equal('Forbidden');
    expect(JSON.parse(res.denied_response.body)).to.deep.equal({ code: 'acquisition_rejected', message: 'Entra ID refused the token request.' });
    expect(res.status.message).to.equal('Entra ID refused the token request.');
    emu.fault({ route: 'token', error: 'invalid_client', aadsts: 7000215, count: 1 });
    const http = await call(`${sidecar.url}/AuthorizationHeader/orders`, { token: await user() });
    expect(http.status).to.equal(401);
    expect(http.json().code).to.equal('acquisition_rejected');
    expect(http.json().detail).to.contain('AADSTS7000215');
    // An upstream error that echoes something token-shaped is redacted in the answer and in every log line.
    emu.fault({ route: 'token', error: 'eyJhbGciOiJub25lIn0.eyJTRUNSRVQiOiJ4In0.ECHOEDSIGNATURE123', count: 2 });
    const echoed = await call(`${sidecar.url}/AuthorizationHeader/orders`, { token: await user() });
    expect(echoed.status).to.equal(401);
    await check(client, envoyCheckRequest({ headers: { authorization: `Bearer ${await user()}` }, contextExtensions: { downstream_api: 'orders' } }));
    await new Promise((r) => setTimeout(r, 200));
    expect(echoed.text).not.to.contain('ECHOEDSIGNATURE123');
    expect(sidecar.lines.filter((l) => l.includes('ECHOEDSIGNATURE123'))).to.deep.equal([]);
    expect(sidecar.lines.some((l) => l.includes('"code":"acquisition_rejected"') && l.includes('[redacted]'))).to.equal(true);
    emu.clearFaults();
  });

  it('counts allows and denies in /metrics', async () => {
    const m = await call(`http://127.0.0.1:${sidecar.listening.management!.port}/metrics`);
    expect(m.status).to.equal(200);
    expect(m.text).to.match(/entra_sidecar_ext_authz_checks_total\{decision="allow",reason="ok"\} [1-9]/);
    expect(m.text).to.match(/entra_sidecar_ext_authz_checks_total\{decision="deny",reason="credential_missing"\} 1/);
    // Outbound calls, acquisitions and key loads are counted too, with bounded labels only.
    expect(m.text).to.match(/entra_sidecar_outbound_requests_total\{target="token",status_class="2xx"\} [1-9]/);
    expect(m.text).to.match(/entra_sidecar_outbound_requests_total\{target="jwks",status_class="2xx"\} [1-9]/);
    expect(m.text).to.match(/entra_sidecar_token_acquisitions_total\{flow="on_behalf_of",outcome="ok"\} [1-9]/);
    expect(m.text).to.match(/entra_sidecar_signing_keys_refreshes_total\{outcome="ok"\} [1-9]/);
    expect(m.text).to.match(/entra_sidecar_token_cache_hits_total [1-9]/);
    expect(m.text).to.match(/entra_sidecar_token_validation_failures_total\{reason="token_expired"\} 1/);
    // Node's process metrics, without the GC histogram unless Sidecar:Management:GcMetrics asks for it.
    expect(m.text).to.match(/^nodejs_eventloop_lag_p99_seconds \d/m);
    expect(m.text).to.not.match(/nodejs_gc_duration_seconds/);
  });
});

describe('Sidecar:ExtAuthz:AllowCorsPreflight (built sidecar)', function () {
  this.timeout(30_000);
  const env = withEmulatorAndSidecars();
  // Anyone can send these headers: an attacker is not a browser.
  const preflight = () =>
    envoyCheckRequest({ method: 'OPTIONS', headers: { origin: 'https://spa.example.test', 'access-control-request-method': 'DELETE' }, contextExtensions: { validate: 'required' } });
  const withClient = async (extra: Record<string, string>, run: (client: AuthorizationClient) => Promise<void>) => {
    const s = await env.start(extra);
    const client = createAuthorizationClient(`127.0.0.1:${s.listening.extAuthz!.port}`);
    try {
      await run(client);
    } finally {
      client.close();
    }
  };

  it('denies by default an OPTIONS with Origin and Access-Control-Request-Method and no token on a validate=required route', async () => {
    await withClient({}, async (client) => {
      const res = await check(client, preflight());
      expect(res.status.code).to.equal(16);
      expect(res.denied_response.status.code).to.equal('Unauthorized');
      expect(JSON.parse(res.denied_response.body).code).to.equal('credential_missing');
    });
  });

  it('allows it without a token when set to true', async () => {
    await withClient({ Sidecar__ExtAuthz__AllowCorsPreflight: 'true' }, async (client) => {
      const res = await check(client, preflight());
      expect(res.status?.code ?? 0).to.equal(0);
      expect(res.http_response).to.equal('ok_response');
    });
  });
});

describe('Sidecar:Management:GcMetrics (built sidecar)', function () {
  this.timeout(30_000);
  it('adds nodejs_gc_duration_seconds to /metrics', async () => {
    const emu = await startEmulator();
    const s = await startSidecar(sidecarEnv(emu, { Sidecar__Management__GcMetrics: 'true' }));
    try {
      const m = await call(`http://127.0.0.1:${s.listening.management!.port}/metrics`);
      expect(m.status).to.equal(200);
      expect(m.text).to.match(/^# TYPE nodejs_gc_duration_seconds histogram$/m);
      expect(m.text).to.match(/^nodejs_eventloop_lag_p99_seconds \d/m);
    } finally {
      await s.stop();
      await emu.close();
    }
  });
});

describe('ext_authz health before signing keys load (built sidecar)', function () {
  this.timeout(30_000);
  it('is NOT_SERVING for the Authorization service (and /readyz 503) until keys load, then SERVING', async () => {
    const emu = await startEmulator();
    emu.fault({ route: 'metadata', sticky: true, status: 503 });
    const s = await startSidecar(sidecarEnv(emu));
    try {
      const addr = `127.0.0.1:${s.listening.extAuthz!.port}`;
      const mgmt = `http://127.0.0.1:${s.listening.management!.port}`;
      expect(await healthCheck(addr, 'envoy.service.auth.v3.Authorization')).to.equal('NOT_SERVING');
      const notReady = await call(`${mgmt}/readyz`);
      expect(notReady.status).to.equal(503);
      expect(notReady.json().reasons).to.include('signing_keys_not_loaded');
      emu.clearFaults();
      const deadline = Date.now() + 15_000;
      let status = '';
      while (Date.now() < deadline && status !== 'SERVING') {
        await new Promise((r) => setTimeout(r, 200));
        status = await healthCheck(addr, 'envoy.service.auth.v3.Authorization');
      }
      expect(status).to.equal('SERVING');
      expect((await call(`${mgmt}/readyz`)).status).to.equal(200);
    } finally {
      await s.stop();
      await emu.close();
    }
  });
});
