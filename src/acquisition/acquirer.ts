/**
 * Token acquisition for downstream APIs (reference sidecar-http-api §5): flow selection exactly as
 * Microsoft's DefaultAuthorizationHeaderProvider (§5.1), msal-node for the wire protocol with our own
 * network client, and our own bounded, single-flight token cache in front of it.
 *
 *   agent identity (AgentIdentity, §5.6): agent user (T1 → T2 → user_fic) | autonomous agent
 *             (T1 → client credentials as the agent) | the agent on behalf of the caller (T1 → OBO)
 *   app flow  (RequestAppToken or ManagedIdentity): managed identity | client credentials
 *             (PoP-bound through our own token-endpoint client when PopPublicKey is set, §5.8)
 *   user flow: OBO with the inbound token | long-running OBO session | "UI required"
 *
 * msal's own cache is never consulted (`skipCache`) nor filled (`storeInCache` all false); OBO
 * accounts msal records anyway are removed after each call, so msal's unbounded O(n) cache stays
 * empty however many users pass through (entra-protocol §7); managed-identity.ts empties msal's
 * static managed-identity cache the same way.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Dispatcher } from 'undici';
import type { AuthenticationResult, ConfidentialClientApplication } from '@azure/msal-node';
import { clip, redactTokens, type Logger } from '../log.js';
import { createLogLimiter, LOG_LINES_PER_SECOND } from '../log-limit.js';
import type { SidecarConfig } from '../config/types.js';
import { SidecarError } from '../errors.js';
import { isDnsName } from '../net/host-names.js';
import { setNewest } from '../bounded-map.js';
import { asciiLowerCase, asciiUpperCase } from '../ascii-case.js';
import type { AcquiredToken, AcquireRequest, AgentSelection, EffectiveApiOptions, TokenAcquirer, ValidatedToken } from '../pipeline/types.js';
import { isCachedToken } from '../pipeline/authenticate.js';
import { noAccessToken, TokenCache, type CachedToken, type TokenCacheStats } from './token-cache.js';
import { createMsalNetworkClient, observation, withObservation, type AcquisitionObservation } from './msal-network.js';
import { buildClientCredentialSources, type ClientCredentialSource } from './credentials.js';
import { createClientCredentialReadiness, type ClientCredentialReadiness } from './credential-readiness.js';
import { ManagedIdentityTokens } from './managed-identity.js';
import { loadMsal, loadedMsal, msalSystem, type MsalLoggerOptions } from './msal.js';
import { requestToken, TokenEndpointError } from './token-endpoint.js';
import { createHttpRequestSigner, type WithHttpRequestSigner } from '../pop/signer.js';

export interface AcquirerDeps {
  readonly config: SidecarConfig;
  /** The shared outbound undici dispatcher (src/net/outbound.ts). */
  readonly agent: Dispatcher;
  readonly logger: Logger;
  /** Milliseconds since the epoch, for the token cache; tests pass an offset clock. */
  readonly now?: () => number;
}

export interface AcquirerStats extends TokenCacheStats {
  /** Token requests that left the process (token-endpoint POSTs and managed-identity GETs). */
  entraRequests: number;
  /** msal managed-identity applications kept (bounded: the identity can come from a caller's override). */
  managedIdentityApplications: number;
}

/** Hosts of Microsoft's clouds; msal knows their metadata. Any other instance host goes into `knownAuthorities`. */
const MICROSOFT_AUTHORITY_HOSTS = new Set([
  'login.microsoftonline.com',
  'login.windows.net',
  'login.microsoft.com',
  'sts.windows.net',
  'login.partner.microsoftonline.cn',
  'login.chinacloudapi.cn',
  'login.microsoftonline.us',
  'login-us.microsoftonline.com',
  'login.usgovcloudapi.net',
  'login.microsoftonline.de',
  'login.sovcloud-identity.fr',
  'login.sovcloud-identity.de',
  'login.sovcloud-identity.sg',
]);

/** Meta-tenants cannot issue app tokens (Microsoft.Identity.Web rejects them before calling Entra). */
const META_TENANTS = new Set(['common', 'organizations', 'consumers']);

/** Microsoft's message when the user flow has no user (Microsoft.Identity.Web's web-app cache miss, §2.3). */
export const NO_ACCOUNT_MESSAGE = 'No account or login hint was passed to the AcquireTokenSilent call.';

/** Session key value that asks Microsoft's library to allocate a key; the sidecar never returns it (§5.3). */
const ALLOCATE_FOR_ME = 'AllocateForMe';

/** Callers whose OBO cache key is remembered per API (see learnKey). */
const MAX_LEARNED_USER_KEYS = 4096;

/** Bound on distinct msal applications (one per tenant × credential); OBO across many tenants would otherwise grow it. */
const MAX_MSAL_APPS = 256;

/** The token-exchange audience of T1 and T2 (reference §5.6). */
const TOKEN_EXCHANGE_SCOPE = 'api://AzureADTokenExchange/.default';

const NO_MSAL_CACHE = { accessToken: false, refreshToken: false, idToken: false } as const;

function sha256(value: string): string {
  return createHash('sha256').update(value).digest('base64url');
}

/** Cache key: a digest of the parts, so no raw token, assertion or session key ever sits in a key. */
/**
 * The fields every msal token call here shares: msal's own cache is bypassed and never written (our
 * TokenCache owns caching), and claims and extra query parameters ride along when present.
 * `storeInCache` and `extraQueryParameters` are honoured by msal at run time although its request
 * types omit them, hence the cast.
 */
function msalCommon(authority: string, correlationId: string, claimsParam: { claims?: string }, eqp: { extraQueryParameters?: Record<string, string> }): { authority: string; correlationId: string; skipCache: true; claims?: string } {
  return { authority, correlationId, skipCache: true, ...claimsParam, ...({ storeInCache: NO_MSAL_CACHE, ...eqp } as object) };
}

