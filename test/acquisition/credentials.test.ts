import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import forge from 'node-forge';
import type { Dispatcher } from 'undici';
import { startEmulator } from '../../emulator/index.js';
import { redactionFingerprint } from '../../emulator/core.js';
import { RELOAD_MIN_INTERVAL_MS } from '../../src/acquisition/credentials.js';
import type { Emulator } from '../../emulator/types.js';
import { createTokenAcquirer } from '../../src/acquisition/acquirer.js';
import type { CredentialDescription } from '../../src/config/types.js';
import type { TokenAcquirer } from '../../src/pipeline/types.js';
import { acquireTokenOptions, captureLogger, credential } from './fixtures.js';
import { reqCnfFor } from '../../src/pop/shr.js';
import { apiOptions, emulatorAgent, emulatorConfig, secretCredential, tokenRequests } from './harness.js';

const SCOPE = 'api://downstream/.default';

describe('client credential sources against the emulator', function () {
  this.timeout(20_000);
  let emu: Emulator;
  let agent: Dispatcher;
  let dir: string;
  const logs = captureLogger();
  const acquirers: TokenAcquirer[] = [];

  /** The acquirers' clock: a test moves it past RELOAD_MIN_INTERVAL_MS. */
  let clockOffsetMs = 0;
  function acquirer(clientCredentials: CredentialDescription[], extra: { sendX5C?: boolean; federatedTokenFile?: string } = {}) {
    const a = createTokenAcquirer({ config: emulatorConfig(emu, { clientCredentials, ...extra }), agent, logger: logs.logger, now: () => Date.now() + clockOffsetMs });
    acquirers.push(a);
    return a;
  }

  /** Acquires a fresh app token and returns it with the token request the emulator saw. */
  async function appToken(a: TokenAcquirer, force = false) {
    const before = tokenRequests(emu).length;
    const token = await a.acquire({ options: apiOptions({ scopes: [SCOPE], requestAppToken: true, acquireTokenOptions: acquireTokenOptions({ forceRefresh: force }) }) });
    return { token, sent: tokenRequests(emu).slice(before) };
  }

  function certificate(index = 0) {
    const c = emu.scenario.apps.sidecarApi.certificates[index];
    if (!c.certPem || !c.keyPem) throw new Error('the emulator did not fill in the certificate');
    return { certPem: c.certPem, keyPem: c.keyPem };
  }

  function pfx(password: string): Buffer {
    const c = certificate();
    const asn1 = forge.pkcs12.toPkcs12Asn1(forge.pki.privateKeyFromPem(c.keyPem), [forge.pki.certificateFromPem(c.certPem)], password, { algorithm: '3des' });
    return Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary');
  }

  afterEach(() => emu.clearFaults());
  before(async () => {
    emu = await startEmulator();
    agent = emulatorAgent(emu);
    dir = await mkdtemp(join(tmpdir(), 'acq-cred-'));
  });
  after(async () => {
    for (const a of acquirers) a.close();
    await agent.close();
    await emu.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('signs a client assertion with a PEM certificate from a Path', async () => {
    const c = certificate();
    const path = join(dir, 'cert.pem');
    await writeFile(path, `${c.certPem}\n${c.keyPem}`);
    const { token, sent } = await appToken(acquirer([credential({ sourceType: 'Path', certificateDiskPath: path })]));
    expect(sent[0].form.client_assertion_type).to.equal('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    expect(sent[0].form.client_secret).to.equal(undefined);
    expect(decodeJwt(token.token).roles).to.deep.equal(['Data.Read']);
  });

  it('signs a PoP app token\'s assertion for the token URL msal would use, whatever the case of AzureAd:TenantId', async () => {
    const c = certificate();
    const path = join(dir, 'cert-pop.pem');
    await writeFile(path, `${c.certPem}\n${c.keyPem}`);
    const tenant = emu.scenario.tenants.primary;
    const domain = tenant.domains[0];
    for (const tenantId of [tenant.id.toUpperCase(), domain.toUpperCase()]) {
      const a = createTokenAcquirer({ config: emulatorConfig(emu, { tenantId, clientCredentials: [credential({ sourceType: 'Path', certificateDiskPath: path })] }), agent, logger: logs.logger });
      acquirers.push(a);
      const before = tokenRequests(emu).length;
      const token = await a.acquire({ options: apiOptions({ scopes: [SCOPE], requestAppToken: true, acquireTokenOptions: acquireTokenOptions({ popPublicKey: reqCnfFor('z'.repeat(43)) }) }) });
      expect(token.scheme, tenantId).to.equal('pop');
      const sent = tokenRequests(emu).slice(before);
      // Entra compares the assertion's audience with its own token URL, as msal writes it (lower
      // case): an audience in the configuration's case is refused (AADSTS50027).
      expect(sent.map((r) => [r.form.token_type, r.status]), tenantId).to.deep.equal([['pop', 200]]);
    }
  });

  it('loads a password-protected PFX from a Path', async () => {
    const path = join(dir, 'cert.pfx');
    await writeFile(path, pfx('pfx-pass'));
    const { token } = await appToken(acquirer([credential({ sourceType: 'Path', certificateDiskPath: path, certificatePassword: 'pfx-pass' })]));
    expect(token.token).to.be.a('string');
  });

  it('loads a Base64Encoded PFX and sends x5c when SendX5C is set', async () => {
    const { token, sent } = await appToken(acquirer([credential({ sourceType: 'Base64Encoded', base64EncodedValue: pfx('').toString('base64') })], { sendX5C: true }));
    expect(token.token).to.be.a('string');
    expect(sent[0].form.client_assertion).to.match(/^\[redacted\]/);
  });

  it('re-reads the signed assertion file on every acquisition', async () => {
    const path = join(dir, 'federated-token');
    const first = await emu.mintFederatedAssertion();
    await writeFile(path, first);
    const a = acquirer([credential({ sourceType: 'SignedAssertionFilePath', signedAssertionFileDiskPath: path })]);
    const one = await appToken(a);
    expect(one.sent[0].form.client_assertion).to.contain(redactionFingerprint(first));
    const second = await emu.mintFederatedAssertion();
    expect(second).to.not.equal(first);
    await writeFile(path, second);
    const two = await appToken(a, true);
    expect(two.sent[0].form.client_assertion).to.contain(redactionFingerprint(second));
  });

  it('uses AZURE_FEDERATED_TOKEN_FILE (from config.environment) when no path is configured', async () => {
    const path = await emu.writeFederatedAssertionFile();
    const { token } = await appToken(acquirer([credential({ sourceType: 'SignedAssertionFilePath' })], { federatedTokenFile: path }));
    expect(token.token).to.be.a('string');
  });

  it('skips Skip=true and unloadable credentials, using the next one', async () => {
    const good = emu.scenario.apps.sidecarApi.secrets[0].value;
    const { token, sent } = await appToken(
      acquirer([
        credential({ sourceType: 'ClientSecret', clientSecret: 'skipped', skip: true }),
        credential({ sourceType: 'Path', certificateDiskPath: join(dir, 'missing.pem') }),
        credential({ sourceType: 'StoreWithThumbprint' }),
        secretCredential(good),
      ]),
    );
    expect(token.token).to.be.a('string');
    expect(sent).to.have.length(1);
    expect(sent[0].form.client_secret).to.contain(redactionFingerprint(good));
  });

  it('rejects with misconfigured when no credential is usable', async () => {
    const a = acquirer([credential({ sourceType: 'StoreWithThumbprint' })]);
    const err = await a.acquire({ options: apiOptions({ scopes: [SCOPE], requestAppToken: true }) }).then(
      () => undefined,
      (e: unknown) => e as { code?: string },
    );
    expect(err?.code).to.equal('misconfigured');
  });

  it('falls back from an expired secret (invalid_client) to a certificate', async () => {
    const c = certificate();
    const path = join(dir, 'fallback.pem');
    await writeFile(path, `${c.certPem}\n${c.keyPem}`);
    const expired = emu.scenario.apps.sidecarApi.secrets[1].value;
    const { token, sent } = await appToken(acquirer([secretCredential(expired), credential({ sourceType: 'Path', certificateDiskPath: path })]));
    expect(token.token).to.be.a('string');
    expect(sent).to.have.length(2);
    expect(sent[1].form.client_assertion_type).to.equal('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
  });

  it('reloads a rotated certificate and retries it once after invalid_client, within the same request; a refused one at most every 30 s', async () => {
    const path = join(dir, 'rotated.pem');
    const write = async (c: { certPem: string; keyPem: string }) => writeFile(path, `${c.certPem}\n${c.keyPem}`);
    const registered = emu.scenario.apps.sidecarApi.certificates;
    const [old, next] = [certificate(0), certificate(1)];
    await write(old);
    const a = acquirer([credential({ sourceType: 'Path', certificateDiskPath: path })]);
    await appToken(a);
    // The operator mounts the new certificate and removes the old one from the app registration:
    // Entra refuses the certificate the sidecar still holds (AADSTS700027).
    await write(next);
    const oldRegistration = registered.shift()!;
    try {
      // Loaded moments ago, the certificate is not reloaded: a persistent refusal costs one request.
      const early = await appToken(a, true).then(() => undefined, (e: unknown) => e as { code?: string });
      expect(early?.code).to.equal('acquisition_rejected');
      clockOffsetMs += RELOAD_MIN_INTERVAL_MS;
      const { token, sent } = await appToken(a, true);
      expect(token.token).to.be.a('string');
      expect(sent.map((r) => r.status)).to.deep.equal([401, 200]);
      // Only once: with the new certificate refused as well, a request costs two token requests at most.
      emu.fault({ route: 'token', status: 401, error: 'invalid_client', aadsts: 700027, sticky: true });
      clockOffsetMs += RELOAD_MIN_INTERVAL_MS;
      const before = tokenRequests(emu).length;
      const err = await appToken(a, true).then(() => undefined, (e: unknown) => e as { code?: string });
      expect(err?.code).to.equal('acquisition_rejected');
      expect(tokenRequests(emu).length - before).to.equal(2);
      // ...and within 30 s of that reload, one.
      const again = tokenRequests(emu).length;
      await appToken(a, true).then(() => undefined, () => undefined);
      expect(tokenRequests(emu).length - again).to.equal(1);
    } finally {
      registered.unshift(oldRegistration);
      emu.clearFaults();
    }
  });

  it('does not retry a secret Entra refuses (nothing to reload)', async () => {
    const before = tokenRequests(emu).length;
    const err = await appToken(acquirer([secretCredential('wrong-secret')])).then(
      () => undefined,
      (e: unknown) => e as { code?: string },
    );
    expect(err?.code).to.equal('acquisition_rejected');
    expect(tokenRequests(emu).length - before).to.equal(1);
  });
});
