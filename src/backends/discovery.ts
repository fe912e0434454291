/**
 * Device discovery: what the engine learns of a VFIO device from sysfs and /dev before it
 * opens anything (QEMU's vfio_device_get_name / vfio_device_get_group / iommufd_cdev_getfd):
 * the PCI address, the IOMMU group, the VFIO cdev if the kernel made one, and which of
 * /dev/iommu, /dev/vfio/<group> and /dev/vfio/devices/vfioN exist.
 */
import type { SyscallPort } from '../port/port.js';
import { ERRNO } from '../uapi/errno.js';
import { VfioError } from './errors.js';

/** A VFIO device as sysfs and /dev describe it. */
export interface VfioDeviceLocation {
  /** PCI address, 0000:00:03.0. */
  bdf: string;
  /** The sysfs directory the device was found at. */
  sysfsPath: string;
  /** The bound driver (vfio-pci or a vfio-pci variant driver). */
  driver: string;
  /** IOMMU group number. */
  group: number;
  /** /dev/vfio/<group>. */
  groupPath: string;
  /** Whether /dev/vfio/<group> exists. */
  groupNodeExists: boolean;
  /** The VFIO cdev (vfioN), or null when the kernel made none (no CONFIG_VFIO_DEVICE_CDEV). */
  cdev: string | null;
  /** /dev/vfio/devices/vfioN, or null without a cdev. */
  cdevPath: string | null;
  /** Whether the cdev node exists. */
  cdevNodeExists: boolean;
  /** Whether /dev/iommu exists (CONFIG_IOMMUFD). */
  iommuExists: boolean;
}

const BDF = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i;
const SHORT_BDF = /^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i;

/**
 * Finds a device given by PCI address (0000:00:03.0, or 00:03.0 in domain 0) or by sysfs
 * path (/sys/bus/pci/devices/0000:00:03.0, /sys/devices/pci0000:00/0000:00:03.0). Throws
 * VfioError (op 'discover') when the device does not exist, has no IOMMU group or is not
 * bound to vfio-pci.
 */
export function vfioDiscoverDevice(port: SyscallPort, device: string): VfioDeviceLocation {
  let bdf: string;
  let sysfsPath: string;
  if (device.startsWith('/')) {
    sysfsPath = device.replace(/\/+$/, '');
    bdf = sysfsPath.slice(sysfsPath.lastIndexOf('/') + 1);
    if (!BDF.test(bdf)) {
      throw new VfioError({
        op: 'discover',
        detail: `${device} is not a PCI device directory (its name is not a PCI address)`,
        errno: ERRNO.EINVAL,
      });
    }
  } else {
    bdf = SHORT_BDF.test(device) ? `0000:${device}` : device;
    if (!BDF.test(bdf)) {
      throw new VfioError({
        op: 'discover',
        detail: `${JSON.stringify(device)} is neither a PCI address (0000:00:03.0) nor a sysfs path`,
        errno: ERRNO.EINVAL,
      });
    }
    sysfsPath = `/sys/bus/pci/devices/${bdf}`;
  }
  bdf = bdf.toLowerCase();
  const fail = (detail: string, errno: number): never => {
    throw new VfioError({ op: 'discover', device: bdf, detail, errno });
  };
  if (!port.exists(sysfsPath)) fail(`no such PCI device (${sysfsPath})`, ERRNO.ENOENT);

  const driver = tryBasename(() => port.readlink(`${sysfsPath}/driver`));
  if (driver === null) fail('not bound to any driver: bind it to vfio-pci', ERRNO.ENODEV);
  if (!/(^|[-_])vfio[-_]pci$/.test(driver!)) fail(`bound to ${driver}, not to vfio-pci`, ERRNO.ENODEV);

  const groupName = tryBasename(() => port.readlink(`${sysfsPath}/iommu_group`));
  const group = Number(groupName);
  if (groupName === null || !Number.isInteger(group)) {
    fail('no IOMMU group: is the IOMMU enabled (intel_iommu=on)?', ERRNO.ENODEV);
  }

  let cdev: string | null;
  try {
    cdev = port.readdir(`${sysfsPath}/vfio-dev`).find((e) => /^vfio\d+$/.test(e)) ?? null;
  } catch {
    cdev = null; // no vfio-dev directory: the kernel has no VFIO cdevs
  }
  const cdevPath = cdev === null ? null : `/dev/vfio/devices/${cdev}`;
  const groupPath = `/dev/vfio/${group}`;
  return {
    bdf,
    sysfsPath,
    driver: driver!,
    group,
    groupPath,
    groupNodeExists: port.exists(groupPath),
    cdev,
    cdevPath,
    cdevNodeExists: cdevPath !== null && port.exists(cdevPath),
    iommuExists: port.exists('/dev/iommu'),
  };
}

function tryBasename(read: () => string): string | null {
  try {
    const t = read().replace(/\/+$/, '');
    return t.slice(t.lastIndexOf('/') + 1);
  } catch {
    return null;
  }
}
