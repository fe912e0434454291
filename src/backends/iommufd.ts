/**
 * The iommufd backend: QEMU's backends/iommufd.c (IommufdBackend, the shared /dev/iommu
 * object) and hw/vfio/iommufd.c (IommufdContainer). Devices are opened through their
 * cdev and bound to the iommufd; each (address space, iommufd object) pair has one IOAS,
 * and devices attach to HWPTs allocated inside it ("auto domains"), reusing a compatible
 * HWPT when the kernel accepts one.
 */
import { SyscallError } from '../port/errors.js';
import { type SyscallPort } from '../port/port.js';
import { O } from '../uapi/libc.js';
import {
  ERRNO,
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_FLAGS,
  IOMMU_HWPT_DIRTY_TRACKING,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_HW_CAP,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_PCI_DEVID,
  VFIO_PCI_HOT_RESET_FLAG,
  iommu_destroy,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_alloc,
  iommu_ioas_iova_ranges,
  iommu_iova_range,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_device_detach_iommufd_pt,
  vfio_pci_hot_reset,
} from '../uapi/index.js';
import { HOST_PAGE, OwnedFd, Unwind, vfioGetPciHotResetInfo, withScratch } from './common.js';
import type { ContainerBackend } from './container.js';
import { ContainerBase } from './container-base.js';
import type { IovaRange } from '../uapi/iommufd.js';
import type { VfioDevice } from './device.js';
import { dmaMap, dmaUnmap, dmaUnmapAll, ioasCopy, type DmaTarget } from './dma.js';
import { VfioError } from './errors.js';
import type { VfioHost } from './host.js';

let nextBackendId = 0;

/**
 * The shared /dev/iommu (QEMU's `-object iommufd`): opened on the first user, closed
 * when the last leaves, unless it was given an already-open fd (fd passing), which stays
 * the caller's. Closing the fd behind the object's back loses every IOAS in it (see
 * OwnedFd): users fail, new ones are refused, and an fd the object opened is opened afresh
 * once the last user has left.
 */
export class IommufdBackend {
  /** Name for messages and events (QEMU's object id). */
  readonly id: string;
  /** Devices and containers using the object. */
  users = 0;
  private file: OwnedFd | null;
  private readonly owned: boolean;

  constructor(
    readonly port: SyscallPort,
    opts: { id?: string; fd?: number } = {},
  ) {
    this.id = opts.id ?? `iommufd-${nextBackendId++}`;
    this.file = opts.fd === undefined ? null : new OwnedFd(port, opts.fd, this.describe());
    this.owned = opts.fd === undefined;
  }

  /** Whether an fd is open (or was passed in). */
  get hasFd(): boolean {
    return this.file !== null;
  }

  /** The /dev/iommu fd. Throws when not connected, or lost. */
  get fd(): number {
    if (!this.file) throw new VfioError({ op: 'iommufd', target: this.describe(), detail: 'not connected' });
    return this.file.value;
  }

  /** Why the fd is lost (closed behind the object's back), or null. */
  get lost(): VfioError | null {
    return this.file?.lost ?? null;
  }

  /** Marks the fd lost: an ioctl on it answered EBADF. */
  markLost(cause: unknown): void {
    this.file?.markLost(cause);
  }

  /**
   * Whether the fd is still the /dev/iommu the object opened; marks it lost when not. A lost
   * fd takes no cleanup ioctl either (IOMMU_DESTROY, unmap all): the kernel destroys every
   * object with the file, once the devices bound to it close.
   */
  fdUsable(): boolean {
    return this.file?.fdUsable() ?? false;
  }

  /** iommufd_backend_connect(): one more user; opens /dev/iommu for the first. */
  connect(): void {
    if (!this.file) {
      try {
        this.file = new OwnedFd(this.port, this.port.open('/dev/iommu', O.RDWR | O.CLOEXEC), this.describe());
      } catch (e) {
        throw VfioError.wrap(e, { op: 'iommufd_backend_connect', target: this.describe() });
      }
    } else if (this.file.lost) throw this.file.lost;
    this.users++;
  }

