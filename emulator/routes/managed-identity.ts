/**
 * Managed-identity endpoints (§4): IMDS `/metadata/identity/oauth2/token[/]` and the App Service
 * `/msi/token`, served on a separate plain-HTTP loopback origin like the real ones.
 */
import type { AccessTokenSpec, EmulatorCore } from '../core.js';
import type { ManagedIdentity } from '../scenario.js';
import { sendJson } from '../http.js';
import type { Exchange } from '../http.js';

type Selector = { kind: 'client_id' | 'object_id' | 'resource_id'; value: string } | undefined;

/** Picks the identity: the selector's match, else system-assigned (§4.1). */
function selectIdentity(core: EmulatorCore, selector: Selector): ManagedIdentity | undefined {
  const all = core.managedIdentities();
  if (!selector) return all.find((m) => m.kind === 'system');
  const v = selector.value.toLowerCase();
  const matches = all.filter((m) => (selector.kind === 'client_id' ? m.clientId : selector.kind === 'object_id' ? m.objectId : (m.resourceId ?? '')).toLowerCase() === v);
  return matches.length === 1 ? matches[0] : undefined;
}

/** Mints an MI token for `resource` (with `/.default` already stripped by the client, §4.1). */
async function mintManagedIdentityToken(core: EmulatorCore, mi: ManagedIdentity, resourceParam: string): Promise<{ token: string; exp: number; nbf: number } | undefined> {
  const resource = core.findResource(resourceParam, mi.tenant);
  if (!resource) return undefined;
  const spec: AccessTokenSpec = {
    tenantId: mi.tenant,
    resource,
    audience: resourceParam,
    version: resource.accessTokenAcceptedVersion,
    kind: 'app',
    clientAppId: mi.clientId,
    clientObjectId: mi.objectId,
    acr: '2',
    roles: core.grantedRoles(mi.clientId, resource.appId, mi.tenant),
    extra: mi.resourceId ? { xms_mirid: mi.resourceId } : undefined,
    lifetimeSec: core.tokenLifetimeSec,
  };
  const claims = core.accessTokenClaims(spec);
  const token = await core.finishAccessToken(spec, claims);
  return { token, exp: claims.exp as number, nbf: claims.nbf as number };
}

function selectorFrom(url: URL, resourceIdParam: string): Selector | 'ambiguous' {
  const present: Selector[] = [];
  const c = url.searchParams.get('client_id');
  const o = url.searchParams.get('object_id');
  const r = url.searchParams.get(resourceIdParam);
  if (c) present.push({ kind: 'client_id', value: c });
  if (o) present.push({ kind: 'object_id', value: o });
  if (r) present.push({ kind: 'resource_id', value: r });
  if (present.length > 1) return 'ambiguous';
  return present[0];
}

/** `GET /metadata/identity/oauth2/token[/]` (IMDS, §4.1/§4.2). */
export async function imdsToken(ex: Exchange): Promise<void> {
  const bad = (error: string, description: string, status = 400): void => sendJson(ex, status, { error, error_description: description });
  if (ex.req.method !== 'GET') return bad('invalid_request', 'Only GET is supported.', 405);
  if ((String(ex.req.headers.metadata ?? '')).toLowerCase() !== 'true') return bad('bad_request_102', 'Required metadata header not specified');
  if (!ex.url.searchParams.get('api-version')) return bad('invalid_request', "Required query variable 'api-version' is missing");
  const resource = ex.url.searchParams.get('resource');
  if (!resource) return bad('invalid_request', "Required query variable 'resource' is missing");
  const selector = selectorFrom(ex.url, 'msi_res_id');
  if (selector === 'ambiguous') return bad('invalid_request', 'Only one of client_id, object_id or msi_res_id may be given.');
  const mi = selectIdentity(ex.core, selector);
  if (!mi) return bad('invalid_request', 'Identity not found');
  const minted = await mintManagedIdentityToken(ex.core, mi, resource);
  if (!minted) return bad('invalid_resource', `AADSTS500011: The resource principal named ${resource} was not found in the tenant named ${mi.tenant}.`);
  const lifetime = minted.exp - minted.nbf;
  sendJson(ex, 200, {
    access_token: minted.token,
    refresh_token: '',
    client_id: mi.clientId,
    expires_in: String(lifetime),
    expires_on: String(minted.exp),
    ext_expires_in: String(lifetime),
    not_before: String(minted.nbf),
    resource,
    token_type: 'Bearer',
  });
}

/** `GET /msi/token` (App Service 2019-08-01, §4.1/§4.2). */
export async function appServiceToken(ex: Exchange, secret: string): Promise<void> {
  const fail = (status: number, message: string): void => sendJson(ex, status, { statusCode: status, message, correlationId: ex.correlationId });
  if (ex.req.method !== 'GET') return fail(405, 'Only GET is supported.');
  const header = ex.req.headers['x-identity-header'];
  if (header === undefined) return fail(401, 'The X-IDENTITY-HEADER header is missing.');
  if (header !== secret) return fail(403, 'The X-IDENTITY-HEADER header is not valid.');
  if (ex.url.searchParams.get('api-version') !== '2019-08-01') return fail(400, "The 'api-version' query parameter must be 2019-08-01.");
  const resource = ex.url.searchParams.get('resource');
  if (!resource) return fail(400, "The 'resource' query parameter is missing.");
  const selector = selectorFrom(ex.url, 'mi_res_id');
  if (selector === 'ambiguous') return fail(400, 'Only one of client_id, object_id or mi_res_id may be given.');
  const mi = selectIdentity(ex.core, selector);
  if (!mi) return fail(400, 'Unable to load the requested managed identity.');
  const minted = await mintManagedIdentityToken(ex.core, mi, resource);
  if (!minted) return fail(400, `AADSTS500011: The resource principal named ${resource} was not found in the tenant named ${mi.tenant}.`);
  sendJson(ex, 200, {
    access_token: minted.token,
    expires_on: String(minted.exp),
    resource,
    token_type: 'Bearer',
    client_id: mi.clientId,
  });
}
