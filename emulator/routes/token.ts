/**
 * The token endpoint `POST /{tenant}/oauth2/v2.0/token` (and the v1 `/oauth2/token`), following
 * the validation order of reference §9.3: request shape → tenant → grant_type → client_id →
 * client authentication → grant rules → PoP (`token_type=pop`) → `claims` → mint (§9.4).
 */
import { Aadsts, AadstsError } from '../aadsts.js';
import type { AccessTokenSpec, AuthenticatedClient, EmulatorCore } from '../core.js';
import { parseReqCnf } from '../core.js';
import { b64url } from '../pki.js';
import { decodeJws, isObject } from '../jwt.js';
import type { JwtPayload } from '../jwt.js';
import type { AppRegistration, TenantRecord } from '../scenario.js';
import { WELL_KNOWN_APP_IDS } from '../scenario.js';
import { sendAadsts, sendJson } from '../http.js';
import type { Exchange } from '../http.js';

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const SUPPORTED_GRANTS = new Set(['client_credentials', JWT_BEARER, 'refresh_token', 'user_fic']);
const OIDC_SCOPES = new Set(['openid', 'profile', 'email', 'offline_access']);
/** Clock skew allowed on client assertions (Entra tolerates a few minutes). */
const ASSERTION_SKEW_SEC = 300;
const MAX_ASSERTION_LIFETIME_SEC = 24 * 3600;
const REFRESH_TOKEN_RE = /^1\.emu\.[A-Za-z0-9_-]{64}$/;

/** A token about to be minted, plus what goes into the response around it. */
interface TokenPlan {
  spec: AccessTokenSpec;
  /** Response `scope` (absent for client credentials, §2.1). */
  scope?: string;
  user?: { oid: string; upn: string; name: string };
  openid?: boolean;
  offlineAccess?: boolean;
  /** Claims to carry over when the refresh token is redeemed (agent claims). */
  refreshExtra?: Record<string, unknown>;
  /** v1 endpoint: echo the resource. */
  resourceEcho?: string;
}

/** Requested delegated scopes resolved to one resource (§2.7). */
interface UserScopes {
  resource: AppRegistration;
  /** How the client named the resource (URI or GUID): v1 `aud` and the prefix of returned scopes. */
  prefix: string;
  names: string[];
  oidc: string[];
}

/** Handles the token endpoint; never throws (errors become AADSTS bodies). */
export async function tokenEndpoint(ex: Exchange, tenantSegment: string, v1: boolean): Promise<void> {
  try {
    const plan = await planToken(ex, tenantSegment, v1);
    await respond(ex, plan, v1);
  } catch (err) {
    if (err instanceof AadstsError) sendAadsts(ex, err);
    else throw err;
  }
}

