import { expect } from 'chai';
import { createHash, X509Certificate } from 'node:crypto';
import type { CredentialDescription } from '../../src/config/types.js';
import { loadCertificate, loadCertificateFromPem, loadCertificateFromPfx, type CertificateFileReader } from '../../src/credentials/certificate.js';
import { SidecarError } from '../../src/errors.js';
import { loadDecryptionKeys } from '../../src/validation/decryption.js';
import { selfSignedCertificate, toPfx } from './fixtures.js';

function desc(fields: Partial<CredentialDescription>): CredentialDescription {
  return { sourceType: 'Path', tokenExchangeUrl: 'api://AzureADTokenExchange', skip: false, ...fields };
}

function memoryFs(files: Record<string, Buffer | string>): CertificateFileReader {
  return {
    readFileSync(path: string): Buffer {
      const f = files[path];
      if (f === undefined) throw Object.assign(new Error('missing'), { code: 'ENOENT' });
      return Buffer.from(f);
    },
  };
}

function expectMisconfigured(fn: () => unknown, mustNotContain: string[] = []): SidecarError {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(SidecarError);
    expect((err as SidecarError).code).to.equal('misconfigured');
    for (const s of mustNotContain) expect((err as SidecarError).message).to.not.include(s);
    return err as SidecarError;
  }
  throw new Error('expected a misconfigured error');
}

describe('certificate loading', function () {
  const leaf = selfSignedCertificate('leaf');
  const ca = selfSignedCertificate('another');
  const der = new X509Certificate(leaf.certPem).raw;
  const sha1 = createHash('sha1').update(der).digest('hex').toUpperCase();
  const sha256 = createHash('sha256').update(der).digest('hex').toUpperCase();

  it('loads a PEM with certificate and key, and computes upper-case hex thumbprints from the DER', function () {
    const loaded = loadCertificateFromPem(leaf.keyPem + leaf.certPem);
    expect(loaded.thumbprintSha1).to.equal(sha1);
    expect(loaded.thumbprintSha256).to.equal(sha256);
    expect(loaded.certificate.subject).to.include('CN=leaf');
    expect(loaded.privateKey.type).to.equal('private');
    expect(loaded.chainPem).to.have.length(1);
  });

  it('puts the certificate matching the key first in the chain, whatever the PEM order', function () {
    const loaded = loadCertificateFromPem(ca.certPem + leaf.certPem + leaf.keyPem);
    expect(loaded.thumbprintSha1).to.equal(sha1);
    expect(loaded.chainPem).to.have.length(2);
    expect(new X509Certificate(loaded.chainPem[1]).subject).to.include('CN=another');
  });

  it('rejects a PEM without a key, or whose key matches no certificate', function () {
    expectMisconfigured(() => loadCertificateFromPem(leaf.certPem));
    expectMisconfigured(() => loadCertificateFromPem(ca.certPem + leaf.keyPem));
  });

  it('loads a password-protected PFX (AES-256) and refuses a wrong password without echoing it', function () {
    const pfx = toPfx(leaf.forgeCert, leaf.forgeKey, 's3cret-pw', [ca.forgeCert]);
    const loaded = loadCertificateFromPfx(pfx, 's3cret-pw');
    expect(loaded.thumbprintSha1).to.equal(sha1);
    expect(loaded.chainPem).to.have.length(2);
    expect(loaded.privateKey.asymmetricKeyType).to.equal('rsa');
    expectMisconfigured(() => loadCertificateFromPfx(pfx, 'wrong-pw'), ['wrong-pw', 's3cret-pw']);
  });

  it('loads a PFX without a password', function () {
    const loaded = loadCertificateFromPfx(toPfx(leaf.forgeCert, leaf.forgeKey, null));
    expect(loaded.thumbprintSha256).to.equal(sha256);
  });

  it('loads Path credentials as PEM or PFX by content', function () {
    const fs = memoryFs({ '/certs/a.pem': leaf.certPem + leaf.keyPem, '/certs/a.pfx': toPfx(leaf.forgeCert, leaf.forgeKey, 'pw') });
    expect(loadCertificate(desc({ certificateDiskPath: '/certs/a.pem' }), fs).thumbprintSha1).to.equal(sha1);
    expect(loadCertificate(desc({ certificateDiskPath: '/certs/a.pfx', certificatePassword: 'pw' }), fs).thumbprintSha1).to.equal(sha1);
    const missing = expectMisconfigured(() => loadCertificate(desc({ certificateDiskPath: '/certs/none.pfx' }), fs));
    expect(missing.message).to.include('ENOENT');
  });

  it('loads Base64Encoded credentials holding a PFX or a PEM', function () {
    const pfxB64 = toPfx(leaf.forgeCert, leaf.forgeKey, 'pw').toString('base64');
    expect(loadCertificate(desc({ sourceType: 'Base64Encoded', base64EncodedValue: pfxB64, certificatePassword: 'pw' })).thumbprintSha1).to.equal(sha1);
    const pemB64 = Buffer.from(leaf.certPem + leaf.keyPem).toString('base64');
    expect(loadCertificate(desc({ sourceType: 'Base64Encoded', base64EncodedValue: pemB64 })).thumbprintSha1).to.equal(sha1);
  });

  it('refuses source types it cannot load', function () {
    expectMisconfigured(() => loadCertificate(desc({ sourceType: 'StoreWithThumbprint' })));
    expectMisconfigured(() => loadCertificate(desc({ sourceType: 'Path' })));
  });

  it('turns TokenDecryptionCredentials into decryption keys with thumbprint kid and x5t, honouring Skip', async function () {
    const b64 = toPfx(leaf.forgeCert, leaf.forgeKey, 'pw').toString('base64');
    const keys = await loadDecryptionKeys([
      desc({ sourceType: 'Base64Encoded', base64EncodedValue: b64, certificatePassword: 'pw' }),
      desc({ sourceType: 'KeyVault', skip: true }),
    ]);
    expect(keys).to.have.length(1);
    expect(keys[0].thumbprintSha1Hex).to.equal(sha1);
    expect(keys[0].x5t).to.equal(createHash('sha1').update(der).digest('base64url'));
  });
});
