// `vfio-engine bench` end to end at a small scale: every workload on the null and the
// simulated kernels, the table, the targets, the JSON record and one SVG plot per workload.
// No timing is judged here: the values only have to exist and be positive.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readRecord } from '../src/bench/record.js';
import { WORKLOADS } from '../src/bench/workloads/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cli = path.join(root, 'dist/src/cli/main.js');
const bench = (...args: string[]) =>
  spawnSync(process.execPath, [cli, 'bench', ...args], { encoding: 'utf8', cwd: root, timeout: 240_000 });

describe('vfio-engine bench (smoke: --scale 0.005, one round)', function () {
  this.timeout(300_000);
  let out: string;
  before(function () {
    out = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-engine-bench-'));
  });
  after(function () {
    fs.rmSync(out, { recursive: true, force: true });
  });

  it('runs every workload on the null and simulated kernels; prints the table and every target; writes the record and the plots', async function () {
    const r = bench('--scale', '0.005', '--rounds', '1', '--out', out);
    expect(r.status, r.stdout + r.stderr).to.equal(0);
    expect(r.stderr, 'no stack trace').to.not.match(/^\s+at /m);
    // Not a terminal: plain progress lines, no bar.
    expect(r.stdout).to.match(/^\[1\/\d+\] null bulk /m);
    expect(r.stdout).to.not.include('\u2588');
    expect(r.stdout).to.include('memory: not on the sim kernel');
    for (const w of WORKLOADS) expect(r.stdout, w.name).to.match(new RegExp(`^${w.name}\\b`, 'm'));
    // Every target gets a line: met, missed, or not measured (the 1,000,000 cases need --scale 1).
    const verdicts = r.stdout.split('\n').filter((l) => /^(MET|MISSED|not measured) +/.test(l));
    expect(verdicts.length).to.be.at.least(15);

    const file = /^record: (.*)$/m.exec(r.stdout)![1]!;
    const rec = await readRecord(file);
    expect(rec.options).to.deep.include({ kernels: ['null', 'sim'], rounds: 1, scale: 0.005 });
    expect(rec.commit === null || /^[0-9a-f]{40}$/.test(rec.commit)).to.equal(true);
    expect(rec.machine.loadBefore).to.have.length(3);
    const seen = new Set(rec.samples.map((s) => `${s.workload}/${s.kernel}/${s.mode}`));
    for (const k of [
      'bulk/null/engine',
      'bulk/null/qemu',
      'bulk/sim/engine',
      'bulk/sim/qemu',
      'bulk/sim/model',
      'storm/null/engine',
      'storm/sim/qemu',
      'scale/null/engine',
      'scale/sim/engine',
      'memory/null/engine',
    ])
      expect(seen, k).to.include(k);
    for (const s of rec.samples) {
      const what = `${s.workload} ${s.case} ${s.mode} ${s.phase}`;
      // Rates and times are positive; a heap difference at this scale is noise around its figure.
      if (s.metric === 'B/mapping') expect(Number.isFinite(s.value), what).to.equal(true);
      else expect(s.value, what).to.be.above(0);
    }
    expect(rec.targets.map((t) => t.status)).to.include.members(['not measured']);
    for (const w of WORKLOADS) {
      const svg = fs.readFileSync(path.join(out, `${w.name}.svg`), 'utf8');
      expect(svg.startsWith('<svg'), w.name).to.equal(true);
    }
  });

  it('--json prints the record on stdout (progress on stderr)', function () {
    const r = bench('bulk', '--kernel', 'null', '--scale', '0.005', '--rounds', '1', '--out', out, '--json');
    expect(r.status, r.stderr).to.equal(0);
    const rec = JSON.parse(r.stdout) as { schema: string; samples: { workload: string }[] };
    expect(rec.schema).to.equal('vfio-engine-bench/1');
    expect(new Set(rec.samples.map((s) => s.workload))).to.deep.equal(new Set(['bulk']));
    expect(r.stderr).to.match(/^\[1\/\d+\] null bulk /m);
  });

  it('refuses bad usage with one line and exit code 2', function () {
    for (const [args, why] of [
      [['frob'], /value 'frob' is invalid for argument 'workload'/],
      [['--kernel', 'kvm'], /'kvm' is not one of null, sim, linux/],
      [['--rounds', '0'], /--rounds must be a whole number >= 1/],
      [['--scale', 'x'], /--scale must be a number/],
      [['--kernel', 'linux'], /npm run bench:kernel/],
    ] as [string[], RegExp][]) {
      const r = bench(...args);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).to.equal(2);
      expect(r.stderr).to.match(why);
      expect(r.stderr.trim().split('\n')).to.have.length(1);
    }
  });
});