async function planToken(ex: Exchange, tenantSegment: string, v1: boolean): Promise<TokenPlan> {
  const core = ex.core;
  // 1. Request shape.
  if (ex.req.method !== 'POST') throw Aadsts.methodNotAllowed();
  if (ex.bodyTooLarge) throw Aadsts.bodyTooLarge();
  if (!ex.isForm) throw Aadsts.missingParameter('grant_type');
  const form = { ...ex.form };
  // The v1 endpoint names the resource with `resource=` and ignores `scope` (§9.2; Microsoft's v1
  // protocol docs): without `resource` it answers 900144 (step 6).
  if (v1) {
    delete form.scope;
    if (form.resource) form.scope = `${form.resource.replace(/\/+$/, '')}/.default`;
  }
  // 2. Tenant. Only /common and /consumers refuse non-interactive grants (§1.1, §9.3 step 2);
  // /organizations names no tenant, so the request's own credentials pick it (step 4).
  const r = core.resolveTenant(tenantSegment);
  if (r.kind === 'unknown') throw Aadsts.tenantNotFound(r.segment);
  if (r.kind === 'malformed') throw Aadsts.malformedTenant(r.segment);
  if (r.kind === 'meta' && r.name !== 'organizations') throw Aadsts.metaTenantNotAllowed();
  // 3. grant_type.
  const grantType = form.grant_type;
  if (!grantType) throw Aadsts.missingParameter('grant_type');
  if (!SUPPORTED_GRANTS.has(grantType)) throw Aadsts.unsupportedGrant(grantType);
  // 4. client_id (body, else HTTP Basic).
  const basic = parseBasic(ex.req.headers.authorization);
  const clientId = form.client_id ?? basic?.clientId;
  if (!clientId) throw Aadsts.missingParameter('client_id');
  const tenant = r.kind === 'tenant' ? r.tenant : organizationsTenant(core, grantType, form, clientId);
  if (!tenant) throw Aadsts.unknownClient(clientId, tenantSegment);
  const app = core.findAppInTenant(clientId, tenant.id);
  if (!app) throw Aadsts.unknownClient(clientId, tenant.id);
  if (app.disabled) throw Aadsts.clientDisabled(clientId);
  // 5. Client authentication.
  const client = await authenticateClient(core, tenant, { organizations: r.kind === 'meta', origin: regionalOrigin(core, ex.req.headers.host) }, app, form, basic?.secret);
  // 6. Grant rules.
  if (v1 && !form.resource) throw Aadsts.missingParameter('resource');
  let plan: TokenPlan;
  if (grantType === 'client_credentials') plan = clientCredentials(core, tenant, client, form);
  else if (grantType === 'refresh_token') plan = refreshGrant(core, tenant, client, form);
  else if (grantType === 'user_fic') plan = await userFic(core, tenant, client, form, form.user_federated_identity_credential, 'user_federated_identity_credential');
  else if (form.requested_token_use === 'on_behalf_of') plan = await onBehalfOf(core, tenant, client, form);
  else if (client.app.blueprintId && form.assertion && (form.username || form.user_id)) {
    // Legacy agent-user form (§5.3): jwt-bearer + assertion=T2 + username.
    plan = await userFic(core, tenant, client, form, form.assertion, 'assertion');
  } else throw Aadsts.missingParameter('requested_token_use');
  // 7. Proof of possession.
  if (form.token_type && form.token_type.toLowerCase() === 'pop') {
    if (!form.req_cnf) throw Aadsts.missingParameter('req_cnf');
    const cnf = parseReqCnf(form.req_cnf);
    if (!cnf) throw Aadsts.invalidReqCnf();
    const bound: Record<string, unknown> = { kid: cnf.kid };
    if (typeof cnf.xms_ksl === 'string') bound.xms_ksl = cnf.xms_ksl;
    plan.spec.extra = { ...plan.spec.extra, cnf: bound };
    plan.spec.extra.__pop = true;
  }
  // 8. claims (client capabilities / claims challenge).
  if (form.claims !== undefined) applyClaims(core, plan, form.claims);
  if (v1) plan.resourceEcho = ex.form.resource ?? plan.spec.audience;
  return plan;
}

/**
 * The tenant of a request to `/organizations`, whose URL names none: OBO (and the legacy agent-user
 * jwt-bearer form) runs in the assertion's `tid` (verified with the assertion later), a refresh
 * token in the tenant it is bound to, anything else in the client's home tenant [choice: msal-node
 * refuses client credentials on /organizations because Entra would "guess" the tenant].
 */
function organizationsTenant(core: EmulatorCore, grantType: string, form: Record<string, string>, clientId: string): TenantRecord | undefined {
  let tid: unknown;
  if (grantType === JWT_BEARER && form.assertion) tid = decodeJws(form.assertion)?.payload.tid;
  else if (grantType === 'refresh_token' && form.refresh_token) tid = core.refreshTokens.get(form.refresh_token)?.tenantId;
  const named = typeof tid === 'string' ? core.tenants().find((t) => t.id.toLowerCase() === tid.toLowerCase()) : undefined;
  if (named) return named;
  const home = core.findApp(clientId)?.tenant;
  return home === undefined ? undefined : core.findTenant(home);
}

/**
 * The `claims` request (§2.5, §9.3 step 8). Client capability `cp1` gets a CAE-capable resource
 * (Graph, `caeCapable` in the scenario) a long-lived token carrying `xms_cc`; other resources get
 * the normal lifetime and no `xms_cc`. An `acrs` (authentication context) request for a user
 * token succeeds only when the user has satisfied every context asked for (see
 * `setConditionalAccess`): then the token carries them in `acrs`, else Entra asks for interaction.
 */
function applyClaims(core: EmulatorCore, plan: TokenPlan, claimsParam: string): void {
  let parsed: unknown;
  try {
    parsed = JSON.parse(claimsParam);
  } catch {
    throw Aadsts.invalidClaims();
  }
  if (!isObject(parsed)) throw Aadsts.invalidClaims();
  const at = parsed.access_token;
  if (!isObject(at)) return;
  const cc = isObject(at.xms_cc) ? at.xms_cc.values : undefined;
  if (Array.isArray(cc) && cc.includes('cp1') && plan.spec.resource?.caeCapable) {
    plan.spec.lifetimeSec = 86399; // CAE-capable clients get long-lived tokens (§2.1)
    plan.spec.extra = { ...plan.spec.extra, xms_cc: ['cp1'] };
  }
  const acrs = requestedValues(at.acrs);
  if (acrs.length && plan.user) {
    if (core.unsatisfiedAuthContexts(plan.user.oid, acrs).length) {
      const resource = plan.spec.resource?.appId ?? plan.spec.audience;
      throw Aadsts.interactionRequired(resource, JSON.stringify({ access_token: { acrs: at.acrs } }));
    }
    plan.spec.extra = { ...plan.spec.extra, acrs };
  }
}

