/**
 * The sidecar's configuration after parsing: typed, camelCase, deeply frozen.
 * Keys mirror Microsoft's sidecar (`AzureAd:*`, `DownstreamApis:*`, `Sidecar:*`); see defaults.ts
 * for every key, its default and why.
 */
import type { OutboundProxy } from '../net/proxy.js';

/** `AzureAd:ClientCredentials:<i>:SourceType` values (reference sidecar-http-api §3.2). */
export type CredentialSourceType =
  | 'Certificate'
  | 'KeyVault'
  | 'Base64Encoded'
  | 'Path'
  | 'StoreWithThumbprint'
  | 'StoreWithDistinguishedName'
  | 'ClientSecret'
  | 'SignedAssertionFromManagedIdentity'
  | 'SignedAssertionFilePath'
  | 'SignedAssertionFromVault'
  | 'AutoDecryptKeys'
  | 'CustomSignedAssertion';

/** One element of `AzureAd:ClientCredentials` or `AzureAd:TokenDecryptionCredentials`. */
export interface CredentialDescription {
  readonly sourceType: CredentialSourceType;
  readonly clientSecret?: string;
  readonly certificateDiskPath?: string;
  readonly certificatePassword?: string;
  readonly base64EncodedValue?: string;
  readonly keyVaultUrl?: string;
  readonly keyVaultCertificateName?: string;
  readonly managedIdentityClientId?: string;
  /** `SignedAssertionFileDiskPath` (alias `SignedAssertionFilePath`); defaults to AZURE_FEDERATED_TOKEN_FILE. */
  readonly signedAssertionFileDiskPath?: string;
  /** FIC audience, default `api://AzureADTokenExchange`. */
  readonly tokenExchangeUrl: string;
  readonly skip: boolean;
}

export interface ManagedIdentityOptions {
  readonly userAssignedClientId?: string;
}

/** `AcquireTokenOptions` of a downstream API (reference §3.3). */
export interface AcquireTokenOptions {
  readonly tenant?: string;
  readonly forceRefresh: boolean;
  readonly claims?: string;
  readonly correlationId?: string;
  readonly fmiPath?: string;
  readonly longRunningWebApiSessionKey?: string;
  readonly popPublicKey?: string;
  readonly popClaim?: string;
  readonly managedIdentity?: ManagedIdentityOptions;
  readonly extraQueryParameters: Readonly<Record<string, string>>;
  readonly extraHeadersParameters: Readonly<Record<string, string>>;
  readonly extraParameters: Readonly<Record<string, string>>;
}

/** `DownstreamApis:<name>` (reference §3.3). */
export interface DownstreamApiOptions {
  readonly baseUrl?: string;
  readonly relativePath: string;
  readonly httpMethod: string;
  /** undefined when not configured (→ "No scopes found" 400). */
  readonly scopes?: readonly string[];
  readonly requestAppToken: boolean;
  readonly acceptHeader: string;
  readonly contentType: string;
  /** Always Bearer: another configured value is ignored with a start-up warning (Microsoft's sidecar sends Bearer only). */
  readonly protocolScheme: string;
  readonly extraHeaderParameters: Readonly<Record<string, string>>;
  readonly extraQueryParameters: Readonly<Record<string, string>>;
  readonly acquireTokenOptions: AcquireTokenOptions;
  /** Ours: sign the `/DownstreamApi*` request with the sidecar's PoP key (`Authorization: PoP <SHR>`). */
  readonly signHttpRequest?: boolean;
}

export interface AzureAdConfig {
  /** Authority host with a trailing slash, e.g. `https://login.microsoftonline.com/`. */
  readonly instance: string;
  readonly tenantId: string;
  readonly clientId: string;
  /** `{instance}{tenantId}/v2.0` (or `AzureAd:Authority` normalised to end in `/v2.0`). */
  readonly authority: string;
  readonly audience?: string;
  readonly validAudiences: readonly string[];
  readonly validIssuers: readonly string[];
  /** `/Validate` scope gate: one accepted scope value (reference §2.2). */
  readonly scopes?: string;
  readonly clientCredentials: readonly CredentialDescription[];
  readonly tokenDecryptionCredentials: readonly CredentialDescription[];
  readonly sendX5C: boolean;
  readonly azureRegion?: string;
  readonly clientCapabilities: readonly string[];
  /** ACL mode: accept tokens with neither `scp` nor `roles` (default true). */
  readonly allowWebApiToBeAuthorizedByACL: boolean;
  readonly extraQueryParameters: Readonly<Record<string, string>>;
}

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export interface AllowOverrides {
  readonly getAuthorizationHeader: boolean;
  readonly getAuthorizationHeaderUnauthenticated: boolean;
  readonly callDownstreamApi: boolean;
  readonly callDownstreamApiUnauthenticated: boolean;
}

export interface PopValidationOptions {
  readonly validateM: boolean;
  readonly validateU: boolean;
  readonly validateP: boolean;
  readonly validateQ: boolean;
  readonly acceptUnsignedQueryParameters: boolean;
  readonly signedHttpRequestLifetimeSec: number;
  readonly replayCache: boolean;
  /** `ValidatePresentClaims`: check the claims below when the SHR carries them (Microsoft default false). */
  readonly validatePresentClaims: boolean;
  /** `ClaimsToValidateWhenPresent:<i>`, default `m`, `p`. */
  readonly claimsToValidateWhenPresent: readonly string[];
}

