/**
 * A minimal Azure Key Vault: `GET /keyvault/{vault}/secrets/{name}[/{version}]?api-version=7.4`,
 * so a vault URL is `${origin}/keyvault/${vault}`. Certificate-backed secrets come back the way
 * Key Vault returns them: base64 PFX (`application/x-pkcs12`) or PEM key + cert
 * (`application/x-pem-file`).
 */
import { createHash } from 'node:crypto';
import { toPfxBase64 } from '../pki.js';
import { sendJson } from '../http.js';
import type { Exchange } from '../http.js';
import { WELL_KNOWN_APP_IDS } from '../scenario.js';

const VAULT_AUDIENCES = new Set(['https://vault.azure.net', 'https://vault.azure.net/', WELL_KNOWN_APP_IDS.keyVault]);

/** Serves one secret; `vaultName`, `secretName`, `version` come from the path. */
export async function keyVaultSecret(ex: Exchange, vaultName: string, secretName: string, version: string | undefined): Promise<void> {
  const core = ex.core;
  const kvError = (status: number, code: string, message: string, headers: Record<string, string> = {}): void =>
    sendJson(ex, status, { error: { code, message } }, headers);
  const challenge = {
    'www-authenticate': `Bearer authorization="${core.origin}/${core.scenario.tenants.primary.id}", resource="https://vault.azure.net"`,
  };
  if (ex.req.method !== 'GET') return kvError(405, 'MethodNotAllowed', 'Only GET is supported for secrets.');
  const vault = Object.values(core.scenario.keyVaults).find((v) => v.name.toLowerCase() === vaultName.toLowerCase());
  if (!vault) return kvError(404, 'VaultNotFound', `Vault '${vaultName}' does not exist.`);
  if (!ex.url.searchParams.get('api-version')) return kvError(400, 'BadParameter', 'The api-version query parameter is required.');
  const auth = ex.req.headers.authorization;
  if (!auth || !/^bearer /i.test(auth)) return kvError(401, 'Unauthorized', 'AKV10000: Request is missing a Bearer or PoP token.', challenge);
  const verified = await core.verifyIssuedToken(auth.slice(7).trim());
  if (!verified.ok) return kvError(401, 'Unauthorized', `AKV10032: Invalid token. ${verified.reason}`, challenge);
  const p = verified.payload;
  const now = core.nowSec();
  if (typeof p.exp !== 'number' || p.exp <= now || (typeof p.nbf === 'number' && p.nbf > now)) {
    return kvError(401, 'Unauthorized', 'AKV10022: Token is expired or not yet valid.', challenge);
  }
  if (typeof p.aud !== 'string' || !VAULT_AUDIENCES.has(p.aud.toLowerCase())) {
    return kvError(401, 'Unauthorized', 'AKV10022: Invalid audience.', challenge);
  }
  if (!vault.readers.some((r) => r.toLowerCase() === String(p.oid).toLowerCase())) {
    return kvError(403, 'Forbidden', `The user, group or application 'oid=${String(p.oid)}' does not have secrets get permission on key vault '${vault.name}'.`);
  }
  const secret = vault.secrets[secretName];
  if (!secret) return kvError(404, 'SecretNotFound', `A secret with (name/id) ${secretName} was not found in this key vault.`);
  let value: string;
  if (secret.certificate) {
    const app = core.findApp(secret.certificate.app);
    const material = secret.certificate.encryption ? core.encryptionCertificateOf(app) : app ? core.certificates.get(`${app.appId.toLowerCase()}:${secret.certificate.name}`) : undefined;
    if (!material) return kvError(404, 'SecretNotFound', `The certificate behind secret ${secretName} is not available.`);
    value = secret.contentType === 'application/x-pkcs12' ? toPfxBase64(material) : `${material.keyPem.trim()}\n${material.certPem.trim()}\n`;
  } else {
    value = secret.value ?? '';
  }
  const currentVersion = createHash('sha256').update(`${vault.name}/${secretName}`).digest('hex').slice(0, 32);
  if (version && version !== currentVersion) return kvError(404, 'SecretNotFound', `A secret with (name/id) ${secretName}/${version} was not found in this key vault.`);
  const created = Math.floor(Date.now() / 1000) - 86400;
  sendJson(ex, 200, {
    value,
    contentType: secret.contentType,
    id: `${vault.url}/secrets/${secretName}/${currentVersion}`,
    managed: secret.certificate ? true : undefined,
    kid: secret.certificate ? `${vault.url}/keys/${secretName}/${currentVersion}` : undefined,
    attributes: { enabled: true, created, updated: created, recoveryLevel: 'Recoverable+Purgeable', recoverableDays: 90 },
    tags: {},
  });
}
