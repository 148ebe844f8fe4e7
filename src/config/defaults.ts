/**
 * The one defaults table: every configuration key the sidecar reads, its default, unit and why.
 * load.ts takes its defaults from here (so the table cannot drift from the code), and
 * docs/configuration.md is generated from it by scripts/gen-docs.ts.
 */
import { MAX_TIMER_DELAY_MS } from '../timer-delay.js';

/** One documented configuration key. `default: ''` means "not set". */
export interface ConfigKeyDoc {
  /** Canonical key, `:`-separated. `<i>` is an array index, other `<…>` segments are free names. */
  readonly key: string;
  readonly default: string;
  readonly unit?: string;
  /** The largest value accepted (in `unit`); a larger one fails the start. */
  readonly max?: number;
  /** One line: what it does and why the default is what it is. */
  readonly description: string;
}

/** A key Microsoft's sidecar defines that we accept but do not use (startup warning, never an error). */
export interface IgnoredKeyDoc {
  readonly key: string;
  readonly reason: string;
}

/** Listener used when no URL source is configured (Microsoft's image uses 8080 on all interfaces). */
export const DEFAULT_HTTP_URL = 'http://127.0.0.1:5000';

// Bounds of the durations, so that none becomes a timer longer than Node keeps (src/timer-delay.ts):
// a longer one fires after 1 ms, and a refresh or timeout meant for days fires without end.
/** Keys in ms that become a timer as they are. */
const MAX_DELAY_MS = MAX_TIMER_DELAY_MS;
/** Keys in seconds: ×1000. Also those that are compared rather than timed, so one rule holds for all. */
const MAX_DELAY_SEC = Math.floor(MAX_TIMER_DELAY_MS / 1000);
/** Node's HTTP server times an idle keep-alive socket out one second after keepAliveTimeout. */
const MAX_KEEP_ALIVE_MS = MAX_TIMER_DELAY_MS - 1000;
/**
 * ext_authz honours a Check deadline of up to 6 × Sidecar:Outbound:TimeoutMs
 * (MAX_DEADLINE_OUTBOUND_TIMEOUTS in src/extauthz/check.ts; a test holds the two together).
 */
const MAX_OUTBOUND_TIMEOUT_MS = Math.floor(MAX_TIMER_DELAY_MS / 6);

/**
 * The largest CheckRequest grpc-js takes in at all (whatever Sidecar:ExtAuthz:MaxReceiveMessageBytes
 * says, it is at least this): up to it an oversized request is denied in band (src/extauthz/server.ts).
 */
export const EXT_AUTHZ_TRANSPORT_MAX_BYTES = 16 * 1024 * 1024;