  /** iommufd_backend_disconnect(): one user less; the last closes an fd the object opened. */
  disconnect(): void {
    if (this.users === 0) return;
    if (--this.users === 0 && this.owned && this.file) {
      const file = this.file;
      this.file = null;
      file.close();
    }
  }

  private describe(): string {
    return `iommufd object ${this.id}`;
  }

  /** IOMMU_IOAS_ALLOC; returns the IOAS id. */
  ioasAlloc(): number {
    const a = iommu_ioas_alloc.view().reset();
    this.port.ioctl(this.fd, IOMMU_IOAS_ALLOC, a.bytes);
    return a.out_ioas_id;
  }

  /** IOMMU_DESTROY of an IOAS or HWPT. */
  destroyObject(id: number): void {
    const d = iommu_destroy.view().reset();
    d.id = id;
    this.port.ioctl(this.fd, IOMMU_DESTROY, d.bytes);
  }

  /** IOMMU_GET_HW_INFO: the IOMMU's type and IOMMU_HW_CAP_* capabilities for a bound device. */
  getHwInfo(devid: number): { dataType: number; capabilities: bigint } {
    const h = iommu_hw_info.view().reset();
    h.dev_id = devid;
    this.port.ioctl(this.fd, IOMMU_GET_HW_INFO, h.bytes);
    return { dataType: h.out_data_type, capabilities: h.out_capabilities };
  }

  /** IOMMU_HWPT_ALLOC of a paging HWPT in `ptId` for `devid`; returns the HWPT id. */
  hwptAlloc(devid: number, ptId: number, flags: number): number {
    const h = iommu_hwpt_alloc.view().reset();
    h.flags = flags;
    h.dev_id = devid;
    h.pt_id = ptId;
    this.port.ioctl(this.fd, IOMMU_HWPT_ALLOC, h.bytes);
    return h.out_hwpt_id;
  }

  /** IOMMU_HWPT_SET_DIRTY_TRACKING. */
  setHwptDirtyTracking(hwptId: number, start: boolean): void {
    const s = iommu_hwpt_set_dirty_tracking.view().reset();
    s.hwpt_id = hwptId;
    s.flags = start ? IOMMU_HWPT_DIRTY_TRACKING.ENABLE : 0;
    this.port.ioctl(this.fd, IOMMU_HWPT_SET_DIRTY_TRACKING, s.bytes);
  }

  /** IOMMU_HWPT_GET_DIRTY_BITMAP into process memory at `data` (bits relative to `iova`; read clears). */
  getHwptDirtyBitmap(hwptId: number, iova: bigint, size: bigint, pageSize: bigint, data: bigint): void {
    const g = iommu_hwpt_get_dirty_bitmap.view().reset();
    g.hwpt_id = hwptId;
    g.iova = iova;
    g.length = size;
    g.page_size = pageSize;
    g.data = data;
    this.port.ioctl(this.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, g.bytes);
  }

  /** IOMMU_IOAS_IOVA_RANGES the documented way: sizing call (EMSGSIZE), then the full one. */
  ioasIovaRanges(ioasId: number): { ranges: IovaRange[]; alignment: bigint } {
    const r = iommu_ioas_iova_ranges.view().reset();
    r.ioas_id = ioasId;
    let n = 0;
    try {
      this.port.ioctl(this.fd, IOMMU_IOAS_IOVA_RANGES, r.bytes);
    } catch (e) {
      if (!(e instanceof SyscallError) || e.errno !== ERRNO.EMSGSIZE) throw e;
      n = r.num_iovas;
    }
    if (!n) return { ranges: [], alignment: r.out_iova_alignment };
    return withScratch(this.port, n * iommu_iova_range.size, (va, mem) => {
      r.reset();
      r.ioas_id = ioasId;
      r.num_iovas = n;
      r.allowed_iovas = va;
      this.port.ioctl(this.fd, IOMMU_IOAS_IOVA_RANGES, r.bytes);
      const ranges = Array.from({ length: Math.min(n, r.num_iovas) }, (_, i) => {
        const e = iommu_iova_range.view(mem, i * iommu_iova_range.size);
        return { start: e.start, last: e.last };
      });
      return { ranges, alignment: r.out_iova_alignment };
    });
  }
}

