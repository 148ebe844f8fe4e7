/**
 * The app's own credential for the token endpoint, from `AzureAd:ClientCredentials` (reference
 * sidecar-http-api §3.2): an ordered list; the acquirer uses the first that loads and moves to the
 * next when Entra answers `invalid_client` (after one retry with a reloaded certificate or a fresh
 * managed-identity assertion).
 *
 * Supported sources: ClientSecret, Path (PEM or PFX), Base64Encoded (PFX or PEM), KeyVault (the
 * certificate's secret fetched with a managed-identity token, src/credentials/key-vault.ts),
 * SignedAssertionFilePath (re-read on every acquisition: projected Kubernetes tokens rotate) and
 * SignedAssertionFromManagedIdentity (a managed-identity token for `TokenExchangeUrl` as the client
 * assertion). The config loader refuses every other source (Windows certificate stores,
 * SignedAssertionFromVault, custom providers), so the warning below only guards this list.
 */
import type { KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Dispatcher } from 'undici';
import type { ClientAssertionCallback } from '@azure/msal-node';
import type { Logger } from '../log.js';
import type { CredentialDescription, CredentialSourceType } from '../config/types.js';
import { SidecarError } from '../errors.js';
import { loadCertificate } from '../credentials/certificate.js';
import { loadCertificateFromKeyVault } from '../credentials/key-vault.js';

/** The credential part of msal-node's `auth` options. */
export type MsalCredential =
  | { readonly clientSecret: string }
  | { readonly clientCertificate: { readonly thumbprintSha256: string; readonly privateKey: string; readonly x5c?: string } }
  | { readonly clientAssertion: ClientAssertionCallback };

export interface ClientCredentialSource {
  /** Position in `AzureAd:ClientCredentials`. */
  readonly index: number;
  readonly sourceType: CredentialSourceType;
  /** `<index>:<SourceType>`: names the credential in logs and in msal application keys (never secret). */
  readonly label: string;
  /** The msal credential; certificates are loaded once and remembered until `reset`. */
  load(): Promise<MsalCredential>;
  /**
   * Whether this credential has been usable since start: at once when nothing needs loading, after
   * the first load that succeeded for a certificate (and from then on: a reload that fails after
   * `invalid_client` is acquisition's to handle). Cheap: readiness asks it on every probe.
   */
  usable(): boolean;
  /**
   * Forgets a loaded certificate (or a cached managed-identity assertion) so the next `load` fetches
   * it again (after `invalid_client`). True when there was one to forget: a retry with this source
   * then sends a fresh credential (a rotated certificate), where a retry with an unchanged one could
   * only be refused again.
   */
  reset(): boolean;
}

export interface CredentialDeps {
  readonly agent: Dispatcher;
  readonly logger: Logger;
  readonly sendX5C: boolean;
  readonly timeoutMs: number;
  readonly maxResponseBytes: number;
  /** AZURE_FEDERATED_TOKEN_FILE / AZURE_ACCESS_TOKEN_FILE, the default assertion file. */
  readonly federatedTokenFile?: string;
  /** A managed-identity access token for `resource` (cached and single-flighted by the caller). */
  readonly managedIdentityToken: (resource: string, userAssignedClientId: string | undefined) => Promise<string>;
  /** Drops the cached managed-identity token for `resource`, so the next one is fetched afresh. */
  readonly forgetManagedIdentityToken: (resource: string, userAssignedClientId: string | undefined) => void;
  /** Milliseconds since the epoch (tests pass an offset clock). */
  readonly now: () => number;
}

/**
 * A source reloads what Entra refused at most this often. A credential Entra keeps refusing (a
 * federated credential or certificate registration that is wrong) would otherwise cost a Key Vault
 * or IMDS call and a second token request on every request: IMDS is shared by every pod on the node
 * and rate-limited. A rotation is still picked up by the first refusal after it.
 */
export const RELOAD_MIN_INTERVAL_MS = 30_000;

interface LoadedCertificate {
  readonly thumbprintSha256: string;
  readonly privateKey: string;
  readonly chainPem: readonly string[];
}

function toMsalCertificate(cert: LoadedCertificate, sendX5C: boolean): MsalCredential {
  return {
    clientCertificate: {
      thumbprintSha256: cert.thumbprintSha256,
      privateKey: cert.privateKey,
      // msal parses every PEM block of `x5c` into the assertion header (subject name + issuer auth).
      ...(sendX5C && cert.chainPem.length > 0 ? { x5c: cert.chainPem.join('\n') } : {}),
    },
  };
}

function fromLoaded(c: { readonly privateKey: KeyObject; readonly thumbprintSha256: string; readonly chainPem: readonly string[] }): LoadedCertificate {
  return { thumbprintSha256: c.thumbprintSha256, privateKey: String(c.privateKey.export({ type: 'pkcs8', format: 'pem' })), chainPem: c.chainPem };
}