/** The values an individual claim request names: `{"value": v}` or `{"values": [...]}` (OIDC §5.5.1). */
function requestedValues(request: unknown): string[] {
  if (!isObject(request)) return [];
  const values = Array.isArray(request.values) ? request.values : [request.value];
  return [...new Set(values.filter((v): v is string => typeof v === 'string' && v !== ''))];
}

async function respond(ex: Exchange, plan: TokenPlan, v1: boolean): Promise<void> {
  const core = ex.core;
  const extra = { ...plan.spec.extra };
  const pop = extra.__pop === true;
  delete extra.__pop;
  plan.spec.extra = extra;
  const claims = core.accessTokenClaims(plan.spec);
  const accessToken = await core.finishAccessToken(plan.spec, claims);
  const lifetime = plan.spec.lifetimeSec;
  const body: Record<string, unknown> = {
    token_type: pop ? 'pop' : 'Bearer',
  };
  if (plan.scope !== undefined) body.scope = plan.scope;
  if (v1) {
    body.expires_in = String(lifetime);
    body.ext_expires_in = String(lifetime);
    body.expires_on = String(claims.exp);
    body.not_before = String(claims.nbf);
    body.resource = plan.resourceEcho;
  } else {
    body.expires_in = lifetime;
    body.ext_expires_in = lifetime;
    if (lifetime >= 7200) body.refresh_in = Math.floor(lifetime / 2);
  }
  body.access_token = accessToken;
  if (plan.user && plan.offlineAccess) {
    body.refresh_token = core.issueRefreshToken({ clientAppId: plan.spec.clientAppId, user: plan.user, tenantId: plan.spec.tenantId, extra: plan.refreshExtra });
  }
  if (plan.user && plan.openid) {
    body.id_token = core.idToken(plan.spec.tenantId, plan.spec.clientAppId, plan.user);
    body.client_info = b64url(JSON.stringify({ uid: plan.user.oid, utid: plan.spec.tenantId }));
  }
  sendJson(ex, 200, body, { 'cache-control': 'no-store, no-cache', pragma: 'no-cache' });
}

// ------------------------------------------------------------------ client authentication

function parseBasic(header: string | undefined): { clientId: string; secret: string } | undefined {
  if (!header || !/^basic /i.test(header)) return undefined;
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  try {
    return { clientId: decodeURIComponent(decoded.slice(0, colon)), secret: decodeURIComponent(decoded.slice(colon + 1)) };
  } catch {
    return undefined;
  }
}

async function authenticateClient(core: EmulatorCore, tenant: TenantRecord, via: Via, app: AppRegistration, form: Record<string, string>, basicSecret: string | undefined): Promise<AuthenticatedClient> {
  const secret = form.client_secret ?? basicSecret;
  const assertion = form.client_assertion;
  if (secret !== undefined && assertion !== undefined) throw Aadsts.multipleCredentials();
  if (secret === undefined && assertion === undefined) throw Aadsts.noCredential();
  if (secret !== undefined) {
    const result = core.checkSecret(app, secret);
    if (result === 'expired') throw Aadsts.expiredSecret(app.appId);
    if (result !== 'ok') throw Aadsts.wrongSecret(app.appId);
    return { app, acr: '1', method: 'secret' };
  }
  if (form.client_assertion_type !== CLIENT_ASSERTION_TYPE) throw Aadsts.badAssertionType();
  const jws = assertion as string;
  const decoded = decodeJws(jws);
  if (!decoded) throw Aadsts.assertionMalformed('The client assertion is not a compact JWS.');
  const alg = decoded.header.alg;
  if (alg !== 'RS256' && alg !== 'PS256') throw Aadsts.assertionMalformed(`Unsupported client assertion algorithm '${String(alg)}'.`);
  const p = decoded.payload;
  if (core.tenantOfIssuer(p.iss)) {
    return app.blueprintId ? agentAssertion(core, app, jws) : entraFederatedAssertion(core, app, jws);
  }
  const externalKey = core.externalIssuerKey(p.iss);
  if (externalKey) {
    if (!core.verifyJwsSignature(jws, String(alg), externalKey)) throw Aadsts.assertionSignature('The federated assertion signature is not valid.');
    checkLifetime(core, p);
    matchFederatedCredential(app, p);
    return { app, acr: '2', method: 'federated' };
  }
  const h = decoded.header;
  if (typeof h['x5t#S256'] === 'string' || typeof h.x5t === 'string') {
    return certificateAssertion(core, tenant, via, app, jws, decoded.header, p);
  }
  throw Aadsts.ficIssuer(String(p.iss));
}

