/**
 * POST /DownstreamApi[Unauthenticated]/{apiName} through the built sidecar, the emulator and a local
 * downstream server that records what it received (issue 4 acceptance).
 */
import { expect } from 'chai';
import { Agent, createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js';
import { assertNoSecrets, call, secretsOf, sidecarEnv } from '../helpers/e2e.js';

interface Seen { method: string; url: string; headers: IncomingMessage['headers']; body: Buffer }
type Responder = (req: IncomingMessage, body: Buffer, res: ServerResponse) => void;

/** A downstream answer: 401 with a claims challenge for `claims`, or 200 `{"ok":true}` without. */
function challengeOrOk(res: ServerResponse, claims: string | undefined): void {
  if (claims !== undefined) {
    res.statusCode = 401;
    res.setHeader('www-authenticate', `Bearer realm="", error="insufficient_claims", claims="${Buffer.from(claims).toString('base64')}"`);
    res.end();
    return;
  }
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.end('{"ok":true}');
}

async function recordingServer(): Promise<{ server: Server; origin: string; seen: Seen[]; respond: { fn: Responder } }> {
  const seen: Seen[] = [];
  const respond: { fn: Responder } = { fn: (_q, _b, res) => { res.setHeader('content-type', 'application/json; charset=utf-8'); res.end('{"result": "success"}'); } };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      respond.fn(req, body, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, respond };
}

interface RawAnswer { status: number; connection: string | undefined; reusedSocket: boolean; text: string }

/** A POST through `agent` (node:http, so the test sees keep-alive), the body sent with Content-Length or chunked. */
function rawPost(agent: Agent, url: string, token: string, body: Buffer, opts: { headers?: Record<string, string>; chunked?: boolean } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, ...opts.headers };
    if (!opts.chunked) headers['content-length'] = String(body.length);
    const req = request(url, { method: 'POST', agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, connection: res.headers.connection, reusedSocket: req.reusedSocket, text: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (opts.chunked) req.write(body);
    req.end(opts.chunked ? undefined : body);
  });
}

