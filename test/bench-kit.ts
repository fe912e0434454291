/** Shared by the bench runner's unit tests: a sample with defaults (bulk, sim, 16,384 x 4 KiB, engine, add, ops/s). */
import type { BenchSample } from '../src/bench/types.js';

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
