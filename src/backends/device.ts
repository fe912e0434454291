/**
 * VfioDevice: one device assigned through VFIO (QEMU's VFIODevice), and vfioDeviceAttach,
 * the entry point that finds it, picks its backend, opens it and attaches it to a
 * container of its address space (QEMU's vfio_device_attach), undoing every step when a
 * later one fails.
 */
import {
  VFIO_DEVICE_FLAGS,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_RESET,
  vfio_device_info,
} from '../uapi/index.js';
import type { ContainerBackend } from './container.js';
import { vfioDiscoverDevice, type VfioDeviceLocation } from './discovery.js';
import { VfioError } from './errors.js';
import type { VfioHost } from './host.js';
import { iommufdCdevAttach, type IommufdBackend } from './iommufd.js';
import { vfioLegacyAttachDevice, type VfioGroup } from './legacy.js';
import { vfioSelectBackend, type BackendChoice, type IommufdOption } from './select.js';
import { ERRNO } from '../uapi/errno.js';

/** What VFIO_DEVICE_GET_INFO says of a device. */
export interface VfioDeviceInfo {
  /** VFIO_DEVICE_FLAGS_*. */
  flags: number;
  numRegions: number;
  numIrqs: number;
}

/** Options of {@link vfioDeviceAttach}. */
export interface VfioAttachOptions {
  /** The address space (QEMU's AddressSpace) whose mappings the device sees; default 'default'. */
  space?: string;
  /** Backend choice: 'on', 'off', 'auto' (default), or an explicit iommufd object. */
  iommufd?: IommufdOption;
}

/** A VFIO device, opened and attached to a container. */
export class VfioDevice {
  /** PCI address. */
  readonly bdf: string;
  /** IOMMU group number. */
  readonly group: number;
  /** VFIO cdev (vfioN), or null. */
  readonly cdev: string | null;
  /** Which backend serves the device. */
  readonly backend: 'legacy' | 'iommufd';
  /** Why that backend (shown as an event). */
  readonly reason: string;
  /** The device fd (-1 when closed). */
  fd = -1;
  /** iommufd: the device id VFIO_DEVICE_BIND_IOMMUFD gave. */
  devid: number | undefined;
  /** iommufd: the object the device is bound to. */
  iommufd: IommufdBackend | undefined;
  /** iommufd: the HWPT the device is attached to. */
  hwptId: number | undefined;
  /** Legacy: the open group. */
  vfioGroup: VfioGroup | undefined;
  /** The container the device is attached to, or null. */
  container: ContainerBackend | null = null;
  /** VFIO_DEVICE_GET_INFO, read after attach. */
  info: VfioDeviceInfo = { flags: 0, numRegions: 0, numIrqs: 0 };

  constructor(
    /** The VFIO state the device belongs to. */
    readonly host: VfioHost,
    /** What discovery found. */
    readonly location: VfioDeviceLocation,
    choice: BackendChoice,
    /** The address space. */
    readonly space: string,
  ) {
    this.bdf = location.bdf;
    this.group = location.group;
    this.cdev = location.cdev;
    this.backend = choice.kind;
    this.reason = choice.reason;
  }

  /** Whether the device is open and attached. */
  get attached(): boolean {
    return this.container !== null && this.fd >= 0;
  }

  /**
   * Resets the device: VFIO_DEVICE_RESET when the device can (function-level reset),
   * else a hot reset of its slot or bus through the container's backend.
   */
  reset(): void {
    if (!this.container) throw new VfioError({ op: 'reset', device: this.bdf, detail: 'not attached' });
    if (this.info.flags & VFIO_DEVICE_FLAGS.RESET) {
      try {
        this.host.port.ioctl(this.fd, VFIO_DEVICE_RESET);
        return;
      } catch (e) {
        throw VfioError.wrap(e, { op: 'reset', device: this.bdf, target: this.container.describe() });
      }
    }
    this.container.pciHotReset(this);
  }

  /** Detaches the device from its container and closes it (the container goes with its last device). */
  close(): void {
    const c = this.container;
    if (!c) return;
    try {
      c.detachDevice(this);
    } finally {
      this.host.devices.delete(this.bdf);
      this.host.releaseGroup(this.group);
    }
  }
}

/**
 * Finds `device` (PCI address or sysfs path), picks its backend, opens it and attaches it
 * to a container of its address space, reusing a compatible one or creating one. Every
 * step is undone if a later one fails: a failed attach leaves no fd, IOAS, HWPT or
 * container behind. Throws VfioError.
 */
export function vfioDeviceAttach(host: VfioHost, device: string, opts: VfioAttachOptions = {}): VfioDevice {
  const space = opts.space ?? 'default';
  const loc = vfioDiscoverDevice(host.port, device);
  if (host.devices.has(loc.bdf)) {
    throw new VfioError({
      op: 'attach_device',
      device: loc.bdf,
      errno: ERRNO.EBUSY,
      detail: `already attached (address space '${host.devices.get(loc.bdf)!.space}')`,
    });
  }
  const choice = vfioSelectBackend(host, loc, opts.iommufd ?? 'auto');
  host.claimGroup(loc.group, space, loc.bdf);
  const dev = new VfioDevice(host, loc, choice, space);
  try {
    if (choice.kind === 'iommufd') iommufdCdevAttach(host, dev, choice.iommufd!);
    else vfioLegacyAttachDevice(host, dev);
  } catch (e) {
    host.releaseGroup(loc.group);
    throw VfioError.wrap(e, { op: 'attach_device', device: loc.bdf });
  }
  host.devices.set(dev.bdf, dev);
  try {
    const info = vfio_device_info.view().reset();
    host.port.ioctl(dev.fd, VFIO_DEVICE_GET_INFO, info.bytes);
    dev.info = { flags: info.flags, numRegions: info.num_regions, numIrqs: info.num_irqs };
  } catch (e) {
    try {
      dev.close();
    } catch {
      // the GET_INFO failure is the one to report
    }
    throw VfioError.wrap(e, { op: 'attach_device', device: loc.bdf });
  }
  return dev;
}
