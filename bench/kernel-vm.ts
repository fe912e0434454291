/**
 * `npm run bench:kernel`: the benchmark runner on the real kernel. Builds the C floor on the
 * host (bench/build-floor.ts), boots the test VM (vm/run.ts) with multi-threaded TCG so that
 * two guest threads can issue ioctls at once, runs `vfio-engine bench --kernel linux` in it,
 * takes the run's record back over the console (bench/vm-record.ts), adds the VM and the
 * host to it, and prints the table and targets and writes the JSON record and the SVG plots
 * on the host, as `vfio-engine bench` does.
 *
 *   node dist/bench/kernel-vm.js [--iommu vtd|virtio|both] [--tcg single|multi] [--memory 6G]
 *                                [--out DIR] [workload...] [vfio-engine bench options]
 *
 * The runner's --scale defaults to 0.1 here (VM_SCALE).
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { writePlots } from '../src/bench/plot.js';
import { gitCommit, loadAverage, machineInfo, writeRecord } from '../src/bench/record.js';
import { summarize } from '../src/bench/summary.js';
import { formatResults } from '../src/bench/table.js';
import type { BenchRecord } from '../src/bench/types.js';
import { IOMMU_VARIANTS, runKernelSuite, type IommuVariant } from '../vm/run.js';
import { ROOT, buildFloor } from './build-floor.js';
import { RecordReader } from './vm-record.js';

/** The options of this script; everything else goes to `vfio-engine bench` in the guest. */
export interface KernelVmArgs {
  /** The IOMMUs to boot, one VM each. */
  readonly variants: readonly IommuVariant[];
  readonly tcg: 'single' | 'multi';
  readonly memory: string;
  readonly out: string;
  readonly bench: readonly string[];
}

/** The runner's --scale in the VM unless one is given. */
export const VM_SCALE = 0.1;

/** Splits this script's options from the runner's (adding --scale VM_SCALE); throws on a bad value. */
export function parseKernelVmArgs(argv: readonly string[]): KernelVmArgs {
  let variants: readonly IommuVariant[] = ['vtd'];
  let tcg: 'single' | 'multi' = 'multi';
  let memory = '6G';
  let out = 'bench-results';
  const bench: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^--(iommu|tcg|memory|out)(?:=(.*))?$/.exec(a);
    if (!m) {
      if (a === '--kernel' || a.startsWith('--kernel=') || a === '--json')
        throw new Error(`${a}: the VM's run is always --kernel linux, and its record comes back to --out`);
      if (!/^[\w@%+=:,./-]+$/.test(a)) throw new Error(`benchmark arguments must be plain words, not ${a}`);
      bench.push(a);
      continue;
    }
    const v = m[2] ?? argv[++i];
    if (v === undefined) throw new Error(`--${m[1]} needs a value`);
    if (m[1] === 'iommu') {
      if (v === 'both') variants = IOMMU_VARIANTS;
      else if ((IOMMU_VARIANTS as readonly string[]).includes(v)) variants = [v as IommuVariant];
      else throw new Error(`--iommu takes ${IOMMU_VARIANTS.join(', ')} or both, not ${v}`);
    } else if (m[1] === 'tcg') {
      if (v !== 'single' && v !== 'multi') throw new Error(`--tcg takes single or multi, not ${v}`);
      tcg = v;
    } else if (m[1] === 'memory') {
      if (!/^\d+[MG]$/.test(v)) throw new Error(`--memory takes QEMU's -m syntax (e.g. 6G), not ${v}`);
      memory = v;
    } else out = v;
  }
  // Under TCG the guest's CPU is emulated (the engine's work per region some 15x the host's):
  // the documented sizes are ten times the default run's work, an estimated 40 minutes or more.
  if (!bench.some((a) => a === '--scale' || a.startsWith('--scale=')))
    bench.push('--scale', String(VM_SCALE));
  return { variants, tcg, memory, out, bench };
}

