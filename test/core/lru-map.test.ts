/**
 * LruMap (src/bounded-map.ts): bounded, least recently used out, and a hot key is not deleted and
 * re-added on every read (V8 keeps deleted entries in the bucket chain until a rehash).
 */
import { expect } from 'chai';
import { LruMap } from '../../src/bounded-map.js';

/** The keys a map still holds, by asking for each (which marks it used: only for the final check). */
function held<K>(map: LruMap<K, unknown>, keys: readonly K[]): K[] {
  return keys.filter((k) => map.get(k) !== undefined);
}

describe('LruMap', function () {
  it('holds at most max entries and reports what each set evicted', function () {
    const m = new LruMap<string, number>(3);
    expect(m.set('a', 1)).to.equal(0);
    m.set('b', 2);
    m.set('c', 3);
    expect(m.set('d', 4)).to.equal(1);
    expect(m.size).to.equal(3);
    expect(held(m, ['a', 'b', 'c', 'd'])).to.deep.equal(['b', 'c', 'd']);
  });

  it('is exact LRU for small maps: a read saves an entry from eviction', function () {
    const m = new LruMap<string, number>(3);
    m.set('a', 1);
    m.set('b', 2);
    m.set('c', 3);
    expect(m.get('a')).to.equal(1);
    m.set('d', 4); // b is least recently used
    expect(held(m, ['a', 'b', 'c', 'd'])).to.deep.equal(['a', 'c', 'd']);
  });

  it('replacing a value makes it the newest; delete and clear remove', function () {
    const m = new LruMap<string, number>(2);
    m.set('a', 1);
    m.set('b', 2);
    m.set('a', 10);
    m.set('c', 3); // b is oldest now
    expect(m.get('a')).to.equal(10);
    expect(m.get('b')).to.equal(undefined);
    expect(m.delete('a')).to.equal(true);
    expect(m.size).to.equal(1);
    m.clear();
    expect(m.size).to.equal(0);
  });

  it('never evicts an entry read at least once every max/4 insertions, under heavy churn', function () {
    const max = 1000;
    const m = new LruMap<string, number>(max);
    for (let i = 0; i < max; i++) m.set(`k${i}`, i);
    m.set('hot', -1);
    for (let i = 0; i < 20 * max; i++) {
      m.set(`churn${i}`, i);
      if (i % (max / 4) === 0) expect(m.get('hot'), `after ${i} insertions`).to.equal(-1);
    }
    expect(m.size).to.equal(max);
    // Everything that was never read again is gone.
    expect(m.get('k0')).to.equal(undefined);
  });

  it('keeps nothing with max 0', function () {
    const m = new LruMap<string, number>(0);
    expect(m.set('a', 1)).to.equal(1);
    expect(m.size).to.equal(0);
    expect(m.get('a')).to.equal(undefined);
  });
});
