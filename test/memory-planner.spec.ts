import { expect } from 'chai';
import fc from 'fast-check';
import { IntervalMap } from '../src/common/interval-map.js';
import {
  applyOp,
  packLanes,
  planResult,
  planTransaction,
  type DmaRequest,
  type PlannedOp,
} from '../src/memory/planner.js';
import type { DmaMapping } from '../src/memory/sections.js';

const P = 0x1000n;
const m = (page: number, pages: number, va = 0x10_0000 + page): DmaMapping => ({
  iova: BigInt(page) * P,
  size: BigInt(pages) * P,
  vaddr: BigInt(va) * P,
  readonly: false,
});
const map = (page: number, pages: number): DmaRequest => ({ type: 'map', mapping: m(page, pages) });
const unmap = (page: number, pages: number): DmaRequest => ({
  type: 'unmap',
  iova: BigInt(page) * P,
  size: BigInt(pages) * P,
});
const tableOf = (...ms: DmaMapping[]) => {
  const t = new IntervalMap<DmaMapping>();
  for (const x of ms) t.insert(x.iova, x.iova + x.size, x);
  return t;
};
const rows = (t: IntervalMap<DmaMapping>) => [...t].map((i) => i.value);
const brief = (o: PlannedOp) => `${o.op} ${o.iova / P}+${o.size / P}`;
const overlaps = (a: PlannedOp, b: PlannedOp) => a.iova < b.iova + b.size && b.iova < a.iova + a.size;