/** Every key we read, with its default. Order is the order of the generated reference. */
export const CONFIG_KEYS: readonly ConfigKeyDoc[] = Object.freeze<ConfigKeyDoc[]>([
  // ---- AzureAd (Microsoft.Identity.Web options; reference sidecar-http-api §3.1) ----
  { key: 'AzureAd:Instance', default: '', description: 'Authority host, e.g. `https://login.microsoftonline.com/`; must be https (msal-node refuses http). Required unless `AzureAd:Authority` is set.' },
  { key: 'AzureAd:TenantId', default: '', description: 'Tenant GUID, domain, or `common`/`organizations`/`consumers`. Required unless `AzureAd:Authority` is set.' },
  { key: 'AzureAd:ClientId', default: '', description: 'Application (client) ID of the sidecar\'s app registration or agent blueprint. Required.' },
  { key: 'AzureAd:Authority', default: '', description: 'Alternative to Instance + TenantId (`{instance}{tenant}`); `/v2.0` is ensured. Instance + TenantId win when both are given.' },
  { key: 'AzureAd:Audience', default: '', description: 'Single accepted audience; overrides the default audience rule of inbound validation.' },
  { key: 'AzureAd:TokenValidationParameters:ValidAudiences:<i>', default: '', description: 'Additional accepted audiences (array; a scalar is rejected).' },
  { key: 'AzureAd:TokenValidationParameters:ValidIssuers:<i>', default: '', description: 'Additional accepted issuers (array; a scalar is rejected).' },
  { key: 'AzureAd:TokenValidationParameters:ValidAudience', default: '', description: 'One more accepted audience (JwtBearer\'s singular form), added to ValidAudiences.' },
  { key: 'AzureAd:TokenValidationParameters:ValidIssuer', default: '', description: 'One more accepted issuer (JwtBearer\'s singular form), added to ValidIssuers.' },
  { key: 'AzureAd:TokenValidationParameters:ClockSkew', default: '', description: 'Tolerance on exp/nbf as a .NET TimeSpan (e.g. 00:00:30), as JwtBearer reads it; Sidecar:Validation:ClockSkewSec wins when both are set.' },
  { key: 'AzureAd:Scopes', default: '', description: 'One scope value `/Validate` requires in `scp` (Microsoft binds it as a single string).' },
  { key: 'AzureAd:ClientCredentials:<i>:SourceType', default: '', description: 'Credential source by name (case-insensitive) or enum number: KeyVault, Base64Encoded, Path, ClientSecret, SignedAssertionFromManagedIdentity, SignedAssertionFilePath. Tried in index order: when Entra answers invalid_client the next is used, after one retry with the certificate reloaded (a rotated file or Key Vault certificate) or with a fresh managed-identity assertion (SignedAssertionFromManagedIdentity). Certificate, StoreWithThumbprint, StoreWithDistinguishedName, SignedAssertionFromVault and CustomSignedAssertion are not supported: startup fails with an error naming the key.' },
  { key: 'AzureAd:ClientCredentials:<i>:ClientSecret', default: '', description: 'Client secret (SourceType ClientSecret). Never logged.' },
  { key: 'AzureAd:ClientCredentials:<i>:CertificateDiskPath', default: '', description: 'PKCS#12 or PEM file with the certificate and private key (SourceType Path).' },
  { key: 'AzureAd:ClientCredentials:<i>:CertificatePassword', default: '', description: 'Password of the PKCS#12 file or Base64Encoded value. Never logged.' },
  { key: 'AzureAd:ClientCredentials:<i>:Base64EncodedValue', default: '', description: 'Base64 PKCS#12 certificate with private key (SourceType Base64Encoded). Never logged.' },
  { key: 'AzureAd:ClientCredentials:<i>:KeyVaultUrl', default: '', description: 'https URL of the Key Vault (SourceType KeyVault).' },
  { key: 'AzureAd:ClientCredentials:<i>:KeyVaultCertificateName', default: '', description: 'Certificate name in the Key Vault (SourceType KeyVault); its secret (PFX or PEM) is read with the managed identity of ManagedIdentityClientId.' },
  { key: 'AzureAd:ClientCredentials:<i>:ManagedIdentityClientId', default: '', description: 'User-assigned managed identity client ID for MI-FIC or Key Vault access; unset = system-assigned.' },
  { key: 'AzureAd:ClientCredentials:<i>:SignedAssertionFileDiskPath', default: '', description: 'Projected token file used as client_assertion (SourceType SignedAssertionFilePath); unset = AZURE_FEDERATED_TOKEN_FILE, else AZURE_ACCESS_TOKEN_FILE. Alias `SignedAssertionFilePath` (the README spelling).' },
  { key: 'AzureAd:ClientCredentials:<i>:TokenExchangeUrl', default: 'api://AzureADTokenExchange', description: 'Audience of the federated (FIC) assertion, as Microsoft defaults it.' },
  { key: 'AzureAd:ClientCredentials:<i>:Skip', default: 'false', description: 'Skip this credential without removing it from the list.' },
  { key: 'AzureAd:TokenDecryptionCredentials:<i>:SourceType', default: '', description: 'Certificate source for decrypting encrypted (JWE) inbound tokens: Path, Base64Encoded or KeyVault (read at startup with the managed identity of ManagedIdentityClientId; a certificate that cannot be loaded fails the start). Same fields as ClientCredentials. AutoDecryptKeys and the certificate stores are not supported: startup fails with an error naming the key.' },
  { key: 'AzureAd:TokenDecryptionCredentials:<i>:CertificateDiskPath', default: '', description: 'PKCS#12 or PEM file with the decryption certificate and key (SourceType Path).' },
  { key: 'AzureAd:TokenDecryptionCredentials:<i>:CertificatePassword', default: '', description: 'Password of the PKCS#12 file. Never logged.' },
  { key: 'AzureAd:TokenDecryptionCredentials:<i>:Base64EncodedValue', default: '', description: 'Base64 PKCS#12 with the decryption key (SourceType Base64Encoded). Never logged.' },
  { key: 'AzureAd:TokenDecryptionCredentials:<i>:KeyVaultUrl', default: '', description: 'https URL of the Key Vault holding the decryption certificate.' },
  { key: 'AzureAd:TokenDecryptionCredentials:<i>:KeyVaultCertificateName', default: '', description: 'Certificate name in the Key Vault.' },
  { key: 'AzureAd:TokenDecryptionCredentials:<i>:ManagedIdentityClientId', default: '', description: 'User-assigned managed identity used to reach the Key Vault; unset = system-assigned.' },
  { key: 'AzureAd:TokenDecryptionCredentials:<i>:Skip', default: 'false', description: 'Skip this credential without removing it from the list.' },
  { key: 'AzureAd:ClientSecret', default: '', description: 'Legacy single secret; used as a ClientSecret credential only when ClientCredentials is empty (as Microsoft.Identity.Web does). Never logged.' },
  { key: 'AzureAd:SendX5C', default: 'false', description: 'Send the x5c chain with certificate assertions (subject name + issuer auth).' },
  { key: 'AzureAd:AzureRegion', default: '', description: 'ESTS-R region for app tokens (`TryAutoDetect` or a region name); unset = global endpoint.' },
  { key: 'AzureAd:ClientCapabilities:<i>', default: '', description: 'Client capabilities such as `cp1` (CAE) sent with every token request (array): merged into `claims` (`access_token.xms_cc`) on Entra requests, PoP app tokens included, and sent as the `xms_cc` query parameter to the managed-identity endpoint, as msal does.' },
  { key: 'AzureAd:AllowWebApiToBeAuthorizedByACL', default: 'true', description: 'Accept tokens with neither `scp` nor `roles` (ACL mode); the Microsoft sidecar forces this on.' },
  { key: 'AzureAd:ExtraQueryParameters:<key>', default: '', description: 'Extra query parameters on every token request.' },

  // ---- DownstreamApis:<name> (reference §3.3) ----
  { key: 'DownstreamApis:<name>:BaseUrl', default: '', description: 'Absolute http(s) URL of the API; required for `/DownstreamApi*`; never overridable by callers.' },
  { key: 'DownstreamApis:<name>:RelativePath', default: '', description: 'Path appended to BaseUrl.' },
  { key: 'DownstreamApis:<name>:HttpMethod', default: 'Get', description: 'Verb used for the downstream call (known verbs are upper-cased).' },
  { key: 'DownstreamApis:<name>:Scopes:<i>', default: '', description: 'Scopes to request (array: `Scopes__0`). A scalar string is rejected at startup; Microsoft silently ignores it.' },
  { key: 'DownstreamApis:<name>:RequestAppToken', default: 'false', description: 'Acquire an app token (client credentials) instead of a user token (OBO).' },
  { key: 'DownstreamApis:<name>:AcceptHeader', default: 'application/json', description: 'Accept header sent downstream.' },
  { key: 'DownstreamApis:<name>:ContentType', default: 'application/json', description: 'Content type of the downstream body (kept for compatibility).' },
  { key: 'DownstreamApis:<name>:ProtocolScheme', default: 'Bearer', description: 'Accepted for Microsoft configurations and not used: the outbound token is always sent as Bearer, as by Microsoft\'s sidecar (which supports Bearer only), or as PoP with SignHttpRequest. Another value (e.g. `MTLS_POP`) gets a startup warning.' },
  { key: 'DownstreamApis:<name>:ExtraHeaderParameters:<header>', default: '', description: 'Extra headers on the downstream request. An entry the request can never carry (a reserved name, listed in docs/downstream-api.md; a value with a control character; `Accept`, which AcceptHeader sets) is dropped with a startup warning.' },
  { key: 'DownstreamApis:<name>:ExtraQueryParameters:<key>', default: '', description: 'Extra query parameters on the downstream request.' },
  { key: 'DownstreamApis:<name>:SignHttpRequest', default: 'false', description: 'Ours: on `/DownstreamApi*`, acquire an app token bound to the sidecar\'s own PoP key and send `Authorization: PoP <signed HTTP request>` (requires RequestAppToken; see docs/agents-and-pop.md).' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:Tenant', default: '', description: 'Tenant to acquire the token in (multi-tenant apps): a tenant ID (GUID) or a domain name, which becomes a path segment of the authority. Anything else is refused at startup, and as `optionsOverride.AcquireTokenOptions.Tenant` answered 400 `request_invalid`.' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:ForceRefresh', default: 'false', description: 'Bypass the token cache on every call.' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:Claims', default: '', description: 'Claims request JSON sent with the token request.' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:CorrelationId', default: '', description: 'Correlation GUID sent to Entra.' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:FmiPath', default: '', description: 'Federated managed identity path (`fmi_path`) for agent flows.' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:LongRunningWebApiSessionKey', default: '', description: 'Session key for long-running OBO: a call with the user token starts the session, token-less calls continue it with its refresh token. A start with another user\'s token (or for another tenant) takes the session over, and the previous start\'s cached tokens are never served again.' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:PopPublicKey', default: '', description: 'Public key (JWK/kid) to bind PoP app tokens to.' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:PopClaim', default: '', description: 'Extra `cnf` claim for PoP tokens.' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:ManagedIdentity:UserAssignedClientId', default: '', description: 'Presence of the ManagedIdentity object switches to the managed-identity flow; unset id = system-assigned.' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:ExtraQueryParameters:<key>', default: '', description: 'Extra query parameters on the token request.' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:ExtraHeadersParameters:<header>', default: '', description: 'Extra HTTP headers on the token request of every flow that posts to the token endpoint (OBO, app tokens, PoP, agent identities, long-running sessions; not managed identity), as MSAL\'s WithExtraHttpHeaders; part of the token cache key. Names the protocol needs are refused at startup: `Host`, `Content-*`, `Accept`, `Accept-Encoding`, `Authorization`, `Cookie`, `Connection`, `Keep-Alive`, `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`, `Expect`, `client-request-id`, `return-client-request-id`, `x-ms-client-request-id`, `x-anchormailbox`, `x-ms-lib-capability`, `Proxy-*`, `Sec-*`, `x-client-*`; so are values with control characters.' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:ExtraParameters:<key>', default: '', description: 'Accepted for compatibility and not sent to Entra: in Microsoft.Identity.Web it is an extensibility bag for credential providers and internal markers, not token request parameters.' },

  // ---- Sidecar: Microsoft's keys (reference §3.4) ----
  { key: 'Sidecar:AllowOverrides:GetAuthorizationHeader', default: 'true', description: 'Honour `optionsOverride.*` and agent parameters on `/AuthorizationHeader/{api}` (Microsoft default).' },
  { key: 'Sidecar:AllowOverrides:GetAuthorizationHeaderUnauthenticated', default: 'false', description: 'Same for the anonymous `/AuthorizationHeaderUnauthenticated/{api}`; off so anonymous callers cannot widen a token.' },
  { key: 'Sidecar:AllowOverrides:CallDownstreamApi', default: 'true', description: 'Honour overrides on `/DownstreamApi/{api}` (Microsoft default).' },
  { key: 'Sidecar:AllowOverrides:CallDownstreamApiUnauthenticated', default: 'false', description: 'Same for the anonymous `/DownstreamApiUnauthenticated/{api}`.' },
  { key: 'Sidecar:AllowOutboundRedirects', default: 'false', description: 'Follow 3xx from downstream APIs; off so a token is never replayed to another host.' },
  { key: 'Sidecar:PopValidation:ValidateTs', default: 'true', description: 'Inbound SHR PoP: check the signed `ts` against SignedHttpRequestLifetime. Always on here: `false` is refused at start.' },
  { key: 'Sidecar:PopValidation:ValidateM', default: 'true', description: 'Inbound SHR PoP: require the signed `m` (method) to match.' },
  { key: 'Sidecar:PopValidation:ValidateU', default: 'true', description: 'Inbound SHR PoP: require the signed `u` (host) to match.' },
  { key: 'Sidecar:PopValidation:ValidateP', default: 'true', description: 'Inbound SHR PoP: require the signed `p` (path) to match.' },
  { key: 'Sidecar:PopValidation:ValidateQ', default: 'false', description: 'Inbound SHR PoP: require the signed `q` (query hash) to match.' },
  { key: 'Sidecar:PopValidation:AcceptUnsignedQueryParameters', default: 'true', description: 'Inbound SHR PoP: allow query parameters not covered by `q`.' },
  { key: 'Sidecar:PopValidation:ValidatePresentClaims', default: 'false', description: 'Inbound SHR PoP: validate the claims listed in ClaimsToValidateWhenPresent when they are present.' },
  { key: 'Sidecar:PopValidation:ClaimsToValidateWhenPresent:<i>', default: 'm,p', description: 'Claims checked when ValidatePresentClaims is on (array).' },
  { key: 'Sidecar:PopValidation:SignedHttpRequestLifetime', default: '00:05:00', unit: 'hh:mm:ss', description: 'Maximum age of a signed HTTP request (`ts`); must be > 0.' },
  { key: 'Sidecar:PopValidation:ReplayCache', default: 'false', description: 'Reject a signed HTTP request seen before within its lifetime (ours; off like Microsoft).' },
  { key: 'Sidecar:Pop:KeyFile', default: '', description: 'Ours: PEM private key (RSA ≥ 2048 or EC P-256) the sidecar signs HTTP requests with (SignHttpRequest); unset = a fresh RSA key generated per process.' },

  // ---- Sidecar: our own keys ----
  { key: 'Sidecar:SettingsFile', default: 'appsettings.json', description: 'Path of the JSON settings file, relative to the working directory; set it by environment or command line. A missing default file is fine; a missing explicit one is an error.' },
  { key: 'Sidecar:LogLevel', default: '', description: 'pino level (trace, debug, info, warn, error, fatal, silent) or a .NET level name; unset = mapped from Logging:LogLevel:Default.' },
  { key: 'Sidecar:Http:Url', default: DEFAULT_HTTP_URL, description: 'Identity HTTP API listener; wins over Kestrel:Endpoints, ASPNETCORE_URLS and ASPNETCORE_HTTP_PORTS. Loopback by default; port 0 picks a free port; http only.' },
  { key: 'Sidecar:Http:MaxHeaderBytes', default: '32768', unit: 'bytes', description: 'Largest request header block (Kestrel allows 32 KiB; PoP and JWE tokens are large).' },
  { key: 'Sidecar:Http:MaxBodyBytes', default: '30000000', unit: 'bytes', description: 'Largest request body; Kestrel\'s 30 MB default so `/DownstreamApi` bodies that work with Microsoft still work.' },
  { key: 'Sidecar:Http:MaxBufferedBodyBytes', default: '33554432', unit: 'bytes', description: 'Ours: the most all request bodies in flight may hold together (32 MiB: one body of MaxBodyBytes at a time), so concurrent `/DownstreamApi*` bodies cannot take the sidecar past its memory limit (docs/deployment.md). A body that would pass it gets 503 `request_body_budget_exceeded` with `Retry-After: 1` before it is read (a body sent without Content-Length gets it once it would pass it, and its connection is closed after the answer). Unset, it is at least MaxBodyBytes; set lower than MaxBodyBytes is refused at start.' },
  { key: 'Sidecar:Http:RequestTimeoutMs', default: '30000', unit: 'ms', max: MAX_DELAY_MS, description: 'Time allowed to receive a whole request (headers and body) from the client; 408 after it. It does not bound the time the answer takes (Node\'s requestTimeout ends once the request is in): outbound calls are bounded by Sidecar:Outbound:TimeoutMs.' },
  { key: 'Sidecar:Http:HeadersTimeoutMs', default: '10000', unit: 'ms', max: MAX_DELAY_MS, description: 'Time allowed to receive the request headers (slowloris guard).' },
  { key: 'Sidecar:Http:KeepAliveTimeoutMs', default: '130000', unit: 'ms', max: MAX_KEEP_ALIVE_MS, description: 'How long an idle keep-alive connection stays open after its last response: Kestrel\'s 130 s, so clients that pool connections for a minute or more (.NET, Go, Python) never race the server\'s close with a POST. Idle time does not count against HeadersTimeoutMs; shutdown closes idle connections at once.' },
  { key: 'Sidecar:Http:AllowedHosts:<i>', default: '', description: 'Ours: `Host` names the identity API accepts besides the loopback ones (array; exact names without port or wildcard, e.g. `Sidecar__Http__AllowedHosts__0=sidecar.internal`). Outside Development the `Host` header must name `localhost`, a `*.localhost` name, an IPv4 address in 127.0.0.0/8 or `[::1]` (any port), or one of these; in Development also any IP literal and any name without a dot (compose service names such as `sidecar`). Anything else, and a request without `Host`, gets 400 `host_not_allowed`, so a web page on a DNS-rebinding domain cannot read tokens. List here the dotted names callers use in Development (`host.docker.internal`, `sidecar.ns.svc.cluster.local`). Microsoft\'s `AllowedHosts` key stays ignored: it is ASP.NET\'s host filtering, which Microsoft\'s sidecar no longer uses.' },
  { key: 'Sidecar:Management:Enabled', default: 'true', description: 'Serve `/healthz`, `/readyz` and `/metrics` on a separate listener.' },
  { key: 'Sidecar:Management:Url', default: 'http://+:9090', description: 'Management listener; all interfaces of both families (`+`/`*` bind a dual-stack `::`, IPv4 only where the host has no IPv6) so kubelet probes and Prometheus can reach it on IPv4, dual-stack and IPv6-only clusters (it never mints or shows a token).' },
  { key: 'Sidecar:Management:GcMetrics', default: 'false', description: 'Also export `nodejs_gc_duration_seconds`. Off by default: Node runs a callback for every garbage collection while it is observed, about 4–7 % of the CPU of a warm request under load (bench/README.md).' },
  { key: 'Sidecar:ExtAuthz:Enabled', default: 'true', description: 'Serve the Envoy ext_authz gRPC API. `false` serves the identity HTTP API alone, and the gRPC stack is then never loaded (a shorter start).' },
  { key: 'Sidecar:ExtAuthz:Address', default: '127.0.0.1:9191', unit: 'host:port', description: 'ext_authz gRPC listener; loopback because Envoy runs in the same pod; port 0 picks a free port. Any peer that reaches it chooses its own policy through context_extensions, so another address logs a `SECURITY:` warning at start-up: let only the proxy reach it (NetworkPolicy).' },
  { key: 'Sidecar:ExtAuthz:Validate', default: 'required', description: 'Default inbound token policy: `required`, `optional` or `none`; routes override it with context_extensions.' },
  { key: 'Sidecar:ExtAuthz:DownstreamApi', default: '', description: 'Default DownstreamApis name whose token is injected on allow; unset = validate only.' },
  { key: 'Sidecar:ExtAuthz:InjectHeader', default: 'authorization', description: 'Request header that carries the acquired downstream token to the upstream.' },
  { key: 'Sidecar:ExtAuthz:RequiredScopes:<i>', default: '', description: 'Scopes (`scp`) the inbound token must carry (array).' },
  { key: 'Sidecar:ExtAuthz:RequiredRoles:<i>', default: '', description: 'App roles (`roles`) the inbound token must carry (array).' },
  { key: 'Sidecar:ExtAuthz:RequireAll', default: 'false', description: 'true = every listed scope/role is required; false = any one suffices (ASP.NET RequiredScope semantics).' },
  { key: 'Sidecar:ExtAuthz:ClaimsToHeaders:<header>', default: '', description: 'Header name → claim name: on allow the header is overwritten with the claim, or removed when the token lacks it, so a client-sent copy never reaches the app (e.g. `Sidecar__ExtAuthz__ClaimsToHeaders__x-user-oid=oid`).' },
  { key: 'Sidecar:ExtAuthz:StripInboundAuthorization', default: 'false', description: 'Remove the client\'s Authorization header before forwarding when no token is injected in its place.' },
  { key: 'Sidecar:ExtAuthz:AllowCorsPreflight', default: 'false', description: 'Allow what looks like a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method, and no Authorization header) without a token, whatever the route requires. Off: anyone can send those headers, and an app that routes OPTIONS into its handlers would get unauthenticated requests. Answer preflights in Envoy instead: `envoy.filters.http.cors` placed before ext_authz answers them itself, so they never reach ext_authz. Turn this on only when the upstream must answer preflights itself and treats every OPTIONS as unauthenticated. The allow sets nothing and removes the claim headers and the route\'s inject header; an OPTIONS with an Authorization header is checked like any request.' },
  { key: 'Sidecar:ExtAuthz:Reflection', default: 'false', description: 'Expose gRPC server reflection (debugging aid, off in production).' },
  { key: 'Sidecar:ExtAuthz:MaxReceiveMessageBytes', default: '1048576', unit: 'bytes', description: 'Largest CheckRequest checked (Envoy sends headers, and the body only if configured). A larger one, up to 16 MiB, is denied in band, so failure_mode_allow cannot let it through: 413 request_body_too_large when it would fit without the forwarded body, else 431 request_headers_too_large; above max(this, 16 MiB) grpc-js fails the RPC. With body forwarding on (Envoy `with_request_body`, Istio `includeRequestBodyInCheck`) set this to at least Envoy\'s `max_request_bytes` (Istio: `maxRequestBytes`) plus the request headers (their limit, `max_request_headers_kb`, 60 KiB by default), or bodies Envoy accepts are denied 413.' },
  { key: 'Sidecar:ExtAuthz:MaxBufferedRequestBytes', default: '33554432', unit: 'bytes', description: 'Ours: the most the CheckRequests still arriving may hold together (32 MiB: two of the largest the transport takes). Envoy sends each CheckRequest at once; a gRPC client that starts large ones and leaves them unfinished would otherwise hold up to 16 MiB per call. Past it the oldest unfinished call is denied in band (503 `request_body_budget_exceeded`, never a failed RPC that `failure_mode_allow` would turn into an allow) and the rest of its request is refused. Unset, it is at least max(MaxReceiveMessageBytes, 16 MiB), the largest request that is denied in band; set lower is refused at start.' },
  { key: 'Sidecar:ExtAuthz:RequestReceiveTimeoutMs', default: '10000', unit: 'ms', max: MAX_DELAY_MS, description: 'Ours: a CheckRequest still unfinished this long after its first bytes arrived is reset (RST_STREAM CANCEL) and its bytes let go. Envoy sends each at once (and gives up on a Check after its own timeout, 200 ms by default), so only a client that stalls mid-request meets it.' },
  { key: 'Sidecar:ExtAuthz:Routes:<i>:PathPrefix', default: '', description: 'Route rules chosen by path and host in the sidecar, for proxies that cannot send per-route context_extensions (Istio). Rules are tried in index order and the first match sets the policy; keys a rule leaves unset fall back to `Sidecar:ExtAuthz:*`, and a route\'s context_extensions, when Envoy sends any, override the rule key by key (keys they leave unset keep the rule\'s value). PathPrefix matches on segment boundaries (`/api` takes `/api` and `/api/…`, not `/apiary`; `/` takes every path), case-insensitively, because many app frameworks route `/API/x` to `/api/x`. With rules configured, a path that is not in normal form is denied 400 `path_not_normalized`, because which rule it falls under would depend on how the app reads it: dot segments, `//`, a backslash, a `;` (Tomcat and Spring drop `;params` and read `..;` as `..`), a percent-encoded letter, digit, `-._~/\\;%` or control, a malformed or overlong (`%c0`) encoding, or anything outside printable ASCII: set Envoy\'s `normalize_path` and `merge_slashes` (Istio: meshConfig.pathNormalization MERGE_SLASHES). Put the strictest policy in the defaults and let rules relax named paths.' },
  { key: 'Sidecar:ExtAuthz:Routes:<i>:Path', default: '', description: 'Exact path (query excluded, case-insensitive; the same path with a trailing slash matches too, as ASP.NET Core and Express route both to one handler) instead of PathPrefix; a rule sets one of the two, or neither when Hosts alone select it.' },
  { key: 'Sidecar:ExtAuthz:Routes:<i>:Hosts:<i>', default: '', description: 'Host names the rule applies to (array; the request\'s `:authority` without port, case-insensitive); `*.example.com` takes every name under example.com. Unset: every host. The host is what the client sends: a rule that relaxes the policy by Hosts alone relaxes it for any caller who sends that name, and most apps ignore Host, so relax by path, or by Hosts and a path together.' },
  { key: 'Sidecar:ExtAuthz:Routes:<i>:Validate', default: '', description: 'The rule\'s `validate` (`required`, `optional`, `none`); `none` does not inherit the default RequiredScopes/RequiredRoles; context_extensions that turn validation on again (`validate: required` or `optional`) bring them back.' },
  { key: 'Sidecar:ExtAuthz:Routes:<i>:DownstreamApi', default: '', description: 'The rule\'s `downstream_api`: a DownstreamApis name whose token is injected on allow. Set but empty: no token on this route, whatever Sidecar:ExtAuthz:DownstreamApi names (e.g. a public route under an On-Behalf-Of default).' },
  { key: 'Sidecar:ExtAuthz:Routes:<i>:InjectHeader', default: '', description: 'The rule\'s `inject_header`.' },
  { key: 'Sidecar:ExtAuthz:Routes:<i>:RequiredScopes:<i>', default: '', description: 'The rule\'s `required_scopes` (array).' },
  { key: 'Sidecar:ExtAuthz:Routes:<i>:RequiredRoles:<i>', default: '', description: 'The rule\'s `required_roles` (array).' },
  { key: 'Sidecar:ExtAuthz:Routes:<i>:RequireAll', default: '', description: 'The rule\'s `require_all` (true/false).' },
  { key: 'Sidecar:ExtAuthz:Routes:<i>:StripInboundAuthorization', default: '', description: 'The rule\'s `strip_inbound_authorization` (true/false).' },
  { key: 'Sidecar:ExtAuthz:Routes:<i>:AgentIdentity', default: '', description: 'The rule\'s `agent_identity`.' },
  { key: 'Sidecar:ExtAuthz:Routes:<i>:AgentUsername', default: '', description: 'The rule\'s `agent_username` (needs AgentIdentity).' },
  { key: 'Sidecar:ExtAuthz:Routes:<i>:AgentUserId', default: '', description: 'The rule\'s `agent_user_id` (needs AgentIdentity).' },
  { key: 'Sidecar:Outbound:CaFile', default: '', description: 'PEM bundle trusted for outbound TLS in addition to the system store and NODE_EXTRA_CA_CERTS (e.g. an egress proxy CA).' },
  { key: 'Sidecar:Outbound:ConnectTimeoutMs', default: '5000', unit: 'ms', max: MAX_DELAY_MS, description: 'TCP + TLS connect timeout for Entra, JWKS, Key Vault and downstream calls.' },
  { key: 'Sidecar:Outbound:TimeoutMs', default: '10000', unit: 'ms', max: MAX_OUTBOUND_TIMEOUT_MS, description: 'Deadline for each outbound request as a whole (connect, redirects, response headers and the complete body): every token request, OpenID metadata and JWKS fetch, managed-identity and Key Vault call, and each `/DownstreamApi*` exchange with the downstream API (a claims-challenge retry gets its own). Microsoft\'s sidecar uses .NET HttpClient\'s 100 s; raise this (e.g. `Sidecar__Outbound__TimeoutMs=100000`) for downstream APIs that can take longer than 10 s, and give callers a longer timeout still.' },
  { key: 'Sidecar:Outbound:MaxResponseBytes', default: '1048576', unit: 'bytes', description: 'Cap on Entra token, OpenID metadata and JWKS responses (they are a few KiB).' },
  { key: 'Sidecar:Validation:ClockSkewSec', default: '300', unit: 's', max: MAX_DELAY_SEC, description: 'Tolerance on `exp`/`nbf` (Microsoft.IdentityModel default 5 min).' },
  { key: 'Sidecar:Validation:SigningKeysRefreshIntervalSec', default: '86400', unit: 's', max: MAX_DELAY_SEC, description: 'Regular refresh of OpenID metadata and JWKS (Microsoft.IdentityModel default 24 h).' },
  { key: 'Sidecar:Validation:UnknownKidCooldownSec', default: '300', unit: 's', max: MAX_DELAY_SEC, description: 'Minimum gap between JWKS refetches triggered by an unknown `kid` (Microsoft.IdentityModel: 5 min).' },
  { key: 'Sidecar:Validation:VerifiedTokenCacheSize', default: '10000', unit: 'entries', description: 'LRU of already-verified tokens so repeated calls skip signature checks; a token enters it on its second verification (an encrypted one on its first), so a token used once leaves only a number behind; 0 disables it.' },
  { key: 'Sidecar:TokenCache:MaxEntries', default: '10000', unit: 'entries', description: 'Bound on cached acquired tokens (LRU), so many users cannot exhaust memory.' },
  { key: 'Sidecar:TokenCache:ExpiryBufferSec', default: '300', unit: 's', max: MAX_DELAY_SEC, description: 'Treat a cached token as expired this long before `exp` (msal refreshes 5 min early too).' },
  { key: 'Sidecar:DownstreamApi:ReturnAllResponseHeaders', default: 'false', description: 'Return every downstream response header in DownstreamApiResult, not only content headers (Microsoft returns content headers only).' },
  { key: 'Sidecar:DownstreamApi:MaxResponseBytes', default: '10485760', unit: 'bytes', description: 'Cap on a downstream API response body buffered into DownstreamApiResult.' },
  { key: 'Sidecar:DownstreamApi:MaxRedirects', default: '5', unit: 'redirects', description: 'Redirect hops followed when AllowOutboundRedirects is on.' },

  // ---- Hosting keys shared with ASP.NET (reference §1.1, §1.2, §3.5) ----
  { key: 'Kestrel:Endpoints:<name>:Url', default: '', description: 'Listener URL(s) for the identity API (Microsoft\'s security docs use `Kestrel__Endpoints__Http__Url`); below Sidecar:Http:Url. An endpoint without a Url is an error, as in Kestrel; its other keys (Protocols, Certificate, ...) are ignored with a warning (HTTP/1.1 only).' },
  { key: 'Kestrel:Limits:MaxRequestBodySize', default: '', unit: 'bytes', description: 'Kestrel\'s body limit, read as Sidecar:Http:MaxBodyBytes when that is not set.' },
  { key: 'Kestrel:Limits:MaxRequestHeadersTotalSize', default: '', unit: 'bytes', description: 'Kestrel\'s header block limit, read as Sidecar:Http:MaxHeaderBytes when that is not set.' },
  { key: 'ASPNETCORE_URLS', default: '', description: 'Semicolon-separated listener URLs (`+`, `*` and `[::]` = every interface, IPv4 and IPv6, on a dual-stack socket, IPv4 only where the host has no IPv6; `0.0.0.0` = IPv4 only; `localhost` = 127.0.0.1); also the `urls` key.' },
  { key: 'ASPNETCORE_HTTP_PORTS', default: '', description: 'Comma/semicolon-separated ports on all interfaces, as Microsoft\'s image sets (8080 there); lowest-precedence listener source.' },
  { key: 'ASPNETCORE_ENVIRONMENT', default: 'Production', description: 'Environment name; DOTNET_ENVIRONMENT wins when both are set (WebApplicationBuilder, .NET 7+); selects appsettings.{Environment}.json; `Development` is case-insensitive.' },
  { key: 'Logging:LogLevel:Default', default: 'Information', description: '.NET log level mapped to pino (Trace, Debug, Information, Warning, Error, Critical, None).' },
  { key: 'NODE_EXTRA_CA_CERTS', default: '', description: 'Extra PEM trust for outbound TLS (Node\'s own variable), combined with Sidecar:Outbound:CaFile.' },
  { key: 'HTTPS_PROXY', default: '', description: 'Egress proxy for https:// destinations (Entra, Key Vault, downstream APIs), as .NET reads it: `https_proxy` wins over `HTTPS_PROXY`; `http://host:port` (a value without a scheme is http://) or `https://`, optionally `user:password@` (Basic; never logged). Calls are tunnelled (CONNECT) and their TLS is end to end. An unusable value fails the start.' },
  { key: 'HTTP_PROXY', default: '', description: 'Egress proxy for plain http:// destinations (managed identity endpoints, http downstream APIs), sent in absolute form; `http_proxy` wins. Not used for https:// destinations.' },
  { key: 'ALL_PROXY', default: '', description: 'Proxy for either scheme when its own variable is unset (`all_proxy` wins).' },
  { key: 'NO_PROXY', default: '', description: 'Destinations that bypass the proxy (`no_proxy` wins), comma- or space-separated, read as Go and curl read them: a name (and its subdomains; a leading `.` or `*.` is the same), an IP literal or CIDR range, any of them with `:port`, or `*`. Put 169.254.169.254 and in-cluster names here.' },
  { key: 'AZURE_FEDERATED_TOKEN_FILE', default: '', description: 'Default assertion file for SignedAssertionFilePath (AKS workload identity); AZURE_ACCESS_TOKEN_FILE is the fallback.' },
]);

/** Keys Microsoft defines under AzureAd / DownstreamApis / credentials that we accept but do not use. */
export const IGNORED_MICROSOFT_KEYS: readonly IgnoredKeyDoc[] = Object.freeze<IgnoredKeyDoc[]>([
  { key: 'AzureAd:AppHomeTenantId', reason: 'not needed by the flows entra-sidecar implements' },
  { key: 'AzureAd:EnablePiiLogging', reason: 'entra-sidecar never logs personal data or tokens' },
  { key: 'AzureAd:SignUpSignInPolicyId', reason: 'Azure AD B2C is not supported' },
  { key: 'AzureAd:Domain', reason: 'Azure AD B2C is not supported' },
  { key: 'AzureAd:Audiences:<i>', reason: 'not honoured by Microsoft\'s sidecar either; use AzureAd:Audience or TokenValidationParameters:ValidAudiences' },
  { key: 'AzureAd:TokenValidationParameters:<other>', reason: 'only ValidAudience(s), ValidIssuer(s) and ClockSkew are honoured; the other validation rules are fixed, and as strict as JwtBearer\'s defaults' },
  { key: 'AzureAd:ClientCertificates:<i>:<field>', reason: 'legacy key; use ClientCredentials' },
  { key: 'AzureAd:TokenDecryptionCertificates:<i>:<field>', reason: 'legacy key; use TokenDecryptionCredentials' },
  { key: 'AzureAd:<credentials>:<i>:CertificateStorePath', reason: 'certificate stores do not exist on Linux' },
  { key: 'AzureAd:<credentials>:<i>:CertificateThumbprint', reason: 'certificate stores do not exist on Linux' },
  { key: 'AzureAd:<credentials>:<i>:CertificateDistinguishedName', reason: 'certificate stores do not exist on Linux' },
  { key: 'AzureAd:<credentials>:<i>:TokenExchangeAuthority', reason: 'the FIC assertion is always requested from the configured authority' },
  { key: 'AzureAd:<credentials>:<i>:CustomSignedAssertionProviderName', reason: 'custom assertion providers are a .NET extension point' },
  { key: 'AzureAd:<credentials>:<i>:CustomSignedAssertionProviderData:<key>', reason: 'custom assertion providers are a .NET extension point' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:UserFlow', reason: 'Azure AD B2C is not supported' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:AuthenticationOptionsName', reason: 'there is one AzureAd section' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:AuthenticationScheme', reason: 'documented by Microsoft but not a real option' },
  { key: 'DownstreamApis:<name>:AcquireTokenOptions:PopClaims', reason: 'documented by Microsoft but not a real option (the key is PopClaim)' },
  { key: 'DownstreamApis:<name>:Serializer', reason: '.NET-only extension point' },
  { key: 'DownstreamApis:<name>:Deserializer', reason: '.NET-only extension point' },
]);

/** The documented default of `key` (a concrete path is matched against the `<…>` patterns). */
export function defaultOf(key: string): string {
  const doc = findKeyDoc(key);
  if (!doc) throw new Error(`config key ${key} is not in CONFIG_KEYS`); // programming error, caught by the tests
  return doc.default;
}

/** The table row whose pattern matches a concrete, case-insensitive key path. */
export function findKeyDoc(key: string): ConfigKeyDoc | undefined {
  const k = key.toLowerCase();
  return compiledKeys().find((c) => c.pattern.test(k))?.doc;
}

/** The ignored-Microsoft-key row matching `key`, if any. */
export function findIgnoredKey(key: string): IgnoredKeyDoc | undefined {
  const k = key.toLowerCase();
  return compiledIgnored().find((c) => c.pattern.test(k))?.doc;
}

/** Regex for a key pattern: `<i>` = digits, `<credentials>` = either credential list, other `<…>` = any one segment. */
export function keyPattern(key: string): RegExp {
  const parts = key.toLowerCase().split(':').map((seg) => {
    if (seg === '<i>') return '\\d+';
    if (seg === '<credentials>') return '(?:clientcredentials|tokendecryptioncredentials)';
    if (seg === '<other>') return '[^:]*(?::.*)?';
    if (/^<[^>]+>$/.test(seg)) return '[^:]*';
    return seg.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
  });
  return new RegExp(`^${parts.join(':')}$`);
}

let compiled: { pattern: RegExp; doc: ConfigKeyDoc }[] | undefined;
function compiledKeys(): { pattern: RegExp; doc: ConfigKeyDoc }[] {
  compiled ??= CONFIG_KEYS.map((doc) => ({ pattern: keyPattern(doc.key), doc }));
  return compiled;
}
let compiledIgn: { pattern: RegExp; doc: IgnoredKeyDoc }[] | undefined;
function compiledIgnored(): { pattern: RegExp; doc: IgnoredKeyDoc }[] {
  compiledIgn ??= IGNORED_MICROSOFT_KEYS.map((doc) => ({ pattern: keyPattern(doc.key), doc }));
  return compiledIgn;
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|');
}

/** A key's `max` with its unit and, for a duration, about how long it is: `2147483 s (about 24.8 days)`. */
export function describeMax(doc: ConfigKeyDoc): string {
  const unit = doc.unit === undefined ? '' : ` ${doc.unit}`;
  const ms = doc.max === undefined ? undefined : doc.unit === 's' ? doc.max * 1000 : doc.unit === 'ms' ? doc.max : undefined;
  // Cut, not rounded: 2^31-1 ms is 24.855 days, and "about 24.9 days" would be past the limit.
  const about = ms === undefined ? '' : ` (about ${Math.floor(ms / 8_640_000) / 10} days)`;
  return `${doc.max ?? ''}${unit}${about}`;
}

function renderDescription(doc: ConfigKeyDoc): string {
  return doc.max === undefined ? doc.description : `${doc.description} At most ${describeMax(doc)}.`;
}

function renderDefault(doc: ConfigKeyDoc): string {
  return doc.default === '' ? '(unset)' : `\`${doc.default}\``;
}

/** The complete docs/configuration.md text, generated from CONFIG_KEYS and IGNORED_MICROSOFT_KEYS. */
export function renderConfigReference(): string {
  const lines: string[] = [];
  lines.push(
    '# Configuration reference',
    '',
    '<!-- Generated by scripts/gen-docs.ts from src/config/defaults.ts. Do not edit by hand; a test fails when this file drifts. -->',
    '',
    'Keys mirror Microsoft\'s Entra SDK sidecar (`AzureAd:*`, `DownstreamApis:*`, `Sidecar:*`), so existing',
    'deployments move over unchanged. Levels are separated by `:` (in environment variables by `__`), keys are',
    'case-insensitive, and arrays are index-keyed (`Scopes:0`, `Scopes__0`, or a JSON array).',
    '',
    '## Sources and precedence',
    '',
    'Lowest to highest; a later source overrides an earlier one key by key:',
    '',
    '1. `appsettings.json` in the working directory (or the file named by `Sidecar:SettingsFile`, which can',
    '   only come from the environment or the command line). JSON may contain `//` and `/* */` comments and',
    '   trailing commas.',
    '2. `appsettings.{Environment}.json` next to it. The environment name comes from `--environment`,',
    '   then `DOTNET_ENVIRONMENT`, then `ASPNETCORE_ENVIRONMENT` (WebApplicationBuilder\'s order since .NET 7),',
    '   default `Production`; it is compared as given (`"Development "` is not Development).',
    '3. Environment variables, all of them, without prefix: `AzureAd__ClientId`,',
    '   `AzureAd__ClientCredentials__0__SourceType`, `DownstreamApis__graph__Scopes__0`.',
    '   As in ASP.NET, `ASPNETCORE_`-prefixed variables are also read with the prefix removed at the lowest',
    '   precedence (so `ASPNETCORE_URLS` is the `urls` key).',
    '4. Command line: `--AzureAd:ClientId=…`, `--AzureAd:ClientId …`, `/AzureAd:ClientId=…` or `AzureAd:ClientId=…`.',
    '',
    'A `DownstreamApis` name keeps the casing it was first given in (lowest-precedence source first); callers',
    'look APIs up by that exact name.',
    '',
    '### Listener address of the identity HTTP API',
    '',
    `\`Sidecar:Http:Url\` > \`Kestrel:Endpoints:<name>:Url\` (all endpoints) > \`urls\` / \`ASPNETCORE_URLS\` > \`ASPNETCORE_HTTP_PORTS\` > \`${DEFAULT_HTTP_URL}\`.`,
    'Only `http://` URLs are accepted; port 0 picks a free port.',
    '',
    '## Validation',
    '',
    'The configuration is read once at startup into a typed, deeply frozen object. Every problem is reported',
    'together and the process exits 1 before it listens, writing one JSON line with `"code":"config_invalid"`',
    'and a `problems` array, whatever the log level (docs/errors.md). Warnings are `config_warning` lines.',
    'Error and warning messages name the key and never contain a secret. Where it helps to find the',
    'mistake, a message quotes a value of a setting that holds no secret (a credential `SourceType`, a',
    'port, an API name, an ext_authz route\'s `Hosts` entry, cut to 100 characters).',
    '',
    '- Unknown keys under `Sidecar:` are errors, with a "did you mean" hint.',
    '- Keys Microsoft defines under `AzureAd:` / `DownstreamApis:` that we do not use, and unknown keys there,',
    '  are warnings.',
    '- Where an array is required (`Scopes`, `ValidAudiences`, `ValidIssuers`, `ClientCredentials`,',
    '  `ClientCapabilities`, …) a single string is an error.',
    '- Durations have a maximum, given with each key below; a larger value is an error naming the key and',
    '  its maximum. Node keeps a timer for at most 2^31-1 ms (about 24.8 days) and fires a longer one after',
    '  1 ms, so a refresh interval of 30 days would fetch the signing keys without pause. Keys in seconds',
    '  stop at 2147483 s (`AzureAd:TokenValidationParameters:ClockSkew` too), `Sidecar:Outbound:TimeoutMs`',
    '  at a sixth of the limit (an ext_authz Check may wait up to six outbound timeouts), and',
    '  `Sidecar:Http:KeepAliveTimeoutMs` one second below it (Node adds a second to it).',
    '',
    '## How entra-sidecar differs from Microsoft\'s sidecar',
    '',
    `- **Default listener** \`${DEFAULT_HTTP_URL}\` (loopback). Microsoft\'s container listens on port 8080 on all`,
    '  interfaces (`ASPNETCORE_HTTP_PORTS=8080`); set `ASPNETCORE_URLS=http://+:8080` to get that behaviour.',
    '- **`Scopes` given as a string fails fast.** Microsoft binds `DownstreamApis__x__Scopes="User.Read"` to',
    '  nothing and answers 400 "No scopes found" at request time; we refuse to start and say to use `Scopes__0`.',
    '- **Strict `Sidecar:` keys.** A misspelt `Sidecar:` key is an error instead of being ignored.',
    '- **`StoreWithThumbprint` / `StoreWithDistinguishedName`** have no meaning on Linux and are errors, and so are the',
    '  credential sources entra-sidecar does not implement: `SignedAssertionFromVault` and `CustomSignedAssertion`',
    '  (client credentials), `AutoDecryptKeys` (token decryption). Microsoft accepts them in the schema; we refuse',
    '  them at startup, naming the key, instead of failing every acquisition later.',
    '- **https listeners are refused**: the sidecar serves plain HTTP on loopback; TLS belongs to the mesh.',
    '- **`SignedHttpRequestLifetime`** must be written `hh:mm:ss` (a bare number, which .NET reads as days, is refused).',
    '- **Outbound timeout 10 s.** `Sidecar:Outbound:TimeoutMs` bounds each outbound request, a `/DownstreamApi*` call',
    '  to the downstream API included; Microsoft\'s sidecar uses .NET HttpClient\'s default of 100 s. For a downstream',
    '  API that can be slower than 10 s set `Sidecar__Outbound__TimeoutMs=100000` (or what it needs).',
    '',
    '## Keys',
    '',
    '| Key | Default | Unit | Description |',
    '|---|---|---|---|',
  );
  for (const doc of CONFIG_KEYS) {
    lines.push(`| \`${cell(doc.key)}\` | ${cell(renderDefault(doc))} | ${cell(doc.unit ?? '')} | ${cell(renderDescription(doc))} |`);
  }
  lines.push(
    '',
    '## Microsoft keys accepted but not used',
    '',
    'These produce a startup warning, never an error, so a Microsoft configuration still starts.',
    '',
    '| Key | Why it is ignored |',
    '|---|---|',
  );
  for (const doc of IGNORED_MICROSOFT_KEYS) lines.push(`| \`${cell(doc.key)}\` | ${cell(doc.reason)} |`);
  lines.push('');
  return lines.join('\n');
}
