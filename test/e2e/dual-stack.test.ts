/**
 * `+` and `*` listeners (Kestrel's ListenAnyIP), driven through the built sidecar: every interface of
 * both families on one dual-stack socket, so IPv4 and IPv6 peers both reach each listener, and an
 * IPv4 loopback client (seen as `::ffff:127.0.0.1`) still counts as local for the identity API.
 */
import { expect } from 'chai';
import { createServer } from 'node:net';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js';
import { call, healthCheck, sidecarEnv } from '../helpers/e2e.js';

/** Whether this host can bind IPv6 loopback at all (a kernel without IPv6 cannot). */
function hasIpv6(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(0, '::1', () => s.close(() => resolve(true)));
  });
}

describe('listeners on + and * (every interface, IPv4 and IPv6)', function () {
  this.timeout(30_000);
  let emu: Emulator;
  let sidecar: RunningSidecar;
  let ipv6 = false;

  before(async () => {
    ipv6 = await hasIpv6();
    emu = await startEmulator();
    sidecar = await startSidecar(sidecarEnv(emu, {
      Sidecar__Http__Url: 'http://*:0',
      Sidecar__Management__Url: 'http://+:0',
      Sidecar__ExtAuthz__Address: '*:0',
      ASPNETCORE_ENVIRONMENT: 'Production',
    }));
  });
  after(async () => {
    await sidecar?.stop();
    await emu?.close();
  });

  it('binds each listener to :: (0.0.0.0 where the host has no IPv6) and reports it', () => {
    const any = ipv6 ? '::' : '0.0.0.0';
    expect(sidecar.listening.http.map((l) => l.host)).to.deep.equal([any]);
    expect(sidecar.listening.management!.host).to.equal(any);
    expect(sidecar.listening.extAuthz!.host).to.equal(any);
  });

  it('answers IPv4 and IPv6 peers on the management, identity and ext_authz listeners', async function () {
    const hosts = ipv6 ? ['127.0.0.1', '[::1]'] : ['127.0.0.1'];
    // The Authorization service is SERVING once the signing keys are loaded, which /readyz reports;
    // on a loaded machine that can come after the listening line.
    const readyBy = Date.now() + 10_000;
    while ((await call(`http://127.0.0.1:${sidecar.listening.management!.port}/readyz`)).status !== 200 && Date.now() < readyBy) await new Promise((r) => setTimeout(r, 50));
    for (const host of hosts) {
      expect((await call(`http://${host}:${sidecar.listening.management!.port}/healthz`)).status, host).to.equal(200);
      // Loopback over either family is local: the request reaches the route (401 without a token), not the 403 of a remote peer.
      const validate = await call(`http://${host}:${sidecar.listening.http[0].port}/Validate`);
      expect(validate.status, host).to.equal(401);
      expect(await healthCheck(`${host}:${sidecar.listening.extAuthz!.port}`, 'envoy.service.auth.v3.Authorization'), host).to.equal('SERVING');
    }
  });

  it('counts requests no route handled (404, 405) under route="unrouted" in /metrics', async function () {
    const api = `http://127.0.0.1:${sidecar.listening.http[0].port}`;
    expect((await call(`${api}/NoSuchRoute`)).status).to.equal(404);
    expect((await call(`${api}/Validate`, { method: 'POST' })).status).to.equal(405);
    const text = (await call(`http://127.0.0.1:${sidecar.listening.management!.port}/metrics`)).text;
    expect(text).to.match(/^entra_sidecar_http_requests_total\{route="unrouted",status_class="4xx"\} 2$/m);
  });
});