describe('memory/planner', function () {
  it('del and re-add of the same range: unmap then map, in one lane', function () {
    const t = tableOf(m(0, 4));
    const plan = planTransaction([unmap(0, 4), map(0, 4)], t);
    expect(plan.ops.map(brief)).to.deep.equal(['unmap 0+4', 'map 0+4']);
    expect(plan.lanes.map((l) => l.map(brief))).to.deep.equal([['unmap 0+4', 'map 0+4']]);
    expect(rows(planResult(t, plan))).to.deep.equal([m(0, 4)]);
    expect(rows(t), 'input table untouched').to.deep.equal([m(0, 4)]);
  });

  it('keeps transaction order for overlapping ops and splits disjoint ones into lanes', function () {
    const t = tableOf(m(0, 2), m(10, 2));
    const plan = planTransaction(
      [map(4, 2), unmap(0, 2), unmap(10, 2), map(0, 1), map(11, 3), map(20, 1)],
      t,
    );
    expect(plan.lanes.map((l) => l.map(brief))).to.deep.equal([
      ['map 4+2'],
      ['unmap 0+2', 'map 0+1'],
      ['unmap 10+2', 'map 11+3'],
      ['map 20+1'],
    ]);
  });

  it('a del covering part of a mapping unmaps it whole and re-maps the remainders', function () {
    const t = tableOf(m(0, 8, 100));
    const plan = planTransaction([unmap(2, 3)], t);
    expect(plan.ops.map(brief)).to.deep.equal(['unmap 0+8', 'map 0+2', 'map 5+3']);
    expect(rows(planResult(t, plan))).to.deep.equal([m(0, 2, 100), m(5, 3, 105)]);
    expect(plan.lanes).to.have.length(1);
  });

  it('a del spanning several mappings unmaps each whole mapping', function () {
    const plan = planTransaction([unmap(1, 6)], tableOf(m(0, 2), m(3, 1), m(6, 2)));
    expect(plan.ops.map(brief)).to.deep.equal(['unmap 0+2', 'unmap 3+1', 'unmap 6+2', 'map 0+1', 'map 7+1']);
  });

  it('sorted, disjoint maps (a bulk add): one lane each, refused only where the live table has something', function () {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 200 }), { maxLength: 40 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 3 })), { maxLength: 60 }),
        (livePages, steps) => {
          const t = tableOf(...livePages.map((p) => m(p * 4, 2)));
          const reqs: DmaRequest[] = [];
          let page = 0;
          for (const [gap, pages] of steps) {
            page += gap;
            reqs.push(map(page, pages));
            page += pages;
          }
          const plan = planTransaction(reqs, t);
          const hits = (r: DmaRequest) =>
            r.type === 'map' && !!t.firstOverlap(r.mapping.iova, r.mapping.iova + r.mapping.size);
          expect(plan.refused).to.deep.equal(
            reqs.flatMap((r, source) => (hits(r) ? [{ source, reason: 'overlap' }] : [])),
          );
          expect(plan.ops.map((o) => o.source)).to.deep.equal(
            reqs.flatMap((r, source) => (hits(r) ? [] : [source])),
          );
          expect(plan.lanes).to.deep.equal(plan.ops.map((o) => [o]));
          // The general path gives the same ops: the same requests with one no-op unmap in front.
          const general = planTransaction([unmap(100_000, 1), ...reqs], t);
          expect(general.ops.map(brief)).to.deep.equal(plan.ops.map(brief));
          expect(rows(planResult(t, general))).to.deep.equal(rows(planResult(t, plan)));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('refuses a map over a live mapping (no replace) and empty requests; unmapping nothing is no op', function () {
    const plan = planTransaction([map(1, 2), unmap(9, 1), map(5, 0)], tableOf(m(0, 2)));
    expect(plan.ops).to.deep.equal([]);
    expect(plan.refused).to.deep.equal([
      { source: 0, reason: 'overlap' },
      { source: 2, reason: 'empty' },
    ]);
  });

  it('packs lanes into batches, keeping each lane whole', function () {
    const lanes = [[1, 2, 3], [4], [5, 6], [7]];
    const b = packLanes(lanes, 2);
    expect(b).to.deep.equal([
      [[1, 2, 3], [7]],
      [[5, 6], [4]],
    ]);
    expect(packLanes(lanes, 10)).to.have.length(4);
  });

  it('10,000-op random transactions: the plan, run in any lane interleaving on a strict kernel model, gives the naive sequential result', function () {
    this.timeout(60_000);
    // A naive model: arrays, linear scans.
    type M = { s: number; e: number; va: number };
    const naive = (state: M[], reqs: { t: 'map' | 'unmap'; s: number; n: number; va: number }[]) => {
      let st = state.map((x) => ({ ...x }));
      for (const r of reqs) {
        const e = r.s + r.n;
        if (r.t === 'map') {
          if (!st.some((x) => x.s < e && r.s < x.e)) st.push({ s: r.s, e, va: r.va });
        } else {
          const next: M[] = [];
          for (const x of st) {
            if (!(x.s < e && r.s < x.e)) next.push(x);
            else {
              if (x.s < r.s) next.push({ s: x.s, e: r.s, va: x.va });
              if (x.e > e) next.push({ s: e, e: x.e, va: x.va + (e - x.s) });
            }
          }
          st = next;
        }
      }
      return st.sort((a, b) => a.s - b.s);
    };
    // A strict kernel: EEXIST on overlap, refuses unmaps that split (and counts bytes).
    const kernelRun = (t: IntervalMap<DmaMapping>, o: PlannedOp) => {
      if (o.op === 'map') {
        if (t.firstOverlap(o.iova, o.iova + o.size)) throw new Error(`EEXIST ${brief(o)}`);
        t.insert(o.iova, o.iova + o.size, {
          iova: o.iova,
          size: o.size,
          vaddr: o.vaddr,
          readonly: o.readonly,
        });
      } else {
        for (const x of t.overlapping(o.iova, o.iova + o.size))
          if (x.start < o.iova || x.end > o.iova + o.size) throw new Error(`split ${brief(o)}`);
        const before = [...t].length;
        applyOp(t, o);
        if ([...t].length === before) throw new Error(`nothing to unmap at ${brief(o)}`);
      }
    };
    const req = fc.record({
      t: fc.constantFrom('map' as const, 'unmap' as const),
      s: fc.nat(400),
      n: fc.integer({ min: 1, max: 24 }),
      va: fc.nat(1 << 20),
    });
    let total = 0;
    fc.assert(
      fc.property(
        fc.array(fc.array(req, { minLength: 30, maxLength: 60 }), { minLength: 40, maxLength: 40 }),
        fc.nat(),
        (txns, seed) => {
          let table = new IntervalMap<DmaMapping>();
          let model: M[] = [];
          let rnd = seed;
          for (const reqs of txns) {
            total += reqs.length;
            const requests: DmaRequest[] = reqs.map((r) =>
              r.t === 'map'
                ? {
                    type: 'map',
                    mapping: {
                      iova: BigInt(r.s) * P,
                      size: BigInt(r.n) * P,
                      vaddr: BigInt(r.va) * P,
                      readonly: false,
                    },
                  }
                : { type: 'unmap', iova: BigInt(r.s) * P, size: BigInt(r.n) * P },
            );
            const plan = planTransaction(requests, table);
            const expected = planResult(table, plan);
            // Lanes are pairwise disjoint.
            const laneOf = new Map<PlannedOp, number>();
            plan.lanes.forEach((l, i) => l.forEach((o) => laneOf.set(o, i)));
            for (let i = 0; i < plan.ops.length; i++)
              for (let j = i + 1; j < plan.ops.length; j++)
                if (overlaps(plan.ops[i]!, plan.ops[j]!))
                  expect(laneOf.get(plan.ops[i]!)).to.equal(laneOf.get(plan.ops[j]!));
            // Run the lanes interleaved at random on the strict kernel.
            const cursors = plan.lanes.map(() => 0);
            let live = plan.lanes.map((_, i) => i);
            while (live.length) {
              rnd = (rnd * 1103515245 + 12345) & 0x7fffffff;
              const li = live[rnd % live.length]!;
              kernelRun(table, plan.lanes[li]![cursors[li]!++]!);
              live = live.filter((l) => cursors[l]! < plan.lanes[l]!.length);
            }
            model = naive(model, reqs);
            const got = [...table].map((x) => ({
              s: Number(x.start / P),
              e: Number(x.end / P),
              va: Number(x.value.vaddr / P),
            }));
            expect(got).to.deep.equal(model);
            expect(rows(expected)).to.deep.equal(rows(table));
            table = expected;
          }
        },
      ),
      { numRuns: 10 },
    );
    expect(total).to.be.greaterThan(10_000);
  });
});
