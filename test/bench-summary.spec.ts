// The rounds of the benchmark runner into rows (src/bench/summary.ts): best, median and
// count per (workload, kernel, case, mode, phase, backend), and ratios to a baseline mode.
import { expect } from 'chai';
import { median, ratio, summarize } from '../src/bench/summary.js';
import { sample } from './bench-kit.js';

/** A sample of the bulk workload; override what the test is about. */

describe('bench summary: rounds into rows, ratios to a baseline', function () {
  it('takes the best round for rates and times (the most ops/s, the fewest ms) and the median for B/mapping (heap noise goes both ways)', function () {
    const rows = summarize([
      sample({ value: 100, round: 0 }),
      sample({ value: 300, round: 1 }),
      sample({ value: 200, round: 2 }),
      sample({ workload: 'scale', case: '1,000 live', phase: 'txn', metric: 'ms', value: 5, round: 0 }),
      sample({ workload: 'scale', case: '1,000 live', phase: 'txn', metric: 'ms', value: 3, round: 1 }),
      sample({ workload: 'memory', case: 'm', phase: 'heap', metric: 'B/mapping', value: 90, round: 0 }),
      sample({ workload: 'memory', case: 'm', phase: 'heap', metric: 'B/mapping', value: 80, round: 1 }),
      sample({ workload: 'memory', case: 'm', phase: 'heap', metric: 'B/mapping', value: 85, round: 2 }),
      sample({ workload: 'memory', case: 'm', phase: 'heap', metric: 'B/mapping', value: 99, round: 3 }),
    ]);
    expect(rows.map((r) => [r.workload, r.value, r.median, r.rounds])).to.deep.equal([
      ['bulk', 300, 200, 3],
      ['scale', 3, 4, 2],
      ['memory', 87.5, 87.5, 4],
    ]);
    expect(rows[0]).to.include({
      kernel: 'sim',
      case: '16,384 x 4 KiB',
      mode: 'engine',
      phase: 'add',
      n: 16_384,
    });
    expect(rows[0]).to.not.have.property('backend');
  });

  it('keeps one row per (workload, kernel, case, mode, phase, backend), in first-seen order', function () {
    const rows = summarize([
      sample({ value: 1, phase: 'del' }),
      sample({ value: 2 }),
      sample({ value: 3, mode: 'qemu' }),
      sample({ value: 4, kernel: 'null' }),
      sample({ value: 5, case: '512 x 2 MiB' }),
      sample({ value: 6, backend: 'iommufd' }),
      sample({ value: 7, backend: 'legacy' }),
      sample({ value: 8, workload: 'storm' }),
      sample({ value: 9, phase: 'del', round: 1 }),
    ]);
    expect(rows.map((r) => r.value)).to.deep.equal([9, 2, 3, 4, 5, 6, 7, 8]);
    expect(rows.map((r) => r.rounds)).to.deep.equal([2, 1, 1, 1, 1, 1, 1, 1]);
    expect(rows[5]!.backend).to.equal('iommufd');
    expect(rows[6]!.backend).to.equal('legacy');
  });

  it('leaves NaN rounds out of the figures but counts them', function () {
    const [r] = summarize([sample({ value: NaN }), sample({ value: 10, round: 1 })]);
    expect(r).to.include({ value: 10, median: 10, rounds: 2 });
    const [none] = summarize([sample({ value: NaN })]);
    expect(Number.isNaN(none!.value)).to.equal(true);
  });

  it('rates a row against the same case of a base mode as higher-is-better', function () {
    const rows = summarize([
      sample({ mode: 'engine', value: 300 }),
      sample({ mode: 'qemu', value: 100 }),
      sample({ mode: 'engine', phase: 'txn', metric: 'ms', value: 2 }),
      sample({ mode: 'qemu', phase: 'txn', metric: 'ms', value: 8 }),
      sample({ mode: 'engine', phase: 'heap', metric: 'B/mapping', value: 50 }),
      sample({ mode: 'qemu', phase: 'heap', metric: 'B/mapping', value: 25 }),
      sample({ mode: 'engine', kernel: 'null', value: 1000 }),
      sample({ mode: 'engine', backend: 'legacy', value: 1000 }),
    ]);
    const [add, , txn, , heap, , nullKernel, legacy] = rows;
    expect(ratio(rows, add!, 'qemu')).to.equal(3);
    expect(ratio(rows, txn!, 'qemu')).to.equal(4);
    expect(ratio(rows, heap!, 'qemu')).to.equal(0.5);
    // No qemu row on the null kernel, none with the legacy backend, no 'floor' at all.
    expect(Number.isNaN(ratio(rows, nullKernel!, 'qemu'))).to.equal(true);
    expect(Number.isNaN(ratio(rows, legacy!, 'qemu'))).to.equal(true);
    expect(Number.isNaN(ratio(rows, add!, 'floor'))).to.equal(true);
  });

  it('takes the median of odd and even counts', function () {
    expect(median([3, 1, 2])).to.equal(2);
    expect(median([4, 1, 3, 2])).to.equal(2.5);
    expect(Number.isNaN(median([]))).to.equal(true);
  });
});
