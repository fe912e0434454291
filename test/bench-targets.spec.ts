// The targets (src/bench/targets.ts): each one met, missed (with its distance) and
// not measured, and the worst case deciding where several match.
import { expect } from 'chai';
import { summarize } from '../src/bench/summary.js';
import { TARGETS, caseMatches, distance, evaluateTargets } from '../src/bench/targets.js';
import type { BenchSample, TargetResult } from '../src/bench/types.js';
import { sample } from './bench-kit.js';

/** A sample of the bulk workload; override what the test is about. */

const judge = (samples: BenchSample[]) => evaluateTargets(summarize(samples));
const byId = (rs: TargetResult[], id: string) => rs.find((r) => r.id === id)!;

const bulk = (kernel: BenchSample['kernel'], shape: string, mode: string, phase: string, value: number) =>
  sample({ workload: 'bulk', kernel, case: shape, mode, phase, value, backend: 'iommufd' });
const storm = (kernel: BenchSample['kernel'], mode: string, phase: string, value: number) =>
  sample({ workload: 'storm', kernel, case: '64 x 1,024 regions', mode, phase, value, backend: 'iommufd' });
const scale = (kernel: BenchSample['kernel'], live: string, ms: number) =>
  sample({ workload: 'scale', kernel, case: `${live} live`, phase: 'txn', metric: 'ms', value: ms });
const memory = (containers: number, bytes: number) =>
  sample({
    workload: 'memory',
    kernel: 'sim',
    case: `1,000,000 mappings, ${containers} container${containers > 1 ? 's' : ''}`,
    phase: 'heap',
    metric: 'B/mapping',
    value: bytes,
  });
const fill = (mode: string, value: number) =>
  sample({
    workload: 'second-container',
    kernel: 'linux',
    case: '65,536 x 4 KiB',
    mode,
    phase: 'fill',
    value,
  });

/** Samples that meet every target (some exactly at the goal: the goal itself is met). */
function allMet(): BenchSample[] {
  return [
    bulk('null', '16,384 x 4 KiB', 'engine', 'add', 2e6),
    bulk('null', '16,384 x 4 KiB', 'engine', 'del', 3e6),
    storm('null', 'engine', 'awaited', 2e5),
    storm('null', 'engine', 'pipelined', 1e6),
    scale('null', '1,000', 1),
    scale('null', '1,000,000', 1.5),
    memory(1, 80),
    memory(2, 110),
    bulk('sim', '16,384 x 4 KiB', 'engine', 'add', 200),
    bulk('sim', '16,384 x 4 KiB', 'qemu', 'add', 100),
    bulk('sim', '16,384 x 4 KiB', 'engine', 'del', 100),
    bulk('sim', '16,384 x 4 KiB', 'qemu', 'del', 100),
    storm('sim', 'engine', 'awaited', 60),
    storm('sim', 'qemu', 'awaited', 100),
    bulk('linux', '16,384 x 4 KiB', 'engine', 'add', 90),
    bulk('linux', '16,384 x 4 KiB', 'floor', 'add', 100),
    bulk('linux', '16,384 x 4 KiB', 'engine', 'del', 80),
    bulk('linux', '16,384 x 4 KiB', 'floor', 'del', 100),
    bulk('linux', '512 x 2 MiB', 'engine', 'add', 95),
    bulk('linux', '512 x 2 MiB', 'floor', 'add', 100),
    bulk('linux', '512 x 2 MiB', 'engine', 'del', 90),
    bulk('linux', '512 x 2 MiB', 'floor', 'del', 100),
    fill('copy', 300),
    fill('map', 100),
  ];
}

