/**
 * The sidecar's own access-token cache in front of msal-node (reference entra-protocol §7): a bounded,
 * nearly LRU map by entry count (LruMap), one in-flight acquisition per key (N concurrent callers → one
 * request to Entra), refresh-ahead that serves the current token while a background request replaces
 * it, and Retry-After windows during which a key fails fast without calling Entra.
 *
 * Keys are opaque strings built by the acquirer from SHA-256 digests; nothing here ever sees a raw
 * inbound token, and no value is logged.
 */
import { boundedRetryAfterSec, SidecarError } from '../errors.js';
import { LruMap, setNewest } from '../bounded-map.js';

/** A token as the cache stores it. */
export interface CachedToken {
  readonly scheme: string;
  /** Never empty: a fetch that ends without an access token fails (noAccessToken). */
  readonly token: string;
  /** Epoch seconds. */
  readonly expiresOn: number;
  /** Epoch seconds when the issuer asked for a refresh (`refresh_in`), when it said so. */
  readonly refreshOn?: number;
}

/**
 * The failure of an acquisition that ended without an access token: the issuer answered something
 * that is not a token response, which the error table calls an upstream failure (401 on the HTTP
 * API like any msal service error, a retryable 503 at Envoy). Never a "token" of '' that a caller
 * would send as `Bearer `.
 */
export function noAccessToken(detail: string): SidecarError {
  return new SidecarError('acquisition_upstream_failed', detail);
}

export interface TokenCacheOptions {
  readonly maxEntries: number;
  /** A token is not served when it expires within this many seconds (msal's 300 s renewal offset). */
  readonly expiryBufferSec: number;
  /** Milliseconds since the epoch; tests pass a fake clock. */
  readonly now?: () => number;
  /** Share of the lifetime after which a background refresh starts when the issuer gave no `refresh_in`. */
  readonly refreshFraction?: number;
  /** Wait before retrying a failed background refresh, in ms. */
  readonly refreshRetryMs?: number;
  /** Told about background refresh failures (the caller logs them). */
  readonly onRefreshError?: (key: string, err: unknown) => void;
}

export interface TokenCacheStats {
  /** Fetcher invocations (cold misses, bypasses and background refreshes). */
  fetches: number;
  cacheHits: number;
  cacheMisses: number;
  /** Callers that joined an acquisition already in flight instead of starting one. */
  coalesced: number;
  /** Background refreshes started. */
  refreshes: number;
  evictions: number;
  /** Calls refused locally inside a Retry-After window. */
  throttled: number;
  size: number;
}

interface Entry {
  value: CachedToken;
  /** ms: after this the token is no longer served. */
  usableUntil: number;
  /** ms: first access after this starts a background refresh. */
  refreshAt: number;
  /** Start number of the flight that fetched the value (see TokenCache.flights). */
  flight: number;
}

export interface GetOptions {
  /** ForceRefresh / claims challenge: skip the stored token (still single-flight, still honours Retry-After). */
  readonly bypass?: boolean;
  /**
   * Fetch in a flight of its own, named by this string (a claims challenge's digest): it never
   * joins a flight without the same claims, and its Retry-After window is its own. The token is
   * stored under the key as usual, so it replaces the entry a caller without claims reads, as MSAL
   * does: the token that was refused is not served again (nor put back by a flight that started
   * before this one and finishes after it).
   */
  readonly flight?: string;
}

/** Bounded single-flight token cache; see the module comment. */
export class TokenCache {
  private readonly entries: LruMap<string, Entry>;
  private readonly inFlight = new Map<string, Promise<CachedToken>>();
  /** key → ms until which calls fail fast (Retry-After). Bounded like the entries. */
  private readonly throttledUntil = new Map<string, number>();
  private readonly opts: TokenCacheOptions;
  private readonly now: () => number;
  /**
   * Flights started so far; each flight (and put) takes the next number when it starts. Flights for
   * one key can overlap (a claims challenge has a flight of its own, refresh-ahead runs beside it),
   * and a slower one that started earlier must not replace a token fetched after it: a token got
   * for a claims challenge would be overwritten by the one that was refused.
   */
  private flights = 0;
  private readonly counters = { fetches: 0, cacheHits: 0, cacheMisses: 0, coalesced: 0, refreshes: 0, evictions: 0, throttled: 0 };

  constructor(opts: TokenCacheOptions) {
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    this.entries = new LruMap(opts.maxEntries);
  }

  /** Returns a usable token for `key`, calling `fetch` at most once at a time per key. */
  async get(key: string, fetch: () => Promise<CachedToken>, options: GetOptions = {}): Promise<CachedToken> {
    const now = this.now();
    if (!options.bypass) {
      // get() marks the entry as recently used.
      const entry = this.entries.get(key);
      if (entry && now < entry.usableUntil) {
        this.counters.cacheHits++;
        if (now >= entry.refreshAt && !this.inFlight.has(key) && !this.isThrottled(key, now)) this.refreshInBackground(key, entry, fetch);
        return entry.value;
      }
      if (entry) this.entries.delete(key);
    }
    this.counters.cacheMisses++;
    const flightKey = options.flight === undefined ? key : `${key}\u0000${options.flight}`;
    const pending = this.inFlight.get(flightKey);
    if (pending) {
      this.counters.coalesced++;
      return pending;
    }
    this.failIfThrottled(flightKey, now);
    return this.start(key, fetch, flightKey);
  }

