/**
 * Entra signing keys and issuers: the v2 OpenID metadata (`jwks_uri`, v2 `issuer`), the v1 metadata
 * (v1 `issuer`; optional, see loadMetadata), and the JWKS, imported once as KeyObjects. Shaped like jose's createRemoteJWKSet
 * (STYLE "Remote calls"): one in-flight load shared by every caller, a re-fetch on an unknown `kid`
 * at most once per cooldown, periodic refresh, stale keys kept when a refresh fails, and sequence
 * numbers so an older load never overwrites a newer one. Every fetch goes through net/outbound
 * `send` (deadline + size cap).
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import type { Dispatcher } from 'undici';
import type { Logger } from '../log.js';
import { send } from '../net/outbound.js';
import { timerDelay } from '../timer-delay.js';

/** One usable JWKS entry: an RSA key, the only kind RS256 (the one algorithm accepted) verifies with. */
export interface SigningKey {
  readonly kid: string | undefined;
  readonly x5t: string | undefined;
  readonly key: KeyObject;
  /** Length of the key's modulus in bytes, which is the length of every signature it makes. */
  readonly signatureBytes: number;
  /** The JWK `alg`, when the JWKS pins one. */
  readonly alg: string | undefined;
  /** The v2 JWKS `issuer` member (template with `{tenantid}` or concrete), when present. */
  readonly issuer: string | undefined;
}

/** An immutable snapshot of everything one load produced. */
export interface SigningKeySet {
  /** Load sequence number; a higher one always wins. */
  readonly seq: number;
  readonly byKid: ReadonlyMap<string, SigningKey>;
  readonly byX5t: ReadonlyMap<string, SigningKey>;
  readonly all: readonly SigningKey[];
  /** v1 metadata `issuer`, e.g. `https://sts.windows.net/{tenantid}/`; empty while it could not be read. */
  readonly v1Issuer: string;
  /** v2 metadata `issuer`, e.g. `https://login.microsoftonline.com/{tenantid}/v2.0`. */
  readonly v2Issuer: string;
  readonly jwksUri: string;
}

export interface SigningKeyStoreOptions {
  /** `{instance}{tenantId}/v2.0`; the v1 metadata lives at the same path without `/v2.0`. */
  readonly authority: string;
  readonly outbound: { readonly agent: Dispatcher; readonly timeoutMs: number; readonly maxResponseBytes: number };
  readonly refreshIntervalSec: number;
  readonly unknownKidCooldownSec: number;
  readonly logger: Logger;
  readonly now: () => number;
  /** Background retry after a failed load: first delay and ceiling (ms). */
  readonly retry?: { readonly initialMs: number; readonly maxMs: number };
  /** Called after every load attempt with its outcome and the number of keys then held. */
  readonly onLoad?: (outcome: 'ok' | 'error', keyCount: number) => void;
  /** Called after a newer key set replaces an older one. */
  readonly onChange?: (previous: SigningKeySet | undefined, next: SigningKeySet) => void;
}

export interface SigningKeyStore {
  /** The newest loaded snapshot, or undefined if no load ever succeeded. */
  current(): SigningKeySet | undefined;
  /** First load; on failure keeps retrying in the background with backoff. Never rejects. */
  start(): Promise<void>;
  /**
   * An unknown `kid` arrived: joins the in-flight load, or starts a JWKS re-fetch unless one was
   * started for an unknown kid within the cooldown. Resolves the newest snapshot (possibly stale).
   */
  refreshForUnknownKid(): Promise<SigningKeySet | undefined>;
  /**
   * No keys yet: joins the load in flight (the startup load or a background retry) instead of failing
   * at once, so requests that arrive while the sidecar starts wait for the keys; resolves undefined
   * when nothing is loading or the load failed.
   */
  awaitInflight(): Promise<SigningKeySet | undefined>;
  /** Forces a full load (metadata + JWKS), sharing any in-flight one. Rejects when it fails. */
  refresh(): Promise<SigningKeySet>;
  close(): void;
  stats(): { jwksFetches: number; metadataFetches: number };
}