/** A stream that passes the console through and feeds its lines to the reader. */
function collector(reader: RecordReader, accel: { value: string }): Writable {
  let pending = '';
  const take = (line: string) => {
    const boot = /^vfio-engine: booting .* with (KVM|TCG \(([^)]*)\)),/.exec(line);
    if (boot) accel.value = boot[2] ?? 'kvm';
    reader.take(line);
  };
  return new Writable({
    write(chunk: Buffer | string, _enc, done) {
      const text = String(chunk);
      process.stdout.write(text);
      pending += text;
      const lines = pending.split('\n');
      pending = lines.pop()!;
      lines.forEach(take);
      done();
    },
    final(done) {
      if (pending) take(pending);
      done();
    },
  });
}

function qemuVersion(): string {
  try {
    return execFileSync(process.env.VFIO_ENGINE_QEMU || 'qemu-system-x86_64', ['--version'], {
      encoding: 'utf8',
    })
      .split('\n')[0]!
      .trim();
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<number> {
  const args = parseKernelVmArgs(process.argv.slice(2));
  const floor = buildFloor();
  console.log(`vfio-engine: built ${floor}`);
  const guestOut = '/tmp/vfio-engine-bench';
  // Through a pipe, so that the runner writes its progress as lines (the guest's console is a
  // TTY, whose redrawn bar would reach the host as one long line); pipefail keeps its exit code.
  const runner = [
    'node',
    'dist/src/cli/main.js',
    'bench',
    '--kernel',
    'linux',
    '--out',
    guestOut,
    ...args.bench,
  ];
  const command = `set -o pipefail && ${runner.join(' ')} | cat && node dist/bench/vm-record.js ${guestOut}`;
  let exitCode = 0;
  for (const iommu of args.variants) {
    const reader = new RecordReader();
    const accel = { value: '?' };
    const loadBefore = loadAverage();
    const output = collector(reader, accel);
    const r = await runKernelSuite({
      iommu,
      command,
      output,
      tcgThreads: args.tcg,
      memory: args.memory,
      smp: 2,
      timeoutSeconds: Number(process.env.VFIO_ENGINE_VM_TIMEOUT) || 3600,
    });
    await new Promise<void>((done) => output.end(done));
    if (r.skippedReason) {
      console.error(`vfio-engine: bench:kernel skipped: ${r.skippedReason}`);
      return 2;
    }
    if (r.exitCode !== 0) exitCode = r.exitCode;
    for (const e of reader.errors) console.error(`vfio-engine: ${e}`);
    const got = reader.records.at(-1);
    if (!got) {
      console.error(`vfio-engine: no benchmark record came back from the ${iommu} VM`);
      exitCode ||= 1;
      continue;
    }
    const record: BenchRecord = {
      ...got,
      commit: got.commit ?? gitCommit(ROOT), // the guest may have no git
      vm: {
        iommu,
        accel: accel.value,
        smp: 2,
        memory: args.memory,
        qemu: qemuVersion(),
        host: { ...machineInfo(), loadBefore, loadAfter: loadAverage() },
      },
    };
    const dir = path.resolve(args.out, args.variants.length > 1 ? iommu : '');
    const file = await writeRecord(dir, record);
    const plots = await writePlots(dir, summarize(record.samples));
    console.log(
      `\nthe real kernel in the test VM (${iommu}, ${record.vm!.accel}, ${os.cpus().length} host CPUs)`,
    );
    for (const line of formatResults(summarize(record.samples), record.targets)) console.log(line);
    const h = record.vm!.host;
    const g = record.machine;
    console.log(
      `\nguest: Linux ${g.kernelRelease}, ${g.cpus} vCPUs, node ${g.node}; host: ${h.cpus} x ${h.cpuModel}, ` +
        `${record.vm!.qemu}; host load ${h.loadBefore.map((x) => x.toFixed(2)).join(' ')} before, ` +
        `${h.loadAfter.map((x) => x.toFixed(2)).join(' ')} after; ${r.seconds.toFixed(0)} s`,
    );
    console.log(`record: ${file}`);
    for (const p of plots) console.log(`plot:   ${p}`);
  }
  return exitCode;
}

if (process.argv[1]?.endsWith('kernel-vm.js')) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(`vfio-engine: ${(err as Error)?.message ?? String(err)}`);
      process.exit(1);
    },
  );
}
