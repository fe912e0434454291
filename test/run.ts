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
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { IOMMU_VARIANTS, runKernelVariants, type IommuVariant, type Totals } from '../vm/run.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const mocha = path.join(root, 'node_modules/mocha/bin/mocha.js');

function runHost(ignoreKernel: boolean): Totals {
  const totalsFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-engine-')), 'totals.json');
  const args = [mocha, ...(ignoreKernel ? ['--ignore', 'dist/test/kernel/**'] : [])];
  spawnSync(process.execPath, args, {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, VFIO_ENGINE_TOTALS: totalsFile },
  });
  if (!fs.existsSync(totalsFile)) return { passed: 0, failed: 1, skipped: 0 }; // mocha died before reporting
  return JSON.parse(fs.readFileSync(totalsFile, 'utf8')) as Totals;
}

// The kernel suites again, unchanged, on the simulated kernel of one variant: it must answer as that VM does.
function runSim(iommu: IommuVariant): Totals {
  const totalsFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-engine-')), 'totals.json');
  spawnSync(
    process.execPath,
    [mocha, '--config', 'test/mocharc.kernel.json', 'dist/test/kernel/**/*.spec.js'],
    {
      cwd: root,
      stdio: 'inherit',
      env: {
        ...process.env,
        VFIO_ENGINE_TOTALS: totalsFile,
        VFIO_ENGINE_PORT: 'sim',
        VFIO_ENGINE_SIM_IOMMU: iommu,
      },
    },
  );
  if (!fs.existsSync(totalsFile)) return { passed: 0, failed: 1, skipped: 0 };
  return JSON.parse(fs.readFileSync(totalsFile, 'utf8')) as Totals;
}

/** Runs the kernel suites on the simulated kernel of each of `variants`; the totals per variant. */
function runSims(variants: readonly IommuVariant[]): { iommu: IommuVariant; totals: Totals }[] {
  return variants.map((iommu) => {
    console.log(
      `\n== kernel suites on the simulated kernel, ${iommu} variant (VFIO_ENGINE_SIM_IOMMU=${iommu})`,
    );
    return { iommu, totals: runSim(iommu) };
  });
}

function add(a: Totals, b: Totals): Totals {
  return { passed: a.passed + b.passed, failed: a.failed + b.failed, skipped: a.skipped + b.skipped };
}

const perVariant = (runs: { iommu: IommuVariant; totals: Totals }[]) =>
  runs.map((r) => `${r.iommu} ${fmt(r.totals)}`).join('; ');

// --sim: the simulated-kernel runs alone (both variants, or the one VFIO_ENGINE_SIM_IOMMU names).
function mainSim(): number {
  const only = process.env.VFIO_ENGINE_SIM_IOMMU;
  if (only !== undefined && !IOMMU_VARIANTS.includes(only as IommuVariant)) {
    console.error(
      `VFIO_ENGINE_SIM_IOMMU is ${JSON.stringify(only)}: expected ${IOMMU_VARIANTS.join(' or ')}`,
    );
    return 2;
  }
  const runs = runSims(only ? [only as IommuVariant] : IOMMU_VARIANTS);
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
  const hostOnly = runHost(vmPossible === true);
  const sims = runSims(IOMMU_VARIANTS); // npm run test:sim
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

process.exitCode = process.argv.includes('--sim') ? mainSim() : await main();