/** A HWPT of a container and the devices attached to it (QEMU's VFIOIOASHwpt). */
export interface IommufdHwpt {
  id: number;
  /** IOMMU_HWPT_ALLOC_* it was allocated with. */
  flags: number;
  devices: VfioDevice[];
  /** The device attached to the IOAS itself (`id` is the IOAS): the kernel owns the domain. */
  kernelManaged: boolean;
}

/**
 * iommufd_cdev_attach(): opens the device's cdev, binds it to `backend`, and attaches it
 * to the IOAS of its address space on that object (creating the IOAS with the first
 * device). Undoes every step on failure.
 */
export function iommufdCdevAttach(host: VfioHost, dev: VfioDevice, backend: IommufdBackend): void {
  const port = host.port;
  const unwind = new Unwind();
  try {
    const path = dev.location.cdevPath;
    if (!path) throw new VfioError({ op: 'attach_device', device: dev.bdf, detail: 'no VFIO cdev' });
    const fd = port.open(path, O.RDWR | O.CLOEXEC);
    dev.fd = fd;
    unwind.push(() => {
      dev.fd = -1;
      port.close(fd); // also unbinds
    });
    backend.connect();
    unwind.push(() => backend.disconnect());
    const bind = vfio_device_bind_iommufd.view().reset();
    bind.iommufd = backend.fd;
    port.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, bind.bytes);
    dev.devid = bind.out_devid;
    dev.iommufd = backend;
    unwind.push(() => {
      dev.devid = undefined;
      dev.iommufd = undefined;
    });
    for (const c of host.containersOf(dev.space)) {
      if (!(c instanceof IommufdContainer) || c.backend !== backend) continue;
      try {
        c.attachDevice(dev);
        unwind.commit();
        return;
      } catch {
        // this IOAS cannot take the device: try the next, or make a new one
      }
    }
    const c = IommufdContainer.create(host, backend, dev.space);
    unwind.push(() => c.destroy());
    c.attachDevice(dev);
    unwind.commit();
  } catch (e) {
    unwind.run();
    throw VfioError.wrap(e, { op: 'attach_device', device: dev.bdf, target: `iommufd object ${backend.id}` });
  }
}

/** An IOAS of an iommufd object serving one address space (QEMU's VFIOIOMMUFDContainer). */
export class IommufdContainer extends ContainerBase implements ContainerBackend {
  readonly kind = 'iommufd' as const;
  /** HWPTs allocated in the IOAS, with their devices. */
  readonly hwpts: IommufdHwpt[] = [];

  private constructor(
    host: VfioHost,
    /** The iommufd object the IOAS lives in. */
    readonly backend: IommufdBackend,
    /** The IOAS id. */
    readonly ioasId: number,
    readonly space: string,
  ) {
    super(host);
  }

  /** A new IOAS on `backend` for `space` (the container holds one user of the object). */
  static create(host: VfioHost, backend: IommufdBackend, space: string): IommufdContainer {
    backend.connect();
    let ioasId: number;
    try {
      ioasId = backend.ioasAlloc();
    } catch (e) {
      backend.disconnect();
      throw VfioError.wrap(e, { op: 'IOMMU_IOAS_ALLOC', target: `iommufd object ${backend.id}` });
    }
    const c = new IommufdContainer(host, backend, ioasId, space);
    host.containers.push(c);
    c.refreshIovaRanges();
    return c;
  }

  describe(): string {
    return `iommufd IOAS ${this.ioasId}`;
  }

