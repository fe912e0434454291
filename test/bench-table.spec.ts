// The benchmark report as text (src/bench/table.ts): the plain tables per workload with
// their ratio columns, the target lines, and the markdown for the README.
import { expect } from 'chai';
import { summarize } from '../src/bench/summary.js';
import {
  formatGoal,
  formatMarkdown,
  formatNumber,
  formatRatio,
  formatResults,
  formatValue,
  formatTarget,
} from '../src/bench/table.js';
import type { TargetResult } from '../src/bench/types.js';
import { sample } from './bench-kit.js';

const rows = summarize([
  sample({ value: 1_234_567.8 }),
  sample({ value: 1_000_000, round: 1 }),
  sample({ mode: 'qemu', value: 617_283.9 }),
  sample({ kernel: 'linux', mode: 'engine', value: 90_000 }),
  sample({ kernel: 'linux', mode: 'floor', value: 100_000 }),
  sample({ kernel: 'linux', mode: 'qemu', value: 45_000 }),
  sample({
    workload: 'scale',
    kernel: 'null',
    case: '1,000 live',
    phase: 'txn',
    metric: 'ms',
    value: 0.0123,
  }),
  sample({
    workload: 'scale',
    kernel: 'null',
    case: '1,000,000 live',
    phase: 'txn',
    metric: 'ms',
    value: 12.5,
  }),
]);

const targets: TargetResult[] = [
  {
    id: 'null.bulk.4k.add',
    description: 'engine >= 1,000,000 region ops/s for bulk 4 KiB adds (null kernel)',
    value: 1_500_000,
    goal: 1_000_000,
    comparison: '>=',
    unit: 'ops/s',
    status: 'met',
    ratio: 1.5,
  },
  {
    id: 'scale.1m',
    description: 'a transaction with 1,000,000 live mappings within 2x of one with 1,000',
    value: 4,
    goal: 2,
    comparison: '<=',
    unit: 'x',
    status: 'missed',
    ratio: 0.5,
  },
  {
    id: 'sim.storm.awaited',
    description: 'engine >= 0.5x qemu for an awaited storm (simulated kernel)',
    value: null,
    goal: 0.5,
    comparison: '>=',
    unit: 'x qemu',
    status: 'not measured',
    ratio: null,
  },
];