/** ext_authz per-route policy defaults (`Sidecar:ExtAuthz:*`); context_extensions override per route. */
export interface ExtAuthzOptions {
  readonly enabled: boolean;
  readonly address: ListenAddress;
  /** `required` | `optional` | `none`. */
  readonly validate: 'required' | 'optional' | 'none';
  readonly downstreamApi?: string;
  readonly injectHeader: string;
  readonly requiredScopes: readonly string[];
  readonly requiredRoles: readonly string[];
  readonly requireAll: boolean;
  /** header name (lower-case) → claim name, set on allow and always stripped from the client's request. */
  readonly claimsToHeaders: Readonly<Record<string, string>>;
  readonly stripInboundAuthorization: boolean;
  readonly allowCorsPreflight: boolean;
  readonly reflection: boolean;
  readonly maxReceiveMessageBytes: number;
  /** Bytes the CheckRequests still arriving may hold together (src/extauthz/call-guard.ts). */
  readonly maxBufferedRequestBytes: number;
  /** How long a CheckRequest may take to arrive whole after its first bytes. */
  readonly requestReceiveTimeoutMs: number;
  /**
   * `Sidecar:ExtAuthz:Routes`: path and host rules that pick a route's policy in the sidecar, for
   * proxies that cannot send per-route context_extensions (Istio). First match wins; the route's
   * context_extensions, when Envoy sends any, override the rule's settings.
   */
  readonly routes: readonly ExtAuthzRouteRule[];
}

/** One `Sidecar:ExtAuthz:Routes:<i>` rule. */
export interface ExtAuthzRouteRule {
  /** Where the rule came from, for messages (`Sidecar:ExtAuthz:Routes:0`). */
  readonly key: string;
  /** Lower-case host names without port; `*.example.com` = any name under example.com. Empty: every host. */
  readonly hosts: readonly string[];
  /** Exact path, query excluded; compared case-insensitively. */
  readonly path?: string;
  /** Path prefix on segment boundaries (`/api` takes `/api` and `/api/…`, not `/apiary`); case-insensitive. */
  readonly pathPrefix?: string;
  /** The rule's policy settings under their context_extensions names (`validate`, `downstream_api`, …). */
  readonly settings: Readonly<Record<string, string>>;
}

export interface SidecarSettings {
  readonly allowOverrides: AllowOverrides;
  readonly allowOutboundRedirects: boolean;
  readonly popValidation: PopValidationOptions;
  /** Ours: the sidecar's own PoP key for SignHttpRequest. */
  readonly pop?: { readonly keyFile?: string };
  readonly http: {
    readonly listen: readonly ListenAddress[];
    readonly maxHeaderBytes: number;
    readonly maxBodyBytes: number;
    /** Ours: the most all request bodies in flight may hold together (≥ maxBodyBytes). */
    readonly maxBufferedBodyBytes: number;
    readonly requestTimeoutMs: number;
    readonly headersTimeoutMs: number;
    /** How long an idle keep-alive connection stays open after its last response. */
    readonly keepAliveTimeoutMs: number;
    /** Ours: Host names accepted besides the loopback ones where the loopback rule applies (lower case, no port). */
    readonly allowedHosts: readonly string[];
  };
  readonly management: { readonly enabled: boolean; readonly address: ListenAddress; readonly gcMetrics: boolean };
  readonly extAuthz: ExtAuthzOptions;
  readonly outbound: {
    readonly caFile?: string;
    /** PEM files to trust besides the system store: [NODE_EXTRA_CA_CERTS?, Sidecar:Outbound:CaFile?], absolute paths. */
    readonly extraCaFiles: readonly string[];
    /** From https_proxy / http_proxy / all_proxy / no_proxy (src/net/proxy.ts); absent: every call goes direct. */
    readonly proxy?: OutboundProxy;
    readonly connectTimeoutMs: number;
    readonly timeoutMs: number;
    readonly maxResponseBytes: number;
  };
  readonly validation: {
    readonly clockSkewSec: number;
    readonly signingKeysRefreshIntervalSec: number;
    readonly unknownKidCooldownSec: number;
    readonly verifiedTokenCacheSize: number;
  };
  readonly tokenCache: {
    readonly maxEntries: number;
    readonly expiryBufferSec: number;
  };
  readonly downstreamApi: {
    readonly returnAllResponseHeaders: boolean;
    readonly maxResponseBytes: number;
    readonly maxRedirects: number;
  };
  readonly logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
}

/** Process environment facts the rest of the code may need, read once by the loader. */
export interface RuntimeEnvironment {
  /** `ASPNETCORE_ENVIRONMENT` / `DOTNET_ENVIRONMENT`, default `Production`. */
  readonly name: string;
  readonly isDevelopment: boolean;
  /** AZURE_FEDERATED_TOKEN_FILE / AZURE_ACCESS_TOKEN_FILE, used as the default assertion file. */
  readonly federatedTokenFile?: string;
  /** Managed-identity source environment, passed to msal's ManagedIdentityApplication. */
  readonly managedIdentityEnv: Readonly<Record<string, string>>;
}

export interface SidecarConfig {
  readonly azureAd: AzureAdConfig;
  /** Keyed by the configured name, case-sensitive (as Microsoft's named options are). */
  readonly downstreamApis: Readonly<Record<string, DownstreamApiOptions>>;
  readonly sidecar: SidecarSettings;
  readonly environment: RuntimeEnvironment;
}
