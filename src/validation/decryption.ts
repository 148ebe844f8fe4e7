/**
 * Encrypted inbound tokens (JWE, reference entra-protocol §3.4): `AzureAd:TokenDecryptionCredentials`
 * certificates (from disk, config or Key Vault) become private keys, loaded once at start-up; a
 * compact JWE is unwrapped only with RSA-OAEP/RSA-OAEP-256 and an AES content encryption from the
 * allow-list (never RSA1_5 or dir), using the key its `kid`/`x5t` names, else each configured key in
 * turn. The plaintext must be a signed JWS; the caller validates it.
 */
import type { KeyObject } from 'node:crypto';
import type { CredentialDescription } from '../config/types.js';
import { loadCertificate, type CertificateFileReader, type LoadedCertificate } from '../credentials/certificate.js';
import { SidecarError } from '../errors.js';

/** A token decryption key and the identifiers a JWE header may name it by. */
export interface DecryptionKey {
  readonly privateKey: KeyObject;
  /** Upper-case hex SHA-1 thumbprint of the certificate (Entra puts it in the JWE `kid`). */
  readonly thumbprintSha1Hex: string;
  /** base64url SHA-1 thumbprint (the JWE `x5t`). */
  readonly x5t: string;
}

export const ALLOWED_KEY_MANAGEMENT_ALGS: readonly string[] = ['RSA-OAEP', 'RSA-OAEP-256'];
export const ALLOWED_CONTENT_ENCRYPTION_ALGS: readonly string[] = ['A128CBC-HS256', 'A256CBC-HS512', 'A128GCM', 'A256GCM'];

export interface DecryptionKeySources {
  /** Reads Path certificates (a seam for tests). */
  readonly fs?: CertificateFileReader;
  /** Loads a KeyVault certificate (src/credentials/key-vault.ts with the process's managed identity). */
  readonly keyVault?: (desc: CredentialDescription) => Promise<LoadedCertificate>;
}

/**
 * Loads every non-skipped TokenDecryptionCredentials entry (Path, Base64Encoded, KeyVault); a
 * credential that cannot load is a startup error.
 */
export async function loadDecryptionKeys(descs: readonly CredentialDescription[], sources: DecryptionKeySources = {}): Promise<DecryptionKey[]> {
  const keys: DecryptionKey[] = [];
  for (const desc of descs) {
    if (desc.skip) continue;
    let cert: LoadedCertificate;
    if (desc.sourceType === 'KeyVault') {
      if (!sources.keyVault) throw new SidecarError('misconfigured', 'A KeyVault token decryption credential needs Key Vault access, which is not available here.');
      cert = await sources.keyVault(desc);
    } else {
      cert = loadCertificate(desc, sources.fs);
    }
    if (cert.privateKey.asymmetricKeyType !== 'rsa') {
      throw new SidecarError('misconfigured', `Token decryption certificate ${cert.thumbprintSha1} is not an RSA certificate.`);
    }
    keys.push({
      privateKey: cert.privateKey,
      thumbprintSha1Hex: cert.thumbprintSha1,
      x5t: Buffer.from(cert.thumbprintSha1, 'hex').toString('base64url'),
    });
  }
  return keys;
}

/** The members of a JWE protected header this module looks at. */
export interface JweHeader {
  readonly alg?: unknown;
  readonly enc?: unknown;
  readonly kid?: unknown;
  readonly x5t?: unknown;
  readonly zip?: unknown;
  readonly crit?: unknown;
  readonly cty?: unknown;
}

/** The JWE header rules (alg and enc allow-lists, no zip or crit): throws token_alg_not_allowed or token_malformed. */
export function checkJweHeader(header: JweHeader): void {
  if (typeof header.alg !== 'string' || !ALLOWED_KEY_MANAGEMENT_ALGS.includes(header.alg)) {
    throw new SidecarError('token_alg_not_allowed', `The key management algorithm '${safeName(header.alg)}' is not allowed`);
  }
  if (typeof header.enc !== 'string' || !ALLOWED_CONTENT_ENCRYPTION_ALGS.includes(header.enc)) {
    throw new SidecarError('token_alg_not_allowed', `The content encryption algorithm '${safeName(header.enc)}' is not allowed`);
  }
  if (header.zip !== undefined || header.crit !== undefined) {
    throw new SidecarError('token_malformed', 'The encrypted token uses an unsupported header parameter');
  }
}