  /**
   * The stored token for `key` when it is usable and not yet due for a refresh, else undefined (then
   * call get(), which refreshes ahead, coalesces and honours Retry-After). Synchronous, so a warm
   * caller needs no promise.
   */
  peek(key: string): CachedToken | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    const now = this.now();
    if (now >= entry.refreshAt || now >= entry.usableUntil) return undefined;
    this.counters.cacheHits++;
    return entry.value;
  }

  /** Stores a token obtained under another key (the first call of a long-running OBO session). */
  put(key: string, value: CachedToken): void {
    this.store(key, value, ++this.flights);
  }

  /** Drops the stored token for `key` (one refused by its audience); a flight in progress still stores its own. */
  delete(key: string): void {
    this.entries.delete(key);
  }

  /** Counters for metrics and tests. */
  stats(): TokenCacheStats {
    return { ...this.counters, size: this.entries.size };
  }

  /** Drops every stored token and throttle window (in-flight acquisitions still complete). */
  clear(): void {
    this.entries.clear();
    this.throttledUntil.clear();
  }

  private isThrottled(key: string, now: number): boolean {
    const until = this.throttledUntil.get(key);
    if (until === undefined) return false;
    if (now < until) return true;
    this.throttledUntil.delete(key);
    return false;
  }

  private failIfThrottled(key: string, now: number): void {
    if (!this.isThrottled(key, now)) return;
    this.counters.throttled++;
    const retryAfterSec = Math.max(1, Math.ceil(((this.throttledUntil.get(key) ?? now) - now) / 1000));
    throw new SidecarError('acquisition_throttled', `Entra ID asked to retry after ${retryAfterSec} s; not calling it again before then.`, { retryAfterSec });
  }

  /** Fetches for `key` in the flight `flightKey` (the key itself unless get() was given a flight). */
  private start(key: string, fetch: () => Promise<CachedToken>, flightKey: string = key): Promise<CachedToken> {
    this.counters.fetches++;
    const flight = ++this.flights;
    const p = (async () => {
      try {
        const value = await fetch();
        // Every fetcher checks this itself with a precise message; this is the last line before a caller.
        if (typeof value.token !== 'string' || value.token === '') throw noAccessToken('The token acquisition ended without an access token.');
        this.store(key, value, flight);
        return value;
      } catch (err) {
        this.noteFailure(flightKey, err);
        throw err;
      } finally {
        this.inFlight.delete(flightKey);
      }
    })();
    this.inFlight.set(flightKey, p);
    return p;
  }

  private refreshInBackground(key: string, entry: Entry, fetch: () => Promise<CachedToken>): void {
    this.counters.refreshes++;
    this.start(key, fetch).catch((err: unknown) => {
      // Keep serving the current token; try again a little later (never past its usable time).
      entry.refreshAt = Math.min(entry.usableUntil, this.now() + (this.opts.refreshRetryMs ?? 30_000));
      this.opts.onRefreshError?.(key, err);
    });
  }

  /** Stores `value` from flight number `flight`, unless the entry came from a flight started later. */
  private store(key: string, value: CachedToken, flight: number): void {
    const current = this.entries.peek(key);
    if (current !== undefined && current.flight > flight) return;
    const now = this.now();
    const expiresAt = value.expiresOn * 1000;
    const usableUntil = expiresAt - this.opts.expiryBufferSec * 1000;
    // A token that is already inside the buffer is returned to its caller but not kept.
    if (usableUntil <= now || this.opts.maxEntries <= 0) {
      this.entries.delete(key);
      return;
    }
    const fraction = this.opts.refreshFraction ?? 0.75;
    const byLifetime = now + (expiresAt - now) * fraction;
    const refreshAt = Math.min(value.refreshOn !== undefined ? value.refreshOn * 1000 : byLifetime, usableUntil);
    this.counters.evictions += this.entries.set(key, { value, usableUntil, refreshAt, flight });
    this.throttledUntil.delete(key);
  }

  private noteFailure(key: string, err: unknown): void {
    // Errors are shared by the waiters of this flight but never cached; only a Retry-After opens a window.
    // The window is bounded (MAX_RETRY_AFTER_SEC) so that no answer can block a key until restart.
    const retryAfterSec = err instanceof SidecarError && err.code === 'acquisition_throttled' ? boundedRetryAfterSec(err.retryAfterSec) : undefined;
    if (retryAfterSec !== undefined && retryAfterSec > 0) {
      setNewest(this.throttledUntil, key, this.now() + retryAfterSec * 1000, Math.max(1, this.opts.maxEntries));
    }
  }
}
