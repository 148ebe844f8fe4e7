/**
 * Inbound token validation (reference sidecar-http-api §4, entra-protocol §3.2): compact form →
 * header allow-lists → (JWE: decrypt) → signature with the JWKS key the `kid` names → lifetime →
 * audience → issuer/tenant → signing-key issuer → scope-or-role (unless ACL mode).
 * A bounded LRU of verified tokens, keyed by SHA-256 of the compact token and never outliving `exp`,
 * makes a repeated token cost one hash and one map lookup instead of an RSA verify.
 *
 * A token enters that cache on its second verification, not its first: the first leaves only a
 * number in a bounded set (a doorkeeper). A caller sends a token many times in its lifetime, so this
 * costs a warm caller one extra signature check; a token seen once (a new token on every request)
 * leaves no claims behind for the garbage collector to copy, promote and later sweep, which was
 * ≈ 40 µs of every such request (bench/README.md). An encrypted token is cached on its first
 * verification (decrypting costs more than the entry), and one per inner token: wrapping one token
 * again and again gives copies that replace each other, not a flood of entries. A cached token is
 * deep-frozen and the same object on every hit; a first-sight one is a fresh object nobody keeps,
 * so `isCachedToken` (pipeline/authenticate.ts) tells callers which ones are worth keying on.
 *
 * Validation is synchronous whenever the signing keys are at hand (`validateNow()`): only an
 * encrypted token, the first load of the keys and a key id the loaded set lacks need a promise, so
 * the front doors answer a new caller in the same tick as well.
 *
 * A hit is synchronous (`cached()`), so the front doors answer a warm caller without a promise, and
 * usually without the SHA-256 either: a small table indexed by a few characters of the signature
 * remembers the entries hit last, and a whole-string comparison with the entry's own token (about
 * 0.1 µs for an Entra token, against 1.5 µs for the digest) gives its cache key.
 */
import { hash, timingSafeEqual, verify } from 'node:crypto';
import type { JWTHeaderParameters, JWTPayload } from 'jose';
import type { Dispatcher } from 'undici';
import type { AzureAdConfig, SidecarSettings } from '../config/types.js';
import { LruMap, setNewest } from '../bounded-map.js';
import { SidecarError } from '../errors.js';
import type { Logger } from '../log.js';
import { createLogLimiter, LOG_LINES_PER_SECOND } from '../log-limit.js';
import type { TokenValidator, ValidatedToken } from '../pipeline/types.js';
import { checkJweHeader, decryptToken, safeName, type DecryptionKey, type JweHeader } from './decryption.js';
import { signingKeyIssuerMatches, validateIssuer, type IssuerForm } from './issuer.js';
import { createSigningKeyStore, type SigningKey, type SigningKeySet } from './signing-keys.js';

export interface ValidatorDeps {
  readonly azureAd: AzureAdConfig;
  readonly settings: SidecarSettings['validation'];
  readonly outbound: { readonly agent: Dispatcher; readonly timeoutMs: number; readonly maxResponseBytes: number };
  readonly logger: Logger;
  /** Clock in epoch ms (tests pass a frozen or offset clock). */
  readonly now?: () => number;
  readonly decryptionKeys?: DecryptionKey[];
  /** Background retry of a failed key load: first delay and ceiling in ms (default 1 s … 60 s). */
  readonly keyLoadRetry?: { readonly initialMs: number; readonly maxMs: number };
  /** Told about every metadata/JWKS load (for the signing-key metrics). */
  readonly onSigningKeysLoad?: (outcome: 'ok' | 'error', keyCount: number) => void;
}

/** Counters for tests and metrics. */
export interface TokenValidatorStats {
  jwksFetches: number;
  metadataFetches: number;
  cacheHits: number;
  cacheMisses: number;
  /** Signing keys in the current set. */
  keyCount: number;
  /** Signature verifications actually performed (cache hits perform none). */
  signatureVerifications: number;
  /** SHA-256 cache keys computed (a token never seen before needs none). */
  cacheKeyDigests: number;
  /** RSA key unwraps tried on encrypted tokens (a cached one needs none). */
  decryptionAttempts: number;
  /** Entries in the verified-token cache. */
  cacheSize: number;
}