/**
 * Our token-cache key. Its parts are identifiers and digests only (never a raw token or secret), so
 * the joined string is the key itself; no hashing on the hot path.
 */
function cacheKey(parts: readonly (string | undefined)[]): string {
  return JSON.stringify(parts.map((p) => p ?? null));
}

/**
 * SHA-256 of a validated token's JWS, remembered per ValidatedToken: the validator hands back the
 * same object for a token it has seen, so a repeat caller costs no second hash.
 */
const assertionDigests = new WeakMap<ValidatedToken, string>();
function assertionDigest(user: ValidatedToken): string {
  let digest = assertionDigests.get(user);
  if (digest === undefined) assertionDigests.set(user, (digest = sha256(user.jws)));
  return digest;
}

function normalisedScopes(scopes: readonly string[]): string {
  return [...new Set(scopes.map(asciiLowerCase))].sort().join(' ');
}

function sortedEntries(r: Readonly<Record<string, string>>): [string, string][] {
  return Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Digest of what a token request carries beyond its grant: the extra query parameters and the extra
 * headers (names lower-cased: header names are case-insensitive). Either may shape the token Entra
 * returns, so two APIs that differ in them never share a cache entry. undefined when there are none.
 */
function requestExtrasDigest(query: Readonly<Record<string, string>>, headers: Readonly<Record<string, string>>): string | undefined {
  const q = sortedEntries(query);
  const h = sortedEntries(Object.fromEntries(Object.entries(headers).map(([n, v]) => [n.toLowerCase(), v])));
  return q.length === 0 && h.length === 0 ? undefined : sha256(JSON.stringify([q, h]));
}

/** An msal/Entra message fit to show a caller: Entra never echoes credentials, but strip anything JWT-shaped anyway. */
function safeText(text: string): string {
  return clip(redactTokens(text), 2000);
}

function safeMessage(err: Error): string {
  return safeText(err.message);
}

/** Resolves like `p`, but rejects when this caller's signal aborts (the shared flight continues for others). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(new SidecarError('dependency_timeout', 'The request deadline passed before a token was acquired.'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new SidecarError('dependency_timeout', 'The request deadline passed before a token was acquired.'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/** Maps whatever msal or our network client threw to the error table (reference §2.3 table). */
export function mapAcquisitionError(err: unknown, seen: AcquisitionObservation): SidecarError {
  if (err instanceof SidecarError) {
    // Our network client's transport failures (as thrown through msal's GET paths) become "unavailable".
    if (err.code === 'dependency_timeout' || err.code === 'downstream_unavailable') {
      return new SidecarError('acquisition_unavailable', err.detail, { cause: err });
    }
    return err;
  }
  if (err instanceof TokenEndpointError) {
    // Our own token-endpoint client (PoP requests): the same mapping as msal's errors below.
    if (err.status === 429 || err.status === 503) return new SidecarError('acquisition_throttled', err.message, { cause: err, retryAfterSec: err.retryAfterSec });
    if (err.status >= 500 || err.error === 'invalid_response') return new SidecarError('acquisition_upstream_failed', err.message, { cause: err });
    if (err.error === 'interaction_required' || err.error === 'consent_required' || err.error === 'login_required') {
      return new SidecarError('acquisition_ui_required', err.message, { cause: err, claims: err.claims });
    }
    return new SidecarError('acquisition_rejected', err.message, { cause: err });
  }
  // msal's errors exist only once msal is loaded (loadedMsal() is undefined before the first acquisition).
  const msal = loadedMsal();
  if (msal && err instanceof msal.InteractionRequiredAuthError) {
    return new SidecarError('acquisition_ui_required', safeMessage(err), { cause: err, claims: err.claims ? err.claims : undefined });
  }
  if (msal && err instanceof msal.ServerError) {
    if (seen.status === 429 || seen.status === 503) {
      return new SidecarError('acquisition_throttled', safeMessage(err), { cause: err, retryAfterSec: seen.retryAfterSec });
    }
    if ((seen.status ?? 0) >= 500 || err.errorCode === 'invalid_response') {
      return new SidecarError('acquisition_upstream_failed', safeMessage(err), { cause: err });
    }
    return new SidecarError('acquisition_rejected', safeMessage(err), { cause: err });
  }
  if (seen.transportError) {
    return new SidecarError('acquisition_unavailable', seen.transportError.detail, { cause: err });
  }
  if (msal && err instanceof msal.AuthError && err.errorCode === msal.ClientAuthErrorCodes.endpointResolutionError && seen.discoveryRefusal) {
    // Entra refused the authority's metadata (an unknown or malformed tenant: 400 invalid_tenant,
    // AADSTS90002/900023) and msal stopped there with an opaque endpoints_resolution_error. It is
    // an Entra error response like any token-endpoint refusal: 401 with Entra's text (reference
    // §2.3 table; §8 SidecarEndpointsE2ETests: tenant override `invalid-tenant` → 401). A 5xx or a
    // transport failure on that GET leaves no refusal and stays "unavailable" below; so does any
    // other msal failure, whatever a metadata GET answered before it.
    return new SidecarError('acquisition_rejected', safeText(seen.discoveryRefusal.description), { cause: err });
  }
  if (msal && err instanceof msal.ClientConfigurationError) {
    return new SidecarError('misconfigured', `msal configuration error: ${err.errorCode}`, { cause: err });
  }
  if (msal && err instanceof msal.AuthError) {
    return new SidecarError('acquisition_unavailable', `msal error: ${err.errorCode}`, { cause: err });
  }
  return new SidecarError('internal', undefined, { cause: err });
}

function isInvalidClient(err: unknown): boolean {
  const msal = loadedMsal();
  return (msal !== undefined && err instanceof msal.ServerError && err.errorCode === 'invalid_client') || (err instanceof TokenEndpointError && err.error === 'invalid_client');
}

function toCachedToken(result: AuthenticationResult | null): CachedToken {
  if (!result || !result.accessToken) throw noAccessToken('Entra ID answered without an access token.');
  return {
    // Microsoft returns the token type as the scheme; msal reports `Bearer` for ordinary tokens.
    scheme: result.tokenType && result.tokenType.toLowerCase() !== 'bearer' ? result.tokenType : 'Bearer',
    token: result.accessToken,
    expiresOn: Math.floor((result.expiresOn?.getTime() ?? Date.now()) / 1000),
    ...(result.refreshOn ? { refreshOn: Math.floor(result.refreshOn.getTime() / 1000) } : {}),
  };
}

/**
 * The `claims` parameter msal sends on a confidential client's token request when client
 * capabilities are configured (msal-common RequestParameterBuilder.addClaims → buildMergedClaims):
 * the request's claims with `access_token.xms_cc.values` set to the capabilities, so a `cp1` client
 * still gets CAE tokens. msal also adds id_token hints, which a client-credentials request has no use
 * for (MSAL.NET adds none). Claims that are not a JSON object are refused as msal refuses them
 * (`invalid_claims`, a configuration error).
 */
function claimsWithCapabilities(claims: string | undefined, capabilities: readonly string[]): string | undefined {
  if (capabilities.length === 0) return claims === '' ? undefined : claims;
  let request: unknown = {};
  if (claims !== undefined && claims !== '') {
    try {
      request = JSON.parse(claims);
    } catch {
      request = undefined;
    }
  }
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(request)) throw new SidecarError('misconfigured', 'The claims request is not a JSON object (invalid_claims).');
  const accessToken = isObject(request.access_token) ? request.access_token : {};
  return JSON.stringify({ ...request, access_token: { ...accessToken, xms_cc: { values: [...capabilities] } } });
}