describe('bench targets: the issue goals judged on a run', function () {
  it('lists the issue targets with short, unique, stable ids', function () {
    expect(TARGETS.map((t) => t.id)).to.deep.equal([
      'null.bulk.4k.add',
      'null.bulk.4k.del',
      'null.storm.awaited',
      'null.storm.pipelined',
      'scale.1m',
      'memory.1c',
      'memory.2c',
      'sim.bulk.add',
      'sim.bulk.del',
      'sim.storm.awaited',
      'linux.bulk.4k.add',
      'linux.bulk.4k.del',
      'linux.bulk.2m.add',
      'linux.bulk.2m.del',
      'linux.second-container',
    ]);
    for (const t of TARGETS) expect(t.description).to.contain(t.comparison);
  });

  it('reports every target as met on a run that meets them, with the values the issue defines', function () {
    const rs = judge(allMet());
    expect(rs.filter((r) => r.status !== 'met').map((r) => r.id)).to.deep.equal([]);
    const value = (id: string) => byId(rs, id).value;
    expect(value('null.bulk.4k.add')).to.equal(2e6);
    expect(value('null.storm.pipelined')).to.equal(1e6);
    expect(value('scale.1m')).to.equal(1.5);
    expect(value('memory.1c')).to.equal(80);
    expect(value('memory.2c')).to.equal(30);
    expect(value('sim.bulk.add')).to.equal(2);
    expect(value('sim.bulk.del')).to.equal(1);
    expect(value('sim.storm.awaited')).to.equal(0.6);
    expect(value('linux.bulk.4k.del')).to.equal(0.8);
    expect(value('linux.second-container')).to.equal(3);
    // The distance: value / goal for '>=', goal / value for '<='.
    expect(byId(rs, 'null.bulk.4k.add').ratio).to.equal(2);
    expect(byId(rs, 'scale.1m').ratio).to.be.closeTo(2 / 1.5, 1e-12);
    expect(byId(rs, 'memory.1c').ratio).to.equal(1.25);
    expect(byId(rs, 'sim.bulk.del').ratio).to.equal(1);
  });

  it('reports each target missed, with how far, when its sample falls short', function () {
    // Every sample of allMet() that a target reads, made worse: one target at a time.
    const worse: Record<string, [number, number, number]> = {
      // id: [index into allMet(), new value, expected value]
      'null.bulk.4k.add': [0, 5e5, 5e5],
      'null.bulk.4k.del': [1, 9e5, 9e5],
      'null.storm.awaited': [2, 5e4, 5e4],
      'null.storm.pipelined': [3, 4e5, 4e5],
      'scale.1m': [5, 4, 4],
      'memory.1c': [6, 125, 125],
      'memory.2c': [7, 130, 50],
      'sim.bulk.add': [8, 50, 0.5],
      'sim.bulk.del': [10, 90, 0.9],
      'sim.storm.awaited': [12, 25, 0.25],
      'linux.bulk.4k.add': [14, 40, 0.4],
      'linux.bulk.4k.del': [16, 79, 0.79],
      'linux.bulk.2m.add': [18, 45, 0.45],
      'linux.bulk.2m.del': [20, 89, 0.89],
      'linux.second-container': [22, 150, 1.5],
    };
    expect(Object.keys(worse)).to.have.members(TARGETS.map((t) => t.id));
    for (const [id, [at, v, expected]] of Object.entries(worse)) {
      const samples = allMet();
      samples[at] = { ...samples[at]!, value: v };
      const rs = judge(samples);
      const missed = rs.filter((r) => r.status === 'missed');
      expect(
        missed.map((r) => r.id),
        id,
      ).to.deep.equal([id]);
      const r = missed[0]!;
      expect(r.value, id).to.be.closeTo(expected, 1e-9);
      const want = r.comparison === '>=' ? expected / r.goal : r.goal / expected;
      expect(r.ratio, id).to.be.closeTo(want, 1e-9);
      expect(r.ratio!, id).to.be.below(1);
    }
  });

  it('reports targets without rows as not measured', function () {
    const rs = judge([]);
    expect(rs).to.have.length(TARGETS.length);
    for (const r of rs) expect(r).to.include({ status: 'not measured', value: null, ratio: null });
    // Rows of the target's workload and kernel, but not its baseline or its pair, do not count either.
    const partial = judge([
      bulk('sim', '16,384 x 4 KiB', 'engine', 'add', 200),
      bulk('linux', '512 x 2 MiB', 'engine', 'add', 95),
      scale('sim', '1,000,000', 3),
      memory(2, 110),
      fill('copy', 300),
    ]);
    for (const id of [
      'sim.bulk.add',
      'linux.bulk.2m.add',
      'scale.1m',
      'memory.1c',
      'memory.2c',
      'linux.second-container',
    ])
      expect(byId(partial, id).status, id).to.equal('not measured');
  });

  it('matches bulk cases by their size suffix and other targets by their exact case name', function () {
    const rs = judge([
      bulk('null', '1,638 x 4 KiB', 'engine', 'add', 2e6),
      bulk('null', '16,384 x 4 KiB', 'engine', 'del', 2e6),
      bulk('null', '16,384 x 2 MiB', 'engine', 'del', 1),
      scale('null', '100,000', 100),
      scale('null', '1,000', 1),
    ]);
    expect(byId(rs, 'null.bulk.4k.add')).to.include({ status: 'met', value: 2e6 });
    expect(byId(rs, 'null.bulk.4k.del')).to.include({ status: 'met', value: 2e6 });
    expect(byId(rs, 'scale.1m').status).to.equal('not measured');
    expect(caseMatches('512 x 2 MiB', { endsWith: ' x 2 MiB' })).to.equal(true);
    expect(caseMatches('512 x 2 MiB', { equals: '512 x 2' })).to.equal(false);
  });

  it('takes the worst of several matching cases, backends and kernels', function () {
    const rs = judge([
      bulk('null', '16,384 x 4 KiB', 'engine', 'add', 2e6),
      bulk('null', '1,024 x 4 KiB', 'engine', 'add', 7e5),
      { ...bulk('null', '16,384 x 4 KiB', 'engine', 'add', 3e6), backend: 'legacy' },
      scale('null', '1,000', 1),
      scale('null', '1,000,000', 1.5),
      scale('sim', '1,000', 2),
      scale('sim', '1,000,000', 5),
      bulk('sim', '16,384 x 4 KiB', 'engine', 'add', 200),
      bulk('sim', '16,384 x 4 KiB', 'qemu', 'add', 100),
      bulk('sim', '512 x 2 MiB', 'engine', 'add', 90),
      bulk('sim', '512 x 2 MiB', 'qemu', 'add', 100),
    ]);
    expect(byId(rs, 'null.bulk.4k.add')).to.include({ status: 'missed', value: 7e5 });
    expect(byId(rs, 'scale.1m')).to.include({ status: 'missed', value: 2.5, ratio: 0.8 });
    expect(byId(rs, 'sim.bulk.add')).to.include({ status: 'missed', value: 0.9 });
  });

  it('takes the worst round of no row: a row is its best round, the worst is across rows', function () {
    const rs = judge([
      { ...bulk('null', '16,384 x 4 KiB', 'engine', 'add', 5e5), round: 0 },
      { ...bulk('null', '16,384 x 4 KiB', 'engine', 'add', 1.5e6), round: 1 },
    ]);
    expect(byId(rs, 'null.bulk.4k.add')).to.include({ status: 'met', value: 1.5e6 });
  });

  it('gives no ratio for a value of 0 or less under a <= goal (met by any margin)', function () {
    expect(distance(-5, 40, '<=')).to.equal(null);
    expect(distance(0, 40, '<=')).to.equal(null);
    expect(distance(20, 40, '<=')).to.equal(2);
    expect(distance(0, 1, '>=')).to.equal(0);
    const rs = judge([memory(1, 90), memory(2, 85)]);
    expect(byId(rs, 'memory.2c')).to.include({ status: 'met', value: -5, ratio: null });
  });
});
