/**
 * Throw-away key and certificate material for the emulator: the TLS CA and server leaf, the
 * token-signing keys (§1.4), app certificates and the encryption certificate (§3.4).
 * Keys come from Node's native RSA generator (fast); certificates are built with node-forge so
 * they can be made synchronously (key rotation is a synchronous call).
 */
import { constants, createHash, createPrivateKey, createPublicKey, generateKeyPair, generateKeyPairSync, privateEncrypt, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import forge from 'node-forge';

/** An RSA key pair with a certificate, plus the thumbprints Entra and msal use to name it. */
export interface CertifiedKey {
  certPem: string;
  keyPem: string;
  certDer: Buffer;
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** Upper-case hex SHA-1 of the DER certificate (what msal's `thumbprint` expects). */
  thumbprintSha1: string;
  /** Upper-case hex SHA-256 of the DER certificate (msal's `thumbprintSha256`). */
  thumbprintSha256: string;
  /** base64url SHA-1 of the DER certificate: JWT `x5t`, and the `kid` of signing keys (§1.4). */
  x5t: string;
  /** base64url SHA-256 of the DER certificate: JWT `x5t#S256`. */
  x5tS256: string;
  subject: string;
  notAfter: Date;
}

export interface CertificateOptions {
  commonName: string;
  validDays?: number;
  /** Issue as a CA (basicConstraints cA, keyCertSign). */
  isCa?: boolean;
  /** Sign with this CA instead of self-signing. */
  issuer?: CertifiedKey;
  /** Server leaf: SAN DNS names and IPs, serverAuth EKU. */
  dnsNames?: string[];
  ipAddresses?: string[];
}

/** Generates an RSA-2048 key pair on the libuv thread pool. */
export function generateRsaKey(): Promise<{ privateKey: KeyObject; publicKey: KeyObject }> {
  return new Promise((resolve, reject) => {
    generateKeyPair('rsa', { modulusLength: 2048, publicExponent: 0x10001 }, (err, publicKey, privateKey) => {
      if (err) reject(err);
      else resolve({ privateKey, publicKey });
    });
  });
}

/** Generates an RSA-2048 key pair synchronously (used by rotateKeys, which is synchronous). */
export function generateRsaKeySync(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 0x10001 });
}

/** DER prefix of a PKCS#1 v1.5 DigestInfo for SHA-256. */
const SHA256_DIGEST_INFO_PREFIX = Buffer.from('3031300d060960864801650304020105000420', 'hex');

/** base64url without padding. */
export function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/** Builds a certificate for `key` (self-signed unless `opts.issuer` is given). */
export function certify(key: { privateKey: KeyObject; publicKey: KeyObject }, opts: CertificateOptions): CertifiedKey {
  const forgePublic = forge.pki.publicKeyFromPem(key.publicKey.export({ type: 'spki', format: 'pem' }).toString());
  const keyPem = key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forgePublic;
  // Positive and minimally encoded: a leading 0x01 byte keeps the DER INTEGER non-negative without a
  // 0x00 pad (an odd-length '0…' serial sometimes encoded as 00 <byte < 0x80>, which OpenSSL rejects
  // as "illegal padding").
  cert.serialNumber = '01' + randomBytes(15).toString('hex');
  const now = Date.now();
  cert.validity.notBefore = new Date(now - 60 * 60 * 1000);
  cert.validity.notAfter = new Date(now + (opts.validDays ?? 365) * 24 * 60 * 60 * 1000);
  const subject = [{ name: 'commonName', value: opts.commonName }];
  cert.setSubject(subject);
  const issuerCert = opts.issuer ? forge.pki.certificateFromPem(opts.issuer.certPem) : undefined;
  cert.setIssuer(issuerCert ? issuerCert.subject.attributes : subject);
  const extensions: object[] = [];
  if (opts.isCa) {
    extensions.push({ name: 'basicConstraints', cA: true, critical: true });
    extensions.push({ name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true });
  } else {
    extensions.push({ name: 'basicConstraints', cA: false });
    extensions.push({ name: 'keyUsage', digitalSignature: true, keyEncipherment: true, dataEncipherment: true });
  }
  if (opts.dnsNames || opts.ipAddresses) {
    extensions.push({ name: 'extKeyUsage', serverAuth: true });
    const altNames: object[] = [];
    for (const dns of opts.dnsNames ?? []) altNames.push({ type: 2, value: dns });
    for (const ip of opts.ipAddresses ?? []) altNames.push({ type: 7, ip });
    extensions.push({ name: 'subjectAltName', altNames });
  }
  extensions.push({ name: 'subjectKeyIdentifier' });
  cert.setExtensions(extensions);
  const signingKey = opts.issuer ? opts.issuer.privateKey : key.privateKey;
  // forge only needs `sign(md)`: do the RSA operation natively (forge's JS bignum is slow).
  const nativeSigner = {
    sign: (md: forge.md.MessageDigest): string => {
      const digestInfo = Buffer.concat([SHA256_DIGEST_INFO_PREFIX, Buffer.from(md.digest().getBytes(), 'binary')]);
      return privateEncrypt({ key: signingKey, padding: constants.RSA_PKCS1_PADDING }, digestInfo).toString('binary');
    },
  };
  cert.sign(nativeSigner as unknown as forge.pki.rsa.PrivateKey, forge.md.sha256.create());
  const certPem = forge.pki.certificateToPem(cert);
  return describeCertificate(certPem, keyPem);
}

/** Computes thumbprints and key objects for an existing PEM certificate and private key. */
export function describeCertificate(certPem: string, keyPem: string): CertifiedKey {
  const certDer = pemToDer(certPem);
  const sha1 = createHash('sha1').update(certDer).digest();
  const sha256 = createHash('sha256').update(certDer).digest();
  const parsed = forge.pki.certificateFromPem(certPem);
  const cn = parsed.subject.getField('CN');
  return {
    certPem,
    keyPem,
    certDer,
    privateKey: createPrivateKey(keyPem),
    publicKey: createPublicKey(certPem),
    thumbprintSha1: sha1.toString('hex').toUpperCase(),
    thumbprintSha256: sha256.toString('hex').toUpperCase(),
    x5t: b64url(sha1),
    x5tS256: b64url(sha256),
    subject: cn ? `CN=${cn.value as string}` : '',
    notAfter: parsed.validity.notAfter,
  };
}

/** DER bytes of the first certificate in a PEM string. */
export function pemToDer(pem: string): Buffer {
  const match = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(pem);
  if (!match) throw new Error('no certificate in PEM');
  return Buffer.from(match[1].replace(/\s+/g, ''), 'base64');
}

/** Generates a key and a self-signed certificate for it. */
export async function generateSelfSigned(commonName: string, validDays = 365): Promise<CertifiedKey> {
  return certify(await generateRsaKey(), { commonName, validDays });
}

/**
 * Packs key + certificate as a PKCS#12 (PFX) with an empty password, the way Azure Key Vault
 * returns certificate-backed secrets with content type application/x-pkcs12.
 */
export function toPfxBase64(material: CertifiedKey): string {
  const key = forge.pki.privateKeyFromPem(material.keyPem);
  const cert = forge.pki.certificateFromPem(material.certPem);
  const asn1 = forge.pkcs12.toPkcs12Asn1(key, [cert], '', { algorithm: '3des' });
  return Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary').toString('base64');
}
