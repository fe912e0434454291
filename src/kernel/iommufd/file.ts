/**
 * An open /dev/iommu (struct iommufd_ctx): the ioctl dispatcher of main.c with its size
 * rules, every IOMMU_* ioctl of Linux 6.12 with the kernel's checks in the kernel's
 * order (ioas.c, hw_pagetable.c, device.c, fault.c), the device binding used by VFIO
 * cdevs, and the release that tears every object down.
 */
import { kfail } from '../errno.js';
import type { SimKernel } from '../kernel.js';
import type { DmaTranslator, IommuDevice, IommufdBinding, IoctlIn, SimFile } from '../types.js';
import {
  IOMMUFD_CMD,
  IOMMUFD_TYPE,
  iommu_destroy,
  iommu_fault_alloc,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_invalidate,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_alloc,
  iommu_ioas_allow_iovas,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_unmap,
  iommu_option,
  iommu_vfio_ioas,
} from '../../uapi/iommufd.js';
import { iommu_test_cmd_check_map } from '../../uapi/iommufd-test.js';
import type { StructInfo } from '../../uapi/layout.js';
import { AccessFile, FaultFile, type AnonOwner } from './anon.js';
import { vfioCompatIoctl } from './compat.js';
import { IntervalList, type Span } from './interval-list.js';
import { IOMMU_READ, IOMMU_WRITE, type IoPagetable } from './io-pagetable.js';
import {
  Access,
  cacheInvalidateUser,
  dirtyCapable,
  domainAllocUser,
  domainAttachDev,
  enforceCcCapable,
  Fault,
  hasDomainAllocUser,
  HWPT_ALLOC,
  hwInfo,
  HwptNested,
  HwptPaging,
  Igroup,
  Ioas,
  IommufdDevice,
  nestedDomainAllocUser,
  ObjectTable,
  type AnyObject,
  type DeviceBackend,
  type Hwpt,
} from './objects.js';
import { PAGE_SIZE, U64_MAX } from './pages.js';
import { LINUX_CHANGES, linuxAtLeast } from '../release.js';
import { iommufdTest, MOCK_FLAGS_ACCESS_SYZ, syzConvIova } from './test-cmd.js';
import { clearUser, copyFromUser, copyToUser, isErrno, offsetofend, Ucmd, userAccessible } from './ucmd.js';

const EINVAL = 22;
const MAP_FLAGS = { FIXED_IOVA: 1, WRITEABLE: 2, READABLE: 4 } as const;
const IOPT_PAGES_ACCOUNT_USER = 1;
const IOPT_PAGES_ACCOUNT_MM = 2;
const IOMMU_HWPT_DATA_NONE = 0;
const IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX = 1 << 19;
const IOMMU_HW_CAP_DIRTY_TRACKING = 1n;
const GET_DIRTY_BITMAP_NO_CLEAR = 1;
const IOMMU_DIRTY_TRACKING_ENABLE = 1;
// The simulated process holds CAP_SYS_RESOURCE for IOMMU_OPTION_RLIMIT_MODE (as root in the test
// VM does) but not CAP_IPC_LOCK, so pinned pages are always charged to RLIMIT_MEMLOCK.
const CAP_SYS_RESOURCE = true;

/** Kernel-wide iommufd state shared by the contexts of one SimKernel: who owns each iommu group's DMA. */
export interface IommufdShared {
  /** iommu_device_claim_dma_owner(): the context owning each group, with its bound-device count. */
  readonly groupOwners: Map<string, { owner: IommufdFile; count: number }>;
  /** mock_dev_ida */
  nextMockDev: number;
  /** Whether mock devices are probed by the mock IOMMU (see IommufdDriverOptions.mockIommu). */
  readonly mockIommu: boolean;
}

type Handler = (u: Ucmd) => number;

interface IoctlOp {
  request: number;
  size: number;
  minSize: number;
  run: Handler;
}

/** An open /dev/iommu: struct iommufd_ctx. */
export class IommufdFile implements SimFile, IommufdBinding, AnonOwner {
  readonly kind = 'iommufd';
  /** The context's objects (ctx->objects). */
  readonly objs = new ObjectTable();
  /** The VFIO compatibility IOAS (ctx->vfio_ioas). */
  vfioIoas: Ioas | null = null;
  /** ctx->account_mode: IOPT_PAGES_ACCOUNT_USER by default (both charge kernel.mem here). */
  accountMode = IOPT_PAGES_ACCOUNT_USER;
  /** VFIO compat: VFIO_NOIOMMU selected (never, without CONFIG_VFIO_NOIOMMU). */
  noIommuMode = false;
  private readonly groups = new Map<string, Igroup>();
  private readonly ops: (IoctlOp | undefined)[] = [];
  // References on the context besides the fd: bound VFIO devices, access and fault fds.
  private refs = 0;
  private fdOpen = true;

