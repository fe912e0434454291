/**
 * The results as charts: one vega-lite spec per workload (grouped bars, one panel per
 * phase), rendered to SVG headless through vega's View (no canvas, no browser).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import type { SummaryRow } from './summary.js';
import { workloadsOf } from './table.js';

/** Above this max/min spread a linear axis flattens the small bars to nothing: use log. */
export const LOG_SPAN = 100;

/** One bar: the row's best value under the labels the chart groups by. */
interface Datum {
  readonly case: string;
  readonly mode: string;
  readonly phase: string;
  readonly value: number;
}

// Vega-lite sorts nominal domains alphabetically; the runner's order (small to large
// cases, engine before its baselines) reads better, so each domain is given explicitly.
const firstSeen = (xs: readonly string[]) => [...new Set(xs)];

/**
 * Whether values spanning this range want a log axis: all positive (a log axis has no 0)
 * and the largest over LOG_SPAN times the smallest.
 */
export function wantsLog(values: readonly number[]): boolean {
  const vs = values.filter((v) => Number.isFinite(v));
  if (!vs.length || vs.some((v) => v <= 0)) return false;
  return Math.max(...vs) / Math.min(...vs) > LOG_SPAN;
}

/**
 * The chart of one workload: side by side, one panel per phase (each its own y axis and
 * metric, log where its values span over LOG_SPAN), bars grouped by case on x with one bar
 * per mode (colour and offset). When the rows cover several kernels or backends the case
 * label carries them, so that no two bars share a slot. Titled with the workload and
 * kernel(s).
 */
export function plotSpec(workload: string, rows: readonly SummaryRow[]): TopLevelSpec {
  const mine = rows.filter((r) => r.workload === workload && !Number.isNaN(r.value));
  const kernels = firstSeen(mine.map((r) => r.kernel));
  const backends = firstSeen(mine.map((r) => r.backend ?? ''));
  const label = (r: SummaryRow) =>
    [kernels.length > 1 ? r.kernel : '', r.case, backends.length > 1 ? (r.backend ?? '') : '']
      .filter(Boolean)
      .join(' ');
  const data: Datum[] = mine.map((r) => ({ case: label(r), mode: r.mode, phase: r.phase, value: r.value }));
  const cases = firstSeen(data.map((d) => d.case));
  const modes = firstSeen(data.map((d) => d.mode));
  const phases = firstSeen(data.map((d) => d.phase));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: `${workload} (${kernels.join(', ') || 'no data'} kernel${kernels.length > 1 ? 's' : ''})`,
    data: { values: data },
    hconcat: phases.map((phase) => {
      const pr = mine.filter((r) => r.phase === phase);
      const metrics = firstSeen(pr.map((r) => r.metric));
      const log = wantsLog(pr.map((r) => r.value));
      return {
        title: phase,
        transform: [{ filter: { field: 'phase', equal: phase } }],
        mark: 'bar',
        encoding: {
          x: { field: 'case', type: 'nominal', sort: cases, title: 'case', axis: { labelAngle: -30 } },
          xOffset: { field: 'mode', type: 'nominal', sort: modes },
          color: { field: 'mode', type: 'nominal', sort: modes, title: 'mode' },
          y: {
            field: 'value',
            type: 'quantitative',
            title: `${metrics.join(', ')}${log ? ' (log)' : ''}`,
            scale: log ? { type: 'log' } : { zero: true },
          },
        },
      };
    }),
  };
}

/** The chart as an SVG document, rendered headless (renderer 'none': no DOM, no canvas). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    // Releases the view's timers and listeners so that nothing keeps the process alive.
    view.finalize();
  }
}

// Workload names come from the runner, but a file name must not climb out of `dir`.
const fileName = (workload: string) => `${workload.replace(/[^\w.-]/g, '-').replace(/^\.+/, '-')}.svg`;

/** Writes `<dir>/<workload>.svg` for each workload in `rows` (creating dir); returns the paths. */
export async function writePlots(dir: string, rows: readonly SummaryRow[]): Promise<string[]> {
  await fs.mkdir(dir, { recursive: true });
  const out: string[] = [];
  for (const w of workloadsOf(rows)) {
    const file = path.join(dir, fileName(w));
    await fs.writeFile(file, await renderSvg(plotSpec(w, rows)));
    out.push(file);
  }
  return out;
}