function certificateAssertion(core: EmulatorCore, tenant: TenantRecord, via: Via, app: AppRegistration, jws: string, header: Record<string, unknown>, p: JwtPayload): AuthenticatedClient {
  const certs = core.appCertificates(app);
  const match = certs.find((c) => (typeof header['x5t#S256'] === 'string' && c.material.x5tS256 === header['x5t#S256'])
    || (typeof header.x5t === 'string' && c.material.x5t === header.x5t));
  if (!match) throw Aadsts.assertionSignature(`The certificate with identifier used to sign the client assertion is not registered on application '${app.appId}'.`);
  const notAfter = match.credential.notAfter ? Date.parse(match.credential.notAfter) / 1000 : match.material.notAfter.getTime() / 1000;
  if (notAfter <= core.nowSec()) throw Aadsts.assertionSignature('The certificate used to sign the client assertion has expired.');
  if (!core.verifyJwsSignature(jws, String(header.alg), match.material.publicKey)) throw Aadsts.assertionSignature('The signature does not verify with the registered certificate.');
  // iss == sub == client_id; GUIDs compare case-insensitively.
  const isClient = (v: unknown): boolean => typeof v === 'string' && v.toLowerCase() === app.appId.toLowerCase();
  if (!isClient(p.iss) || !isClient(p.sub)) throw Aadsts.assertionIssuerSubject();
  // One string, exactly one of the accepted values: msal sends the token URL verbatim (§2.3).
  if (typeof p.aud !== 'string' || !acceptedAssertionAudiences(core, tenant, via).has(p.aud)) {
    throw Aadsts.assertionAudience(typeof p.aud === 'string' ? p.aud : JSON.stringify(p.aud ?? null));
  }
  checkLifetime(core, p);
  const start = typeof p.nbf === 'number' ? p.nbf : typeof p.iat === 'number' ? p.iat : core.nowSec();
  if ((p.exp as number) - start > MAX_ASSERTION_LIFETIME_SEC) throw Aadsts.assertionMalformed('The client assertion lifetime is too long.');
  if (typeof p.jti !== 'string' || !p.jti) throw Aadsts.assertionMalformed("The client assertion has no 'jti' claim.");
  return { app, acr: '2', method: 'certificate' };
}

/**
 * The `aud` values a certificate assertion may carry (§2.3, §9.3): this tenant's v2 or v1 token
 * endpoint URL, by GUID or by a verified domain, or the tenant's v2 issuer (Microsoft's
 * certificate-credentials doc shows both `…/oauth2/v2.0/token` and `…/{tenant}/v2.0`). Compared
 * exactly: no case folding, no trailing slash, no bare tenant URL. Arrays are refused [choice:
 * the reference names single values and msal sends a string]. Via /organizations, the
 * organizations token URLs too.
 */
function acceptedAssertionAudiences(core: EmulatorCore, tenant: TenantRecord, via: Via): Set<string> {
  const out = new Set<string>([core.v2Issuer(tenant.id)]);
  // A request to /organizations: msal builds `aud` from the token URL it posts to.
  const names = [tenant.id.toLowerCase(), ...tenant.domains.map((d) => d.toLowerCase()), ...(via.organizations ? ['organizations'] : [])];
  for (const origin of new Set([core.origin, via.origin])) {
    for (const t of new Set(names)) {
      out.add(`${origin}/${t}/oauth2/v2.0/token`);
      out.add(`${origin}/${t}/oauth2/token`);
    }
  }
  // msal's regional token URL ends in a slash (Authority.buildRegionalAuthorityString rebuilds it
  // with UrlString, which appends one; observed with msal-node 7.2.3), and it signs the assertion
  // for that URL; msal's regional certificate flow works against ESTS-R, so ESTS-R takes it.
  if (via.origin !== core.origin) for (const t of new Set(names)) out.add(`${via.origin}/${t}/oauth2/v2.0/token/`);
  return out;
}

