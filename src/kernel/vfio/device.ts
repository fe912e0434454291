/**
 * The VFIO device fd (struct vfio_device_file), from VFIO_GROUP_GET_DEVICE_FD or from
 * opening /dev/vfio/devices/vfioN: drivers/vfio/vfio_main.c and device_cdev.c for the
 * open/bind protocol, drivers/vfio/pci/vfio_pci_core.c for the ioctls, config and BAR
 * access and mmap. A cdev fd can do nothing but VFIO_DEVICE_BIND_IOMMUFD until it is bound.
 */
import { kfail } from '../errno.js';
import type { IoctlIn, IommufdBinding, SimFile } from '../types.js';
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_FLAGS,
  VFIO_DEVICE_FLAGS,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_RESET,
  VFIO_PCI_DEVID,
  VFIO_PCI_HOT_RESET_FLAG,
  VFIO_PCI_IRQ,
  VFIO_PCI_REGION,
  VFIO_REGION_INFO_CAP,
  VFIO_REGION_INFO_FLAG,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_device_detach_iommufd_pt,
  vfio_device_feature,
  vfio_device_feature_dma_logging_control,
  vfio_device_feature_dma_logging_range,
  vfio_device_feature_dma_logging_report,
  vfio_device_info,
  vfio_irq_info,
  vfio_pci_dependent_device,
  vfio_pci_hot_reset,
  vfio_pci_hot_reset_info,
  vfio_region_info,
} from '../../uapi/vfio.js';
import { PAGE_SIZE } from './context.js';
import { VfioGroupFile, type VfioGroup } from './group.js';
import { VFIO_PCI_OFFSET_MASK, VFIO_PCI_OFFSET_SHIFT, type VfioPciDevice } from './pci.js';
import { InfoCaps, copyFromUser, copyToUser, dv, fdIsOpen, offsetofend } from './uaccess.js';

const U64_MAX = (1n << 64n) - 1n;
const F = VFIO_DEVICE_FEATURE_FLAGS;
/** LOG_MAX_RANGES: the logging ranges must fit one page. */
const LOG_MAX_RANGES = Number(PAGE_SIZE) / vfio_device_feature_dma_logging_range.size;

/** An open VFIO device fd. */
export class VfioDeviceFile implements SimFile {
  readonly kind = 'device' as const;
  /** Device access allowed: set by the group open, or by VFIO_DEVICE_BIND_IOMMUFD on a cdev. */
  access_granted = false;
  /** The iommufd this cdev fd bound the device to (df->iommufd). */
  iommufd: IommufdBinding | null = null;

  constructor(
    readonly device: VfioPciDevice,
    /** The group it came from; null for a cdev fd. */
    readonly group: VfioGroup | null,
  ) {}

  /** vfio_device_fops_unl_ioctl() */
  ioctl(request: number, arg: IoctlIn): number {
    if (request === VFIO_DEVICE_BIND_IOMMUFD.request) return this.bindIommufd(arg);
    if (!this.access_granted) kfail('EINVAL', 'the cdev is not bound to an iommufd');
    if (!this.group) {
      if (request === VFIO_DEVICE_ATTACH_IOMMUFD_PT.request) return this.attachPt(arg);
      if (request === VFIO_DEVICE_DETACH_IOMMUFD_PT.request) return this.detachPt(arg);
    }
    if (request === VFIO_DEVICE_FEATURE.request) return deviceFeature(this.device, arg);
    return pciIoctl(this.device, request, arg);
  }

  /** vfio_device_fops_read() → vfio_pci_core_read() */
  pread(buf: Uint8Array, offset: bigint): number {
    if (!this.access_granted) kfail('EINVAL', 'not bound');
    if (!buf.byteLength) return 0;
    return pciRw(this.device, buf, offset, false);
  }