describe('POST /DownstreamApi/{apiName} (built sidecar, emulator, recording downstream)', function () {
  this.timeout(40_000);
  let emu: Emulator;
  let sidecar: RunningSidecar;
  let api: Awaited<ReturnType<typeof recordingServer>>;
  let other: Awaited<ReturnType<typeof recordingServer>>;
  const tokens: string[] = [];

  before(async () => {
    emu = await startEmulator();
    api = await recordingServer();
    other = await recordingServer();
    sidecar = await startSidecar(
      sidecarEnv(emu, {
        DownstreamApis__items__BaseUrl: `${api.origin}/v1.0/`,
        DownstreamApis__items__RelativePath: '/items?top=5',
        DownstreamApis__items__Scopes__0: 'api://downstream/read',
        'DownstreamApis__items__ExtraQueryParameters__api-version': '2024-01-01',
        'DownstreamApis__items__ExtraHeaderParameters__X-Custom': 'configured',
        DownstreamApis__items__HttpMethod: 'Post',
        DownstreamApis__headItems__BaseUrl: `${api.origin}/`,
        DownstreamApis__headItems__Scopes__0: 'api://downstream/read',
        DownstreamApis__headItems__HttpMethod: 'Head',
        DownstreamApis__appItems__BaseUrl: `${api.origin}/`,
        DownstreamApis__appItems__Scopes__0: 'api://downstream/.default',
        DownstreamApis__appItems__RequestAppToken: 'true',
        // Paths shaped like Key Vault's and Entra's: still downstream calls in the metrics.
        DownstreamApis__vaultPath__BaseUrl: `${api.origin}/`,
        DownstreamApis__vaultPath__RelativePath: 'secrets/db-password',
        DownstreamApis__vaultPath__Scopes__0: 'api://downstream/.default',
        DownstreamApis__vaultPath__RequestAppToken: 'true',
        DownstreamApis__tokenPath__BaseUrl: `${api.origin}/`,
        DownstreamApis__tokenPath__RelativePath: 'oauth2/v2.0/token',
        DownstreamApis__tokenPath__Scopes__0: 'api://downstream/.default',
        DownstreamApis__tokenPath__RequestAppToken: 'true',
        DownstreamApis__refused__BaseUrl: 'http://127.0.0.1:1/',
        DownstreamApis__refused__Scopes__0: 'api://downstream/.default',
        DownstreamApis__refused__RequestAppToken: 'true',
        Sidecar__DownstreamApi__MaxResponseBytes: '65536',
      }),
    );
  });
  after(async () => {
    await sidecar?.stop();
    assertNoSecrets(sidecar?.lines ?? [], secretsOf(emu, tokens));
    await emu?.close();
    api?.server.close();
    other?.server.close();
  });
  beforeEach(() => {
    api.seen.length = 0;
    other.seen.length = 0;
    api.respond.fn = (_q, _b, res) => {
      res.setHeader('content-type', 'application/json; charset=utf-8');
      res.end('{"result": "success"}');
    };
  });

  const user = async () => {
    const t = await emu.mint({ kind: 'user', scp: 'access_as_user' });
    tokens.push(t);
    return t;
  };

  it('calls the API with the OBO token and returns {statusCode, headers, content}', async () => {
    const r = await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token: await user() });
    expect(r.status, r.text).to.equal(200);
    expect(r.json()).to.deep.equal({ statusCode: 200, headers: { 'Content-Type': ['application/json; charset=utf-8'], 'Content-Length': ['21'] }, content: '{"result": "success"}' });
    expect(api.seen).to.have.length(1);
    const seen = api.seen[0];
    expect(seen.method).to.equal('POST');
    expect(seen.url).to.equal('/v1.0/items?top=5&api-version=2024-01-01');
    expect(seen.headers.accept).to.equal('application/json');
    expect(seen.headers['x-custom']).to.equal('configured');
    const auth = String(seen.headers.authorization);
    expect(auth).to.match(/^Bearer /);
    tokens.push(auth.slice(7));
    expect(decodeJwt(auth.slice(7)).scp).to.equal('read');
  });

  it('passes 404, 204 and 202 through with Microsoft\'s shapes', async () => {
    const token = await user();
    api.respond.fn = (_q, _b, res) => { res.statusCode = 404; res.setHeader('content-type', 'text/plain'); res.end('nope'); };
    expect((await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token })).json()).to.include({ statusCode: 404, content: 'nope' });
    api.respond.fn = (_q, _b, res) => { res.statusCode = 204; res.end(); };
    expect((await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token })).json()).to.deep.include({ statusCode: 204, content: null });
    api.respond.fn = (_q, body, res) => { res.statusCode = 202; res.setHeader('content-type', 'text/plain'); res.end(body); };
    const accepted = await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token, body: 'echo me', headers: { 'content-type': 'text/plain' } });
    expect(accepted.json()).to.include({ statusCode: 202, content: 'echo me' });
  });

  it('reports the length of the body as received when the downstream sent no Content-Length, as .NET computes it', async () => {
    const token = await user();
    api.respond.fn = (_q, _b, res) => {
      res.setHeader('content-type', 'text/plain; charset=utf-8');
      res.write('chunk one, ');
      res.end('chunk two');
    };
    const chunked = (await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token })).json();
    expect(chunked).to.deep.equal({ statusCode: 200, headers: { 'Content-Type': ['text/plain; charset=utf-8'], 'Content-Length': ['20'] }, content: 'chunk one, chunk two' });
    api.respond.fn = (_q, _b, res) => { res.statusCode = 204; res.end(); };
    expect((await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token })).json()).to.deep.equal({ statusCode: 204, headers: { 'Content-Length': ['0'] }, content: null });
    // A length the server sent is kept: a HEAD answer reports what a GET would carry.
    api.respond.fn = (_q, _b, res) => { res.setHeader('content-type', 'application/json'); res.setHeader('content-length', '42'); res.end(); };
    const head = (await call(`${sidecar.url}/DownstreamApi/headItems`, { method: 'POST', token })).json();
    expect(api.seen.at(-1)?.method).to.equal('HEAD');
    expect(head).to.deep.equal({ statusCode: 200, headers: { 'Content-Type': ['application/json'], 'Content-Length': ['42'] }, content: null });
  });

  it('returns textual bodies of any media type as text, and only bytes that are not text as base64', async () => {
    // Reference §2.4 step 8: `content` is the body decoded as text (charset from Content-Type).
    const token = await user();
    const jwt = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.';
    const cases: [string, Buffer, string][] = [
      ['application/jwt', Buffer.from(jwt), jwt],
      ['application/x-ndjson; charset=utf-8', Buffer.from('{"n":1}\n{"n":"é"}\n'), '{"n":1}\n{"n":"é"}\n'],
      ['application/yaml', Buffer.from('name: café\nitems: [1, 2]\n'), 'name: café\nitems: [1, 2]\n'],
      ['application/vnd.acme.report', Buffer.from('totals,12\n'), 'totals,12\n'],
      ['application/octet-stream; charset=iso-8859-1', Buffer.from([0x63, 0x61, 0x66, 0xe9]), 'café'],
    ];
    for (const [type, bytes, text] of cases) {
      api.respond.fn = (_q, _b, res) => { res.setHeader('content-type', type); res.end(bytes); };
      const r = (await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token })).json();
      expect(r, type).to.deep.equal({ statusCode: 200, headers: { 'Content-Type': [type], 'Content-Length': [String(bytes.length)] }, content: text });
    }
    // Bytes that are not valid text stay intact as base64: a PNG, and a charset-labelled body that is not UTF-8.
    const png = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');
    for (const [type, bytes] of [['image/png', png], ['application/octet-stream', png], ['application/vnd.acme.blob; charset=utf-8', Buffer.from([0x63, 0xff, 0xfe])]] as [string, Buffer][]) {
      api.respond.fn = (_q, _b, res) => { res.setHeader('content-type', type); res.end(bytes); };
      const r = (await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token })).json();
      expect(r, type).to.deep.include({ content: bytes.toString('base64'), contentEncoding: 'base64' });
    }
  });

  it('keeps a leading byte order mark in the text of a non-textual body, so the text encodes back to its exact bytes', async () => {
    const token = await user();
    // TextDecoder drops a leading EF BB BF by default: three bytes of an octet-stream lost without
    // a trace. A textual type drops it still, as .NET's ReadAsStringAsync does.
    for (const [type, bytes, text] of [
      ['application/octet-stream', Buffer.from([0xef, 0xbb, 0xbf, 0x01, 0x02, 0x41]), '\ufeff\u0001\u0002A'],
      ['application/vnd.acme.report; charset=utf-8', Buffer.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d]), '\ufeff{}'],
      ['application/json', Buffer.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d]), '{}'],
    ] as [string, Buffer, string][]) {
      api.respond.fn = (_q, _b, res) => { res.setHeader('content-type', type); res.end(bytes); };
      const r = (await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token })).json();
      expect(r, type).to.deep.equal({ statusCode: 200, headers: { 'Content-Type': [type], 'Content-Length': [String(bytes.length)] }, content: text });
      if (type !== 'application/json') expect(Buffer.from(r.content as string, 'utf8').equals(bytes), `${type} round trip`).to.equal(true);
    }
  });

  it('forwards the body only when the caller sent a Content-Type', async () => {
    const token = await user();
    await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token, body: '{"a":1}', headers: { 'content-type': 'application/json' } });
    await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token, body: new Uint8Array(Buffer.from('ignored')) });
    expect(api.seen[0].body.toString()).to.equal('{"a":1}');
    expect(String(api.seen[0].headers['content-type'])).to.match(/^application\/json/);
    expect(api.seen[1].body.length).to.equal(0);
  });

  describe('a body sent without a Content-Type (Sidecar:Http:MaxBodyBytes=100)', () => {
    let small: RunningSidecar;
    before(async () => {
      small = await startSidecar(
        sidecarEnv(emu, {
          DownstreamApis__items__BaseUrl: `${api.origin}/v1.0/`,
          DownstreamApis__items__Scopes__0: 'api://downstream/read',
          DownstreamApis__items__HttpMethod: 'Post',
          Sidecar__Http__MaxBodyBytes: '100',
        }),
      );
    });
    after(async () => {
      await small?.stop();
      assertNoSecrets(small?.lines ?? [], secretsOf(emu, tokens));
    });

    it('is neither read nor held to the size limit: the API is called without it, as Microsoft does', async () => {
      const token = await user();
      const body = new Uint8Array(Buffer.alloc(2400, 'x'));
      const r = await call(`${small.url}/DownstreamApi/items`, { method: 'POST', token, body });
      expect(r.status, r.text).to.equal(200);
      expect(r.json().statusCode).to.equal(200);
      expect(api.seen).to.have.length(1);
      expect(api.seen[0].body.length).to.equal(0);
      expect(api.seen[0].headers['content-type']).to.equal(undefined);
      // With a Content-Type the body is forwarded, so it is read and the limit holds.
      const typed = await call(`${small.url}/DownstreamApi/items`, { method: 'POST', token, body, headers: { 'content-type': 'text/plain' } });
      expect(typed.status, typed.text).to.equal(413);
      expect(typed.json().code).to.equal('request_body_too_large');
      expect(api.seen).to.have.length(1);
    });

    it('keeps the connection for the next request after a discarded body within the limit, and closes it after answering one past the limit', async () => {
      const token = await user();
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      const url = `${small.url}/DownstreamApi/items`;
      try {
        const first = await rawPost(agent, url, token, Buffer.alloc(60, 'a'));
        const second = await rawPost(agent, url, token, Buffer.alloc(60, 'b'), { chunked: true });
        expect([first.status, second.status], second.text).to.deep.equal([200, 200]);
        expect(second.reusedSocket, 'the second request rides the first one\'s connection').to.equal(true);
        expect(second.connection).to.equal('keep-alive');
        // Past the limit, declared or counted while it arrives: answered, then the connection closes.
        const declared = await rawPost(agent, url, token, Buffer.alloc(2400, 'c'));
        expect(declared.status, declared.text).to.equal(200);
        expect(declared.connection).to.equal('close');
        const counted = await rawPost(agent, url, token, Buffer.alloc(2400, 'd'), { chunked: true });
        expect(counted.status, counted.text).to.equal(200);
        expect(counted.reusedSocket).to.equal(false);
        expect(counted.connection).to.equal('close');
        expect(api.seen.map((s) => s.body.length)).to.deep.equal([0, 0, 0, 0]);
      } finally {
        agent.destroy();
      }
    });
  });

  it('takes the last occurrence of a repeated optionsOverride key, even an empty one, and refuses a bad HttpMethod only when it is that one', async () => {
    const token = await user();
    const r = await call(`${sidecar.url}/DownstreamApi/items?optionsOverride.RelativePath=etag&optionsOverride.RelativePath=`, { method: 'POST', token });
    expect(r.status, r.text).to.equal(200);
    expect(api.seen[0].url).to.equal('/v1.0/items?top=5&api-version=2024-01-01');
    const put = await call(`${sidecar.url}/DownstreamApi/items?optionsOverride.HttpMethod=Bad%20Method&optionsOverride.HttpMethod=Put`, { method: 'POST', token });
    expect(put.status, put.text).to.equal(200);
    expect(api.seen[1].method).to.equal('PUT');
    const bad = await call(`${sidecar.url}/DownstreamApi/items?optionsOverride.HttpMethod=Put&optionsOverride.HttpMethod=Bad%20Method`, { method: 'POST', token });
    expect(bad.status, bad.text).to.equal(400);
    expect(bad.json().code).to.equal('request_invalid');
    expect(api.seen).to.have.length(2);
  });

  it('never lets optionsOverride.BaseUrl change the host, nor ExtraHeaderParameters.Authorization replace the token', async () => {
    const token = await user();
    const q = `?optionsOverride.BaseUrl=${encodeURIComponent(other.origin + '/')}&optionsOverride.ExtraHeaderParameters.Authorization=Bearer%20evil&optionsOverride.ExtraHeaderParameters.X-Forwarded-For=1.2.3.4&optionsOverride.ExtraHeaderParameters.X-Ok=yes`;
    const r = await call(`${sidecar.url}/DownstreamApi/items${q}`, { method: 'POST', token });
    expect(r.json().statusCode).to.equal(200);
    expect(other.seen).to.have.length(0);
    expect(api.seen).to.have.length(1);
    expect(String(api.seen[0].headers.authorization)).to.not.equal('Bearer evil');
    expect(api.seen[0].headers['x-forwarded-for']).to.equal(undefined);
    expect(api.seen[0].headers['x-ok']).to.equal('yes');
  });

  it('labels a downstream call "downstream" in the outbound metrics whatever its path (/secrets/…, /oauth2/token)', async () => {
    const metrics = `http://127.0.0.1:${sidecar.listening.management!.port}/metrics`;
    const count = async (target: string) => {
      const text = (await call(metrics)).text;
      return [...text.matchAll(new RegExp(`^entra_sidecar_outbound_requests_total\\{target="${target}",status_class="[^"]+"\\} (\\d+)$`, 'gm'))].reduce((n, m) => n + Number(m[1]), 0);
    };
    await call(`${sidecar.url}/DownstreamApiUnauthenticated/appItems`, { method: 'POST' });
    const [downstream, keyVault, token] = [await count('downstream'), await count('key_vault'), await count('token')];
    for (const name of ['vaultPath', 'tokenPath']) {
      const r = await call(`${sidecar.url}/DownstreamApiUnauthenticated/${name}`, { method: 'POST' });
      expect(r.json().statusCode).to.equal(200);
    }
    expect(api.seen.map((s) => s.url)).to.include.members(['/secrets/db-password', '/oauth2/v2.0/token']);
    expect(await count('downstream')).to.equal(downstream + 2);
    expect(await count('key_vault')).to.equal(keyVault);
    expect(await count('token')).to.equal(token);
  });

  it('does not follow redirects by default and never contacts the target', async () => {
    api.respond.fn = (_q, _b, res) => { res.statusCode = 302; res.setHeader('location', `${other.origin}/stolen`); res.end(); };
    const r = await call(`${sidecar.url}/DownstreamApiUnauthenticated/appItems`, { method: 'POST' });
    expect(r.json().statusCode).to.equal(302);
    expect(other.seen).to.have.length(0);
  });

  it('retries exactly once with a claims challenge after a downstream 401', async () => {
    const claims = '{"access_token":{"nbf":{"essential":true,"value":"1"}}}';
    api.respond.fn = (_q, _b, res) => {
      res.statusCode = 401;
      res.setHeader('www-authenticate', `Bearer realm="", error="insufficient_claims", claims="${Buffer.from(claims).toString('base64')}"`);
      res.end();
    };
    const before = emu.counters().token;
    const r = await call(`${sidecar.url}/DownstreamApiUnauthenticated/appItems`, { method: 'POST' });
    expect(r.json().statusCode).to.equal(401);
    expect(api.seen).to.have.length(2);
    const claimRequests = emu.requests().filter((q) => q.route === 'token' && q.form.claims);
    expect(claimRequests.length).to.be.greaterThan(0);
    expect(emu.counters().token).to.be.greaterThan(before);
  });

  it('keeps the token a claims challenge got, so the next call does not meet the same challenge', async () => {
    // MSAL overwrites the cached token with the one acquired with claims; a cache that kept the
    // refused token would send it again on every call until it expired (a CAE token: ~24 h).
    const claims = '{"access_token":{"nbf":{"essential":true,"value":"2"}}}';
    let refused: string | undefined;
    api.respond.fn = (req, _b, res) => {
      const auth = String(req.headers.authorization ?? '');
      refused ??= auth;
      challengeOrOk(res, auth === refused ? claims : undefined);
    };
    const first = await call(`${sidecar.url}/DownstreamApiUnauthenticated/appItems`, { method: 'POST' });
    expect(first.json().statusCode).to.equal(200);
    expect(api.seen).to.have.length(2);
    const tokenRequests = emu.counters().token;
    const second = await call(`${sidecar.url}/DownstreamApiUnauthenticated/appItems`, { method: 'POST' });
    expect(second.json().statusCode).to.equal(200);
    expect(api.seen, 'one downstream request, with the token the challenge got').to.have.length(3);
    expect(emu.counters().token).to.equal(tokenRequests);
  });

  describe('an authentication-context (acrs) claims challenge on an On-Behalf-Of call', () => {
    const claims = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}';
    const challengeUnlessAcrs = (req: IncomingMessage, _b: Buffer, res: ServerResponse): void => {
      const auth = String(req.headers.authorization ?? '');
      tokens.push(auth.slice(7));
      challengeOrOk(res, (decodeJwt(auth.slice(7)).acrs as string[] | undefined)?.includes('c1') ? undefined : claims);
    };
    afterEach(() => emu.conditionalAccess());

    it('retries with a token carrying the context once Entra grants it', async () => {
      api.respond.fn = challengeUnlessAcrs;
      const before = emu.requests().length;
      const r = await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token: await user() });
      expect(r.status, r.text).to.equal(200);
      expect(r.json().statusCode).to.equal(200);
      expect(api.seen).to.have.length(2);
      const obo = emu.requests().slice(before).filter((q) => q.route === 'token' && q.form.requested_token_use === 'on_behalf_of');
      expect(obo.map((q) => q.status)).to.deep.equal([200, 200]);
      expect(JSON.parse(obo[1].form.claims).access_token.acrs).to.deep.equal({ essential: true, value: 'c1' });
    });

    it('answers 401 acquisition_ui_required with Entra\'s claims to step up to when the user has not satisfied the context', async () => {
      emu.conditionalAccess({ unsatisfiedAcrs: ['c1'] });
      api.respond.fn = challengeUnlessAcrs;
      const before = emu.requests().length;
      const r = await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token: await user() });
      expect(r.status, r.text).to.equal(401);
      expect(r.json().code).to.equal('acquisition_ui_required');
      expect(r.json().detail).to.contain('AADSTS50076');
      // Entra's `claims` (here the context asked for) reaches the caller, base64 in the challenge (docs/errors.md).
      expect(r.headers.get('www-authenticate')).to.equal(`Bearer error="insufficient_claims", claims="${Buffer.from(claims).toString('base64')}"`);
      expect(api.seen, 'no second downstream call without a token').to.have.length(1);
      const obo = emu.requests().slice(before).filter((q) => q.route === 'token' && q.form.requested_token_use === 'on_behalf_of');
      expect(obo.map((q) => q.status)).to.deep.equal([200, 400]);
    });
  });

  it('answers 500 in bounded time when the downstream refuses connections', async () => {
    const t0 = Date.now();
    const r = await call(`${sidecar.url}/DownstreamApiUnauthenticated/refused`, { method: 'POST' });
    expect(r.status).to.equal(500);
    expect(r.json().detail).to.equal('An unexpected error occurred.');
    expect(Date.now() - t0).to.be.lessThan(5_000);
  });

  it('cuts off an oversized response with downstream_response_too_large', async () => {
    api.respond.fn = (_q, _b, res) => {
      res.setHeader('content-type', 'application/octet-stream');
      const chunk = Buffer.alloc(16_384, 7);
      let sent = 0;
      const pump = () => {
        while (sent < 10_000_000) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      res.on('error', () => {});
      pump();
    };
    const r = await call(`${sidecar.url}/DownstreamApiUnauthenticated/appItems`, { method: 'POST' });
    expect(r.status).to.equal(502);
    expect(r.json().code).to.equal('downstream_response_too_large');
  });

  it('returns a HEAD or 304 answer whose Content-Length exceeds the response cap as headers, and stays up', async () => {
    // No body comes with these whatever Content-Length says (RFC 9110); the cap (65536 here) is for bodies.
    // A HEAD declaring 20 MB used to throw an unhandled undici error and end the process.
    api.respond.fn = (_q, _b, res) => {
      res.setHeader('content-type', 'application/octet-stream');
      res.setHeader('content-length', '20000000');
      res.end();
    };
    const token = await user();
    const head = await call(`${sidecar.url}/DownstreamApi/headItems`, { method: 'POST', token });
    expect(head.status, head.text).to.equal(200);
    expect(head.json()).to.deep.equal({ statusCode: 200, headers: { 'Content-Type': ['application/octet-stream'], 'Content-Length': ['20000000'] }, content: null });
    const overridden = await call(`${sidecar.url}/DownstreamApi/items?optionsOverride.HttpMethod=HEAD`, { method: 'POST', token });
    expect(overridden.status, overridden.text).to.equal(200);
    expect(api.seen.map((s) => s.method)).to.deep.equal(['HEAD', 'HEAD']);
    // A 304 may carry the Content-Length a 200 would have (RFC 9110 §8.6), as ASP.NET Core sends it.
    api.respond.fn = (_q, _b, res) => {
      res.statusCode = 304;
      res.setHeader('etag', '"v7"');
      res.setHeader('content-length', '20000000');
      res.end();
    };
    for (let i = 0; i < 2; i++) {
      const notModified = await call(`${sidecar.url}/DownstreamApi/items?optionsOverride.HttpMethod=GET&optionsOverride.ExtraHeaderParameters.If-None-Match=%22v7%22`, { method: 'POST', token });
      expect(notModified.status, notModified.text).to.equal(200);
      expect(notModified.json()).to.deep.equal({ statusCode: 304, headers: { 'Content-Length': ['20000000'] }, content: null });
    }
    expect(api.seen.at(-1)?.headers['if-none-match']).to.equal('"v7"');
    // A GET that declares more than the cap is still refused before its body is read, and the sidecar lives on.
    api.respond.fn = (_q, _b, res) => {
      res.setHeader('content-type', 'application/octet-stream');
      res.setHeader('content-length', '20000000');
      res.on('error', () => {});
      res.write(Buffer.alloc(1024));
    };
    const declared = await call(`${sidecar.url}/DownstreamApi/items?optionsOverride.HttpMethod=GET`, { method: 'POST', token });
    expect(declared.status).to.equal(502);
    expect(declared.json().code).to.equal('downstream_response_too_large');
    expect((await call(`${sidecar.url}/healthz`)).status).to.equal(200);
  });

  it('returns content headers only by default, and every end-to-end header but Set-Cookie with Sidecar:DownstreamApi:ReturnAllResponseHeaders=true', async () => {
    api.respond.fn = (_q, _b, res) => {
      res.setHeader('content-type', 'application/json; charset=utf-8');
      res.setHeader('etag', '"v7"');
      res.setHeader('x-request-id', 'r1');
      res.setHeader('cache-control', 'no-store');
      res.setHeader('set-cookie', ['a=1', 'b=2']);
      res.end('{"ok":true}');
    };
    const defaults = await call(`${sidecar.url}/DownstreamApi/items`, { method: 'POST', token: await user() });
    expect(defaults.status, defaults.text).to.equal(200);
    expect(defaults.json().headers).to.deep.equal({ 'Content-Type': ['application/json; charset=utf-8'], 'Content-Length': ['11'] });

    const all = await startSidecar(sidecarEnv(emu, {
      DownstreamApis__items__BaseUrl: `${api.origin}/v1.0/`,
      DownstreamApis__items__Scopes__0: 'api://downstream/read',
      DownstreamApis__items__HttpMethod: 'Post',
      Sidecar__DownstreamApi__ReturnAllResponseHeaders: 'true',
    }));
    try {
      const r = await call(`${all.url}/DownstreamApi/items`, { method: 'POST', token: await user() });
      expect(r.status, r.text).to.equal(200);
      const headers = r.json().headers as Record<string, string[]>;
      expect(headers).to.deep.include({
        'Content-Type': ['application/json; charset=utf-8'],
        'Content-Length': ['11'],
        ETag: ['"v7"'],
        'X-Request-Id': ['r1'],
        'Cache-Control': ['no-store'],
      });
      // Cookies are the downstream's session with the sidecar, never the caller's.
      expect(Object.keys(headers).map((h) => h.toLowerCase())).to.not.include('set-cookie');
      expect(r.json().content).to.equal('{"ok":true}');
      expect(api.seen).to.have.length(2);
      for (const seen of api.seen) tokens.push(String(seen.headers.authorization).slice(7));
    } finally {
      await all.stop();
      assertNoSecrets(all.lines, secretsOf(emu, tokens));
    }
  });

  it('answers 405 to GET, as Microsoft\'s POST-only routes do', async () => {
    expect((await call(`${sidecar.url}/DownstreamApi/items`)).status).to.equal(405);
  });
});
