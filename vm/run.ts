/**
 * Runs the kernel test suites (dist/test/kernel) inside a QEMU VM with a real
 * Linux: iommufd, VFIO, an emulated IOMMU (Intel VT-d or virtio-iommu: the two
 * "variants") and emulated `edu` DMA devices, each behind its own PCIe root port.
 * The guest mounts the host's root read-only over 9p and runs the host's node
 * on this checkout (vm/guest-init.sh, vm/guest-run.sh); results come back over
 * the serial console as `@@VFIO_ENGINE_*` marker lines.
 *
 * `npm run test:kernel` = `node dist/vm/run.js [--iommu vtd|virtio|both] [--spec GLOB]...
 * [--kernel PATH] [--vm-timeout S] [--edu N] [mocha args...]`; see `--help`. By default
 * it boots both variants and judges the ioctl coverage over the two runs.
 *
 * `node dist/vm/run.js --command 'node dist/src/cli/main.js bench --kernel linux'` runs a shell command in the
 * checkout instead of mocha (the benchmarks): same VM, same markers, the command's exit code
 * is the run's, and no totals or coverage come back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildFloor } from '../bench/build-floor.js';
// Only coverage.ts: it loads no port (test/kernel/guest.ts and variant.ts would load both).
import { judgeCoverage, type CoverageReport } from '../test/kernel/coverage.js';
import { DmaFaultLabels } from '../test/kernel/dma-faults.js';

/** Test counts as written by test/reporter.cjs. */
export interface Totals {
  passed: number;
  failed: number;
  skipped: number;
}

/**
 * The IOMMU the test VM emulates: 'vtd' is `-device intel-iommu,intremap=on`, 'virtio'
 * is `-device virtio-iommu-pci`. The guest sees it as VFIO_ENGINE_GUEST_IOMMU.
 */
export type IommuVariant = 'vtd' | 'virtio';
/** Every variant, in the order the drivers boot them. */
export const IOMMU_VARIANTS: readonly IommuVariant[] = ['vtd', 'virtio'];

/** Options of {@link runKernelSuite}; every one has a default. */
export interface KernelSuiteOptions {
  /**
   * The VM's IOMMU (default 'vtd'). The iommufd selftest's mock domains work only next to
   * virtio-iommu (in 6.12 intel-iommu claims the mock devices and refuses them).
   */
  iommu?: IommuVariant;
  /** The checkout to test (default: found from this file's location). */
  projectRoot?: string;
  /** bzImage to boot (default: env VFIO_ENGINE_KERNEL, else the newest of shared/vm's and the cache's, else a build). */
  kernel?: string;
  /** Build a kernel with vm/build-kernel.sh when none is found (default true). */
  buildKernel?: boolean;
  /** Mocha spec globs relative to the checkout (default dist/test/kernel/**\/*.spec.js). */
  specs?: string[];
  /** Extra mocha arguments, e.g. ['--grep', 'edu']. */
  mochaArgs?: string[];
  /**
   * A shell command to run in the checkout instead of mocha, e.g. 'node dist/src/cli/main.js bench --kernel linux'
   * (staged into the initramfs, run by the guest's sh): its exit code is the run's; it
   * reports no totals and no coverage. Excludes `specs` and `mochaArgs`.
   */
  command?: string;
  /** Kill QEMU and fail after this many seconds (default env VFIO_ENGINE_VM_TIMEOUT, else 1200). */
  timeoutSeconds?: number;
  /** Number of edu devices (default 2), each alone behind its own PCIe root port and in its own IOMMU group. */
  eduDevices?: number;
  /** Guest memory, QEMU -m syntax (default 2G). */
  memory?: string;
  /** Guest CPUs (default 2). */
  smp?: number;
  /**
   * TCG's vCPU threads when KVM is not usable (default 'single', env VFIO_ENGINE_VM_ACCEL
   * overrides): 'multi' runs each vCPU on its own host thread (`-accel tcg,thread=multi`), so
   * two guest threads can issue ioctls at the same time; the benchmark VM uses it.
   */
  tcgThreads?: 'single' | 'multi';
  /** Where guest and progress output goes (default process.stdout). */
  output?: NodeJS.WritableStream;
}

/** Outcome of {@link runKernelSuite}. */
export interface KernelSuiteResult {
  /** The variant booted. */
  iommu: IommuVariant;
  /**
   * 0 only when the guest ran mocha and no test failed (with `command`: when the command
   * exited 0); 2 when `skippedReason` is set; 128+n after signal n; otherwise mocha's (the
   * command's) code or 1.
   */
  exitCode: number;
  /** Counts reported by the guest, null when it never got that far. */
  totals: Totals | null;
  /** Wall time of the whole call. */
  seconds: number;
  /** Set when the test bed cannot run here (no QEMU, no static busybox): nothing was tested. */
  skippedReason?: string;
  /** Why the run failed, when it did. */
  error?: string;
  /** The kernel image booted. */
  kernel?: string;
  /** The ioctl tallies zz-ioctl-coverage.spec reported, null when none came back. */
  coverage: CoverageReport | null;
  /**
   * Set when the run was narrowed (--spec, --grep, ...): its coverage cannot stand for
   * the variant's, and says why.
   */
  partial?: string;
  /**
   * The guest kernel's DMA fault lines: how many fell inside a test's expectDmaFault window,
   * and the ones that did not (reported loudly: a device reached for memory no test meant).
   */
  dmaFaults?: { expected: number; unexpected: string[] };
}