  /** vfio_device_fops_write() → vfio_pci_core_write() */
  pwrite(buf: Uint8Array, offset: bigint): number {
    if (!this.access_granted) kfail('EINVAL', 'not bound');
    if (!buf.byteLength) return 0;
    return pciRw(this.device, buf, offset, true);
  }

  /** vfio_device_fops_mmap() → vfio_pci_core_mmap() */
  mmapBacking(length: bigint, offset: bigint): { fd: number; offset: bigint; pfnmap: boolean } {
    if (!this.access_granted) kfail('EINVAL', 'not bound');
    return this.device.mmapBacking(length, offset);
  }

  /** vfio_device_fops_release() */
  release(): void {
    if (this.group) vfioDfClose(this);
    else this.unbindIommufd();
  }

  /** vfio_df_ioctl_bind_iommufd() */
  private bindIommufd(arg: IoctlIn): number {
    const minsz = offsetofend(vfio_device_bind_iommufd, 'out_devid');
    const bind = vfio_device_bind_iommufd.view(copyFromUser(arg, minsz));
    if (bind.argsz < minsz || bind.flags || bind.iommufd < 0) kfail('EINVAL', 'argsz, flags or fd');
    if (this.group) kfail('EINVAL', 'BIND_IOMMUFD is for cdev fds');
    const dev = this.device;
    const group = dev.vgroup;
    // vfio_device_block_group()
    if (group.opened_file) kfail('EBUSY', 'the group is open');
    group.cdev_device_open_cnt++;
    try {
      if (this.access_granted) kfail('EINVAL', 'one device cannot be bound twice');
      const file = dev.kernel.file(bind.iommufd);
      if (!file && !fdIsOpen(bind.iommufd)) kfail('EBADF', `fd ${bind.iommufd} is not open`);
      if (file?.kind !== 'iommufd') kfail('EBADFD', 'not an iommufd');
      this.iommufd = file as unknown as IommufdBinding;
      try {
        vfioDfOpen(this);
      } catch (e) {
        this.iommufd = null;
        throw e;
      }
      const out = new Uint8Array(4);
      dv(out).setUint32(0, dev.devid, true);
      copyToUser(arg, vfio_device_bind_iommufd.offsetOf.out_devid, out);
      dev.cdev_opened = true;
      this.access_granted = true;
    } catch (e) {
      group.cdev_device_open_cnt--;
      throw e;
    }
    return 0;
  }

  /** vfio_df_unbind_iommufd(): the cdev fd closed. */
  private unbindIommufd(): void {
    if (!this.access_granted) return;
    vfioDfClose(this);
    this.device.cdev_opened = false;
    this.device.vgroup.cdev_device_open_cnt--;
  }

  /** vfio_df_ioctl_attach_pt() → vfio_iommufd_physical_attach_ioas() */
  private attachPt(arg: IoctlIn): number {
    const minsz = offsetofend(vfio_device_attach_iommufd_pt, 'pt_id');
    const k = copyFromUser(arg, minsz);
    const attach = vfio_device_attach_iommufd_pt.view(k);
    if (attach.argsz < minsz || attach.flags) kfail('EINVAL', 'argsz or flags');
    const dev = this.device;
    // A second attach replaces the domain (iommufd_device_replace).
    attach.pt_id = dev.iommufd!.attachDevice(dev.devid, attach.pt_id);
    dev.iommufd_attached = true;
    try {
      copyToUser(arg, vfio_device_attach_iommufd_pt.offsetOf.pt_id, k.subarray(8, 12));
    } catch (e) {
      detachIoas(dev);
      throw e;
    }
    return 0;
  }

  /** vfio_df_ioctl_detach_pt() */
  private detachPt(arg: IoctlIn): number {
    const minsz = offsetofend(vfio_device_detach_iommufd_pt, 'flags');
    const detach = vfio_device_detach_iommufd_pt.view(copyFromUser(arg, minsz));
    if (detach.argsz < minsz || detach.flags) kfail('EINVAL', 'argsz or flags');
    detachIoas(this.device);
    return 0;
  }
}