  constructor(
    readonly kernel: SimKernel,
    readonly shared: IommufdShared,
  ) {
    const op = (cmd: number, s: StructInfo, last: string, run: Handler) => {
      this.ops[cmd - IOMMUFD_CMD.BASE] = {
        request: (IOMMUFD_TYPE << 8) | cmd,
        size: s.size,
        minSize: offsetofend(s, last),
        run,
      };
    };
    op(IOMMUFD_CMD.DESTROY, iommu_destroy, 'id', (u) => this.destroy(u));
    op(IOMMUFD_CMD.FAULT_QUEUE_ALLOC, iommu_fault_alloc, 'out_fault_fd', (u) => this.faultAlloc(u));
    op(IOMMUFD_CMD.GET_HW_INFO, iommu_hw_info, '__reserved', (u) => this.getHwInfo(u));
    op(IOMMUFD_CMD.HWPT_ALLOC, iommu_hwpt_alloc, '__reserved', (u) => this.hwptAlloc(u));
    op(IOMMUFD_CMD.HWPT_GET_DIRTY_BITMAP, iommu_hwpt_get_dirty_bitmap, 'data', (u) => this.getDirtyBitmap(u));
    op(IOMMUFD_CMD.HWPT_INVALIDATE, iommu_hwpt_invalidate, '__reserved', (u) => this.hwptInvalidate(u));
    op(IOMMUFD_CMD.HWPT_SET_DIRTY_TRACKING, iommu_hwpt_set_dirty_tracking, '__reserved', (u) =>
      this.setDirtyTracking(u),
    );
    op(IOMMUFD_CMD.IOAS_ALLOC, iommu_ioas_alloc, 'out_ioas_id', (u) => this.ioasAlloc(u));
    op(IOMMUFD_CMD.IOAS_ALLOW_IOVAS, iommu_ioas_allow_iovas, 'allowed_iovas', (u) => this.allowIovas(u));
    op(IOMMUFD_CMD.IOAS_COPY, iommu_ioas_copy, 'src_iova', (u) => this.ioasCopy(u));
    op(IOMMUFD_CMD.IOAS_IOVA_RANGES, iommu_ioas_iova_ranges, 'out_iova_alignment', (u) => this.iovaRanges(u));
    op(IOMMUFD_CMD.IOAS_MAP, iommu_ioas_map, 'iova', (u) => this.ioasMap(u));
    op(IOMMUFD_CMD.IOAS_UNMAP, iommu_ioas_unmap, 'length', (u) => this.ioasUnmap(u));
    op(IOMMUFD_CMD.OPTION, iommu_option, 'val64', (u) => this.option(u));
    op(IOMMUFD_CMD.VFIO_IOAS, iommu_vfio_ioas, '__reserved', (u) => this.vfioIoasCmd(u));
    op(IOMMUFD_CMD.BASE + 32, iommu_test_cmd_check_map, 'last', (u) => iommufdTest(this, u));
  }

  private get mem() {
    return this.kernel.mem;
  }

  // ---- dispatch (iommufd_fops_ioctl) ----

  /** iommufd_fops_ioctl() */
  ioctl(request: number, arg: IoctlIn): number {
    const nr = request & 0xff;
    const index = nr - IOMMUFD_CMD.BASE;
    if (index < 0 || index >= 33) return vfioCompatIoctl(this, request, arg);
    const user = arg.bytes;
    if (!user || user.byteLength < 4) kfail('EFAULT', 'get_user(size)');
    const userSize = new DataView(user.buffer, user.byteOffset, 4).getUint32(0, true);
    const op = this.ops[index];
    if (!op || op.request !== request) kfail('ENOTTY', `ioctl 0x${request.toString(16)}`);
    if (userSize < op.minSize) kfail('EINVAL', `size ${userSize} below ${op.minSize}`);
    return op.run(Ucmd.copyIn(user, userSize, op.size));
  }

  // ---- objects ----

  /** Whether an object has users besides the table (refcount_dec_if_one would fail: EBUSY). */
  private busy(o: AnyObject): boolean {
    switch (o.type) {
      case 'ioas':
        return o.hwpts.length > 0 || o.accesses.size > 0;
      case 'hwpt_paging':
        return o.users > 0 || o.children > 0;
      case 'hwpt_nested':
        return o.users > 0;
      case 'device': // held by its driver (VFIO or the selftest object) until unbound
      case 'access': // held by its fd
        return true;
      case 'fault':
        return o.fileOpen || o.hwptUsers > 0;
      case 'selftest':
        return false;
    }
  }

  /** The destroy op of an object already removed from the table. */
  private destroyObject(o: AnyObject): void {
    switch (o.type) {
      case 'ioas':
        o.iopt.unmapAll();
        o.iopt.removeReserved(null); // the selftest's ADD_RESERVED ranges
        break;
      case 'hwpt_paging':
      case 'hwpt_nested':
        this.hwptDestroy(o);
        break;
      case 'selftest':
        if (o.idev.attached) this.deviceDetach(o.idev);
        this.deviceUnbind(o.idev);
        break;
      case 'device':
      case 'access':
      case 'fault':
        break;
    }
  }

  /** iommufd_object_remove(): ENOENT unknown, EBUSY while in use. */
  private objectRemove(id: number): void {
    const o = this.objs.peek(id);
    if (!o) kfail('ENOENT', `no object ${id}`);
    if (this.busy(o)) kfail('EBUSY', `object ${id} is in use`);
    this.objs.remove(o);
    if (this.vfioIoas === o) this.vfioIoas = null;
    this.destroyObject(o);
  }

  private hwptDestroy(h: Hwpt): void {
    if (h.type === 'hwpt_nested') {
      // iommufd_hwpt_nested_destroy(): drops its references on the parent and the fault queue.
      h.parent.children--;
      if (h.fault) h.fault.hwptUsers--;
      return;
    }
    const i = h.ioas.hwpts.indexOf(h);
    if (i >= 0) {
      h.ioas.hwpts.splice(i, 1);
      h.ioas.iopt.removeDomain(h.domain);
    }
    h.alive = false;
  }

  /** iommufd_hw_pagetable_put(): an automatic HWPT goes with its last device. */
  private hwptPut(h: Hwpt): void {
    h.users--;
    if (h.autoDomain && h.users === 0 && this.objs.peek(h.id) === h) {
      this.objs.remove(h);
      this.hwptDestroy(h);
    }
  }

  // ---- release (iommufd_fops_release) ----

  /** The fd's last close. Objects go when nothing else (a bound VFIO device, an anon fd) still holds the context. */
  release(): void {
    this.fdOpen = false;
    if (!this.refs) this.destroyAll();
  }

  /** iommufd_ctx_get() for a holder other than the fd. */
  private getRef(): void {
    this.refs++;
  }

  /** iommufd_ctx_put() */
  putRef(): void {
    this.refs--;
    if (!this.fdOpen && !this.refs) this.destroyAll();
  }

  // Destroys leaf objects until none are left, as iommufd_fops_release does.
  private destroyAll(): void {
    while (this.objs.size) {
      let destroyed = 0;
      for (const o of this.objs.all()) {
        if (this.objs.peek(o.id) !== o || this.busy(o)) continue;
        this.objs.remove(o);
        this.destroyObject(o);
        destroyed++;
      }
      if (!destroyed) break; // a users refcount bug in the kernel (WARN_ON)
    }
    this.vfioIoas = null;
  }

