/**
 * Process lifecycle through the built sidecar: graceful shutdown under load (issue 7) on both doors, Development
 * mode (OpenAPI document, no loopback restriction), and the OpenAPI document kept honest.
 */
import { expect } from 'chai';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { ROUTES } from '../../src/http/routes.js';
import { OPENAPI_DOCUMENT } from '../../src/http/openapi.js';
import { runSidecarToExit, startSidecar, waitForLine } from '../helpers/sidecar.js';
import { call, sidecarEnv } from '../helpers/e2e.js';
import { createAuthorizationClient } from '../../src/extauthz/protos.js';
import { check, envoyCheckRequest, headerMap, type CheckResult } from '../extauthz/fixtures.js';

/** One client connection kept open across requests, read as raw HTTP/1.1 (answers with Content-Length only). */
class KeepAliveConnection {
  private buffered = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  closed = false;
  private readonly socket: Socket;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, d]);
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => {});
  }

  static open(url: string): Promise<KeepAliveConnection> {
    const { hostname, port } = new URL(url);
    return new Promise((resolve, reject) => {
      const socket = connect(Number(port), hostname, () => resolve(new KeepAliveConnection(socket)));
      socket.once('error', reject);
    });
  }

  private changed(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no data in time')), timeoutMs);
      this.waiter = () => {
        clearTimeout(timer);
        this.waiter = undefined;
        resolve();
      };
    });
  }

  /** Sends one request and reads its answer (status line + headers, then Content-Length bytes of body). */
  async exchange(request: string, timeoutMs = 5_000): Promise<{ head: string; body: string }> {
    this.socket.write(request);
    for (;;) {
      const end = this.buffered.indexOf('\r\n\r\n');
      if (end >= 0) {
        const head = this.buffered.subarray(0, end + 4).toString('latin1');
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (this.buffered.length >= end + 4 + length) {
          const body = this.buffered.subarray(end + 4, end + 4 + length).toString('utf8');
          this.buffered = this.buffered.subarray(end + 4 + length);
          return { head, body };
        }
      }
      if (this.closed) throw new Error('the server closed the connection');
      await this.changed(timeoutMs);
    }
  }

  /** Resolves when the server has closed the connection (rejects after `timeoutMs`). */
  async whenClosed(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) await this.changed(Math.max(1, deadline - Date.now()));
  }

  destroy(): void {
    this.socket.destroy();
  }
}