/** vfio_iommufd_physical_detach_ioas(): nothing to do when not attached. */
function detachIoas(dev: VfioPciDevice): void {
  if (!dev.iommufd || !dev.iommufd_attached) return;
  dev.iommufd.detachDevice(dev.devid);
  dev.iommufd_attached = false;
}

/** vfio_df_open(): a cdev opens the device once; a group may open it again and again. */
export function vfioDfOpen(df: VfioDeviceFile): void {
  const dev = df.device;
  if (dev.open_count !== 0 && !df.group) kfail('EINVAL', 'the device is already open');
  dev.open_count++;
  if (dev.open_count !== 1) return;
  try {
    firstOpen(df);
  } catch (e) {
    dev.open_count--;
    throw e;
  }
}

/** vfio_df_close() */
export function vfioDfClose(df: VfioDeviceFile): void {
  const dev = df.device;
  if (!dev.open_count) return;
  if (dev.open_count === 1) lastClose(df);
  dev.open_count--;
}

// vfio_df_device_first_open(): bind to the iommufd, or use the group's container.
function firstOpen(df: VfioDeviceFile): void {
  const dev = df.device;
  const ictx = df.iommufd;
  if (ictx) {
    // iommufd_device_bind() claims DMA ownership of the device for this iommufd.
    dev.vgroup.claimDmaOwner(ictx, false);
    try {
      dev.devid = ictx.bindDevice(dev);
    } catch (e) {
      dev.vgroup.releaseDmaOwner();
      throw e;
    }
    dev.iommufd = ictx;
  } else {
    df.group!.useContainer();
  }
  dev.enable(); // vfio_pci_open_device()
}

// vfio_df_device_last_close()
function lastClose(df: VfioDeviceFile): void {
  const dev = df.device;
  dev.disable(); // vfio_pci_core_close_device()
  if (df.iommufd) {
    detachIoas(dev);
    df.iommufd.unbindDevice(dev.devid);
    dev.vgroup.releaseDmaOwner();
    dev.iommufd = null;
    dev.devid = 0;
  } else {
    df.group!.unuseContainer();
  }
}

// --- vfio_pci_core_ioctl() ---------------------------------------------------------------

function pciIoctl(dev: VfioPciDevice, request: number, arg: IoctlIn): number {
  switch (request) {
    case VFIO_DEVICE_GET_INFO.request:
      return getInfo(dev, arg);
    case VFIO_DEVICE_GET_IRQ_INFO.request:
      return getIrqInfo(dev, arg);
    case VFIO_DEVICE_GET_PCI_HOT_RESET_INFO.request:
      return getHotResetInfo(dev, arg);
    case VFIO_DEVICE_GET_REGION_INFO.request:
      return getRegionInfo(dev, arg);
    case VFIO_DEVICE_PCI_HOT_RESET.request:
      return hotReset(dev, arg);
    case VFIO_DEVICE_RESET.request:
      if (!dev.reset_works) kfail('EINVAL', 'no function reset');
      dev.reset();
      return 0;
    default:
      return kfail('ENOTTY');
  }
}

function getInfo(dev: VfioPciDevice, arg: IoctlIn): number {
  let minsz = offsetofend(vfio_device_info, 'num_irqs');
  const k = copyFromUser(arg, minsz, vfio_device_info.size);
  const info = vfio_device_info.view(k);
  if (info.argsz < minsz) kfail('EINVAL', 'argsz too small');
  minsz = Math.min(info.argsz, vfio_device_info.size);
  info.flags = VFIO_DEVICE_FLAGS.PCI;
  if (dev.reset_works) info.flags |= VFIO_DEVICE_FLAGS.RESET;
  info.num_regions = VFIO_PCI_REGION.NUM_REGIONS;
  info.num_irqs = VFIO_PCI_IRQ.NUM_IRQS;
  // No capabilities: no zPCI, and no AtomicOps completer on these functions.
  copyToUser(arg, 0, k.subarray(0, minsz));
  return 0;
}

