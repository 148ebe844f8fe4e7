/**
 * The emulator's mutable state and the operations every route shares: tenant/app/user lookup,
 * signing keys and rotation, the clock, token minting (§9.4), JWE (§3.4), verification of
 * emulator-issued tokens, faults, counters and the redacted request log.
 */
import { createHash, createPublicKey, randomBytes, randomUUID, timingSafeEqual, verify as cryptoVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { CompactEncrypt } from 'jose';
import { certify, describeCertificate, generateRsaKey, generateRsaKeySync, b64url } from './pki.js';
import type { CertifiedKey } from './pki.js';
import { signJws, decodeJws, isObject } from './jwt.js';
import type { JwtPayload, JwsSigner } from './jwt.js';
import type { AppRegistration, CertificateCredential, EmulatorScenario, ManagedIdentity, TenantRecord, UserAccount } from './scenario.js';
import type { ConditionalAccessSpec, EmulatorRoute, FaultSpec, RecordedRequest } from './types.js';

/** A token-signing key as published in the JWKS (§1.4). */
export interface SigningKey {
  kid: string;
  material: CertifiedKey;
}

/** A resolved `{tenant}` path segment. */
export type TenantResolution =
  | { kind: 'tenant'; tenant: TenantRecord }
  | { kind: 'meta'; name: 'common' | 'organizations' | 'consumers' }
  | { kind: 'unknown'; segment: string }
  | { kind: 'malformed'; segment: string };

/** Who is calling the token endpoint, after client authentication. */
export interface AuthenticatedClient {
  app: AppRegistration;
  /** appidacr/azpacr: "1" secret, "2" certificate or assertion. */
  acr: '1' | '2';
  method: 'secret' | 'certificate' | 'federated' | 'agent';
}

/** What to put in an access token (§9.4). */
export interface AccessTokenSpec {
  tenantId: string;
  /** Registered resource, or undefined for an arbitrary audience (mint only). */
  resource?: AppRegistration;
  /** v1 `aud`: the identifier the client used. */
  audience: string;
  version: 1 | 2;
  kind: 'app' | 'user';
  clientAppId: string;
  /** Object id of the calling principal (app tokens: the SP / MI; used as `oid` and `sub`). */
  clientObjectId: string;
  acr: '0' | '1' | '2';
  user?: { oid: string; upn: string; name: string };
  scp?: string;
  roles?: string[];
  extra?: Record<string, unknown>;
  lifetimeSec: number;
  /** Override iat/nbf/exp (mint). */
  iat?: number;
  nbf?: number;
  exp?: number;
}

/** An issued refresh token's binding (§9.3 refresh_token). */
export interface RefreshGrant {
  clientAppId: string;
  user: { oid: string; upn: string; name: string };
  tenantId: string;
  issuedAt: number;
  extra?: Record<string, unknown>;
}

interface ActiveFault {
  spec: FaultSpec;
  remaining: number;
}

/** Fields redacted in the request log (values replaced by a fingerprint). */
const SECRET_FIELDS = new Set([
  'client_secret', 'client_assertion', 'assertion', 'refresh_token', 'user_federated_identity_credential',
  'code', 'password', 'access_token', 'id_token', 'token',
]);
const SECRET_HEADERS = new Set(['authorization', 'x-identity-header', 'secret', 'cookie']);

/** `sha256:xxxxxxxx`: the first 8 hex chars of SHA-256, so tests can tell which secret was sent. */
export function redactionFingerprint(value: string): string {
  return 'sha256:' + createHash('sha256').update(value).digest('hex').slice(0, 8);
}

function redact(value: string): string {
  return `[redacted] ${redactionFingerprint(value)}`;
}

const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DOMAIN_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/i;

/** What a Graph-style token's signature covers in place of its `nonce` header (§1.4). */
function graphNonceDigest(nonce: string): string {
  return createHash('sha256').update(nonce, 'utf8').digest('hex');
}

/** A stable, GUID-shaped object id for `appId`'s service principal in another tenant. */
function derivedServicePrincipalId(appId: string, tenantId: string): string {
  const h = createHash('sha256').update(`sp|${appId.toLowerCase()}|${tenantId.toLowerCase()}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** Process-wide cache of generated key material so repeated emulator starts stay fast. */
const materialCache = new Map<string, Promise<CertifiedKey>>();

/** Generated (memoised) or described material for a name. */
export function materialFor(cacheKey: string, commonName: string, provided?: { certPem?: string; keyPem?: string }): Promise<CertifiedKey> {
  if (provided?.certPem && provided.keyPem) return Promise.resolve(describeCertificate(provided.certPem, provided.keyPem));
  let pending = materialCache.get(cacheKey);
  if (!pending) {
    pending = generateRsaKey().then((key) => certify(key, { commonName }));
    materialCache.set(cacheKey, pending);
  }
  return pending;
}

/** The emulator's state. Routes receive it; only index.ts creates it. */
/** Refresh tokens the emulator remembers (oldest forgotten first). */
const MAX_REFRESH_TOKENS = 100_000;

export class EmulatorCore {
  origin = '';
  readonly scenario: EmulatorScenario;
  readonly tokenLifetimeSec: number;
  signingKeys: SigningKey[] = [];
  activeKid = '';
  unknownKey?: CertifiedKey;
  /** Certificates by `${appId}:${name}` (lower-case app id). */
  readonly certificates = new Map<string, CertifiedKey>();
  readonly encryptionCertificates = new Map<string, CertifiedKey>();
  readonly issuerKeys = new Map<string, { key: KeyObject; publicKey: KeyObject; kid: string }>();
  readonly refreshTokens = new Map<string, RefreshGrant>();
  private clockOffsetSec = 0;
  private faults: ActiveFault[] = [];
  private unsatisfied?: { acrs: Set<string>; users?: Set<string> };
  private counterMap = new Map<string, number>();
  private log: RecordedRequest[] = [];

  constructor(scenario: EmulatorScenario, tokenLifetimeSec: number) {
    this.scenario = scenario;
    this.tokenLifetimeSec = tokenLifetimeSec;
  }

  // ---------------------------------------------------------------- clock

  /** Emulator time in epoch seconds (real time plus the test offset). */
  nowSec(): number {
    return Math.floor(Date.now() / 1000) + this.clockOffsetSec;
  }

  nowDate(): Date {
    return new Date(this.nowSec() * 1000);
  }

  setClockOffset(seconds: number): void {
    this.clockOffsetSec = Math.trunc(seconds);
  }

  // ---------------------------------------------------------------- keys

  /** Adds a signing key and makes it active. */
  addSigningKey(material: CertifiedKey, makeActive: boolean): void {
    this.signingKeys.push({ kid: material.x5t, material });
    if (makeActive) this.activeKid = material.x5t;
  }

  activeKey(): SigningKey {
    const key = this.signingKeys.find((k) => k.kid === this.activeKid);
    if (!key) throw new Error('no active signing key');
    return key;
  }

  /** Rotation: new active key; old keys stay published unless dropOld. */
  rotateKeys(dropOld = false): void {
    const material = certify(generateRsaKeySync(), { commonName: 'emulator token signing' });
    if (dropOld) this.signingKeys = [];
    this.addSigningKey(material, true);
  }

  // ---------------------------------------------------------------- issuers

  v2Issuer(tenantId: string): string {
    return `${this.origin}/${tenantId}/v2.0`;
  }

  v1Issuer(tenantId: string): string {
    return `${this.origin}/${tenantId}/`;
  }

  /** The scenario tenant an emulator issuer names (either version), if any. */
  tenantOfIssuer(iss: unknown): { tenant: TenantRecord; version: 1 | 2 } | undefined {
    if (typeof iss !== 'string') return undefined;
    for (const tenant of this.tenants()) {
      if (iss === this.v2Issuer(tenant.id)) return { tenant, version: 2 };
      if (iss === this.v1Issuer(tenant.id)) return { tenant, version: 1 };
    }
    return undefined;
  }

  // ---------------------------------------------------------------- lookups

  tenants(): TenantRecord[] {
    return Object.values(this.scenario.tenants);
  }

  /** Resolves a `{tenant}` path segment (GUID, domain, or meta-tenant), case-insensitively (§1.1). */
  resolveTenant(segment: string): TenantResolution {
    const s = segment.toLowerCase();
    if (s === 'common' || s === 'organizations' || s === 'consumers') return { kind: 'meta', name: s };
    if (GUID_RE.test(s)) {
      const tenant = this.tenants().find((t) => t.id.toLowerCase() === s);
      return tenant ? { kind: 'tenant', tenant } : { kind: 'unknown', segment };
    }
    if (DOMAIN_RE.test(s)) {
      const tenant = this.tenants().find((t) => t.domains.some((d) => d.toLowerCase() === s));
      return tenant ? { kind: 'tenant', tenant } : { kind: 'unknown', segment };
    }
    return { kind: 'malformed', segment };
  }

  /** Tenant by id, domain or scenario key. */
  findTenant(ref: string): TenantRecord | undefined {
    const byKey = this.scenario.tenants[ref];
    if (byKey) return byKey;
    const r = this.resolveTenant(ref);
    return r.kind === 'tenant' ? r.tenant : undefined;
  }

  apps(): Array<[string, AppRegistration]> {
    return Object.entries(this.scenario.apps);
  }

  /** Scenario key of an app object. */
  appKey(app: AppRegistration): string {
    return this.apps().find(([, a]) => a === app)?.[0] ?? app.appId;
  }

  /** App whose service principal exists in `tenantId` (home tenant or multi-tenant). */
  findAppInTenant(appId: string, tenantId: string): AppRegistration | undefined {
    const app = this.findApp(appId);
    if (!app) return undefined;
    return app.tenant === tenantId || app.multiTenant ? app : undefined;
  }

  /** App by app id or scenario key (any tenant). */
  findApp(ref: string): AppRegistration | undefined {
    const byKey = this.scenario.apps[ref];
    if (byKey) return byKey;
    const id = ref.toLowerCase();
    return this.apps().find(([, a]) => a.appId.toLowerCase() === id)?.[1];
  }

  /** Resource by app id or identifier URI (case-insensitive, trailing slash ignored). */
  findResource(identifier: string, tenantId: string): AppRegistration | undefined {
    const id = identifier.toLowerCase().replace(/\/+$/, '');
    for (const [, app] of this.apps()) {
      if (app.tenant !== tenantId && !app.multiTenant) continue;
      if (app.appId.toLowerCase() === id) return app;
      if (app.identifierUris.some((u) => u.toLowerCase().replace(/\/+$/, '') === id)) return app;
    }
    return undefined;
  }

  /** User by UPN, oid or scenario key. */
  findUser(ref: string): UserAccount | undefined {
    const byKey = this.scenario.users[ref];
    if (byKey) return byKey;
    const r = ref.toLowerCase();
    return Object.values(this.scenario.users).find((u) => u.oid.toLowerCase() === r || u.upn.toLowerCase() === r);
  }

  managedIdentities(): ManagedIdentity[] {
    return Object.values(this.scenario.managedIdentities);
  }

  findManagedIdentityByClientId(clientId: string): ManagedIdentity | undefined {
    const c = clientId.toLowerCase();
    return this.managedIdentities().find((m) => m.clientId.toLowerCase() === c);
  }

  /**
   * Object id of `app`'s service principal in `tenantId`: every tenant that has a service principal
   * of a multi-tenant app has its own, so its own `oid` (§9.1). The home tenant's is
   * `servicePrincipalId`; another tenant's comes from `servicePrincipalIds`, else is derived from
   * (appId, tenant) so it is stable across runs.
   */
  servicePrincipalIdIn(app: AppRegistration, tenantId: string): string {
    if (tenantId.toLowerCase() === app.tenant.toLowerCase()) return app.servicePrincipalId;
    return app.servicePrincipalIds?.[tenantId] ?? derivedServicePrincipalId(app.appId, tenantId);
  }

  /**
   * The tenant a grant lives in. Consent is an object of the tenant that gave it, so it counts there
   * only. Default: the client's home tenant (a managed identity's tenant), or the resource's home
   * tenant when the resource has no service principal in the client's (a multi-tenant client
   * calling a single-tenant API: the API's tenant is the only one where both exist).
   */
  private grantTenant(g: { client: string; resource: string; tenant?: string }): string | undefined {
    if (g.tenant !== undefined) return this.findTenant(g.tenant)?.id ?? g.tenant;
    const clientHome = this.findApp(g.client)?.tenant ?? this.findManagedIdentityByClientId(g.client)?.tenant;
    const resource = this.findApp(g.resource);
    if (clientHome !== undefined && (!resource || resource.multiTenant || resource.tenant === clientHome)) return clientHome;
    return resource?.tenant ?? clientHome;
  }

  private grantApplies(g: { client: string; resource: string; tenant?: string }, clientId: string, resourceAppId: string, tenantId: string): boolean {
    return g.client.toLowerCase() === clientId.toLowerCase()
      && g.resource.toLowerCase() === resourceAppId.toLowerCase()
      && (this.grantTenant(g) ?? '').toLowerCase() === tenantId.toLowerCase();
  }

  /** App roles granted in `tenantId` to `clientId` (app id or MI client id) on `resourceAppId`. */
  grantedRoles(clientId: string, resourceAppId: string, tenantId: string): string[] {
    const roles = new Set<string>();
    for (const g of this.scenario.grants.appRoles) {
      if (this.grantApplies(g, clientId, resourceAppId, tenantId)) for (const r of g.roles) roles.add(r);
    }
    return [...roles];
  }

  /** Delegated scopes consented in `tenantId` for `clientId` on `resourceAppId` (tenant-wide or for `userOid`). */
  grantedScopes(clientId: string, resourceAppId: string, tenantId: string, userOid?: string): string[] {
    const scopes = new Set<string>();
    for (const g of this.scenario.grants.delegated) {
      if (!this.grantApplies(g, clientId, resourceAppId, tenantId)) continue;
      if (g.user && g.user.toLowerCase() !== (userOid ?? '').toLowerCase()) continue;
      for (const s of g.scopes) scopes.add(s);
    }
    return [...scopes];
  }

  /** Registered, unexpired secret check (constant time). */
  checkSecret(app: AppRegistration, presented: string): 'ok' | 'wrong' | 'expired' {
    const digest = (v: string): Buffer => createHash('sha256').update(v, 'utf8').digest();
    const presentedDigest = digest(presented);
    let expiredMatch = false;
    for (const s of app.secrets) {
      if (timingSafeEqual(presentedDigest, digest(s.value))) {
        if (s.notAfter && Date.parse(s.notAfter) / 1000 <= this.nowSec()) expiredMatch = true;
        else return 'ok';
      }
    }
    return expiredMatch ? 'expired' : 'wrong';
  }

  /** Certificates registered on an app (with notAfter from the scenario, if any). */
  appCertificates(app: AppRegistration): Array<{ credential: CertificateCredential; material: CertifiedKey }> {
    const out: Array<{ credential: CertificateCredential; material: CertifiedKey }> = [];
    for (const credential of app.certificates) {
      const material = this.certificates.get(`${app.appId.toLowerCase()}:${credential.name}`);
      if (material) out.push({ credential, material });
    }
    return out;
  }

  // ---------------------------------------------------------------- minting

  /** Random opaque value like Entra's `aio`/`rh`/`uti`. */
  opaque(bytes: number): string {
    return b64url(randomBytes(bytes));
  }

  /** Builds the claims of an access token per §9.4. */
  accessTokenClaims(spec: AccessTokenSpec): JwtPayload {
    const now = this.nowSec();
    const iat = spec.iat ?? now;
    const claims: JwtPayload = {
      aud: spec.version === 1 ? spec.audience : (spec.resource?.appId ?? spec.audience),
      iss: spec.version === 1 ? this.v1Issuer(spec.tenantId) : this.v2Issuer(spec.tenantId),
      iat,
      nbf: spec.nbf ?? iat,
      exp: spec.exp ?? iat + spec.lifetimeSec,
      aio: this.opaque(48),
    };
    if (spec.version === 1) {
      claims.appid = spec.clientAppId;
      claims.appidacr = spec.acr;
      claims.idp = this.v1Issuer(spec.tenantId);
    } else {
      claims.azp = spec.clientAppId;
      claims.azpacr = spec.acr;
    }
    if (spec.kind === 'user' && spec.user) {
      const u = spec.user;
      claims.oid = u.oid;
      claims.sub = b64url(createHash('sha256').update(`${u.oid}|${spec.resource?.appId ?? spec.audience}`).digest()).slice(0, 43);
      claims.name = u.name;
      if (spec.version === 1) {
        claims.amr = ['pwd'];
        claims.upn = u.upn;
        claims.unique_name = u.upn;
        const [given, ...rest] = u.name.split(' ');
        claims.given_name = given;
        if (rest.length) claims.family_name = rest.join(' ');
        claims.ipaddr = '127.0.0.1';
      } else {
        claims.preferred_username = u.upn;
      }
      claims.scp = spec.scp ?? '';
      if (spec.roles && spec.roles.length) claims.roles = spec.roles;
      claims.idtyp = 'user';
    } else {
      claims.oid = spec.clientObjectId;
      claims.sub = spec.clientObjectId;
      if (spec.roles && spec.roles.length) claims.roles = spec.roles;
      claims.idtyp = 'app';
    }
    claims.rh = `1.${this.opaque(40)}.`;
    claims.tid = spec.tenantId;
    claims.uti = this.opaque(16);
    claims.ver = spec.version === 1 ? '1.0' : '2.0';
    if (spec.extra) Object.assign(claims, spec.extra);
    return claims;
  }

  /**
   * Signs claims with the active key; v1 headers carry `x5t` + `kid`, v2 only `kid` (§1.4). With
   * `nonce` (APIs with `nonceHeader`: Microsoft Graph) the token is made unverifiable the way
   * Graph's are (see signWithNonce).
   */
  signAccessToken(claims: JwtPayload, version: 1 | 2, nonce = false): string {
    const key = this.activeKey();
    const header = version === 1 ? { typ: 'JWT', alg: 'RS256', x5t: key.kid, kid: key.kid } : { typ: 'JWT', alg: 'RS256', kid: key.kid };
    const signer: JwsSigner = { alg: 'RS256', key: key.material.privateKey };
    return nonce ? this.signWithNonce(header, claims, signer) : signJws(header, claims, signer);
  }

  /**
   * A Graph-style token (§1.4, §9.4): the published header carries a random `nonce`, the signature
   * covers the same header with the nonce's SHA-256 (hex) in its place. A standard JWS verifier
   * fails on it, as on a real Graph token, which is meant for Graph alone.
   */
  signWithNonce(header: Record<string, unknown>, claims: JwtPayload | string, signer: JwsSigner): string {
    const nonce = this.opaque(32);
    const [, payload, signature] = signJws({ ...header, nonce: graphNonceDigest(nonce) }, claims, signer).split('.');
    return `${b64url(JSON.stringify({ alg: signer.alg, ...header, nonce }))}.${payload}.${signature}`;
  }

  /** Signs with an explicit signer and header (mint's broken-token variants). */
  signWith(header: Record<string, unknown>, claims: JwtPayload | string, signer: JwsSigner): string {
    return signJws(header, claims, signer);
  }

  /** Wraps a signed token as JWE for `encryptionCert` (§3.4: RSA-OAEP + A256CBC-HS512, cty JWT). */
  async encryptToken(signed: string, encryptionCert: CertifiedKey): Promise<string> {
    return new CompactEncrypt(Buffer.from(signed, 'utf8'))
      .setProtectedHeader({
        alg: 'RSA-OAEP',
        enc: 'A256CBC-HS512',
        kid: encryptionCert.thumbprintSha1,
        x5t: encryptionCert.x5t,
        cty: 'JWT',
        typ: 'JWT',
      })
      .encrypt(encryptionCert.publicKey);
  }

  /** Encryption certificate of an app, if it has one. */
  encryptionCertificateOf(app: AppRegistration | undefined): CertifiedKey | undefined {
    if (!app) return undefined;
    return this.encryptionCertificates.get(app.appId.toLowerCase());
  }

  /** Finishes an access token: sign, and encrypt when the resource asks for it. */
  async finishAccessToken(spec: AccessTokenSpec, claims: JwtPayload): Promise<string> {
    const signed = this.signAccessToken(claims, spec.version, spec.resource?.nonceHeader === true);
    const enc = spec.resource?.encryptTokens ? this.encryptionCertificateOf(spec.resource) : undefined;
    return enc ? this.encryptToken(signed, enc) : signed;
  }

  /** A v2 id token for user flows with `openid`. */
  idToken(tenantId: string, clientAppId: string, user: { oid: string; upn: string; name: string }): string {
    const now = this.nowSec();
    const claims: JwtPayload = {
      aud: clientAppId,
      iss: this.v2Issuer(tenantId),
      iat: now,
      nbf: now,
      exp: now + 3600,
      name: user.name,
      oid: user.oid,
      preferred_username: user.upn,
      rh: `1.${this.opaque(40)}.`,
      sub: b64url(createHash('sha256').update(`${user.oid}|${clientAppId}`).digest()).slice(0, 43),
      tid: tenantId,
      uti: this.opaque(16),
      ver: '2.0',
    };
    return this.signAccessToken(claims, 2);
  }

  /** Issues an opaque refresh token bound to (client, user, tenant). */
  issueRefreshToken(grant: Omit<RefreshGrant, 'issuedAt'>): string {
    const token = `1.emu.${b64url(randomBytes(48))}`;
    // Redeeming one does not revoke it (as in Entra), and every token reply issues a new one: keep the
    // newest 100,000 so a long benchmark or soak cannot grow the emulator without bound.
    if (this.refreshTokens.size >= MAX_REFRESH_TOKENS) this.refreshTokens.delete(this.refreshTokens.keys().next().value!);
    this.refreshTokens.set(token, { ...grant, issuedAt: this.nowSec() });
    return token;
  }

  // ---------------------------------------------------------------- verification

  /**
   * Verifies a token the emulator issued: RS256 with a published key and an emulator issuer.
   * Lifetime is checked by the caller. A JWE is refused: Entra holds only the public half of an
   * API's token-encryption certificate, so it cannot read an encrypted token it issued (§3.4);
   * the API decrypts it and presents the inner, signed token (as Microsoft.Identity.Web does).
   */
  async verifyIssuedToken(token: string): Promise<{ ok: true; payload: JwtPayload; tenant: TenantRecord; version: 1 | 2 } | { ok: false; reason: string }> {
    if (token.split('.').length === 5) return { ok: false, reason: 'The token is encrypted (JWE); present the decrypted, signed token.' };
    const decoded = decodeJws(token);
    if (!decoded) return { ok: false, reason: 'The token is not a well-formed JWS.' };
    if (decoded.header.alg !== 'RS256') return { ok: false, reason: 'Unsupported signing algorithm.' };
    const key = this.signingKeys.find((k) => k.kid === decoded.header.kid);
    if (!key) return { ok: false, reason: 'The signing key is not known.' };
    const [published, p, s] = token.split('.');
    // Entra can verify its own Graph-style tokens: the signature covers the nonce's digest.
    const nonce = decoded.header.nonce;
    const h = typeof nonce === 'string' ? b64url(JSON.stringify({ ...decoded.header, nonce: graphNonceDigest(nonce) })) : published;
    const valid = cryptoVerify('sha256', Buffer.from(`${h}.${p}`), key.material.publicKey, Buffer.from(s, 'base64url'));
    if (!valid) return { ok: false, reason: 'The signature is not valid.' };
    const issuer = this.tenantOfIssuer(decoded.payload.iss);
    if (!issuer) return { ok: false, reason: 'The issuer is not trusted.' };
    return { ok: true, payload: decoded.payload, tenant: issuer.tenant, version: issuer.version };
  }

  /** Verifies an RS256/PS256 compact JWS against a public key. */
  verifyJwsSignature(token: string, alg: string, publicKey: KeyObject): boolean {
    const parts = token.split('.');
    if (parts.length !== 3) return false;
    const data = Buffer.from(`${parts[0]}.${parts[1]}`);
    const sig = Buffer.from(parts[2], 'base64url');
    try {
      if (alg === 'RS256') return cryptoVerify('sha256', data, publicKey, sig);
      if (alg === 'PS256') return cryptoVerify('sha256', data, { key: publicKey, padding: 6, saltLength: 32 }, sig);
    } catch {
      return false;
    }
    return false;
  }

  /** Public key of an external federated issuer (e.g. the fake Kubernetes issuer). */
  externalIssuerKey(iss: unknown): KeyObject | undefined {
    if (typeof iss !== 'string') return undefined;
    return this.issuerKeys.get(iss)?.publicKey;
  }

  /** Signs a token as an external issuer. */
  signAsExternalIssuer(issuer: string, claims: JwtPayload): string {
    const k = this.issuerKeys.get(issuer);
    if (!k) throw new Error(`unknown federated issuer ${issuer}`);
    return signJws({ typ: 'JWT', kid: k.kid }, claims, { alg: 'RS256', key: k.key });
  }

  // ---------------------------------------------------------------- faults, counters, log

  addFault(spec: FaultSpec): void {
    const remaining = spec.sticky ? Number.POSITIVE_INFINITY : Math.max(1, spec.count ?? 1);
    this.faults.push({ spec, remaining });
  }

  clearFaults(): void {
    this.faults = [];
  }

  /** Consumes and returns the first fault matching this request. */
  takeFault(route: EmulatorRoute, ctx: { tenant?: string; grantType?: string; clientId?: string }): FaultSpec | undefined {
    for (const f of this.faults) {
      const s = f.spec;
      if (s.route !== 'any' && s.route !== route) continue;
      if (s.tenant && s.tenant.toLowerCase() !== (ctx.tenant ?? '').toLowerCase()) continue;
      if (s.grant_type && s.grant_type !== ctx.grantType) continue;
      if (s.client_id && s.client_id.toLowerCase() !== (ctx.clientId ?? '').toLowerCase()) continue;
      f.remaining -= 1;
      if (f.remaining <= 0) this.faults = this.faults.filter((x) => x !== f);
      return s;
    }
    return undefined;
  }

  /** Replaces the Conditional Access state (§2.5); without `unsatisfiedAcrs` values it is cleared. */
  setConditionalAccess(spec: ConditionalAccessSpec | undefined): void {
    if (!spec?.unsatisfiedAcrs?.length) {
      this.unsatisfied = undefined;
      return;
    }
    const users = spec.users?.map((ref) => (this.findUser(ref)?.oid ?? ref).toLowerCase());
    this.unsatisfied = { acrs: new Set(spec.unsatisfiedAcrs), ...(users ? { users: new Set(users) } : {}) };
  }

  /** Authentication contexts among `acrs` that the user has not satisfied. */
  unsatisfiedAuthContexts(userOid: string, acrs: string[]): string[] {
    const ca = this.unsatisfied;
    if (!ca || (ca.users && !ca.users.has(userOid.toLowerCase()))) return [];
    return acrs.filter((v) => ca.acrs.has(v));
  }

  count(key: string): void {
    this.counterMap.set(key, (this.counterMap.get(key) ?? 0) + 1);
  }

  counters(): Record<string, number> {
    const out: Record<string, number> = { instance: 0, metadata: 0, jwks: 0, token: 0, imds: 0, appservice: 0, keyvault: 0 };
    for (const [k, v] of this.counterMap) out[k] = v;
    return out;
  }

  /** Appends a redacted entry to the request log; returns it so the status can be filled in. */
  record(route: EmulatorRoute, method: string, url: URL, headers: Record<string, string | string[] | undefined>, form: Record<string, string>): RecordedRequest {
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = SECRET_FIELDS.has(k) ? redact(v) : v;
    const redactedForm: Record<string, string> = {};
    for (const [k, v] of Object.entries(form)) redactedForm[k] = SECRET_FIELDS.has(k) ? redact(v) : v;
    const redactedHeaders: Record<string, string> = {};
    for (const [k, v] of Object.entries(headers)) {
      if (v === undefined) continue;
      const value = Array.isArray(v) ? v.join(', ') : v;
      redactedHeaders[k] = SECRET_HEADERS.has(k.toLowerCase()) ? redact(value) : value;
    }
    const entry: RecordedRequest = { route, method, path: url.pathname, query, form: redactedForm, headers: redactedHeaders, status: 0, at: new Date().toISOString() };
    this.log.push(entry);
    if (this.log.length > 10_000) this.log.shift();
    return entry;
  }

  requests(): RecordedRequest[] {
    return this.log.map((r) => ({ ...r, query: { ...r.query }, form: { ...r.form }, headers: { ...r.headers } }));
  }

  reset(): void {
    this.counterMap.clear();
    this.log = [];
    this.faults = [];
    this.unsatisfied = undefined;
    this.clockOffsetSec = 0;
  }

  newRequestId(): string {
    return randomUUID();
  }
}

/** Parses the `req_cnf` PoP parameter (§6.1): base64url JSON object with a string `kid`. */
export function parseReqCnf(value: string): Record<string, unknown> | undefined {
  try {
    const parsed = JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as unknown;
    if (isObject(parsed) && typeof parsed.kid === 'string' && parsed.kid.length > 0) return parsed;
  } catch {
    return undefined;
  }
  return undefined;
}

/** Public key of a PEM certificate or key. */
export function publicKeyOf(pem: string): KeyObject {
  return createPublicKey(pem);
}
