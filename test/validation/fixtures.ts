/**
 * Fixtures for the validation tests: config builders shaped like the loader's output, a tiny
 * loopback OpenID metadata + JWKS server with throw-away keys, and a token minter.
 */
import { createHash, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, type JWTPayload } from 'jose';
import forge from 'node-forge';
import type { Dispatcher } from 'undici';
import type { AzureAdConfig, SidecarSettings } from '../../src/config/types.js';
import { createOutboundAgent } from '../../src/net/outbound.js';

export const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
export const OTHER_TENANT = '0b0c1d2e-3f40-4a5b-8c6d-7e8f9a0b1c2d';
export const CLIENT_ID = '6e74172b-be56-4843-9ff4-e66a39bb12e3';
/** The Microsoft-account tenant: Entra's `consumers` metadata names it as a concrete issuer (entra-protocol §3.3). */
export const MSA_TENANT = '9188040d-6c67-4c5b-b112-36a304b66dad';

/** An AzureAd section as the config loader would produce it. */
export function buildAzureAd(instance: string, overrides: Partial<AzureAdConfig> = {}): AzureAdConfig {
  const tenantId = overrides.tenantId ?? TENANT;
  return {
    instance,
    tenantId,
    clientId: CLIENT_ID,
    authority: `${instance}${tenantId}/v2.0`,
    validAudiences: [],
    validIssuers: [],
    clientCredentials: [],
    tokenDecryptionCredentials: [],
    sendX5C: false,
    clientCapabilities: [],
    allowWebApiToBeAuthorizedByACL: true,
    extraQueryParameters: {},
    ...overrides,
  };
}

/** `Sidecar:Validation` settings with the production defaults unless overridden. */
export function buildValidationSettings(overrides: Partial<SidecarSettings['validation']> = {}): SidecarSettings['validation'] {
  return { clockSkewSec: 300, signingKeysRefreshIntervalSec: 86_400, unknownKidCooldownSec: 300, verifiedTokenCacheSize: 1000, ...overrides };
}

/** A signing key the fake Entra publishes. */
export interface TestSigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly alg: 'RS256' | 'PS256' | 'ES256';
  /** JWKS `issuer` member; undefined = none; default = the v2 issuer template. */
  issuer?: string;
}

let rsaPool: { privateKey: KeyObject; publicKey: KeyObject }[] = [];
/** A fresh RSA 2048 key pair (a small pool is pre-generated to keep the suite fast). */
export function rsaKeyPair(): { privateKey: KeyObject; publicKey: KeyObject } {
  if (rsaPool.length === 0) rsaPool = Array.from({ length: 4 }, () => generateKeyPairSync('rsa', { modulusLength: 2048 }));
  return rsaPool.pop()!;
}

/** Creates a signing key; kid = base64url SHA-1 of the SPKI, like Entra's x5t-shaped kids. */
export function makeSigningKey(alg: TestSigningKey['alg'] = 'RS256', issuer?: string): TestSigningKey {
  const pair = alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) : rsaKeyPair();
  const kid = createHash('sha1').update(pair.publicKey.export({ type: 'spki', format: 'der' })).digest('base64url');
  return { kid, ...pair, alg, ...(issuer !== undefined ? { issuer } : {}) };
}

export interface FakeEntra {
  readonly origin: string;
  /** `{origin}/`, the AzureAd:Instance. */
  readonly instance: string;
  /** The issuers the metadata announces for a tenant path segment. */
  v2Issuer(tenant: string): string;
  v1Issuer(tenant: string): string;
  keys: TestSigningKey[];
  /** Whether a route answers 503 (simulates an outage). */
  down: boolean;
  /** Whether only the v1 metadata answers 503. */
  v1Down: boolean;
  readonly hits: { metadataV2: number; metadataV1: number; jwks: number };
  close(): Promise<void>;
}

const META_TENANTS = new Set(['common', 'organizations']);

/**
 * Starts a loopback fake of Entra's discovery endpoints: `/{t}/v2.0/.well-known/openid-configuration`,
 * `/{t}/.well-known/openid-configuration`, `/{t}/discovery/v2.0/keys`. common and organizations get
 * `{tenantid}`, consumers the Microsoft-account tenant.
 */
