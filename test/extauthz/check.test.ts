/**
 * ext_authz Check over the real grpc-js server with fake validator and acquirer: Envoy-shaped
 * requests in, complete CheckResponses out. Every deny must be a successful RPC (reference §1.3).
 */
import { expect } from 'chai';
import { ERROR_TABLE, SidecarError } from '../../src/errors.js';
import { loadExtAuthzProtos } from '../../src/extauthz/protos.js';
import {
  applyOkResponse,
  check,
  CLIENT_APP,
  envoyCheckRequest,
  headerMap,
  startHarness,
  TENANT,
  USER_OID,
  type Harness,
} from './fixtures.js';

describe('ext_authz Check', function () {
  let h: Harness;
  /** Sidecar:ExtAuthz:AllowCorsPreflight is off by default; the preflight tests turn it on here. */
  let cors: Harness;
  let userToken: string;

  before(async function () {
    h = await startHarness();
    cors = await startHarness({ allowCorsPreflight: true });
  });
  after(async function () {
    await h.close();
    await cors.close();
  });
  beforeEach(function () {
    h.validator.tokens.clear();
    h.validator.delayMs = 0;
    h.acquirer.requests.length = 0;
    h.acquirer.hang = false;
    h.acquirer.error = undefined;
    h.lines.length = 0;
    userToken = h.validator.add('user.token.sig', { roles: ['Reader', 'Writer'], name: 'Ada Lovelace' });
    cors.acquirer.requests.length = 0;
    cors.validator.add(userToken, { roles: ['Reader', 'Writer'], name: 'Ada Lovelace' });
  });

  function expectDeny(res: Record<string, any>, grpcCode: number, envoyStatus: string, code: string) {
    expect(res.status.code, 'status.code').to.equal(grpcCode);
    expect(res.http_response).to.equal('denied_response');
    expect(res.ok_response).to.equal(undefined);
    expect(res.denied_response.status.code).to.equal(envoyStatus);
    const headers = headerMap(res.denied_response.headers);
    expect(headers['content-type']).to.equal('application/json');
    for (const o of res.denied_response.headers) expect(o.append_action).to.equal('OVERWRITE_IF_EXISTS_OR_ADD');
    const body = JSON.parse(res.denied_response.body);
    expect(body.code).to.equal(code);
    expect(body.message).to.be.a('string').and.not.equal('');
    return { headers, body };
  }

  describe('allow', function () {
    it('allows a valid bearer token and sets claim headers with OVERWRITE_IF_EXISTS_OR_ADD', async function () {
      const res = await check(h.client, envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` } }));
      expect(res.status.code).to.equal(0);
      expect(res.http_response).to.equal('ok_response');
      const headers = headerMap(res.ok_response.headers);
      expect(headers).to.deep.equal({ 'x-entra-oid': USER_OID, 'x-entra-roles': 'Reader Writer', 'x-entra-name': 'Ada Lovelace' });
      for (const o of res.ok_response.headers) expect(o.append_action).to.equal('OVERWRITE_IF_EXISTS_OR_ADD');
      expect(res.ok_response.headers_to_remove ?? []).to.deep.equal([]);
      expect(res.dynamic_metadata.fields['entra.tid'].stringValue).to.equal(TENANT);
      expect(res.dynamic_metadata.fields['entra.oid'].stringValue).to.equal(USER_OID);
      expect(res.dynamic_metadata.fields['entra.azp'].stringValue).to.equal(CLIENT_APP);
      expect(JSON.stringify(res.dynamic_metadata)).not.to.contain(userToken);
      expect(h.acquirer.requests).to.have.length(0);
    });

    it('reads the raw header_map form (encode_raw_headers) with mixed-case names and duplicate headers', async function () {
      const res = await check(
        h.client,
        envoyCheckRequest({ raw: true, headers: { Authorization: `Bearer ${userToken}`, 'X-Forwarded-For': '10.0.0.1' } }),
      );
      expect(res.status.code).to.equal(0);
      expect(headerMap(res.ok_response.headers)['x-entra-oid']).to.equal(USER_OID);

      // Two Authorization headers are joined with "," like Envoy does; that is not one bearer token.
      const req = envoyCheckRequest({ raw: true, headers: { authorization: `Bearer ${userToken}` } }) as any;
      req.attributes.request.http.header_map.headers.push({ key: 'Authorization', raw_value: Buffer.from(`Bearer ${userToken}`) });
      const dup = await check(h.client, req);
      expectDeny(dup, 16, 'Unauthorized', 'credential_malformed');
    });

    it('injects the downstream token for downstream_api, replacing the caller\'s Authorization', async function () {
      const res = await check(
        h.client,
        envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` }, contextExtensions: { downstream_api: 'graph' } }),
      );
      expect(res.status.code).to.equal(0);
      const auth = res.ok_response.headers.find((o: any) => o.header.key === 'authorization');
      expect(auth).to.deep.equal({ header: { key: 'authorization', value: `Bearer downstream.graph.${USER_OID}` }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' });
      expect(h.acquirer.requests).to.have.length(1);
      const acq = h.acquirer.requests[0];
      expect(acq.options.apiName).to.equal('graph');
      expect(acq.user?.raw).to.equal(userToken);
      expect(acq.agent).to.equal(undefined);
      expect(acq.correlationId).to.equal('3c6e1b7e-3f2a-4a4e-9b51-6f7d1a2b9c0d');
      expect(acq.signal).to.be.instanceOf(AbortSignal);
      // What the upstream finally sees: our token, not the caller's.
      const upstream = applyOkResponse({ authorization: `Bearer ${userToken}` }, res);
      expect(upstream.authorization).to.equal(`Bearer downstream.graph.${USER_OID}`);
      expect(h.lines.join('\n')).not.to.contain(userToken);
      expect(h.lines.join('\n')).not.to.contain('downstream.graph');
    });

    it('injects into inject_header with the scheme the acquirer returned', async function () {
      h.acquirer.scheme = 'PoP';
      try {
        const res = await check(
          h.client,
          envoyCheckRequest({
            headers: { authorization: `Bearer ${userToken}` },
            contextExtensions: { downstream_api: 'graph', inject_header: 'X-Downstream-Authorization', strip_inbound_authorization: 'true' },
          }),
        );
        expect(headerMap(res.ok_response.headers)['x-downstream-authorization']).to.equal(`PoP downstream.graph.${USER_OID}`);
        expect(res.ok_response.headers_to_remove).to.include('authorization');
      } finally {
        h.acquirer.scheme = 'Bearer';
      }
    });

    it('egress: validate=none with an app-token API injects a token when no inbound token was sent', async function () {
      const validatorCalls = h.validator.calls;
      const res = await check(h.client, envoyCheckRequest({ path: '/orders', contextExtensions: { validate: 'none', downstream_api: 'partner-api' } }));
      expect(res.status.code).to.equal(0);
      expect(headerMap(res.ok_response.headers).authorization).to.equal('Bearer downstream.partner-api.app');
      expect(h.acquirer.requests[0].user).to.equal(undefined);
      expect(h.acquirer.requests[0].options.requestAppToken).to.equal(true);
      expect(h.validator.calls).to.equal(validatorCalls);
      expect(res.dynamic_metadata).to.equal(undefined);
    });

    it('keeps route policies apart even when their context_extensions would join to the same text', async function () {
      // A route with validate=none, then one whose single value spells the first route's two entries.
      const open = await check(h.client, envoyCheckRequest({ path: '/orders', contextExtensions: { downstream_api: 'partner-api', validate: 'none' } }));
      expect(open.status.code).to.equal(0);
      const tricky = await check(h.client, envoyCheckRequest({ path: '/orders', contextExtensions: { downstream_api: 'partner-api\u0000validate\u0000none' } }));
      // Its own policy: validation required (no token sent → deny), not the other route's validate=none.
      expectDeny(tricky, 16, 'Unauthorized', 'credential_missing');
    });

    it('validate=none routes do not inherit the default required scopes and roles (public and egress routes keep working)', async function () {
      const scoped = await startHarness({ requiredScopes: ['access_as_user'], requiredRoles: ['Reader'] });
      try {
        const open = await check(scoped.client, envoyCheckRequest({ path: '/public', contextExtensions: { validate: 'none' } }));
        expect(open.status.code).to.equal(0);
        const egress = await check(scoped.client, envoyCheckRequest({ path: '/orders', contextExtensions: { validate: 'none', downstream_api: 'partner-api' } }));
        expect(headerMap(egress.ok_response.headers).authorization).to.equal('Bearer downstream.partner-api.app');
        // Routes that validate still get the defaults: no token is a 401, not an anonymous allow.
        expectDeny(await check(scoped.client, envoyCheckRequest({ contextExtensions: { validate: 'optional' } })), 16, 'Unauthorized', 'credential_missing');
        // Rules a validate=none route names itself are still a configuration error.
        expectDeny(await check(scoped.client, envoyCheckRequest({ contextExtensions: { validate: 'none', required_roles: 'Admin' } })), 13, 'InternalServerError', 'misconfigured');
      } finally {
        await scoped.close();
      }
    });

    it('validate=optional lets anonymous requests through but never an invalid token', async function () {
      const anon = await check(h.client, envoyCheckRequest({ contextExtensions: { validate: 'optional' } }));
      expect(anon.status.code).to.equal(0);
      const bad = await check(h.client, envoyCheckRequest({ headers: { authorization: 'Bearer not.a.token' }, contextExtensions: { validate: 'optional' } }));
      expectDeny(bad, 16, 'Unauthorized', 'token_signature_invalid');
    });

    it('strips identity headers a client tried to spoof, on every route', async function () {
      const spoofed = { 'x-entra-oid': 'attacker', 'x-entra-roles': 'Admin', 'x-entra-name': 'Mallory' };
      // Unauthenticated route: nothing to set, so every claim header is removed.
      const open = await check(h.client, envoyCheckRequest({ headers: spoofed, contextExtensions: { validate: 'none' } }));
      expect(open.status.code).to.equal(0);
      expect(open.ok_response.headers_to_remove).to.have.members(['x-entra-oid', 'x-entra-roles', 'x-entra-name']);
      expect(applyOkResponse(spoofed, open)).to.deep.equal({});

      // Authenticated route with a token lacking `roles` and `name`: oid overwritten, the rest removed.
      const noRoles = h.validator.add('noroles.token.sig', { roles: undefined, name: undefined });
      const auth = await check(h.client, envoyCheckRequest({ headers: { ...spoofed, authorization: `Bearer ${noRoles}` } }));
      const upstream = applyOkResponse({ ...spoofed }, auth);
      expect(upstream).to.deep.equal({ 'x-entra-oid': USER_OID });
    });

    it('omits (and removes) a claim header whose value is not a valid header value, and logs it', async function () {
      const t = h.validator.add('crlf.token.sig', { name: 'evil\r\nx-injected: 1' });
      const res = await check(h.client, envoyCheckRequest({ headers: { authorization: `Bearer ${t}` } }));
      expect(res.status.code).to.equal(0);
      expect(headerMap(res.ok_response.headers)).not.to.have.property('x-entra-name');
      expect(res.ok_response.headers_to_remove).to.include('x-entra-name');
      expect(h.lines.some((l) => l.includes('x-entra-name') && l.includes('"level":"warn"'))).to.equal(true);
    });

    it('omits a claim header with any control character Envoy refuses (not only CR, LF and NUL), but keeps a tab', async function () {
      // Envoy checks every value it is told to set (RFC 9110 field-value); with validate_mutations
      // one bad value turns the allow into a 500 for that user on every request.
      for (const name of ['esc\x1b[31m', 'del\x7f', 'soh\x01', 'vt\x0b', 'us\x1f']) {
        const t = h.validator.add(`ctl${name.charCodeAt(name.length - 1)}.token.sig`, { name });
        const res = await check(h.client, envoyCheckRequest({ headers: { authorization: `Bearer ${t}` } }));
        expect(res.status.code, JSON.stringify(name)).to.equal(0);
        expect(headerMap(res.ok_response.headers), JSON.stringify(name)).not.to.have.property('x-entra-name');
        expect(res.ok_response.headers_to_remove, JSON.stringify(name)).to.include('x-entra-name');
      }
      const tab = h.validator.add('tab.token.sig', { name: 'Ada\tLovelace' });
      const res = await check(h.client, envoyCheckRequest({ headers: { authorization: `Bearer ${tab}` } }));
      expect(headerMap(res.ok_response.headers)['x-entra-name']).to.equal('Ada\tLovelace');
    });

    it('cuts a long x-request-id and path in its log lines', async function () {
      const id = 'r'.repeat(20_000);
      const res = await check(h.client, envoyCheckRequest({ path: `/${'p'.repeat(20_000)}`, headers: { authorization: 'Bearer forged.token.sig', 'x-request-id': id } }));
      expectDeny(res, 16, 'Unauthorized', 'token_signature_invalid');
      const line = h.lines.find((l) => l.includes('ext_authz deny'));
      expect(line).to.be.a('string');
      expect(line!.length).to.be.below(2_000);
      expect(line).to.contain('r'.repeat(128)).and.not.contain('r'.repeat(129));
    });

    it('removes an access_token query parameter before the request goes upstream', async function () {
      const res = await check(h.client, envoyCheckRequest({ path: '/api?access_token=leaked&x=1', headers: { authorization: `Bearer ${userToken}` } }));
      expect(res.status.code).to.equal(0);
      expect(res.ok_response.query_parameters_to_remove).to.deep.equal(['access_token']);
      const clean = await check(h.client, envoyCheckRequest({ path: '/api?x=1', headers: { authorization: `Bearer ${userToken}` } }));
      expect(clean.ok_response.query_parameters_to_remove ?? []).to.deep.equal([]);
    });

    it('lets a CORS preflight through without a token when AllowCorsPreflight is on, and denies it when off (the default)', async function () {
      const off = await check(h.client, envoyCheckRequest({ method: 'OPTIONS', headers: { origin: 'https://spa.example.test', 'access-control-request-method': 'POST' } }));
      expectDeny(off, 16, 'Unauthorized', 'credential_missing');
      const res = await check(
        cors.client,
        envoyCheckRequest({ method: 'OPTIONS', headers: { origin: 'https://spa.example.test', 'access-control-request-method': 'POST' } }),
      );
      expect(res.status.code).to.equal(0);
      expect(res.ok_response.headers_to_remove).to.have.members(['x-entra-oid', 'x-entra-roles', 'x-entra-name']);
      // A plain OPTIONS without the preflight headers still needs a token.
      const plain = await check(cors.client, envoyCheckRequest({ method: 'OPTIONS' }));
      expectDeny(plain, 16, 'Unauthorized', 'credential_missing');
    });

    it('a CORS preflight on a route that injects a token removes a client-sent copy of that header', async function () {
      const preflight = { origin: 'https://spa.example.test', 'access-control-request-method': 'POST', 'x-graph-authorization': 'Bearer spoofed' };
      const res = await check(
        cors.client,
        envoyCheckRequest({
          method: 'OPTIONS',
          headers: preflight,
          contextExtensions: { downstream_api: 'graph', inject_header: 'x-graph-authorization', required_scopes: 'Files.Read' },
        }),
      );
      expect(res.status.code).to.equal(0);
      expect(res.ok_response.headers_to_remove).to.have.members(['x-entra-oid', 'x-entra-roles', 'x-entra-name', 'x-graph-authorization']);
      expect(applyOkResponse({ ...preflight }, res)).not.to.have.property('x-graph-authorization');
      expect(cors.acquirer.requests).to.have.length(0);
    });

    it('an OPTIONS with preflight headers and an Authorization header is checked like any request', async function () {
      // Browsers never send credentials on a preflight, so this is not one.
      const preflight = { origin: 'https://spa.example.test', 'access-control-request-method': 'POST' };
      const forged = await check(cors.client, envoyCheckRequest({ method: 'OPTIONS', headers: { ...preflight, authorization: 'Bearer forged.token.sig' } }));
      expectDeny(forged, 16, 'Unauthorized', 'token_signature_invalid');
      const valid = await check(
        cors.client,
        envoyCheckRequest({ method: 'OPTIONS', headers: { ...preflight, authorization: `Bearer ${userToken}` }, contextExtensions: { strip_inbound_authorization: 'true' } }),
      );
      expect(valid.status.code).to.equal(0);
      expect(valid.ok_response.headers_to_remove).to.include('authorization');
      expect(headerMap(valid.ok_response.headers)['x-entra-oid']).to.equal(USER_OID);
    });

    it('accepts required_scopes (any-of) and required_roles, and all-of with require_all', async function () {
      const anyOf = await check(
        h.client,
        envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` }, contextExtensions: { required_scopes: 'Files.Read access_as_user' } }),
      );
      expect(anyOf.status.code).to.equal(0);
      const roles = await check(
        h.client,
        envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` }, contextExtensions: { required_roles: 'Writer' } }),
      );
      expect(roles.status.code).to.equal(0);
      const allOf = await check(
        h.client,
        envoyCheckRequest({
          headers: { authorization: `Bearer ${userToken}` },
          contextExtensions: { required_scopes: 'access_as_user', required_roles: 'Reader Writer', require_all: 'true' },
        }),
      );
      expect(allOf.status.code).to.equal(0);
    });
  });

  describe('deny', function () {
    it('no token → 401 with a bare Bearer challenge (RFC 6750 §3.1: no error code)', async function () {
      const res = await check(h.client, envoyCheckRequest());
      const { headers } = expectDeny(res, 16, 'Unauthorized', 'credential_missing');
      expect(headers['www-authenticate']).to.equal('Bearer');
      expect(res.status.message).to.equal(ERROR_TABLE.credential_missing.message);
    });

    it('an invalid token → 401 invalid_token with a description', async function () {
      const res = await check(h.client, envoyCheckRequest({ headers: { authorization: 'Bearer forged.token.sig' } }));
      const { headers } = expectDeny(res, 16, 'Unauthorized', 'token_signature_invalid');
      expect(headers['www-authenticate']).to.equal('Bearer error="invalid_token", error_description="The signature is invalid."');
      expect(h.lines.join('\n')).not.to.contain('forged.token.sig');
    });

    it('a PoP credential on a required route → 401 credential_missing', async function () {
      const res = await check(h.client, envoyCheckRequest({ headers: { authorization: `PoP ${userToken}` } }));
      expectDeny(res, 16, 'Unauthorized', 'credential_missing');
    });

    it('a missing scope → 403 insufficient_scope naming the required scopes', async function () {
      const res = await check(
        h.client,
        envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` }, contextExtensions: { required_scopes: 'Files.ReadWrite Mail.Send' } }),
      );
      const { headers } = expectDeny(res, 7, 'Forbidden', 'insufficient_scope');
      expect(headers['www-authenticate']).to.equal('Bearer error="insufficient_scope", scope="Files.ReadWrite Mail.Send"');
    });

    it('require_all=true denies when one of several roles is missing; roles are never offered as scopes', async function () {
      const res = await check(
        h.client,
        envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` }, contextExtensions: { required_roles: 'Reader Admin', require_all: 'true' } }),
      );
      const { headers, body } = expectDeny(res, 7, 'Forbidden', 'insufficient_scope');
      // A client cannot request an app role, so the challenge names no scope= for it.
      expect(headers['www-authenticate']).to.equal('Bearer error="insufficient_scope"');
      expect(body.message).to.be.a('string');
      const mixed = await check(
        h.client,
        envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` }, contextExtensions: { required_scopes: 'Mail.Send', required_roles: 'Admin', require_all: 'true' } }),
      );
      expect(expectDeny(mixed, 7, 'Forbidden', 'insufficient_scope').headers['www-authenticate']).to.equal('Bearer error="insufficient_scope", scope="Mail.Send"');
    });

    it('an anonymous caller on an optional route whose API needs a user token → 401 credential_missing with a bare Bearer challenge', async function () {
      // The client can authenticate, and a token is all the route lacks; "invalid_token" would blame
      // a token never sent, and no token request is made that could only fail.
      const asked = h.acquirer.requests.length;
      const res = await check(h.client, envoyCheckRequest({ contextExtensions: { validate: 'optional', downstream_api: 'graph' } }));
      const { headers } = expectDeny(res, 16, 'Unauthorized', 'credential_missing');
      expect(headers['www-authenticate']).to.equal('Bearer');
      expect(h.acquirer.requests.length).to.equal(asked);
    });

    it('answers at once with an internal deny when rendering a failure itself throws (no wait for the deadline)', async function () {
      // An error whose message cannot even be read: logging its cause throws inside the catch.
      h.acquirer.error = Object.create(Error.prototype, {
        message: {
          get() {
            throw new Error('unreadable');
          },
        },
      }) as Error;
      const started = Date.now();
      const res = await check(h.client, envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` }, contextExtensions: { downstream_api: 'graph' } }), 5_000);
      expectDeny(res, 13, 'InternalServerError', 'internal');
      expect(Date.now() - started).to.be.below(2_000);
    });

    it('a conditional-access challenge → 401 insufficient_claims carrying the claims', async function () {
      const claims = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}';
      h.acquirer.error = new SidecarError('acquisition_ui_required', undefined, { claims });
      const res = await check(h.client, envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` }, contextExtensions: { downstream_api: 'graph' } }));
      const { headers } = expectDeny(res, 16, 'Unauthorized', 'acquisition_ui_required');
      expect(headers['www-authenticate']).to.equal(`Bearer error="insufficient_claims", claims="${Buffer.from(claims).toString('base64')}"`);
    });

    it('Entra throttling → 503 with Retry-After', async function () {
      h.acquirer.error = new SidecarError('acquisition_throttled', undefined, { retryAfterSec: 7 });
      const res = await check(h.client, envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` }, contextExtensions: { downstream_api: 'graph' } }));
      const { headers } = expectDeny(res, 14, 'ServiceUnavailable', 'acquisition_throttled');
      expect(headers['retry-after']).to.equal('7');
      expect(headers).not.to.have.property('www-authenticate');
    });

    it('an unexpected acquirer failure → 500 internal with a generic message', async function () {
      h.acquirer.error = new Error('socket hang up while sending eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl to secret-host');
      const res = await check(h.client, envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` }, contextExtensions: { downstream_api: 'graph' } }));
      const { body } = expectDeny(res, 13, 'InternalServerError', 'internal');
      expect(body.message).to.equal(ERROR_TABLE.internal.message);
      expect(res.status.message).not.to.contain('secret-host');
      // The cause is logged for operators, with the token-shaped part cut out.
      const log = h.lines.join('\n');
      expect(log).to.contain('socket hang up');
      expect(log).not.to.contain('eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0');
    });

    it('an unknown downstream_api → 500 api_not_configured', async function () {
      const res = await check(h.client, envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` }, contextExtensions: { downstream_api: 'nope' } }));
      expectDeny(res, 13, 'InternalServerError', 'api_not_configured');
      expect(h.acquirer.requests).to.have.length(0);
    });

    it('passes agent_identity and agent_username to the acquirer and injects the agent\'s token', async function () {
      const res = await check(
        h.client,
        envoyCheckRequest({
          headers: { authorization: `Bearer ${userToken}` },
          contextExtensions: { downstream_api: 'graph', agent_identity: 'a1b2c3d4-0000-0000-0000-000000000001', agent_username: 'agent@contoso.test' },
        }),
      );
      expect(res.status?.code ?? 0).to.equal(0);
      expect(headerMap(res.ok_response.headers).authorization).to.equal('Bearer downstream.graph.agent.a1b2c3d4-0000-0000-0000-000000000001');
      expect(h.acquirer.requests[0].agent).to.deep.equal({ agentIdentity: 'a1b2c3d4-0000-0000-0000-000000000001', username: 'agent@contoso.test' });
    });

    it('a typo in context_extensions fails closed with 500 misconfigured', async function () {
      const typos: Array<Record<string, string>> = [{ downstream_apii: 'graph' }, { validate: 'sometimes' }, { require_all: 'yes' }, { validate: 'none', required_scopes: 'x' }];
      for (const ext of typos) {
        const res = await check(h.client, envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` }, contextExtensions: ext }));
        expectDeny(res, 13, 'InternalServerError', 'misconfigured');
      }
    });

    it('a TCP (network filter) request with no http attributes → 403 request_not_http', async function () {
      const res = await check(h.client, {
        attributes: {
          source: { address: { socket_address: { address: '10.0.0.9', port_value: 40000 } } },
          destination: { address: { socket_address: { address: '10.0.0.7', port_value: 5432 } } },
        },
      });
      expectDeny(res, 7, 'Forbidden', 'request_not_http');
    });

    it('an empty CheckRequest → 403 request_invalid', async function () {
      const res = await check(h.client, {});
      expectDeny(res, 3, 'Forbidden', 'request_invalid');
    });

    // The deny goes out DEADLINE_MARGIN before the client's deadline: 10 % of the time left, within
    // [20, 250] ms (src/extauthz/check.ts). With a deadline of several seconds the margin is the full
    // 250 ms, which is the slack a loaded machine gets to deliver the answer in time.
    const SLOW_DEADLINE_MS = 3_000;
    const MAX_MARGIN_MS = 250;
    /** Answered before the client's deadline, and not before the deadline less the margin (and 50 ms of clock rounding). */
    function expectAnsweredAtMargin(elapsed: number) {
      expect(elapsed, 'answered before the client deadline').to.be.below(SLOW_DEADLINE_MS);
      expect(elapsed, 'not earlier than the deadline less the margin').to.be.at.least(SLOW_DEADLINE_MS - MAX_MARGIN_MS - 50);
    }

    it('a slow acquirer → 503 dependency_timeout before the client deadline, never a gRPC error', async function () {
      h.acquirer.hang = true;
      const started = Date.now();
      const res = await check(
        h.client,
        envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` }, contextExtensions: { downstream_api: 'graph' } }),
        SLOW_DEADLINE_MS,
      );
      const elapsed = Date.now() - started;
      expectDeny(res, 14, 'ServiceUnavailable', 'dependency_timeout');
      expectAnsweredAtMargin(elapsed);
      // The acquirer's wait is released by the shared abort slice (50 ms after the answer on an idle machine).
      const abortedBy = Date.now() + 10_000;
      while (h.acquirer.abortedCount === 0 && Date.now() < abortedBy) await new Promise((r) => setTimeout(r, 10));
      expect(h.acquirer.abortedCount).to.be.at.least(1);
    });

    it('a slow validator (JWKS refetch) → 503 dependency_timeout before the client deadline', async function () {
      h.validator.delayMs = 10_000;
      const started = Date.now();
      const res = await check(h.client, envoyCheckRequest({ headers: { authorization: `Bearer ${userToken}` } }), SLOW_DEADLINE_MS);
      expectDeny(res, 14, 'ServiceUnavailable', 'dependency_timeout');
      expectAnsweredAtMargin(Date.now() - started);
    });
  });

  it('maps every Envoy status in ERROR_TABLE to a defined envoy.type.v3.StatusCode name', function () {
    const names = loadExtAuthzProtos().httpStatusNames;
    for (const [code, spec] of Object.entries(ERROR_TABLE)) {
      expect(names.get(spec.envoyStatus), code).to.be.a('string');
    }
    expect(names.get(401)).to.equal('Unauthorized');
    expect(names.get(503)).to.equal('ServiceUnavailable');
  });
});
