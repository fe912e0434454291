/**
 * `npm run bench:kernel`: builds the C floor on the host (bench/build-floor.ts), boots the
 * test VM (vm/run.ts) with `node dist/bench/kernel.js` as its command, once per IOMMU
 * variant, reads the samples back from the console (@@VFIO_ENGINE_BENCH lines) and prints
 * one table over the VMs, with the host's load before and after.
 *
 *   node dist/bench/kernel-vm.js [--iommu vtd|virtio|both] [bench/kernel.ts args...]
 *   (default vtd; e.g. --iommu both --rounds 5 --shape 16384x4k)
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { Writable } from 'node:stream';
import { IOMMU_VARIANTS, runKernelSuite, type IommuVariant } from '../vm/run.js';
import { buildFloor } from './build-floor.js';
import { formatTable, parseKernelBenchArgs, readBenchMarker, summarize, type Sample } from './report.js';

/** A stream that passes the console through and keeps the samples its lines carry. */
function collector(samples: Sample[], errors: string[], accel: Set<string>): Writable {
  let pending = '';
  const take = (line: string) => {
    const boot = /^vfio-engine: booting .* with (KVM|TCG),/.exec(line);
    if (boot) accel.add(boot[1]!);
    try {
      const s = readBenchMarker(line);
      if (s) samples.push(s);
    } catch (e) {
      errors.push((e as Error).message);
    }
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

const load = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(', ');

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let variants: readonly IommuVariant[] = ['vtd'];
  const i = argv.findIndex((a) => a === '--iommu' || a.startsWith('--iommu='));
  if (i >= 0) {
    const v = argv[i]!.includes('=') ? argv[i]!.slice(8) : argv[i + 1];
    argv.splice(i, argv[i]!.includes('=') ? 1 : 2);
    if (v === 'both') variants = IOMMU_VARIANTS;
    else if ((IOMMU_VARIANTS as readonly string[]).includes(v ?? '')) variants = [v as IommuVariant];
    else throw new Error(`--iommu takes ${IOMMU_VARIANTS.join(', ')} or both, not ${v}`);
  }
  const opts = parseKernelBenchArgs(argv); // refuse bad arguments before booting anything
  if (argv.some((a) => !/^[\w@%+=:,./-]+$/.test(a)))
    throw new Error('benchmark arguments must be plain words');
  const floor = buildFloor();
  console.log(`vfio-engine: built ${floor}`);

  const samples: Sample[] = [];
  const errors: string[] = [];
  const accel = new Set<string>();
  const loadBefore = load();
  const started = Date.now();
  let exitCode = 0;
  for (const iommu of variants) {
    const output = collector(samples, errors, accel);
    const r = await runKernelSuite({
      iommu,
      command: ['node', 'dist/bench/kernel.js', ...argv].join(' '),
      output,
    });
    await new Promise<void>((done) => output.end(done));
    if (r.skippedReason) return 2;
    if (r.exitCode !== 0) exitCode = r.exitCode;
  }
  const loadAfter = load();
  if (errors.length) {
    console.error(`vfio-engine: unreadable benchmark lines: ${errors.join('; ')}`);
    exitCode ||= 1;
  }
  if (!samples.length) {
    console.error('vfio-engine: no benchmark samples came back');
    return exitCode || 1;
  }
  const cpu = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.arch();
  let qemu = '';
  try {
    qemu = execFileSync(process.env.VFIO_ENGINE_QEMU || 'qemu-system-x86_64', ['--version'], {
      encoding: 'utf8',
    })
      .split('\n')[0]!
      .trim();
  } catch {
    // reported as unknown
  }
  console.log(
    `\ndata plane on the real kernel in the test VM (${variants.join(', ')}; ${[...accel].join('/') || '?'}): fastest of ${opts.rounds} rounds; ` +
      `ops/s; ratios to the floor (C) and to qemu (one ioctl per section from JS), higher is faster`,
  );
  console.log(
    `host: ${cpu}, ${os.cpus().length} CPUs; ${qemu || 'QEMU version unknown'}; ` +
      `load average ${loadBefore} before, ${loadAfter} after; ${((Date.now() - started) / 1000).toFixed(0)} s\n`,
  );
  const bases = opts.modes.includes('qemu') ? ['floor', 'qemu'] : ['floor'];
  for (const line of formatTable(summarize(samples), bases)) console.log(line);
  console.log(
    `\nthe same, medians of the ${opts.rounds} rounds (the spread: how much other work on the machine moved them)\n`,
  );
  for (const line of formatTable(summarize(samples, 'median'), bases)) console.log(line);
  return exitCode;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`vfio-engine: ${(err as Error)?.message ?? String(err)}`);
    process.exit(1);
  },
);
