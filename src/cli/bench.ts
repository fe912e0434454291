/**
 * `vfio-engine bench`: the benchmark runner's verb. Runs the workloads (src/bench/workloads.ts)
 * on the chosen kernels, shows progress (a bar on a terminal, plain lines otherwise), prints the
 * table and the targets, and writes the run's JSON record and one SVG plot per workload to the
 * output folder.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Argument, InvalidArgumentError, Option, type Command } from 'commander';
import { runBench, type BenchOptions } from '../bench/runner.js';
import { createProgress } from '../bench/progress.js';
import { linuxEduDevices } from '../bench/rig.js';
import { LinuxPort } from '../port/linux.js';
import { writePlots } from '../bench/plot.js';
import { writeRecord } from '../bench/record.js';
import { summarize } from '../bench/summary.js';
import { formatResults } from '../bench/table.js';
import { BENCH_KERNELS, type BenchKernel } from '../bench/types.js';
import { WORKLOADS } from '../bench/workloads/index.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

function positiveInt(what: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${what} must be a whole number >= 1.`);
    return n;
  };
}

function kernels(v: string): BenchKernel[] {
  const list = v.split(',').map((s) => s.trim());
  const bad = list.filter((k) => !(BENCH_KERNELS as readonly string[]).includes(k));
  if (bad.length || !list.length)
    throw new InvalidArgumentError(
      `'${bad.join(',') || v}' is not one of ${BENCH_KERNELS.join(', ')} (comma-separated).`,
    );
  return list as BenchKernel[];
}

interface BenchFlags {
  kernel: BenchKernel[];
  workers: number;
  rounds: number;
  scale: number;
  out: string;
  json?: boolean;
  profile?: boolean;
}

/** Adds the options and action of `bench` to `cmd`; `exit` receives the exit code. */
export function benchCommand(cmd: Command, exit: (code: number) => void): Command {
  return cmd
    .addArgument(
      new Argument(
        '[workload...]',
        `workloads to run (default: all): ${WORKLOADS.map((w) => w.name).join(', ')}`,
      ).choices(WORKLOADS.map((w) => w.name)),
    )
    .addOption(
      new Option(
        '--kernel <kernels>',
        'where the DMA ioctls go: null (nowhere: the engine alone), sim, linux; comma-separated',
      )
        .argParser(kernels)
        .default(['null', 'sim'] as BenchKernel[], 'null,sim'),
    )
    .addOption(
      new Option('--workers <n>', 'DMA worker threads of the engine')
        .argParser(positiveInt('--workers'))
        .default(2),
    )
    .addOption(
      new Option('--rounds <n>', 'measured rounds (after a warm-up where it is cheap)')
        .argParser(positiveInt('--rounds'))
        .default(3),
    )
    .addOption(
      new Option('--scale <x>', 'multiplies every count (1: the documented sizes; 0.01 for a smoke run)')
        .argParser((v) => {
          const x = Number(v);
          if (!(x > 0 && x <= 10)) throw new InvalidArgumentError('--scale must be a number in (0, 10].');
          return x;
        })
        .default(1),
    )
    .option('--out <dir>', 'where the JSON record and the SVG plots go', 'bench-results')
    .option('--json', 'print the JSON record on stdout instead of the table')
    .option('--profile', "write a CPU profile of each workload's main thread to the output folder")
    .addHelpText(
      'after',
      [
        '',
        'Workloads:',
        ...WORKLOADS.map((w) => `  ${w.name.padEnd(17)} ${w.description} [${w.kernels.join(', ')}]`),
        '',
        'Each mode is measured side by side in one run: engine (the whole engine), qemu (one ioctl',
        "per section from JS, in order: QEMU's way), model (the simulated kernel alone). The best",
        'round is the figure (other load only adds time); medians are in the JSON record.',
        'On --kernel linux (in the test VM: npm run bench:kernel) also floor and floor-N: the same ioctls',
        'from C (bench/floor.c) on one thread and on --workers threads.',
      ].join('\n'),
    )
    .action(async (workloads: string[], o: BenchFlags, c: Command) => {
      if (o.kernel.includes('linux')) {
        try {
          linuxEduDevices(new LinuxPort());
        } catch (e) {
          c.error((e as Error).message, { exitCode: 2 });
        }
      }
      const progressOut = o.json ? process.stderr : process.stdout;
      let progress: ReturnType<typeof createProgress> | null = null;
      const out = path.resolve(o.out);
      const opts: BenchOptions = {
        workloads: workloads.length ? workloads : WORKLOADS.map((w) => w.name),
        kernels: o.kernel,
        workers: o.workers,
        rounds: o.rounds,
        scale: o.scale,
        argv: process.argv.slice(process.argv.indexOf('bench') + 1),
        root,
        profileDir: o.profile ? out : undefined,
      };
      const record = await runBench(opts, {
        start: (total) => (progress = createProgress({ total, stream: progressOut })),
        step: (label) => progress?.step(label),
        note: (line) => progressOut.write(`${line}\n`),
      }).finally(() => (progress as ReturnType<typeof createProgress> | null)?.stop());
      const file = await writeRecord(out, record);
      const plots = await writePlots(out, summarize(record.samples));
      if (o.json) process.stdout.write(`${JSON.stringify(record, null, 2)}\n`);
      else {
        for (const line of formatResults(summarize(record.samples), record.targets)) console.log(line);
        const [a, b, c1] = record.machine.loadBefore;
        const [d, e, f] = record.machine.loadAfter;
        console.log(
          `\n${record.machine.cpus} x ${record.machine.cpuModel}, node ${record.machine.node}, ` +
            `load ${a.toFixed(2)} ${b.toFixed(2)} ${c1.toFixed(2)} before, ${d.toFixed(2)} ${e.toFixed(2)} ${f.toFixed(2)} after; ` +
            `${record.seconds.toFixed(0)} s`,
        );
        console.log(`record: ${file}`);
        for (const p of plots) console.log(`plot:   ${p}`);
      }
      exit(0);
    });
}
