/**
 * Hand-built configuration objects for the acquisition tests (the config loader is tested on its own),
 * plus a logger whose every line is captured so tests can assert that no secret was written.
 */
import { defaultApiOptions } from '../../src/pipeline/api-options.js';
import type { AcquireTokenOptions, CredentialDescription, DownstreamApiOptions, SidecarConfig } from '../../src/config/types.js';

export const TENANT = '11111111-1111-1111-1111-111111111111';
export const CLIENT_ID = '22222222-2222-2222-2222-222222222222';

/** Default AcquireTokenOptions with the given fields replaced. */
export function acquireTokenOptions(over: Partial<AcquireTokenOptions> = {}): AcquireTokenOptions {
  return { forceRefresh: false, extraQueryParameters: {}, extraHeadersParameters: {}, extraParameters: {}, ...over };
}

/** A DownstreamApis entry with Microsoft's defaults (the resolver's own) and the given fields replaced. */
export function downstreamApi(over: Partial<DownstreamApiOptions> = {}): DownstreamApiOptions {
  return { ...defaultApiOptions(), ...over };
}

/** A credential description with the loader's defaults. */
export function credential(over: Partial<CredentialDescription> & Pick<CredentialDescription, 'sourceType'>): CredentialDescription {
  return { tokenExchangeUrl: 'api://AzureADTokenExchange', skip: false, ...over };
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
  }
  return value;
}

export interface ConfigOptions {
  instance?: string;
  tenantId?: string;
  clientId?: string;
  clientCredentials?: CredentialDescription[];
  downstreamApis?: Record<string, DownstreamApiOptions>;
  sendX5C?: boolean;
  timeoutMs?: number;
  maxEntries?: number;
  expiryBufferSec?: number;
  federatedTokenFile?: string;
  allowOverrides?: boolean;
  caFile?: string;
  clientCapabilities?: string[];
}

/** A complete, deeply frozen SidecarConfig (as the loader would produce) for tests. */
export function makeConfig(o: ConfigOptions = {}): SidecarConfig {
  const instance = o.instance ?? 'https://login.microsoftonline.com/';
  const tenantId = o.tenantId ?? TENANT;
  const allow = o.allowOverrides ?? true;
  const config: SidecarConfig = {
    azureAd: {
      instance,
      tenantId,
      clientId: o.clientId ?? CLIENT_ID,
      authority: `${instance}${tenantId}/v2.0`,
      validAudiences: [],
      validIssuers: [],
      clientCredentials: o.clientCredentials ?? [credential({ sourceType: 'ClientSecret', clientSecret: 'test-secret' })],
      tokenDecryptionCredentials: [],
      sendX5C: o.sendX5C ?? false,
      clientCapabilities: o.clientCapabilities ?? [],
      allowWebApiToBeAuthorizedByACL: true,
      extraQueryParameters: {},
    },
    downstreamApis: o.downstreamApis ?? {},
    sidecar: {
      allowOverrides: { getAuthorizationHeader: allow, getAuthorizationHeaderUnauthenticated: false, callDownstreamApi: allow, callDownstreamApiUnauthenticated: false },
      allowOutboundRedirects: false,
      popValidation: { validateM: true, validateU: true, validateP: true, validateQ: false, acceptUnsignedQueryParameters: true, validatePresentClaims: false, claimsToValidateWhenPresent: ['m', 'p'], signedHttpRequestLifetimeSec: 300, replayCache: true },
      http: { listen: [{ host: '127.0.0.1', port: 0 }], maxHeaderBytes: 16384, maxBodyBytes: 1048576, maxBufferedBodyBytes: 33554432, requestTimeoutMs: 30000, headersTimeoutMs: 10000, keepAliveTimeoutMs: 130000, allowedHosts: [] },
      management: { enabled: false, address: { host: '127.0.0.1', port: 0 }, gcMetrics: false },
      extAuthz: {
        enabled: false,
        address: { host: '127.0.0.1', port: 0 },
        validate: 'required',
        injectHeader: 'authorization',
        requiredScopes: [],
        requiredRoles: [],
        requireAll: false,
        claimsToHeaders: {},
        stripInboundAuthorization: false,
        allowCorsPreflight: false,
        reflection: false,
        maxReceiveMessageBytes: 4194304,
        maxBufferedRequestBytes: 33554432,
        requestReceiveTimeoutMs: 10000,
        routes: [],
      },
      outbound: { extraCaFiles: o.caFile ? [o.caFile] : [], ...(o.caFile ? { caFile: o.caFile } : {}), connectTimeoutMs: 2000, timeoutMs: o.timeoutMs ?? 5000, maxResponseBytes: 1048576 },
      validation: { clockSkewSec: 300, signingKeysRefreshIntervalSec: 86400, unknownKidCooldownSec: 300, verifiedTokenCacheSize: 1000 },
      tokenCache: { maxEntries: o.maxEntries ?? 1000, expiryBufferSec: o.expiryBufferSec ?? 300 },
      downstreamApi: { returnAllResponseHeaders: false, maxResponseBytes: 1048576, maxRedirects: 0 },
      logLevel: 'debug',
    },
    environment: {
      name: 'Production',
      isDevelopment: false,
      ...(o.federatedTokenFile ? { federatedTokenFile: o.federatedTokenFile } : {}),
      managedIdentityEnv: {},
    },
  };
  return deepFreeze(config);
}

/** A debug-level pino logger writing into memory; `text()` is everything it wrote. */
export { memoryLogger as captureLogger } from '../helpers/logger.js';
