// The benchmark charts (src/bench/plot.ts): the vega-lite spec's structure, the headless
// SVG rendering, and the files writePlots leaves.
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { plotSpec, renderSvg, wantsLog, writePlots } from '../src/bench/plot.js';
import { summarize } from '../src/bench/summary.js';
import { sample } from './bench-kit.js';

const rows = summarize([
  sample({ value: 2_000_000 }),
  sample({ mode: 'qemu', value: 1_000 }),
  sample({ case: '512 x 2 MiB', value: 50_000 }),
  sample({ case: '512 x 2 MiB', mode: 'qemu', value: 20_000 }),
  sample({ phase: 'del', value: 900 }),
  sample({ phase: 'del', mode: 'qemu', value: 800 }),
  sample({ workload: 'scale', kernel: 'null', case: '1,000 live', phase: 'txn', metric: 'ms', value: 1 }),
  sample({ workload: 'scale', kernel: 'sim', case: '1,000 live', phase: 'txn', metric: 'ms', value: 2 }),
]);

interface Panel {
  title: string;
  mark: string;
  transform: unknown[];
  encoding: Record<string, { field: string; title?: string; sort?: string[]; scale?: { type?: string } }>;
}

describe('bench plots: vega-lite specs rendered to SVG', function () {
  it('builds grouped bars per phase: x case, colour and offset mode, log y where values spread', function () {
    const spec = plotSpec('bulk', rows) as unknown as {
      title: string;
      data: { values: { case: string; mode: string; phase: string; value: number }[] };
      hconcat: Panel[];
    };
    expect(spec.title).to.equal('bulk (sim kernel)');
    expect(spec.data.values).to.have.length(6);
    expect(spec.hconcat.map((p) => p.title)).to.deep.equal(['add', 'del']);
    const [add, del] = spec.hconcat as [Panel, Panel];
    expect(add.mark).to.equal('bar');
    expect(add.transform).to.deep.equal([{ filter: { field: 'phase', equal: 'add' } }]);
    expect(add.encoding.x).to.include({ field: 'case', title: 'case' });
    expect(add.encoding.x!.sort).to.deep.equal(['16,384 x 4 KiB', '512 x 2 MiB']);
    expect(add.encoding.xOffset!.field).to.equal('mode');
    expect(add.encoding.color!.field).to.equal('mode');
    expect(add.encoding.color!.sort).to.deep.equal(['engine', 'qemu']);
    expect(add.encoding.y!.field).to.equal('value');
    // add spans 1,000 to 2,000,000 (log); del 800 to 900 (linear).
    expect(add.encoding.y!.scale).to.deep.equal({ type: 'log' });
    expect(add.encoding.y!.title).to.equal('ops/s (log)');
    expect(del.encoding.y!.scale!.type).to.equal(undefined);
    expect(del.encoding.y!.title).to.equal('ops/s');
  });

  it('names the kernels in the title and in the case labels when there are several', function () {
    const spec = plotSpec('scale', rows) as unknown as {
      title: string;
      data: { values: { case: string }[] };
    };
    expect(spec.title).to.equal('scale (null, sim kernels)');
    expect(spec.data.values.map((d) => d.case)).to.deep.equal(['null 1,000 live', 'sim 1,000 live']);
  });

  it('wants a log axis only for positive values spread over 100x', function () {
    expect(wantsLog([1, 101])).to.equal(true);
    expect(wantsLog([1, 100])).to.equal(false);
    expect(wantsLog([0, 1000])).to.equal(false);
    expect(wantsLog([])).to.equal(false);
  });

  it('renders an SVG document with the axis titles', async function () {
    const svg = await renderSvg(plotSpec('bulk', rows));
    expect(svg).to.match(/^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(svg).to.contain('case').and.contain('ops/s (log)').and.contain('bulk (sim kernel)');
    expect(svg.trimEnd()).to.match(/<\/svg>$/);
  });

  it('writes one SVG per workload and returns the paths', async function () {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-plot-'));
    try {
      const out = path.join(dir, 'plots', 'nested');
      const files = await writePlots(out, rows);
      expect(files).to.deep.equal([path.join(out, 'bulk.svg'), path.join(out, 'scale.svg')]);
      for (const f of files) expect(fs.readFileSync(f, 'utf8')).to.match(/^<svg /);
      // A workload name cannot climb out of the directory.
      const [odd] = await writePlots(out, summarize([sample({ workload: '../x/y', value: 1 })]));
      expect(path.dirname(odd!)).to.equal(out);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
