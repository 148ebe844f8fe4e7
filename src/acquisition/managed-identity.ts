/**
 * Managed-identity tokens through msal-node's ManagedIdentityApplication (reference sidecar-http-api
 * §5.5, entra-protocol §4), used for the direct managed-identity flow, for managed identity as the
 * app's federated credential, and for Key Vault access.
 *
 * msal-node facts that shape this module:
 * - It picks the source (IMDS, App Service, Arc, ...) from process.env on first use and keeps it in a
 *   STATIC field, and its MI token cache is static too. The config loader records those variables in
 *   `config.environment.managedIdentityEnv` for diagnostics only; msal reads process.env itself, so
 *   they must be in the environment before the first managed-identity call of the process.
 * - We always pass `forceRefresh: true`: our own TokenCache (single-flight, refresh-ahead, bounded)
 *   sits in front, so msal's static cache is never read. msal still writes every token into it, and
 *   nothing ever removes them (unbounded, blind to Sidecar:TokenCache:MaxEntries, alive after our
 *   eviction and close()), so it is emptied after every acquisition (clearMsalCache).
 * - The static source also keeps the network client of the FIRST application that used it. Every
 *   application therefore gets one process-wide forwarding client that sends through the network
 *   client of the most recently created, still open ManagedIdentityTokens (normally the only one).
 * - Internal retries are disabled (IMDS backs off up to 4 s × 3, or 10 s × 7 on 410): the caller's
 *   timeout, not msal's retry policy, bounds a request.
 */
import type { AuthenticationResult, INetworkModule, ManagedIdentityApplication, NetworkRequestOptions } from '@azure/msal-node';
import { loadedMsal, loadMsal, msalSystem, type MsalLoggerOptions } from './msal.js';
import { SidecarError } from '../errors.js';
import { noAccessToken, type CachedToken } from './token-cache.js';
import { LruMap } from '../bounded-map.js';

/** Network clients of the open ManagedIdentityTokens, newest last; the forwarding client uses the newest. */
const openNetworkClients: INetworkModule[] = [];

function currentNetworkClient(): INetworkModule {
  const client = openNetworkClients.at(-1);
  if (!client) throw new SidecarError('acquisition_unavailable', 'The managed-identity client is closed.');
  return client;
}

/** Managed-identity applications kept at once (one per identity a pod uses). */
export const MAX_APPLICATIONS = 32;

/** The one network client msal's static managed-identity source ever sees (see the module comment). */
const forwardingNetworkClient: INetworkModule = {
  sendGetRequestAsync: <T>(url: string, options?: NetworkRequestOptions, timeout?: number) => currentNetworkClient().sendGetRequestAsync<T>(url, options, timeout),
  sendPostRequestAsync: <T>(url: string, options?: NetworkRequestOptions) => currentNetworkClient().sendPostRequestAsync<T>(url, options),
};

/**
 * Empties msal's process-wide managed-identity token cache. It is a private static field
 * (`ManagedIdentityApplication.nodeStorage`, msal-node 7): the MI application has no getTokenCache()
 * nor any other public way to it, and no request option keeps msal from writing there. `clear()`
 * is NodeStorage's own (it keeps only authority metadata); the field is checked at run time so that
 * an msal that renames it costs memory, not a failed acquisition.
 */
function clearMsalCache(): void {
  const storage = (loadedMsal()?.ManagedIdentityApplication as unknown as { nodeStorage?: { clear?: unknown } } | undefined)?.nodeStorage;
  if (typeof storage?.clear === 'function') (storage as { clear(): void }).clear();
}

export interface ManagedIdentityDeps {
  readonly networkClient: INetworkModule;
  readonly loggerOptions: MsalLoggerOptions;
  /** AzureAd:ClientCapabilities; msal sends them to the endpoint as `xms_cc` (e.g. `cp1`, CAE). */
  readonly clientCapabilities: readonly string[];
}

/** Managed-identity token source: one msal application per identity (system-assigned or a user-assigned client id). */
export class ManagedIdentityTokens {
  /**
   * The applications, by identity. Bounded: the user-assigned client id can come from a caller
   * (`optionsOverride.AcquireTokenOptions.ManagedIdentity.UserAssignedClientId`), and a pod has a
   * handful of identities, so an application dropped here is only rebuilt (msal keeps no state in
   * it that we use: our TokenCache holds the tokens).
   */
  private readonly apps = new LruMap<string, ManagedIdentityApplication>(MAX_APPLICATIONS);
  private readonly deps: ManagedIdentityDeps;

  constructor(deps: ManagedIdentityDeps) {
    this.deps = deps;
    openNetworkClients.push(deps.networkClient);
  }

  /** Stops routing msal's managed-identity calls through this instance's network client. */
  close(): void {
    const i = openNetworkClients.lastIndexOf(this.deps.networkClient);
    if (i >= 0) openNetworkClients.splice(i, 1);
    this.apps.clear();
    clearMsalCache();
  }

  /** A fresh token for `resource` (`…/.default` accepted) from the host's managed identity. */
  async acquire(resource: string, userAssignedClientId: string | undefined, claims: string | undefined): Promise<CachedToken> {
    const app = await this.app(userAssignedClientId);
    let result: AuthenticationResult;
    try {
      result = await app.acquireToken({ resource, forceRefresh: true, ...(claims ? { claims } : {}) });
    } finally {
      clearMsalCache();
    }
    // msal builds a result from any answer without `error`; an endpoint that sent no token has failed.
    if (typeof result?.accessToken !== 'string' || result.accessToken === '') throw noAccessToken('The managed-identity endpoint answered without an access token.');
    return {
      scheme: 'Bearer',
      token: result.accessToken,
      expiresOn: Math.floor((result.expiresOn?.getTime() ?? Date.now()) / 1000),
      ...(result.refreshOn ? { refreshOn: Math.floor(result.refreshOn.getTime() / 1000) } : {}),
    };
  }

  /** How many applications are kept (for tests). */
  get applications(): number {
    return this.apps.size;
  }

  private async app(userAssignedClientId: string | undefined): Promise<ManagedIdentityApplication> {
    // A prefix no user-assigned client id can forge ("system" is a string a caller can send).
    const id = userAssignedClientId ? `user-assigned:${userAssignedClientId}` : 'system-assigned';
    let app = this.apps.get(id);
    if (!app) {
      const msal = await loadMsal();
      app = new msal.ManagedIdentityApplication({
        ...(userAssignedClientId ? { managedIdentityIdParams: { userAssignedClientId } } : {}),
        ...(this.deps.clientCapabilities.length > 0 ? { clientCapabilities: [...this.deps.clientCapabilities] } : {}),
        system: msalSystem(msal, forwardingNetworkClient, this.deps.loggerOptions),
      });
      this.apps.set(id, app);
    }
    return app;
  }
}
