import { expect } from 'chai';
import { IntervalMap, OverlapError } from '../src/common/interval-map.js';

// A tiny deterministic PRNG, so a failure reproduces.
function rng(seed: number) {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32;
}

describe('IntervalMap: the ordered mapping index', function () {
  it('inserts, finds and removes, refusing overlaps', function () {
    const m = new IntervalMap<string>();
    m.insert(0x1000n, 0x2000n, 'a');
    m.insert(0x3000n, 0x5000n, 'b');
    expect(() => m.insert(0x1fffn, 0x3000n, 'x')).to.throw(OverlapError, /overlaps \[0x1000, 0x2000\)/);
    expect(() => m.insert(0x0n, 0x8000n, 'x')).to.throw(OverlapError);
    expect(() => m.insert(0x10n, 0x10n, 'x')).to.throw(RangeError);
    m.insert(0x2000n, 0x3000n, 'c'); // touching neighbours do not overlap
    expect(m.find(0x2fffn)?.value).to.equal('c');
    expect(m.find(0x5000n)).to.equal(undefined);
    expect([...m.overlapping(0x1800n, 0x3001n)].map((i) => i.value)).to.deep.equal(['a', 'c', 'b']);
    expect(m.remove(0x2000n)?.value).to.equal('c');
    expect(m.remove(0x2000n)).to.equal(undefined);
    expect([...m].map((i) => i.value)).to.deep.equal(['a', 'b']);
    expect(m.size).to.equal(2);
    m.check();
  });

  it('handles the top of the 64-bit space', function () {
    const m = new IntervalMap<number>();
    const top = 1n << 64n;
    m.insert(top - 0x1000n, top, 1);
    expect(m.find(top - 1n)?.value).to.equal(1);
    expect(m.firstOverlap(0n, top)?.value).to.equal(1);
  });

  it('agrees with a naive model over 20,000 random operations', function () {
    const r = rng(7);
    const m = new IntervalMap<number>();
    const naive = new Map<bigint, bigint>(); // start -> end
    for (let i = 0; i < 20_000; i++) {
      const start = BigInt(Math.floor(r() * 4096)) * 0x1000n;
      const end = start + BigInt(1 + Math.floor(r() * 16)) * 0x1000n;
      if (r() < 0.6) {
        const clash = [...naive].some(([s, e]) => s < end && start < e);
        if (clash) expect(() => m.insert(start, end, i)).to.throw(OverlapError);
        else {
          m.insert(start, end, i);
          naive.set(start, end);
        }
      } else {
        const had = naive.delete(start);
        expect(m.remove(start) !== undefined).to.equal(had);
      }
      const probe = BigInt(Math.floor(r() * 4096 * 0x1000));
      const want = [...naive].find(([s, e]) => s <= probe && probe < e)?.[0];
      expect(m.find(probe)?.start).to.equal(want);
    }
    m.check();
    expect(m.size).to.equal(naive.size);
    expect([...m].map((x) => x.start)).to.deep.equal([...naive.keys()].sort((a, b) => (a < b ? -1 : 1)));
  });

  it('holds 1,000,000 entries and stays balanced', function () {
    this.timeout(120_000);
    const m = new IntervalMap<number>();
    const n = 1_000_000;
    // Insert in a scrambled order (a multiplicative permutation of 0..n-1).
    for (let i = 0; i < n; i++) {
      const k = BigInt((i * 7919) % n);
      m.insert(k * 0x2000n, k * 0x2000n + 0x1000n, i);
    }
    expect(m.size).to.equal(n);
    m.check();
    expect(m.find(0x2000n * 123456n + 0x800n)?.start).to.equal(0x2000n * 123456n);
    expect(m.find(0x2000n * 123456n + 0x1800n)).to.equal(undefined); // in the gap
    for (let k = 0; k < n; k += 2) m.remove(BigInt(k) * 0x2000n);
    expect(m.size).to.equal(n / 2);
    m.check();
    expect([...m.overlapping(0n, 0x2000n * 10n)].length).to.equal(5);
  });
});