  // ---- devices (device.c) ----

  private getGroup(key: string): Igroup {
    let g = this.groups.get(key);
    if (!g) {
      g = new Igroup(key);
      this.groups.set(key, g);
    }
    return g;
  }

  /** iommufd_device_bind(): claims the group's DMA (EBUSY when another context owns it) and makes a DEVICE object. */
  deviceBind(dev: DeviceBackend, external: boolean): IommufdDevice {
    const owner = this.shared.groupOwners.get(dev.group);
    if (owner && owner.owner !== this) kfail('EBUSY', `iommu group ${dev.group} is owned by another context`);
    const igroup = this.getGroup(dev.group);
    const idev = new IommufdDevice(dev, igroup);
    idev.id = this.objs.allocId();
    this.objs.finalize(idev);
    if (owner) owner.count++;
    else this.shared.groupOwners.set(dev.group, { owner: this, count: 1 });
    igroup.bound.add(idev);
    if (external) this.getRef();
    this.refreshTranslators(igroup);
    return idev;
  }

  /** iommufd_device_unbind() of a detached device. */
  deviceUnbind(idev: IommufdDevice): void {
    this.objs.remove(idev);
    const g = idev.igroup;
    g.bound.delete(idev);
    idev.dev.setTranslator(null);
    if (!g.bound.size) this.groups.delete(g.key);
    const owner = this.shared.groupOwners.get(idev.dev.group);
    if (owner && owner.owner === this && --owner.count === 0) this.shared.groupOwners.delete(idev.dev.group);
  }

  // iopt_table_enforce_dev_resv_regions(): the device's reserved regions join the IOAS (EADDRINUSE over areas).
  private enforceResv(iopt: IoPagetable, dev: DeviceBackend): void {
    try {
      for (const [start, last] of dev.resv) iopt.reserveIova(start, last, dev);
    } catch (e) {
      iopt.removeReserved(dev);
      throw e;
    }
  }

  /** iommufd_hw_pagetable_attach() */
  private hwptAttach(hwpt: Hwpt, idev: IommufdDevice): void {
    const g = idev.igroup;
    if (g.hwpt && g.hwpt !== hwpt) kfail('EINVAL', 'the group is attached to another HWPT');
    const iopt = hwpt.ioas.iopt;
    this.enforceResv(iopt, idev.dev);
    if (!g.devices.length) {
      try {
        domainAttachDev(hwpt.domain, idev.dev);
      } catch (e) {
        iopt.removeReserved(idev.dev);
        throw e;
      }
      g.hwpt = hwpt;
    }
    hwpt.users++;
    g.devices.push(idev);
  }

  /** iommufd_hw_pagetable_detach(): returns the HWPT, which the caller puts. */
  private hwptDetach(idev: IommufdDevice): Hwpt {
    const g = idev.igroup;
    const hwpt = g.hwpt!;
    g.devices.splice(g.devices.indexOf(idev), 1);
    if (!g.devices.length) g.hwpt = null;
    hwpt.ioas.iopt.removeReserved(idev.dev);
    return hwpt;
  }

  private groupRemoveReserved(g: Igroup, iopt: IoPagetable): void {
    for (const d of g.devices) iopt.removeReserved(d.dev);
  }

  /** iommufd_device_do_replace(): returns the old HWPT to put, or null when nothing changed. */
  private doReplace(idev: IommufdDevice, hwpt: Hwpt): Hwpt | null {
    const g = idev.igroup;
    if (!g.hwpt) kfail('EINVAL', 'the group is not attached');
    if (!idev.attached) kfail('EINVAL', 'the device is not attached');
    if (hwpt === g.hwpt) return null;
    const old = g.hwpt;
    const iopt = hwpt.ioas.iopt;
    if (old.ioas !== hwpt.ioas) {
      try {
        for (const d of g.devices) this.enforceResv(iopt, d.dev);
      } catch (e) {
        this.groupRemoveReserved(g, iopt);
        throw e;
      }
    }
    try {
      domainAttachDev(hwpt.domain, idev.dev);
    } catch (e) {
      this.groupRemoveReserved(g, iopt); // err_unresv, even when the IOAS is the old one's
      throw e;
    }
    if (old.ioas !== hwpt.ioas) this.groupRemoveReserved(g, old.ioas.iopt);
    g.hwpt = hwpt;
    const n = g.devices.length;
    hwpt.users += n;
    old.users -= n - 1; // the caller puts the last one
    return old;
  }

  /**
   * iommufd_hwpt_paging_alloc(): a paging domain for `idev` on `ioas`. With
   * `immediateAttach` the device is attached before the domain is loaded. The HWPT has
   * its id but is not published; the caller finalizes it.
   */
  private hwptPagingAlloc(
    ioas: Ioas,
    idev: IommufdDevice,
    flags: number,
    immediateAttach: boolean,
    userData: boolean,
  ): HwptPaging {
    if (flags & ~(HWPT_ALLOC.NEST_PARENT | HWPT_ALLOC.DIRTY_TRACKING)) kfail('EOPNOTSUPP', 'HWPT flags');
    if (flags & HWPT_ALLOC.DIRTY_TRACKING && !dirtyCapable(idev.dev))
      kfail('EOPNOTSUPP', 'no dirty tracking');
    const id = this.objs.allocId();
    let hwpt: HwptPaging;
    try {
      const domain = domainAllocUser(idev.dev, flags, userData);
      hwpt = new HwptPaging(ioas, domain, (flags & HWPT_ALLOC.NEST_PARENT) !== 0);
      hwpt.id = id;
      hwpt.enforceCacheCoherency = enforceCcCapable(idev.dev);
      if (immediateAttach) this.hwptAttach(hwpt, idev);
    } catch (e) {
      this.objs.releaseId(id);
      throw e;
    }
    try {
      ioas.iopt.addDomain(hwpt.domain);
    } catch (e) {
      if (immediateAttach) this.hwptDetach(idev);
      hwpt.alive = false;
      this.objs.releaseId(id);
      throw e;
    }
    ioas.hwpts.push(hwpt);
    return hwpt;
  }

