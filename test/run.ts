/**
 * `npm test`: the host suites, the kernel suites on the simulated kernel once per variant it
 * models (vtd, then virtio: VFIO_ENGINE_SIM_IOMMU), then inside the test VM booted twice (the
 * vtd variant, then virtio: vm/run.ts runKernelVariants), then the ioctl coverage over the
 * union of the two boots (one test), then one closing line `N passed, N failed[, N skipped]`
 * over all of it.
 *
 * `node dist/test/run.js --sim` (`npm run test:sim`): only the simulated-kernel runs, both
 * variants, or the one VFIO_ENGINE_SIM_IOMMU names; the same closing line over them.
 *
 * When the VM runs, the host run leaves out test/kernel (those run in the guest). When it
 * cannot run here (no QEMU or busybox-static), the host run includes them, and each shows
 * as skipped with its reason. VFIO_ENGINE_REQUIRE_KERNEL=1 (CI) turns "cannot run" into a
 * failure; VFIO_ENGINE_SKIP_KERNEL=1 skips the VM on purpose (the reason is printed).
 *
 * A mocha runner that dies (a signal such as SIGABRT from a native abort, or an exit before its
 * reporter finished) is reported as `<suites> CRASHED (<how>) after N passed, N failed; running:
 * "<test>"` with the last lines of its output, and counted as one failure on top of the counts
 * it had reached (test/reporter.cjs writes them as the run goes).
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { IOMMU_VARIANTS, runKernelVariants, type IommuVariant, type Totals } from '../vm/run.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const mocha = path.join(root, 'node_modules/mocha/bin/mocha.js');
/** Lines of a crashed runner's output shown with its crash report. */
const TAIL_LINES = 40;

/** What test/reporter.cjs writes to VFIO_ENGINE_TOTALS: the counts so far, the test running, whether it ended. */
export interface Progress extends Totals {
  running: string | null;
  finished: boolean;
}

/** A mocha runner that died before its run finished (or was killed by a signal after it). */
export interface Crash {
  /** 'SIGABRT', or 'exit code N'. */
  readonly how: string;
  /** The counts the reporter had written before it died (zeros if none). */
  readonly seen: Totals;
  /** The full title of the test or hook in progress, if one was. */
  readonly running: string | null;
  /** Whether the reporter had finished (a signal during the process's teardown). */
  readonly finished: boolean;
  /** The last lines of its output (stdout and stderr, in arrival order). */
  readonly tail: readonly string[];
}

/** One mocha run as the driver counts it: a crash adds one failure to the counts seen before it. */
export interface MochaRun {
  readonly totals: Totals;
  readonly crash?: Crash;
}

/** Where runMocha sends the runner's output and its own report (the terminal by default; tests capture it). */
export interface RunOutput {
  readonly stdout: (chunk: string) => void;
  readonly stderr: (chunk: string) => void;
}

const terminal: RunOutput = {
  stdout: (c) => process.stdout.write(c),
  stderr: (c) => process.stderr.write(c),
};

/**
 * Runs mocha (`args` after its script) in a child node with VFIO_ENGINE_TOTALS set, streaming
 * its output while keeping the last lines. A runner that did not finish, or died of a signal,
 * is a crash: reported (formatCrash) under `label`, counted as one failure on top of the counts
 * its reporter had written, never mistaken for "0 passed, 1 failed".
 */
export async function runMocha(
  label: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
  out: RunOutput = terminal,
): Promise<MochaRun> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-engine-'));
  const totalsFile = path.join(dir, 'totals.json');
  // Piped output is not a TTY: keep mocha's colours when ours is one, and none otherwise (mocha
  // would colour a log file when CI is set).
  const color = process.stdout.isTTY ? ['--color'] : ['--no-color'];
  const child = spawn(process.execPath, [mocha, ...color, ...args], {
    cwd: root,
    stdio: ['inherit', 'pipe', 'pipe'],
    env: { ...process.env, ...env, VFIO_ENGINE_TOTALS: totalsFile },
  });
  const tail = new TailLines(TAIL_LINES);
  const pipe = (stream: NodeJS.ReadableStream, write: (c: string) => void) => {
    const lines = tail.stream();
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => {
      write(c);
      lines.push(c);
    });
    return new Promise<void>((resolve) =>
      stream.once('end', () => {
        lines.end();
        resolve();
      }),
    );
  };
  const [exit] = await Promise.all([
    new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('close', (code, signal) => resolve({ code, signal })),
    ),
    pipe(child.stdout!, out.stdout),
    pipe(child.stderr!, out.stderr),
  ]);
  const progress = readProgress(totalsFile);
  fs.rmSync(dir, { recursive: true, force: true });
  if (progress?.finished && !exit.signal) {
    return { totals: { passed: progress.passed, failed: progress.failed, skipped: progress.skipped } };
  }
  const seen = progress
    ? { passed: progress.passed, failed: progress.failed, skipped: progress.skipped }
    : { passed: 0, failed: 0, skipped: 0 };
  const crash: Crash = {
    how: exit.signal ?? `exit code ${exit.code}`,
    seen,
    running: progress?.running ?? null,
    finished: progress?.finished ?? false,
    tail: tail.lines(),
  };
  out.stdout(`\n${formatCrash(label, crash)}\n`);
  return { totals: { ...seen, failed: seen.failed + 1 }, crash };
}

