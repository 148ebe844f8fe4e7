/**
 * Test-only token minting (the admin API's `POST /_emulator/tokens` and `Emulator.mint`): tokens
 * as if Entra issued them, and the broken variants a validator must reject.
 */
import { createPublicKey } from 'node:crypto';
import type { AccessTokenSpec, EmulatorCore } from './core.js';
import { materialFor } from './core.js';
import type { JwsSigner } from './jwt.js';
import type { MintRequest } from './types.js';
import type { AppRegistration } from './scenario.js';

/** Mints a compact token (JWS, or JWE with `encrypt`). Throws Error on unknown tenant/user/client. */
export async function mintToken(core: EmulatorCore, req: MintRequest): Promise<string> {
  if (req.kind !== 'user' && req.kind !== 'app') throw new Error("mint: kind must be 'user' or 'app'");
  const tenant = req.tenant ? core.findTenant(req.tenant) : core.scenario.tenants.primary;
  if (!tenant) throw new Error(`mint: unknown tenant ${req.tenant}`);
  const audienceRef = req.audience ?? core.scenario.apps.sidecarApi.appId;
  const resource: AppRegistration | undefined = core.findApp(audienceRef) ?? core.findResource(audienceRef, tenant.id);
  const version = req.version ?? resource?.accessTokenAcceptedVersion ?? 2;
  // v1 `aud` is the identifier asked for: the given value, or the first identifier URI by default.
  const audience = req.audience ?? resource?.identifierUris[0] ?? audienceRef;

  const clientRef = req.client ?? core.scenario.apps.clientApp.appId;
  const clientApp = core.findApp(clientRef);
  const mi = clientApp ? undefined : core.findManagedIdentityByClientId(clientRef);
  if (!clientApp && !mi) throw new Error(`mint: unknown client ${clientRef}`);
  const clientAppId = clientApp?.appId ?? (mi?.clientId as string);
  const clientObjectId = clientApp ? core.servicePrincipalIdIn(clientApp, tenant.id) : (mi?.objectId as string);

  const spec: AccessTokenSpec = {
    tenantId: tenant.id,
    resource,
    audience: version === 2 && resource ? resource.appId : audience,
    version,
    kind: req.kind,
    clientAppId,
    clientObjectId,
    acr: '1',
    lifetimeSec: core.tokenLifetimeSec,
  };
  if (version === 1) spec.audience = audience;

  if (req.kind === 'user') {
    const user = core.findUser(req.user ?? 'normal');
    if (!user) throw new Error(`mint: unknown user ${req.user}`);
    spec.user = { oid: user.oid, upn: user.upn, name: user.name };
    let scp = req.scp;
    if (scp === undefined && resource) {
      const granted = core.grantedScopes(clientAppId, resource.appId, tenant.id, user.oid);
      scp = (granted.length ? granted : resource.scopes).join(' ');
    }
    spec.scp = scp ?? '';
    spec.roles = req.roles;
  } else {
    spec.roles = req.roles ?? (resource ? core.grantedRoles(clientAppId, resource.appId, tenant.id) : []);
  }

  const now = core.nowSec();
  if (req.expiresInSec !== undefined) {
    spec.exp = now + req.expiresInSec;
    spec.iat = req.expiresInSec > 0 ? now : spec.exp - core.tokenLifetimeSec;
    spec.nbf = spec.iat;
  }
  if (req.notBeforeOffsetSec !== undefined) {
    spec.iat = spec.iat ?? now;
    spec.nbf = now + req.notBeforeOffsetSec;
    if (spec.exp === undefined) spec.exp = spec.nbf + core.tokenLifetimeSec;
  }

  const claims = core.accessTokenClaims(spec);
  for (const [k, v] of Object.entries(req.claims ?? {})) {
    if (v === null) delete claims[k];
    else claims[k] = v;
  }

  const active = core.activeKey();
  const header: Record<string, unknown> = version === 1
    ? { typ: 'JWT', alg: 'RS256', x5t: active.kid, kid: active.kid }
    : { typ: 'JWT', alg: 'RS256', kid: active.kid };
  let signer: JwsSigner = { alg: 'RS256', key: active.material.privateKey };
  switch (req.signWith ?? 'active') {
    case 'active':
      break;
    case 'unknown-key': {
      const unknown = await materialFor('mint-unknown-key', 'unpublished key');
      header.kid = unknown.x5t;
      if (version === 1) header.x5t = unknown.x5t;
      signer = { alg: 'RS256', key: unknown.privateKey };
      break;
    }
    case 'none':
      header.alg = 'none';
      signer = { alg: 'none' };
      break;
    case 'hs256-public-key': {
      // The classic algorithm-confusion attack: HMAC keyed with the published public key (PEM).
      header.alg = 'HS256';
      const pem = createPublicKey(active.material.certPem).export({ type: 'spki', format: 'pem' }).toString();
      signer = { alg: 'HS256', secret: pem };
      break;
    }
    default:
      throw new Error(`mint: unknown signWith ${String(req.signWith)}`);
  }
  Object.assign(header, req.headerOverrides ?? {});
  // A Graph-audience token is unverifiable, as issued (§9.4), unless the test names its own nonce.
  const graphStyle = resource?.nonceHeader === true && (req.signWith ?? 'active') === 'active' && !('nonce' in header);
  const payload = withRawClaims(claims, req.rawClaims);
  const signed = graphStyle ? core.signWithNonce(header, payload, signer) : core.signWith(header, payload, signer);
  if (!req.encrypt) return signed;
  const enc = core.encryptionCertificateOf(resource) ?? core.encryptionCertificateOf(core.scenario.apps.sidecarApi);
  if (!enc) throw new Error('mint: no encryption certificate for this audience');
  return core.encryptToken(signed, enc);
}

/** The payload's JSON text with `raw` members appended as written (each must be a JSON value). */
function withRawClaims(claims: Record<string, unknown>, raw: Record<string, string> | undefined): Record<string, unknown> | string {
  if (raw === undefined || Object.keys(raw).length === 0) return claims;
  const members = Object.entries(raw).map(([k, v]) => {
    JSON.parse(v); // a typo in a test's raw claim fails here, not as a confusing validation error
    return `${JSON.stringify(k)}:${v}`;
  });
  const text = JSON.stringify(claims);
  return `${text.slice(0, -1)}${text === '{}' ? '' : ','}${members.join(',')}}`;
}
