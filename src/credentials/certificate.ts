/**
 * Loads an X.509 certificate with its private key from the credential sources Microsoft's sidecar
 * reads from disk or config (reference sidecar-http-api §3.2): `Path` (PEM or PFX, told apart by
 * content) and `Base64Encoded` (a base64 PFX, or a base64 PEM). Used for token decryption keys and,
 * later, for client-certificate assertions. Errors name the source, never the password or key.
 */
import { X509Certificate, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type forgeModule from 'node-forge';
import { createRequire } from 'node:module';

/**
 * node-forge (PKCS#12 only) is loaded on first use: most deployments never read a PFX, and the
 * module costs start-up time and memory in every process that imports it.
 */
let forgeInstance: typeof forgeModule | undefined;
function loadForge(): typeof forgeModule {
  forgeInstance ??= createRequire(import.meta.url)('node-forge') as typeof forgeModule;
  return forgeInstance;
}
import type { CredentialDescription } from '../config/types.js';
import { SidecarError } from '../errors.js';

/** A certificate, its private key and the thumbprints Entra and JOSE headers refer to it by. */
export interface LoadedCertificate {
  readonly certificate: X509Certificate;
  readonly privateKey: KeyObject;
  /** Leaf first, then any other certificates from the same source, each as a PEM block. */
  readonly chainPem: string[];
  /** SHA-1 of the DER certificate, upper-case hex (Entra's "thumbprint"). */
  readonly thumbprintSha1: string;
  /** SHA-256 of the DER certificate, upper-case hex. */
  readonly thumbprintSha256: string;
}

/** The file-system reads loadCertificate needs; a seam for tests. */
export interface CertificateFileReader {
  readFileSync(path: string): Buffer;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

function thumbprint(fingerprint: string): string {
  return fingerprint.replace(/:/g, '').toUpperCase();
}

/** Picks the certificate whose public key belongs to `privateKey`; the leaf goes first in the chain. */
function assemble(certs: X509Certificate[], privateKey: KeyObject, source: string): LoadedCertificate {
  if (certs.length === 0) throw new SidecarError('misconfigured', `${source} holds no certificate.`);
  const publicDer = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const leafIndex = certs.findIndex((c) => c.publicKey.export({ type: 'spki', format: 'der' }).equals(publicDer));
  if (leafIndex < 0) throw new SidecarError('misconfigured', `${source}: no certificate matches the private key.`);
  const leaf = certs[leafIndex];
  const ordered = [leaf, ...certs.filter((_, i) => i !== leafIndex)];
  return {
    certificate: leaf,
    privateKey,
    chainPem: ordered.map((c) => c.toString().trim() + '\n'),
    thumbprintSha1: thumbprint(leaf.fingerprint),
    thumbprintSha256: thumbprint(leaf.fingerprint256),
  };
}

/** Loads a PEM holding the certificate (plus optional chain) and its private key (optionally encrypted). */
export function loadCertificateFromPem(pem: string, password?: string, source = 'The PEM certificate'): LoadedCertificate {
  const certs: X509Certificate[] = [];
  let privateKey: KeyObject | undefined;
  for (const match of pem.matchAll(PEM_BLOCK)) {
    const label = match[1];
    try {
      if (label === 'CERTIFICATE') certs.push(new X509Certificate(match[0]));
      else if (label.endsWith('PRIVATE KEY') && privateKey === undefined) {
        privateKey = createPrivateKey(password === undefined ? match[0] : { key: match[0], passphrase: password });
      }
    } catch (err) {
      throw new SidecarError('misconfigured', `${source} could not be read (${label}: wrong password or format).`, { cause: err });
    }
  }
  if (privateKey === undefined) throw new SidecarError('misconfigured', `${source} holds no private key.`);
  return assemble(certs, privateKey, source);
}

/** Loads a PKCS#12 (PFX) file with node-forge; certificates and keys of any algorithm node:crypto reads. */
export function loadCertificateFromPfx(pfx: Buffer, password?: string, source = 'The PFX certificate'): LoadedCertificate {
  const forge = loadForge();
  let bags: forgeModule.pkcs12.Bag[];
  try {
    const asn1 = forge.asn1.fromDer(forge.util.createBuffer(pfx.toString('binary')));
    let p12: forgeModule.pkcs12.Pkcs12Pfx;
    try {
      p12 = forge.pkcs12.pkcs12FromAsn1(asn1, false, password ?? '');
    } catch (err) {
      // A PFX exported "without a password" may use an empty or an absent (null) MAC password.
      if (password !== undefined && password !== '') throw err;
      p12 = forge.pkcs12.pkcs12FromAsn1(asn1, false, null as unknown as string);
    }
    bags = p12.safeContents.flatMap((sc) => sc.safeBags);
  } catch (err) {
    throw new SidecarError('misconfigured', `${source} could not be read (wrong password or not a PKCS#12 file).`, { cause: err });
  }
  const certs: X509Certificate[] = [];
  let privateKey: KeyObject | undefined;
  for (const bag of bags) {
    // forge parses RSA keys/certificates itself and keeps anything else (EC) as raw ASN.1.
    const withAsn1 = bag as forgeModule.pkcs12.Bag & { asn1?: forgeModule.asn1.Asn1 };
    if (bag.type === forge.pki.oids.certBag) {
      const asn1 = bag.cert ? forge.pki.certificateToAsn1(bag.cert) : withAsn1.asn1;
      if (asn1) certs.push(new X509Certificate(Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary')));
    } else if ((bag.type === forge.pki.oids.pkcs8ShroudedKeyBag || bag.type === forge.pki.oids.keyBag) && privateKey === undefined) {
      const asn1 = bag.key ? forge.pki.wrapRsaPrivateKey(forge.pki.privateKeyToAsn1(bag.key)) : withAsn1.asn1;
      if (asn1) {
        const der = Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary');
        privateKey = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
      }
    }
  }
  if (privateKey === undefined) throw new SidecarError('misconfigured', `${source} holds no private key.`);
  return assemble(certs, privateKey, source);
}

function looksLikePem(bytes: Buffer): boolean {
  return bytes.subarray(0, 4096).toString('latin1').includes('-----BEGIN ');
}

/** Loads the certificate a `Path` or `Base64Encoded` credential description points at (PEM or PFX by content). */
export function loadCertificate(desc: CredentialDescription, fs: CertificateFileReader = { readFileSync }): LoadedCertificate {
  let bytes: Buffer;
  let source: string;
  switch (desc.sourceType) {
    case 'Path': {
      if (!desc.certificateDiskPath) throw new SidecarError('misconfigured', 'A Path certificate credential needs CertificateDiskPath.');
      source = `The certificate at '${desc.certificateDiskPath}'`;
      try {
        bytes = fs.readFileSync(desc.certificateDiskPath);
      } catch (err) {
        throw new SidecarError('misconfigured', `${source} could not be read (${(err as { code?: string }).code ?? 'error'}).`, { cause: err });
      }
      break;
    }
    case 'Base64Encoded': {
      if (!desc.base64EncodedValue) throw new SidecarError('misconfigured', 'A Base64Encoded certificate credential needs Base64EncodedValue.');
      source = 'The Base64Encoded certificate';
      bytes = Buffer.from(desc.base64EncodedValue.replace(/\s+/g, ''), 'base64');
      break;
    }
    default:
      throw new SidecarError('misconfigured', `Certificate SourceType '${desc.sourceType}' is not supported here (use Path or Base64Encoded).`);
  }
  return looksLikePem(bytes)
    ? loadCertificateFromPem(bytes.toString('utf8'), desc.certificatePassword, source)
    : loadCertificateFromPfx(bytes, desc.certificatePassword, source);
}
