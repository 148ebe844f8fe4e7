/**
 * The egress proxy (src/net/proxy.ts), end to end through the built sidecar: every call to Entra
 * through `HTTPS_PROXY` with its credentials, plain-http downstream calls through `HTTP_PROXY` in
 * absolute form, `NO_PROXY`, a proxy that refuses, a proxy variable that is not a URL. The emulator
 * goes by a name only the test proxy resolves, so a call that reached it went through the proxy.
 *
 * With a name and a proxy, `AzureAd:AzureRegion` is testable too: msal sends app-token requests
 * to `<region>.<host>` (ESTS-R), which only the proxy can route.
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { EMULATOR_HOST_NAME, startEmulator, type Emulator } from '../../emulator/index.js';
import { runSidecarToExit, startSidecar, waitForLine, type RunningSidecar } from '../helpers/sidecar.js';
import { call, sidecarEnv } from '../helpers/e2e.js';
import { startTestProxy, type TestProxy } from '../helpers/connect-proxy.js';

const PASSWORD = 'pr0xy-s3cret-pw';
const CREDENTIALS = `egress:${PASSWORD}`;

describe('egress proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) and AzureAd:AzureRegion (built sidecar)', function () {
  this.timeout(60_000);
  let emu: Emulator;
  let proxy: TestProxy;
  let api: Server;
  let apiOrigin: string;
  const apiCalls: string[] = [];
  const running: RunningSidecar[] = [];
  /** Where the emulator listens, by name: what every proxied call to it must target. */
  let emulatorTarget: string;

  before(async () => {
    emu = await startEmulator({ hostName: EMULATOR_HOST_NAME });
    emulatorTarget = `${EMULATOR_HOST_NAME}:${new URL(emu.origin).port}`;
    proxy = await startTestProxy({ credentials: CREDENTIALS });
    api = createServer((req, res) => {
      apiCalls.push(`${req.method} ${req.url} ${req.headers.authorization?.slice(0, 9) ?? ''}`);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
    await new Promise<void>((r) => api.listen(0, '127.0.0.1', r));
    apiOrigin = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
  });
  after(async () => {
    for (const s of running) await s.stop();
    await proxy?.close();
    await new Promise<void>((r) => (api ? api.close(() => r()) : r()));
    await emu?.close();
  });
  beforeEach(() => {
    proxy.calls.length = 0;
    proxy.refuseWith = undefined;
    apiCalls.length = 0;
  });

  const start = async (extra: Record<string, string>): Promise<RunningSidecar> => {
    const s = await startSidecar(
      sidecarEnv(emu, {
        DownstreamApis__app__Scopes__0: 'api://downstream/.default',
        DownstreamApis__app__RequestAppToken: 'true',
        DownstreamApis__app__BaseUrl: `${apiOrigin}/v1/`,
        DownstreamApis__app__RelativePath: 'items',
        ...extra,
      }),
    );
    running.push(s);
    return s;
  };
  const proxyEnv = (): Record<string, string> => ({ HTTPS_PROXY: `http://${CREDENTIALS}@127.0.0.1:${proxy.port}` });
  const appToken = (s: RunningSidecar) => call(`${s.url}/AuthorizationHeaderUnauthenticated/app`);
  const noSecretIn = (s: RunningSidecar): void => {
    const text = s.lines.join('\n');
    expect(text).not.to.include(PASSWORD);
    expect(text).not.to.include(Buffer.from(CREDENTIALS).toString('base64'));
  };

  it('sends metadata, signing-key and token requests through HTTPS_PROXY with its credentials, and never logs them', async () => {
    const s = await start(proxyEnv());
    const token = await emu.mint({ kind: 'user', scp: 'access_as_user' });
    const validated = await call(`${s.url}/Validate`, { token });
    expect(validated.status, validated.text).to.equal(200);
    const app = await appToken(s);
    expect(app.status, app.text).to.equal(200);
    const tunnels = proxy.calls.filter((c) => c.method === 'CONNECT');
    expect(tunnels.length).to.be.greaterThan(0);
    for (const c of tunnels) {
      expect(c.target).to.equal(emulatorTarget);
      expect(c.status).to.equal(200);
      expect(c.proxyAuthorization).to.equal(`Basic ${Buffer.from(CREDENTIALS).toString('base64')}`);
    }
    // The emulator saw the token request, by its name, as through any proxy.
    const tokenRequests = emu.requests().filter((r) => r.route === 'token');
    expect(tokenRequests.length).to.be.greaterThan(0);
    expect(tokenRequests.every((r) => r.headers.host === emulatorTarget)).to.equal(true);
    const announced = s.lines.find((l) => l.includes('"event":"outbound_proxy"'));
    expect(announced, 'the start-up line that names the proxy').not.to.equal(undefined);
    expect(JSON.parse(announced!)).to.include({ https: `http://127.0.0.1:${proxy.port} (with credentials)`, http: 'none' });
    noSecretIn(s);
  });

  it('sends a plain-http downstream call through HTTP_PROXY in absolute form, and straight to a NO_PROXY destination', async () => {
    const proxied = await start({ ...proxyEnv(), HTTP_PROXY: `http://${CREDENTIALS}@127.0.0.1:${proxy.port}` });
    const r = await call(`${proxied.url}/DownstreamApiUnauthenticated/app`, { method: 'POST' });
    expect(r.status, r.text).to.equal(200);
    expect(apiCalls).to.deep.equal(['GET /v1/items Bearer ey']);
    const absolute = proxy.calls.filter((c) => c.method !== 'CONNECT');
    expect(absolute.map((c) => [c.method, c.target, c.status])).to.deep.equal([['GET', `${apiOrigin}/v1/items`, 200]]);
    noSecretIn(proxied);

    proxy.calls.length = 0;
    apiCalls.length = 0;
    const bypassing = await start({ ...proxyEnv(), HTTP_PROXY: `http://${CREDENTIALS}@127.0.0.1:${proxy.port}`, NO_PROXY: 'localhost,127.0.0.0/8' });
    const direct = await call(`${bypassing.url}/DownstreamApiUnauthenticated/app`, { method: 'POST' });
    expect(direct.status, direct.text).to.equal(200);
    expect(apiCalls).to.deep.equal(['GET /v1/items Bearer ey']);
    // Entra still through the proxy; the API not.
    expect(proxy.calls.filter((c) => c.method !== 'CONNECT')).to.deep.equal([]);
    expect(proxy.calls.filter((c) => c.method === 'CONNECT').length).to.be.greaterThan(0);
  });

  it('sends nothing through the proxy to a NO_PROXY domain (the emulator\'s name cannot then be resolved: 503, not a hang)', async () => {
    const s = await start({ ...proxyEnv(), NO_PROXY: `.emulator.test` });
    const token = await emu.mint({ kind: 'user', scp: 'access_as_user' });
    const r = await call(`${s.url}/Validate`, { token });
    expect(r.status).to.equal(503);
    expect(r.json().code).to.equal('signing_keys_unavailable');
    expect(proxy.calls).to.deep.equal([]);
  });

  it('answers a proxy that refuses the tunnel with a problem, quickly, without the proxy credentials', async () => {
    const s = await start({ ...proxyEnv(), DownstreamApis__app__Scopes__0: 'api://downstream/.default' });
    // Keys first (the validator's start), then a refusing proxy for the token request.
    const ready = Date.now() + 15_000;
    while (Date.now() < ready && (await call(`http://127.0.0.1:${s.listening.management!.port}/readyz`)).status !== 200) await new Promise((r) => setTimeout(r, 100));
    proxy.refuseWith = 403;
    const from = s.lines.length;
    const started = Date.now();
    const r = await appToken(s);
    expect(Date.now() - started).to.be.below(10_000);
    expect([r.status, r.json().code]).to.deep.equal([500, 'acquisition_unavailable']);
    // The operator is told it was the proxy, not Entra.
    // (The line reaches our pipe after the answer: wait for it.)
    expect(await waitForLine(s, /"code":"acquisition_unavailable".*the egress proxy answered 403 to the tunnel request/, 5_000, from), s.lines.slice(from).join('\n')).to.equal(true);
    expect(r.headers.get('content-type')).to.equal('application/problem+json');
    expect(r.text).not.to.include(PASSWORD);
    expect(proxy.calls.some((c) => c.status === 403)).to.equal(true);
    noSecretIn(s);
  });

  it('sends app-token requests to the regional endpoint with AzureAd:AzureRegion, metadata to the global one', async () => {
    const s = await start({ ...proxyEnv(), AzureAd__AzureRegion: 'westus' });
    const app = await appToken(s);
    expect(app.status, app.text).to.equal(200);
    const port = new URL(emu.origin).port;
    const tokenPosts = emu.requests().filter((r) => r.route === 'token' && r.form.grant_type === 'client_credentials');
    expect(tokenPosts.at(-1)?.headers.host).to.equal(`westus.${EMULATOR_HOST_NAME}:${port}`);
    const targets = new Set(proxy.calls.map((c) => c.target));
    expect([...targets].sort()).to.deep.equal([emulatorTarget, `westus.${EMULATOR_HOST_NAME}:${port}`].sort());
  });

  it('signs a certificate assertion for the regional token URL it posts to, which the regional endpoint accepts', async () => {
    const c = emu.scenario.apps.sidecarApi.certificates[0];
    const dir = mkdtempSync(path.join(tmpdir(), 'egress-cert-'));
    try {
      const file = path.join(dir, 'cert.pem');
      writeFileSync(file, `${c.certPem}\n${c.keyPem}`, { mode: 0o600 });
      const s = await start({ ...proxyEnv(), AzureAd__AzureRegion: 'westus', AzureAd__ClientCredentials__0__SourceType: 'Path', AzureAd__ClientCredentials__0__CertificateDiskPath: file, AzureAd__ClientCredentials__0__ClientSecret: '' });
      const app = await appToken(s);
      expect(app.status, app.text).to.equal(200);
      const sent = emu.requests().filter((r) => r.route === 'token' && r.form.grant_type === 'client_credentials').at(-1);
      expect(sent?.headers.host).to.equal(`westus.${EMULATOR_HOST_NAME}:${new URL(emu.origin).port}`);
      expect(sent?.form.client_assertion_type).to.equal('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes the region from REGION_NAME with AzureAd:AzureRegion=TryAutoDetect, as msal does on Azure compute', async () => {
    const s = await start({ ...proxyEnv(), AzureAd__AzureRegion: 'TryAutoDetect', REGION_NAME: 'eastus2' });
    const app = await appToken(s);
    expect(app.status, app.text).to.equal(200);
    expect(proxy.calls.map((c) => c.target)).to.include(`eastus2.${EMULATOR_HOST_NAME}:${new URL(emu.origin).port}`);
  });

  it('refuses to start on a proxy variable it cannot use, naming the variable and not its value', async () => {
    for (const [name, value, message] of [
      ['HTTPS_PROXY', `socks5://${CREDENTIALS}@127.0.0.1:1080`, /HTTPS_PROXY must be an http:\/\/ or https:\/\/ proxy URL/],
      ['http_proxy', `http://${CREDENTIALS}@127.0.0.1:3128/path`, /http_proxy must be a proxy origin/],
      ['ALL_PROXY', `http://${CREDENTIALS}@[bad`, /ALL_PROXY is not a URL/],
    ] as const) {
      const { code, stdout, stderr } = await runSidecarToExit(sidecarEnv(emu, { [name]: value }));
      expect(code, name).to.equal(1);
      expect(stdout, name).to.match(/"code":"config_invalid"/).and.to.match(message);
      expect(stdout + stderr, name).not.to.include(PASSWORD);
    }
  });
});