/** How a token request reached the emulator: through /organizations, and at which origin. */
interface Via {
  readonly organizations: boolean;
  /** The origin the request named: the emulator's own, or a regional one (`<region>.` in front, ESTS-R). */
  readonly origin: string;
}

/**
 * The origin a request was sent to, when it is a regional name of the emulator's own host
 * (msal's AzureRegion posts to `https://<region>.<host>/…` and signs its assertion for that URL,
 * which ESTS-R accepts); otherwise the emulator's origin.
 */
function regionalOrigin(core: EmulatorCore, host: string | undefined): string {
  const own = new URL(core.origin).host;
  const m = host === undefined ? null : /^([a-z0-9-]{1,63})\.(.+)$/.exec(host);
  return m !== null && m[2] === own ? `https://${host}` : core.origin;
}

function checkLifetime(core: EmulatorCore, p: JwtPayload): void {
  const now = core.nowSec();
  if (typeof p.exp !== 'number') throw Aadsts.assertionMalformed("The client assertion has no 'exp' claim.");
  if (p.exp <= now - ASSERTION_SKEW_SEC) throw Aadsts.assertionTime();
  if (typeof p.nbf === 'number' && p.nbf > now + ASSERTION_SKEW_SEC) throw Aadsts.assertionTime();
}

async function entraFederatedAssertion(core: EmulatorCore, app: AppRegistration, jws: string): Promise<AuthenticatedClient> {
  const verified = await core.verifyIssuedToken(jws);
  if (!verified.ok) throw Aadsts.assertionSignature(verified.reason);
  checkLifetime(core, verified.payload);
  if (isUserToken(verified.payload)) throw Aadsts.ficUserToken();
  matchFederatedCredential(app, verified.payload);
  return { app, acr: '2', method: 'federated' };
}

/** Agent identities authenticate only with a T1 from their blueprint that names them (§5.2). */
async function agentAssertion(core: EmulatorCore, app: AppRegistration, jws: string): Promise<AuthenticatedClient> {
  const verified = await core.verifyIssuedToken(jws);
  if (!verified.ok) throw Aadsts.assertionSignature(verified.reason);
  const p = verified.payload;
  checkLifetime(core, p);
  if (isUserToken(p)) throw Aadsts.ficUserToken();
  const issuedTo = (p.azp ?? p.appid) as unknown;
  if (typeof issuedTo !== 'string' || issuedTo.toLowerCase() !== (app.blueprintId ?? '').toLowerCase()) {
    throw Aadsts.ficIssuer(`${String(p.iss)} (token not issued to the agent identity's blueprint)`);
  }
  const aud = String(p.aud).toLowerCase();
  if (aud !== WELL_KNOWN_APP_IDS.tokenExchange && aud !== 'api://azureadtokenexchange') throw Aadsts.ficAudience();
  if (typeof p.sub !== 'string' || !p.sub.toLowerCase().endsWith(`/${app.appId.toLowerCase()}`)) throw Aadsts.ficSubject(String(p.sub));
  return { app, acr: '2', method: 'agent' };
}

function isUserToken(p: JwtPayload): boolean {
  return p.idtyp === 'user' || (p.idtyp === undefined && typeof p.scp === 'string');
}

/** Matches (iss, sub, aud) against the app's federated identity credentials (§2.4). */
function matchFederatedCredential(app: AppRegistration, p: JwtPayload): void {
  const iss = String(p.iss);
  // Issuer and subject compare exactly (§2.4; subjects are case-sensitive). Entra-issued tokens get
  // no v1/v2 equivalence: §4.3 leaves the MI token's issuer version unverified, so we take the
  // stricter reading, consistent with MI tokens for AzureADTokenExchange being v2 (scenario.ts) and
  // with Entra refusing FIC issuers in the v1 `sts.windows.net` form.
  let candidates = app.federatedCredentials.filter((f) => f.issuer === iss);
  if (!candidates.length) throw Aadsts.ficIssuer(iss);
  candidates = candidates.filter((f) => f.subject === p.sub);
  if (!candidates.length) throw Aadsts.ficSubject(String(p.sub));
  const audiences = (Array.isArray(p.aud) ? p.aud : [p.aud]).filter((a): a is string => typeof a === 'string').map((a) => a.toLowerCase());
  const accepted = (f: { audiences: string[] }): boolean => f.audiences.some((a) => {
    const l = a.toLowerCase();
    return audiences.includes(l) || (l === 'api://azureadtokenexchange' && audiences.includes(WELL_KNOWN_APP_IDS.tokenExchange));
  });
  if (!candidates.some(accepted)) throw Aadsts.ficAudience();
}

// ------------------------------------------------------------------ grants