export interface TokenValidatorWithStats extends TokenValidator {
  /**
   * The token validate() would resolve, if it is cached and within its lifetime; undefined
   * otherwise. Never throws. validateNow() starts with it.
   */
  cached(compact: string): ValidatedToken | undefined;
  stats(): TokenValidatorStats;
}

/**
 * The one JWS algorithm accepted: Entra signs its tokens with RS256 (entra-protocol §3.2 rule 2).
 * `none`, HS*, and the other RSA and EC algorithms a JWKS key could verify are refused before any
 * key is looked at, so no token can choose how its signature is checked.
 */
const SIGNATURE_ALG = 'RS256';

/** Entra tokens are a few KB; this bounds parsing work on garbage. */
const MAX_COMPACT_LENGTH = 64 * 1024;
const BASE64URL = /^[A-Za-z0-9_-]*$/;
const SCOPE_OR_ROLE_CLAIMS = ['scp', 'http://schemas.microsoft.com/identity/claims/scope', 'roles', 'role'];
/** Most slots of the recently-hit table (a power of two); a smaller cache gets a smaller table. */
const MAX_RECENT_SLOTS = 1024;

/**
 * The recently-hit slot of a token: four characters near the end of its last segment (the
 * signature, or a JWE's tag: random bytes, so they spread). A token crafted to collide only evicts
 * another from the table; a slot is trusted only after its token compares equal in full.
 */
export function recentSlot(compact: string, slots = MAX_RECENT_SLOTS): number {
  const n = compact.length;
  return (compact.charCodeAt(n - 3) ^ (compact.charCodeAt(n - 4) << 3) ^ (compact.charCodeAt(n - 5) << 6) ^ (compact.charCodeAt(n - 6) << 9)) & (slots - 1);
}

/** Characters at a token's end compared in constant time by isSameToken (384 bits of an RS256 signature). */
const SECRET_TAIL = 64;
const callerTail = Buffer.allocUnsafe(2 * SECRET_TAIL);
const heldTail = Buffer.allocUnsafe(2 * SECRET_TAIL);

/**
 * Whether a caller's `compact` is `held`, a token verified for some caller (perhaps another one). A
 * token is a bearer credential, so how long the comparison takes must not tell a caller how much of
 * a guess was right. Its last 64 characters (the end of the signature, or a JWE's tag: at least 288
 * unguessable bits) are compared in constant time, as UTF-16 code units so no character can stand
 * for another; what precedes them may stop at the first difference: a guess confirmed up to there
 * still leaves the 64 to guess, whole, with nothing but "no" for an answer. Cost: ~0.35 µs a call
 * against ~0.04 µs for ===, measured (timingSafeEqual's own call is most of it).
 */
export function isSameToken(compact: string, held: string): boolean {
  const n = held.length;
  if (compact.length !== n) return false;
  const cut = n > SECRET_TAIL ? n - SECRET_TAIL : 0;
  const bytes = 2 * (n - cut);
  callerTail.write(compact.slice(cut), 0, 'utf16le');
  heldTail.write(held.slice(cut), 0, 'utf16le');
  // Both comparisons always run: the constant-time one first, whatever the other would say.
  const tailEqual = timingSafeEqual(callerTail.subarray(0, bytes), heldTail.subarray(0, bytes));
  return compact.slice(0, cut) === held.slice(0, cut) && tailEqual;
}

/** Slots for a cache of `capacity` tokens: the power of two at or above it, at most MAX_RECENT_SLOTS (0 without a cache). */
function recentSlotsFor(capacity: number): number {
  if (capacity <= 0) return 0;
  let slots = 1;
  while (slots < capacity && slots < MAX_RECENT_SLOTS) slots *= 2;
  return slots;
}

/**
 * A number that stands for a token in the seen-tokens filter: four characters near the end of its
 * last segment (the signature, or a JWE's tag: random bytes), 7 bits of char code each, so always a
 * small integer and no heap object per entry. It decides only whether a token is worth a SHA-256
 * cache key: two tokens sharing it cost the second one a digest it did not need, or make it cached
 * on its first verification; a token crafted to share it gains nothing, since every hit is looked up
 * by digest and compared in full.
 */
