/**
 * Rounds into figures: one row per (workload, kernel, case, mode, phase, backend), and the
 * ratio of a row to a baseline mode's row. Pure; the table, the plots and the targets all
 * read these rows, so they agree on what "the" value of a case is.
 */
import type { BenchKernel, BenchSample, Metric } from './types.js';

/** The rounds of one (workload, kernel, case, mode, phase, backend), as figures. */
export interface SummaryRow {
  readonly workload: string;
  readonly kernel: BenchKernel;
  readonly case: string;
  readonly mode: string;
  readonly phase: string;
  readonly backend?: 'iommufd' | 'legacy';
  readonly metric: Metric;
  /**
   * The figure: for times and rates the best round (the highest ops/s, the fewest ms), since
   * other work on the machine only ever makes a round worse; for B/mapping the median, since
   * the heap's noise goes both ways.
   */
  readonly value: number;
  /** The median over the rounds: how far the best one is from typical. */
  readonly median: number;
  /** How many rounds the row has. */
  readonly rounds: number;
  /** The work items behind the best round's value. */
  readonly n: number;
}

/** Whether a bigger value of `metric` is better: ops/s yes; ms and B/mapping no. */
export function higherIsBetter(metric: Metric): boolean {
  return metric === 'ops/s';
}

/** The median (the mean of the middle two for an even count); NaN for none. */
export function median(xs: readonly number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

// The metric is part of the key too: a runner that measured one phase in two metrics gets
// two rows rather than a max or min taken over incomparable numbers.
const key = (s: BenchSample, mode = s.mode) =>
  [s.workload, s.kernel, s.case, mode, s.phase, s.backend ?? '', s.metric].join('\0');

/**
 * One row per (workload, kernel, case, mode, phase, backend), in the order the samples
 * first name them (the runner's order, which reads best): the best round, the median and
 * the round count. NaN values (a round that measured nothing) are left out of both figures
 * but not of the count.
 */
export function summarize(samples: readonly BenchSample[]): SummaryRow[] {
  const groups = new Map<string, BenchSample[]>();
  for (const s of samples) {
    const k = key(s);
    let g = groups.get(k);
    if (!g) groups.set(k, (g = []));
    g.push(s);
  }
  return [...groups.values()].map((g) => {
    const first = g[0]!;
    const up = higherIsBetter(first.metric);
    const valid = g.filter((s) => !Number.isNaN(s.value));
    let best: BenchSample | undefined;
    for (const s of valid) if (!best || (up ? s.value > best.value : s.value < best.value)) best = s;
    return {
      workload: first.workload,
      kernel: first.kernel,
      case: first.case,
      mode: first.mode,
      phase: first.phase,
      ...(first.backend === undefined ? {} : { backend: first.backend }),
      metric: first.metric,
      value: first.metric === 'B/mapping' ? median(valid.map((s) => s.value)) : best ? best.value : NaN,
      median: median(valid.map((s) => s.value)),
      rounds: g.length,
      n: (best ?? first).n,
    };
  });
}

const sameCase = (a: SummaryRow, b: SummaryRow) =>
  a.workload === b.workload &&
  a.kernel === b.kernel &&
  a.case === b.case &&
  a.phase === b.phase &&
  a.backend === b.backend &&
  a.metric === b.metric;

/** The row of `mode` for the same (workload, kernel, case, phase, backend) as `row`, if any. */
export function baseRow(rows: readonly SummaryRow[], row: SummaryRow, mode: string): SummaryRow | undefined {
  return rows.find((x) => x.mode === mode && sameCase(x, row));
}

/**
 * `row` relative to the same (workload, kernel, case, phase, backend) row of `baseMode`, as
 * "higher is better" whatever the metric (value / base for ops/s, base / value for ms and
 * B/mapping), so that 2 always means twice as good. NaN when there is no such base row.
 */
export function ratio(rows: readonly SummaryRow[], row: SummaryRow, baseMode: string): number {
  const b = baseRow(rows, row, baseMode);
  if (!b) return NaN;
  return higherIsBetter(row.metric) ? row.value / b.value : b.value / row.value;
}