const DEFAULT_SPEC = 'dist/test/kernel/**/*.spec.js';
const KERNEL_APPEND = [
  'console=ttyS0',
  // For both variants: without a DMAR table (the virtio boot) intel_iommu=on does nothing.
  'intel_iommu=on',
  'iommu.strict=1',
  'panic=-1',
  'quiet',
  // Neither emulated IOMMU gives MSI isolation; without these VFIO_SET_IOMMU and
  // VFIO_DEVICE_BIND_IOMMUFD fail with EPERM.
  'vfio_iommu_type1.allow_unsafe_interrupts=1',
  'iommufd.allow_unsafe_interrupts=1',
];

/** Host environment variables forwarded into the guest's suites. */
const FORWARDED_ENV = /^VFIO_ENGINE_DIFF_[A-Z_]+$/;

/** The directory vm/build-kernel.sh installs kernels into. */
export function kernelCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'vfio-engine');
}

/** Boots the test VM, runs the kernel suites in it, and reports the result. */
export async function runKernelSuite(opts: KernelSuiteOptions = {}): Promise<KernelSuiteResult> {
  const started = Date.now();
  const out = opts.output ?? process.stdout;
  const log = (msg: string) => out.write(`vfio-engine: ${msg}\n`);
  const seconds = () => (Date.now() - started) / 1000;
  const root = opts.projectRoot ?? findProjectRoot();
  const iommu: IommuVariant = opts.iommu ?? 'vtd';
  if (!IOMMU_VARIANTS.includes(iommu)) return failed(`unknown IOMMU variant ${String(iommu)}`);

  const qemu = process.env.VFIO_ENGINE_QEMU || findOnPath('qemu-system-x86_64');
  if (!qemu || !fs.existsSync(qemu)) {
    return skipped(`${qemu ?? 'qemu-system-x86_64'} not found (Debian: apt-get install qemu-system-x86)`);
  }
  const busybox = findBusybox();
  if ('reason' in busybox) return skipped(busybox.reason);

  if (/\s/.test(root) || /\s/.test(process.execPath)) {
    return failed(`paths with blanks cannot go on the kernel command line: ${root}, ${process.execPath}`);
  }
  const command = opts.command;
  if (command !== undefined) {
    if (!command.trim()) return failed('the command to run in the guest is empty');
    if (command.includes('\0')) return failed('the command to run in the guest contains a NUL byte');
    if (opts.specs?.length || opts.mochaArgs?.length)
      return failed('a command runs instead of mocha: spec globs and mocha arguments do not apply');
  }
  const specs = opts.specs?.length ? opts.specs : [DEFAULT_SPEC];
  if (command === undefined && !opts.specs?.length && !hasSpecs(path.join(root, 'dist/test/kernel'))) {
    return failed(`no compiled kernel suites in ${root}/dist/test/kernel: build first (npx tsc -p .)`);
  }
  // The guest console is a tty, so mocha would always colour: follow the host's stdout instead.
  const extra = opts.mochaArgs ?? [];
  const colour =
    command !== undefined || extra.some((a) => /^--(no-)?colou?r/.test(a))
      ? []
      : [(out as { isTTY?: boolean }).isTTY ? '--color' : '--no-color'];
  const mochaArgs = [...colour, ...extra];
  if ([...specs, ...mochaArgs].some((a) => a.includes('\n')) || specs.some((s) => /\s/.test(s))) {
    return failed('spec globs cannot contain blanks, nor mocha arguments newlines');
  }
  // Narrowed spec lists show up in the coverage report (the suites it names); filters only here.
  const filters: string[] = [];
  extra.forEach((a, i) => {
    const m = /^(--grep|-g|--fgrep|-f|--invert|-i|--bail|-b)(=|$)/.exec(a);
    if (!m) return;
    const takesValue = /^(--grep|-g|--fgrep|-f)$/.test(m[1]!) && !m[2];
    filters.push(takesValue && extra[i + 1] !== undefined ? `${a} ${extra[i + 1]}` : a);
  });
  const partial = filters.length ? `mocha ${filters.join(' ')}` : undefined;

  const kernel = await resolveKernel(root, opts, log);
  if ('error' in kernel) return failed(kernel.error);
  if (command === undefined) {
    // test/kernel/bench.spec.ts runs the C floor in the guest: it is compiled here, where
    // the uapi headers are (the guest sees the checkout read-only).
    try {
      buildFloor(path.join(root, 'dist/bench/floor'));
    } catch (e) {
      log(`the C floor was not built (${(e as Error).message}): the benchmark's smoke test will skip`);
    }
  }

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-engine-vm-'));
  try {
    const initrd = path.join(tmp, 'initramfs.cpio');
    fs.writeFileSync(initrd, buildInitramfs(root, busybox.path, mochaArgs, command));

    const kvm = kvmUsable();
    const timeout = opts.timeoutSeconds ?? (Number(process.env.VFIO_ENGINE_VM_TIMEOUT) || 20 * 60);
    const append = [
      ...KERNEL_APPEND,
      `vfio_engine.dir=${root}`,
      `vfio_engine.node=${process.execPath}`,
      `vfio_engine.iommu=${iommu}`,
      ...(command === undefined ? specs.map((s) => `vfio_engine.spec=${s}`) : []),
      // The guest powers itself off a little after the host gives up, so even
      // a QEMU orphaned by a SIGKILLed host process ends.
      `vfio_engine.timeout=${Math.ceil(timeout) + 30}`,
      // Suite settings the host passes through (e.g. the differential test's run count).
      ...Object.entries(process.env)
        .filter(([k, v]) => FORWARDED_ENV.test(k) && v && !/\s/.test(v))
        .map(([k, v]) => `vfio_engine.env=${k}=${v}`),
      // Last, so it can override the above (the guest takes the last dir/node).
      ...(process.env.VFIO_ENGINE_VM_APPEND?.trim()
        ? process.env.VFIO_ENGINE_VM_APPEND.trim().split(/\s+/)
        : []),
    ].join(' ');
    const edu = opts.eduDevices ?? 2;
    const args = [
      // With KVM, interrupt remapping needs the split irqchip.
      ...(kvm
        ? ['-M', 'q35,kernel-irqchip=split', '-accel', 'kvm', '-cpu', 'host']
        : ['-M', 'q35', '-accel', tcgAccel(opts.tcgThreads), '-cpu', 'max']),
      ...['-smp', String(opts.smp ?? 2), '-m', opts.memory ?? '2G'],
      // The IOMMU must be created before the devices it translates.
      ...['-device', iommu === 'vtd' ? 'intel-iommu,intremap=on' : 'virtio-iommu-pci'],
      // Each edu alone on the secondary bus of its own root port: vfio-pci then has a
      // bus reset for it (on the root bus it had none), and each stays in its own group.
      ...Array.from({ length: edu }, (_, i) => [
        ...['-device', `pcie-root-port,id=vfio_engine_rp${i + 1},chassis=${i + 1},slot=${i + 1},bus=pcie.0`],
        ...['-device', `edu,bus=vfio_engine_rp${i + 1}`],
      ]).flat(),
      ...['-kernel', kernel.path, '-initrd', initrd, '-append', append],
      ...['-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap'],
      ...['-nographic', '-no-reboot', '-nodefaults', '-serial', 'stdio'],
    ];
    log(
      `booting ${kernel.path} (${kernel.source}) with ${kvm ? 'KVM' : `TCG (${tcgAccel(opts.tcgThreads)})`}, IOMMU ${iommu}, ` +
        `${edu} edu devices, timeout ${timeout} s`,
    );
    log(`${qemu} ${args.map(shellQuote).join(' ')}`);

    const vm = await runQemu(qemu, args, timeout, out);
    const base = { iommu, seconds: seconds(), kernel: kernel.path, coverage: vm.coverage, partial };
    let result: KernelSuiteResult;
    if (vm.interrupted) {
      const signo = os.constants.signals[vm.interrupted];
      result = {
        ...base,
        exitCode: 128 + signo,
        totals: vm.totals,
        error: `interrupted by ${vm.interrupted}`,
      };
    } else if (vm.timedOut) {
      result = {
        ...base,
        exitCode: 1,
        totals: vm.totals,
        error: `timed out after ${timeout} s (VFIO_ENGINE_VM_TIMEOUT); QEMU killed`,
      };
    } else if (vm.guestExit === null) {
      const why =
        (vm.guestCrash ? `; guest kernel: ${vm.guestCrash}` : '') +
        (vm.stderrTail ? `; QEMU said: ${vm.stderrTail}` : '');
      result = {
        ...base,
        exitCode: 1,
        totals: vm.totals,
        error: `the guest stopped without a result (QEMU exit ${vm.qemuExit})${why}`,
      };
    } else if (command !== undefined) {
      result = { ...base, exitCode: vm.guestExit, totals: null };
      if (vm.guestExit !== 0) result.error = `the command exited ${vm.guestExit} in the guest`;
    } else if (vm.guestExit === 0 && !vm.totals) {
      result = { ...base, exitCode: 1, totals: null, error: 'mocha exited 0 but reported no totals' };
    } else if (vm.totals && vm.totals.failed > 0 && vm.guestExit === 0) {
      result = { ...base, exitCode: 1, totals: vm.totals, error: `${vm.totals.failed} failed` };
    } else {
      result = { ...base, exitCode: vm.guestExit, totals: vm.totals };
      if (vm.guestExit !== 0) {
        result.error = vm.totals
          ? `mocha in the guest exited ${vm.guestExit}`
          : `the guest failed before mocha reported (exit ${vm.guestExit}): see its log above`;
      }
    }
    if (vm.coverageError) {
      result.coverage = null;
      result.error = [result.error, vm.coverageError].filter(Boolean).join('; ');
    }
    const faults = vm.dmaFaults;
    result.dmaFaults = { expected: faults.expected, unexpected: faults.unexpected };
    log(
      `guest DMA faults (${iommu}): ${faults.expected} expected, labelled with the test's reason; ` +
        `${faults.unexpected.length ? `${faults.unexpected.length} UNEXPECTED` : 'none unexpected'}`,
    );
    // Reported, not failed: a fault logged late (its interrupt handled after the test's window
    // closed) would otherwise fail a run whose tests all passed.
    for (const line of faults.unexpected.slice(0, 10)) log(`  UNEXPECTED DMA fault: ${line}`);
    const t = result.totals;
    if (command !== undefined) {
      log(
        `command (${iommu}): exit ${result.exitCode}${result.error ? ` (${result.error})` : ''}` +
          `; VM ${vm.seconds.toFixed(1)} s, total ${result.seconds.toFixed(1)} s`,
      );
      return result;
    }
    log(
      `kernel suites (${iommu}): ${t ? `${t.passed} passed, ${t.failed} failed, ${t.skipped} skipped` : 'no totals'}` +
        `; exit ${result.exitCode}${result.error ? ` (${result.error})` : ''}` +
        `; VM ${vm.seconds.toFixed(1)} s, total ${result.seconds.toFixed(1)} s`,
    );
    return result;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }

  function skipped(reason: string): KernelSuiteResult {
    log(`kernel suites not run: ${reason}`);
    return { iommu, exitCode: 2, totals: null, seconds: seconds(), skippedReason: reason, coverage: null };
  }
  function failed(error: string): KernelSuiteResult {
    log(`kernel suites failed: ${error}`);
    return { iommu, exitCode: 1, totals: null, seconds: seconds(), error, coverage: null };
  }
}

