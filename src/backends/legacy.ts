/**
 * The legacy backend: QEMU's hw/vfio/container-legacy.c. Devices are reached through
 * their IOMMU group (/dev/vfio/<group>); groups join a type1v2 container (/dev/vfio/vfio)
 * whose mappings all of them see. A group lives in one address space; groups of one space
 * share a container when the kernel lets them join. When the last group leaves, the
 * container is closed and the kernel drops every mapping.
 */
import { SyscallError } from '../port/errors.js';
import { O } from '../uapi/libc.js';
import {
  ERRNO,
  VFIO_API,
  VFIO_CHECK_EXTENSION,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_EXTENSION,
  VFIO_GET_API_VERSION,
  VFIO_GROUP_FLAGS,
  VFIO_GROUP_GET_DEVICE_FD,
  VFIO_GROUP_GET_STATUS,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_GROUP_UNSET_CONTAINER,
  VFIO_IOMMU_DIRTY_PAGES,
  VFIO_IOMMU_DIRTY_PAGES_FLAG,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_INFO,
  VFIO_IOMMU_TYPE1_INFO_CAP,
  VFIO_SET_IOMMU,
  vfio_group_status,
  vfio_info_cap_header,
  vfio_iommu_type1_dirty_bitmap,
  vfio_iommu_type1_dirty_bitmap_get,
  vfio_iommu_type1_info,
  vfio_iova_range,
  vfio_pci_hot_reset,
} from '../uapi/index.js';
import { bitmapBytes, HOST_PAGE, OwnedFd, Unwind, vfioGetPciHotResetInfo } from './common.js';
import type { ContainerBackend, ContainerInfo } from './container.js';
import { ContainerBase } from './container-base.js';
import type { VfioDevice } from './device.js';
import { dmaMap, dmaUnmap, dmaUnmapAll, type DmaTarget } from './dma.js';
import { VfioError } from './errors.js';
import type { VfioHost } from './host.js';

/** QEMU's default when the type1 DMA_AVAIL capability is absent (vfio_iommu_type1 dma_entry_limit). */
export const VFIO_DEFAULT_DMA_MAX_MAPPINGS = 65535;

/** An open IOMMU group (QEMU's VFIOGroup). */
export class VfioGroup {
  /** The container the group joined, or null. */
  container: LegacyContainer | null = null;
  /** Devices opened through the group. */
  readonly devices: VfioDevice[] = [];

  constructor(
    /** Group number. */
    readonly id: number,
    /** The /dev/vfio/<id> fd. */
    readonly fd: number,
    /** The address space the group lives in. */
    readonly space: string,
  ) {}
}

/**
 * vfio_legacy_attach_device(): opens (or reuses) the device's group, connects it to a
 * container of the device's space (joining an existing one if the kernel accepts, else a
 * new one), and gets the device fd. Undoes every step on failure.
 */
export function vfioLegacyAttachDevice(host: VfioHost, dev: VfioDevice): void {
  const group = vfioGroupGet(host, dev.group, dev.space, dev.bdf);
  dev.vfioGroup = group;
  try {
    if (!group.container) vfioContainerConnect(host, group);
    group.container!.attachDevice(dev);
  } catch (e) {
    if (!group.devices.length) vfioGroupPut(host, group);
    dev.vfioGroup = undefined;
    throw e;
  }
}

/** vfio_group_get(): the open group `id`, opened and checked viable if needed. */
function vfioGroupGet(host: VfioHost, id: number, space: string, bdf: string): VfioGroup {
  const existing = host.groups.get(id);
  if (existing) {
    if (existing.space !== space) {
      throw new VfioError({
        op: 'attach_device',
        device: bdf,
        errno: ERRNO.EBUSY,
        detail: `group ${id} used in address space '${existing.space}'`,
      });
    }
    return existing;
  }
  const path = `/dev/vfio/${id}`;
  let fd: number;
  try {
    fd = host.port.open(path, O.RDWR | O.CLOEXEC);
  } catch (e) {
    throw VfioError.wrap(e, { op: 'attach_device', device: bdf, detail: `cannot open ${path}` });
  }
  try {
    const status = vfio_group_status.view().reset();
    host.port.ioctl(fd, VFIO_GROUP_GET_STATUS, status.bytes);
    if (!(status.flags & VFIO_GROUP_FLAGS.VIABLE)) {
      throw new VfioError({
        op: 'attach_device',
        device: bdf,
        errno: ERRNO.EPERM,
        detail: `group ${id} is not viable: ensure all devices within the IOMMU group are bound to their vfio bus driver`,
      });
    }
  } catch (e) {
    host.port.close(fd);
    throw VfioError.wrap(e, { op: 'attach_device', device: bdf, target: `group ${id}` });
  }
  const group = new VfioGroup(id, fd, space);
  host.groups.set(id, group);
  return group;
}