  /** iommufd_device_auto_get_domain(): reuse a compatible automatic HWPT of the IOAS, else make one. */
  private autoGetDomain(
    idev: IommufdDevice,
    ioas: Ioas,
    replace: boolean,
  ): { ptId: number; destroy: Hwpt | null } {
    for (const hwpt of [...ioas.hwpts]) {
      if (!hwpt.autoDomain) continue;
      try {
        if (replace) return { ptId: hwpt.id, destroy: this.doReplace(idev, hwpt) };
        this.hwptAttach(hwpt, idev);
        return { ptId: hwpt.id, destroy: null };
      } catch (e) {
        if (isErrno(e, EINVAL)) continue; // incompatible: try the next one
        throw e;
      }
    }
    const hwpt = this.hwptPagingAlloc(ioas, idev, 0, !replace, false);
    let destroy: Hwpt | null = null;
    if (replace) {
      try {
        destroy = this.doReplace(idev, hwpt);
      } catch (e) {
        this.hwptDestroy(hwpt);
        this.objs.releaseId(hwpt.id);
        throw e;
      }
    }
    hwpt.autoDomain = true;
    this.objs.finalize(hwpt);
    return { ptId: hwpt.id, destroy };
  }

  /** iommufd_device_change_pt(): attach (or replace) to an IOAS or HWPT id; returns the HWPT id. */
  changePt(idev: IommufdDevice, ptId: number, replace: boolean): number {
    const pt = this.objs.peek(ptId);
    if (!pt) kfail('ENOENT', `no object ${ptId}`);
    let destroy: Hwpt | null = null;
    if (pt.type === 'hwpt_paging' || pt.type === 'hwpt_nested') {
      if (replace) destroy = this.doReplace(idev, pt);
      else this.hwptAttach(pt, idev);
    } else if (pt.type === 'ioas') {
      const r = this.autoGetDomain(idev, pt, replace);
      ptId = r.ptId;
      destroy = r.destroy;
    } else kfail('EINVAL', `object ${ptId} is neither an IOAS nor a HWPT`);
    if (destroy) this.hwptPut(destroy);
    this.refreshTranslators(idev.igroup);
    return ptId;
  }

  /** iommufd_device_detach() */
  deviceDetach(idev: IommufdDevice): void {
    const hwpt = this.hwptDetach(idev);
    this.hwptPut(hwpt);
    this.refreshTranslators(idev.igroup);
  }

  // Every bound device of a group translates through the group's domain (DMA is blocked otherwise).
  // A nested domain's stage 1 is not modelled: DMA is blocked there (only mock devices, which do no
  // DMA, can attach to one).
  private refreshTranslators(g: Igroup): void {
    const t = g.hwpt?.type === 'hwpt_paging' ? this.translator(g.hwpt) : null;
    for (const d of g.bound) d.dev.setTranslator(t);
  }

  private translator(hwpt: HwptPaging): DmaTranslator {
    const mem = this.mem;
    return {
      translate(iova: bigint, length: number, write: boolean): bigint | null {
        if (!hwpt.alive) return null;
        const len = BigInt(length);
        const va = hwpt.ioas.iopt.translate(iova, len, write);
        // The kernel would reach the pinned pages even after munmap; here the bytes are the mapping's,
        // and a DMA engine must never store into a read-only one.
        if (va === null || !userAccessible(mem, va, len, write ? 3 : 1)) return null;
        const d = hwpt.domain;
        if (write && d.dirtyTracking) {
          for (let i = iova / d.ioPageSize; i <= (iova + len - 1n) / d.ioPageSize; i++) d.dirty.add(i);
        }
        return va;
      },
    };
  }

  // ---- IommufdBinding (VFIO_DEVICE_BIND_IOMMUFD / ATTACH / DETACH) ----

  /** Binds a VFIO device (iommufd_device_bind); returns its dev_id. */
  bindDevice(dev: IommuDevice): number {
    const backend: DeviceBackend = {
      kind: 'host',
      group: `pci:${dev.group}`,
      iommu: dev.iommu,
      mockFlags: 0,
      resv: dev.iommu.reserved,
      setTranslator: (t) => dev.setTranslator(t),
    };
    return this.deviceBind(backend, true).id;
  }

  /** Detaches if attached, then unbinds (iommufd_device_unbind); drops the device's hold on the context. */
  unbindDevice(devId: number): void {
    const idev = this.objs.get(devId, 'device');
    if (idev.attached) this.deviceDetach(idev);
    this.deviceUnbind(idev);
    this.putRef();
  }

  /** iommufd_device_attach(), or iommufd_device_replace() when attached (vfio_iommufd_physical_attach_ioas). */
  attachDevice(devId: number, ptId: number): number {
    const idev = this.objs.get(devId, 'device');
    return this.changePt(idev, ptId, idev.attached);
  }

  /** iommufd_device_detach() when attached. */
  detachDevice(devId: number): void {
    const idev = this.objs.get(devId, 'device');
    if (idev.attached) this.deviceDetach(idev);
  }

  // ---- accesses (used by the selftest) ----

  /** iommufd_access_create() + iommufd_access_attach(): the access object, attached to an IOAS. */
  accessCreate(needsPin: boolean, ioasId: number): Access {
    const access = new Access(needsPin);
    access.id = this.objs.allocId();
    this.objs.finalize(access);
    this.getRef();
    access.unpin = (iova, length) => this.accessUnpin(access, iova, length);
    try {
      this.accessChangeIoas(access, this.objs.get(ioasId, 'ioas'));
    } catch (e) {
      this.objs.remove(access);
      this.putRef();
      throw e;
    }
    return access;
  }