/** Options of {@link runKernelVariants}: those of {@link runKernelSuite}, for several variants. */
export interface KernelVariantsOptions extends Omit<KernelSuiteOptions, 'iommu'> {
  /** The variants to boot, in order (default every one: vtd, then virtio). */
  variants?: readonly IommuVariant[];
}

/** Outcome of {@link runKernelVariants}. */
export interface KernelVariantsResult {
  /** One result per variant booted (none after a skip: nothing else can run either). */
  results: KernelSuiteResult[];
  /**
   * The ioctl coverage judged over the union of the boots, counted as one test:
   * skipped (with why) when not every variant ran in full.
   */
  coverage: { status: 'passed' | 'failed' | 'skipped'; reason?: string };
  /** Every boot's counts, plus one failure per boot that failed without a failed test, plus the coverage test. */
  totals: Totals;
  /** Set when the test bed cannot run here: nothing was tested. */
  skippedReason?: string;
  /** 0 when every boot and the coverage check passed, 2 when skipped, else 1. */
  exitCode: number;
}

/**
 * Boots the test VM once per IOMMU variant (sequentially: each boot wants both cores),
 * then requires every ioctl of the uapi layer to have been accepted and refused over the
 * union of the boots (test/kernel/coverage.ts).
 */
export async function runKernelVariants(opts: KernelVariantsOptions = {}): Promise<KernelVariantsResult> {
  const out = opts.output ?? process.stdout;
  const log = (msg: string) => out.write(`vfio-engine: ${msg}\n`);
  const variants = opts.variants?.length ? opts.variants : IOMMU_VARIANTS;
  const results: KernelSuiteResult[] = [];
  const totals: Totals = { passed: 0, failed: 0, skipped: 0 };
  for (const iommu of variants) {
    if (variants.length > 1)
      log(`== kernel suites, ${iommu} VM (${results.length + 1} of ${variants.length})`);
    const r = await runKernelSuite({ ...opts, iommu });
    if (r.skippedReason) {
      return {
        results,
        coverage: { status: 'skipped', reason: r.skippedReason },
        totals,
        skippedReason: r.skippedReason,
        exitCode: 2,
      };
    }
    results.push(r);
    if (r.totals) {
      totals.passed += r.totals.passed;
      totals.failed += r.totals.failed;
      totals.skipped += r.totals.skipped;
    }
    // A boot that failed (crash, timeout, no totals) without a failed test still fails the run.
    if (r.exitCode !== 0 && !(r.totals && r.totals.failed > 0)) totals.failed++;
  }

  let coverage: KernelVariantsResult['coverage'];
  const missing = IOMMU_VARIANTS.filter((v) => !variants.includes(v));
  if (missing.length) {
    coverage = {
      status: 'skipped',
      reason: `only ${variants.join(', ')} booted (--iommu): needs ${missing.join(', ')} too`,
    };
  } else {
    const verdict = judgeCoverage(
      results.map((r) => ({ iommu: r.iommu, coverage: r.coverage, partial: r.partial })),
      IOMMU_VARIANTS,
    );
    for (const line of verdict.table) out.write(`  ${line}\n`);
    if (verdict.status === 'incomplete') {
      // Narrowed on purpose (--spec, --grep): say so; a full run that lost a boot's report fails.
      const narrowed = !!opts.specs?.length || results.some((r) => r.partial);
      coverage = { status: narrowed ? 'skipped' : 'failed', reason: verdict.problems.join('; ') };
    } else {
      coverage =
        verdict.status === 'passed'
          ? { status: 'passed' }
          : { status: 'failed', reason: verdict.problems.join('; ') };
    }
  }
  totals[coverage.status]++;
  log(
    `ioctl coverage over ${variants.join(' + ')}: ${coverage.status}${coverage.reason ? ` (${coverage.reason})` : ''}`,
  );
  const ok = results.every((r) => r.exitCode === 0) && coverage.status !== 'failed';
  return { results, coverage, totals, exitCode: ok ? 0 : 1 };
}

