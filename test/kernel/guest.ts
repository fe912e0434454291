/**
 * Helpers for the kernel test suites (test/kernel/*.spec.ts): they run for
 * real inside the test VM (npm run test:kernel, vm/run.ts) and are reported as
 * skipped on the host, whose kernel has no iommufd or VFIO.
 */
import { existsSync, readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { basename, join } from 'node:path';

/** Why kernel suites are skipped outside the VM; shown in the suite title. */
export const KERNEL_SKIP_REASON = 'needs the real kernel: runs inside the test VM (npm run test:kernel)';

/** True inside the test VM: vm/guest-run.sh set VFIO_ENGINE_GUEST=1 and /dev/iommu exists. */
export function inGuest(): boolean {
  return process.env.VFIO_ENGINE_GUEST === '1' && existsSync('/dev/iommu');
}

/**
 * `describe` for a suite that needs the real kernel. In the VM it is plain
 * `describe`. On the host it is `describe.skip` with the reason in the title,
 * so every test shows as pending and counts as skipped, never as passed, and
 * no hook runs. The VM is recognised by VFIO_ENGINE_GUEST=1 alone: in a guest
 * whose kernel lacks /dev/iommu the tests must run and fail, not skip.
 */
export function describeKernel(title: string, fn: (this: Mocha.Suite) => void): Mocha.Suite | void {
  if (process.env.VFIO_ENGINE_GUEST === '1') return describe(title, fn);
  return describe.skip(`${title} [skipped: ${KERNEL_SKIP_REASON}]`, fn);
}

/** An emulated edu device (QEMU 1234:11e8) bound to vfio-pci in the VM. */
export interface EduDevice {
  /** PCI address, e.g. '0000:00:03.0'. */
  bdf: string;
  /** IOMMU group number: the legacy group node is /dev/vfio/<group>. */
  group: number;
  /** VFIO cdev name, e.g. 'vfio0': /dev/vfio/devices/<cdev>. */
  cdev: string;
  /** The device's sysfs directory (resolved, under /sys/devices). */
  sysfsPath: string;
}

const VFIO_PCI = '/sys/bus/pci/drivers/vfio-pci';

/**
 * The edu devices bound to vfio-pci, sorted by address; empty when there is
 * no vfio-pci driver (the host). Throws if a bound device has no VFIO cdev.
 */
export function guestTopology(): EduDevice[] {
  if (!existsSync(VFIO_PCI)) return [];
  const devices: EduDevice[] = [];
  for (const bdf of readdirSync(VFIO_PCI)) {
    if (!/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(bdf)) continue;
    const sysfsPath = realpathSync(join(VFIO_PCI, bdf));
    const id = (attr: string) => readFileSync(join(sysfsPath, attr), 'utf8').trim();
    if (id('vendor') !== '0x1234' || id('device') !== '0x11e8') continue;
    const group = Number(basename(readlinkSync(join(sysfsPath, 'iommu_group'))));
    const vfioDev = join(sysfsPath, 'vfio-dev');
    const cdev = existsSync(vfioDev) ? readdirSync(vfioDev).find((n) => /^vfio\d+$/.test(n)) : undefined;
    if (!cdev) throw new Error(`${bdf} is bound to vfio-pci but has no VFIO cdev (${vfioDev})`);
    devices.push({ bdf, group, cdev, sysfsPath });
  }
  return devices.sort((a, b) => a.bdf.localeCompare(b.bdf));
}
