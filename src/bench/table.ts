/**
 * The results as text: a plain table per workload and the targets' verdicts for the
 * terminal (formatResults), and the same as markdown for the README (formatMarkdown).
 */
import { ratio, type SummaryRow } from './summary.js';
import type { TargetResult } from './types.js';

/** The baseline modes a result row is compared with, when the run measured them. */
export const BASE_MODES = ['qemu', 'floor', 'map'] as const;

/**
 * A number for people: thousands separators; whole above 100 (the digits past that are
 * noise in a timing), two decimals from 1, three significant digits below; '-' for NaN.
 */
export function formatNumber(v: number): string {
  if (Number.isNaN(v)) return '-';
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
  const a = Math.abs(v);
  if (a >= 100) return Math.round(v).toLocaleString('en-US');
  if (a >= 1 || a === 0)
    return v.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  return v.toLocaleString('en-US', { maximumSignificantDigits: 3 });
}

/** A goal as written in the issue: '1,000,000', '0.5', '1' (no padding decimals). */
export function formatGoal(v: number): string {
  return v.toLocaleString('en-US', { maximumFractionDigits: 2 });
}

/** A ratio as '1.23x' (two decimals, so a column lines up; tiny ones keep 3 digits); '-' when none. */
export function formatRatio(r: number | null): string {
  if (r === null || Number.isNaN(r)) return '-';
  const a = Math.abs(r);
  if (a >= 100 || !Number.isFinite(r) || (a < 0.01 && a !== 0)) return `${formatNumber(r)}x`;
  return `${r.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })}x`;
}

/** The workloads of `rows`, in the order they first appear (the runner's). */
export function workloadsOf(rows: readonly SummaryRow[]): string[] {
  return [...new Set(rows.map((r) => r.workload))];
}

interface Column {
  readonly head: string;
  readonly right: boolean;
  readonly cell: (r: SummaryRow) => string;
}

// The columns for one workload's rows: the backend only when some row has one (else it is
// noise), and a ratio column only for the baselines the workload measured.
function columns(all: readonly SummaryRow[], rows: readonly SummaryRow[]): Column[] {
  const cols: Column[] = [
    { head: 'kernel', right: false, cell: (r) => r.kernel },
    { head: 'case', right: false, cell: (r) => r.case },
    ...(rows.some((r) => r.backend !== undefined)
      ? [{ head: 'backend', right: false, cell: (r: SummaryRow) => r.backend ?? '' }]
      : []),
    { head: 'mode', right: false, cell: (r) => r.mode },
    { head: 'phase', right: false, cell: (r) => r.phase },
    { head: 'value', right: true, cell: (r) => `${formatNumber(r.value)} ${r.metric}` },
  ];
  for (const b of BASE_MODES)
    if (rows.some((r) => r.mode === b))
      cols.push({ head: `x ${b}`, right: true, cell: (r) => formatRatio(ratio(all, r, b)) });
  cols.push({ head: 'rounds', right: true, cell: (r) => String(r.rounds) });
  return cols;
}

/**
 * A target's value or goal with its unit: ratio units ('x', 'x qemu') read as '0.73x qemu'
 * (two decimals, like the ratio columns), others as '1,234 ops/s'. `goal` keeps the issue's
 * spelling of a goal ('1,000,000', '0.5').
 */
export function formatValue(v: number, unit: string, goal = false): string {
  if (unit === 'x' || unit.startsWith('x '))
    return `${goal ? `${formatGoal(v)}x` : formatRatio(v)}${unit.slice(1)}`;
  return `${goal ? formatGoal(v) : formatNumber(v)} ${unit}`;
}

const STATUS: Record<TargetResult['status'], string> = {
  met: 'MET',
  missed: 'MISSED',
  'not measured': 'not measured',
};

/**
 * One target's verdict: `MET  <description>: <value> <unit> (goal <cmp> <goal>, <ratio>x)`,
 * the status padded so that the descriptions line up; no ratio part when there is none.
 */
export function formatTarget(t: TargetResult): string {
  const status = STATUS[t.status].padEnd(STATUS['not measured'].length);
  const value = t.value === null ? `- ${t.unit}` : formatValue(t.value, t.unit);
  const how = t.ratio === null ? '' : `, ${formatRatio(t.ratio)}`;
  return `${status}  ${t.description}: ${value} (goal ${t.comparison} ${formatGoal(t.goal)}${how})`;
}

/**
 * The terminal report: per workload a title line and an aligned plain-text table (kernel,
 * case, mode, phase, the best value with its unit, the ratio to qemu and to the C floor
 * where the run measured them, rounds), then one line per target.
 */
export function formatResults(rows: readonly SummaryRow[], targets: readonly TargetResult[]): string[] {
  const out: string[] = [];
  for (const w of workloadsOf(rows)) {
    const mine = rows.filter((r) => r.workload === w);
    const cols = columns(rows, mine);
    const cells = [cols.map((c) => c.head), ...mine.map((r) => cols.map((c) => c.cell(r)))];
    const widths = cols.map((_, i) => Math.max(...cells.map((line) => line[i]!.length)));
    const line = (cs: string[]) =>
      cs
        .map((s, i) => (cols[i]!.right ? s.padStart(widths[i]!) : s.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd();
    out.push(w, line(cells[0]!), widths.map((n) => '-'.repeat(n)).join('  '));
    for (const cs of cells.slice(1)) out.push(line(cs));
    out.push('');
  }
  if (targets.length) {
    out.push('targets');
    for (const t of targets) out.push(formatTarget(t));
  }
  return out;
}

// A pipe inside a cell would end it.
const md = (s: string) => s.replaceAll('|', '\\|');
const mdRow = (cs: readonly string[]) => `| ${cs.map(md).join(' | ')} |`;

/**
 * The same report in markdown for the README: a '### <workload>' table per workload (the
 * columns of formatResults) and a '### targets' table (status, target, value, goal, ratio).
 */
export function formatMarkdown(rows: readonly SummaryRow[], targets: readonly TargetResult[]): string[] {
  const out: string[] = [];
  for (const w of workloadsOf(rows)) {
    const mine = rows.filter((r) => r.workload === w);
    const cols = columns(rows, mine);
    out.push(`### ${w}`, '');
    out.push(mdRow(cols.map((c) => c.head)), mdRow(cols.map((c) => (c.right ? '---:' : '---'))));
    for (const r of mine) out.push(mdRow(cols.map((c) => c.cell(r))));
    out.push('');
  }
  if (targets.length) {
    out.push('### targets', '');
    out.push(
      mdRow(['status', 'target', 'value', 'goal', 'ratio']),
      mdRow(['---', '---', '---:', '---', '---:']),
    );
    for (const t of targets)
      out.push(
        mdRow([
          STATUS[t.status],
          t.description,
          t.value === null ? '-' : formatValue(t.value, t.unit),
          `${t.comparison} ${formatValue(t.goal, t.unit, true)}`,
          formatRatio(t.ratio),
        ]),
      );
    out.push('');
  }
  return out;
}