/** What the guest's console lines report ({@link readMarkers} fills it in). */
export interface ConsoleMarkers {
  /** @@VFIO_ENGINE_EXIT: mocha's exit code in the guest. */
  guestExit: number | null;
  /** @@VFIO_ENGINE_TOTALS */
  totals: Totals | null;
  /** @@VFIO_ENGINE_COVERAGE */
  coverage: CoverageReport | null;
  /** Set when a coverage marker came back but did not parse. */
  coverageError: string | null;
  /** First oops/panic line of the guest kernel, if any. */
  guestCrash: string | null;
}

interface QemuOutcome extends ConsoleMarkers {
  qemuExit: number | string | null;
  timedOut: boolean;
  interrupted: NodeJS.Signals | null;
  stderrTail: string;
  seconds: number;
  /** The guest's DMA fault lines, expected (inside a test's expectDmaFault) or not. */
  dmaFaults: DmaFaultLabels;
}

/* eslint-disable no-control-regex -- these match the terminal escapes the guest sends */
const TERMINAL_RESET = /\x1bc/g;
const TERMINAL_MODES = /\x1b\[\?7l|\x1b\[2J/g;
/* eslint-enable no-control-regex */

/**
 * Reads one console line (raw: it may end in \r) into `outcome`. A kernel message can
 * land mid-line, so markers are matched anywhere in a line.
 */
export function readMarkers(line: string, outcome: ConsoleMarkers): void {
  const crash = /(Kernel panic - not syncing: .*|Oops: .*|BUG: .*)/.exec(line);
  if (crash && !outcome.guestCrash) outcome.guestCrash = crash[1]!.trim();
  const exit = /@@VFIO_ENGINE_EXIT (\d+)/.exec(line);
  if (exit) outcome.guestExit = Number(exit[1]);
  const coverage = /@@VFIO_ENGINE_COVERAGE ([^\r\n]*)/.exec(line);
  if (coverage) {
    try {
      const c = JSON.parse(coverage[1]!.trim()) as CoverageReport | null;
      if (c !== null && (typeof c !== 'object' || typeof c.ioctls !== 'object' || !Array.isArray(c.suites)))
        throw new Error('not a coverage report');
      outcome.coverage = c;
      outcome.coverageError = null;
    } catch (e) {
      // A kernel message landing inside the long line is the likely cause.
      outcome.coverage = null;
      outcome.coverageError = `unreadable coverage marker (${(e as Error).message})`;
    }
  }
  const totals = /@@VFIO_ENGINE_TOTALS (\{[^}]*\}|null)/.exec(line);
  if (totals) {
    try {
      const t = JSON.parse(totals[1]!) as Partial<Totals> | null;
      outcome.totals =
        t && typeof t.passed === 'number'
          ? { passed: t.passed, failed: t.failed ?? 0, skipped: t.skipped ?? 0 }
          : null;
    } catch {
      outcome.totals = null;
    }
  }
}

/** Runs QEMU, streams the serial console, parses the markers; QEMU never outlives the call. */
function runQemu(
  qemu: string,
  args: string[],
  timeoutSeconds: number,
  out: NodeJS.WritableStream,
): Promise<QemuOutcome> {
  const started = Date.now();
  const outcome: QemuOutcome = {
    guestExit: null,
    totals: null,
    coverage: null,
    coverageError: null,
    qemuExit: null,
    timedOut: false,
    interrupted: null,
    stderrTail: '',
    guestCrash: null,
    seconds: 0,
    dmaFaults: new DmaFaultLabels(),
  };
  // stdin ignored: QEMU must not put a terminal into raw mode or read keys.
  const child: ChildProcess = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const onExit = () => kill();
  const onSignal = (signal: NodeJS.Signals) => {
    outcome.interrupted = signal;
    kill();
  };
  process.on('exit', onExit);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  const timer = setTimeout(() => {
    outcome.timedOut = true;
    out.write(`\nvfio-engine: VM timeout (${timeoutSeconds} s): killing QEMU\n`);
    kill();
  }, timeoutSeconds * 1000);

  // Line by line: each line is read for markers, then shown with its DMA fault label, if any
  // (test/kernel/dma-faults.ts). The serial console ends lines with \r\n; SeaBIOS sends a
  // terminal reset, screen clear and wrap-off that would wreck the user's terminal.
  let pending = '';
  const show = (line: string) => {
    parseMarker(line);
    const shown = outcome.dmaFaults.label(
      line.replace(/\r$/, '').replace(TERMINAL_RESET, '\n').replace(TERMINAL_MODES, ''),
    );
    if (shown !== null) out.write(`${shown}\n`);
  };
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (data: string) => {
    pending += data;
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const line of lines) show(line);
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => {
    process.stderr.write(chunk);
    outcome.stderrTail = (outcome.stderrTail + chunk).slice(-2000).trim();
  });

  const parseMarker = (line: string) => readMarkers(line, outcome);

  return new Promise((resolve) => {
    const done = (code: number | string | null) => {
      clearTimeout(timer);
      process.off('exit', onExit);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.off('SIGHUP', onSignal);
      if (pending) show(pending);
      outcome.qemuExit = code;
      outcome.seconds = (Date.now() - started) / 1000;
      resolve(outcome);
    };
    child.on('error', (err) => {
      outcome.stderrTail = String(err);
      done(null);
    });
    child.on('close', (code, signal) => done(code ?? signal));
  });
}