  /** iommufd_access_change_ioas() */
  accessChangeIoas(access: Access, ioas: Ioas | null): void {
    const cur = access.ioas;
    if (cur === ioas) return;
    access.ioas = null;
    if (ioas) {
      try {
        ioas.iopt.addAccess(access);
      } catch (e) {
        access.ioas = cur;
        throw e;
      }
      ioas.accesses.add(access);
    }
    if (cur) {
      access.unmap(0n, U64_MAX);
      cur.iopt.removeAccess(access);
      cur.accesses.delete(access);
    }
    access.ioas = ioas;
    access.ioasUnpin = ioas;
  }

  /** The access fd closed: unpin its items and destroy the access. */
  releaseAccess(access: Access): void {
    if (access.ioas) this.accessChangeIoas(access, null);
    this.objs.remove(access);
  }

  /** Installs the selftest access fd. */
  accessFile(access: Access): number {
    return this.kernel.installFile(new AccessFile(access, this), '[iommufd_test_staccess]');
  }

  /** iommufd_access_pin_pages(): pins the pages under [iova, iova + length) for the access. */
  accessPin(
    access: Access,
    iova: bigint,
    length: bigint,
    write: boolean,
  ): { uptr: bigint; npages: bigint }[] {
    if (length === 0n) kfail('EINVAL');
    const last = iova + length - 1n;
    if (last > U64_MAX) kfail('EOVERFLOW');
    if (!access.ioas) kfail('ENOENT', 'access not attached');
    const iopt = access.ioas.iopt;
    const { segs, done } = iopt.contig(iova, last);
    const pinned: { area: (typeof segs)[number]['area']; index: bigint; lastIndex: bigint }[] = [];
    const out: { uptr: bigint; npages: bigint }[] = [];
    try {
      for (let i = 0; i < segs.length; i++) {
        const { area, cur, segLast } = segs[i]!;
        const lastSeg = i === segs.length - 1 && done;
        // iopt_area_contig_is_aligned()
        if (area.startByte(cur) % PAGE_SIZE) kfail('EINVAL', 'access not page aligned');
        if (!lastSeg && area.startByte(area.last) % PAGE_SIZE !== PAGE_SIZE - 1n) kfail('EINVAL');
        if (!(area.prot & (write ? IOMMU_WRITE : IOMMU_READ))) kfail('EPERM', 'area protection');
        if (write && !area.pages.writable) kfail('EPERM');
        const index = area.startByte(cur) / PAGE_SIZE;
        const lastIndex = area.startByte(segLast) / PAGE_SIZE;
        area.pages.addAccess(index, lastIndex);
        try {
          area.pages.sync();
        } catch (e) {
          area.pages.removeAccess(index, lastIndex);
          throw e;
        }
        area.numAccesses++;
        pinned.push({ area, index, lastIndex });
        out.push({ uptr: area.pages.uptr + index * PAGE_SIZE, npages: lastIndex - index + 1n });
      }
      if (!done) kfail('ENOENT', 'not fully mapped');
    } catch (e) {
      for (const p of pinned) {
        p.area.pages.removeAccess(p.index, p.lastIndex);
        p.area.numAccesses--;
        p.area.pages.sync();
      }
      throw e;
    }
    return out;
  }

  /** iommufd_access_unpin_pages() */
  accessUnpin(access: Access, iova: bigint, length: bigint): void {
    const ioas = access.ioasUnpin;
    if (!ioas || !length) return;
    for (const { area, cur, segLast } of ioas.iopt.contig(iova, iova + length - 1n).segs) {
      const index = area.startByte(cur) / PAGE_SIZE;
      const lastIndex = area.startByte(segLast) / PAGE_SIZE;
      if (area.pages.removeAccess(index, lastIndex)) {
        area.numAccesses--;
        area.pages.sync();
      }
    }
  }

  /** iommufd_access_rw(): copies between `data` and the user memory under the IOVAs. */
  accessRw(access: Access, iova: bigint, data: Uint8Array, write: boolean): void {
    const length = BigInt(data.byteLength);
    if (length === 0n) kfail('EINVAL');
    const last = iova + length - 1n;
    if (last > U64_MAX) kfail('EOVERFLOW');
    if (!access.ioas) kfail('ENOENT', 'access not attached');
    const { segs, done } = access.ioas.iopt.contig(iova, last);
    let off = 0;
    for (const { area, cur, segLast } of segs) {
      const n = Number(segLast - cur + 1n);
      if (!(area.prot & (write ? IOMMU_WRITE : IOMMU_READ))) kfail('EPERM', 'area protection');
      if (write && !area.pages.writable) kfail('EPERM');
      const va = area.va(cur);
      if (write) copyToUser(this.mem, va, data.subarray(off, off + n));
      else data.set(copyFromUser(this.mem, va, n), off);
      off += n;
    }
    if (!done) kfail('ENOENT', 'not fully mapped');
  }

  // ---- ioctls ----

  private destroy(u: Ucmd): number {
    this.objectRemove(iommu_destroy.view(u.cmd).id);
    return 0;
  }

  private ioasAlloc(u: Ucmd): number {
    const c = iommu_ioas_alloc.view(u.cmd);
    if (c.flags) kfail('EOPNOTSUPP', 'IOAS_ALLOC flags');
    const ioas = new Ioas(this.mem);
    ioas.id = this.objs.allocId();
    c.out_ioas_id = ioas.id;
    u.respond();
    this.objs.finalize(ioas);
    return 0;
  }

  private iovaRanges(u: Ucmd): number {
    const c = iommu_ioas_iova_ranges.view(u.cmd);
    if (c.__reserved) kfail('EOPNOTSUPP', '__reserved');
    const ioas = this.objs.get(c.ioas_id, 'ioas');
    const max = c.num_iovas;
    const ranges = c.allowed_iovas;
    let n = 0;
    c.out_iova_alignment = ioas.iopt.iovaAlignment;
    for (const r of ioas.iopt.iovaRanges()) {
      if (n < max) {
        const elm = new Uint8Array(16);
        const v = new DataView(elm.buffer);
        v.setBigUint64(0, r.start, true);
        v.setBigUint64(8, r.last, true);
        copyToUser(this.mem, ranges + BigInt(n) * 16n, elm);
      }
      n++;
    }
    c.num_iovas = n;
    u.respond();
    if (n > max) kfail('EMSGSIZE', `${n} ranges, room for ${max}`);
    return 0;
  }