/**
 * The report of a crashed runner: `<label> CRASHED (<how>) after N passed, N failed; running:
 * "<title>"`, then the last lines of its output.
 */
export function formatCrash(label: string, c: Crash): string {
  const where = c.running
    ? `; running: ${JSON.stringify(c.running)}`
    : c.finished
      ? '; after its run had finished'
      : '; between tests';
  const head = `${label} CRASHED (${c.how}) after ${fmt(c.seen)}${where}`;
  if (!c.tail.length) return `${head}\n(no output)`;
  return [`${head}; its last ${c.tail.length} lines of output:`, ...c.tail.map((l) => `  | ${l}`)].join('\n');
}

// The reporter's file, or null when it never wrote one (or left it unreadable).
function readProgress(file: string): Progress | null {
  try {
    const p = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<Progress>;
    if (typeof p.passed !== 'number') return null;
    return {
      passed: p.passed,
      failed: p.failed ?? 0,
      skipped: p.skipped ?? 0,
      running: p.running ?? null,
      // vm/run.ts writes final totals without the flag: a file without it is a finished run.
      finished: p.finished ?? true,
    };
  } catch {
    return null;
  }
}

// The last `max` complete lines over several streams (a partial line waits for its stream's next chunk).
class TailLines {
  private readonly kept: string[] = [];
  constructor(private readonly max: number) {}

  stream(): { push(chunk: string): void; end(): void } {
    let partial = '';
    return {
      push: (chunk) => {
        const parts = (partial + chunk).split('\n');
        partial = parts.pop()!;
        for (const l of parts) this.add(l);
      },
      end: () => {
        if (partial) this.add(partial);
        partial = '';
      },
    };
  }

  lines(): string[] {
    return [...this.kept];
  }

  private add(line: string): void {
    this.kept.push(line.replace(/\r$/, ''));
    if (this.kept.length > this.max) this.kept.shift();
  }
}

async function runHost(ignoreKernel: boolean): Promise<Totals> {
  const args = ignoreKernel ? ['--ignore', 'dist/test/kernel/**'] : [];
  return (await runMocha('host suites', args)).totals;
}

// The kernel suites again, unchanged, on the simulated kernel of one variant: it must answer as that VM does.
async function runSim(iommu: IommuVariant): Promise<Totals> {
  const run = await runMocha(
    `kernel suites on the simulated kernel (${iommu})`,
    ['--config', 'test/mocharc.kernel.json', 'dist/test/kernel/**/*.spec.js'],
    { VFIO_ENGINE_PORT: 'sim', VFIO_ENGINE_SIM_IOMMU: iommu },
  );
  return run.totals;
}

/** Runs the kernel suites on the simulated kernel of each of `variants`; the totals per variant. */
async function runSims(
  variants: readonly IommuVariant[],
): Promise<{ iommu: IommuVariant; totals: Totals }[]> {
  const runs: { iommu: IommuVariant; totals: Totals }[] = [];
  for (const iommu of variants) {
    console.log(
      `\n== kernel suites on the simulated kernel, ${iommu} variant (VFIO_ENGINE_SIM_IOMMU=${iommu})`,
    );
    runs.push({ iommu, totals: await runSim(iommu) });
  }
  return runs;
}

function add(a: Totals, b: Totals): Totals {
  return { passed: a.passed + b.passed, failed: a.failed + b.failed, skipped: a.skipped + b.skipped };
}

const perVariant = (runs: { iommu: IommuVariant; totals: Totals }[]) =>
  runs.map((r) => `${r.iommu} ${fmt(r.totals)}`).join('; ');

