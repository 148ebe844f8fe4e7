/**
 * The container image's runtime layout, run without Docker or network: the Dockerfile's runtime
 * stage laid out in a temporary folder (image-layout.ts: the compiled `dist/src`, `package.json`, and
 * a node_modules holding only the production dependency tree of package-lock.json), the sidecar
 * started from it as the image starts it (ENTRYPOINT from WORKDIR, the image's ENV, its uid when
 * the test runs as root) against the emulator, and every package it imports lazily reached:
 * msal-node and node-forge (an app token with a PFX credential), jose (a PoP token's client
 * assertion, a JWE caller token), @grpc/reflection and @grpc/proto-loader (reflection on), plus
 * the HEALTHCHECK command. Every other test runs with the full node_modules, so a runtime import of
 * a devDependency passes them and breaks only the image; it fails here.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import forge from 'node-forge';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { AUTHORIZATION_SERVICE, createAuthorizationClient } from '../../src/extauthz/protos.js';
import { reqCnfFor } from '../../src/pop/shr.js';
import { check, envoyCheckRequest, headerMap } from '../extauthz/fixtures.js';
import { call, sidecarEnv } from '../helpers/e2e.js';
import { reflectionClient, unresolvedTypes } from '../helpers/reflection.js';
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js';
import { layOutImage, type ImageLayout } from './image-layout.js';
import { outRoot, repoRoot } from './paths.js';

/**
 * Root runs the sidecar as the image's user, when that user can run this node binary (one that
 * `npx -y node@…` fetched lives under root's home, which other users cannot enter); anyone else
 * runs it as themselves.
 */
function canRunAs(uid: number, gid: number): boolean {
  return process.getuid?.() === 0 && spawnSync(process.execPath, ['-e', ''], { uid, gid, timeout: 10_000 }).status === 0;
}