interface ResolvedKernel {
  path: string;
  source: string;
}

/**
 * Picks the kernel: the option or VFIO_ENGINE_KERNEL; else the newest image among the
 * prebuilt ones in a shared/vm folder beside the checkout (or beside any folder above it)
 * and the ones vm/build-kernel.sh left in the cache (a prebuilt image wins a tie); else a
 * build, once (about 20 min on 2 cores).
 */
async function resolveKernel(
  root: string,
  opts: KernelSuiteOptions,
  log: (m: string) => void,
): Promise<ResolvedKernel | { error: string }> {
  const explicit = opts.kernel ?? process.env.VFIO_ENGINE_KERNEL;
  if (explicit) {
    return fs.existsSync(explicit)
      ? { path: path.resolve(explicit), source: opts.kernel ? '--kernel' : 'VFIO_ENGINE_KERNEL' }
      : { error: `kernel not found: ${explicit}` };
  }
  const fragment = path.join(root, 'vm', 'kernel.fragment');
  const sharedDir = findSharedVm(root);
  const candidates = [
    ...(sharedDir ? kernelImages(sharedDir, log, false) : []).map((k) => ({ ...k, prebuilt: true })),
    ...kernelImages(kernelCacheDir(), log, true, fragment).map((k) => ({ ...k, prebuilt: false })),
  ].sort((a, b) => compareVersions(b.version, a.version) || Number(b.prebuilt) - Number(a.prebuilt));
  const best = candidates[0];
  if (best) {
    return {
      path: best.path,
      source: best.prebuilt
        ? `prebuilt, the newest in ${sharedDir}`
        : `built here before, ${kernelCacheDir()}`,
    };
  }
  if (opts.buildKernel === false)
    return { error: `no kernel image in ${kernelCacheDir()} (run vm/build-kernel.sh)` };

  log(
    `no test kernel here (no VFIO_ENGINE_KERNEL, no prebuilt image in a shared/vm folder beside the ` +
      `checkout, none built before in ${kernelCacheDir()}): building one from Debian's ` +
      `linux-source-6.12 with vm/build-kernel.sh, once; about 20 min on 2 cores`,
  );
  const script = path.join(root, 'vm', 'build-kernel.sh');
  const code = await new Promise<number | null>((resolve) => {
    // Its stdout is one line per phase; the compiler's output goes to the log file it names.
    const child = spawn('bash', [script], { stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', () => resolve(null));
    child.on('close', (c) => resolve(c));
  });
  if (code !== 0) return { error: `vm/build-kernel.sh failed (exit ${code})` };
  const built = kernelImages(kernelCacheDir(), log, true, fragment)[0];
  return built
    ? { path: built.path, source: 'built now' }
    : { error: `vm/build-kernel.sh left no image in ${kernelCacheDir()}` };
}

/** The first `shared/vm` folder beside the checkout, or beside a folder above it; null if none. */
export function findSharedVm(root: string): string | null {
  for (let dir = path.dirname(path.resolve(root)); ; dir = path.dirname(dir)) {
    const vm = path.join(dir, 'shared', 'vm');
    if (fs.existsSync(vm)) return vm;
    if (path.dirname(dir) === dir) return null;
  }
}

/**
 * The bzImage-<version>-vfio images in `dir` whose checksum matches (`<image>.sha256`, required
 * unless `optional`), newest first. With `fragment`, an image whose `<image>.config` lacks one
 * of the fragment's lines was built from an older fragment: it is skipped, with a log line.
 */
function kernelImages(
  dir: string,
  log: (m: string) => void,
  optional: boolean,
  fragment?: string,
): { path: string; version: string }[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .map((n) => /^bzImage-(\d+(?:\.\d+)*)-vfio$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .sort((a, b) => compareVersions(b[1]!, a[1]!))
    .map((m) => ({ path: path.join(dir, m[0]), version: m[1]! }))
    .filter((k) => checksumOk(k.path, log, optional) && (!fragment || builtFrom(k.path, fragment, log)));
}

// Whether the image's saved .config agrees with every line of the fragment: a later fragment
// change makes an image built here stale (vm/build-kernel.sh then builds a new one).
function builtFrom(image: string, fragment: string, log: (m: string) => void): boolean {
  let config: string;
  try {
    config = fs.readFileSync(`${image}.config`, 'utf8');
  } catch {
    return true; // no saved config beside it: nothing to compare
  }
  const missing = fragmentMismatches(config, fs.readFileSync(fragment, 'utf8'));
  if (missing.length)
    log(
      `ignoring ${image}: its .config disagrees with ${missing.join(', ')} (vm/kernel.fragment changed since)`,
    );
  return missing.length === 0;
}

/**
 * The fragment lines a kernel .config does not honour, as vm/build-kernel.sh checks them: a
 * `CONFIG_X=v` line must be in the config as it is; a `# CONFIG_X is not set` line only needs
 * no `CONFIG_X=` line (an option whose dependencies are off is left out altogether).
 */
export function fragmentMismatches(config: string, fragment: string): string[] {
  const lines = new Set(config.split('\n'));
  const set = new Set([...lines].map((l) => /^(CONFIG_\w+)=/.exec(l)?.[1]).filter(Boolean));
  return fragment.split('\n').filter((l) => {
    if (/^CONFIG_\w+=.*$/.test(l)) return !lines.has(l);
    const off = /^# (CONFIG_\w+) is not set$/.exec(l);
    return off ? set.has(off[1]) : false;
  });
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}

/** Compares an image with its `<image>.sha256` (sha256sum format); a missing file passes only if optional. */
function checksumOk(file: string, log: (m: string) => void, optional = false): boolean {
  let expected: string | undefined;
  try {
    expected = fs.readFileSync(`${file}.sha256`, 'utf8').trim().split(/\s+/)[0];
  } catch {
    if (!optional) log(`ignoring ${file}: no ${path.basename(file)}.sha256 beside it`);
    return optional;
  }
  const actual = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
  if (actual !== expected) log(`ignoring ${file}: sha256 ${actual} does not match ${expected}`);
  return actual === expected;
}

/** Files of the initramfs: static busybox, /init and what init stages for the chroot. */
function buildInitramfs(root: string, busybox: string, mochaArgs: string[], command?: string): Buffer {
  const vmDir = path.join(root, 'vm');
  const dirs = ['bin', 'dev', 'proc', 'sys', 'host', 'hostroot', 'tmp', 'vfio-engine'];
  const entries: CpioEntry[] = [
    ...dirs.map((name) => ({ name, mode: S_IFDIR | 0o755 })),
    // The kernel opens /dev/console for init's stdio before init can mount devtmpfs.
    { name: 'dev/console', mode: S_IFCHR | 0o600, rdev: [5, 1] as [number, number] },
    { name: 'bin/busybox', mode: S_IFREG | 0o755, data: fs.readFileSync(busybox) },
    { name: 'bin/sh', mode: S_IFLNK | 0o777, data: Buffer.from('busybox') },
    { name: 'init', mode: S_IFREG | 0o755, data: fs.readFileSync(path.join(vmDir, 'guest-init.sh')) },
    {
      name: 'vfio-engine/guest-run.sh',
      mode: S_IFREG | 0o755,
      data: fs.readFileSync(path.join(vmDir, 'guest-run.sh')),
    },
  ];
  // The project's mocha config minus "spec": mocha would add the config's
  // spec (all suites) to the --spec the guest passes.
  const rc = path.join(root, '.mocharc.json');
  if (fs.existsSync(rc)) {
    const config = JSON.parse(fs.readFileSync(rc, 'utf8')) as Record<string, unknown>;
    delete config.spec;
    entries.push({
      name: 'vfio-engine/mocharc.json',
      mode: S_IFREG | 0o644,
      data: Buffer.from(JSON.stringify(config)),
    });
  }
  if (mochaArgs.length) {
    entries.push({
      name: 'vfio-engine/mocha-args',
      mode: S_IFREG | 0o644,
      data: Buffer.from(mochaArgs.join('\n') + '\n'),
    });
  }
  if (command !== undefined) {
    // The guest runs this instead of mocha (vm/guest-run.sh), as a script: any quoting works.
    entries.push({
      name: 'vfio-engine/command',
      mode: S_IFREG | 0o644,
      data: Buffer.from(command.endsWith('\n') ? command : `${command}\n`),
    });
  }
  return cpioNewc(entries);
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

/** One file of a {@link cpioNewc} archive; name without a leading slash. */
export interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  rdev?: [number, number];
}

/** A cpio archive in the "newc" format the kernel unpacks as initramfs (no cpio tool needed). */
export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let size = 0;
  const push = (b: Buffer) => {
    parts.push(b);
    size += b.length;
  };
  const align = () => {
    if (size % 4) push(Buffer.alloc(4 - (size % 4)));
  };
  const mtime = Math.floor(Date.now() / 1000);
  let ino = 1;
  for (const e of [...entries, { name: 'TRAILER!!!', mode: 0 } as CpioEntry]) {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    const trailer = e.name === 'TRAILER!!!';
    const fields = [
      trailer ? 0 : ino++,
      e.mode,
      0, // uid
      0, // gid
      (e.mode & 0o170000) === S_IFDIR ? 2 : 1,
      trailer ? 0 : mtime,
      data.length,
      0, // dev major
      0, // dev minor
      e.rdev?.[0] ?? 0,
      e.rdev?.[1] ?? 0,
      name.length,
      0, // check
    ];
    push(Buffer.from('070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join(''), 'ascii'));
    push(name);
    align();
    push(data);
    align();
  }
  return Buffer.concat(parts);
}

function findBusybox(): { path: string } | { reason: string } {
  const candidates = process.env.VFIO_ENGINE_BUSYBOX
    ? [process.env.VFIO_ENGINE_BUSYBOX]
    : ['/bin/busybox', findOnPath('busybox')];
  const file = candidates.find((c): c is string => !!c && fs.existsSync(c));
  if (!file) return { reason: 'busybox not found (Debian: apt-get install busybox-static)' };
  const kind = elfLinkage(file);
  if (kind !== 'static') {
    return {
      reason: `${file} is ${kind === 'dynamic' ? 'dynamically linked' : 'not an ELF binary'}: the initramfs needs a static one (Debian: apt-get install busybox-static)`,
    };
  }
  return { path: file };
}

/** 'static' unless the ELF file has a PT_INTERP (dynamic loader) program header. */
function elfLinkage(file: string): 'static' | 'dynamic' | 'not-elf' {
  const b = fs.readFileSync(file);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[5] !== 1) return 'not-elf';
  const is64 = b[4] === 2;
  const phoff = is64 ? Number(b.readBigUInt64LE(0x20)) : b.readUInt32LE(0x1c);
  const phentsize = b.readUInt16LE(is64 ? 0x36 : 0x2a);
  const phnum = b.readUInt16LE(is64 ? 0x38 : 0x2c);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 <= b.length && b.readUInt32LE(off) === 3 /* PT_INTERP */) return 'dynamic';
  }
  return 'static';
}

/** KVM only helps if /dev/kvm is usable and the CPU has hardware virtualization. */
function kvmUsable(): boolean {
  const forced = process.env.VFIO_ENGINE_VM_ACCEL;
  if (forced) return forced.startsWith('kvm');
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    return /^flags\s*:.*\b(vmx|svm)\b/m.test(fs.readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}

/**
 * Single-threaded TCG by default: with QEMU 7.2's multi-threaded TCG about one
 * boot in twenty-five oopsed ("Oops: int3" in sched_clock_cpu when the kernel
 * live-patches a static key while the other vCPU runs it). Round-robin vCPUs
 * cannot race that way, and cost little here (2 host cores, TCG). The benchmark
 * asks for 'multi', to let two guest threads run at once.
 */
function tcgAccel(threads: 'single' | 'multi' = 'single'): string {
  const forced = process.env.VFIO_ENGINE_VM_ACCEL;
  return forced?.startsWith('tcg') ? forced : `tcg,thread=${threads}`;
}

function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // next
    }
  }
  return null;
}

