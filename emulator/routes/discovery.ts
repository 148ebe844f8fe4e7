/**
 * Discovery routes (§1.2–§1.6, §9.2): instance discovery, v2/v1 OpenID metadata, JWKS.
 */
import { Aadsts } from '../aadsts.js';
import type { AadstsError } from '../aadsts.js';
import type { TenantResolution } from '../core.js';
import { sendAadsts, sendJson } from '../http.js';
import type { Exchange } from '../http.js';

/** The Microsoft-account (consumers) tenant (§1.1). */
const MSA_TENANT_ID = '9188040d-6c67-4c5b-b112-36a304b66dad';

const METADATA_HEADERS = {
  'cache-control': 'max-age=86400, private',
  'access-control-allow-origin': '*',
};

/** Error for a tenant segment that does not resolve (§2.9); `error` is the OAuth error name the route uses. */
export function tenantError(r: TenantResolution, error?: string): AadstsError | undefined {
  if (r.kind === 'unknown') return Aadsts.tenantNotFound(r.segment, error);
  if (r.kind === 'malformed') return Aadsts.malformedTenant(r.segment, error);
  return undefined;
}

/**
 * Entra answers an unresolvable tenant's openid-configuration with 400 `error: invalid_tenant`
 * (not the token endpoint's `invalid_request`), e.g.
 * `{"error":"invalid_tenant","error_description":"AADSTS90002: Tenant '…' not found. …"}`.
 */
const METADATA_TENANT_ERROR = 'invalid_tenant';

/** `GET /common/discovery/instance?api-version=1.1&authorization_endpoint=…` */
export function instanceDiscovery(ex: Exchange): void {
  const host = new URL(ex.core.origin).host;
  const authz = ex.url.searchParams.get('authorization_endpoint');
  let tenantSegment = 'common';
  let valid = false;
  if (authz) {
    try {
      const u = new URL(authz);
      const allowed = new Set([host.toLowerCase(), `localhost:${u.port}`]);
      valid = u.protocol === 'https:' && allowed.has(u.host.toLowerCase()) && u.port === new URL(ex.core.origin).port;
      tenantSegment = u.pathname.split('/').filter(Boolean)[0] ?? 'common';
    } catch {
      valid = false;
    }
  }
  if (!valid) {
    sendAadsts(ex, Aadsts.invalidInstance());
    return;
  }
  sendJson(ex, 200, {
    tenant_discovery_endpoint: `${ex.core.origin}/${tenantSegment}/v2.0/.well-known/openid-configuration`,
    'api-version': '1.1',
    metadata: [{ preferred_network: host, preferred_cache: host, aliases: [host] }],
  }, METADATA_HEADERS);
}