/** vfio_group_put(): the last device of the group left; leave the container and close. */
function vfioGroupPut(host: VfioHost, group: VfioGroup): void {
  const errors: unknown[] = [];
  try {
    group.container?.removeGroup(group);
  } catch (e) {
    errors.push(e);
  }
  try {
    host.port.close(group.fd);
  } catch (e) {
    errors.push(e);
  }
  host.groups.delete(group.id);
  if (errors.length) throw errors[0];
}

/**
 * vfio_container_connect(): joins an existing container of the group's space (the kernel
 * accepts when the IOMMU domains are compatible), else creates one.
 */
function vfioContainerConnect(host: VfioHost, group: VfioGroup): void {
  for (const c of host.containersOf(group.space)) {
    // A container whose fd is lost must not hand its number to SET_CONTAINER.
    if (!(c instanceof LegacyContainer) || !c.fdUsable()) continue;
    try {
      host.port.ioctl(group.fd, VFIO_GROUP_SET_CONTAINER, c.fd);
    } catch {
      continue; // incompatible: try the next container, or make a new one
    }
    c.addGroup(group);
    return;
  }
  LegacyContainer.create(host, group);
}

/** A type1 container (QEMU's VFIOLegacyContainer). */
export class LegacyContainer extends ContainerBase implements ContainerBackend {
  readonly kind = 'legacy' as const;
  /** Groups in the container. */
  readonly groups: VfioGroup[] = [];
  /** VFIO_TYPE1v2_IOMMU or VFIO_TYPE1_IOMMU. */
  readonly iommuType: number;
  /** CHECK_EXTENSION(VFIO_UNMAP_ALL). */
  unmapAllSupported = false;
  /** Dirty bitmap page sizes (migration cap). */
  dirtyPgsizes = 0n;
  /** Largest dirty bitmap the kernel returns, bytes (migration cap). */
  maxDirtyBitmapSize = 0n;
  private readonly file: OwnedFd;

  private constructor(
    host: VfioHost,
    fd: number,
    readonly space: string,
    iommuType: number,
  ) {
    super(host);
    this.iommuType = iommuType;
    this.file = new OwnedFd(host.port, fd, `legacy container fd ${fd}`);
  }

  /** The /dev/vfio/vfio fd. */
  get fd(): number {
    return this.file.fd;
  }

  protected get watched(): OwnedFd {
    return this.file;
  }

  // The DMA target, or the lost error: a lost fd's number may be another file's by now.
  private liveTarget(): DmaTarget {
    return { kind: 'legacy', containerFd: this.file.value };
  }

  /**
   * A new container for `group`: /dev/vfio/vfio, API version check, the richest type1
   * IOMMU type, SET_CONTAINER then SET_IOMMU, then vfio_legacy_setup().
   */
  static create(host: VfioHost, group: VfioGroup): LegacyContainer {
    const port = host.port;
    const unwind = new Unwind();
    const what = { op: 'container_connect', target: `group ${group.id}` };
    try {
      const fd = port.open('/dev/vfio/vfio', O.RDWR | O.CLOEXEC);
      unwind.push(() => port.close(fd));
      const version = port.ioctl(fd, VFIO_GET_API_VERSION);
      if (version !== VFIO_API.API_VERSION) {
        throw new VfioError({
          ...what,
          detail: `VFIO API version ${version}, expected ${VFIO_API.API_VERSION}`,
        });
      }
      const type = [VFIO_EXTENSION.TYPE1v2_IOMMU, VFIO_EXTENSION.TYPE1_IOMMU].find(
        (t) => port.ioctl(fd, VFIO_CHECK_EXTENSION, t) > 0,
      );
      if (type === undefined) {
        throw new VfioError({ ...what, errno: ERRNO.EINVAL, detail: 'no supported IOMMU type (type1)' });
      }
      port.ioctl(group.fd, VFIO_GROUP_SET_CONTAINER, fd);
      unwind.push(() => port.ioctl(group.fd, VFIO_GROUP_UNSET_CONTAINER));
      port.ioctl(fd, VFIO_SET_IOMMU, type);
      const c = new LegacyContainer(host, fd, group.space, type);
      c.setup();
      unwind.commit();
      c.addGroup(group);
      host.containers.push(c);
      return c;
    } catch (e) {
      unwind.run();
      throw VfioError.wrap(e, what);
    }
  }