describe('process lifecycle (built sidecar)', function () {
  this.timeout(40_000);
  let emu: Emulator;
  let slow: Server;
  let slowUrl: string;
  /** Requests the slow downstream API has received. */
  let slowArrivals = 0;
  /** Until released, the slow API holds every answer (so a request stays in flight however loaded the machine is). */
  let slowGate: Promise<void> = Promise.resolve();
  before(async () => {
    emu = await startEmulator();
    slow = createServer((_req, res) => {
      slowArrivals++;
      void slowGate.then(() => setTimeout(() => res.end('done'), 1_000));
    });
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
      // It names the listener, the address and the key that moves it.
      expect(stdout + stderr).to.contain(`The ext_authz gRPC listener could not start on 127.0.0.1:${port}`).and.to.contain('Sidecar__ExtAuthz__Address');
    } finally {
      taken.close();
    }
  });

  it('names the management listener and Sidecar__Management__Url when its port is taken (an app in the pod may use 9090)', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    try {
      const port = (taken.address() as AddressInfo).port;
      const { code, stdout, stderr } = await runSidecarToExit(sidecarEnv(emu, { Sidecar__Management__Url: `http://127.0.0.1:${port}` }), [], 10_000);
      expect(code).to.equal(1);
      expect(stdout + stderr).to.contain(`The management listener could not start on 127.0.0.1:${port}`).and.to.contain('Sidecar__Management__Enabled=false');
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
    let release!: () => void;
    slowGate = new Promise<void>((r) => (release = r));
    const arrivedBefore = slowArrivals;
    const inflight = Array.from({ length: 50 }, () => call(`${s.url}/DownstreamApiUnauthenticated/slow`, { method: 'POST' }));
    try {
      // SIGTERM only once the downstream API holds all 50: each is then in flight inside the sidecar.
      const arrivedBy = Date.now() + 20_000;
      while (slowArrivals - arrivedBefore < 50 && Date.now() < arrivedBy) await new Promise((r) => setTimeout(r, 20));
      expect(slowArrivals - arrivedBefore, 'requests received downstream before SIGTERM').to.equal(50);
    } catch (err) {
      release();
      throw err;
    }
    const t0 = Date.now();
    const exited = s.stop(15_000);
    // The answers start 1 s after the signal went out.
    release();
    const answers = await Promise.all(inflight);
    for (const a of answers) {
      expect(a.status).to.equal(200);
      expect(a.json().content).to.equal('done');
    }
    expect(await exited).to.equal(0);
    expect(Date.now() - t0).to.be.lessThan(12_000);
    expect(await waitForLine(s, '"event":"shutdown"')).to.equal(true);
  });

  it('answers an ext_authz Check in flight after SIGTERM (its token request held by Entra), then exits 0', async () => {
    const s = await startSidecar(sidecarEnv(emu, {
      DownstreamApis__heldApp__Scopes__0: 'api://downstream/.default',
      DownstreamApis__heldApp__RequestAppToken: 'true',
    }));
    const client = createAuthorizationClient(`127.0.0.1:${s.listening.extAuthz!.port}`);
    try {
      const token = await emu.mint({ kind: 'user', scp: 'access_as_user' });
      const request = (extensions: Record<string, string>) => envoyCheckRequest({ headers: { authorization: `Bearer ${token}` }, contextExtensions: extensions });
      // Signing keys loaded: a Check that needs no downstream token is allowed.
      const readyBy = Date.now() + 15_000;
      while ((await check(client, request({}))).status?.code !== 0 && Date.now() < readyBy) await new Promise((r) => setTimeout(r, 100));
      // Entra holds the first token request 2 s: the Check that needs it is in flight meanwhile.
      emu.fault({ route: 'token', delayMs: 2_000 });
      const tokenRequestsBefore = emu.counters().token;
      let settled = false;
      const inflight = check(client, request({ downstream_api: 'heldApp' })).finally(() => (settled = true));
      const arrivedBy = Date.now() + 10_000;
      while (emu.counters().token === tokenRequestsBefore && Date.now() < arrivedBy) await new Promise((r) => setTimeout(r, 20));
      expect(emu.counters().token - tokenRequestsBefore, 'token requests Entra received before SIGTERM').to.equal(1);
      expect(settled, 'the Check was answered before SIGTERM').to.equal(false);
      const exited = s.stop(15_000);
      expect(await waitForLine(s, '"signal":"SIGTERM"'), 'shutdown line naming SIGTERM').to.equal(true);
      const answer: CheckResult = await inflight;
      expect(answer.status?.code ?? 0, JSON.stringify(answer.denied_response ?? {})).to.equal(0);
      expect(headerMap(answer.ok_response.headers).authorization).to.match(/^Bearer ey/);
      expect(await exited).to.equal(0);
      expect(await waitForLine(s, '"event":"stopped"')).to.equal(true);
    } finally {
      emu.clearFaults();
      client.close();
      await s.stop();
    }
  });

  it('drains on SIGINT as on SIGTERM (Ctrl-C in `docker run -it` or a terminal): the request in flight is answered, then exit 0', async () => {
    const s = await startSidecar(sidecarEnv(emu, {
      DownstreamApis__slow__BaseUrl: slowUrl,
      DownstreamApis__slow__Scopes__0: 'api://downstream/.default',
      DownstreamApis__slow__RequestAppToken: 'true',
    }));
    let release!: () => void;
    slowGate = new Promise<void>((r) => (release = r));
    const arrivedBefore = slowArrivals;
    const inflight = call(`${s.url}/DownstreamApiUnauthenticated/slow`, { method: 'POST' });
    try {
      const arrivedBy = Date.now() + 20_000;
      while (slowArrivals === arrivedBefore && Date.now() < arrivedBy) await new Promise((r) => setTimeout(r, 20));
      expect(slowArrivals - arrivedBefore, 'request received downstream before SIGINT').to.equal(1);
      const exited = new Promise<number | null>((resolve) => s.child.once('exit', (code) => resolve(code)));
      s.child.kill('SIGINT');
      expect(await waitForLine(s, '"signal":"SIGINT"'), 'shutdown line naming SIGINT').to.equal(true);
      release();
      const answer = await inflight;
      expect(answer.status).to.equal(200);
      expect(answer.json().content).to.equal('done');
      expect(await exited).to.equal(0);
      expect(await waitForLine(s, '"event":"stopped"')).to.equal(true);
    } finally {
      release();
      await s.stop();
    }
  });

  it('cuts what still runs when the 10 s grace ends (token requests Entra holds, a downstream call), without waiting on their outbound calls, and exits 0 with a stopped line counting them', async () => {
    const s = await startSidecar(sidecarEnv(emu, {
      Sidecar__LogLevel: 'info',
      // Outbound calls that outlive the grace by far, as with the 100 s the docs suggest for slow APIs.
      Sidecar__Outbound__TimeoutMs: '60000',
      DownstreamApis__slow__BaseUrl: slowUrl,
      DownstreamApis__slow__Scopes__0: 'api://downstream/.default',
      DownstreamApis__slow__RequestAppToken: 'true',
      // Tokens of their own (the token request's extra headers are part of the cache key), so a
      // call to each waits on Entra.
      DownstreamApis__held__Scopes__0: 'api://downstream/.default',
      DownstreamApis__held__RequestAppToken: 'true',
      'DownstreamApis__held__AcquireTokenOptions__ExtraHeadersParameters__x-caller': 'http',
      DownstreamApis__heldCheck__Scopes__0: 'api://downstream/.default',
      DownstreamApis__heldCheck__RequestAppToken: 'true',
      'DownstreamApis__heldCheck__AcquireTokenOptions__ExtraHeadersParameters__x-caller': 'check',
    }));
    const client = createAuthorizationClient(`127.0.0.1:${s.listening.extAuthz!.port}`);
    let release!: () => void;
    try {
      const token = await emu.mint({ kind: 'user', scp: 'access_as_user' });
      const request = (extensions: Record<string, string>) => envoyCheckRequest({ headers: { authorization: `Bearer ${token}` }, contextExtensions: extensions });
      const readyBy = Date.now() + 15_000;
      while ((await check(client, request({}))).status?.code !== 0 && Date.now() < readyBy) await new Promise((r) => setTimeout(r, 100));
      // The downstream call's token is cached, so that call is in the downstream API when the grace ends.
      expect((await call(`${s.url}/DownstreamApiUnauthenticated/slow`, { method: 'POST' })).status).to.equal(200);
      slowGate = new Promise<void>((r) => (release = r));
      emu.fault({ route: 'token', delayMs: 30_000, sticky: true });
      const arrivedBefore = slowArrivals;
      const tokenRequestsBefore = emu.counters().token;
      const outcome = (p: Promise<unknown>) => p.then(() => 'answered', () => 'cut');
      const inflight = [
        outcome(call(`${s.url}/DownstreamApiUnauthenticated/slow`, { method: 'POST' })),
        outcome(call(`${s.url}/AuthorizationHeaderUnauthenticated/held`)),
        outcome(check(client, request({ downstream_api: 'heldCheck' }), 60_000)),
      ];
      const arrivedBy = Date.now() + 10_000;
      while ((slowArrivals === arrivedBefore || emu.counters().token - tokenRequestsBefore < 2) && Date.now() < arrivedBy) await new Promise((r) => setTimeout(r, 20));
      expect(slowArrivals - arrivedBefore, 'downstream calls held before SIGTERM').to.equal(1);
      expect(emu.counters().token - tokenRequestsBefore, 'token requests held before SIGTERM').to.equal(2);
      const t0 = Date.now();
      // SIGTERM; SIGKILL only if it is still running after 20 s. Resolves once every line is in.
      const code = await s.stop(20_000);
      const elapsed = Date.now() - t0;
      expect(code, s.lines.slice(-5).join('\n')).to.equal(0);
      // The grace, then a prompt end: before the force exit (1) at 12 s.
      expect(elapsed).to.be.within(9_500, 11_500);
      const stopped = s.lines.find((l) => l.includes('"event":"stopped"'));
      expect(stopped, 'stopped line').to.be.a('string');
      expect(JSON.parse(stopped!)).to.include({ cutRequests: 3 });
      expect(s.lines.some((l) => l.includes('shutdown_forced'))).to.equal(false);
      // Every caller hears at once: a cut connection (or an answer), never a hang.
      const settled = await Promise.race([Promise.all(inflight), new Promise<'hang'>((r) => setTimeout(() => r('hang'), 3_000))]);
      expect(settled).to.not.equal('hang');
    } finally {
      release?.();
      emu.clearFaults();
      client.close();
      await s.stop();
    }
  });

  it('keeps an idle keep-alive connection open past 5 s (Kestrel\'s 130 s) and closes it at once on shutdown', async () => {
    // HeadersTimeoutMs below the idle time: waiting between requests is not waiting for headers.
    const s = await startSidecar(sidecarEnv(emu, { Sidecar__Http__HeadersTimeoutMs: '2000' }));
    const conn = await KeepAliveConnection.open(s.url);
    try {
      const first = await conn.exchange('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
      expect(first.head).to.match(/^HTTP\/1\.1 200 /);
      expect(first.head).to.match(/\r\nkeep-alive: timeout=130\r\n/i);
      // Node's default (5 s) would have closed the connection by now; a pooled client's POST would race it.
      await new Promise((r) => setTimeout(r, 6_000));
      expect(conn.closed, 'closed while idle').to.equal(false);
      const second = await conn.exchange('POST /DownstreamApiUnauthenticated/unknown HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n');
      expect(second.head).to.match(/^HTTP\/1\.1 400 /);
      expect(second.body).to.include('No scopes found');
      const t0 = Date.now();
      expect(await s.stop()).to.equal(0);
      expect(Date.now() - t0, 'an idle connection does not hold up shutdown').to.be.lessThan(3_000);
      await conn.whenClosed(1_000);
    } finally {
      conn.destroy();
      await s.stop();
    }
  });

  it('closes an idle keep-alive connection after Sidecar:Http:KeepAliveTimeoutMs', async () => {
    const s = await startSidecar(sidecarEnv(emu, { Sidecar__Http__KeepAliveTimeoutMs: '300' }));
    const conn = await KeepAliveConnection.open(s.url);
    try {
      expect((await conn.exchange('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')).head).to.match(/^HTTP\/1\.1 200 /);
      const t0 = Date.now();
      // Node adds up to a second of grace to the socket timeout (keepAliveTimeoutBuffer, Node ≥ 24).
      await conn.whenClosed(4_000);
      expect(Date.now() - t0).to.be.lessThan(4_000);
    } finally {
      conn.destroy();
      await s.stop();
    }
  });

  it('serves /openapi/v1.json in Development only, with every route documented', async () => {
    const s = await startSidecar(sidecarEnv(emu, { ASPNETCORE_ENVIRONMENT: 'Development' }));
    try {
      const r = await call(`${s.url}/openapi/v1.json`);
      expect(r.status).to.equal(200);
      expect(r.json().openapi).to.match(/^3\.1/);
      // Microsoft's title and version (reference §2): client generators name the client after the title.
      expect(r.json().info).to.deep.equal({ title: 'Microsoft.Identity.Web.Sidecar | v1', version: '1.0.0' });
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
