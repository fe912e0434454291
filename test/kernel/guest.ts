/**
 * Helpers for the kernel test suites (test/kernel/*.spec.ts): they run for
 * real inside the test VM (npm run test:kernel, vm/run.ts) and are reported as
 * skipped on the host, whose kernel has no iommufd or VFIO.
 */
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { kernelPort, onSimulatedKernel, simulatedIommu } from './recording-port.js';

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
  if (onSimulatedKernel()) return describe(`${title} [simulated kernel, ${simulatedIommu()}]`, fn);
  return describe.skip(`${title} [skipped: ${KERNEL_SKIP_REASON}]`, fn);
}

/** Why test-bed suites are skipped on the simulated kernel. */
export const VM_ONLY_REASON = 'checks the test VM itself: runs only inside it';

/**
 * `describe` for a suite that needs the test VM itself (the test bed's own checks, or a
 * comparison with the real kernel): runs only in the guest, skipped with the reason elsewhere.
 */
export function describeVm(
  title: string,
  fn: (this: Mocha.Suite) => void,
  simReason = VM_ONLY_REASON,
): Mocha.Suite | void {
  if (process.env.VFIO_ENGINE_GUEST === '1') return describe(title, fn);
  const why = onSimulatedKernel() ? simReason : KERNEL_SKIP_REASON;
  return describe.skip(`${title} [skipped: ${why}]`, fn);
}

/** An emulated edu device (QEMU 1234:11e8) bound to vfio-pci in the VM. */
export interface EduDevice {
  /** PCI address, e.g. '0000:00:03.0'. */
  bdf: string;
  /** IOMMU group number: the legacy group node is /dev/vfio/<group>. */
  group: number;
  /** VFIO cdev name, e.g. 'vfio0': /dev/vfio/devices/<cdev>. */
  cdev: string;
  /** The device's sysfs directory (/sys/bus/pci/drivers/vfio-pci/<bdf>). */
  sysfsPath: string;
}

const VFIO_PCI = '/sys/bus/pci/drivers/vfio-pci';

/**
 * The edu devices bound to vfio-pci, sorted by address; empty when there is
 * no vfio-pci driver (the host). Throws if a bound device has no VFIO cdev.
 */
export function guestTopology(): EduDevice[] {
  // Through the port, so the simulated kernel answers for its simulated host.
  const port = kernelPort();
  if (!port.exists(VFIO_PCI)) return [];
  const devices: EduDevice[] = [];
  for (const bdf of port.readdir(VFIO_PCI)) {
    if (!/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(bdf)) continue;
    const sysfsPath = join(VFIO_PCI, bdf);
    const id = (attr: string) => port.readFile(join(sysfsPath, attr)).trim();
    if (id('vendor') !== '0x1234' || id('device') !== '0x11e8') continue;
    const group = Number(basename(port.readlink(join(sysfsPath, 'iommu_group'))));
    const vfioDev = join(sysfsPath, 'vfio-dev');
    const cdev = port.exists(vfioDev) ? port.readdir(vfioDev).find((n) => /^vfio\d+$/.test(n)) : undefined;
    if (!cdev) throw new Error(`${bdf} is bound to vfio-pci but has no VFIO cdev (${vfioDev})`);
    devices.push({ bdf, group, cdev, sysfsPath });
  }
  return devices.sort((a, b) => a.bdf.localeCompare(b.bdf));
}