  /** The object's fd is the container's: losing it loses every IOAS in it. */
  protected get watched(): IommufdBackend {
    return this.backend;
  }

  /**
   * iommufd_cdev_attach_container() with auto domains: an existing HWPT first (EINVAL =
   * incompatible, try the next), else IOMMU_HWPT_ALLOC (DIRTY_TRACKING when the IOMMU can)
   * and attach. The device must be bound to this container's iommufd object.
   */
  attachDevice(dev: VfioDevice): void {
    const what = { op: 'attach_device', device: dev.bdf, target: this.describe() };
    if (dev.iommufd !== this.backend || dev.devid === undefined) {
      throw new VfioError({ ...what, detail: `not bound to iommufd object ${this.backend.id}` });
    }
    const port = this.host.port;
    const attach = (ptId: number) => {
      const a = vfio_device_attach_iommufd_pt.view().reset();
      a.pt_id = ptId;
      port.ioctl(dev.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, a.bytes);
    };
    let hwpt: IommufdHwpt | undefined;
    for (const h of this.hwpts) {
      try {
        attach(h.id);
        hwpt = h;
        break;
      } catch (e) {
        if (e instanceof SyscallError && e.errno === ERRNO.EINVAL) continue;
        throw VfioError.wrap(e, { ...what, detail: `attach to HWPT ${h.id}` });
      }
    }
    if (!hwpt) {
      try {
        const caps = this.backend.getHwInfo(dev.devid).capabilities;
        const flags =
          caps & BigInt(IOMMU_HW_CAP.DIRTY_TRACKING) ? IOMMU_HWPT_ALLOC_FLAGS.ALLOC_DIRTY_TRACKING : 0;
        let id: number | undefined;
        try {
          id = this.backend.hwptAlloc(dev.devid, this.ioasId, flags);
        } catch (e) {
          // An IOMMU driver without domain_alloc_user: let the kernel make the domain.
          if (!(e instanceof SyscallError) || e.errno !== ERRNO.EOPNOTSUPP) throw e;
        }
        if (id !== undefined && !this.devices.length && this.collapsedIovaSpace()) {
          // Linux 6.12 virtio-iommu: a domain allocated before any attach has a [0, 0]
          // aperture, and the IOAS takes it over (every map then fails EINVAL). Drop it and
          // let the attach allocate the domain, finalised against the device first.
          this.backend.destroyObject(id);
          id = undefined;
        }
        if (id === undefined) {
          attach(this.ioasId);
          hwpt = { id: this.ioasId, flags: 0, devices: [], kernelManaged: true };
        } else {
          // Undone newest first: a HWPT with a device attached cannot be destroyed (EBUSY).
          const undo = new Unwind();
          const hwptId = id;
          undo.push(() => this.backend.destroyObject(hwptId));
          try {
            attach(id);
            undo.push(() => this.detachPt(dev));
            if (this.dirtyPagesStarted && flags) this.backend.setHwptDirtyTracking(id, true);
          } catch (e) {
            undo.run(); // the failure to report is this one, not an undo step's
            throw e;
          }
          hwpt = { id, flags, devices: [], kernelManaged: false };
        }
        this.hwpts.push(hwpt);
      } catch (e) {
        throw VfioError.wrap(e, what);
      }
    }
    hwpt.devices.push(dev);
    dev.hwptId = hwpt.id;
    this.devices.push(dev);
    dev.container = this;
    this.refreshIovaRanges();
  }