function fingerprint(compact: string): number {
  const n = compact.length;
  return compact.charCodeAt(n - 3) | (compact.charCodeAt(n - 4) << 7) | (compact.charCodeAt(n - 5) << 14) | (compact.charCodeAt(n - 6) << 21);
}

interface VerifiedEntry {
  /** The entry's key in the cache: the base64 SHA-256 of `token.raw`. */
  readonly key: string;
  readonly token: ValidatedToken;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
}

/** A token that passed every rule, with its `nbf` (the cache entry's start). */
interface Verified {
  readonly token: ValidatedToken;
  readonly nbf: number | undefined;
}

/** A compact JWS that passed the rules needing no key (parseJws). */
interface ParsedJws {
  readonly jws: string;
  readonly header: Record<string, unknown>;
  readonly claims: Record<string, unknown>;
  readonly lastDot: number;
  readonly signatureSegment: string;
}

function dotCount(compact: string): number {
  let dots = 0;
  for (let i = compact.indexOf('.'); i >= 0; i = compact.indexOf('.', i + 1)) dots++;
  return dots;
}

function malformed(detail: string): SidecarError {
  return new SidecarError('token_malformed', detail);
}

/** The 6-bit value of a base64url character (one the BASE64URL pattern admits). */
function base64urlValue(c: number): number {
  if (c >= 0x61) return c - 0x61 + 26; // a-z
  if (c >= 0x41) return c === 0x5f ? 63 : c - 0x41; // A-Z, _
  return c === 0x2d ? 62 : c - 0x30 + 52; // -, 0-9
}

/**
 * Whether a segment the BASE64URL pattern admits is its bytes' one spelling (RFC 4648 §3.5): no
 * character left over that completes no byte, and the bits the last character carries beyond the
 * final byte are zero. Node's decoder ignores both, so without this one signature verified in four
 * spellings, each a cache key of its own (verified tokens, OBO results). O(1): only the length and
 * the last character are read.
 */
function isCanonicalBase64url(segment: string): boolean {
  const tail = segment.length & 3;
  if (tail === 0) return true;
  if (tail === 1) return false;
  return (base64urlValue(segment.charCodeAt(segment.length - 1)) & (tail === 2 ? 0x0f : 0x03)) === 0;
}

/** A JWS segment's JSON text, decoded the one way every reader here decodes it. */
function segmentText(segment: string): string {
  return Buffer.from(segment, 'base64url').toString('utf8');
}

