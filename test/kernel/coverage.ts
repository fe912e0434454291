/**
 * The ioctl coverage of the kernel suites, judged over both VM boots (VT-d and
 * virtio-iommu): every ioctl the uapi layer declares must have been accepted by the real
 * kernel at least once and refused at least once, in one boot or the other. Neither boot
 * can do it alone (mock domains need virtio-iommu; the VT-d suites need intel-iommu).
 *
 * In the guest, zz-ioctl-coverage.spec.ts writes this boot's {@link CoverageReport} to
 * $VFIO_ENGINE_COVERAGE; vm/guest-run.sh prints it as `@@VFIO_ENGINE_COVERAGE <json>`;
 * vm/run.ts parses it and {@link judgeCoverage} decides on the host. Only types are
 * imported from the recorder, so the host does not load the native port.
 */
import { IOCTLS } from '../../src/uapi/index.js';
import type { IoctlRecorder } from './recording-port.js';

/** The spec files (base names) that drive ioctls through the shared recorder; each boot loads all of them. */
export const CONTRIBUTORS = [
  'e2e-dma',
  'uapi-iommufd-ioas',
  'uapi-iommufd-mock',
  'uapi-iommufd-selftest',
  'uapi-iommufd-virtio',
  'uapi-iommufd-vtd',
  'uapi-vfio-device',
  'uapi-vfio-type1',
] as const;

/**
 * ioctls that can succeed in neither VM, and why. Each must still be refused at least
 * once, and must never succeed (else the exception is stale). Empty since the virtio-iommu
 * boot (mock domains: dirty tracking, nested HWPTs) and the edu devices behind root ports
 * (bus reset): keep it that way unless a kernel or QEMU change takes a capability away.
 */
export const CANNOT_SUCCEED: Readonly<Record<string, string>> = {};

/** One ioctl's outcomes in one boot. */
export interface IoctlCount {
  ok: number;
  failed: number;
  /** errno names of the refusals, sorted. */
  errnos: string[];
}

/** What one boot reports: its variant, the contributing suites it loaded, and a count for every declared ioctl. */
export interface CoverageReport {
  variant: string | null;
  suites: string[];
  ioctls: Record<string, IoctlCount>;
}

/** This boot's report, from the recorder every suite shares. */
export function coverageReport(recorder: IoctlRecorder, variant: string | null): CoverageReport {
  const ioctls: Record<string, IoctlCount> = {};
  for (const { name } of IOCTLS) {
    const t = recorder.tally(name);
    ioctls[name] = { ok: t.ok, failed: t.failed, errnos: [...t.errnos].sort() };
  }
  return { variant, suites: [...recorder.suites].sort(), ioctls };
}

/** One boot as the judge sees it. */
export interface CoverageRun {
  iommu: string;
  coverage: CoverageReport | null;
  /** Why the run was narrowed (a mocha filter), if it was. */
  partial?: string;
}

/** The verdict of {@link judgeCoverage}. */
export interface CoverageVerdict {
  /** 'incomplete': some boot is missing, narrowed or unreported; nothing was judged. */
  status: 'passed' | 'failed' | 'incomplete';
  problems: string[];
  /** One line per ioctl: counts per boot and the errnos seen (empty when incomplete). */
  table: string[];
}

/**
 * Judges the union of the boots of `variants` (each must be among `runs`): every declared
 * ioctl accepted and refused at least once, exceptions only from {@link CANNOT_SUCCEED}
 * (each refused, never accepted, and declared).
 */
export function judgeCoverage(runs: readonly CoverageRun[], variants: readonly string[]): CoverageVerdict {
  const incomplete: string[] = [];
  for (const v of variants) {
    const run = runs.find((r) => r.iommu === v);
    if (!run) incomplete.push(`no ${v} boot`);
    else if (run.partial) incomplete.push(`the ${v} boot was narrowed (${run.partial})`);
    else if (!run.coverage)
      incomplete.push(`the ${v} boot reported no coverage (zz-ioctl-coverage did not run)`);
    else {
      if (run.coverage.variant !== v)
        incomplete.push(`the ${v} boot reported variant ${String(run.coverage.variant)}`);
      const absent = CONTRIBUTORS.filter((s) => !run.coverage!.suites.includes(s));
      if (absent.length) incomplete.push(`the ${v} boot did not load ${absent.join(', ')}`);
    }
  }
  if (incomplete.length) return { status: 'incomplete', problems: incomplete, table: [] };

  const reports = variants.map((v) => runs.find((r) => r.iommu === v)!.coverage!);
  const count = (name: string, r: CoverageReport): IoctlCount =>
    r.ioctls[name] ?? { ok: 0, failed: 0, errnos: [] };
  const problems: string[] = [];
  const declared = new Set(IOCTLS.map((i) => i.name));
  const unknown = [...new Set(reports.flatMap((r) => Object.keys(r.ioctls)))].filter((n) => !declared.has(n));
  if (unknown.length) problems.push(`reported but not declared: ${unknown.join(', ')}`);
  const undeclared = Object.keys(CANNOT_SUCCEED).filter((n) => !declared.has(n));
  if (undeclared.length) problems.push(`exception list names undeclared ioctls: ${undeclared.join(', ')}`);

  const table: string[] = [];
  const neverOk: string[] = [];
  const stale: string[] = [];
  const neverFailed: string[] = [];
  for (const { name } of IOCTLS) {
    const counts = reports.map((r) => count(name, r));
    const ok = counts.reduce((n, c) => n + c.ok, 0);
    const failed = counts.reduce((n, c) => n + c.failed, 0);
    if (ok === 0 && !(name in CANNOT_SUCCEED)) neverOk.push(name);
    if (ok > 0 && name in CANNOT_SUCCEED) stale.push(name);
    if (failed === 0) neverFailed.push(name);
    const cols = counts.map(
      (c, i) => `${variants[i]} ok ${String(c.ok).padStart(3)} failed ${String(c.failed).padStart(3)}`,
    );
    const errnos = [...new Set(counts.flatMap((c) => c.errnos))].sort().join(' ');
    table.push(`${name.padEnd(36)} ${cols.join('  ')}  ${errnos}`);
  }
  if (neverOk.length) problems.push(`never accepted by either kernel: ${neverOk.join(', ')}`);
  if (stale.length)
    problems.push(`listed as impossible but accepted (drop the exception): ${stale.join(', ')}`);
  if (neverFailed.length) problems.push(`never refused by either kernel: ${neverFailed.join(', ')}`);
  return { status: problems.length ? 'failed' : 'passed', problems, table };
}