/** `GET /{tenant}/v2.0/.well-known/openid-configuration` and the v1 `/{tenant}/.well-known/openid-configuration`. */
export function openIdConfiguration(ex: Exchange, tenantSegment: string, version: 1 | 2): void {
  const r = ex.core.resolveTenant(tenantSegment);
  // The v1 endpoint knows `common` but not the v2-only meta-tenants: Entra answers
  // /organizations/.well-known/openid-configuration with 400 AADSTS90002 (panva/openid-client#175),
  // which is why Microsoft.Identity.Web reads v1 metadata from /common for them.
  const v1Only = version === 1 && r.kind === 'meta' && r.name !== 'common';
  const err = v1Only ? Aadsts.tenantNotFound(tenantSegment, METADATA_TENANT_ERROR) : tenantError(r, METADATA_TENANT_ERROR);
  if (err) {
    sendAadsts(ex, err);
    return;
  }
  const o = ex.core.origin;
  // Tenant given by GUID or domain: every URL carries the GUID (msal relies on it, §1.2).
  // Meta-tenants keep their name in endpoints and template the issuer.
  const t = r.kind === 'tenant' ? r.tenant.id : (r.kind === 'meta' ? r.name : tenantSegment);
  // common/organizations template the issuer; consumers is one tenant, the Microsoft-account one,
  // whose concrete issuer its metadata names (§1.1, §1.2, §3.3).
  const issuerTenant = r.kind === 'tenant' ? r.tenant.id : r.kind === 'meta' && r.name === 'consumers' ? MSA_TENANT_ID : '{tenantid}';
  const regionScope = r.kind === 'tenant' ? r.tenant.regionScope : null;
  const appid = ex.url.searchParams.get('appid');
  const keysSuffix = appid ? `?appid=${encodeURIComponent(appid)}` : '';
  const common = {
    request_uri_parameter_supported: false,
    http_logout_supported: true,
    frontchannel_logout_supported: true,
    response_modes_supported: ['query', 'fragment', 'form_post'],
    subject_types_supported: ['pairwise'],
    id_token_signing_alg_values_supported: ['RS256'],
    token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
    tenant_region_scope: regionScope,
    cloud_instance_name: 'microsoftonline.com',
    cloud_graph_host_name: 'graph.windows.net',
    msgraph_host: 'graph.microsoft.com',
    rbac_url: 'https://pas.windows.net',
    kerberos_endpoint: `${o}/${t}/kerberos`,
  };
  if (version === 2) {
    sendJson(ex, 200, {
      token_endpoint: `${o}/${t}/oauth2/v2.0/token`,
      jwks_uri: `${o}/${t}/discovery/v2.0/keys${keysSuffix}`,
      issuer: `${o}/${issuerTenant}/v2.0`,
      userinfo_endpoint: 'https://graph.microsoft.com/oidc/userinfo',
      authorization_endpoint: `${o}/${t}/oauth2/v2.0/authorize`,
      device_authorization_endpoint: `${o}/${t}/oauth2/v2.0/devicecode`,
      end_session_endpoint: `${o}/${t}/oauth2/v2.0/logout`,
      response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
      scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
      claims_supported: ['sub', 'iss', 'cloud_instance_name', 'cloud_instance_host_name', 'cloud_graph_host_name', 'msgraph_host', 'aud', 'exp', 'iat', 'auth_time', 'acr', 'nonce', 'preferred_username', 'name', 'tid', 'ver', 'at_hash', 'c_hash', 'email'],
      ...common,
    }, METADATA_HEADERS);
    return;
  }
  sendJson(ex, 200, {
    token_endpoint: `${o}/${t}/oauth2/token`,
    jwks_uri: `${o}/${t}/discovery/keys${keysSuffix}`,
    // v1 issuer keeps the sts.windows.net shape (trailing slash) on the emulator host (§9.2 [choice]).
    issuer: `${o}/${issuerTenant}/`,
    userinfo_endpoint: `${o}/${t}/openid/userinfo`,
    authorization_endpoint: `${o}/${t}/oauth2/authorize`,
    device_authorization_endpoint: `${o}/${t}/oauth2/devicecode`,
    end_session_endpoint: `${o}/${t}/oauth2/logout`,
    check_session_iframe: `${o}/${t}/oauth2/checksession`,
    microsoft_multi_refresh_token: true,
    response_types_supported: ['code', 'id_token', 'code id_token', 'token id_token', 'token'],
    scopes_supported: ['openid'],
    claims_supported: ['sub', 'iss', 'cloud_instance_name', 'cloud_instance_host_name', 'cloud_graph_host_name', 'msgraph_host', 'aud', 'exp', 'iat', 'auth_time', 'acr', 'amr', 'nonce', 'email', 'given_name', 'family_name', 'nickname'],
    ...common,
  }, METADATA_HEADERS);
}

/** `GET /{tenant}/discovery/v2.0/keys` (per-key issuer) and `/{tenant}/discovery/keys` (no issuer). */
export function jwks(ex: Exchange, tenantSegment: string, version: 1 | 2): void {
  const r = ex.core.resolveTenant(tenantSegment);
  const err = tenantError(r);
  if (err) {
    sendAadsts(ex, err);
    return;
  }
  const keys = ex.core.signingKeys.map((k) => {
    const jwk = k.material.publicKey.export({ format: 'jwk' });
    const entry: Record<string, unknown> = {
      kty: 'RSA',
      use: 'sig',
      kid: k.kid,
      x5t: k.kid,
      n: jwk.n,
      e: jwk.e,
      x5c: [k.material.certDer.toString('base64')],
    };
    if (version === 2) entry.issuer = `${ex.core.origin}/{tenantid}/v2.0`;
    return entry;
  });
  sendJson(ex, 200, { keys }, METADATA_HEADERS);
}