  private allowIovas(u: Ucmd): number {
    const c = iommu_ioas_allow_iovas.view(u.cmd);
    if (c.__reserved) kfail('EOPNOTSUPP', '__reserved');
    const ioas = this.objs.get(c.ioas_id, 'ioas');
    // iommufd_ioas_load_iovas()
    const loaded = new IntervalList<Span>();
    for (let i = 0; i < c.num_iovas; i++) {
      const v = new DataView(copyFromUser(this.mem, c.allowed_iovas + BigInt(i) * 16n, 16).buffer);
      const start = v.getBigUint64(0, true);
      const last = v.getBigUint64(8, true);
      if (start >= last) kfail('EINVAL', 'allowed range start >= last');
      if (loaded.iterFirst(start, last)) kfail('EINVAL', 'allowed ranges overlap');
      loaded.insert({ start, last });
    }
    ioas.iopt.setAllowIova([...loaded]);
    return 0;
  }

  private static prot(flags: number): number {
    return (flags & MAP_FLAGS.WRITEABLE ? IOMMU_WRITE : 0) | (flags & MAP_FLAGS.READABLE ? IOMMU_READ : 0);
  }

  private ioasMap(u: Ucmd): number {
    const c = iommu_ioas_map.view(u.cmd);
    if (c.flags & ~(MAP_FLAGS.FIXED_IOVA | MAP_FLAGS.WRITEABLE | MAP_FLAGS.READABLE) || c.__reserved) {
      kfail('EOPNOTSUPP', 'IOAS_MAP flags or __reserved');
    }
    if (c.iova >= U64_MAX || c.length >= U64_MAX) kfail('EOVERFLOW', 'IOAS_MAP iova or length');
    if (!(c.flags & (MAP_FLAGS.WRITEABLE | MAP_FLAGS.READABLE)))
      kfail('EINVAL', 'neither READABLE nor WRITEABLE');
    const ioas = this.objs.get(c.ioas_id, 'ioas');
    const alloc = !(c.flags & MAP_FLAGS.FIXED_IOVA);
    c.iova = ioas.iopt.mapUserPages(c.user_va, c.length, c.iova, alloc, IommufdFile.prot(c.flags));
    u.respond();
    return 0;
  }

  private ioasCopy(u: Ucmd): number {
    const c = iommu_ioas_copy.view(u.cmd);
    if (c.flags & MOCK_FLAGS_ACCESS_SYZ) {
      // iommufd_test_syz_conv_iova_id() (CONFIG_IOMMUFD_TEST): src_iova is "nth area + offset".
      c.flags = c.flags & ~MOCK_FLAGS_ACCESS_SYZ;
      const src = this.objs.peek(c.src_ioas_id);
      if (src?.type === 'ioas') c.src_iova = syzConvIova(src.iopt, c.src_iova);
    }
    if (c.flags & ~(MAP_FLAGS.FIXED_IOVA | MAP_FLAGS.WRITEABLE | MAP_FLAGS.READABLE)) {
      kfail('EOPNOTSUPP', 'IOAS_COPY flags');
    }
    if (c.length >= U64_MAX || c.src_iova >= U64_MAX || c.dst_iova >= U64_MAX) kfail('EOVERFLOW');
    if (!(c.flags & (MAP_FLAGS.WRITEABLE | MAP_FLAGS.READABLE)))
      kfail('EINVAL', 'neither READABLE nor WRITEABLE');
    const src = this.objs.get(c.src_ioas_id, 'ioas');
    const list = src.iopt.getPages(c.src_iova, c.length);
    const dst = this.objs.get(c.dst_ioas_id, 'ioas');
    const alloc = !(c.flags & MAP_FLAGS.FIXED_IOVA);
    c.dst_iova = dst.iopt.mapPages(list, c.length, c.dst_iova, alloc, IommufdFile.prot(c.flags));
    u.respond();
    return 0;
  }

  private ioasUnmap(u: Ucmd): number {
    const c = iommu_ioas_unmap.view(u.cmd);
    const ioas = this.objs.get(c.ioas_id, 'ioas');
    const out = { unmapped: 0n };
    if (c.iova === 0n && c.length === U64_MAX) {
      ioas.iopt.unmapAll(out);
    } else {
      if (c.iova >= U64_MAX || c.length >= U64_MAX) kfail('EOVERFLOW', 'IOAS_UNMAP iova or length');
      ioas.iopt.unmapIova(c.iova, c.length, out);
      if (!out.unmapped) kfail('ENOENT', 'nothing mapped in the range');
    }
    c.length = out.unmapped;
    u.respond();
    return 0;
  }

  private option(u: Ucmd): number {
    const c = iommu_option.view(u.cmd);
    if (c.__reserved) kfail('EOPNOTSUPP', '__reserved');
    const GET = 1;
    const SET = 0;
    switch (c.option_id) {
      case 0: // IOMMU_OPTION_RLIMIT_MODE
        if (c.object_id) kfail('EOPNOTSUPP', 'RLIMIT_MODE is global');
        if (c.op === GET) c.val64 = this.accountMode === IOPT_PAGES_ACCOUNT_MM ? 1n : 0n;
        else if (c.op === SET) {
          if (!CAP_SYS_RESOURCE) kfail('EPERM');
          if (this.objs.size) kfail('EBUSY', 'objects exist');
          if (c.val64 === 0n) this.accountMode = IOPT_PAGES_ACCOUNT_USER;
          else if (c.val64 === 1n) this.accountMode = IOPT_PAGES_ACCOUNT_MM;
          else kfail('EINVAL', 'RLIMIT_MODE value');
        } else kfail('EOPNOTSUPP', 'option op');
        break;
      case 1: {
        // IOMMU_OPTION_HUGE_PAGES (iommufd_ioas_option)
        const ioas = this.objs.get(c.object_id, 'ioas');
        if (c.op === GET) c.val64 = ioas.iopt.disableLargePages ? 0n : 1n;
        else if (c.op === SET) {
          if (c.val64 === 0n) ioas.iopt.disableLarge();
          else if (c.val64 === 1n) ioas.iopt.enableLarge();
          else kfail('EINVAL', 'HUGE_PAGES value');
        } else kfail('EOPNOTSUPP', 'option op');
        break;
      }
      default:
        kfail('EOPNOTSUPP', 'unknown option');
    }
    // Only val64 goes back to the caller.
    const at = iommu_option.offsetOf.val64;
    u.user.set(u.cmd.subarray(at, at + 8), at);
    return 0;
  }