function getRegionInfo(dev: VfioPciDevice, arg: IoctlIn): number {
  const minsz = offsetofend(vfio_region_info, 'offset');
  const k = copyFromUser(arg, minsz);
  const info = vfio_region_info.view(k);
  if (info.argsz < minsz) kfail('EINVAL', 'argsz too small');
  const r = dev.regionInfo(info.index);
  if (!r) kfail('EINVAL', `no region ${info.index}`);
  info.offset = r.offset;
  info.size = r.size;
  info.flags = r.flags;
  if (r.msixMappable) {
    const caps = new InfoCaps();
    caps.add(8, VFIO_REGION_INFO_CAP.MSIX_MAPPABLE, 1);
    info.flags |= VFIO_REGION_INFO_FLAG.CAPS;
    if (info.argsz < vfio_region_info.size + caps.size) {
      info.argsz = vfio_region_info.size + caps.size;
      info.cap_offset = 0;
    } else {
      copyToUser(arg, vfio_region_info.size, caps.shifted(vfio_region_info.size));
      info.cap_offset = vfio_region_info.size;
    }
  }
  copyToUser(arg, 0, k.subarray(0, minsz));
  return 0;
}

function getIrqInfo(dev: VfioPciDevice, arg: IoctlIn): number {
  const minsz = offsetofend(vfio_irq_info, 'count');
  const k = copyFromUser(arg, minsz);
  const info = vfio_irq_info.view(k);
  if (info.argsz < minsz || info.index >= VFIO_PCI_IRQ.NUM_IRQS) kfail('EINVAL', 'argsz or index');
  const r = dev.irqInfo(info.index);
  if (!r) kfail('EINVAL', `IRQ index ${info.index} is not supported`);
  info.flags = r.flags;
  info.count = r.count;
  copyToUser(arg, 0, k.subarray(0, minsz));
  return 0;
}

/**
 * The devices a hot reset of `dev` affects (its slot or bus), in PCI bus order. Devices
 * sharing a reset_domain have a slot or bus reset. A device alone in its domain on bus 0
 * is on the root bus, where pci_probe_reset_slot() and pci_probe_reset_bus() both fail
 * (no bridge above, no hotplug slot): ENODEV, as for edu in the test VM.
 */
function resetSet(dev: VfioPciDevice): VfioPciDevice[] {
  const key = (d: VfioPciDevice) => {
    const a = d.address;
    return (a.segment * 256 + a.bus) * 256 + a.devfn;
  };
  const set = dev.vgroup.ctx.devices
    .filter((d) => d.spec.reset_domain === dev.spec.reset_domain)
    .sort((a, b) => key(a) - key(b));
  if (set.length === 1 && dev.address.bus === 0) kfail('ENODEV', 'root bus: no slot or bus reset');
  return set;
}

const ENOENT = -2;
const ENODEV = -19;

/**
 * vfio_iommufd_get_dev_id(): the dev_id when `vdev` is bound to `ictx`; -ENOENT when a
 * device of its group is (the group is owned by `ictx`); -ENODEV otherwise.
 */
function getDevId(vdev: VfioPciDevice, ictx: IommufdBinding | null): number {
  if (vdev.iommufd && vdev.iommufd === ictx) return vdev.devid;
  if (ictx && vdev.vgroup.devices.some((d) => d.iommufd === ictx)) return ENOENT;
  return ENODEV;
}

