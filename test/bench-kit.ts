/** Shared by the bench runner's unit tests: a sample and a record with defaults. */
import { RECORD_SCHEMA, loadAverage, machineInfo } from '../src/bench/record.js';
import type { BenchRecord, BenchSample } from '../src/bench/types.js';

/** A BenchSample with every field but `value` defaulted. */
export function sample(p: Partial<BenchSample> & Pick<BenchSample, 'value'>): BenchSample {
  return {
    workload: 'bulk',
    kernel: 'sim',
    case: '16,384 x 4 KiB',
    mode: 'engine',
    phase: 'add',
    metric: 'ops/s',
    n: 16_384,
    round: 0,
    ...p,
  };
}

/** A small valid record: one sample (bulk, sim), one target not measured. */
export function benchRecord(): BenchRecord {
  return {
    schema: RECORD_SCHEMA,
    started: '2025-01-02T03:04:05.678Z',
    seconds: 12.5,
    argv: ['--kernel', 'sim'],
    commit: null,
    machine: { ...machineInfo('6.12.118'), loadBefore: loadAverage(), loadAfter: [1, 2, 3] },
    options: { workloads: ['bulk'], kernels: ['sim'], workers: 2, rounds: 3, scale: 1 },
    samples: [sample({ value: 123_456.5, backend: 'iommufd' })],
    targets: [
      {
        id: 'sim.bulk.add',
        description: 'engine >= 1.0x qemu for bulk adds (simulated kernel)',
        value: null,
        goal: 1,
        comparison: '>=',
        unit: 'x qemu',
        status: 'not measured',
        ratio: null,
      },
    ],
  };
}
