/**
 * Readiness follows the client credentials (reference envoy-ext-authz §3, "Probes": ready means
 * "metadata and JWKS loaded, credentials usable"), through the built sidecar against the emulator:
 * certificates load in the background at start; while none of the configured credentials is usable
 * /readyz answers 503 `client_credentials_unusable` and the Authorization service's gRPC health is
 * NOT_SERVING, with one warning per credential that failed; the start itself never fails on them,
 * and acquisition still skips a bad credential for the next one, as Microsoft.Identity.Web does.
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import forge from 'node-forge';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { startSidecar, waitForLine, type RunningSidecar } from '../helpers/sidecar.js';
import { assertNoSecrets, call, healthCheck, secretsOf, sidecarEnv, type HttpAnswer } from '../helpers/e2e.js';

const AUTHORIZATION_SERVICE = 'envoy.service.auth.v3.Authorization';
const PFX_PASSWORD = 'right-pfx-password';
const WRONG_PASSWORD = 'wrong-pfx-password';

describe('client credentials and readiness (built sidecar)', function () {
  this.timeout(40_000);
  let emu: Emulator;
  let dir: string;
  const running: RunningSidecar[] = [];

  before(async () => {
    emu = await startEmulator();
    dir = mkdtempSync(path.join(tmpdir(), 'es-cred-ready-'));
  });
  afterEach(() => emu.clearFaults());
  after(async () => {
    for (const s of running) {
      await s.stop();
      assertNoSecrets(s.lines, [...secretsOf(emu), PFX_PASSWORD, WRONG_PASSWORD]);
    }
    await emu?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function certificate() {
    const c = emu.scenario.apps.sidecarApi.certificates[0];
    if (!c.certPem || !c.keyPem) throw new Error('the emulator did not fill in the certificate');
    return { certPem: c.certPem, keyPem: c.keyPem };
  }

  function writePem(name: string): string {
    const c = certificate();
    const file = path.join(dir, name);
    writeFileSync(file, `${c.certPem}\n${c.keyPem}`, { mode: 0o600 });
    return file;
  }

  function writePfx(name: string, password: string): string {
    const c = certificate();
    const asn1 = forge.pkcs12.toPkcs12Asn1(forge.pki.privateKeyFromPem(c.keyPem), [forge.pki.certificateFromPem(c.certPem)], password, { algorithm: '3des' });
    const file = path.join(dir, name);
    writeFileSync(file, Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary'), { mode: 0o600 });
    return file;
  }

  /** A sidecar with exactly these client credentials (the helper's client secret removed) and an app-token API `app`. */
  async function start(credentials: Record<string, string>, extra: Record<string, string> = {}): Promise<RunningSidecar> {
    const env = sidecarEnv(emu, { Sidecar__LogLevel: 'info', DownstreamApis__app__Scopes__0: 'api://downstream/.default', DownstreamApis__app__RequestAppToken: 'true', ...extra });
    delete env.AzureAd__ClientCredentials__0__SourceType;
    delete env.AzureAd__ClientCredentials__0__ClientSecret;
    const s = await startSidecar({ ...env, ...credentials });
    running.push(s);
    return s;
  }

  const readyz = (s: RunningSidecar) => call(`http://127.0.0.1:${s.listening.management!.port}/readyz`);
  const authorizationHealth = (s: RunningSidecar) => healthCheck(`127.0.0.1:${s.listening.extAuthz!.port}`, AUTHORIZATION_SERVICE);
  const appToken = (s: RunningSidecar) => call(`${s.url}/AuthorizationHeaderUnauthenticated/app`);

  /** Polls /readyz until `done` holds for its answer (or the time is up); returns the last answer. */
  async function readyzUntil(s: RunningSidecar, done: (r: HttpAnswer) => boolean, timeoutMs = 10_000): Promise<HttpAnswer> {
    const deadline = Date.now() + timeoutMs;
    let r = await readyz(s);
    while (!done(r) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      r = await readyz(s);
    }
    return r;
  }
  const isReady = (r: HttpAnswer) => r.status === 200;
  /** Signing keys loaded, so the only reason left is the credentials'. */
  const onlyCredentialsMissing = (r: HttpAnswer) => r.status === 503 && JSON.stringify(r.json().reasons) === '["client_credentials_unusable"]';

  it('starts but stays not ready (client_credentials_unusable, Authorization NOT_SERVING) when the only certificate file is missing, with one warning naming it', async () => {
    const missing = path.join(dir, 'missing-cert.pfx');
    const s = await start({ AzureAd__ClientCredentials__0__SourceType: 'Path', AzureAd__ClientCredentials__0__CertificateDiskPath: missing });
    const r = await readyzUntil(s, onlyCredentialsMissing);
    expect(r.status, r.text).to.equal(503);
    expect(r.json()).to.deep.equal({ status: 'not_ready', reasons: ['client_credentials_unusable'] });
    expect(await authorizationHealth(s)).to.equal('NOT_SERVING');
    expect(await healthCheck(`127.0.0.1:${s.listening.extAuthz!.port}`, '')).to.equal('SERVING');
    expect(await waitForLine(s, '"event":"client_credential_unusable"')).to.equal(true);
    const warnings = s.lines.filter((l) => l.includes('"event":"client_credential_unusable"'));
    expect(warnings).to.have.length(1);
    const warning = JSON.parse(warnings[0]) as Record<string, unknown>;
    expect(warning).to.include({ level: 'warn', credential: '0:Path', code: 'misconfigured' });
    expect(String(warning.detail)).to.include(missing).and.to.include('ENOENT');
    // Still not ready after the first retries, and still one warning (the retries log at debug).
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect((await readyz(s)).status).to.equal(503);
    expect(s.lines.filter((l) => l.includes('"event":"client_credential_unusable"'))).to.have.length(1);
    // Acquisition answers as it did: the credential cannot be loaded.
    const a = await appToken(s);
    expect(a.status, a.text).to.equal(500);
  });

  it('stays not ready when the only certificate is a PFX with the wrong password, and never logs the password', async () => {
    const pfx = writePfx('locked.pfx', PFX_PASSWORD);
    const s = await start({ AzureAd__ClientCredentials__0__SourceType: 'Path', AzureAd__ClientCredentials__0__CertificateDiskPath: pfx, AzureAd__ClientCredentials__0__CertificatePassword: WRONG_PASSWORD });
    const r = await readyzUntil(s, onlyCredentialsMissing);
    expect(r.json(), r.text).to.deep.equal({ status: 'not_ready', reasons: ['client_credentials_unusable'] });
    expect(await waitForLine(s, /"event":"client_credential_unusable".*wrong password/)).to.equal(true);
  });

  it('is ready when a bad first credential is followed by a good one, and acquisition skips to the good one', async () => {
    const corrupt = path.join(dir, 'corrupt.pfx');
    writeFileSync(corrupt, Buffer.from('not a PKCS#12 file at all'));
    const good = writePem('good-after-bad.pem');
    const s = await start({
      AzureAd__ClientCredentials__0__SourceType: 'Path',
      AzureAd__ClientCredentials__0__CertificateDiskPath: corrupt,
      AzureAd__ClientCredentials__1__SourceType: 'Path',
      AzureAd__ClientCredentials__1__CertificateDiskPath: good,
    });
    const r = await readyzUntil(s, isReady);
    expect(r.status, r.text).to.equal(200);
    expect(await authorizationHealth(s)).to.equal('SERVING');
    const warnings = s.lines.filter((l) => l.includes('"event":"client_credential_unusable"'));
    expect(warnings).to.have.length(1);
    expect(warnings[0]).to.include('"credential":"0:Path"').and.to.include('corrupt.pfx');
    const a = await appToken(s);
    expect(a.status, a.text).to.equal(200);
    expect(a.json().authorizationHeader).to.match(/^Bearer /);
  });

  it('is ready with a good certificate, loaded once at start and reused by acquisition', async () => {
    const good = writePem('good.pem');
    const s = await start({ AzureAd__ClientCredentials__0__SourceType: 'Path', AzureAd__ClientCredentials__0__CertificateDiskPath: good });
    const r = await readyzUntil(s, isReady);
    expect(r.status, r.text).to.equal(200);
    expect(s.lines.filter((l) => l.includes('client_credential_unusable'))).to.deep.equal([]);
    // The certificate loaded for readiness is the one acquisition sends: the file is not read again.
    rmSync(good);
    const a = await appToken(s);
    expect(a.status, a.text).to.equal(200);
  });

  it('retries a Key Vault certificate that failed at start, with backoff, and is ready once it loads', async () => {
    emu.fault({ route: 'keyvault', count: 1, status: 503 });
    const before = emu.counters().keyvault ?? 0;
    const s = await start(
      {
        AzureAd__ClientCredentials__0__SourceType: 'KeyVault',
        AzureAd__ClientCredentials__0__KeyVaultUrl: emu.scenario.keyVaults.main.url!,
        AzureAd__ClientCredentials__0__KeyVaultCertificateName: 'sidecar-cert',
        AzureAd__ClientCredentials__0__ManagedIdentityClientId: emu.scenario.managedIdentities.userAssigned.clientId,
      },
      { AZURE_POD_IDENTITY_AUTHORITY_HOST: emu.imdsOrigin },
    );
    expect(await waitForLine(s, '"event":"client_credential_unusable"', 5_000)).to.equal(true);
    const r = await readyzUntil(s, isReady);
    expect(r.status, r.text).to.equal(200);
    expect(await waitForLine(s, '"event":"client_credential_loaded"')).to.equal(true);
    const a = await appToken(s);
    expect(a.status, a.text).to.equal(200);
    expect((emu.counters().keyvault ?? 0) - before, 'the failed read and its retry; acquisition reads no more').to.equal(2);
  });

  it('is ready as before with a client secret, and with no client credential at all (validation only)', async () => {
    const secret = await start({ AzureAd__ClientCredentials__0__SourceType: 'ClientSecret', AzureAd__ClientCredentials__0__ClientSecret: emu.scenario.apps.sidecarApi.secrets[0].value });
    expect((await readyzUntil(secret, isReady)).status).to.equal(200);
    const none = await start({});
    expect((await readyzUntil(none, isReady)).status).to.equal(200);
    expect(await authorizationHealth(none)).to.equal('SERVING');
  });
});