function splitScopes(value: string | undefined): string[] {
  return (value ?? '').split(' ').map((s) => s.trim()).filter(Boolean);
}

/** Agent claims (§5.5) for tokens issued to an agent identity. */
function agentClaims(client: AppRegistration, subjectFacet: '11' | '13' | undefined, idrel?: string): Record<string, unknown> {
  const c: Record<string, unknown> = { xms_act_fct: '11', xms_par_app_azp: client.blueprintId };
  if (subjectFacet) c.xms_sub_fct = subjectFacet;
  if (idrel) c.xms_idrel = idrel;
  return c;
}

function clientCredentials(core: EmulatorCore, tenant: TenantRecord, client: AuthenticatedClient, form: Record<string, string>): TokenPlan {
  const scopes = splitScopes(form.scope);
  if (!scopes.length) throw Aadsts.missingParameter('scope');
  if (scopes.some((s) => !s.endsWith('/.default'))) throw Aadsts.scopeWithoutDefault();
  if (scopes.length > 1) throw Aadsts.scopeTwoResources();
  const requested = scopes[0].slice(0, -'/.default'.length);
  const resource = core.findResource(requested, tenant.id);
  if (!resource) throw Aadsts.unknownResource(requested, tenant.id);
  const app = client.app;
  const base = {
    tenantId: tenant.id,
    resource,
    audience: requested,
    kind: 'app' as const,
    clientAppId: app.appId,
    clientObjectId: core.servicePrincipalIdIn(app, tenant.id),
    acr: client.acr,
    lifetimeSec: core.tokenLifetimeSec,
  };
  const isExchange = resource.appId === WELL_KNOWN_APP_IDS.tokenExchange;
  if (form.fmi_path !== undefined) {
    // Leg 1 (§5.1): the blueprint asks for T1 naming one of its agent identities.
    if (!app.isAgentBlueprint) throw Aadsts.fmiPathInvalid("The 'fmi_path' parameter is only allowed for agent identity blueprints.");
    if (!isExchange) throw Aadsts.fmiPathInvalid("The 'fmi_path' parameter requires the scope api://AzureADTokenExchange/.default.");
    const agentId = (app.agentIdentityIds ?? []).find((id) => id.toLowerCase() === form.fmi_path.toLowerCase());
    if (!agentId) throw Aadsts.fmiPathInvalid(`The 'fmi_path' '${form.fmi_path}' does not name an agent identity of this blueprint.`);
    const sub = `/eid1/c/pub/t/${b64url(guidBytes(tenant.id))}/a/${b64url(guidBytes(app.appId))}/${agentId}`;
    return { spec: { ...base, version: 2, audience: WELL_KNOWN_APP_IDS.tokenExchange, extra: { sub } } };
  }
  if (app.blueprintId) {
    if (isExchange) {
      // Leg 2 for agent-user flows (§5.2): T2, an exchange token issued to the agent identity.
      return { spec: { ...base, version: 2, audience: WELL_KNOWN_APP_IDS.tokenExchange, extra: agentClaims(app, '11', '7') } };
    }
    // Autonomous agent (§5.5).
    const roles = core.grantedRoles(app.appId, resource.appId, tenant.id);
    return { spec: { ...base, version: resource.accessTokenAcceptedVersion, roles, extra: agentClaims(app, '11', '7') } };
  }
  const roles = core.grantedRoles(app.appId, resource.appId, tenant.id);
  return { spec: { ...base, version: resource.accessTokenAcceptedVersion, roles } };
}

/** Resolves delegated scopes to one resource (§2.7): bare names mean Microsoft Graph. */
function resolveUserScopes(core: EmulatorCore, tenant: TenantRecord, scopeParam: string | undefined): UserScopes {
  const all = splitScopes(scopeParam);
  if (!all.length) throw Aadsts.missingParameter('scope');
  const oidc = all.filter((s) => OIDC_SCOPES.has(s.toLowerCase()));
  const rest = all.filter((s) => !OIDC_SCOPES.has(s.toLowerCase()));
  if (!rest.length) throw Aadsts.invalidScope(all.join(' '));
  let resource: AppRegistration | undefined;
  let prefix = '';
  const names: string[] = [];
  for (const s of rest) {
    const slash = s.lastIndexOf('/');
    const p = slash > 0 ? s.slice(0, slash) : 'https://graph.microsoft.com';
    const name = slash > 0 ? s.slice(slash + 1) : s;
    const r = core.findResource(p, tenant.id);
    if (!r) throw Aadsts.unknownResource(p, tenant.id);
    if (resource && r !== resource) throw Aadsts.scopeTwoResources();
    if (!resource) prefix = p;
    resource = r;
    if (name !== '.default' && !r.scopes.some((x) => x.toLowerCase() === name.toLowerCase())) throw Aadsts.invalidScope(s);
    names.push(name);
  }
  // `.default` stands for every consented permission of the resource, so naming others of the same
  // resource beside it is refused as one invalid scope value (70011) [seen in public reports of
  // Entra's answers to msal4j and Azure Identity requests; the reference is silent].
  if (names.includes('.default') && names.some((n) => n !== '.default')) throw Aadsts.invalidScope(all.join(' '));
  return { resource: resource as AppRegistration, prefix, names, oidc };
}