  /**
   * iommufd_cdev_detach(): DETACH_PT, the HWPT destroyed with its last device, the IOAS
   * with the container's last device, then unbind (close the fd) and disconnect.
   */
  detachDevice(dev: VfioDevice): void {
    const i = this.devices.indexOf(dev);
    if (i < 0) return;
    const port = this.host.port;
    const errors: unknown[] = [];
    const attempt = (fn: () => void) => {
      try {
        fn();
      } catch (e) {
        errors.push(e);
      }
    };
    attempt(() => this.detachPt(dev));
    this.devices.splice(i, 1);
    dev.container = null;
    const h = this.hwpts.find((x) => x.id === dev.hwptId);
    if (h) {
      h.devices.splice(h.devices.indexOf(dev), 1);
      if (!h.devices.length) {
        this.hwpts.splice(this.hwpts.indexOf(h), 1);
        if (!h.kernelManaged && this.fdUsable()) attempt(() => this.backend.destroyObject(h.id));
      }
    }
    dev.hwptId = undefined;
    if (!this.devices.length) attempt(() => this.close());
    else attempt(() => this.refreshIovaRanges());
    attempt(() => port.close(dev.fd));
    dev.fd = -1;
    dev.devid = undefined;
    dev.iommufd = undefined;
    attempt(() => this.backend.disconnect());
    if (errors.length) throw VfioError.wrap(errors[0], { op: 'detach_device', device: dev.bdf });
  }

  /** VFIO_DEVICE_DETACH_IOMMUFD_PT: the device leaves its HWPT (or IOAS). */
  private detachPt(dev: VfioDevice): void {
    const d = vfio_device_detach_iommufd_pt.view().reset();
    this.host.port.ioctl(dev.fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, d.bytes);
  }

  dmaMap(iova: bigint, size: bigint, vaddr: bigint, readonly: boolean): void {
    try {
      dmaMap(this.host.port, this.dataplaneTarget(), iova, size, vaddr, readonly);
    } catch (e) {
      throw VfioError.wrap(e, { op: 'dma_map', iova, size, target: this.describe() });
    }
  }

  dmaUnmap(iova: bigint, size: bigint, opts: { unmapAll?: boolean } = {}): bigint {
    try {
      return opts.unmapAll
        ? dmaUnmapAll(this.host.port, this.dataplaneTarget())
        : dmaUnmap(this.host.port, this.dataplaneTarget(), iova, size);
    } catch (e) {
      throw VfioError.wrap(
        e,
        opts.unmapAll
          ? { op: 'dma_unmap_all', target: this.describe() }
          : { op: 'dma_unmap', iova, size, target: this.describe() },
      );
    }
  }

  /**
   * IOMMU_IOAS_COPY: maps in this IOAS, at the same IOVA, the pages `src` maps over
   * [iova, iova + size) without pinning them again. `src` must be an IOAS of the same
   * iommufd object.
   */
  copyFrom(src: IommufdContainer, iova: bigint, size: bigint, readonly = false): void {
    const what = { op: 'dma_copy', iova, size, target: `${this.describe()} from IOAS ${src.ioasId}` };
    if (src.backend !== this.backend) {
      throw new VfioError({
        ...what,
        errno: ERRNO.EXDEV,
        detail: `IOAS ${src.ioasId} belongs to iommufd object ${src.backend.id}, not ${this.backend.id}`,
      });
    }
    try {
      ioasCopy(this.host.port, this.backend.fd, this.ioasId, src.ioasId, iova, size, readonly);
    } catch (e) {
      throw VfioError.wrap(e, what);
    }
  }

  copySourceIoas(other: ContainerBackend): number | null {
    return other instanceof IommufdContainer &&
      other !== this &&
      other.backend === this.backend &&
      !other.destroyed
      ? other.ioasId
      : null;
  }

  dataplaneTarget(): DmaTarget {
    return { kind: 'iommufd', iommufd: this.backend.fd, ioasId: this.ioasId } satisfies DmaTarget;
  }

  /** iommufd_set_dirty_page_tracking(): every DIRTY HWPT, rolled back if one fails. */
  protected setDirtyTracking(start: boolean): void {
    const done: IommufdHwpt[] = [];
    for (const h of this.hwpts) {
      if (!(h.flags & IOMMU_HWPT_ALLOC_FLAGS.ALLOC_DIRTY_TRACKING)) continue;
      try {
        this.backend.setHwptDirtyTracking(h.id, start);
        done.push(h);
      } catch (e) {
        for (const d of done) {
          try {
            this.backend.setHwptDirtyTracking(d.id, !start);
          } catch {
            // best effort, as QEMU's rollback
          }
        }
        throw VfioError.wrap(e, {
          op: 'set_dirty_page_tracking',
          target: `${this.describe()} HWPT ${h.id}`,
        });
      }
    }
  }