describe("the image's runtime layout with production dependencies only (built sidecar, started as the image starts it)", function () {
  this.timeout(60_000);
  let dir: string;
  let image: ImageLayout;
  let emu: Emulator;
  let sidecar: RunningSidecar;
  let management: string;
  let asImageUser = false;
  const user = () => (asImageUser ? { uid: image.user.uid, gid: image.user.gid } : {});

  before(async () => {
    // Readable by the image's uid, as the image's files are (owned by root, world-readable).
    dir = mkdtempSync(path.join(tmpdir(), 'image-runtime-'));
    chmodSync(dir, 0o755);
    image = layOutImage(path.join(dir, 'app'));
    asImageUser = canRunAs(image.user.uid, image.user.gid);
    emu = await startEmulator();
    // What a deployment mounts: the CA to trust, a PFX client certificate, a PEM decryption key.
    const mounted = path.join(dir, 'mounted');
    mkdirSync(mounted);
    const ca = path.join(mounted, 'ca.pem');
    copyFileSync(emu.caFile, ca);
    const c = emu.scenario.apps.sidecarApi.certificates[0];
    const pfx = path.join(mounted, 'client.pfx');
    const p12 = forge.pkcs12.toPkcs12Asn1(forge.pki.privateKeyFromPem(c.keyPem!), [forge.pki.certificateFromPem(c.certPem!)], 'pfx-pass', { algorithm: '3des' });
    writeFileSync(pfx, Buffer.from(forge.asn1.toDer(p12).getBytes(), 'binary'));
    const enc = emu.scenario.apps.sidecarApi.encryptionCertificate!;
    const decryption = path.join(mounted, 'decryption.pem');
    writeFileSync(decryption, `${enc.certPem}\n${enc.keyPem}`);
    for (const f of [ca, pfx, decryption]) chmodSync(f, 0o644);

    const env = sidecarEnv(emu, {
      ...image.env,
      Sidecar__Outbound__CaFile: ca,
      Sidecar__LogLevel: 'info',
      AzureAd__ClientCredentials__0__SourceType: 'Path',
      AzureAd__ClientCredentials__0__CertificateDiskPath: pfx,
      AzureAd__ClientCredentials__0__CertificatePassword: 'pfx-pass',
      AzureAd__TokenDecryptionCredentials__0__SourceType: 'Path',
      AzureAd__TokenDecryptionCredentials__0__CertificateDiskPath: decryption,
      DownstreamApis__app__Scopes__0: 'api://downstream/.default',
      DownstreamApis__app__RequestAppToken: 'true',
      DownstreamApis__popApp__Scopes__0: 'api://downstream/.default',
      DownstreamApis__popApp__RequestAppToken: 'true',
      DownstreamApis__popApp__AcquireTokenOptions__PopPublicKey: reqCnfFor('x'.repeat(43)),
      Sidecar__ExtAuthz__Reflection: 'true',
    });
    delete env.AzureAd__ClientCredentials__0__ClientSecret;
    const [entry, ...args] = image.entry;
    sidecar = await startSidecar(env, { cwd: image.root, entry, args, ...user() });
    const m = sidecar.listening.management!;
    management = `http://${m.host}:${m.port}`;
  });
  after(async () => {
    await sidecar?.stop();
    await emu?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('holds the production dependency tree and nothing flagged dev in package-lock.json', () => {
    const lock = JSON.parse(readFileSync(path.join(repoRoot, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
    const inImage = (key: string) => existsSync(path.join(image.root, key));
    const entries = Object.entries(lock.packages).filter(([key]) => key !== '');
    expect(entries.filter(([key, e]) => e.dev && inImage(key)).map(([key]) => key)).to.deep.equal([]);
    expect(entries.filter(([key, e]) => !e.dev && !inImage(key)).map(([key]) => key)).to.deep.equal([]);
    // The Envoy .proto tree (19 MB with its dependencies) is needed only to build: reflection too
    // runs from the descriptor in the bundle.
    expect(inImage('node_modules/@grpc/grpc-js-xds')).to.equal(false);
    // main.js runs the bundle only when it is not older than the compiled modules: the copy keeps
    // the build's choice (the image's build always writes the bundle last).
    const bundleFirst = (src: string) => statSync(path.join(src, 'sidecar.bundle.js')).mtimeMs >= statSync(path.join(src, 'sidecar.js')).mtimeMs;
    expect(bundleFirst(path.join(image.root, 'dist', 'src'))).to.equal(bundleFirst(path.join(outRoot, 'src')));
    expect(readdirSync(image.root).sort()).to.deep.equal(['dist', 'node_modules', 'package.json']);
  });

  it('answers /healthz at once and /readyz once its signing keys are loaded', async () => {
    expect((await call(`${management}/healthz`)).status).to.equal(200);
    const deadline = Date.now() + 10_000;
    let status = 0;
    while (Date.now() < deadline && (status = (await call(`${management}/readyz`)).status) !== 200) await new Promise((r) => setTimeout(r, 100));
    expect(status).to.equal(200);
  });

  it("passes the Dockerfile's HEALTHCHECK command, and fails it against a closed port", () => {
    const probe = (url: string) => {
      const [script, , ...rest] = image.healthcheck;
      return spawnSync(process.execPath, [script, url, ...rest], { cwd: image.root, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...image.env }, timeout: 10_000, ...user() }).status;
    };
    // The command names the default management URL; here the listener is on port 0.
    expect(image.healthcheck[1]).to.match(/^http:\/\/127\.0\.0\.1:\d+\/healthz$/);
    expect(probe(`${management}/healthz`)).to.equal(0);
    expect(probe('http://127.0.0.1:1/healthz')).to.equal(1);
  });

  it('acquires an app token with a PFX client certificate (msal-node, node-forge)', async () => {
    const r = await call(`${sidecar.url}/AuthorizationHeaderUnauthenticated/app`);
    expect(r.status, r.text).to.equal(200);
    expect(r.json().authorizationHeader).to.match(/^Bearer ey/);
    const sent = emu.requests().filter((q) => q.route === 'token' && q.form.grant_type === 'client_credentials');
    expect(sent.at(-1)?.form.client_assertion_type).to.equal('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
  });

  it('acquires a PoP token with the client assertion it signs itself (jose)', async () => {
    const r = await call(`${sidecar.url}/AuthorizationHeaderUnauthenticated/popApp`);
    expect(r.status, r.text).to.equal(200);
    expect(emu.requests().filter((q) => q.route === 'token').at(-1)?.form.token_type).to.equal('pop');
  });

  it('validates a JWE caller token with its decryption certificate (jose)', async () => {
    const jwe = await emu.mint({ kind: 'user', scp: 'access_as_user', encrypt: true });
    const r = await call(`${sidecar.url}/Validate`, { token: jwe });
    expect(r.status, r.headers.get('www-authenticate') ?? '').to.equal(200);
    expect(r.json().claims.scp).to.equal('access_as_user');
  });

  it('answers Check, and serves reflection for the Authorization service (@grpc/reflection, @grpc/proto-loader)', async () => {
    const address = `127.0.0.1:${sidecar.listening.extAuthz!.port}`;
    const client = createAuthorizationClient(address);
    const reflection = reflectionClient(address);
    try {
      const token = await emu.mint({ kind: 'user', scp: 'access_as_user' });
      const res = await check(client, envoyCheckRequest({ headers: { authorization: `Bearer ${token}` }, contextExtensions: { downstream_api: 'app' } }));
      expect(res.status?.code ?? 0, JSON.stringify(res.denied_response ?? {})).to.equal(0);
      expect(headerMap(res.ok_response.headers).authorization).to.match(/^Bearer ey/);
      expect(await reflection.listServices()).to.include(AUTHORIZATION_SERVICE);
      expect(unresolvedTypes(await reflection.fileContainingSymbol(AUTHORIZATION_SERVICE), AUTHORIZATION_SERVICE, 'Check')).to.deep.equal([]);
    } finally {
      reflection.close();
      client.close();
    }
  });

  it(`runs as the image's user when the test runs as root and this node binary allows it, else as the test's own user`, function () {
    expect(sidecar.child.pid).to.be.a('number');
    const status = readFileSync(`/proc/${sidecar.child.pid}/status`, 'utf8');
    expect(/^Uid:\s+(\d+)/m.exec(status)?.[1]).to.equal(String(asImageUser ? image.user.uid : process.getuid?.()));
  });

  it('stops on SIGTERM with exit code 0, having logged no missing module', async () => {
    expect(await sidecar.stop()).to.equal(0);
    expect(sidecar.lines.filter((l) => /MODULE_NOT_FOUND|Cannot find (module|package)/.test(l))).to.deep.equal([]);
  });
});