export async function startFakeEntra(initialKeys: TestSigningKey[] = [makeSigningKey()]): Promise<FakeEntra> {
  let origin = '';
  const tenantSegment = (t: string): string => (META_TENANTS.has(t) ? '{tenantid}' : t === 'consumers' ? MSA_TENANT : t);
  const state: FakeEntra = {
    get origin() {
      return origin;
    },
    get instance() {
      return origin + '/';
    },
    v2Issuer: (t) => `${origin}/${tenantSegment(t)}/v2.0`,
    v1Issuer: (t) => `${origin}/${tenantSegment(t)}/`,
    keys: initialKeys,
    down: false,
    v1Down: false,
    hits: { metadataV2: 0, metadataV1: 0, jwks: 0 },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const json = (res: ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify(body));
  };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', origin).pathname;
    const m = /^\/([^/]+)\/(v2\.0\/\.well-known\/openid-configuration|\.well-known\/openid-configuration|discovery\/v2\.0\/keys)$/.exec(path);
    if (!m) return json(res, 404, { error: 'not_found' });
    const [, tenant, route] = m;
    if (route.startsWith('v2.0')) state.hits.metadataV2++;
    else if (route.startsWith('.well-known')) state.hits.metadataV1++;
    else state.hits.jwks++;
    if (state.down || (state.v1Down && route.startsWith('.well-known'))) return json(res, 503, { error: 'temporarily_unavailable' });
    if (route.startsWith('v2.0')) return json(res, 200, { issuer: state.v2Issuer(tenant), jwks_uri: `${origin}/${tenant}/discovery/v2.0/keys`, token_endpoint: `${origin}/${tenant}/oauth2/v2.0/token` });
    if (route.startsWith('.well-known')) return json(res, 200, { issuer: state.v1Issuer(tenant), jwks_uri: `${origin}/${tenant}/discovery/keys` });
    const template = `${origin}/{tenantid}/v2.0`;
    return json(res, 200, {
      keys: state.keys.map((k) => ({
        ...(k.publicKey.export({ format: 'jwk' }) as object),
        use: 'sig',
        kid: k.kid,
        x5t: k.kid,
        ...('issuer' in k ? (k.issuer === undefined ? {} : { issuer: k.issuer }) : { issuer: template }),
      })),
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}

export interface MintOptions {
  readonly key: TestSigningKey;
  readonly claims?: JWTPayload & Record<string, unknown>;
  /** Extra/overriding protected header members. */
  readonly header?: Record<string, unknown>;
  readonly version?: '1.0' | '2.0';
  readonly tenant?: string;
  readonly issuer?: string;
  /** Seconds from now (the test clock). */
  readonly expiresIn?: number;
  readonly nowSec?: number;
}

/** Mints a token shaped like Entra's: v2 by default, audience = ClientId (v2) or api://ClientId (v1). */
export async function mint(entra: FakeEntra, opts: MintOptions): Promise<string> {
  const version = opts.version ?? '2.0';
  const tenant = opts.tenant ?? TENANT;
  const nowSec = opts.nowSec ?? Math.floor(Date.now() / 1000);
  const iss = opts.issuer ?? (version === '2.0' ? `${entra.origin}/${tenant}/v2.0` : `${entra.origin}/${tenant}/`);
  const payload: Record<string, unknown> = {
    aud: version === '2.0' ? CLIENT_ID : `api://${CLIENT_ID}`,
    iss,
    iat: nowSec,
    nbf: nowSec,
    exp: nowSec + (opts.expiresIn ?? 3600),
    tid: tenant,
    oid: '5d2f7b0a-0000-4000-8000-000000000001',
    sub: '5d2f7b0a-0000-4000-8000-000000000001',
    scp: 'access_as_user',
    ver: version,
    ...opts.claims,
  };
  for (const [k, v] of Object.entries(payload)) if (v === undefined) delete payload[k];
  const header: Record<string, unknown> = { typ: 'JWT', alg: opts.key.alg, kid: opts.key.kid, ...(version === '1.0' ? { x5t: opts.key.kid } : {}), ...opts.header };
  for (const [k, v] of Object.entries(header)) if (v === undefined) delete header[k];
  return new SignJWT(payload).setProtectedHeader(header as { alg: string }).sign(opts.key.privateKey);
}

/** Builds an unsigned-looking compact token from arbitrary header/payload/signature parts. */
export function rawToken(header: unknown, payload: unknown, signature = ''): string {
  const b = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${b(header)}.${b(payload)}.${signature}`;
}

/** Signs arbitrary header/payload with RS256 via node:crypto (for headers jose refuses to produce). */
export function signRs256(header: Record<string, unknown>, payload: Record<string, unknown>, privateKey: KeyObject): string {
  const b = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
  const input = `${b({ alg: 'RS256', ...header })}.${b(payload)}`;
  return `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
}

/** A self-signed RSA certificate and key, made with node-forge at test time. */
export function selfSignedCertificate(cn = 'entra-sidecar-test', keyPair = rsaKeyPair()): { certPem: string; keyPem: string; forgeCert: forge.pki.Certificate; forgeKey: forge.pki.rsa.PrivateKey } {
  const keyPem = keyPair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const forgeKey = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(createPublicKey(keyPair.privateKey).export({ type: 'spki', format: 'pem' }).toString());
  cert.serialNumber = '01' + createHash('sha1').update(cn).digest('hex').slice(0, 14);
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 86_400_000);
  const attrs = [{ name: 'commonName', value: cn }];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  cert.sign(forgeKey, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem, forgeCert: cert, forgeKey };
}

/** Packs a forge certificate + key into PFX bytes (AES-256 + SHA-256 MAC, as current OpenSSL does). */
export function toPfx(cert: forge.pki.Certificate, key: forge.pki.rsa.PrivateKey, password: string | null, extraCerts: forge.pki.Certificate[] = []): Buffer {
  const asn1 = forge.pkcs12.toPkcs12Asn1(key, [cert, ...extraCerts], password, { algorithm: 'aes256', friendlyName: 'test' });
  return Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary');
}

/** A fake Entra with one signing key, and an outbound agent for a validator to reach it with. */
export async function startFakeEntraWithAgent(): Promise<{ entra: FakeEntra; key: TestSigningKey; agent: Dispatcher; close(): Promise<void> }> {
  const key = makeSigningKey();
  const entra = await startFakeEntra([key]);
  const agent = createOutboundAgent({ extraCaFiles: [], connectTimeoutMs: 1000, timeoutMs: 2000 });
  return {
    entra,
    key,
    agent,
    async close() {
      await agent.close();
      await entra.close();
    },
  };
}