function getHotResetInfo(dev: VfioPciDevice, arg: IoctlIn): number {
  const minsz = offsetofend(vfio_pci_hot_reset_info, 'count');
  const k = copyFromUser(arg, minsz);
  const hdr = vfio_pci_hot_reset_info.view(k);
  if (hdr.argsz < minsz) kfail('EINVAL', 'argsz too small');
  hdr.flags = 0;
  // Every reset_domain of the topology can be reset (a slot or bus reset exists).
  const set = resetSet(dev);
  const count = set.length;
  const entry = vfio_pci_dependent_device.size;
  if (count > Math.floor((hdr.argsz - vfio_pci_hot_reset_info.size) / entry)) {
    hdr.count = count;
    copyToUser(arg, 0, k.subarray(0, minsz));
    return kfail('ENOSPC', `room for ${count} devices needed`);
  }
  let flags = 0;
  if (dev.cdev_opened) flags = VFIO_PCI_HOT_RESET_FLAG.DEV_ID | VFIO_PCI_HOT_RESET_FLAG.DEV_ID_OWNED;
  const out = new Uint8Array(count * entry);
  set.forEach((d, i) => {
    const e = vfio_pci_dependent_device.view(out, i * entry);
    const a = d.address;
    e.segment = a.segment;
    e.bus = a.bus;
    e.devfn = a.devfn;
    if (flags & VFIO_PCI_HOT_RESET_FLAG.DEV_ID) {
      const id = getDevId(d, dev.iommufd);
      e.devid = id > 0 ? id : id === ENOENT ? VFIO_PCI_DEVID.OWNED : VFIO_PCI_DEVID.NOT_OWNED;
      if (id <= 0 && id !== ENOENT) flags &= ~VFIO_PCI_HOT_RESET_FLAG.DEV_ID_OWNED;
    } else {
      e.group_id = d.group;
    }
  });
  copyToUser(arg, vfio_pci_hot_reset_info.size, out);
  hdr.count = count;
  hdr.flags = flags;
  copyToUser(arg, 0, k.subarray(0, minsz));
  return 0;
}

function hotReset(dev: VfioPciDevice, arg: IoctlIn): number {
  const minsz = offsetofend(vfio_pci_hot_reset, 'count');
  const hdr = vfio_pci_hot_reset.view(copyFromUser(arg, minsz));
  if (hdr.argsz < minsz || hdr.flags) kfail('EINVAL', 'argsz or flags');
  // A zero-length array is for cdev-opened devices, and only for them.
  if ((hdr.count !== 0) === dev.cdev_opened) kfail('EINVAL', 'group fds with a cdev, or none with a group');
  const set = resetSet(dev);
  let owned: (d: VfioPciDevice) => boolean;
  if (hdr.count) {
    if (hdr.count > set.length) kfail('EINVAL', 'more group fds than affected devices');
    const fds = copyFromUser(arg, hdr.count * 4, hdr.count * 4, minsz);
    const groups: VfioGroup[] = [];
    for (let i = 0; i < hdr.count; i++) {
      const fd = dv(fds).getInt32(4 * i, true);
      const file = dev.kernel.file(fd);
      if (!file && !fdIsOpen(fd)) kfail('EBADF', `group fd ${fd} is not open`);
      if (!(file instanceof VfioGroupFile)) kfail('EINVAL', `fd ${fd} is not a VFIO group`);
      groups.push(file.group);
    }
    owned = (d) => groups.includes(d.vgroup);
  } else {
    const ictx = dev.iommufd;
    owned = (d) => {
      const id = getDevId(d, ictx);
      return id > 0 || id === ENOENT;
    };
  }
  for (const d of set) if (!owned(d)) kfail('EINVAL', `${d.spec.bdf} is not owned by the caller`);
  for (const d of set) d.reset();
  return 0;
}

// --- VFIO_DEVICE_FEATURE -------------------------------------------------------------------

/** vfio_check_feature(): 0 for a successful PROBE, 1 to go on. */
function checkFeature(flags: number, argsz: number, supported: number, minsz: number): number {
  if (flags & (F.GET | F.SET) & ~supported) kfail('EINVAL', 'GET/SET not supported by this feature');
  if (flags & F.PROBE) return 0;
  if (!(flags & (F.GET | F.SET))) kfail('EINVAL', 'neither GET nor SET');
  if (argsz < minsz) kfail('EINVAL', 'feature data too short');
  return 1;
}

