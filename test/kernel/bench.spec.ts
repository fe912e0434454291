// `vfio-engine bench --kernel linux` in the test VM, at a tiny scale and one round: every
// workload that runs on the real kernel gives its samples, the C floor among them on one
// thread and on two. No figure is judged (timings are for the runner, not for tests).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FLOOR_BINARY } from '../../src/bench/floor.js';
import { WORKLOADS } from '../../src/bench/workloads/index.js';
import type { BenchRecord } from '../../src/bench/types.js';
import { describeVm } from './guest.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const cli = path.resolve(here, '../../src/cli/main.js');

describeVm(
  'vfio-engine bench --kernel linux: every workload on the real kernel (smoke)',
  function () {
    this.timeout(900_000);

    it('runs each linux workload beside its baselines, the C floor on 1 and 2 threads or its op list, and writes the record', function () {
      if (!fs.existsSync(FLOOR_BINARY)) {
        // vm/run.ts builds it before the boot, when the host has Linux >= 6.12 uapi headers.
        this.test!.title += ` [skipped: ${FLOOR_BINARY} was not built (no Linux >= 6.12 uapi headers on the host)]`;
        this.skip();
      }
      const out = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-'));
      const r = spawnSync(
        process.execPath,
        [
          cli,
          'bench',
          '--kernel',
          'linux',
          '--scale',
          '0.002',
          '--rounds',
          '1',
          '--workers',
          '2',
          '--out',
          out,
          '--json',
        ],
        { encoding: 'utf8', maxBuffer: 64 << 20 },
      );
      expect(r.status, r.stderr.split('\n').slice(-20).join('\n')).to.equal(0);
      const rec = JSON.parse(r.stdout) as BenchRecord;
      expect(rec.machine.kernelRelease).to.equal(os.release());
      const linux = WORKLOADS.filter((w) => w.kernels.includes('linux')).map((w) => w.name);
      expect(linux).to.include.members(['bulk', 'boot-map', 'storm', 'churn', 'second-container', 'scale']);
      const modes = (w: string) => new Set(rec.samples.filter((s) => s.workload === w).map((s) => s.mode));
      for (const w of linux) expect(modes(w).size, `${w} has samples`).to.be.greaterThan(0);
      for (const w of ['bulk', 'boot-map'])
        expect([...modes(w)].sort(), w).to.deep.equal(['engine', 'floor', 'floor-2', 'qemu']);
      for (const w of ['storm', 'churn'])
        expect([...modes(w)].sort(), w).to.deep.equal(['engine', 'floor', 'qemu']);
      expect([...modes('second-container')].sort()).to.deep.equal(['copy', 'map']);
      const bulk = rec.samples.filter((s) => s.workload === 'bulk');
      expect(new Set(bulk.map((s) => s.backend))).to.deep.equal(new Set(['iommufd', 'legacy']));
      const bootCases = new Set(rec.samples.filter((s) => s.workload === 'boot-map').map((s) => s.case));
      expect([...bootCases].map((c) => c.replace(/^q35 [\d.]+ [KMG]iB, /, ''))).to.include.members([
        '4 KiB pages',
        'THP',
      ]);
      for (const s of rec.samples)
        expect(s.value, `${s.workload} ${s.case} ${s.mode} ${s.phase}`).to.be.above(0);
      expect(rec.targets.find((t) => t.id === 'linux.bulk.4k.add')?.status).to.not.equal('not measured');
      expect(rec.targets.find((t) => t.id === 'linux.second-container')?.status).to.not.equal('not measured');
      expect(fs.readdirSync(out).filter((f) => f.endsWith('.svg')).length).to.equal(linux.length);
      fs.rmSync(out, { recursive: true, force: true });
    });
  },
  "the real kernel's benchmark: on the simulated kernel the same workloads run in test/bench-cli.spec.ts",
);