function hasSpecs(dir: string): boolean {
  try {
    return (fs.readdirSync(dir, { recursive: true }) as string[]).some((f) => f.endsWith('.spec.js'));
  } catch {
    return false;
  }
}

/** The checkout: the nearest directory above this file with the vfio-engine package.json. */
function findProjectRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === 'vfio-engine') return dir;
    } catch {
      // keep looking
    }
    const up = path.dirname(dir);
    if (up === dir)
      throw new Error('cannot find the vfio-engine checkout above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

const USAGE = `usage: node dist/vm/run.js [options] [mocha args...]
Runs the kernel test suites inside a QEMU VM (see vm/run.ts), once per IOMMU
variant, then checks the ioctl coverage over the union of the boots.
  --iommu V          vtd (intel-iommu), virtio (virtio-iommu-pci) or both (default:
                     both, vtd first); the coverage union is judged only with both
  --spec GLOB        spec glob relative to the checkout (repeatable;
                     default ${DEFAULT_SPEC})
  --kernel PATH      bzImage to boot (also env VFIO_ENGINE_KERNEL)
  --vm-timeout S     kill the VM after S seconds (env VFIO_ENGINE_VM_TIMEOUT; default 1200)
  --edu N            number of edu devices (default 2)
  --no-build         fail instead of building a kernel when none is found
  --command CMD      run the shell command CMD in the checkout instead of mocha (e.g.
                     'node dist/src/cli/main.js bench --kernel linux'); exits with its exit code (the first
                     non-zero one over the variants); no --spec, no mocha arguments
  --                 pass everything after it to mocha
Other arguments go to mocha unchanged, e.g. --grep edu, --bail. A run narrowed by
--spec or a mocha filter reports the coverage union as skipped, not as passed.
Env: VFIO_ENGINE_QEMU, VFIO_ENGINE_BUSYBOX, VFIO_ENGINE_VM_ACCEL=kvm|tcg[,thread=multi],
VFIO_ENGINE_VM_APPEND (extra kernel parameters), VFIO_ENGINE_TOTALS (file for the totals JSON).`;

/** Parses the command line of `node dist/vm/run.js`. */
export function parseArgs(argv: string[]): KernelVariantsOptions & { help?: boolean } {
  const opts: KernelVariantsOptions & { help?: boolean } = { specs: [], mochaArgs: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] =
      arg.startsWith('--') && arg.includes('=')
        ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]
        : [arg, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '-h':
      case '--help':
        opts.help = true;
        break;
      case '--iommu': {
        const v = value();
        if (v === 'both') opts.variants = IOMMU_VARIANTS;
        else if ((IOMMU_VARIANTS as readonly string[]).includes(v)) opts.variants = [v as IommuVariant];
        else throw new Error(`--iommu takes ${IOMMU_VARIANTS.join(', ')} or both, not ${v}`);
        break;
      }
      case '--spec':
        opts.specs!.push(value());
        break;
      case '--kernel':
        opts.kernel = value();
        break;
      case '--vm-timeout':
        opts.timeoutSeconds = Number(value());
        if (!(opts.timeoutSeconds > 0)) throw new Error('--vm-timeout needs a number of seconds');
        break;
      case '--edu':
        opts.eduDevices = Number(value());
        if (!Number.isInteger(opts.eduDevices) || opts.eduDevices < 0) throw new Error('--edu needs a count');
        break;
      case '--no-build':
        opts.buildKernel = false;
        break;
      case '--command':
        opts.command = value();
        if (!opts.command.trim()) throw new Error('--command needs a command');
        break;
      case '--':
        opts.mochaArgs!.push(...argv.slice(i + 1));
        i = argv.length;
        break;
      default:
        opts.mochaArgs!.push(arg);
    }
  }
  if (opts.command !== undefined && (opts.specs!.length || opts.mochaArgs!.length)) {
    const stray = [...opts.specs!.map((s) => `--spec ${s}`), ...opts.mochaArgs!].join(' ');
    throw new Error(`--command runs instead of mocha: ${stray} does not apply`);
  }
  return opts;
}

