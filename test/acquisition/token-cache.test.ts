import { expect } from 'chai';
import { TokenCache, type CachedToken } from '../../src/acquisition/token-cache.js';
import { SidecarError } from '../../src/errors.js';

/** A controllable clock in ms. */
function fakeClock(start = 1_700_000_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms), sec: () => Math.floor(t / 1000) };
}

/** A fetcher that counts calls and can be held open until released. */
function fakeFetcher(clock: { sec(): number }, lifetimeSec = 3600) {
  let calls = 0;
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  let failWith: unknown;
  return {
    get calls() {
      return calls;
    },
    hold() {
      gate = new Promise<void>((r) => (open = r));
    },
    release() {
      open?.();
      gate = undefined;
    },
    failNext(err: unknown) {
      failWith = err;
    },
    fetch: async (): Promise<CachedToken> => {
      calls++;
      const n = calls;
      if (gate) await gate;
      if (failWith !== undefined) {
        const e = failWith;
        failWith = undefined;
        throw e;
      }
      return { scheme: 'Bearer', token: `token-${n}`, expiresOn: clock.sec() + lifetimeSec };
    },
  };
}

const tick = () => new Promise<void>((r) => setImmediate(r));

describe('token cache', () => {
  it('serves a cached token until the expiry buffer and fetches again after it', async () => {
    const clock = fakeClock();
    const f = fakeFetcher(clock, 3600);
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now, refreshFraction: 2 });
    expect((await cache.get('k', f.fetch)).token).to.equal('token-1');
    clock.advance(3299_000);
    expect((await cache.get('k', f.fetch)).token).to.equal('token-1');
    clock.advance(1_000);
    expect((await cache.get('k', f.fetch)).token).to.equal('token-2');
    expect(cache.stats()).to.include({ cacheHits: 1, cacheMisses: 2, fetches: 2 });
  });

  it('makes one fetch for 100 concurrent cold callers of one key', async () => {
    const clock = fakeClock();
    const f = fakeFetcher(clock);
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now });
    f.hold();
    const all = Array.from({ length: 100 }, () => cache.get('k', f.fetch));
    await tick();
    f.release();
    const tokens = await Promise.all(all);
    expect(f.calls).to.equal(1);
    expect(new Set(tokens.map((t) => t.token))).to.deep.equal(new Set(['token-1']));
    expect(cache.stats()).to.include({ coalesced: 99, fetches: 1 });
  });

  it('fetches a claims challenge in a flight of its own, then stores its token under the key', async () => {
    const clock = fakeClock();
    const f = fakeFetcher(clock);
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now });
    f.hold();
    const plain = cache.get('k', f.fetch);
    const challenged = cache.get('k', f.fetch, { bypass: true, flight: 'claims-digest' });
    const again = cache.get('k', f.fetch, { bypass: true, flight: 'claims-digest' });
    await tick();
    f.release();
    const [p, c, a] = await Promise.all([plain, challenged, again]);
    // Two fetches: the claims flight did not join the plain one; the second claims caller joined its own.
    expect(f.calls).to.equal(2);
    expect(c.token).to.not.equal(p.token);
    expect(a.token).to.equal(c.token);
    // Once stored, a claims token replaces the entry a caller without claims reads.
    const refused = (await cache.get('k', f.fetch)).token;
    const stepped = await cache.get('k', f.fetch, { bypass: true, flight: 'other-claims' });
    expect(stepped.token).to.not.equal(refused);
    expect((await cache.get('k', f.fetch)).token).to.equal(stepped.token);
    expect(f.calls).to.equal(3);
  });

  it('keeps a claims token when a flight that started before it finishes after it (plain or refresh-ahead)', async () => {
    const clock = fakeClock();
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now });
    /** A fetch that answers `token` only when its `finish` is called. */
    const held = (token: string) => {
      let finish!: () => void;
      const done = new Promise<void>((r) => (finish = r));
      return { finish, fetch: async (): Promise<CachedToken> => (await done, { scheme: 'Bearer', token, expiresOn: clock.sec() + 4000 }) };
    };
    const fixed = (token: string) => async (): Promise<CachedToken> => ({ scheme: 'Bearer', token, expiresOn: clock.sec() + 4000 });

    // A slow plain flight is overtaken by a claims flight.
    const slow = held('plain');
    const plain = cache.get('k', slow.fetch);
    expect((await cache.get('k', fixed('claims-1'), { bypass: true, flight: 'digest-1' })).token).to.equal('claims-1');
    slow.finish();
    expect((await plain).token).to.equal('plain');
    expect((await cache.get('k', fixed('unused'))).token).to.equal('claims-1');

    // A background refresh is overtaken by a claims flight.
    clock.advance(3001_000); // past 75 % of 4000 s
    const refresh = held('refreshed');
    expect((await cache.get('k', refresh.fetch)).token).to.equal('claims-1');
    expect(cache.stats().refreshes).to.equal(1);
    expect((await cache.get('k', fixed('claims-2'), { bypass: true, flight: 'digest-2' })).token).to.equal('claims-2');
    refresh.finish();
    await tick();
    await tick();
    expect((await cache.get('k', fixed('unused'))).token).to.equal('claims-2');
  });

  it('keeps distinct keys apart', async () => {
    const clock = fakeClock();
    const f = fakeFetcher(clock);
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now });
    const [a, b] = await Promise.all([cache.get('a', f.fetch), cache.get('b', f.fetch)]);
    expect(a.token).to.not.equal(b.token);
    expect(f.calls).to.equal(2);
  });

  it('evicts the least recently used entry beyond maxEntries', async () => {
    const clock = fakeClock();
    const f = fakeFetcher(clock);
    const cache = new TokenCache({ maxEntries: 2, expiryBufferSec: 300, now: clock.now });
    await cache.get('a', f.fetch);
    await cache.get('b', f.fetch);
    await cache.get('a', f.fetch); // a is now most recent
    await cache.get('c', f.fetch); // evicts b
    expect(cache.stats()).to.include({ size: 2, evictions: 1 });
    await cache.get('a', f.fetch);
    expect(f.calls).to.equal(3);
    await cache.get('b', f.fetch);
    expect(f.calls).to.equal(4);
  });

  it('refreshes ahead in the background at 75 % of the lifetime while serving the current token', async () => {
    const clock = fakeClock();
    const f = fakeFetcher(clock, 4000);
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now });
    await cache.get('k', f.fetch);
    clock.advance(2999_000);
    expect((await cache.get('k', f.fetch)).token).to.equal('token-1');
    expect(f.calls).to.equal(1);
    clock.advance(2_000); // past 3000 s = 75 % of 4000 s
    f.hold();
    expect((await cache.get('k', f.fetch)).token).to.equal('token-1');
    expect((await cache.get('k', f.fetch)).token).to.equal('token-1');
    expect(f.calls).to.equal(2);
    f.release();
    await tick();
    await tick();
    expect((await cache.get('k', f.fetch)).token).to.equal('token-2');
    expect(cache.stats().refreshes).to.equal(1);
  });

  it('honours the issuer refresh_on time', async () => {
    const clock = fakeClock();
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now });
    let n = 0;
    const fetch = async (): Promise<CachedToken> => ({ scheme: 'Bearer', token: `t${++n}`, expiresOn: clock.sec() + 7200, refreshOn: clock.sec() + 60 });
    await cache.get('k', fetch);
    clock.advance(61_000);
    await cache.get('k', fetch);
    await tick();
    expect(n).to.equal(2);
    expect((await cache.get('k', fetch)).token).to.equal('t2');
  });

  it('keeps serving the current token when a background refresh fails and reports the failure', async () => {
    const clock = fakeClock();
    const f = fakeFetcher(clock, 4000);
    const failures: unknown[] = [];
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now, onRefreshError: (_k, e) => failures.push(e) });
    await cache.get('k', f.fetch);
    clock.advance(3001_000);
    f.failNext(new SidecarError('acquisition_unavailable', 'down'));
    expect((await cache.get('k', f.fetch)).token).to.equal('token-1');
    await tick();
    expect(failures).to.have.length(1);
    expect((await cache.get('k', f.fetch)).token).to.equal('token-1');
    expect(f.calls).to.equal(2); // no retry before refreshRetryMs
  });

  it('shares an error with all waiters but does not cache it', async () => {
    const clock = fakeClock();
    const f = fakeFetcher(clock);
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now });
    f.hold();
    f.failNext(new SidecarError('acquisition_rejected', 'AADSTS7000215'));
    const a = cache.get('k', f.fetch);
    const b = cache.get('k', f.fetch);
    await tick();
    f.release();
    const results = await Promise.allSettled([a, b]);
    expect(results.map((r) => r.status)).to.deep.equal(['rejected', 'rejected']);
    expect(f.calls).to.equal(1);
    expect((await cache.get('k', f.fetch)).token).to.equal('token-2');
  });

  it('fails fast inside a Retry-After window without calling the fetcher, then calls again', async () => {
    const clock = fakeClock();
    const f = fakeFetcher(clock);
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now });
    f.failNext(new SidecarError('acquisition_throttled', 'slow down', { retryAfterSec: 5 }));
    await cache.get('k', f.fetch).catch(() => undefined);
    clock.advance(4_000);
    let thrown: unknown;
    try {
      await cache.get('k', f.fetch);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).to.be.instanceOf(SidecarError);
    expect((thrown as SidecarError).code).to.equal('acquisition_throttled');
    expect((thrown as SidecarError).retryAfterSec).to.equal(1);
    expect(f.calls).to.equal(1);
    clock.advance(1_000);
    expect((await cache.get('k', f.fetch)).token).to.equal('token-2');
  });

  it('bounds a Retry-After window to an hour however long the issuer asked for', async () => {
    // 315360000 s (ten years) from a proxy or a typo once blocked the key until the process restarted.
    const clock = fakeClock();
    const f = fakeFetcher(clock);
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now });
    f.failNext(new SidecarError('acquisition_throttled', 'slow down', { retryAfterSec: 315_360_000 }));
    await cache.get('k', f.fetch).catch(() => undefined);
    let thrown: unknown;
    try {
      await cache.get('k', f.fetch);
    } catch (err) {
      thrown = err;
    }
    expect((thrown as SidecarError).code).to.equal('acquisition_throttled');
    expect((thrown as SidecarError).retryAfterSec).to.equal(3600);
    clock.advance(3600_000);
    expect((await cache.get('k', f.fetch)).token).to.equal('token-2');
  });

  it('bypasses the stored token for ForceRefresh but still coalesces concurrent bypasses', async () => {
    const clock = fakeClock();
    const f = fakeFetcher(clock);
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now });
    await cache.get('k', f.fetch);
    f.hold();
    const a = cache.get('k', f.fetch, { bypass: true });
    const b = cache.get('k', f.fetch, { bypass: true });
    await tick();
    f.release();
    const [ta, tb] = await Promise.all([a, b]);
    expect(ta.token).to.equal('token-2');
    expect(tb.token).to.equal('token-2');
    expect(f.calls).to.equal(2);
    expect((await cache.get('k', f.fetch)).token).to.equal('token-2');
  });

  it('fails a fetch that ends without an access token, and neither keeps nor serves it', async () => {
    const clock = fakeClock();
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now });
    const empty = async (): Promise<CachedToken> => ({ scheme: 'Bearer', token: '', expiresOn: clock.sec() + 3600 });
    for (let i = 0; i < 2; i++) {
      let thrown: unknown;
      try {
        await cache.get('k', empty);
      } catch (err) {
        thrown = err;
      }
      expect(thrown).to.be.instanceOf(SidecarError);
      expect((thrown as SidecarError).code).to.equal('acquisition_upstream_failed');
    }
    expect(cache.stats()).to.include({ size: 0, fetches: 2 });
  });

  it('returns but does not keep a token that is already inside the expiry buffer', async () => {
    const clock = fakeClock();
    const f = fakeFetcher(clock, 200);
    const cache = new TokenCache({ maxEntries: 10, expiryBufferSec: 300, now: clock.now });
    expect((await cache.get('k', f.fetch)).token).to.equal('token-1');
    expect((await cache.get('k', f.fetch)).token).to.equal('token-2');
    expect(cache.stats().size).to.equal(0);
  });
});
