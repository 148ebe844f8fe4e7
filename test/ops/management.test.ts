import { expect } from 'chai';
import { request } from 'node:http';
import { createLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';
import { startManagementServer, type ManagementServer, type Readiness } from '../../src/management/server.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A raw node:http call, so HEAD and arbitrary methods behave exactly as a probe or scraper sends them. */
function call(port: number, method: string, path: string, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('management listener', () => {
  let server: ManagementServer;
  let readiness: Readiness;
  const metrics = createMetrics({ version: '0.0.0-test', collectProcess: true });

  beforeEach(async () => {
    readiness = { ready: false, reasons: ['signing_keys_not_loaded'] };
    server = await startManagementServer({
      address: { host: '127.0.0.1', port: 0 },
      metrics,
      readiness: () => readiness,
      logger: createLogger('silent'),
    });
  });

  afterEach(async () => {
    await server.close(1_000);
  });

  it('binds to the requested host and reports the real port', () => {
    expect(server.host).to.equal('127.0.0.1');
    expect(server.port).to.be.greaterThan(0);
  });

  it('answers liveness with 200 Healthy even while not ready', async () => {
    const r = await call(server.port, 'GET', '/healthz');
    expect(r.status).to.equal(200);
    expect(r.body).to.equal('Healthy');
    expect(r.headers['content-type']).to.equal('text/plain; charset=utf-8');
    expect(r.headers['cache-control']).to.equal('no-store');
  });

  it('reports readiness transitions: not ready with reasons, then ready, then shutting down', async () => {
    let r = await call(server.port, 'GET', '/readyz');
    expect(r.status).to.equal(503);
    expect(r.headers['content-type']).to.equal('application/json; charset=utf-8');
    expect(JSON.parse(r.body)).to.deep.equal({ status: 'not_ready', reasons: ['signing_keys_not_loaded'] });

    readiness = { ready: true, reasons: [] };
    r = await call(server.port, 'GET', '/readyz');
    expect(r.status).to.equal(200);
    expect(JSON.parse(r.body)).to.deep.equal({ status: 'ready' });

    server.setShuttingDown();
    r = await call(server.port, 'GET', '/readyz');
    expect(r.status).to.equal(503);
    expect(JSON.parse(r.body)).to.deep.equal({ status: 'not_ready', reasons: ['shutting_down'] });
    // Liveness is unaffected by draining.
    expect((await call(server.port, 'GET', '/healthz')).status).to.equal(200);
  });

  it('is not ready when the readiness callback throws (fail closed)', async () => {
    await server.close(100);
    server = await startManagementServer({
      address: { host: '127.0.0.1', port: 0 },
      metrics,
      readiness: () => {
        throw new Error('boom');
      },
      logger: createLogger('silent'),
    });
    const r = await call(server.port, 'GET', '/readyz');
    expect(r.status).to.equal(503);
    expect(JSON.parse(r.body)).to.deep.equal({ status: 'not_ready', reasons: ['readiness_check_failed'] });
  });

  it('ignores the query string when matching a path', async () => {
    readiness = { ready: true, reasons: [] };
    expect((await call(server.port, 'GET', '/readyz?verbose=1')).status).to.equal(200);
  });

  it('serves Prometheus text with the registry content type', async () => {
    metrics.observeCheck('deny', 'token_expired', 0.0002);
    const r = await call(server.port, 'GET', '/metrics');
    expect(r.status).to.equal(200);
    expect(r.headers['content-type']).to.equal(metrics.contentType);
    expect(r.headers['content-type']).to.match(/^text\/plain; version=0\.0\.4/);
    expect(r.body).to.match(/^# TYPE entra_sidecar_ext_authz_checks_total counter$/m);
    expect(r.body).to.match(/^entra_sidecar_ext_authz_checks_total\{decision="deny",reason="token_expired"\} [1-9]/m);
    expect(r.body).to.match(/^# TYPE process_resident_memory_bytes gauge$/m);
  });

  it('never shows anything token-shaped in /metrics', async () => {
    const jwt = 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJzZWNyZXQtdXNlciJ9.c2lnbmF0dXJlLXZhbHVl';
    metrics.observeHttpRequest(jwt, 401, 0.001);
    metrics.countValidationFailure(jwt as never);
    const r = await call(server.port, 'GET', '/metrics');
    expect(r.body).to.not.match(/eyJ[A-Za-z0-9_-]{5,}/);
    // No JWS-shaped value anywhere (three base64url segments).
    expect(r.body).to.not.match(/[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/);
    // No long opaque strings at all in label values.
    for (const m of r.body.matchAll(/="([^"]*)"/g)) expect(m[1].length, m[1]).to.be.lessThan(64);
  });

  it('answers HEAD like GET without a body', async () => {
    const r = await call(server.port, 'HEAD', '/healthz');
    expect(r.status).to.equal(200);
    expect(r.body).to.equal('');
  });

  it('answers 404 for anything else, including identity API routes', async () => {
    for (const p of ['/', '/AuthorizationHeader/graph', '/Validate', '/metrics/', '/HEALTHZ', '/readyz/x']) {
      const r = await call(server.port, 'GET', p);
      expect(r.status, p).to.equal(404);
      expect(r.body).to.equal('Not found.');
    }
  });

  it('answers 405 with Allow for non-GET methods on its paths', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      const r = await call(server.port, method, '/metrics', method === 'DELETE' ? undefined : '{}');
      expect(r.status, method).to.equal(405);
      expect(r.headers.allow).to.equal('GET, HEAD');
    }
  });

  it('rejects oversized request headers', async () => {
    const r = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: server.port, path: '/healthz', headers: { 'x-big': 'a'.repeat(16 * 1024) }, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    expect(r).to.equal(431);
  });

  it('stops accepting connections after close', async () => {
    const port = server.port;
    await server.close(100);
    let refused = false;
    await call(port, 'GET', '/healthz').catch(() => {
      refused = true;
    });
    expect(refused).to.equal(true);
    // afterEach closes again: close is idempotent.
  });
});