/**
 * Runs `opts.command` in the test VM once per variant (default every one, in order, as
 * {@link runKernelVariants}); the exit code is the first non-zero one, else 0 (2 when the
 * test bed cannot run here).
 */
export async function runKernelCommand(
  opts: KernelVariantsOptions & { command: string },
): Promise<{ results: KernelSuiteResult[]; exitCode: number; skippedReason?: string }> {
  const results: KernelSuiteResult[] = [];
  for (const iommu of opts.variants?.length ? opts.variants : IOMMU_VARIANTS) {
    const r = await runKernelSuite({ ...opts, iommu });
    if (r.skippedReason) return { results, exitCode: 2, skippedReason: r.skippedReason };
    results.push(r);
  }
  return { results, exitCode: results.find((r) => r.exitCode !== 0)?.exitCode ?? 0 };
}

async function main(): Promise<number> {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (opts.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (opts.command !== undefined) {
    const run = await runKernelCommand({ ...opts, command: opts.command });
    return run.exitCode;
  }
  const run = await runKernelVariants(opts);
  if (run.skippedReason) return run.exitCode;
  const t = run.totals;
  const line = `${t.passed} passed, ${t.failed} failed` + (t.skipped ? `, ${t.skipped} skipped` : '');
  if (run.results.length > 1) {
    for (const r of run.results) {
      const rt = r.totals;
      process.stdout.write(
        `vfio-engine: ${r.iommu} VM: ${rt ? `${rt.passed} passed, ${rt.failed} failed, ${rt.skipped} skipped` : 'no totals'}` +
          `${r.error ? ` (${r.error})` : ''}, ${r.seconds.toFixed(1)} s\n`,
      );
    }
  }
  process.stdout.write(`${line}\n`);
  // Same contract as test/reporter.cjs, so a driver can add up host and VM totals.
  if (process.env.VFIO_ENGINE_TOTALS) fs.writeFileSync(process.env.VFIO_ENGINE_TOTALS, JSON.stringify(t));
  return run.exitCode;
}

const invoked = process.argv[1] ? fs.realpathSync(process.argv[1]) : '';
if (invoked === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`vfio-engine: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