/** Consented scopes for the request (§9.3 OBO: granted ∩ requested, all granted for .default). */
function consentedScopes(core: EmulatorCore, tenant: TenantRecord, clientAppId: string, scopes: UserScopes, userOid: string): string[] {
  const granted = core.grantedScopes(clientAppId, scopes.resource.appId, tenant.id, userOid);
  if (scopes.names.includes('.default')) {
    if (!granted.length) throw Aadsts.consentRequired(clientAppId, scopes.prefix);
    return granted;
  }
  const out: string[] = [];
  for (const n of scopes.names) {
    const g = granted.find((x) => x.toLowerCase() === n.toLowerCase());
    if (!g) throw Aadsts.consentRequired(clientAppId, scopes.prefix);
    out.push(g);
  }
  return out;
}

/**
 * Response `scope`: consented scopes qualified the way the client named the resource, plus a
 * verbatim `.default` when asked, so msal's cache (which needs every requested scope in the
 * response target, §2.1) can serve repeats [choice], plus the OIDC scopes requested.
 */
function responseScope(scopes: UserScopes, consented: string[]): string {
  const out = consented.map((n) => `${scopes.prefix}/${n}`);
  if (scopes.names.includes('.default')) out.push(`${scopes.prefix}/.default`);
  for (const o of scopes.oidc) if (o.toLowerCase() !== 'offline_access') out.push(o.toLowerCase());
  return [...new Set(out)].join(' ');
}

function userPlan(core: EmulatorCore, tenant: TenantRecord, client: AuthenticatedClient, scopes: UserScopes, consented: string[], user: { oid: string; upn: string; name: string }, extra?: Record<string, unknown>): TokenPlan {
  return {
    spec: {
      tenantId: tenant.id,
      resource: scopes.resource,
      audience: scopes.prefix,
      version: scopes.resource.accessTokenAcceptedVersion,
      kind: 'user',
      clientAppId: client.app.appId,
      clientObjectId: core.servicePrincipalIdIn(client.app, tenant.id),
      acr: client.acr,
      user,
      scp: consented.join(' '),
      extra,
      lifetimeSec: core.tokenLifetimeSec,
    },
    scope: responseScope(scopes, consented),
    user,
    openid: scopes.oidc.some((s) => s.toLowerCase() === 'openid'),
    offlineAccess: scopes.oidc.some((s) => s.toLowerCase() === 'offline_access'),
    refreshExtra: extra,
  };
}

async function onBehalfOf(core: EmulatorCore, tenant: TenantRecord, client: AuthenticatedClient, form: Record<string, string>): Promise<TokenPlan> {
  if (!form.assertion) throw Aadsts.missingParameter('assertion');
  const verified = await core.verifyIssuedToken(form.assertion);
  if (!verified.ok) throw Aadsts.oboAssertionInvalid(verified.reason);
  const p = verified.payload;
  if (verified.tenant.id !== tenant.id || p.tid !== tenant.id) throw Aadsts.oboAssertionInvalid('The assertion was issued for a different tenant.');
  const now = core.nowSec();
  if (typeof p.exp !== 'number' || p.exp <= now) throw Aadsts.oboAssertionExpired();
  if (typeof p.nbf === 'number' && p.nbf > now) throw Aadsts.oboAssertionExpired();
  if (!isUserToken(p)) throw Aadsts.oboAssertionInvalid('The assertion is not a user token.');
  // The assertion must be for the middle tier; for an agent identity, for its blueprint (§5.4).
  const audienceApp = client.app.blueprintId ? core.findApp(client.app.blueprintId) : client.app;
  const accepted = [audienceApp?.appId ?? '', ...(audienceApp?.identifierUris ?? [])].map((a) => a.toLowerCase());
  if (typeof p.aud !== 'string' || !accepted.includes(p.aud.toLowerCase())) throw Aadsts.oboAssertionAudience(String(p.aud), audienceApp?.appId ?? '');
  const scopes = resolveUserScopes(core, tenant, form.scope);
  const oid = String(p.oid);
  const known = core.findUser(oid);
  const user = known
    ? { oid: known.oid, upn: known.upn, name: known.name }
    : { oid, upn: String(p.preferred_username ?? p.upn ?? p.unique_name ?? oid), name: String(p.name ?? '') };
  const consented = consentedScopes(core, tenant, client.app.appId, scopes, user.oid);
  if (!audienceApp?.allowOnBehalfOf) throw Aadsts.oboNotAllowed(client.app.appId);
  const extra = client.app.blueprintId ? agentClaims(client.app, undefined) : undefined;
  return userPlan(core, tenant, client, scopes, consented, user, extra);
}