  private vfioIoasCmd(u: Ucmd): number {
    const c = iommu_vfio_ioas.view(u.cmd);
    if (c.__reserved) kfail('EOPNOTSUPP', '__reserved');
    switch (c.op) {
      case 0: // GET
        if (!this.vfioIoas) kfail('ENODEV', 'no compat IOAS');
        c.ioas_id = this.vfioIoas.id;
        u.respond();
        return 0;
      case 1: // SET
        this.vfioIoas = this.objs.get(c.ioas_id, 'ioas');
        return 0;
      case 2: // CLEAR
        this.vfioIoas = null;
        return 0;
      default:
        return kfail('EOPNOTSUPP', 'VFIO_IOAS op');
    }
  }

  private hwptAlloc(u: Ucmd): number {
    const c = iommu_hwpt_alloc.view(u.cmd);
    if (c.__reserved) kfail('EOPNOTSUPP', '__reserved');
    if (
      (c.data_type === IOMMU_HWPT_DATA_NONE && c.data_len) ||
      (c.data_type !== IOMMU_HWPT_DATA_NONE && !c.data_len)
    ) {
      kfail('EINVAL', 'data_type and data_len disagree');
    }
    const idev = this.objs.get(c.dev_id, 'device');
    const pt = this.objs.peek(c.pt_id);
    if (!pt) kfail('EINVAL', `no object ${c.pt_id}`);
    if (pt.type === 'ioas') {
      const hwpt = this.hwptPagingAlloc(pt, idev, c.flags, false, c.data_len !== 0);
      // FAULT_ID_VALID is not a paging flag in 6.12: it failed above with EOPNOTSUPP.
      c.out_hwpt_id = hwpt.id;
      u.respond();
      this.objs.finalize(hwpt);
      return 0;
    }
    if (pt.type !== 'hwpt_paging') return kfail('EINVAL', `object ${c.pt_id} cannot parent a HWPT`);
    const hwpt = this.hwptNestedAlloc(pt, idev, c.flags, {
      type: c.data_type,
      uptr: c.data_uptr,
      len: c.data_len,
    });
    if (c.flags & HWPT_ALLOC.FAULT_ID_VALID) {
      let fault: Fault;
      try {
        fault = this.objs.get(c.fault_id, 'fault');
      } catch (e) {
        this.hwptDestroy(hwpt); // iommufd_object_abort_and_destroy()
        this.objs.releaseId(hwpt.id);
        throw e;
      }
      hwpt.fault = fault;
      fault.hwptUsers++;
    }
    c.out_hwpt_id = hwpt.id;
    u.respond();
    this.objs.finalize(hwpt);
    return 0;
  }

  /** iommufd_hwpt_nested_alloc(): a nested domain on `parent` from the device's driver; not yet published. */
  private hwptNestedAlloc(
    parent: HwptPaging,
    idev: IommufdDevice,
    flags: number,
    data: { type: number; uptr: bigint; len: number },
  ): HwptNested {
    if (flags & ~HWPT_ALLOC.FAULT_ID_VALID || !data.len || !hasDomainAllocUser(idev.dev))
      kfail('EOPNOTSUPP', 'nested HWPT flags, data or driver');
    if (parent.autoDomain || !parent.nestParent || parent.domain.owner !== idev.dev.kind)
      kfail('EINVAL', 'not a nest parent');
    const id = this.objs.allocId();
    let hwpt: HwptNested;
    try {
      hwpt = new HwptNested(parent, nestedDomainAllocUser(idev.dev, this.mem, data));
    } catch (e) {
      this.objs.releaseId(id);
      throw e;
    }
    hwpt.id = id;
    parent.children++;
    return hwpt;
  }

  private getHwInfo(u: Ucmd): number {
    const c = iommu_hw_info.view(u.cmd);
    const rsv = iommu_hw_info.offsetOf.__reserved;
    if (c.flags || u.cmd[rsv] || u.cmd[rsv + 1] || u.cmd[rsv + 2]) kfail('EOPNOTSUPP', 'flags or __reserved');
    const idev = this.objs.get(c.dev_id, 'device');
    const { type, data } = hwInfo(idev.dev);
    c.out_data_type = type;
    const copyLen = Math.min(c.data_len, data.byteLength);
    copyToUser(this.mem, c.data_uptr, data.subarray(0, copyLen));
    if (copyLen < c.data_len)
      clearUser(this.mem, c.data_uptr + BigInt(copyLen), BigInt(c.data_len - copyLen));
    c.data_len = data.byteLength;
    c.out_capabilities = dirtyCapable(idev.dev) ? IOMMU_HW_CAP_DIRTY_TRACKING : 0n;
    c.out_max_pasid_log2 = 0; // no PASID-capable devices
    u.respond();
    return 0;
  }

  private setDirtyTracking(u: Ucmd): number {
    const c = iommu_hwpt_set_dirty_tracking.view(u.cmd);
    if (c.flags & ~IOMMU_DIRTY_TRACKING_ENABLE) kfail('EOPNOTSUPP', 'flags');
    const hwpt = this.objs.get(c.hwpt_id, 'hwpt_paging');
    const d = hwpt.domain;
    if (!d.dirtyOps) kfail('EOPNOTSUPP', 'HWPT without dirty tracking');
    const enable = (c.flags & IOMMU_DIRTY_TRACKING_ENABLE) !== 0;
    if (enable) d.dirty.clear(); // iopt_clear_dirty_data(): a clean snapshot
    d.dirtyTracking = enable;
    return 0;
  }

