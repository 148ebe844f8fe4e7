/**
 * Certificates kept in Azure Key Vault (SourceType `KeyVault`, reference sidecar-http-api §3.2), for
 * client credentials and for token decryption alike: the certificate's secret
 * (`GET {vault}/secrets/{name}`) is read with a managed-identity token for Key Vault and parsed as
 * the PFX or PEM it holds. Errors name the vault host and the certificate, never the secret.
 */
import type { Dispatcher } from 'undici';
import type { CredentialDescription } from '../config/types.js';
import { SidecarError } from '../errors.js';
import { send } from '../net/outbound.js';
import { loadCertificateFromPem, loadCertificateFromPfx, type LoadedCertificate } from './certificate.js';

/** Key Vault's audience for managed-identity tokens. */
export const KEY_VAULT_RESOURCE = 'https://vault.azure.net';
/** The Key Vault REST API version used to read a certificate's secret. */
export const KEY_VAULT_API_VERSION = '7.4';

export interface KeyVaultDeps {
  readonly agent: Dispatcher;
  readonly timeoutMs: number;
  readonly maxResponseBytes: number;
  /** A managed-identity access token for `resource` (cached and single-flighted by the caller). */
  readonly managedIdentityToken: (resource: string, userAssignedClientId: string | undefined) => Promise<string>;
}

/** Reads a Key Vault certificate's secret with the credential's managed identity and parses the PFX or PEM it holds. */
export async function loadCertificateFromKeyVault(desc: CredentialDescription, deps: KeyVaultDeps): Promise<LoadedCertificate> {
  if (!desc.keyVaultUrl || !desc.keyVaultCertificateName) {
    throw new SidecarError('misconfigured', 'A KeyVault credential needs KeyVaultUrl and KeyVaultCertificateName.');
  }
  const vault = desc.keyVaultUrl.replace(/\/+$/, '');
  const url = `${vault}/secrets/${encodeURIComponent(desc.keyVaultCertificateName)}?api-version=${KEY_VAULT_API_VERSION}`;
  const accessToken = await deps.managedIdentityToken(KEY_VAULT_RESOURCE, desc.managedIdentityClientId);
  const res = await send(deps.agent, url, {
    method: 'GET',
    headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json' },
    deadlineMs: deps.timeoutMs,
    maxResponseBytes: deps.maxResponseBytes,
  }).catch((err: unknown) => {
    throw new SidecarError('acquisition_unavailable', err instanceof SidecarError ? err.detail : `Key Vault ${new URL(vault).host} is unreachable.`, { cause: err });
  });
  if (res.status !== 200) {
    throw new SidecarError('misconfigured', `Key Vault answered ${res.status} for certificate '${desc.keyVaultCertificateName}'.`);
  }
  let secret: { value?: unknown; contentType?: unknown };
  try {
    secret = JSON.parse(res.body.toString('utf8')) as typeof secret;
  } catch {
    throw new SidecarError('misconfigured', `Key Vault returned a non-JSON secret for certificate '${desc.keyVaultCertificateName}'.`);
  }
  if (typeof secret.value !== 'string' || secret.value === '') {
    throw new SidecarError('misconfigured', `Key Vault secret for certificate '${desc.keyVaultCertificateName}' has no value.`);
  }
  const contentType = typeof secret.contentType === 'string' ? secret.contentType.toLowerCase() : '';
  const isPem = contentType.includes('pem') || secret.value.includes('-----BEGIN');
  const source = `The Key Vault certificate '${desc.keyVaultCertificateName}'`;
  return isPem ? loadCertificateFromPem(secret.value, undefined, source) : loadCertificateFromPfx(Buffer.from(secret.value, 'base64'), '', source);
}
