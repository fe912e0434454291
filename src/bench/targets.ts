/**
 * The performance targets of issue 10, as data (so that the README can print the list and a
 * run can judge itself), and the one function that judges a run's rows against them.
 */
import { ratio, type SummaryRow } from './summary.js';
import type { BenchKernel, Metric, TargetResult } from './types.js';

/** Which case names a target reads: an exact name, or a suffix (bulk counts vary with --scale). */
export type CaseMatch = { readonly equals: string } | { readonly endsWith: string };

/** Which summary rows a target reads; an absent field matches anything. */
export interface RowSelect {
  readonly workload: string;
  readonly kernels?: readonly BenchKernel[];
  readonly mode: string;
  readonly phase?: string;
  readonly metric: Metric;
  readonly case?: CaseMatch;
}

/**
 * How a target's value comes from the rows:
 * - 'value': the selected row's value;
 * - 'ratio': the selected row relative to the same case's row of mode `base` (summary.ratio);
 * - 'pair': the row of case `of` against the row of case `to` with everything else equal
 *   (kernel, mode, phase, backend), as `of / to` ('quotient') or `of - to` ('difference').
 */
export type Measure =
  | { readonly kind: 'value'; readonly select: RowSelect }
  | { readonly kind: 'ratio'; readonly select: RowSelect; readonly base: string }
  | {
      readonly kind: 'pair';
      readonly select: RowSelect;
      readonly of: CaseMatch;
      readonly to: CaseMatch;
      readonly op: 'quotient' | 'difference';
    };

/** One target: what it asks, in the words and numbers a result line prints. */
export interface Target {
  /** Short and stable: records of old runs and the README name targets by it. */
  readonly id: string;
  readonly description: string;
  readonly goal: number;
  readonly comparison: '>=' | '<=';
  readonly unit: string;
  readonly measure: Measure;
}

const KIB4: CaseMatch = { endsWith: ' x 4 KiB' };
const MIB2: CaseMatch = { endsWith: ' x 2 MiB' };
const LIVE_1M: CaseMatch = { equals: '1,000,000 live' };
const LIVE_1K: CaseMatch = { equals: '1,000 live' };
const MAPPINGS_1C: CaseMatch = { equals: '1,000,000 mappings, 1 container' };
const MAPPINGS_2C: CaseMatch = { equals: '1,000,000 mappings, 2 containers' };

const own = (phase: string, workload: string, c?: CaseMatch): RowSelect => ({
  workload,
  kernels: ['null'],
  mode: 'engine',
  phase,
  metric: 'ops/s',
  ...(c ? { case: c } : {}),
});
const engine = (kernel: BenchKernel, workload: string, phase: string, c?: CaseMatch): RowSelect => ({
  ...own(phase, workload, c),
  kernels: [kernel],
});

/**
 * The targets, in the order: the engine's own cost (null kernel), how a
 * transaction's cost grows with the live mappings, memory per mapping, and the whole engine
 * against QEMU's way (simulated kernel) and against the C floor (Linux). Where one target
 * matches several cases (bulk shapes, backends, kernels) the worst one decides.
 */