const MAX_KEYS = 100;

function trimSlash(s: string): string {
  return s.endsWith('/') ? s.slice(0, -1) : s;
}

/**
 * v2 and v1 OpenID metadata URLs for an authority (reference sidecar-http-api §4, entra-protocol
 * §1.2–1.3). v1 metadata has no `organizations` or `consumers` tenant (Entra answers AADSTS90002).
 * Like Microsoft.Identity.Web's AadIssuerValidator (CreateV1Authority), `organizations` reads it
 * from `common`, whose issuer is the same `{tenantid}` template. `consumers` has none (undefined):
 * its tokens are the Microsoft-account tenant's v2 tokens, and common's template would let a
 * v1-form token from any tenant through.
 */
export function metadataUrls(authority: string): { v2: string; v1: string | undefined } {
  const v2Base = trimSlash(authority);
  const v1Base = v2Base.replace(/\/v2\.0$/i, '');
  const v2 = `${v2Base}/.well-known/openid-configuration`;
  if (/\/consumers$/i.test(v1Base)) return { v2, v1: undefined };
  return { v2, v1: `${v1Base.replace(/\/organizations$/i, '/common')}/.well-known/openid-configuration` };
}

/**
 * Parses one JWKS entry into a SigningKey, or undefined when it is not a usable signature key: only
 * RSA keys of 2048 bits or more (Entra publishes nothing else; an EC key could verify no token
 * here, since only RS256 is accepted).
 */
export function importJwk(jwk: Record<string, unknown>): SigningKey | undefined {
  if (jwk.use !== undefined && jwk.use !== 'sig') return undefined;
  if (jwk.kty !== 'RSA' || typeof jwk.n !== 'string' || typeof jwk.e !== 'string') return undefined;
  let key: KeyObject;
  try {
    key = createPublicKey({ key: { kty: 'RSA', n: jwk.n, e: jwk.e }, format: 'jwk' });
  } catch {
    return undefined;
  }
  // RFC 7518 §3.3: RSA keys below 2048 bits must not be used.
  const modulusBits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (modulusBits < 2048) return undefined;
  return {
    kid: typeof jwk.kid === 'string' ? jwk.kid : undefined,
    x5t: typeof jwk.x5t === 'string' ? jwk.x5t : undefined,
    key,
    signatureBytes: Math.ceil(modulusBits / 8),
    alg: typeof jwk.alg === 'string' ? jwk.alg : undefined,
    issuer: typeof jwk.issuer === 'string' ? jwk.issuer : undefined,
  };
}

/**
 * The backoff of a load that runs in the background until it succeeds (the signing keys here, the
 * client certificates in src/acquisition/credential-readiness.ts): 1 s, doubling, at most 60 s.
 */
export const BACKGROUND_RETRY = Object.freeze({ initialMs: 1_000, maxMs: 60_000 });