/** vfio_ioctl_device_feature() and vfio_pci_core_ioctl_feature() */
function deviceFeature(dev: VfioPciDevice, arg: IoctlIn): number {
  const minsz = offsetofend(vfio_device_feature, 'flags');
  const feature = vfio_device_feature.view(copyFromUser(arg, minsz));
  if (feature.argsz < minsz) kfail('EINVAL', 'argsz too small');
  const flags = feature.flags;
  if (flags & ~(F.MASK | F.SET | F.GET | F.PROBE)) kfail('EINVAL', 'unknown flags');
  if (!(flags & F.PROBE) && flags & F.SET && flags & F.GET) kfail('EINVAL', 'GET and SET');
  const argsz = feature.argsz - minsz;
  const hasLog = dev.spec.dma_logging;
  switch (flags & F.MASK) {
    case F.MIGRATION:
    case F.MIG_DEVICE_STATE:
    case F.MIG_DATA_SIZE:
      return kfail('ENOTTY', 'no migration ops'); // !device->mig_ops
    case F.DMA_LOGGING_START:
      if (!hasLog) kfail('ENOTTY', 'no DMA logging ops');
      if (!checkFeature(flags, argsz, F.SET, vfio_device_feature_dma_logging_control.size)) return 0;
      return loggingStart(dev, arg, minsz);
    case F.DMA_LOGGING_STOP:
      if (!hasLog) kfail('ENOTTY', 'no DMA logging ops');
      if (!checkFeature(flags, argsz, F.SET, 0)) return 0;
      dev.log = null;
      return 0;
    case F.DMA_LOGGING_REPORT:
      if (!hasLog) kfail('ENOTTY', 'no DMA logging ops');
      if (!checkFeature(flags, argsz, F.GET, vfio_device_feature_dma_logging_report.size)) return 0;
      return loggingReport(dev, arg, minsz);
    case F.LOW_POWER_ENTRY:
      if (!checkFeature(flags, argsz, F.SET, 0)) return 0;
      if (dev.pm_runtime_engaged) kfail('EINVAL', 'already in low power');
      dev.pm_runtime_engaged = true;
      return 0;
    case F.LOW_POWER_ENTRY_WITH_WAKEUP: {
      // struct vfio_device_low_power_entry_with_wakeup { __s32 wakeup_eventfd; __u32 reserved; }
      if (!checkFeature(flags, argsz, F.SET, 8)) return 0;
      const efd = dv(copyFromUser(arg, 8, 8, minsz)).getInt32(0, true);
      if (efd < 0) kfail('EINVAL', 'bad eventfd');
      // eventfd_ctx_fdget(): no simulated fd is an eventfd.
      return kfail(fdIsOpen(efd) ? 'EINVAL' : 'EBADF', 'not an eventfd');
    }
    case F.LOW_POWER_EXIT:
      if (!checkFeature(flags, argsz, F.SET, 0)) return 0;
      dev.pm_runtime_engaged = false;
      return 0;
    default:
      // PCI_VF_TOKEN needs a PF with SR-IOV (vdev->vf_token); the rest is unknown.
      return kfail('ENOTTY', 'unsupported feature');
  }
}

