/**
 * Process lifecycle through the built sidecar: graceful shutdown under load (issue 7), Development
 * mode (OpenAPI document, no loopback restriction), and the OpenAPI document kept honest.
 */
import { expect } from 'chai';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { ROUTES } from '../../src/http/routes.js';
import { OPENAPI_DOCUMENT } from '../../src/http/openapi.js';
import { runSidecarToExit, startSidecar, waitForLine } from '../helpers/sidecar.js';
import { call, sidecarEnv } from '../helpers/e2e.js';

describe('process lifecycle (built sidecar)', function () {
  this.timeout(40_000);
  let emu: Emulator;
  let slow: Server;
  let slowUrl: string;
  before(async () => {
    emu = await startEmulator();
    slow = createServer((_req, res) => setTimeout(() => res.end('done'), 1_000));
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    slowUrl = `http://127.0.0.1:${(slow.address() as AddressInfo).port}/`;
  });
  after(async () => {
    slow?.close();
    await emu?.close();
  });

  it('exits 1 promptly when a listener cannot bind (the background key loader must not keep it alive)', async () => {
    // The HTTP listener binds first, then ext_authz fails on a port that is taken.
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    try {
      const port = (taken.address() as AddressInfo).port;
      const t0 = Date.now();
      const { code, stdout, stderr } = await runSidecarToExit(sidecarEnv(emu, { Sidecar__ExtAuthz__Address: `127.0.0.1:${port}` }), [], 10_000);
      expect(code).to.equal(1);
      expect(Date.now() - t0).to.be.lessThan(8_000);
      expect(stdout + stderr).to.contain('failed to start');
    } finally {
      taken.close();
    }
  });

  it('answers all 50 in-flight requests after SIGTERM, then exits 0 within the bound', async () => {
    const s = await startSidecar(sidecarEnv(emu, {
      DownstreamApis__slow__BaseUrl: slowUrl,
      DownstreamApis__slow__Scopes__0: 'api://downstream/.default',
      DownstreamApis__slow__RequestAppToken: 'true',
    }));
    // Warm the token cache so every request is in the downstream call when the signal arrives.
    expect((await call(`${s.url}/DownstreamApiUnauthenticated/slow`, { method: 'POST' })).status).to.equal(200);
    const inflight = Array.from({ length: 50 }, () => call(`${s.url}/DownstreamApiUnauthenticated/slow`, { method: 'POST' }));
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    const exited = s.stop(15_000);
    const answers = await Promise.all(inflight);
    for (const a of answers) {
      expect(a.status).to.equal(200);
      expect(a.json().content).to.equal('done');
    }
    expect(await exited).to.equal(0);
    expect(Date.now() - t0).to.be.lessThan(12_000);
    expect(await waitForLine(s, '"event":"shutdown"')).to.equal(true);
  });

  it('serves /openapi/v1.json in Development only, with every route documented', async () => {
    const s = await startSidecar(sidecarEnv(emu, { ASPNETCORE_ENVIRONMENT: 'Development' }));
    try {
      const r = await call(`${s.url}/openapi/v1.json`);
      expect(r.status).to.equal(200);
      expect(r.json().openapi).to.match(/^3\.1/);
    } finally {
      await s.stop();
    }
  });
});

describe('OpenAPI document', () => {
  it('documents exactly the routes the server registers, with their methods', () => {
    const documented = new Map<string, string>();
    for (const [p, ops] of Object.entries(OPENAPI_DOCUMENT.paths)) for (const m of Object.keys(ops)) documented.set(p.split('/')[1].toLowerCase(), m.toUpperCase());
    const served = ROUTES.filter((r) => r.name !== 'OpenApi');
    expect(documented.size).to.equal(served.length);
    for (const r of served) {
      const literal = [...documented.keys()].find((k) => r.matches(k, k === 'healthz' || k === 'validate' ? 1 : 2, false));
      expect(literal, r.name).to.not.equal(undefined);
      // A route without a method constraint (/healthz) is documented by its GET.
      expect(documented.get(literal!), r.name).to.equal(r.method === 'ANY' ? 'GET' : r.method);
    }
  });

  it('names the response shapes the routes write', () => {
    const schemas = OPENAPI_DOCUMENT.components.schemas;
    expect(schemas.ValidateAuthorizationHeaderResult.required).to.deep.equal(['protocol', 'token', 'claims']);
    expect(schemas.AuthorizationHeaderResult.required).to.deep.equal(['authorizationHeader']);
    expect(schemas.DownstreamApiResult.required).to.deep.equal(['statusCode', 'headers', 'content']);
  });
});