/** Creates the metadata + JWKS store for one authority. Nothing is fetched until start()/refresh(). */
export function createSigningKeyStore(opts: SigningKeyStoreOptions): SigningKeyStore {
  const urls = metadataUrls(opts.authority);
  const retryInitialMs = opts.retry?.initialMs ?? BACKGROUND_RETRY.initialMs;
  const retryMaxMs = Math.min(opts.retry?.maxMs ?? BACKGROUND_RETRY.maxMs, opts.refreshIntervalSec * 1000);
  const cooldownMs = opts.unknownKidCooldownSec * 1000;
  const log = opts.logger;

  let snapshot: SigningKeySet | undefined;
  let metadata: { v1Issuer: string; v2Issuer: string; jwksUri: string } | undefined;
  /** The last full load could not read the v1 metadata: retry on the failure schedule, not daily. */
  let v1Missing = false;
  let inflight: Promise<SigningKeySet> | undefined;
  let lastSeq = 0;
  let lastUnknownKidFetchAt = Number.NEGATIVE_INFINITY;
  let jwksFetches = 0;
  let metadataFetches = 0;
  let timer: NodeJS.Timeout | undefined;
  let retryDelayMs = retryInitialMs;
  let startup: Promise<void> | undefined;
  let closed = false;

  async function getJson(url: string, what: string): Promise<Record<string, unknown>> {
    const res = await send(opts.outbound.agent, url, {
      headers: { accept: 'application/json' },
      deadlineMs: opts.outbound.timeoutMs,
      maxResponseBytes: opts.outbound.maxResponseBytes,
    });
    if (res.status !== 200) throw new Error(`${what} answered HTTP ${res.status}`);
    let doc: unknown;
    try {
      doc = JSON.parse(res.body.toString('utf8'));
    } catch {
      throw new Error(`${what} is not JSON`);
    }
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`${what} is not a JSON object`);
    return doc as Record<string, unknown>;
  }

  /**
   * The v2 metadata is required (issuer and jwks_uri). The v1 metadata only names the v1 issuer: like
   * AadIssuerValidator, which reads each version's metadata on its own, a failure there does not hold
   * back the keys or v2 tokens. The last v1 issuer read is kept; with none yet, v1-form tokens are
   * refused (`v1Issuer` empty) until a retry reads it. An authority without v1 metadata (consumers,
   * metadataUrls) refuses them for good, without asking.
   */
  async function loadMetadata(): Promise<{ v1Issuer: string; v2Issuer: string; jwksUri: string; v1Missing: boolean }> {
    metadataFetches += urls.v1 === undefined ? 1 : 2;
    const [v2Result, v1Result] = await Promise.allSettled([getJson(urls.v2, 'v2 OpenID metadata'), urls.v1 === undefined ? undefined : getJson(urls.v1, 'v1 OpenID metadata')]);
    if (v2Result.status === 'rejected') throw v2Result.reason;
    const v2 = v2Result.value;
    if (typeof v2.issuer !== 'string' || typeof v2.jwks_uri !== 'string') throw new Error('v2 OpenID metadata lacks issuer or jwks_uri');
    const jwks = new URL(v2.jwks_uri);
    // A plain-http jwks_uri is only followed when the metadata itself came over http (loopback tests).
    if (jwks.protocol !== 'https:' && jwks.protocol !== new URL(urls.v2).protocol) throw new Error('jwks_uri is not https');
    if (urls.v1 === undefined) return { v1Issuer: '', v2Issuer: v2.issuer, jwksUri: jwks.href, v1Missing: false };
    let v1Issuer: string | undefined;
    let v1Error: string | undefined;
    if (v1Result.status === 'rejected') v1Error = (v1Result.reason as Error).message;
    else if (typeof v1Result.value?.issuer !== 'string' || v1Result.value.issuer === '') v1Error = 'v1 OpenID metadata lacks issuer';
    else v1Issuer = v1Result.value.issuer;
    if (v1Error !== undefined) {
      log.warn({ err: v1Error, keepingPrevious: metadata !== undefined && metadata.v1Issuer !== '' }, 'v1 OpenID metadata could not be read; v1 tokens are refused until it is');
    }
    return { v1Issuer: v1Issuer ?? metadata?.v1Issuer ?? '', v2Issuer: v2.issuer, jwksUri: jwks.href, v1Missing: v1Issuer === undefined };
  }

  async function loadKeys(jwksUri: string): Promise<SigningKey[]> {
    jwksFetches++;
    const doc = await getJson(jwksUri, 'JWKS');
    if (!Array.isArray(doc.keys)) throw new Error('JWKS has no keys array');
    const keys: SigningKey[] = [];
    for (const jwk of doc.keys.slice(0, MAX_KEYS)) {
      if (jwk === null || typeof jwk !== 'object') continue;
      const key = importJwk(jwk as Record<string, unknown>);
      if (key) keys.push(key);
    }
    // Fail closed and keep the previous keys rather than replacing them with nothing.
    if (keys.length === 0) throw new Error('JWKS holds no usable signing key');
    return keys;
  }

  async function load(withMetadata: boolean): Promise<SigningKeySet> {
    const seq = ++lastSeq;
    const loaded = withMetadata || metadata === undefined ? await loadMetadata() : undefined;
    const meta = loaded ? { v1Issuer: loaded.v1Issuer, v2Issuer: loaded.v2Issuer, jwksUri: loaded.jwksUri } : metadata!;
    const keys = await loadKeys(meta.jwksUri);
    const byKid = new Map<string, SigningKey>();
    const byX5t = new Map<string, SigningKey>();
    for (const k of keys) {
      if (k.kid !== undefined && !byKid.has(k.kid)) byKid.set(k.kid, k);
      if (k.x5t !== undefined && !byX5t.has(k.x5t)) byX5t.set(k.x5t, k);
    }
    const next: SigningKeySet = { seq, byKid, byX5t, all: keys, ...meta };
    // An older load finishing after a newer one must not roll the keys back.
    if (snapshot !== undefined && snapshot.seq > seq) return snapshot;
    const previous = snapshot;
    metadata = meta;
    if (loaded) v1Missing = loaded.v1Missing;
    snapshot = next;
    log.debug({ keyCount: keys.length, seq }, 'signing keys loaded');
    opts.onChange?.(previous, next);
    return next;
  }

  function shared(withMetadata: boolean): Promise<SigningKeySet> {
    if (inflight) return inflight;
    const p = load(withMetadata).then(
      (set) => {
        opts.onLoad?.('ok', set.all.length);
        return set;
      },
      (err: unknown) => {
        opts.onLoad?.('error', snapshot?.all.length ?? 0);
        throw err;
      },
    ).finally(() => {
      if (inflight === p) inflight = undefined;
    });
    inflight = p;
    return p;
  }

  function schedule(delayMs: number): void {
    if (closed) return;
    if (timer) clearTimeout(timer);
    // The configuration bounds the interval; should a longer delay reach here all the same, it waits
    // the longest a timer can rather than overflowing to 1 ms and fetching without pause.
    timer = setTimeout(() => void tick(), timerDelay(delayMs));
    timer.unref();
  }

  /** One scheduled load: success → next periodic refresh; failure → retry with backoff (stale keys stay). */
  async function tick(): Promise<void> {
    try {
      await shared(true);
      if (v1Missing) {
        // Keys and v2 tokens are fine; only the v1 issuer is missing: read it again soon.
        schedule(retryDelayMs);
        retryDelayMs = Math.min(retryDelayMs * 2, retryMaxMs);
        return;
      }
      retryDelayMs = retryInitialMs;
      schedule(opts.refreshIntervalSec * 1000);
    } catch (err) {
      log.warn({ err: (err as Error).message, retryInMs: retryDelayMs, haveKeys: snapshot !== undefined }, 'signing key refresh failed');
      schedule(retryDelayMs);
      retryDelayMs = Math.min(retryDelayMs * 2, retryMaxMs);
    }
  }

  return {
    current: () => snapshot,
    start() {
      if (closed) return Promise.resolve();
      startup ??= tick();
      return startup;
    },
    async refreshForUnknownKid() {
      if (inflight) return inflight.catch(() => snapshot);
      const t = opts.now();
      if (t - lastUnknownKidFetchAt < cooldownMs) return snapshot;
      lastUnknownKidFetchAt = t;
      try {
        return await shared(false);
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'JWKS re-fetch for an unknown kid failed');
        return snapshot;
      }
    },
    awaitInflight: () => (inflight ? inflight.catch(() => snapshot) : Promise.resolve(snapshot)),
    refresh: () => shared(true),
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
    },
    stats: () => ({ jwksFetches, metadataFetches }),
  };
}