// vfio_ioctl_device_feature_logging_start() with the log_start of a migration driver (mlx5).
function loggingStart(dev: VfioPciDevice, arg: IoctlIn, at: number): number {
  const ctl = vfio_device_feature_dma_logging_control;
  const minsz = offsetofend(ctl, 'ranges');
  const k = copyFromUser(arg, minsz, ctl.size, at);
  const control = ctl.view(k);
  const nnodes = control.num_ranges;
  if (!nnodes) kfail('EINVAL', 'no ranges');
  if (nnodes > LOG_MAX_RANGES) kfail('E2BIG', 'too many ranges');
  const mask = BigInt.asUintN(64, control.page_size - 1n);
  const ranges: Array<[bigint, bigint]> = [];
  const R = vfio_device_feature_dma_logging_range.size;
  for (let i = 0; i < nnodes; i++) {
    // Each range is copied and checked in turn: a bad range fails before later ones are read.
    const user = dev.kernel.mem.bytes(control.ranges + BigInt(i * R), R);
    const r = vfio_device_feature_dma_logging_range.view(user.slice());
    if (r.iova & mask || r.length & mask) kfail('EINVAL', 'range not aligned to page_size');
    const end = r.iova + r.length;
    if (end > U64_MAX) kfail('EOVERFLOW', 'range overflows');
    const last = r.iova + r.length - 1n;
    if (ranges.some(([s, l]) => r.iova <= l && last >= s)) kfail('EINVAL', 'ranges overlap');
    ranges.push([r.iova, last]);
  }
  if (dev.log) kfail('EINVAL', 'DMA logging already started');
  const pageSize = control.page_size < PAGE_SIZE ? PAGE_SIZE : control.page_size;
  control.page_size = pageSize;
  dev.log = { pageSize, ranges, dirty: new Set() };
  copyToUser(arg, at, k.subarray(0, ctl.size));
  return 0;
}

// vfio_ioctl_device_feature_logging_report(): sets the bits of pages the device wrote.
function loggingReport(dev: VfioPciDevice, arg: IoctlIn, at: number): number {
  const rep = vfio_device_feature_dma_logging_report;
  const report = rep.view(copyFromUser(arg, offsetofend(rep, 'bitmap'), rep.size, at));
  const ps = report.page_size;
  if (ps < PAGE_SIZE || ps & (ps - 1n)) kfail('EINVAL', 'page_size');
  if (report.iova + report.length > U64_MAX) kfail('EOVERFLOW', 'range overflows');
  const npages = (report.length + ps - 1n) / ps;
  const bytes = Number(((npages + 63n) / 64n) * 8n);
  // iova_bitmap_alloc() pins the user bitmap: EFAULT when it is not mapped.
  const bitmap = bytes ? dev.kernel.mem.bytes(report.bitmap, bytes) : new Uint8Array(0);
  const log = dev.log;
  if (!log) kfail('EINVAL', 'DMA logging is not started');
  const end = report.iova + report.length;
  for (const p of [...log.dirty]) {
    const s = p * log.pageSize;
    const e = s + log.pageSize;
    if (e <= report.iova || s >= end) continue;
    const from = ((s > report.iova ? s : report.iova) - report.iova) / ps;
    const to = ((e < end ? e : end) - 1n - report.iova) / ps;
    for (let b = from; b <= to; b++) bitmap[Number(b / 8n)] |= 1 << Number(b % 8n);
    log.dirty.delete(p);
  }
  return 0;
}

// --- read/write (vfio_pci_rw) ----------------------------------------------------------------

function pciRw(dev: VfioPciDevice, buf: Uint8Array, offset: bigint, write: boolean): number {
  const index = Number(offset >> VFIO_PCI_OFFSET_SHIFT);
  const pos = offset & VFIO_PCI_OFFSET_MASK;
  if (index >= VFIO_PCI_REGION.NUM_REGIONS) kfail('EINVAL', 'no such region');
  if (index === VFIO_PCI_REGION.CONFIG_REGION_INDEX) return dev.configRw(buf, pos, write);
  if (index <= VFIO_PCI_REGION.BAR5_REGION_INDEX) return dev.barRw(index, buf, pos, write);
  // The ROM is absent (pci_resource_start is 0, not shadowed); there is no VGA.
  return kfail('EINVAL', index === VFIO_PCI_REGION.ROM_REGION_INDEX ? 'no ROM' : 'no VGA');
}