  /** vfio_legacy_setup(): VFIO_IOMMU_GET_INFO (argsz-grow loop) and its capability chain. */
  private setup(): void {
    const port = this.host.port;
    let buf = new Uint8Array(vfio_iommu_type1_info.size);
    for (let i = 0; ; i++) {
      const v = vfio_iommu_type1_info.view(buf).reset();
      v.argsz = buf.byteLength;
      port.ioctl(this.fd, VFIO_IOMMU_GET_INFO, buf);
      if (v.argsz > buf.byteLength && i < 4) {
        buf = new Uint8Array(v.argsz);
        continue;
      }
      break;
    }
    const info = vfio_iommu_type1_info.view(buf);
    const out: ContainerInfo = {
      pgsizes: info.flags & VFIO_IOMMU_INFO.PGSIZES ? info.iova_pgsizes : HOST_PAGE,
      iovaRanges: [],
      dmaMaxMappings: VFIO_DEFAULT_DMA_MAX_MAPPINGS,
      dirtyPagesSupported: false,
    };
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const seen = new Set<number>();
    let off = info.flags & VFIO_IOMMU_INFO.CAPS ? info.cap_offset : 0;
    // The chain's `next` offsets are from the start of the info struct; a loop would be a kernel bug.
    while (off && off + vfio_info_cap_header.size <= buf.byteLength && !seen.has(off)) {
      seen.add(off);
      const hdr = vfio_info_cap_header.view(buf, off);
      switch (hdr.id) {
        case VFIO_IOMMU_TYPE1_INFO_CAP.CAP_IOVA_RANGE: {
          const n = dv.getUint32(off + 8, true);
          for (let i = 0; i < n; i++) {
            const r = vfio_iova_range.view(buf, off + 16 + i * vfio_iova_range.size);
            out.iovaRanges.push({ start: r.start, last: r.end });
          }
          break;
        }
        case VFIO_IOMMU_TYPE1_INFO_CAP.CAP_MIGRATION: {
          const pgsizeBitmap = dv.getBigUint64(off + 16, true);
          this.dirtyPgsizes = pgsizeBitmap;
          this.maxDirtyBitmapSize = dv.getBigUint64(off + 24, true);
          out.dirtyPagesSupported = (pgsizeBitmap & HOST_PAGE) !== 0n;
          break;
        }
        case VFIO_IOMMU_TYPE1_INFO_CAP.DMA_AVAIL:
          out.dmaMaxMappings = dv.getUint32(off + 8, true);
          break;
      }
      off = hdr.next;
    }
    if (!out.iovaRanges.length) out.iovaRanges.push({ start: 0n, last: 0xffff_ffff_ffff_ffffn });
    this.info = out;
    this.unmapAllSupported = port.ioctl(this.fd, VFIO_CHECK_EXTENSION, VFIO_EXTENSION.UNMAP_ALL) > 0;
  }

  describe(): string {
    return `legacy container fd ${this.fd}`;
  }

  /** Records a group that joined (SET_CONTAINER done). */
  addGroup(group: VfioGroup): void {
    group.container = this;
    this.groups.push(group);
  }

  /** A group leaves: UNSET_CONTAINER; the last one out closes the container. */
  removeGroup(group: VfioGroup): void {
    const i = this.groups.indexOf(group);
    if (i < 0) return;
    this.groups.splice(i, 1);
    group.container = null;
    try {
      this.host.port.ioctl(group.fd, VFIO_GROUP_UNSET_CONTAINER);
    } finally {
      if (!this.groups.length) this.close();
    }
  }

  attachDevice(dev: VfioDevice): void {
    const group = dev.vfioGroup;
    if (!group || group.container !== this) {
      throw new VfioError({
        op: 'attach_device',
        device: dev.bdf,
        target: this.describe(),
        detail: "the device's group is not in this container",
      });
    }
    try {
      dev.fd = this.host.port.ioctl(group.fd, VFIO_GROUP_GET_DEVICE_FD, dev.bdf);
    } catch (e) {
      throw VfioError.wrap(e, { op: 'attach_device', device: dev.bdf, target: `group ${group.id}` });
    }
    group.devices.push(dev);
    this.devices.push(dev);
    dev.container = this;
  }

  detachDevice(dev: VfioDevice): void {
    const i = this.devices.indexOf(dev);
    if (i < 0) return;
    this.devices.splice(i, 1);
    dev.container = null;
    const group = dev.vfioGroup!;
    group.devices.splice(group.devices.indexOf(dev), 1);
    const errors: unknown[] = [];
    try {
      this.host.port.close(dev.fd);
    } catch (e) {
      errors.push(e);
    }
    dev.fd = -1;
    if (!group.devices.length) {
      try {
        vfioGroupPut(this.host, group);
      } catch (e) {
        errors.push(e);
      }
    }
    dev.vfioGroup = undefined;
    if (errors.length) throw VfioError.wrap(errors[0], { op: 'detach_device', device: dev.bdf });
  }

