/**
 * The benchmark runner: the chosen workloads on the chosen kernels, an untimed warm-up round
 * where the workload is cheap, then `rounds` measured rounds, every sample kept; the record
 * (machine, load before and after, commit, samples, targets) is what `vfio-engine bench`
 * prints, writes as JSON and plots.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Session } from 'node:inspector/promises';
import { WORKLOADS } from './workloads/index.js';
import type { Workload } from './rig.js';
import { evaluateTargets } from './targets.js';
import { summarize } from './summary.js';
import { gitCommit, loadAverage, machineInfo } from './record.js';
import type { BenchKernel, BenchRecord, BenchRunOptions, BenchSample } from './types.js';

/** What the runner is asked to do: the options the record keeps, and where it runs from. */
export interface BenchOptions extends BenchRunOptions {
  /** The command line after `bench`, kept in the record. */
  readonly argv: readonly string[];
  /** The checkout, for the commit. */
  readonly root: string;
  /** Write a CPU profile of each workload to this folder (node --cpu-prof format). */
  readonly profileDir?: string;
}

/** Progress callbacks of a run (progress.ts draws them). */
export interface BenchProgress {
  /** Called once, with the number of steps the run will take. */
  start(total: number): void;
  step(label: string): void;
  /** A line for the user (a skipped workload, a profile written). */
  note(line: string): void;
}

/** A workload by name; throws naming the known ones. */
export function findWorkload(name: string): Workload {
  const w = WORKLOADS.find((x) => x.name === name);
  if (!w) throw new Error(`unknown workload '${name}' (known: ${WORKLOADS.map((x) => x.name).join(', ')})`);
  return w;
}

/** Runs the benchmark; resolves with the whole record. */
export async function runBench(opts: BenchOptions, progress: BenchProgress): Promise<BenchRecord> {
  const started = new Date();
  const loadBefore = loadAverage();
  const plan: { w: Workload; kernel: BenchKernel }[] = [];
  for (const kernel of opts.kernels) {
    for (const name of opts.workloads) {
      const w = findWorkload(name);
      if (w.kernels.includes(kernel)) plan.push({ w, kernel });
      else progress.note(`${w.name}: not on the ${kernel} kernel (runs on ${w.kernels.join(', ')})`);
    }
  }
  progress.start(
    plan.reduce((sum, p) => sum + p.w.steps(opts.scale, p.kernel) * (opts.rounds + (p.w.warmup ? 1 : 0)), 0),
  );
  const samples: BenchSample[] = [];
  for (const { w, kernel } of plan) {
    const profile = opts.profileDir ? await startProfile() : null;
    for (let r = w.warmup ? -1 : 0; r < opts.rounds; r++) {
      await w.run({
        kernel,
        workers: opts.workers,
        scale: opts.scale,
        round: r,
        record: (s) => {
          if (r >= 0) samples.push({ ...s, workload: w.name, kernel, round: r });
        },
        note: (line) => progress.note(line),
        step: (label) =>
          progress.step(`${kernel} ${label}${r < 0 ? ' (warm-up)' : ` (round ${r + 1}/${opts.rounds})`}`),
      });
    }
    if (profile) {
      const file = path.join(opts.profileDir!, `${w.name}-${kernel}.cpuprofile`);
      await profile.stop(file);
      progress.note(`CPU profile of ${w.name} on ${kernel}: ${file} (open in Chrome DevTools, Performance)`);
    }
  }
  const rows = summarize(samples);
  return {
    schema: 'vfio-engine-bench/1',
    started: started.toISOString(),
    seconds: (Date.now() - started.getTime()) / 1000,
    argv: opts.argv,
    commit: gitCommit(opts.root),
    machine: { ...machineInfo(os.release()), loadBefore, loadAfter: loadAverage() },
    options: {
      workloads: opts.workloads,
      kernels: opts.kernels,
      workers: opts.workers,
      rounds: opts.rounds,
      scale: opts.scale,
    } satisfies BenchRunOptions,
    samples,
    targets: evaluateTargets(rows),
  };
}

// A CPU profile of this thread (the engine's main thread, where its own work runs).
async function startProfile(): Promise<{ stop(file: string): Promise<void> }> {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return {
    async stop(file) {
      const { profile } = await session.post('Profiler.stop');
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, JSON.stringify(profile));
      session.disconnect();
    },
  };
}