/**
 * Decrypts a compact JWE whose protected header has already been parsed; returns the inner compact
 * JWS. Throws token_alg_not_allowed for a disallowed alg/enc and token_decryption_failed otherwise.
 * `onAttempt` is told of every RSA key unwrap tried (for the validator's stats).
 */
export async function decryptToken(compact: string, header: JweHeader, keys: readonly DecryptionKey[], onAttempt?: () => void): Promise<string> {
  checkJweHeader(header);
  if (keys.length === 0) throw new SidecarError('token_decryption_failed', 'No token decryption key is configured');
  const named = keys.filter(
    (k) => (typeof header.kid === 'string' && header.kid.toUpperCase() === k.thumbprintSha1Hex) || (typeof header.x5t === 'string' && header.x5t === k.x5t),
  );
  // IdentityModel tries the named key, else every configured key (reference entra-protocol §3.4).
  // An RSA-OAEP encrypted key is exactly as long as the modulus of the key that opens it (RFC 8017
  // §7.1.2): a key of another size is not worth the ≈ 1 ms private-key operation.
  const firstDot = compact.indexOf('.');
  const encryptedKeyBytes = Math.floor(((compact.indexOf('.', firstDot + 1) - firstDot - 1) * 3) / 4);
  const candidates = (named.length > 0 ? named : keys).filter((k) => modulusBytes(k.privateKey) === encryptedKeyBytes);
  if (candidates.length > 0) {
    // Imported here: only deployments with encrypted tokens need it (≈45 ms at start-up otherwise).
    const { compactDecrypt } = await import('jose');
    for (const key of candidates) {
      onAttempt?.();
      try {
        const { plaintext } = await compactDecrypt(compact, key.privateKey, {
          keyManagementAlgorithms: ALLOWED_KEY_MANAGEMENT_ALGS as string[],
          contentEncryptionAlgorithms: ALLOWED_CONTENT_ENCRYPTION_ALGS as string[],
        });
        return Buffer.from(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength).toString('utf8');
      } catch {
        // Wrong key or tampered ciphertext: try the next candidate; the reason is never shown.
      }
    }
  }
  throw new SidecarError('token_decryption_failed', 'The token could not be decrypted with any configured key');
}

/** The byte length of an RSA private key's modulus (0 for anything else). */
function modulusBytes(key: KeyObject): number {
  return Math.ceil((key.asymmetricKeyDetails?.modulusLength ?? 0) / 8);
}

/**
 * The most of a value an error detail shows: enough for a real issuer
 * (`https://login.microsoftonline.com/<tenant GUID>/v2.0`, 74 characters) or an App ID URI whole,
 * since the part that is wrong (a tenant) is often at the end. Longer values end in `...`.
 */
const MAX_SHOWN_CHARS = 256;

/**
 * A token value fit for an error detail: bounded, printable ASCII, and none of the quote that
 * surrounds it in the message nor the `"` and `\` that RFC 6750 §3 keeps out of error_description.
 * Total: a token's JSON can hold any value, and String() throws on some objects
 * (`{"toString":1}`), which would turn a malformed token into a 500.
 */
export function safeName(value: unknown): string {
  const s = typeof value === 'string' ? value : typeof value === 'number' || typeof value === 'boolean' || value === null ? String(value) : `(${Array.isArray(value) ? 'array' : typeof value})`;
  const shown = s.length > MAX_SHOWN_CHARS ? `${s.slice(0, MAX_SHOWN_CHARS)}...` : s;
  return shown.replace(/[^\x20-\x7e]/g, '?').replace(/['"\\]/g, '?');
}