/** A credential whose certificate is loaded lazily once and reloaded after `reset`. */
function certificateSource(index: number, desc: CredentialDescription, deps: CredentialDeps, loader: () => Promise<LoadedCertificate>): ClientCredentialSource {
  let loaded: Promise<LoadedCertificate> | undefined;
  let loadedAt = Number.NEGATIVE_INFINITY;
  let everLoaded = false;
  return {
    index,
    sourceType: desc.sourceType,
    label: `${index}:${desc.sourceType}`,
    async load() {
      if (!loaded) {
        loadedAt = deps.now();
        const loading = loader();
        loaded = loading;
        loading.then(
          () => {
            everLoaded = true;
          },
          () => {
            // A failed load is retried on the next acquisition, not remembered.
            if (loaded === loading) loaded = undefined;
          },
        );
      }
      return toMsalCertificate(await loaded, deps.sendX5C);
    },
    usable: () => everLoaded,
    reset() {
      // A certificate loaded moments ago is what is on disk or in Key Vault now: loading it again
      // would send the same one.
      if (loaded === undefined || deps.now() - loadedAt < RELOAD_MIN_INTERVAL_MS) return false;
      loaded = undefined;
      return true;
    },
  };
}

function assertionFileSource(index: number, desc: CredentialDescription, deps: CredentialDeps): ClientCredentialSource {
  const path = desc.signedAssertionFileDiskPath ?? deps.federatedTokenFile;
  const clientAssertion: ClientAssertionCallback = async () => {
    if (!path) throw new SidecarError('misconfigured', 'SignedAssertionFilePath has no SignedAssertionFileDiskPath and AZURE_FEDERATED_TOKEN_FILE is not set.');
    // Re-read on every acquisition: projected service-account tokens rotate (reference §3.2).
    let assertion: string;
    try {
      assertion = (await readFile(path, 'utf8')).trim();
    } catch (err) {
      throw new SidecarError('misconfigured', `The signed assertion file '${path}' cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}).`, { cause: err });
    }
    if (assertion === '') throw new SidecarError('misconfigured', `The signed assertion file '${path}' is empty.`);
    return assertion;
  };
  return { index, sourceType: desc.sourceType, label: `${index}:${desc.sourceType}`, load: async () => ({ clientAssertion }), usable: () => true, reset: () => false };
}

function managedIdentityAssertionSource(index: number, desc: CredentialDescription, deps: CredentialDeps): ClientCredentialSource {
  // The FIC audience is a resource: msal-node's MI app strips a trailing `/.default` itself.
  const clientAssertion: ClientAssertionCallback = () => deps.managedIdentityToken(desc.tokenExchangeUrl, desc.managedIdentityClientId);
  // The assertion sits in the token cache like any managed-identity token: once Entra refused it (a
  // changed federated credential, a token outside its valid time range), it must not be sent again
  // until it expires. The next assertion is a fresh managed-identity token, so a retry is worth it,
  // once per RELOAD_MIN_INTERVAL_MS: a fresh one refused again (a wrong federated credential) is
  // kept and sent until then, instead of an IMDS call per request.
  let forgotAt = Number.NEGATIVE_INFINITY;
  const reset = () => {
    const now = deps.now();
    if (now - forgotAt < RELOAD_MIN_INTERVAL_MS) return false;
    forgotAt = now;
    deps.forgetManagedIdentityToken(desc.tokenExchangeUrl, desc.managedIdentityClientId);
    return true;
  };
  return { index, sourceType: desc.sourceType, label: `${index}:${desc.sourceType}`, load: async () => ({ clientAssertion }), usable: () => true, reset };
}

/** Builds the usable credential sources in configured order; skipped and unsupported ones are left out (and logged). */
export function buildClientCredentialSources(descriptions: readonly CredentialDescription[], deps: CredentialDeps): ClientCredentialSource[] {
  const sources: ClientCredentialSource[] = [];
  descriptions.forEach((desc, index) => {
    if (desc.skip) return;
    switch (desc.sourceType) {
      case 'ClientSecret': {
        const secret = desc.clientSecret;
        if (!secret) {
          deps.logger.warn({ credential: `${index}:ClientSecret` }, 'ClientSecret credential without a ClientSecret value; skipped');
          return;
        }
        sources.push({ index, sourceType: desc.sourceType, label: `${index}:ClientSecret`, load: async () => ({ clientSecret: secret }), usable: () => true, reset: () => false });
        return;
      }
      case 'Path':
      case 'Base64Encoded':
        sources.push(certificateSource(index, desc, deps, async () => fromLoaded(await loadCertificate(desc))));
        return;
      case 'KeyVault':
        sources.push(certificateSource(index, desc, deps, async () => fromLoaded(await loadCertificateFromKeyVault(desc, deps))));
        return;
      case 'SignedAssertionFilePath':
        sources.push(assertionFileSource(index, desc, deps));
        return;
      case 'SignedAssertionFromManagedIdentity':
        sources.push(managedIdentityAssertionSource(index, desc, deps));
        return;
      default:
        deps.logger.warn({ credential: `${index}:${desc.sourceType}` }, `credential source '${desc.sourceType}' is not supported by this sidecar; skipped`);
    }
  });
  return sources;
}