  /** iommufd_query_dirty_bitmap(): the union of every DIRTY HWPT's bitmap (reading clears). */
  protected readDirtyBitmap(iova: bigint, size: bigint, pageSize: bigint, va: bigint): void {
    for (const h of this.hwpts) {
      if (h.flags & IOMMU_HWPT_ALLOC_FLAGS.ALLOC_DIRTY_TRACKING)
        this.backend.getHwptDirtyBitmap(h.id, iova, size, pageSize, va);
    }
  }

  /**
   * iommufd_cdev_pci_hot_reset(): the kernel reports device ids; every affected device
   * must be owned by our iommufd (DEV_ID_OWNED), and the fd array is empty.
   */
  pciHotReset(dev: VfioDevice): void {
    const port = this.host.port;
    const what = { op: 'pci_hot_reset', device: dev.bdf, target: this.describe() };
    try {
      const info = vfioGetPciHotResetInfo(port, dev.fd);
      if (!(info.flags & VFIO_PCI_HOT_RESET_FLAG.DEV_ID)) {
        throw new VfioError({ ...what, errno: ERRNO.EINVAL, detail: 'the kernel did not report device ids' });
      }
      if (!(info.flags & VFIO_PCI_HOT_RESET_FLAG.DEV_ID_OWNED)) {
        const notOwned = info.devices
          .filter((d) => d.id === VFIO_PCI_DEVID.NOT_OWNED >>> 0)
          .map((d) => d.bdf);
        throw new VfioError({
          ...what,
          errno: ERRNO.EPERM,
          detail: `depends on ${notOwned.join(', ') || 'devices'} not owned by iommufd object ${this.backend.id}`,
        });
      }
      const r = vfio_pci_hot_reset.view().reset();
      r.count = 0;
      port.ioctl(dev.fd, VFIO_DEVICE_PCI_HOT_RESET, r.bytes);
    } catch (e) {
      throw VfioError.wrap(e, what);
    }
  }

  protected release(): void {
    this.close();
  }

  /** iommufd_cdev_container_destroy(): unmap everything, destroy the IOAS, drop the object. */
  private close(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.dirtyPagesStarted = false;
    this.host.forgetContainer(this);
    try {
      if (this.fdUsable()) {
        dmaUnmapAll(this.host.port, this.dataplaneTarget());
        this.backend.destroyObject(this.ioasId);
      }
    } finally {
      this.backend.disconnect();
    }
  }

  /** Whether the IOAS's usable IOVA space shrank to at most one page (see attachDevice). */
  private collapsedIovaSpace(): boolean {
    return this.backend.ioasIovaRanges(this.ioasId).ranges.every((r) => r.last - r.start < HOST_PAGE);
  }

  /** iommufd_cdev_get_info_iova_range(): IOVA ranges and alignment; 64-bit / host page if the query fails. */
  private refreshIovaRanges(): void {
    const all =
      this.hwpts.length > 0 && this.hwpts.every((h) => h.flags & IOMMU_HWPT_ALLOC_FLAGS.ALLOC_DIRTY_TRACKING);
    let ranges: IovaRange[] = [{ start: 0n, last: 0xffff_ffff_ffff_ffffn }];
    let pgsizes = HOST_PAGE;
    try {
      const r = this.backend.ioasIovaRanges(this.ioasId);
      if (r.ranges.length) ranges = r.ranges;
      if (r.alignment) pgsizes = r.alignment;
    } catch {
      // QEMU warns and keeps the defaults
    }
    this.info = { pgsizes, iovaRanges: ranges, dmaMaxMappings: null, dirtyPagesSupported: all };
  }
}