  private getDirtyBitmap(u: Ucmd): number {
    const c = iommu_hwpt_get_dirty_bitmap.view(u.cmd);
    if (c.flags & ~GET_DIRTY_BITMAP_NO_CLEAR || c.__reserved) kfail('EOPNOTSUPP', 'flags or __reserved');
    const hwpt = this.objs.get(c.hwpt_id, 'hwpt_paging');
    const iopt = hwpt.ioas.iopt;
    // iommufd_check_iova_range()
    if (!c.length) kfail('EINVAL', 'length 0');
    const last = c.iova + c.length - 1n;
    if (last > U64_MAX) kfail('EOVERFLOW');
    const pg = iopt.iovaAlignment;
    if (c.iova & (pg - 1n) || BigInt.asUintN(64, last + 1n) & (pg - 1n)) kfail('EINVAL', 'range unaligned');
    if (!c.page_size) kfail('EINVAL', 'page_size 0');
    const ps = c.page_size;
    if (c.iova & (ps - 1n) || BigInt.asUintN(64, last + 1n) & (ps - 1n))
      kfail('EINVAL', 'range unaligned to page_size');
    const d = hwpt.domain;
    if (!d.dirtyOps) kfail('EOPNOTSUPP', 'HWPT without dirty tracking');
    // The walk fails with the driver's EINVAL (read_and_clear_dirty with tracking off) or with
    // EINVAL where the range stops being mapped (after reading what came before). Up to
    // 6.12.117 iommu_read_and_clear_dirty() dropped that error and the ioctl returned 0.
    const reportsErrors = linuxAtLeast(this.kernel.topology.linux, LINUX_CHANGES.dirtyBitmapErrors);
    const { segs, done } = iopt.contig(c.iova, last);
    if (!d.dirtyTracking) {
      if (reportsErrors && segs.length) kfail('EINVAL', 'read_and_clear_dirty: dirty tracking is off');
    } else if (segs.length) this.readAndClearDirty(d, c, segs[segs.length - 1]!.segLast);
    if (!done && reportsErrors) kfail('EINVAL', 'GET_DIRTY_BITMAP: the range is not fully mapped');
    return 0;
  }

  // The dirty bits of [c.iova, end] into the user's bitmap (cleared in the domain unless NO_CLEAR).
  private readAndClearDirty(
    d: HwptPaging['domain'],
    c: ReturnType<typeof iommu_hwpt_get_dirty_bitmap.view>,
    end: bigint,
  ): void {
    const ps = c.page_size;
    const shift = BigInt(ctz(ps));
    const noClear = (c.flags & GET_DIRTY_BITMAP_NO_CLEAR) !== 0;
    const bits = new DirtyBits();
    for (const idx of [...d.dirty]) {
      const at = idx * d.ioPageSize;
      if (at < c.iova || at > end) continue;
      bits.set((at - c.iova) >> shift, (at + d.ioPageSize - 1n - c.iova) >> shift);
      if (!noClear) d.dirty.delete(idx);
    }
    bits.orInto(this.mem, c.data);
  }

  private hwptInvalidate(u: Ucmd): number {
    const c = iommu_hwpt_invalidate.view(u.cmd);
    let err: unknown;
    let done = 0;
    try {
      if (c.__reserved) kfail('EOPNOTSUPP', '__reserved');
      if (
        c.entry_num &&
        (!c.data_uptr ||
          !c.entry_len ||
          BigInt(c.entry_len) > PAGE_SIZE ||
          c.entry_num > IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX)
      ) {
        kfail('EINVAL', 'entries');
      }
      const hwpt = this.objs.get(c.hwpt_id, 'hwpt_nested'); // a paging HWPT too: ENOENT
      const r = cacheInvalidateUser(hwpt.domain, this.mem, {
        type: c.data_type,
        uptr: c.data_uptr,
        entryLen: c.entry_len,
        entryNum: c.entry_num,
      });
      done = r.done;
      err = r.error;
    } catch (e) {
      err = e;
    }
    c.entry_num = done; // the handled count goes back even on failure
    u.respond();
    if (err) throw err;
    return 0;
  }

  private faultAlloc(u: Ucmd): number {
    const c = iommu_fault_alloc.view(u.cmd);
    if (c.flags) kfail('EOPNOTSUPP', 'flags');
    const fault = new Fault();
    fault.id = this.objs.allocId();
    this.getRef();
    const fd = this.kernel.installFile(new FaultFile(fault, this), '[iommufd-pgfault]');
    c.out_fault_id = fault.id;
    c.out_fault_fd = fd;
    u.respond();
    this.objs.finalize(fault);
    return 0;
  }
}

function ctz(x: bigint): number {
  let n = 0;
  while (x > 0n && !(x & 1n)) {
    x >>= 1n;
    n++;
  }
  return n;
}

// iova_bitmap_set() for a whole report: the bits are gathered, then OR-ed into the user bitmap a
// page at a time; a bitmap page that cannot be reached is skipped silently, as the kernel does
// when iova_bitmap_advance_to() fails.
class DirtyBits {
  private readonly bytes = new Map<bigint, number>();

  set(first: bigint, last: bigint): void {
    for (let b = first; b <= last; b++) {
      const byte = b >> 3n;
      this.bytes.set(byte, (this.bytes.get(byte) ?? 0) | (1 << Number(b & 7n)));
    }
  }

  orInto(mem: SimKernel['mem'], data: bigint): void {
    const pages = new Map<bigint, [bigint, number][]>();
    for (const [byte, v] of this.bytes) {
      const page = (data + byte) & ~(PAGE_SIZE - 1n);
      let list = pages.get(page);
      if (!list) pages.set(page, (list = []));
      list.push([data + byte - page, v]);
    }
    for (const [page, list] of pages) {
      if (!userAccessible(mem, page, PAGE_SIZE, 3)) continue; // the kernel pins it for write
      const p = mem.bytes(page, Number(PAGE_SIZE));
      for (const [off, v] of list) p[Number(off)] = p[Number(off)]! | v;
    }
  }
}