  dmaMap(iova: bigint, size: bigint, vaddr: bigint, readonly: boolean): void {
    try {
      dmaMap(this.host.port, this.liveTarget(), iova, size, vaddr, readonly);
    } catch (e) {
      throw VfioError.wrap(e, { op: 'dma_map', iova, size, target: this.describe() });
    }
  }

  dmaUnmap(iova: bigint, size: bigint, opts: { unmapAll?: boolean } = {}): bigint {
    const port = this.host.port;
    try {
      const t = this.liveTarget();
      if (!opts.unmapAll) return dmaUnmap(port, t, iova, size);
      if (this.unmapAllSupported) return dmaUnmapAll(port, t);
      // The ioctl cannot take a full 64-bit span: two halves, as QEMU does.
      const half = 1n << 63n;
      return dmaUnmap(port, t, 0n, half) + dmaUnmap(port, t, half, half);
    } catch (e) {
      throw VfioError.wrap(
        e,
        opts.unmapAll
          ? { op: 'dma_unmap_all', target: this.describe() }
          : { op: 'dma_unmap', iova, size, target: this.describe() },
      );
    }
  }

  copySourceIoas(): number | null {
    return null;
  }

  dataplaneTarget(): DmaTarget {
    return this.liveTarget();
  }

  protected setDirtyTracking(start: boolean): void {
    const d = vfio_iommu_type1_dirty_bitmap.view().reset();
    d.flags = start ? VFIO_IOMMU_DIRTY_PAGES_FLAG.START : VFIO_IOMMU_DIRTY_PAGES_FLAG.STOP;
    try {
      this.host.port.ioctl(this.file.value, VFIO_IOMMU_DIRTY_PAGES, d.bytes);
    } catch (e) {
      throw VfioError.wrap(e, { op: 'set_dirty_page_tracking', target: this.describe() });
    }
  }

  protected readDirtyBitmap(iova: bigint, size: bigint, pageSize: bigint, va: bigint): void {
    const H = vfio_iommu_type1_dirty_bitmap;
    const buf = new Uint8Array(H.size + vfio_iommu_type1_dirty_bitmap_get.size);
    const hdr = H.view(buf).reset();
    hdr.argsz = buf.byteLength;
    hdr.flags = VFIO_IOMMU_DIRTY_PAGES_FLAG.GET_BITMAP;
    const get = vfio_iommu_type1_dirty_bitmap_get.view(buf, H.size);
    get.iova = iova;
    get.size = size;
    get.bitmap_pgsize = pageSize;
    get.bitmap_size = BigInt(bitmapBytes(size, pageSize));
    get.bitmap_data = va;
    this.host.port.ioctl(this.file.value, VFIO_IOMMU_DIRTY_PAGES, buf);
  }

  /**
   * vfio_legacy_pci_hot_reset(): every group the reset affects must be one of ours; the
   * kernel gets their fds as proof of ownership.
   */
  pciHotReset(dev: VfioDevice): void {
    const port = this.host.port;
    const what = { op: 'pci_hot_reset', device: dev.bdf, target: this.describe() };
    try {
      const info = vfioGetPciHotResetInfo(port, dev.fd);
      const fds: number[] = [];
      for (const d of info.devices) {
        const g = this.host.groups.get(d.id);
        if (!g) {
          throw new VfioError({
            ...what,
            errno: ERRNO.EPERM,
            detail: `depends on group ${d.id} (${d.bdf}) which is not owned`,
          });
        }
        if (!fds.includes(g.fd)) fds.push(g.fd);
      }
      const buf = new Uint8Array(vfio_pci_hot_reset.size + 4 * fds.length);
      const r = vfio_pci_hot_reset.view(buf).reset();
      r.argsz = buf.byteLength;
      r.count = fds.length;
      const dv = new DataView(buf.buffer, buf.byteOffset);
      fds.forEach((fd, i) => dv.setInt32(vfio_pci_hot_reset.size + 4 * i, fd, true));
      port.ioctl(dev.fd, VFIO_DEVICE_PCI_HOT_RESET, buf);
    } catch (e) {
      throw VfioError.wrap(e, what);
    }
  }

  /** Groups with no device (a failed attach) leave too; the last one closes the container. */
  protected release(): void {
    const errors: unknown[] = [];
    for (const g of [...this.groups]) {
      try {
        vfioGroupPut(this.host, g);
      } catch (e) {
        errors.push(e);
      }
    }
    if (!this.destroyed) this.close();
    if (errors.length) throw errors[0];
  }

  private close(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.dirtyPagesStarted = false;
    this.host.forgetContainer(this);
    try {
      this.file.close();
    } catch (e) {
      if (!(e instanceof SyscallError)) throw e;
    }
  }
}