describe('bench table: the report as plain text and markdown', function () {
  it('formats numbers with thousands separators and sensible decimals', function () {
    expect(formatNumber(1_234_567.8)).to.equal('1,234,568');
    expect(formatNumber(123.4)).to.equal('123');
    expect(formatNumber(12.345)).to.equal('12.35');
    expect(formatNumber(0.012345)).to.equal('0.0123');
    expect(formatNumber(0)).to.equal('0.00');
    expect(formatNumber(NaN)).to.equal('-');
    expect(formatRatio(2)).to.equal('2.00x');
    expect(formatRatio(null)).to.equal('-');
    expect(formatRatio(0.5)).to.equal('0.50x');
    expect(formatRatio(0.001234)).to.equal('0.00123x');
    expect(formatRatio(1234.5)).to.equal('1,235x');
    expect(formatRatio(NaN)).to.equal('-');
    expect(formatGoal(1_000_000)).to.equal('1,000,000');
    expect(formatGoal(0.5)).to.equal('0.5');
    expect(formatGoal(1)).to.equal('1');
    expect(formatValue(0.7351, 'x qemu')).to.equal('0.74x qemu');
    expect(formatValue(1.5, 'x')).to.equal('1.50x');
    expect(formatValue(0.5, 'x qemu', true)).to.equal('0.5x qemu');
    expect(formatValue(1_000_000, 'ops/s', true)).to.equal('1,000,000 ops/s');
    expect(formatValue(87.25, 'B/mapping')).to.equal('87.25 B/mapping');
  });

  it('prints one aligned table per workload with the ratio columns its baselines allow', function () {
    const lines = formatResults(rows, []);
    const bulkAt = lines.indexOf('bulk');
    const scaleAt = lines.indexOf('scale');
    expect(bulkAt).to.equal(0);
    expect(scaleAt).to.be.above(bulkAt);
    const bulk = lines.slice(bulkAt + 1, scaleAt - 1);
    expect(bulk[0]).to.match(/^kernel\s+case\s+mode\s+phase\s+value\s+x qemu\s+x floor\s+rounds$/);
    expect(bulk[1]).to.match(/^-+( {2}-+)+$/);
    // Right-aligned numbers: every data line as long as the rule under the header.
    for (const l of bulk.slice(2)) expect(l.length).to.equal(bulk[1]!.length);
    const engineSim = bulk.find((l) => l.startsWith('sim') && /\bengine\b/.test(l))!;
    expect(engineSim).to.contain('1,234,568 ops/s').and.contain('2.00x').and.match(/\s2$/);
    const engineLinux = bulk.find((l) => l.startsWith('linux') && /\bengine\b/.test(l))!;
    expect(engineLinux).to.contain('90,000 ops/s').and.contain('2.00x').and.contain('0.90x');
    // The scale workload measured neither baseline: no ratio columns.
    expect(lines[scaleAt + 1]).to.match(/^kernel\s+case\s+mode\s+phase\s+value\s+rounds$/);
    expect(lines.slice(scaleAt).join('\n')).to.contain('0.0123 ms').and.contain('12.50 ms');
    expect(lines).to.not.include('targets');
  });

  it('shows the backend column only when rows have one', function () {
    const withBackend = summarize([
      sample({ value: 1, backend: 'iommufd' }),
      sample({ value: 2, backend: 'legacy' }),
    ]);
    const lines = formatResults(withBackend, []);
    expect(lines[1]).to.match(/^kernel\s+case\s+backend\s+mode/);
    expect(lines[3]).to.contain('iommufd');
    expect(lines[4]).to.contain('legacy');
  });

  it('prints one line per target: status, description, value, goal, distance', function () {
    const lines = formatResults(rows, targets);
    const at = lines.indexOf('targets');
    expect(lines.slice(at + 1)).to.deep.equal([
      'MET           engine >= 1,000,000 region ops/s for bulk 4 KiB adds (null kernel): 1,500,000 ops/s (goal >= 1,000,000, 1.50x)',
      'MISSED        a transaction with 1,000,000 live mappings within 2x of one with 1,000: 4.00x (goal <= 2, 0.50x)',
      'not measured  engine >= 0.5x qemu for an awaited storm (simulated kernel): - x qemu (goal >= 0.5)',
    ]);
    expect(formatTarget({ ...targets[1]!, value: -5, status: 'met', ratio: null })).to.match(
      /: -5.00x \(goal <= 2\)$/,
    );
  });

  it('writes markdown tables per workload and for the targets', function () {
    const md = formatMarkdown(rows, targets);
    expect(md[0]).to.equal('### bulk');
    expect(md[2]).to.equal('| kernel | case | mode | phase | value | x qemu | x floor | rounds |');
    expect(md[3]).to.equal('| --- | --- | --- | --- | ---: | ---: | ---: | ---: |');
    expect(md[4]).to.equal('| sim | 16,384 x 4 KiB | engine | add | 1,234,568 ops/s | 2.00x | - | 2 |');
    expect(md).to.include('### scale');
    const t = md.indexOf('### targets');
    expect(md.slice(t + 2, t + 7)).to.deep.equal([
      '| status | target | value | goal | ratio |',
      '| --- | --- | ---: | --- | ---: |',
      '| MET | engine >= 1,000,000 region ops/s for bulk 4 KiB adds (null kernel) | 1,500,000 ops/s | >= 1,000,000 ops/s | 1.50x |',
      '| MISSED | a transaction with 1,000,000 live mappings within 2x of one with 1,000 | 4.00x | <= 2x | 0.50x |',
      '| not measured | engine >= 0.5x qemu for an awaited storm (simulated kernel) | - | >= 0.5x qemu | - |',
    ]);
    // A pipe in a cell is escaped, not a column break.
    const piped = formatMarkdown(summarize([sample({ value: 1, case: 'a|b' })]), []);
    expect(piped[4]).to.contain('a\\|b');
  });
});
