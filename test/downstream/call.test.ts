/**
 * callDownstreamApi against real loopback HTTP servers: what the downstream API receives, what the
 * caller gets back, redirects, claims challenges, transport failures and the response-size cap.
 */
import { expect } from 'chai';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { callDownstreamApi, type DownstreamResult } from '../../src/downstream/call.js';
import { SidecarError, type ErrorCode } from '../../src/errors.js';
import type { ValidatedToken } from '../../src/pipeline/types.js';
import { apiOptions, makeDeps, noBody, startRecordingServer, type RecordingServer, type TestDeps } from './fixtures.js';

async function expectSidecarError(promise: Promise<unknown>, code: ErrorCode): Promise<SidecarError> {
  try {
    await promise;
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(SidecarError);
    expect((err as SidecarError).code).to.equal(code);
    return err as SidecarError;
  }
  expect.fail(`expected SidecarError ${code}`);
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string | string[]> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

describe('downstream: callDownstreamApi', function () {
  this.timeout(10_000);
  let server: RecordingServer;
  let deps: TestDeps;

  beforeEach(async () => {
    server = await startRecordingServer((_req, res) => json(res, 200, { result: 'success' }));
    deps = makeDeps();
  });
  afterEach(async () => {
    await deps.close();
    await server.close();
  });

  describe('the outbound request', () => {
    it('sends the configured method, path, query, Accept and the acquired token to BaseUrl', async () => {
      const user = { raw: 'inbound', jws: 'inbound', tenantId: 't' } as unknown as ValidatedToken;
      const options = apiOptions(server.origin + '/v1.0/', { relativePath: '/me/messages?$top=5', httpMethod: 'delete', extraQueryParameters: { param1: 'value 1' } });
      const result = await callDownstreamApi(deps, { options, user, correlationId: 'c0ffee00-0000-4000-8000-000000000000', inbound: noBody });

      expect(result).to.deep.equal({
        statusCode: 200,
        headers: { 'Content-Type': ['application/json; charset=utf-8'], 'Content-Length': ['20'] },
        content: '{"result":"success"}',
      });
      expect(server.received).to.have.length(1);
      const seen = server.received[0];
      expect(seen.method).to.equal('DELETE');
      expect(seen.url).to.equal('/v1.0/me/messages?$top=5&param1=value%201');
      expect(seen.headers.authorization).to.equal('Bearer token-1');
      expect(seen.headers.accept).to.equal('application/json');
      expect(seen.headers.host).to.equal(`127.0.0.1:${server.port}`);
      expect(deps.acquirer.requests).to.have.length(1);
      const acquired = deps.acquirer.requests[0];
      expect(acquired.options).to.equal(options);
      expect(acquired.user).to.equal(user);
      expect(acquired.correlationId).to.equal('c0ffee00-0000-4000-8000-000000000000');
      expect(acquired.claims).to.equal(undefined);
    });

    it('uses the acquirer’s scheme (pop) and sends no Authorization when there are no scopes', async () => {
      deps.acquirer.scheme = 'pop';
      await callDownstreamApi(deps, { options: apiOptions(server.origin), inbound: noBody });
      expect(server.received[0].headers.authorization).to.equal('pop token-1');

      await callDownstreamApi(deps, { options: apiOptions(server.origin, { scopes: [] }), inbound: noBody });
      expect(server.received[1].headers).not.to.have.property('authorization');
      expect(deps.acquirer.requests).to.have.length(1);
    });

    it('sends an unknown but valid method as written and rejects a method that is not an HTTP token', async () => {
      await callDownstreamApi(deps, { options: apiOptions(server.origin, { httpMethod: 'PROPFIND' }), inbound: noBody });
      expect(server.received[0].method).to.equal('PROPFIND');
      await expectSidecarError(callDownstreamApi(deps, { options: apiOptions(server.origin, { httpMethod: 'GE T' }), inbound: noBody }), 'request_invalid');
      await expectSidecarError(callDownstreamApi(deps, { options: apiOptions(server.origin, { httpMethod: 'connect' }), inbound: noBody }), 'request_invalid');
      expect(server.received).to.have.length(1);
    });

    it('fails with misconfigured (500) and calls nothing when BaseUrl is missing or not http(s)', async () => {
      await expectSidecarError(callDownstreamApi(deps, { options: apiOptions(undefined), inbound: noBody }), 'misconfigured');
      await expectSidecarError(callDownstreamApi(deps, { options: apiOptions('ftp://127.0.0.1/'), inbound: noBody }), 'misconfigured');
      expect(server.received).to.have.length(0);
      expect(deps.acquirer.requests).to.have.length(0);
    });

    it('forwards the body with its Content-Type, adding charset=utf-8 to text types', async () => {
      const body = Buffer.from('{"name":"Zoë"}');
      await callDownstreamApi(deps, { options: apiOptions(server.origin, { httpMethod: 'Post' }), inbound: { contentType: 'application/json', body } });
      expect(server.received[0].method).to.equal('POST');
      expect(server.received[0].headers['content-type']).to.equal('application/json; charset=utf-8');
      expect(server.received[0].body.equals(body)).to.equal(true);

      await callDownstreamApi(deps, { options: apiOptions(server.origin, { httpMethod: 'Put' }), inbound: { contentType: 'text/plain; charset=iso-8859-1', body: Buffer.from([0x63, 0xe9]) } });
      expect(server.received[1].headers['content-type']).to.equal('text/plain; charset=iso-8859-1');
      expect([...server.received[1].body]).to.deep.equal([0x63, 0xe9]);

      // Labels follow the media type alone, never the bytes: a YAML body is text, a PNG stays unlabelled.
      await callDownstreamApi(deps, { options: apiOptions(server.origin, { httpMethod: 'Post' }), inbound: { contentType: 'application/yaml', body: Buffer.from('a: 1') } });
      expect(server.received[2].headers['content-type']).to.equal('application/yaml; charset=utf-8');
      await callDownstreamApi(deps, { options: apiOptions(server.origin, { httpMethod: 'Post' }), inbound: { contentType: 'image/png', body: Buffer.from('PNG-ish ascii') } });
      expect(server.received[3].headers['content-type']).to.equal('image/png');
    });

    it('forwards no body when the inbound request had no or an unparseable Content-Type', async () => {
      for (const contentType of [undefined, '', '   ', 'not a media type']) {
        await callDownstreamApi(deps, { options: apiOptions(server.origin, { httpMethod: 'POST' }), inbound: { ...(contentType === undefined ? {} : { contentType }), body: Buffer.from('secret-ish body') } });
      }
      for (const seen of server.received) {
        expect(seen.body.length).to.equal(0);
        expect(seen.headers).not.to.have.property('content-type');
      }
    });

    it('round-trips a binary body byte-exact in both directions', async () => {
      const bytes = Buffer.alloc(70_000);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + 7) & 0xff;
      server.handler = (_req, res, body) => {
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length });
        res.end(body);
      };
      const result = await callDownstreamApi(deps, { options: apiOptions(server.origin, { httpMethod: 'POST' }), inbound: { contentType: 'application/octet-stream', body: bytes } });
      expect(server.received[0].headers['content-type']).to.equal('application/octet-stream');
      expect(server.received[0].body.equals(bytes)).to.equal(true);
      expect(result.contentEncoding).to.equal('base64');
      expect(Buffer.from(result.content!, 'base64').equals(bytes)).to.equal(true);
    });

    it('never forwards reserved ExtraHeaderParameters, logs them in one line by name only (at most 8), and keeps the others', async () => {
      const extraHeaderParameters = {
        Authorization: 'Bearer caller-supplied',
        'X-Forwarded-For': '203.0.113.7',
        Cookie: 'session=abc',
        Host: 'evil.example',
        'X-MS-CLIENT-PRINCIPAL': 'e30=',
        'Proxy-Authorization': 'Basic eDp5',
        'Transfer-Encoding': 'chunked',
        'Sec-Fetch-Site': 'none',
        'X-Injected': 'a\r\nX-Evil: 1',
        'X-Custom-Header': 'test-value',
        'OData-Version': '4.0',
      };
      await callDownstreamApi(deps, { options: apiOptions(server.origin, { extraHeaderParameters }), inbound: noBody });
      const h = server.received[0].headers;
      expect(h.authorization).to.equal('Bearer token-1');
      expect(h.host).to.equal(`127.0.0.1:${server.port}`);
      expect(h['x-custom-header']).to.equal('test-value');
      expect(h['odata-version']).to.equal('4.0');
      for (const absent of ['x-forwarded-for', 'cookie', 'x-ms-client-principal', 'proxy-authorization', 'sec-fetch-site', 'x-injected', 'x-evil']) {
        expect(h, absent).not.to.have.property(absent);
      }
      expect(h['transfer-encoding']).to.equal(undefined);

      const skippedLines = deps.logs.filter((l) => l.event === 'ExtraHeaderParametersSkipped');
      expect(skippedLines).to.have.length(1);
      const line = skippedLines[0] as { level: string; apiName: string; skippedCount: number; skipped: { name: string; reason: string }[] };
      expect(line).to.include({ level: 'warn', apiName: 'TestApi', skippedCount: 9 });
      expect(line.skipped.map((h) => h.name)).to.deep.equal(['Authorization', 'X-Forwarded-For', 'Cookie', 'Host', 'X-MS-CLIENT-PRINCIPAL', 'Proxy-Authorization', 'Transfer-Encoding', 'Sec-Fetch-Site']);
      expect(line.skipped[0].reason).to.equal('reserved');
      const logText = JSON.stringify(deps.logs);
      for (const secret of ['caller-supplied', 'session=abc', 'token-1', 'eDp5']) expect(logText).not.to.contain(secret);
    });
  });

  describe('the result', () => {
    it('passes a 404 through with its content headers and body', async () => {
      server.handler = (_req, res) => json(res, 404, { error: { code: 'NotFound' } }, { ETag: '"x"', 'Set-Cookie': 'a=b', 'X-Request-Id': 'r1' });
      const result = await callDownstreamApi(deps, { options: apiOptions(server.origin), inbound: noBody });
      const body = '{"error":{"code":"NotFound"}}';
      const expected: DownstreamResult = {
        statusCode: 404,
        headers: { 'Content-Type': ['application/json; charset=utf-8'], 'Content-Length': [String(body.length)] },
        content: body,
      };
      expect(result).to.deep.equal(expected);
    });

    it('returns content null for a 204 and the echoed content for a 202', async () => {
      server.handler = (_req, res) => {
        res.writeHead(204);
        res.end();
      };
      expect(await callDownstreamApi(deps, { options: apiOptions(server.origin), inbound: noBody })).to.deep.equal({ statusCode: 204, headers: { 'Content-Length': ['0'] }, content: null });

      server.handler = (_req, res, body) => {
        res.writeHead(202, { 'Content-Type': 'text/plain' });
        res.end(body);
      };
      const accepted = await callDownstreamApi(deps, { options: apiOptions(server.origin, { httpMethod: 'POST' }), inbound: { contentType: 'text/plain', body: Buffer.from('queued') } });
      expect(accepted.statusCode).to.equal(202);
      expect(accepted.content).to.equal('queued');
      expect(accepted.headers['Content-Type']).to.deep.equal(['text/plain']);
    });

    it('returns every end-to-end header except Set-Cookie only when returnAllResponseHeaders is on', async () => {
      server.handler = (_req, res) => json(res, 200, {}, { ETag: '"v7"', 'Set-Cookie': ['a=1', 'b=2'], 'X-Request-Id': 'r1', 'Cache-Control': 'no-store' });
      const defaults = await callDownstreamApi(deps, { options: apiOptions(server.origin), inbound: noBody });
      expect(Object.keys(defaults.headers).sort()).to.deep.equal(['Content-Length', 'Content-Type']);

      const all = makeDeps({ returnAllResponseHeaders: true });
      try {
        const result = await callDownstreamApi(all, { options: apiOptions(server.origin), inbound: noBody });
        expect(result.headers['ETag']).to.deep.equal(['"v7"']);
        expect(result.headers['X-Request-Id']).to.deep.equal(['r1']);
        expect(result.headers['Cache-Control']).to.deep.equal(['no-store']);
        expect(result.headers['Content-Type']).to.deep.equal(['application/json; charset=utf-8']);
        expect(result.headers).not.to.have.property('Set-Cookie');
        expect(result.headers).not.to.have.property('Connection');
        expect(result.headers).not.to.have.property('Keep-Alive');
      } finally {
        await all.close();
      }
    });
  });

  describe('redirects', () => {
    let other: RecordingServer;
    beforeEach(async () => {
      other = await startRecordingServer((_req, res) => json(res, 200, { at: 'other' }));
    });
    afterEach(() => other.close());

    it('are not followed by default: the 3xx is returned without Location and the target is not contacted', async () => {
      server.handler = (_req, res) => {
        res.writeHead(302, { Location: other.origin + '/target', 'Content-Length': 0 });
        res.end();
      };
      const result = await callDownstreamApi(deps, { options: apiOptions(server.origin), inbound: noBody });
      expect(result).to.deep.equal({ statusCode: 302, headers: { 'Content-Length': ['0'] }, content: null });
      expect(other.received).to.have.length(0);
    });

    it('are followed on the same origin when allowed, keeping the token; 303 turns POST into GET without body', async () => {
      const follow = makeDeps({ allowOutboundRedirects: true });
      try {
        server.handler = (req, res) => {
          if (req.url === '/start') {
            res.writeHead(303, { Location: '/final' });
            res.end('see other');
          } else json(res, 200, { at: req.url });
        };
        const result = await callDownstreamApi(follow, { options: apiOptions(server.origin, { relativePath: 'start', httpMethod: 'POST' }), inbound: { contentType: 'application/json', body: Buffer.from('{"x":1}') } });
        expect(result.statusCode).to.equal(200);
        expect(result.content).to.equal('{"at":"/final"}');
        expect(server.received.map((r) => `${r.method} ${r.url} ${r.body.length} ${r.headers.authorization}`)).to.deep.equal([
          'POST /start 7 Bearer token-1',
          'GET /final 0 Bearer token-1',
        ]);
        expect(server.received[1].headers).not.to.have.property('content-type');
      } finally {
        await follow.close();
      }
    });

    it('never carry the token or credential-like headers to another origin; 307 keeps method and body', async () => {
      const follow = makeDeps({ allowOutboundRedirects: true });
      try {
        server.handler = (_req, res) => {
          res.writeHead(307, { Location: other.origin + '/elsewhere?q=1' });
          res.end();
        };
        const extraHeaderParameters = { 'X-Api-Key': 'k-123', 'X-Session-Id': 's-1', 'X-Custom-Header': 'plain' };
        const result = await callDownstreamApi(follow, { options: apiOptions(server.origin, { httpMethod: 'PUT', extraHeaderParameters }), inbound: { contentType: 'application/json', body: Buffer.from('{"y":2}') } });
        expect(result.statusCode).to.equal(200);
        expect(result.content).to.equal('{"at":"other"}');
        expect(server.received[0].headers.authorization).to.equal('Bearer token-1');
        expect(server.received[0].headers['x-api-key']).to.equal('k-123');
        const seen = other.received[0];
        expect(seen.method).to.equal('PUT');
        expect(seen.url).to.equal('/elsewhere?q=1');
        expect(seen.body.toString()).to.equal('{"y":2}');
        expect(seen.headers).not.to.have.property('authorization');
        expect(seen.headers).not.to.have.property('x-api-key');
        expect(seen.headers).not.to.have.property('x-session-id');
        expect(seen.headers['x-custom-header']).to.equal('plain');
      } finally {
        await follow.close();
      }
    });

    it('stop after maxRedirects and return the last 3xx', async () => {
      const follow = makeDeps({ allowOutboundRedirects: true, maxRedirects: 2 });
      try {
        server.handler = (req, res) => {
          res.writeHead(302, { Location: `/hop${server.received.length}` });
          res.end();
        };
        const result = await callDownstreamApi(follow, { options: apiOptions(server.origin, { relativePath: 'hop0' }), inbound: noBody });
        expect(result.statusCode).to.equal(302);
        expect(server.received.map((r) => r.url)).to.deep.equal(['/hop0', '/hop1', '/hop2']);
      } finally {
        await follow.close();
      }
    });
  });

  describe('claims challenges', () => {
    const claims = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}';
    const challenge = `Bearer realm="", error="insufficient_claims", claims="${Buffer.from(claims).toString('base64')}"`;

    it('re-acquire once with the decoded claims and retry once', async () => {
      server.handler = (req, res) => {
        if (server.received.length === 1) json(res, 401, { error: 'claims' }, { 'WWW-Authenticate': challenge });
        else json(res, 200, { ok: true });
      };
      const result = await callDownstreamApi(deps, { options: apiOptions(server.origin, { httpMethod: 'POST' }), inbound: { contentType: 'application/json', body: Buffer.from('{"n":1}') } });
      expect(result.statusCode).to.equal(200);
      expect(deps.acquirer.requests.map((r) => r.claims)).to.deep.equal([undefined, claims]);
      expect(server.received.map((r) => `${r.headers.authorization} ${r.body.toString()}`)).to.deep.equal(['Bearer token-1 {"n":1}', 'Bearer token-2 {"n":1}']);
    });

    it('are retried only once even when the retry is challenged again', async () => {
      server.handler = (_req, res) => json(res, 401, { error: 'still' }, { 'WWW-Authenticate': challenge });
      const result = await callDownstreamApi(deps, { options: apiOptions(server.origin), inbound: noBody });
      expect(result.statusCode).to.equal(401);
      expect(result.content).to.equal('{"error":"still"}');
      expect(server.received).to.have.length(2);
      expect(deps.acquirer.requests).to.have.length(2);
    });

    it('a 401 without a claims challenge is returned without a retry', async () => {
      server.handler = (_req, res) => json(res, 401, {}, { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
      const result = await callDownstreamApi(deps, { options: apiOptions(server.origin), inbound: noBody });
      expect(result.statusCode).to.equal(401);
      expect(server.received).to.have.length(1);
      expect(deps.acquirer.requests).to.have.length(1);
    });
  });

  describe('transport failures', () => {
    it('connection refused fails fast with downstream_unavailable (500, generic message)', async () => {
      const closed = await startRecordingServer();
      const origin = closed.origin;
      await closed.close();
      const started = Date.now();
      const err = await expectSidecarError(callDownstreamApi(deps, { options: apiOptions(origin), inbound: noBody }), 'downstream_unavailable');
      expect(Date.now() - started).to.be.below(2_000);
      expect(err.spec.httpStatus).to.equal(500);
      expect(err.publicMessage).to.equal('An unexpected error occurred.');
      expect(err.message).not.to.contain('token-1');
    });

    it('a downstream that never answers fails with dependency_timeout within the timeout', async () => {
      const slow = makeDeps({ timeoutMs: 300 });
      server.handler = () => {
        /* never answers */
      };
      try {
        const started = Date.now();
        const err = await expectSidecarError(callDownstreamApi(slow, { options: apiOptions(server.origin), inbound: noBody }), 'dependency_timeout');
        const elapsed = Date.now() - started;
        expect(elapsed).to.be.within(250, 1_500);
        expect(err.spec.httpStatus).to.equal(500);
      } finally {
        await slow.close();
      }
    });

    it('a body that stalls mid-stream fails with dependency_timeout', async () => {
      const slow = makeDeps({ timeoutMs: 300 });
      server.handler = (_req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.write('partial');
      };
      try {
        await expectSidecarError(callDownstreamApi(slow, { options: apiOptions(server.origin), inbound: noBody }), 'dependency_timeout');
      } finally {
        await slow.close();
      }
    });
  });

  describe('cancellation and acquisition failures', () => {
    it('stops waiting when the caller’s signal aborts', async () => {
      server.handler = () => {
        /* never answers */
      };
      const started = Date.now();
      const err = await expectSidecarError(callDownstreamApi(deps, { options: apiOptions(server.origin), inbound: noBody, signal: AbortSignal.timeout(150) }), 'dependency_timeout');
      expect(Date.now() - started).to.be.below(1_500);
      expect(err.detail).to.contain('cancelled');
    });

    it('passes the acquirer’s SidecarError through and never calls the downstream API', async () => {
      deps.acquirer.acquire = async () => {
        throw new SidecarError('acquisition_ui_required', 'MFA required');
      };
      const err = await expectSidecarError(callDownstreamApi(deps, { options: apiOptions(server.origin), inbound: noBody }), 'acquisition_ui_required');
      expect(err.publicMessage).to.equal('MFA required');
      expect(server.received).to.have.length(0);
    });
  });

  describe('response size cap', () => {
    it('cuts off a streamed response beyond maxResponseBytes and closes the connection', async () => {
      const capped = makeDeps({ maxResponseBytes: 64 * 1024 });
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      const limit = 256 * 1024 * 1024;
      let written = 0;
      let resolveClosed!: () => void;
      const closed = new Promise<void>((resolve) => (resolveClosed = resolve));
      // A raw server: streams up to 256 MiB, far more than the cap, unless the client hangs up.
      const flood = createServer((_req, res) => {
        res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
        res.on('close', () => resolveClosed());
        const pump = (): void => {
          while (written < limit && !res.destroyed) {
            written += chunk.length;
            if (!res.write(chunk)) {
              res.once('drain', pump);
              return;
            }
          }
          if (!res.destroyed) res.end();
        };
        pump();
      });
      await new Promise<void>((resolve) => flood.listen(0, '127.0.0.1', resolve));
      const origin = `http://127.0.0.1:${(flood.address() as AddressInfo).port}`;
      try {
        const err = await expectSidecarError(callDownstreamApi(capped, { options: apiOptions(origin), inbound: noBody }), 'downstream_response_too_large');
        expect(err.spec.httpStatus).to.equal(502);
        await closed;
        expect(written).to.be.below(limit / 4);
      } finally {
        await capped.close();
        flood.closeAllConnections();
        await new Promise<void>((resolve) => flood.close(() => resolve()));
      }
    });

    it('rejects a declared Content-Length above the cap without reading the body', async () => {
      const capped = makeDeps({ maxResponseBytes: 1024 });
      server.handler = (_req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 10 * 1024 * 1024 });
        res.write('x'.repeat(100));
      };
      try {
        await expectSidecarError(callDownstreamApi(capped, { options: apiOptions(server.origin), inbound: noBody }), 'downstream_response_too_large');
      } finally {
        await capped.close();
      }
    });
  });
});