function decodeJsonObject(segment: string, what: string): Record<string, unknown> {
  if (segment === '' || !BASE64URL.test(segment) || !isCanonicalBase64url(segment)) throw malformed(`The token ${what} is not base64url`);
  let value: unknown;
  try {
    value = JSON.parse(segmentText(segment));
  } catch {
    throw malformed(`The token ${what} is not JSON`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw malformed(`The token ${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as object)) deepFreeze(v);
  }
  return value;
}

/** A time as JwtBearer writes it in error descriptions: .NET's invariant `MM/dd/yyyy HH:mm:ss`, UTC. */
function dotnetTime(epochSec: number): string {
  const d = new Date(epochSec * 1000);
  if (Number.isNaN(d.getTime())) return String(epochSec);
  const two = (n: number) => String(n).padStart(2, '0');
  return `${two(d.getUTCMonth() + 1)}/${two(d.getUTCDate())}/${d.getUTCFullYear()} ${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())}`;
}

/** An audience without one trailing slash: JwtBearer ignores it when comparing audiences (IgnoreTrailingSlashWhenValidatingAudience). */
function withoutTrailingSlash(audience: string): string {
  return audience.endsWith('/') ? audience.slice(0, -1) : audience;
}

/** Checks an RS256 signature with node:crypto directly (synchronous, no WebCrypto import per call). */
function signatureValid(key: SigningKey, signingInput: Buffer, signature: Buffer): boolean {
  if (key.alg !== undefined && key.alg !== SIGNATURE_ALG) return false;
  try {
    return verify('sha256', signingInput, key.key, signature);
  } catch {
    return false;
  }
}

/**
 * The validated token's payload as the JSON text it was issued as (reference §2.2 step 5: numbers
 * such as 12345678901234567890 or 1.0e2 stay as written, which JSON.stringify of the parsed claims
 * would change). It is the text validation parsed, so it is a JSON object with no BOM (JSON.parse
 * refuses one); only JSON whitespace around it is trimmed. Derived from `jws` on demand rather
 * than kept beside the claims, so the verified-token cache holds no second copy.
 */
export function payloadJson(token: ValidatedToken): string {
  const { jws } = token;
  return segmentText(jws.slice(jws.indexOf('.') + 1, jws.lastIndexOf('.'))).trim();
}

/** Creates the validator; call start() to load signing keys before the first request. */
export function createTokenValidator(deps: ValidatorDeps): TokenValidatorWithStats {
  const { azureAd, settings, logger } = deps;
  // A caller can send the same failing token over and over; the line below is for operators, not a flood.
  const unexpectedLog = createLogLimiter(LOG_LINES_PER_SECOND, logger.isLevelEnabled('debug'));
  const now = deps.now ?? Date.now;
  const skewSec = settings.clockSkewSec;
  const cacheCapacity = Math.max(0, Math.floor(settings.verifiedTokenCacheSize));
  /** Whether verified tokens are cached at all (admit() decides the rest). */
  const caching = cacheCapacity > 0;
  const decryptionKeys = deps.decryptionKeys ?? [];
  const cache = new LruMap<string, VerifiedEntry>(cacheCapacity);
  /**
   * Cache entries hit lately, by recentSlot() of their token: lets a hit skip the digest. An entry
   * the cache has since dropped may linger in its slot (no more of them than the cache holds, and
   * never more than MAX_RECENT_SLOTS) but answers nothing: every hit is looked up in the cache.
   */
  const recentSlots = recentSlotsFor(cacheCapacity);
  const recent: (VerifiedEntry | undefined)[] = new Array<VerifiedEntry | undefined>(recentSlots).fill(undefined);
  /**
   * Fingerprints of the tokens verified lately, oldest first: twice as many as the cache holds. A
   * token whose fingerprint is not here is new, so cached() skips its SHA-256 (3 % of a first-sight
   * Check's instructions in the server: bench/README.md, finding 28), and admit() does not cache it
   * yet (the doorkeeper: a token is cached on its second verification). A cached token whose
   * fingerprint has aged out is verified once more and found again after that.
   */
  const seen = new Set<number>();
  const seenCapacity = 2 * cacheCapacity;
  /**
   * The cache key of the encrypted token cached for each inner token, by the inner JWS's digest. A
   * JWE is looked up as sent (the warm path never decrypts), but anyone holding one inner token can
   * wrap it again with a fresh content key as often as they like: without this, every copy would be
   * an entry of its own and flush every other caller's. Admitting a copy drops the one before it.
   */
  const encryptedByInner = new Map<string, string>();
  let cacheHits = 0;
  let cacheMisses = 0;
  let signatureVerifications = 0;
  let cacheKeyDigests = 0;
  let decryptionAttempts = 0;
  const countDecryption = (): void => {
    decryptionAttempts++;
  };

  // Configured audiences replace the default rule (reference §4).
  const configuredAudiences = new Set<string>([...(azureAd.audience ? [azureAd.audience] : []), ...azureAd.validAudiences].map(withoutTrailingSlash));
  const v2DefaultAudience = azureAd.clientId;
  const v1DefaultAudience = `api://${azureAd.clientId}`;

  const keys = createSigningKeyStore({
    authority: azureAd.authority,
    outbound: deps.outbound,
    refreshIntervalSec: settings.signingKeysRefreshIntervalSec,
    unknownKidCooldownSec: settings.unknownKidCooldownSec,
    logger,
    now,
    ...(deps.keyLoadRetry ? { retry: deps.keyLoadRetry } : {}),
    ...(deps.onSigningKeysLoad ? { onLoad: deps.onSigningKeysLoad } : {}),
    onChange(previous, next) {
      // A key that left the JWKS no longer vouches for tokens it signed.
      if (previous && cache.size > 0) {
        for (const kid of previous.byKid.keys()) {
          if (!next.byKid.has(kid)) {
            dropAll();
            break;
          }
        }
      }
    },
  });

  function dropAll(): void {
    cache.clear();
    encryptedByInner.clear();
    recent.fill(undefined);
  }

  function remember(fp: number): void {
    if (seen.size >= seenCapacity) seen.delete(seen.values().next().value as number);
    seen.add(fp);
  }

  /**
   * Caches a token on its second verification, or an encrypted one on its first (decryption is the
   * expensive part there) in place of any earlier copy of its inner token (encryptedByInner); returns
   * the object to hand out, frozen when cached.
   */
  function admit(cacheKey: string, token: ValidatedToken, nbf: number | undefined): ValidatedToken {
    const fp = fingerprint(token.raw);
    const encrypted = token.raw.length !== token.jws.length; // a JWE is always longer than the token inside it
    const inner = encrypted ? dropEarlierCopy(token) : '';
    if (!seen.has(fp)) {
      remember(fp);
      if (!encrypted) return token;
    }
    // A token that was new when cached() looked has no key yet.
    if (cacheKey === '') cacheKey = digestOf(token.raw);
    if (encrypted) setNewest(encryptedByInner, inner, cacheKey, cacheCapacity);
    cache.set(cacheKey, {
      key: cacheKey,
      token: deepFreeze(token),
      notBeforeMs: nbf === undefined ? Number.NEGATIVE_INFINITY : (nbf - skewSec) * 1000,
      notAfterMs: (token.expiresAt + skewSec) * 1000,
    });
    return token;
  }

  /**
   * Drops the cached copy of `token`'s inner token that another wrapping left, and its fingerprint
   * (so a stream of copies cannot age other callers out of the seen set either); returns the inner
   * token's digest.
   */
  function dropEarlierCopy(token: ValidatedToken): string {
    cacheKeyDigests++;
    const inner = hash('sha256', token.jws, 'base64');
    const earlierKey = encryptedByInner.get(inner);
    const earlier = earlierKey === undefined ? undefined : cache.peek(earlierKey);
    if (earlier !== undefined && !isSameToken(token.raw, earlier.token.raw)) {
      cache.delete(earlier.key);
      seen.delete(fingerprint(earlier.token.raw));
    }
    return inner;
  }

  function candidateKeys(set: SigningKeySet, header: Record<string, unknown>): readonly SigningKey[] | undefined {
    if (typeof header.kid === 'string') {
      const k = set.byKid.get(header.kid);
      return k ? [k] : undefined;
    }
    if (typeof header.x5t === 'string') {
      const k = set.byX5t.get(header.x5t);
      return k ? [k] : undefined;
    }
    // No key id: IdentityModel tries every key of the set.
    return set.all;
  }

  /**
   * The compact-JWS and header rules, and the decoded header and payload: everything about a token
   * that needs no signing key. Throws the token's error.
   */
  function parseJws(jws: string): ParsedJws {
    const firstDot = jws.indexOf('.');
    const lastDot = jws.lastIndexOf('.');
    if (firstDot <= 0 || lastDot === firstDot || jws.indexOf('.', firstDot + 1) !== lastDot) throw malformed('The token is not a compact JWS');
    const header = decodeJsonObject(jws.slice(0, firstDot), 'header');
    if (header.alg !== SIGNATURE_ALG) {
      // JwtBearer's description for an unsigned or wrongly signed token; the code says why.
      throw new SidecarError('token_alg_not_allowed', 'The signature is invalid');
    }
    // Embedded or remote keys are never trusted; `crit` extensions are not understood; a `nonce`
    // header marks a Microsoft Graph token, which is not for this API (entra-protocol §1.4).
    if (header.jku !== undefined || header.x5u !== undefined || header.jwk !== undefined) {
      throw malformed('The token header names a key source that is not trusted');
    }
    if (header.crit !== undefined) throw malformed("The token header has a 'crit' member that is not supported");
    if (header.nonce !== undefined) throw malformed('The token is not for this API (it carries a nonce header)');
    const signatureSegment = jws.slice(lastDot + 1);
    if (signatureSegment === '' || !BASE64URL.test(signatureSegment) || !isCanonicalBase64url(signatureSegment)) throw malformed('The token signature is not base64url');
    const claims = decodeJsonObject(jws.slice(firstDot + 1, lastDot), 'payload');
    return { jws, header, claims, lastDot, signatureSegment };
  }

  /**
   * The rest of the rules for a parsed JWS whose key id `set` knows (`candidates`): signature,
   * lifetime, issuer, audience, scope or role. Synchronous; `raw` is what the caller sent (the JWE
   * when it was encrypted). Throws the token's error.
   */
  function verifyParsed(parsed: ParsedJws, raw: string, set: SigningKeySet, candidates: readonly SigningKey[]): Verified {
    const { jws, header, claims, lastDot, signatureSegment } = parsed;
    const signingInput = Buffer.from(jws.slice(0, lastDot), 'latin1');
    const signature = Buffer.from(signatureSegment, 'base64url');
    let signingKey: SigningKey | undefined;
    for (const k of candidates) {
      // An RS256 signature is exactly as long as the key's modulus (RFC 8017 §8.2.2): no RSA operation for another length.
      if (signature.length !== k.signatureBytes) continue;
      signatureVerifications++;
      if (signatureValid(k, signingInput, signature)) {
        signingKey = k;
        break;
      }
    }
    if (signingKey === undefined) throw new SidecarError('token_signature_invalid', 'The signature is invalid');

    // Lifetime (exp required, nbf honoured, skew both ways).
    const nowSec = now() / 1000;
    const exp = claims.exp;
    // Descriptions as JwtBearer writes them (CreateErrorDescription), dates included.
    if (typeof exp !== 'number' || !Number.isFinite(exp)) throw malformed('The token has no expiration');
    const nbf = claims.nbf;
    if (nbf !== undefined && (typeof nbf !== 'number' || !Number.isFinite(nbf))) throw malformed("The token 'nbf' claim is not a number");
    if (nbf !== undefined && nbf > exp) {
      throw new SidecarError('token_not_yet_valid', `The token lifetime is invalid; NotBefore: '${dotnetTime(nbf)}', Expires: '${dotnetTime(exp)}'`);
    }
    if (nowSec > exp + skewSec) throw new SidecarError('token_expired', `The token expired at '${dotnetTime(exp)}'`);
    if (nbf !== undefined && nowSec + skewSec < nbf) throw new SidecarError('token_not_yet_valid', `The token is not valid before '${dotnetTime(nbf)}'`);

    // Audience before issuer, in JsonWebTokenHandler's order, so a token for another API from another
    // tenant is refused for its audience as Microsoft's sidecar does. Audience: configured audiences,
    // else Microsoft.Identity.Web's RegisterValidAudience defaults.
    const ver = claims.ver;
    const aud = claims.aud;
    let audienceOk = false;
    const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
    for (const a of audiences) {
      if (typeof a !== 'string') continue;
      const bare = withoutTrailingSlash(a);
      if (configuredAudiences.size > 0 ? configuredAudiences.has(bare) : (ver === '2.0' && bare === v2DefaultAudience) || (ver === '1.0' && bare === v1DefaultAudience)) {
        audienceOk = true;
        break;
      }
    }
    if (!audienceOk) {
      const shown = audiences.filter((a) => typeof a === 'string').join(', ');
      throw new SidecarError('token_audience_invalid', `The audience '${safeName(shown)}' is invalid`);
    }

    // Issuer and tenant, then the signing key's own issuer restriction.
    const form: IssuerForm = validateIssuer(claims.iss, claims.tid, set, azureAd.validIssuers);
    const iss = claims.iss as string;
    const tid = claims.tid as string;
    if (!signingKeyIssuerMatches(signingKey.issuer, iss, tid, form, set)) {
      throw new SidecarError('token_issuer_invalid', `The issuer '${safeName(iss)}' is invalid for the signing key`);
    }

    if (!azureAd.allowWebApiToBeAuthorizedByACL && !SCOPE_OR_ROLE_CLAIMS.some((c) => claims[c] !== undefined && claims[c] !== null)) {
      throw new SidecarError('token_scope_or_role_missing', 'Neither scope nor roles claim was found in the bearer token');
    }

    const token: ValidatedToken = {
      raw,
      jws,
      header: header as unknown as JWTHeaderParameters,
      claims: claims as JWTPayload,
      version: ver === '1.0' || ver === '2.0' ? ver : form,
      tenantId: tid,
      expiresAt: exp,
    };
    return { token, nbf: nbf as number | undefined };
  }

  /**
   * Validates a compact JWS, waiting for the keys it needs: the loaded set, else the load in flight,
   * then one refresh when the token names a key the set does not have (a rotation the sidecar has
   * not seen yet). `raw` is what the caller sent (the JWE when it was encrypted).
   */
  async function validateJws(jws: string, raw: string): Promise<Verified> {
    const parsed = parseJws(jws);
    let set = keys.current() ?? (await keys.awaitInflight());
    if (set === undefined) throw new SidecarError('signing_keys_unavailable', 'Signing keys have not been loaded');
    let candidates = candidateKeys(set, parsed.header);
    if (candidates === undefined) {
      set = (await keys.refreshForUnknownKid()) ?? set;
      candidates = candidateKeys(set, parsed.header);
      if (candidates === undefined) {
        throw new SidecarError('token_key_unknown', 'The signature key was not found');
      }
    }
    return verifyParsed(parsed, raw, set, candidates);
  }

  async function validateUncached(compact: string): Promise<Verified> {
    if (compact.length > MAX_COMPACT_LENGTH) throw malformed('The token is too long');
    const dots = dotCount(compact);
    if (dots === 2) return validateJws(compact, compact);
    if (dots !== 4) throw malformed('The token is neither a compact JWS nor a compact JWE');
    const firstDot = compact.indexOf('.');
    const header = decodeJsonObject(compact.slice(0, firstDot), 'header') as JweHeader;
    checkJweHeader(header);
    // One spelling per token here too, checked before the private-key operation a JWE costs.
    for (let start = firstDot + 1, end = 0; start <= compact.length; start = end + 1) {
      end = compact.indexOf('.', start);
      if (end < 0) end = compact.length;
      const segment = compact.slice(start, end);
      if (!BASE64URL.test(segment) || !isCanonicalBase64url(segment)) throw malformed('The encrypted token is not base64url');
    }
    const inner = await decryptToken(compact, header, decryptionKeys, countDecryption);
    // The plaintext must itself be a signed JWS (never a bare payload or another JWE).
    if (inner.split('.').length !== 3) throw new SidecarError('token_decryption_failed', 'The encrypted token does not contain a signed token');
    return validateJws(inner, compact);
  }

  /** The token hashed last and its digest: a miss in cached() is followed by validate() of the same token. */
  let lastHashed = '';
  let lastKey = '';

  /** The cache key of `compact`: its SHA-256, remembered for the token hashed last. */
  function digestOf(compact: string): string {
    if (!isSameToken(compact, lastHashed)) {
      cacheKeyDigests++;
      lastKey = hash('sha256', compact, 'base64');
      lastHashed = compact;
    }
    return lastKey;
  }

  /**
   * The cache key of a token seen lately: from its recently-hit slot when the token there is this
   * one, else the digest; '' for a new one (no digest: nothing cached can be found by it).
   */
  function keyIfSeen(compact: string, slot: number): string {
    const held = recent[slot];
    if (held !== undefined && isSameToken(compact, held.token.raw)) return held.key;
    return seen.has(fingerprint(compact)) ? digestOf(compact) : '';
  }

  /**
   * The cached token for `compact` if there is one and it is within its lifetime: the same frozen
   * object every time, synchronously. undefined sends the caller to validate(), which verifies the
   * token in full (and rejects it with the right error, if it must).
   */
  function cached(compact: string): ValidatedToken | undefined {
    if (!caching || typeof compact !== 'string' || compact.length < 8) return undefined;
    const slot = recentSlot(compact, recentSlots);
    const key = keyIfSeen(compact, slot);
    if (key === '') return undefined;
    const hit = cache.get(key);
    if (hit === undefined) return undefined;
    const t = now();
    if (t >= hit.notBeforeMs && t <= hit.notAfterMs) {
      cacheHits++;
      recent[slot] = hit;
      return hit.token;
    }
    cache.delete(key);
    recent[slot] = undefined;
    return undefined;
  }

  /**
   * The key cached() just found for `compact` (from the table or the digest it remembers: no second
   * hash); '' without a cache, or for a token not seen lately (admit() makes one if it caches it).
   */
  function cacheKeyAfterMiss(compact: string): string {
    // A token shorter than 8 characters is never valid and needs none.
    return caching && compact.length >= 8 ? keyIfSeen(compact, recentSlot(compact, recentSlots)) : '';
  }

  /** The error to throw for a token that failed: a SidecarError as is (logged at debug), anything else as `internal`. */
  function rejected(err: unknown, compact: string): SidecarError {
    if (err instanceof SidecarError) {
      // The token itself is never logged; a short hash lets operators correlate repeats.
      if (logger.isLevelEnabled('debug')) {
        logger.debug({ code: err.code, reason: err.detail, tokenHash: hash('sha256', compact, 'base64url').slice(0, 12) }, 'token rejected');
      }
      return err;
    }
    if (unexpectedLog.allow('internal')) {
      logger.error({ err: (err as Error).message, ...unexpectedLog.suppressed('internal') }, 'token validation failed unexpectedly');
    }
    return new SidecarError('internal', undefined, { cause: err });
  }

  /**
   * validate() in the same tick when it can: a cached token, or a compact JWS whose signing key is
   * loaded, is answered (or rejected with its error) without a promise; an encrypted token, or one
   * whose keys are still to be fetched, gives undefined and the caller calls validate().
   */
  function validateNow(compact: string): ValidatedToken | undefined {
    if (typeof compact !== 'string' || compact === '') throw malformed('The token is empty');
    const hit = cached(compact);
    if (hit !== undefined) return hit;
    // validate() words the errors of a token of the wrong shape or size, and decrypts a JWE.
    if (compact.length > MAX_COMPACT_LENGTH || dotCount(compact) !== 2) return undefined;
    const cacheKey = cacheKeyAfterMiss(compact);
    let verified: Verified;
    try {
      const parsed = parseJws(compact);
      // Keys still to load, or a key id the set lacks: validate() waits for them.
      const set = keys.current();
      if (set === undefined) return undefined;
      const candidates = candidateKeys(set, parsed.header);
      if (candidates === undefined) return undefined;
      verified = verifyParsed(parsed, compact, set, candidates);
    } catch (err) {
      cacheMisses++;
      throw rejected(err, compact);
    }
    cacheMisses++;
    return caching ? admit(cacheKey, verified.token, verified.nbf) : verified.token;
  }

  async function validate(compact: string): Promise<ValidatedToken> {
    const now = validateNow(compact);
    if (now !== undefined) return now;
    const cacheKey = cacheKeyAfterMiss(compact);
    cacheMisses++;
    try {
      const { token, nbf } = await validateUncached(compact);
      return caching ? admit(cacheKey, token, nbf) : token;
    } catch (err) {
      throw rejected(err, compact);
    }
  }

  return {
    validate,
    validateNow,
    cached,
    ready: () => keys.current() !== undefined,
    start: () => keys.start(),
    close() {
      keys.close();
      dropAll();
      seen.clear();
    },
    stats() {
      const s = keys.stats();
      return {
        jwksFetches: s.jwksFetches,
        metadataFetches: s.metadataFetches,
        cacheHits,
        cacheMisses,
        keyCount: keys.current()?.all.length ?? 0,
        signatureVerifications,
        cacheKeyDigests,
        decryptionAttempts,
        cacheSize: cache.size,
      };
    },
  };
}