// --sim: the simulated-kernel runs alone (both variants, or the one VFIO_ENGINE_SIM_IOMMU names).
async function mainSim(): Promise<number> {
  const only = process.env.VFIO_ENGINE_SIM_IOMMU;
  if (only !== undefined && !IOMMU_VARIANTS.includes(only as IommuVariant)) {
    console.error(
      `VFIO_ENGINE_SIM_IOMMU is ${JSON.stringify(only)}: expected ${IOMMU_VARIANTS.join(' or ')}`,
    );
    return 2;
  }
  const runs = await runSims(only ? [only as IommuVariant] : IOMMU_VARIANTS);
  const t = runs.reduce((sum, r) => add(sum, r.totals), { passed: 0, failed: 0, skipped: 0 });
  console.log(`\nsimulated kernel: ${perVariant(runs)}`);
  console.log(fmt(t));
  return t.failed === 0 ? 0 : 1;
}

async function main(): Promise<number> {
  const skipReason =
    process.env.VFIO_ENGINE_SKIP_KERNEL === '1'
      ? 'VFIO_ENGINE_SKIP_KERNEL=1: the real-kernel suites were not run'
      : null;
  const vmPossible = !skipReason && (await canRunVm());

  console.log(`\n== host suites${vmPossible ? ' (the kernel suites run next, in the test VM)' : ''}`);
  const hostOnly = await runHost(vmPossible === true);
  const sims = await runSims(IOMMU_VARIANTS); // npm run test:sim
  const host = sims.reduce((sum, r) => add(sum, r.totals), hostOnly);
  let guest: Totals = { passed: 0, failed: 0, skipped: 0 };
  let vmFailed = false;
  const notes: string[] = [];
  // The coverage union needs both boots: whenever they do not run, it counts as skipped.
  const coverageSkipped = (why: string) => {
    guest.skipped++;
    notes.push(`ioctl coverage over both boots skipped (${why})`);
  };

  if (skipReason) {
    console.log(`\n== kernel suites skipped: ${skipReason}`);
    coverageSkipped(skipReason);
  } else if (vmPossible !== true) {
    console.log(`\n== kernel suites skipped: ${vmPossible}`);
    coverageSkipped(String(vmPossible));
    if (process.env.VFIO_ENGINE_REQUIRE_KERNEL === '1') vmFailed = true;
  } else {
    console.log('\n== kernel suites, inside the test VM: vtd, then virtio (npm run test:kernel)');
    const run = await runKernelVariants({ projectRoot: root });
    if (run.skippedReason) {
      console.log(`kernel suites could not run: ${run.skippedReason}`);
      coverageSkipped(run.skippedReason);
      vmFailed = process.env.VFIO_ENGINE_REQUIRE_KERNEL === '1';
    } else {
      // Includes one failure per boot that failed without a failed test, and the coverage test.
      guest = run.totals;
      for (const r of run.results) {
        notes.push(
          `${r.iommu} VM: ${r.totals ? fmt(r.totals) : 'no totals'}${r.error ? ` (${r.error})` : ''}, ${r.seconds.toFixed(1)} s`,
        );
      }
      notes.push(
        `ioctl coverage over both boots: ${run.coverage.status}${run.coverage.reason ? ` (${run.coverage.reason})` : ''}`,
      );
    }
  }

  const t = {
    passed: host.passed + guest.passed,
    failed: host.failed + guest.failed + (vmFailed ? 1 : 0),
    skipped: host.skipped + guest.skipped,
  };
  console.log(
    `\nhost: ${fmt(hostOnly)}; simulated kernel: ${perVariant(sims)}; kernel VMs: ${fmt(guest)}${vmFailed ? '; the test VM run failed (counted as 1 failure)' : ''}`,
  );
  for (const n of notes) console.log(`  ${n}`);
  console.log(fmt(t));
  return t.failed === 0 ? 0 : 1;
}

function fmt(t: Totals): string {
  return `${t.passed} passed, ${t.failed} failed` + (t.skipped ? `, ${t.skipped} skipped` : '');
}

// true, or the reason the VM cannot run here.
async function canRunVm(): Promise<true | string> {
  const which = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
  if (!which('qemu-system-x86_64'))
    return 'qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)';
  if (!fs.existsSync('/bin/busybox') && !which('busybox'))
    return 'busybox is not installed (apt-get install busybox-static)';
  return true;
}

// Run as the driver (node dist/test/run.js); imported (the driver's own tests), only the helpers.
const invoked = process.argv[1] ? fs.realpathSync(process.argv[1]) : '';
if (invoked === fileURLToPath(import.meta.url))
  process.exitCode = process.argv.includes('--sim') ? await mainSim() : await main();