async function userFic(core: EmulatorCore, tenant: TenantRecord, client: AuthenticatedClient, form: Record<string, string>, t2: string | undefined, t2Param: string): Promise<TokenPlan> {
  if (!client.app.blueprintId || client.method !== 'agent') {
    throw Aadsts.agentGrantBarred('The user_fic grant is only available to agent identities authenticated with a token from their blueprint.');
  }
  if (!t2) throw Aadsts.missingParameter(t2Param);
  const verified = await core.verifyIssuedToken(t2);
  if (!verified.ok) throw Aadsts.oboAssertionInvalid(verified.reason);
  const p = verified.payload;
  const now = core.nowSec();
  if (typeof p.exp !== 'number' || p.exp <= now) throw Aadsts.oboAssertionExpired();
  const issuedTo = String(p.azp ?? p.appid ?? '').toLowerCase();
  const aud = String(p.aud).toLowerCase();
  if (isUserToken(p) || issuedTo !== client.app.appId.toLowerCase() || (aud !== WELL_KNOWN_APP_IDS.tokenExchange && aud !== 'api://azureadtokenexchange')) {
    throw Aadsts.oboAssertionInvalid('The user federated identity credential is not an exchange token issued to this agent identity.');
  }
  const username = form.username;
  const userId = form.user_id;
  if ((username && userId) || (!username && !userId)) throw Aadsts.missingParameter('username');
  const ref = (username ?? userId) as string;
  const wanted = ref.toLowerCase();
  const user = Object.values(core.scenario.users).find((u) => (username ? u.upn.toLowerCase() : u.oid.toLowerCase()) === wanted);
  if (!user || user.tenant !== tenant.id) throw Aadsts.userNotFound(ref);
  if ((user.agentIdentityId ?? '').toLowerCase() !== client.app.appId.toLowerCase()) throw Aadsts.notAgentUser(ref, client.app.appId);
  const scopes = resolveUserScopes(core, tenant, form.scope);
  const consented = consentedScopes(core, tenant, client.app.appId, scopes, user.oid);
  return userPlan(core, tenant, client, scopes, consented, { oid: user.oid, upn: user.upn, name: user.name }, agentClaims(client.app, '13'));
}

function refreshGrant(core: EmulatorCore, tenant: TenantRecord, client: AuthenticatedClient, form: Record<string, string>): TokenPlan {
  const rt = form.refresh_token;
  if (!rt) throw Aadsts.missingParameter('refresh_token');
  if (!REFRESH_TOKEN_RE.test(rt)) throw Aadsts.refreshTokenMalformed();
  const grant = core.refreshTokens.get(rt);
  if (!grant || grant.tenantId !== tenant.id) throw Aadsts.refreshTokenRevoked();
  if (grant.clientAppId.toLowerCase() !== client.app.appId.toLowerCase()) throw Aadsts.refreshTokenWrongClient();
  if (core.nowSec() - grant.issuedAt > core.scenario.refreshTokenLifetimeSec) throw Aadsts.refreshTokenExpired();
  const scopes = resolveUserScopes(core, tenant, form.scope);
  const consented = consentedScopes(core, tenant, client.app.appId, scopes, grant.user.oid);
  // Redeeming does not revoke (Entra's refresh tokens stay valid until they expire or are revoked):
  // concurrent redemptions of one token all succeed. The reply carries a new one as well.
  const plan = userPlan(core, tenant, client, scopes, consented, grant.user, grant.extra);
  plan.offlineAccess = true;
  return plan;
}

/** .NET `Guid.ToByteArray()` order: the first three groups little-endian (FMI subject paths, §5.1). */
function guidBytes(guid: string): Buffer {
  const hex = guid.replace(/-/g, '');
  const b = Buffer.from(hex, 'hex');
  return Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8)]);
}