/**
 * A long-running OBO session (LongRunningWebApiSessionKey, reference sidecar-http-api §5.3): the
 * refresh token its token-less continuations redeem, and the start it belongs to. A start by another
 * caller's token (or for another tenant) is a new generation, and the generation is part of every
 * 'session' cache key: the continuations cached for the previous start are never found again (they
 * age out of the LRU), so a key restarted by another user cannot serve the first user's tokens.
 */
interface LongRunningSession {
  /** Absent when Entra sent none: the session exists (and ended the previous one) but cannot be continued. */
  readonly refreshToken?: string;
  readonly tenant: string;
  /** assertionDigest of the token that started the session. */
  readonly owner: string;
  /** Random id of this start; in every 'session' cache key. */
  readonly generation: string;
}

/** Creates the process's token acquirer; see the module comment. */
export function createTokenAcquirer(deps: AcquirerDeps): TokenAcquirer & WithHttpRequestSigner & {
  stats(): AcquirerStats;
  /** A managed-identity access token for `resource`, cached like every token (Key Vault access at start-up). */
  managedIdentityAccessToken(resource: string, userAssignedClientId: string | undefined): Promise<string>;
  /** Whether a configured client credential is usable; its `start()` loads the certificates in the background. */
  readonly clientCredentials: ClientCredentialReadiness;
} {
  const { config, agent, logger } = deps;
  const azureAd = config.azureAd;
  // A caller can make acquisitions fail at will (a bad override scope, an app token sent for OBO).
  const failureLog = createLogLimiter(LOG_LINES_PER_SECOND, logger.isLevelEnabled('debug'));
  const outbound = config.sidecar.outbound;
  let entraRequests = 0;
  // The sidecar's own PoP key for SignHttpRequest APIs; a bad Sidecar:Pop:KeyFile fails here, at start.
  const httpRequestSigner = createHttpRequestSigner(config.sidecar.pop?.keyFile);

  const loggerOptions: MsalLoggerOptions = {
    piiLoggingEnabled: false,
    // msal's own lines (no PII enabled) go to debug: they name endpoints and error codes, never tokens.
    loggerCallback: (_level, message, containsPii) => {
      if (!containsPii) logger.debug({ component: 'msal' }, redactTokens(message));
    },
  };
  const networkClient = createMsalNetworkClient(agent, { timeoutMs: outbound.timeoutMs, maxResponseBytes: outbound.maxResponseBytes, onTokenRequest: () => entraRequests++ });
  const miNetworkClient = createMsalNetworkClient(agent, { timeoutMs: outbound.timeoutMs, maxResponseBytes: outbound.maxResponseBytes, onTokenRequest: () => entraRequests++, countGets: true });
  const managedIdentity = new ManagedIdentityTokens({ networkClient: miNetworkClient, loggerOptions, clientCapabilities: azureAd.clientCapabilities });

  const cache = new TokenCache({
    maxEntries: config.sidecar.tokenCache.maxEntries,
    expiryBufferSec: config.sidecar.tokenCache.expiryBufferSec,
    now: deps.now,
    onRefreshError: (_key, err) => {
      const e = err instanceof SidecarError ? err : undefined;
      logger.warn({ code: e?.code, detail: e?.detail }, 'background token refresh failed; serving the current token');
    },
  });

  /**
   * Runs one outbound acquisition with its own observation slot and maps its failure. `extraHeaders`
   * (AcquireTokenOptions:ExtraHeadersParameters) go on the token POSTs msal sends for it; legs run
   * through their own `observed` (an agent's T1/T2, a managed-identity assertion) do not carry them.
   */
  async function observed<T>(run: () => Promise<T>, extraHeaders?: Readonly<Record<string, string>>): Promise<T> {
    const seen: AcquisitionObservation = extraHeaders !== undefined && Object.keys(extraHeaders).length > 0 ? { extraHeaders } : {};
    try {
      return await withObservation(seen, run);
    } catch (err) {
      const mapped = mapAcquisitionError(err, seen);
      if (logger.isLevelEnabled(mapped.spec.logLevel) && failureLog.allow(mapped.code)) {
        logger[mapped.spec.logLevel]({ code: mapped.code, detail: mapped.detail, status: seen.status, ...failureLog.suppressed(mapped.code) }, 'token acquisition failed');
      }
      throw mapped;
    }
  }

  function managedIdentityKey(resource: string, userAssignedClientId: string | undefined): string {
    // No id (null in the key) stands for the system-assigned identity: no client id a caller can name, "system" included, collides with it.
    return cacheKey(['mi', userAssignedClientId || undefined, asciiLowerCase(resource).replace(/\/\.default$/, '')]);
  }

  async function managedIdentityToken(resource: string, userAssignedClientId: string | undefined, claims?: string, bypass = false): Promise<CachedToken> {
    const key = managedIdentityKey(resource, userAssignedClientId);
    // Claims are not part of the key, as in every flow: the token got for a challenge replaces the refused one.
    const fetch = () => observed(() => managedIdentity.acquire(resource, userAssignedClientId, claims));
    return cache.get(key, fetch, claims ? { bypass: true, flight: sha256(claims) } : { bypass });
  }

  const credentialSources: ClientCredentialSource[] = buildClientCredentialSources(azureAd.clientCredentials, {
    agent,
    logger,
    sendX5C: azureAd.sendX5C,
    timeoutMs: outbound.timeoutMs,
    maxResponseBytes: outbound.maxResponseBytes,
    federatedTokenFile: config.environment.federatedTokenFile,
    managedIdentityToken: async (resource, clientId) => (await managedIdentityToken(resource, clientId)).token,
    forgetManagedIdentityToken: (resource, clientId) => cache.delete(managedIdentityKey(resource, clientId)),
    now: deps.now ?? Date.now,
  });
  let preferredCredential = credentialSources[0]?.index ?? 0;
  const clientCredentials = createClientCredentialReadiness(credentialSources, { logger });

  const instanceUrl = new URL(azureAd.instance);
  const knownAuthorities = MICROSOFT_AUTHORITY_HOSTS.has(instanceUrl.hostname.toLowerCase()) ? [] : [instanceUrl.host];
  const defaultAuthority = azureAd.authority.replace(/\/v2\.0\/?$/i, '').replace(/\/+$/, '');
  const instanceBase = azureAd.instance.endsWith('/') ? azureAd.instance : `${azureAd.instance}/`;

  function authorityFor(tenant: string | undefined): string {
    if (tenant === undefined || tenant === '') return defaultAuthority;
    // The config loader and the override parser accept only DNS names; this is the last line before
    // the tenant becomes a URL path, where `/ ? # @ \` would change which authority msal asks.
    if (!isDnsName(tenant)) throw new SidecarError('request_invalid', 'The tenant must be a tenant ID (GUID) or a domain name.');
    return `${instanceBase}${tenant}`;
  }

  /**
   * The authority for an app token (the sidecar's own or an agent's), after Microsoft's app-token
   * rules (§5.2): exactly one `<resource>/.default` scope (only the first is used), and a real tenant.
   */
  function appTokenAuthority(options: EffectiveApiOptions, scope: string): string {
    if (!scope.endsWith('/.default')) {
      throw new SidecarError('misconfigured', `The scope '${scope}' of API '${options.apiName}' must end with '/.default' for an app token.`);
    }
    const override = options.acquireTokenOptions.tenant;
    const tenant = override ?? azureAd.tenantId;
    if (META_TENANTS.has(tenant.toLowerCase())) {
      throw new SidecarError('misconfigured', `Tenant '${tenant}' cannot be used for an app token; name a real tenant (AcquireTokenOptions:Tenant or AzureAd:TenantId).`);
    }
    return authorityFor(override);
  }

  const apps = new Map<string, ConfidentialClientApplication>();

  async function appFor(authority: string, source: ClientCredentialSource): Promise<ConfidentialClientApplication> {
    const key = `${azureAd.clientId}|${authority.toLowerCase()}|${source.label}`;
    const existing = apps.get(key);
    if (existing) {
      apps.delete(key);
      apps.set(key, existing);
      return existing;
    }
    const credential = await source.load();
    const msal = await loadMsal();
    const app = new msal.ConfidentialClientApplication({
      auth: {
        clientId: azureAd.clientId,
        authority,
        knownAuthorities,
        ...(azureAd.clientCapabilities.length > 0 ? { clientCapabilities: [...azureAd.clientCapabilities] } : {}),
        ...credential,
      },
      system: msalSystem(msal, networkClient, loggerOptions),
    });
    setNewest(apps, key, app, MAX_MSAL_APPS);
    return app;
  }

  function forgetApps(source: ClientCredentialSource): void {
    for (const key of [...apps.keys()]) if (key.endsWith(`|${source.label}`)) apps.delete(key);
  }

  /**
   * Runs `call` with what `prepare` makes of the preferred credential, falling back in configured
   * order when preparing fails (the credential cannot be loaded) or Entra answers `invalid_client`.
   */
  async function withCredentialSource<P, T>(prepare: (source: ClientCredentialSource) => Promise<P>, call: (prepared: P) => Promise<T>): Promise<T> {
    if (credentialSources.length === 0) {
      throw new SidecarError('misconfigured', 'No usable client credential is configured (AzureAd:ClientCredentials).');
    }
    const preferred = credentialSources.find((s) => s.index === preferredCredential) ?? credentialSources[0];
    const order = [preferred, ...credentialSources.filter((s) => s !== preferred)];
    let lastError: unknown;
    for (const source of order) {
      const outcome = await tryCredentialSource(source, prepare, call);
      if (outcome.ok) {
        preferredCredential = source.index;
        return outcome.value;
      }
      lastError = outcome.error;
    }
    throw lastError;
  }

  /**
   * One credential source of withCredentialSource. After `invalid_client` a source that had a loaded
   * certificate is reloaded and tried once more before the caller moves on: a certificate rotated on
   * disk or in Key Vault is then picked up within the same request, as Microsoft.Identity.Web reloads
   * its credentials and retries once.
   */
  async function tryCredentialSource<P, T>(source: ClientCredentialSource, prepare: (source: ClientCredentialSource) => Promise<P>, call: (prepared: P) => Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
    for (let retried = false; ; retried = true) {
      let prepared: P;
      try {
        prepared = await prepare(source);
      } catch (err) {
        const e = err instanceof SidecarError ? err : undefined;
        logger.warn({ credential: source.label, code: e?.code, detail: e?.detail }, 'client credential could not be loaded; trying the next one');
        return { ok: false, error: err };
      }
      try {
        return { ok: true, value: await call(prepared) };
      } catch (err) {
        if (!isInvalidClient(err)) throw err;
        // Once per request, and only when the source has something fresh to send.
        const reloadable = !retried && source.reset();
        if (reloadable) forgetApps(source);
        if (!reloadable) {
          logger.warn({ credential: source.label }, 'Entra ID rejected the client credential (invalid_client); trying the next one');
          return { ok: false, error: err };
        }
        logger.warn({ credential: source.label }, 'Entra ID rejected the client credential (invalid_client); reloading it and retrying once');
      }
    }
  }

  /** Runs `call` with the blueprint's msal application for the preferred credential (see withCredentialSource). */
  function withClientCredential<T>(authority: string, call: (app: ConfidentialClientApplication) => Promise<T>): Promise<T> {
    return withCredentialSource((source) => appFor(authority, source), call);
  }

  /** Removes the account msal records for an OBO/refresh response, keeping msal's cache empty. */
  async function forgetAccount(app: ConfidentialClientApplication, result: AuthenticationResult | null): Promise<void> {
    if (!result?.account) return;
    try {
      await app.getTokenCache().removeAccount(result.account);
    } catch {
      // Best effort: a leftover account is harmless, only memory.
    }
  }

  const sessions = new Map<string, LongRunningSession>();
  function rememberSession(sessionId: string, session: LongRunningSession): void {
    setNewest(sessions, sessionId, session, Math.max(1, config.sidecar.tokenCache.maxEntries));
  }

  /**
   * Records a start of session `sessionId` by the token whose digest is `owner`. The same owner and
   * tenant again (refresh-ahead, ForceRefresh, a repeated start) keep the generation, and so their
   * cached continuations; anyone else begins a new one.
   */
  function startSession(sessionId: string, owner: string, tenant: string, refreshToken: string | undefined): LongRunningSession {
    const current = sessions.get(sessionId);
    const same = current !== undefined && current.owner === owner && current.tenant === tenant;
    const rt = refreshToken ?? (same ? current.refreshToken : undefined);
    const session: LongRunningSession = { tenant, owner, generation: same ? current.generation : randomUUID(), ...(rt !== undefined ? { refreshToken: rt } : {}) };
    rememberSession(sessionId, session);
    return session;
  }

  /**
   * The cache key of a session's token for `scopes`. The tenant part is the continuation's override
   * as given (null without one): a tenant override asks for that tenant's token.
   */
  function sessionCacheKey(sessionId: string, generation: string | undefined, tenantOverride: string | undefined, scopes: readonly string[], extrasDigest: string | undefined): string {
    return cacheKey(['session', azureAd.clientId, sessionId, generation, tenantOverride, normalisedScopes(scopes), extrasDigest]);
  }

  // ---------------------------------------------------------------- PoP app tokens (reference §5.8)

  const tokenEndpointDeps = { agent, timeoutMs: outbound.timeoutMs, maxResponseBytes: outbound.maxResponseBytes, onTokenRequest: () => entraRequests++ };

  interface PopInput {
    readonly correlationId: string;
    readonly claims?: string;
    readonly extraQueryParameters: Readonly<Record<string, string>>;
    readonly extraHeaders: Readonly<Record<string, string>>;
    readonly extrasDigest?: string;
    readonly fmiPath?: string;
  }

  /**
   * A client-credentials token bound to `popPublicKey`: `token_type=pop` and `req_cnf=<value
   * verbatim>` (what Microsoft.Identity.Web sends), through our own token-endpoint client because
   * msal-node cannot (entra-protocol §6.3). Cached per key id like any other app token.
   */
  function popAppFlow(authority: string, scope: string, popPublicKey: string, popClaim: string | undefined, input: PopInput): { key: string; fetch: () => Promise<CachedToken> } {
    if (popClaim !== undefined && popClaim !== '') {
      // Microsoft switches to MSAuth 1.0 AT-PoP here; refusing is safer than sending an unbound token.
      throw new SidecarError('misconfigured', 'AcquireTokenOptions:PopClaim (MSAuth AT-PoP) is not supported; use PopPublicKey alone.');
    }
    const key = cacheKey(['app-pop', authority.toLowerCase(), azureAd.clientId, asciiLowerCase(scope), sha256(popPublicKey), input.fmiPath, input.extrasDigest]);
    // msal merges AzureAd:ClientCapabilities into every client-credentials request; so do we.
    const claims = claimsWithCapabilities(input.claims, azureAd.clientCapabilities);
    const params: Record<string, string> = {
      grant_type: 'client_credentials',
      scope,
      token_type: 'pop',
      req_cnf: popPublicKey,
      ...(input.fmiPath ? { fmi_path: input.fmiPath } : {}),
      ...(claims !== undefined ? { claims } : {}),
    };
    // msal sends ExtraQueryParameters on the URL; ours go on the token endpoint's query string too.
    const query = new URLSearchParams(input.extraQueryParameters).toString();
    const fetch = () =>
      observed(() =>
        withCredentialSource(
          (source) => source.load(),
          (credential) =>
            requestToken(tokenEndpointDeps, {
              authority,
              clientId: azureAd.clientId,
              credential,
              params,
              correlationId: input.correlationId,
              expectTokenType: 'pop',
              ...(query !== '' ? { query } : {}),
              extraHeaders: input.extraHeaders,
            }),
        ),
      );
    return { key, fetch };
  }

  // ---------------------------------------------------------------- agent identities (reference §5.6)

  /** msal applications acting as an agent identity: one per (agent, authority), authenticated with T1. */
  const agentApps = new Map<string, ConfidentialClientApplication>();

  /**
   * Leg 1: T1, the blueprint's exchange token naming the agent (`fmi_path`), used as the agent's
   * client assertion. Cached and single-flighted per (authority, blueprint, agent) in our cache.
   */
  function agentExchangeToken(agentId: string, authority: string, correlationId: string): Promise<CachedToken> {
    const key = cacheKey(['agent-t1', authority.toLowerCase(), azureAd.clientId, asciiLowerCase(agentId)]);
    return cache.get(key, () =>
      observed(() =>
        withClientCredential(authority, async (app) =>
          toCachedToken(
            await app.acquireTokenByClientCredential({
              scopes: [TOKEN_EXCHANGE_SCOPE],
              fmiPath: agentId,
              ...msalCommon(authority, correlationId, {}, {}),
            }),
          ),
        ),
      ),
    );
  }

  /** The msal application whose client is the agent identity and whose credential is T1 (entra-protocol §5.2). */
  async function agentAppFor(agentId: string, authority: string): Promise<ConfidentialClientApplication> {
    const msal = await loadMsal();
    const key = `${asciiLowerCase(agentId)}|${authority.toLowerCase()}`;
    const existing = agentApps.get(key);
    if (existing) {
      agentApps.delete(key);
      agentApps.set(key, existing);
      return existing;
    }
    const app = new msal.ConfidentialClientApplication({
      auth: {
        clientId: agentId,
        authority,
        knownAuthorities,
        ...(azureAd.clientCapabilities.length > 0 ? { clientCapabilities: [...azureAd.clientCapabilities] } : {}),
        // Called by msal for every agent request: T1 comes from our cache (fetched once per lifetime).
        clientAssertion: async () => (await agentExchangeToken(agentId, authority, randomUUID())).token,
      },
      system: msalSystem(msal, networkClient, loggerOptions),
    });
    setNewest(agentApps, key, app, MAX_MSAL_APPS);
    return app;
  }

  interface AgentFlowInput {
    readonly agent: AgentSelection;
    readonly scopes: readonly string[];
    readonly appFlow: boolean;
    readonly user?: ValidatedToken;
    readonly correlationId: string;
    readonly claimsParam: { claims?: string };
    readonly eqp: object;
    readonly extraHeaders: Readonly<Record<string, string>>;
    readonly extrasDigest?: string;
  }

  /** Cache key and fetcher for an agent identity request (autonomous, on behalf of the caller, or agent user). */
  function agentFlow(options: EffectiveApiOptions, input: AgentFlowInput): { key: string; fetch: () => Promise<CachedToken> } {
    const ato = options.acquireTokenOptions;
    const { agent, scopes, correlationId, claimsParam, eqp, extraHeaders, extrasDigest } = input;
    const agentId = agent.agentIdentity.trim();
    if (ato.managedIdentity) {
      throw new SidecarError('misconfigured', `API '${options.apiName}' asks for a managed-identity token, which cannot be combined with AgentIdentity.`);
    }
    const agentUser = agent.username ?? agent.userId;
    if (agentUser !== undefined) {
      // Agent user (T2 then user_fic), with or without an inbound token (§2.6, §5.6).
      const tenant = ato.tenant ?? azureAd.tenantId;
      if (META_TENANTS.has(tenant.toLowerCase())) {
        throw new SidecarError('misconfigured', `Tenant '${tenant}' cannot be used for an agent user token; name a real tenant.`);
      }
      const authority = authorityFor(ato.tenant);
      const userKey = agent.username !== undefined ? `upn:${asciiUpperCase(agent.username)}` : `oid:${asciiLowerCase(agentUser)}`;
      const key = cacheKey(['agent-user', authority.toLowerCase(), azureAd.clientId, asciiLowerCase(agentId), userKey, normalisedScopes(scopes), extrasDigest]);
      const t2Key = cacheKey(['agent-t2', authority.toLowerCase(), azureAd.clientId, asciiLowerCase(agentId)]);
      const fetch = () =>
        observed(async () => {
          const app = await agentAppFor(agentId, authority);
          // Leg 2: T2, an exchange token issued to the agent identity (its user FIC).
          const t2 = await cache.get(t2Key, () =>
            observed(async () =>
              toCachedToken(
                await app.acquireTokenByClientCredential({
                  scopes: [TOKEN_EXCHANGE_SCOPE],
                  ...msalCommon(authority, correlationId, {}, {}),
                }),
              ),
            ),
          );
          // Leg 3: grant_type=user_fic with T1 as client assertion (msal sends it from the app's callback).
          const result = await app.acquireTokenByUserFederatedIdentityCredential({
            scopes: [...scopes],
            assertion: t2.token,
            ...(agent.username !== undefined ? { username: agent.username } : { userObjectId: agentUser }),
            authority,
            correlationId,
            ...claimsParam,
            ...eqp,
          });
          await forgetAccount(app, result);
          return toCachedToken(result);
        }, extraHeaders);
      return { key, fetch };
    }
    if (input.appFlow) {
      // Autonomous agent: client credentials as the agent identity (§5.6, entra-protocol §5.2).
      const scope = scopes[0];
      const authority = appTokenAuthority(options, scope);
      const key = cacheKey(['agent-app', authority.toLowerCase(), azureAd.clientId, asciiLowerCase(agentId), asciiLowerCase(scope), extrasDigest]);
      const fetch = () =>
        observed(async () =>
          toCachedToken(
            await (await agentAppFor(agentId, authority)).acquireTokenByClientCredential({
              scopes: [scope],
              ...msalCommon(authority, correlationId, claimsParam, eqp),
            }),
          ),
          extraHeaders,
        );
      return { key, fetch };
    }
    const user = input.user;
    if (!user) throw new SidecarError('acquisition_ui_required', NO_ACCOUNT_MESSAGE);
    // The agent acting for the calling user: OBO as the agent identity (entra-protocol §5.4).
    const authority = authorityFor(ato.tenant ?? user.tenantId);
    const key = cacheKey(['agent-obo', authority.toLowerCase(), azureAd.clientId, asciiLowerCase(agentId), normalisedScopes(scopes), assertionDigest(user), extrasDigest]);
    const fetch = () =>
      observed(async () => {
        const app = await agentAppFor(agentId, authority);
        const result = await app.acquireTokenOnBehalfOf({
          oboAssertion: user.jws,
          scopes: [...scopes],
          ...msalCommon(authority, correlationId, claimsParam, eqp),
        });
        await forgetAccount(app, result);
        return toCachedToken(result);
      }, extraHeaders);
    return { key, fetch };
  }

  // ---------------------------------------------------------------- the warm path

  /**
   * Cache keys the full path below computed for "plain" requests (nothing per request: no claims,
   * agent, managed identity, PoP, session or forced refresh), remembered per frozen options object
   * and, for user flows, per ValidatedToken (the validator returns the same object for a token it
   * has seen). A repeat request then costs two map lookups and a cache peek. Per-user keys sit in a
   * bounded Map, oldest out (a WeakMap entry per first-sight caller made every collection slower).
   */
  const appKeys = new WeakMap<EffectiveApiOptions, string>();
  const userKeys = new WeakMap<EffectiveApiOptions, Map<ValidatedToken, string>>();

  function isPlain(req: AcquireRequest): boolean {
    const ato = req.options.acquireTokenOptions;
    return (
      req.agent === undefined &&
      req.claims === undefined &&
      ato.claims === undefined &&
      !ato.forceRefresh &&
      ato.managedIdentity === undefined &&
      ato.popPublicKey === undefined &&
      ato.longRunningWebApiSessionKey === undefined
    );
  }

  function learnedKey(req: AcquireRequest): string | undefined {
    if (req.options.requestAppToken) return appKeys.get(req.options);
    return req.user === undefined ? undefined : userKeys.get(req.options)?.get(req.user);
  }

  function learnKey(req: AcquireRequest, key: string): void {
    if (req.options.requestAppToken) {
      appKeys.set(req.options, key);
    } else if (req.user !== undefined && isCachedToken(req.user)) {
      let byUser = userKeys.get(req.options);
      if (byUser === undefined) userKeys.set(req.options, (byUser = new Map()));
      setNewest(byUser, req.user, key, MAX_LEARNED_USER_KEYS);
    }
  }

  /** One frozen AcquiredToken per cached token, so repeat callers get the very same object. */
  const acquiredTokens = new WeakMap<CachedToken, AcquiredToken>();
  function acquiredFrom(t: CachedToken): AcquiredToken {
    let a = acquiredTokens.get(t);
    if (a === undefined) acquiredTokens.set(t, (a = Object.freeze({ scheme: t.scheme, token: t.token, expiresOn: t.expiresOn })));
    return a;
  }

  function cached(req: AcquireRequest): AcquiredToken | undefined {
    if (!isPlain(req)) return undefined;
    const known = learnedKey(req);
    const hit = known === undefined ? undefined : cache.peek(known);
    return hit === undefined ? undefined : acquiredFrom(hit);
  }

  async function acquire(req: AcquireRequest): Promise<AcquiredToken> {
    const hit = cached(req);
    if (hit !== undefined) return hit;
    const plain = isPlain(req);
    const options = req.options;
    const ato = options.acquireTokenOptions;
    const scopes = options.scopes ?? [];
    if (scopes.length === 0) throw new SidecarError('misconfigured', `No scopes to request for the API '${options.apiName}'.`);
    const claims = req.claims ?? ato.claims;
    const correlationId = req.correlationId ?? ato.correlationId ?? randomUUID();
    const bypass = ato.forceRefresh || (claims !== undefined && claims !== '');
    const claimsDigest = claims ? sha256(claims) : undefined;
    const extraQueryParameters = { ...azureAd.extraQueryParameters, ...ato.extraQueryParameters };
    // ExtraHeadersParameters go on the token POST of every flow below but managed identity (a GET to
    // the host's endpoint), as Microsoft.Identity.Web's WithExtraHttpHeaders does.
    const extraHeaders = ato.extraHeadersParameters;
    const extrasDigest = requestExtrasDigest(extraQueryParameters, extraHeaders);
    const eqp = Object.keys(extraQueryParameters).length > 0 ? { extraQueryParameters } : {};
    const claimsParam = claims ? { claims } : {};
    const appFlow = options.requestAppToken || ato.managedIdentity !== undefined;

    let key: string;
    let fetch: () => Promise<CachedToken>;
    /** A long-running session start that takes the session over from another token (skips the cached answer). */
    let takeOver = false;

    if (req.agent) {
      ({ key, fetch } = agentFlow(options, { agent: req.agent, scopes, appFlow, user: req.user, correlationId, claimsParam, eqp, extraHeaders, extrasDigest }));
    } else if (appFlow) {
      const scope = scopes[0];
      if (ato.managedIdentity) {
        const token = await untilAborted(managedIdentityToken(scope, ato.managedIdentity.userAssignedClientId, claims, ato.forceRefresh), req.signal);
        return { scheme: token.scheme, token: token.token, expiresOn: token.expiresOn };
      }
      const authority = appTokenAuthority(options, scope);
      if (ato.popPublicKey) {
        ({ key, fetch } = popAppFlow(authority, scope, ato.popPublicKey, ato.popClaim, { correlationId, claims, extraQueryParameters, extraHeaders, extrasDigest, fmiPath: ato.fmiPath }));
      } else {
        key = cacheKey(['app', authority.toLowerCase(), azureAd.clientId, asciiLowerCase(scope), ato.fmiPath, extrasDigest]);
        fetch = () =>
          observed(() =>
            withClientCredential(authority, async (app) =>
              toCachedToken(
                await app.acquireTokenByClientCredential({
                  scopes: [scope],
                  ...(ato.fmiPath ? { fmiPath: ato.fmiPath } : {}),
                  ...(azureAd.azureRegion ? { azureRegion: azureAd.azureRegion } : {}),
                  ...msalCommon(authority, correlationId, claimsParam, eqp),
                }),
              ),
            ),
            extraHeaders,
          );
      }
    } else if (req.user) {
      const user: ValidatedToken = req.user;
      const tenant = ato.tenant ?? user.tenantId;
      const authority = authorityFor(tenant);
      const sessionKey = ato.longRunningWebApiSessionKey && ato.longRunningWebApiSessionKey !== ALLOCATE_FOR_ME ? ato.longRunningWebApiSessionKey : undefined;
      const sessionId = sessionKey ? sha256(`${azureAd.clientId}|${sessionKey}`) : undefined;
      const owner = assertionDigest(user);
      key = cacheKey(['obo', authority.toLowerCase(), azureAd.clientId, normalisedScopes(scopes), owner, sessionId, extrasDigest]);
      fetch = () =>
        observed(async () => {
          const token = await withClientCredential(authority, async (app) => {
            const result = await app.acquireTokenOnBehalfOf({
              oboAssertion: user.jws,
              scopes: [...scopes],
              ...msalCommon(authority, correlationId, claimsParam, eqp),
            });
            await forgetAccount(app, result);
            return toCachedToken(result);
          });
          if (sessionId) {
            const session = startSession(sessionId, owner, tenant, observation.getStore()?.refreshToken);
            // Later token-less calls with this key are answered from the session's cache entry first.
            cache.put(sessionCacheKey(sessionId, session.generation, ato.tenant, scopes, extrasDigest), token);
          }
          return token;
        }, extraHeaders);
      if (sessionId) {
        // A start whose token's answer is cached still takes over a session another token started:
        // as MSAL.NET's InitiateLongRunningProcessInWebApi, which acquires again when the key's
        // tokens were got with another assertion.
        const current = sessions.get(sessionId);
        takeOver = current !== undefined && (current.owner !== owner || current.tenant !== tenant);
      }
    } else if (ato.longRunningWebApiSessionKey && ato.longRunningWebApiSessionKey !== ALLOCATE_FOR_ME) {
      // Continue a long-running OBO session with its refresh token (msal-node has no session API of its own).
      const sessionId = sha256(`${azureAd.clientId}|${ato.longRunningWebApiSessionKey}`);
      // The generation of the start this call continues; no session, no generation (and no token).
      const started = sessions.get(sessionId);
      key = sessionCacheKey(sessionId, started?.generation, ato.tenant, scopes, extrasDigest);
      fetch = () =>
        observed(async () => {
          // The newest refresh token of the same start; a start since then has keys of its own.
          const current = sessions.get(sessionId);
          const session = started !== undefined && current?.generation === started.generation ? current : started;
          const refreshToken = session?.refreshToken;
          if (session === undefined || refreshToken === undefined) {
            throw new SidecarError('acquisition_ui_required', 'No long-running session exists for this LongRunningWebApiSessionKey; start it with a call that carries the user token.');
          }
          const authority = authorityFor(ato.tenant ?? session.tenant);
          const token = await withClientCredential(authority, async (app) => {
            const result = await app.acquireTokenByRefreshToken({
              refreshToken,
              scopes: [...scopes],
              authority,
              correlationId,
              ...claimsParam,
              ...({ storeInCache: NO_MSAL_CACHE, ...eqp } as object),
            });
            await forgetAccount(app, result);
            return toCachedToken(result);
          });
          const rotated = observation.getStore()?.refreshToken;
          // Never written over a start by someone else that happened while this call ran.
          const latest = sessions.get(sessionId);
          if (rotated && latest?.generation === session.generation) rememberSession(sessionId, { ...latest, refreshToken: rotated });
          return token;
        }, extraHeaders);
    } else {
      throw new SidecarError('acquisition_ui_required', NO_ACCOUNT_MESSAGE);
    }

    if (plain) learnKey(req, key);
    // Claims are not part of the key (as in MSAL): a token got with a claims challenge is fetched in
    // a flight of its own and then replaces the entry, so the refused token is not sent again.
    const skip = bypass || takeOver;
    return acquiredFrom(await untilAborted(cache.get(key, fetch, claimsDigest === undefined ? { bypass: skip } : { bypass: skip, flight: claimsDigest }), req.signal));
  }

  return {
    acquire,
    cached,
    httpRequestSigner,
    managedIdentityAccessToken: async (resource, userAssignedClientId) => (await managedIdentityToken(resource, userAssignedClientId)).token,
    clientCredentials,
    stats(): AcquirerStats {
      return { ...cache.stats(), entraRequests, managedIdentityApplications: managedIdentity.applications };
    },
    close(): void {
      clientCredentials.close();
      cache.clear();
      sessions.clear();
      apps.clear();
      agentApps.clear();
      managedIdentity.close();
    },
  };
}