export const TARGETS: readonly Target[] = [
  {
    id: 'null.bulk.4k.add',
    description: 'engine >= 1,000,000 region ops/s for bulk 4 KiB adds (null kernel)',
    goal: 1_000_000,
    comparison: '>=',
    unit: 'ops/s',
    measure: { kind: 'value', select: own('add', 'bulk', KIB4) },
  },
  {
    id: 'null.bulk.4k.del',
    description: 'engine >= 1,000,000 region ops/s for bulk 4 KiB deletes (null kernel)',
    goal: 1_000_000,
    comparison: '>=',
    unit: 'ops/s',
    measure: { kind: 'value', select: own('del', 'bulk', KIB4) },
  },
  {
    id: 'null.storm.awaited',
    description: 'engine >= 100,000 region ops/s for an awaited storm (null kernel)',
    goal: 100_000,
    comparison: '>=',
    unit: 'ops/s',
    measure: { kind: 'value', select: own('awaited', 'storm') },
  },
  {
    id: 'null.storm.pipelined',
    description: 'engine >= 500,000 region ops/s for a pipelined storm (null kernel)',
    goal: 500_000,
    comparison: '>=',
    unit: 'ops/s',
    measure: { kind: 'value', select: own('pipelined', 'storm') },
  },
  {
    id: 'scale.1m',
    description:
      'a transaction with 1,000,000 live mappings <= 2x the time of one with 1,000 (null, sim kernels)',
    goal: 2,
    comparison: '<=',
    unit: 'x',
    measure: {
      kind: 'pair',
      select: { workload: 'scale', kernels: ['null', 'sim'], mode: 'engine', phase: 'txn', metric: 'ms' },
      of: LIVE_1M,
      to: LIVE_1K,
      op: 'quotient',
    },
  },
  {
    id: 'memory.1c',
    description: 'engine <= 100 bytes per mapping with 1,000,000 mappings in 1 container',
    goal: 100,
    comparison: '<=',
    unit: 'B/mapping',
    measure: {
      kind: 'value',
      select: { workload: 'memory', mode: 'engine', metric: 'B/mapping', case: MAPPINGS_1C },
    },
  },
  {
    id: 'memory.2c',
    description: 'engine <= 40 bytes per mapping more for a second container (1,000,000 mappings)',
    goal: 40,
    comparison: '<=',
    unit: 'B/mapping',
    measure: {
      kind: 'pair',
      select: { workload: 'memory', mode: 'engine', metric: 'B/mapping' },
      of: MAPPINGS_2C,
      to: MAPPINGS_1C,
      op: 'difference',
    },
  },
  {
    id: 'sim.bulk.add',
    description: 'engine >= 1.0x qemu for bulk adds (simulated kernel)',
    goal: 1,
    comparison: '>=',
    unit: 'x qemu',
    measure: { kind: 'ratio', select: engine('sim', 'bulk', 'add'), base: 'qemu' },
  },
  {
    id: 'sim.bulk.del',
    description: 'engine >= 1.0x qemu for bulk deletes (simulated kernel)',
    goal: 1,
    comparison: '>=',
    unit: 'x qemu',
    measure: { kind: 'ratio', select: engine('sim', 'bulk', 'del'), base: 'qemu' },
  },
  {
    id: 'sim.storm.awaited',
    description: 'engine >= 0.5x qemu for an awaited storm (simulated kernel)',
    goal: 0.5,
    comparison: '>=',
    unit: 'x qemu',
    measure: { kind: 'ratio', select: engine('sim', 'storm', 'awaited'), base: 'qemu' },
  },
  {
    id: 'linux.bulk.4k.add',
    description: 'engine >= 0.8x the C floor for bulk 4 KiB adds (Linux)',
    goal: 0.8,
    comparison: '>=',
    unit: 'x floor',
    measure: { kind: 'ratio', select: engine('linux', 'bulk', 'add', KIB4), base: 'floor' },
  },
  {
    id: 'linux.bulk.4k.del',
    description: 'engine >= 0.8x the C floor for bulk 4 KiB deletes (Linux)',
    goal: 0.8,
    comparison: '>=',
    unit: 'x floor',
    measure: { kind: 'ratio', select: engine('linux', 'bulk', 'del', KIB4), base: 'floor' },
  },
  {
    id: 'linux.bulk.2m.add',
    description: 'engine >= 0.9x the C floor for bulk 2 MiB adds (Linux)',
    goal: 0.9,
    comparison: '>=',
    unit: 'x floor',
    measure: { kind: 'ratio', select: engine('linux', 'bulk', 'add', MIB2), base: 'floor' },
  },
  {
    id: 'linux.bulk.2m.del',
    description: 'engine >= 0.9x the C floor for bulk 2 MiB deletes (Linux)',
    goal: 0.9,
    comparison: '>=',
    unit: 'x floor',
    measure: { kind: 'ratio', select: engine('linux', 'bulk', 'del', MIB2), base: 'floor' },
  },
  {
    id: 'linux.second-container',
    description: 'a second container filled by copy >= 3x as fast as by map (Linux)',
    goal: 3,
    comparison: '>=',
    unit: 'x map',
    measure: {
      kind: 'ratio',
      select: {
        workload: 'second-container',
        kernels: ['linux'],
        mode: 'copy',
        phase: 'fill',
        metric: 'ops/s',
      },
      base: 'map',
    },
  },
];

/** Whether a case name is the one (or of the kind) `m` names. */
export function caseMatches(name: string, m: CaseMatch): boolean {
  return 'equals' in m ? name === m.equals : name.endsWith(m.endsWith);
}

function selected(rows: readonly SummaryRow[], s: RowSelect): SummaryRow[] {
  return rows.filter(
    (r) =>
      r.workload === s.workload &&
      r.mode === s.mode &&
      r.metric === s.metric &&
      (s.kernels === undefined || s.kernels.includes(r.kernel)) &&
      (s.phase === undefined || r.phase === s.phase) &&
      (s.case === undefined || caseMatches(r.case, s.case)),
  );
}

/** Every value a target can read off the rows: one per matching case (NaN ones dropped). */
function candidates(rows: readonly SummaryRow[], m: Measure): number[] {
  const rs = selected(rows, m.select);
  let values: number[];
  if (m.kind === 'value') values = rs.map((r) => r.value);
  else if (m.kind === 'ratio') values = rs.map((r) => ratio(rows, r, m.base));
  else {
    values = [];
    for (const r of rs) {
      if (!caseMatches(r.case, m.of)) continue;
      for (const t of rs) {
        const same = t.kernel === r.kernel && t.phase === r.phase && t.backend === r.backend;
        if (!same || !caseMatches(t.case, m.to)) continue;
        values.push(m.op === 'quotient' ? r.value / t.value : r.value - t.value);
      }
    }
  }
  return values.filter((v) => !Number.isNaN(v));
}

/**
 * How far a value is from its goal, as a factor that is >= 1 when met: value / goal for
 * '>=', goal / value for '<='. Null when no factor says it: a value of 0 or less under a
 * '<=' goal (met by any margin), or a non-finite result (JSON would turn it into null anyway).
 */
export function distance(value: number, goal: number, comparison: '>=' | '<='): number | null {
  if (comparison === '<=' && value <= 0) return null;
  const r = comparison === '>=' ? value / goal : goal / value;
  return Number.isFinite(r) ? r : null;
}

/**
 * Judges the summary rows against `targets` (all of the by default): each is met,
 * missed, or 'not measured' when the run had no rows for it (its workload or kernel was
 * left out, or a baseline mode was). Where several cases match, the worst decides: the
 * lowest value for '>=', the highest for '<='.
 */
export function evaluateTargets(
  rows: readonly SummaryRow[],
  targets: readonly Target[] = TARGETS,
): TargetResult[] {
  return targets.map((t) => {
    const vs = candidates(rows, t.measure);
    const base = {
      id: t.id,
      description: t.description,
      goal: t.goal,
      comparison: t.comparison,
      unit: t.unit,
    };
    if (!vs.length) return { ...base, value: null, status: 'not measured', ratio: null };
    const value = t.comparison === '>=' ? Math.min(...vs) : Math.max(...vs);
    const met = t.comparison === '>=' ? value >= t.goal : value <= t.goal;
    return { ...base, value, status: met ? 'met' : 'missed', ratio: distance(value, t.goal, t.comparison) };
  });
}
