/**
 * The objects of an iommufd context (iommufd_private.h): IOAS, HWPT_PAGING, HWPT_NESTED,
 * DEVICE, ACCESS, FAULT and the selftest's mock-device object, the per-context iommu groups,
 * the devices behind DEVICE objects (VFIO PCI devices of the topology or selftest mock
 * devices) and what their IOMMU driver answers: domain allocation, attach
 * compatibility, capabilities, GET_HW_INFO data.
 */
import { kfail } from '../errno.js';
import type { ProcessMemory } from '../memory.js';
import type { IommuSpec } from '../topology.js';
import type { DmaTranslator } from '../types.js';
import { IoPagetable, type IommuDomain, type IoptAccess } from './io-pagetable.js';
import { PAGE_SIZE } from './pages.js';
import { copyFromUser } from './ucmd.js';

/** enum iommufd_object_type (IOMMUFD_OBJ_*). */
export type ObjType = 'device' | 'hwpt_paging' | 'hwpt_nested' | 'ioas' | 'access' | 'fault' | 'selftest';

/** struct iommufd_object: an id in the context's table. */
export abstract class IommufdObject {
  /** The object id (xarray index, from 1). */
  id = 0;
  abstract readonly type: ObjType;
}

/** IOMMU_HWPT_ALLOC_* flags (uapi). */
export const HWPT_ALLOC = { NEST_PARENT: 1, DIRTY_TRACKING: 2, FAULT_ID_VALID: 4 } as const;
/** MOCK_FLAGS_DEVICE_* (iommufd_test.h). */
export const MOCK_DEV = { NO_DIRTY: 1, HUGE_IOVA: 2 } as const;
/** MOCK_APERTURE_START / MOCK_APERTURE_LAST */
export const MOCK_APERTURE_START = 1n << 24n;
/** See MOCK_APERTURE_START. */
export const MOCK_APERTURE_LAST = (1n << 31n) - 1n;
/** MOCK_IO_PAGE_SIZE = PAGE_SIZE / 2: the mock domain's page, smaller than the CPU's. */
export const MOCK_IO_PAGE_SIZE = PAGE_SIZE / 2n;
const MOCK_HUGE_PAGE_SIZE = 512n * MOCK_IO_PAGE_SIZE;
/** IOMMU_HW_INFO_TYPE_SELFTEST and its register value (iommufd_test.h). */
export const IOMMU_HW_INFO_TYPE_SELFTEST = 0xfeedbeef;
const IOMMU_HW_INFO_SELFTEST_REGVAL = 0xdeadbeef;
const IOMMU_HW_INFO_TYPE_INTEL_VTD = 1;
const IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1;
/** IOMMU_HWPT_DATA_SELFTEST and IOMMU_HWPT_INVALIDATE_DATA_SELFTEST (iommufd_test.h). */
const IOMMU_HWPT_DATA_SELFTEST = 0xdead;
const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST = 0xdeadbeef;
/** IOMMU_TEST_INVALIDATE_FLAG_ALL */
const IOMMU_TEST_INVALIDATE_FLAG_ALL = 1;
/** MOCK_NESTED_DOMAIN_IOTLB_NUM: the mock IOTLB entries of a nested mock domain (ids 0..3). */
export const MOCK_NESTED_DOMAIN_IOTLB_NUM = 4;

/** A device as the iommufd core sees it: which IOMMU driver, which group, where its DMA goes. */
export interface DeviceBackend {
  /** The IOMMU driver: the topology's (Intel VT-d when hw_info_type is 1) or the selftest's mock IOMMU. */
  readonly kind: 'host' | 'mock';
  /** The iommu_group (ownership and attachment are per group). */
  readonly group: string;
  /** The topology's IOMMU (kind 'host'). */
  readonly iommu: IommuSpec | null;
  /** MOCK_FLAGS_DEVICE_* (kind 'mock'). */
  readonly mockFlags: number;
  /** Reserved regions the driver reports (iommu_get_resv_regions): VT-d's MSI window. */
  readonly resv: ReadonlyArray<readonly [bigint, bigint]>;
  setTranslator(t: DmaTranslator | null): void;
}

/** A selftest mock device (mock_dev_create): its own group, no DMA engine. */
export function mockDevice(n: number, flags: number): DeviceBackend {
  return {
    kind: 'mock',
    group: `mock:${n}`,
    iommu: null,
    mockFlags: flags,
    resv: [],
    setTranslator: () => {},
  };
}

// VT-d capability bits (drivers/iommu/intel/iommu.h).
const ecapBit = (spec: IommuSpec, bit: number) => ((spec.ecap_reg >> BigInt(bit)) & 1n) === 1n;
const isVtd = (spec: IommuSpec) => spec.hw_info_type === IOMMU_HW_INFO_TYPE_INTEL_VTD;
function nestedSupported(spec: IommuSpec): boolean {
  return ecapBit(spec, 43) && ecapBit(spec, 26); // sm_supported && ecap_nest
}

/** device_iommu_capable(dev, IOMMU_CAP_ENFORCE_CACHE_COHERENCY): VT-d snoop control (ecap SC); never the mock. */
export function enforceCcCapable(dev: DeviceBackend): boolean {
  return dev.kind === 'host' && isVtd(dev.iommu!) && ecapBit(dev.iommu!, 7);
}

/** Whether the device's driver has ops->domain_alloc_user (VT-d and the mock; virtio-iommu has not). */
export function hasDomainAllocUser(dev: DeviceBackend): boolean {
  return dev.kind === 'mock' || isVtd(dev.iommu!);
}

/** device_iommu_capable(dev, IOMMU_CAP_DIRTY_TRACKING) */
export function dirtyCapable(dev: DeviceBackend): boolean {
  return dev.kind === 'mock' ? !(dev.mockFlags & MOCK_DEV.NO_DIRTY) : dev.iommu!.dirty_tracking;
}

/**
 * ops->domain_alloc_user(dev, flags, NULL, user_data) of the device's driver
 * (intel_iommu_domain_alloc_user, mock_domain_alloc_user): a paging domain, or
 * EOPNOTSUPP for flags, data or capabilities the driver does not have.
 */
export function domainAllocUser(dev: DeviceBackend, flags: number, hasUserData: boolean): IommuDomain {
  const dirty = (flags & HWPT_ALLOC.DIRTY_TRACKING) !== 0;
  if (flags & ~(HWPT_ALLOC.NEST_PARENT | HWPT_ALLOC.DIRTY_TRACKING)) kfail('EOPNOTSUPP', 'domain flags');
  if (dev.kind === 'mock') {
    if (hasUserData || (dirty && dev.mockFlags & MOCK_DEV.NO_DIRTY)) kfail('EOPNOTSUPP', 'mock domain');
    return {
      owner: 'mock',
      pgsizeBitmap: MOCK_IO_PAGE_SIZE | (dev.mockFlags & MOCK_DEV.HUGE_IOVA ? MOCK_HUGE_PAGE_SIZE : 0n),
      apertureStart: MOCK_APERTURE_START,
      apertureEnd: MOCK_APERTURE_LAST,
      pendingAperture: null,
      dirtyOps: dirty,
      dirtyTracking: false,
      dirty: new Set(),
      ioPageSize: MOCK_IO_PAGE_SIZE,
      maxAddr: 0n,
    };
  }
  const spec = dev.iommu!;
  if (isVtd(spec)) {
    if (flags & HWPT_ALLOC.NEST_PARENT && !nestedSupported(spec)) kfail('EOPNOTSUPP', 'VT-d without nesting');
    if (hasUserData || (dirty && !spec.dirty_tracking))
      kfail('EOPNOTSUPP', 'VT-d domain data or dirty tracking');
  } else if (flags || hasUserData) {
    // A driver without domain_alloc_user (virtio-iommu): iommufd_hwpt_paging_alloc() refuses flags and data.
    kfail('EOPNOTSUPP', 'the IOMMU driver has no domain_alloc_user');
  }
  // virtio-iommu (6.12): viommu_domain_alloc() leaves the geometry zeroed until
  // viommu_attach_dev() finalises the domain; the page sizes are the ops' from the start.
  const aperture = { start: 0n, end: spec.aperture_last };
  const atAttach = !isVtd(spec);
  return {
    owner: 'host',
    pgsizeBitmap: spec.pgsize_bitmap,
    apertureStart: 0n,
    apertureEnd: atAttach ? 0n : aperture.end,
    pendingAperture: atAttach ? aperture : null,
    dirtyOps: dirty,
    dirtyTracking: false,
    dirty: new Set(),
    ioPageSize: 1n << BigInt(ctz(spec.pgsize_bitmap)),
    maxAddr: 0n,
  };
}

function ctz(x: bigint): number {
  let n = 0;
  while (x > 0n && !(x & 1n)) {
    x >>= 1n;
    n++;
  }
  return n;
}

/** struct iommu_user_data (HWPT_ALLOC) or one entry of an iommu_user_data_array (HWPT_INVALIDATE). */
export interface UserData {
  type: number;
  uptr: bigint;
  len: number;
}

/**
 * __iommu_copy_struct_from_user(): the type must be the driver's (EINVAL), the length at
 * least `minLen` and at most the struct's `size` (EINVAL), then copy_struct_from_user()
 * (EFAULT; a shorter struct is zero-extended).
 */
function copyStructFromUser(mem: ProcessMemory, data: UserData, type: number, size: number, minLen: number) {
  if (data.type !== type) kfail('EINVAL', 'user data type');
  if (data.len < minLen || size < data.len) kfail('EINVAL', 'user data length');
  const bytes = new Uint8Array(size);
  bytes.set(copyFromUser(mem, data.uptr, data.len));
  return new DataView(bytes.buffer);
}

/** A nested domain: only the selftest's (struct mock_iommu_domain_nested) is modelled. */
export interface NestedDomain {
  readonly owner: 'mock';
  readonly dirtyOps: false;
  /** The mock IOTLB entries (MD_CHECK_IOTLB reads them, HWPT_INVALIDATE clears them). */
  readonly iotlb: number[];
}

/**
 * ops->domain_alloc_user(dev, flags, parent, user_data) for a nested domain: the mock's
 * (mock_domain_alloc_user with a parent: IOMMU_HWPT_DATA_SELFTEST only, else EOPNOTSUPP;
 * every IOTLB entry starts as the given iotlb). VT-d's nested domains are not modelled
 * (EOPNOTSUPP): QEMU's intel-iommu has no nesting, so no NEST_PARENT HWPT exists to nest on.
 */
export function nestedDomainAllocUser(dev: DeviceBackend, mem: ProcessMemory, data: UserData): NestedDomain {
  if (dev.kind !== 'mock') kfail('EOPNOTSUPP', 'nested VT-d domains are not modelled');
  if (data.type !== IOMMU_HWPT_DATA_SELFTEST) kfail('EOPNOTSUPP', 'not IOMMU_HWPT_DATA_SELFTEST');
  const cfg = copyStructFromUser(mem, data, IOMMU_HWPT_DATA_SELFTEST, 4, 4); // struct iommu_hwpt_selftest { u32 iotlb; }
  return {
    owner: 'mock',
    dirtyOps: false,
    iotlb: new Array(MOCK_NESTED_DOMAIN_IOTLB_NUM).fill(cfg.getUint32(0, true)),
  };
}

/**
 * mock_domain_cache_invalidate_user(): each entry (struct iommu_hwpt_invalidate_selftest
 * { u32 flags; u32 iotlb_id; }) clears one mock IOTLB entry, or all with FLAG_ALL; the first
 * bad entry stops the batch. Returns how many entries were done and the error, if any.
 */
export function cacheInvalidateUser(
  domain: NestedDomain,
  mem: ProcessMemory,
  array: { type: number; uptr: bigint; entryLen: number; entryNum: number },
): { done: number; error: unknown } {
  let done = 0;
  try {
    if (array.type !== IOMMU_HWPT_INVALIDATE_DATA_SELFTEST) kfail('EINVAL', 'invalidation data type');
    for (let i = 0; i < array.entryNum; i++) {
      const entry = { type: array.type, uptr: array.uptr + BigInt(array.entryLen * i), len: array.entryLen };
      const inv = copyStructFromUser(mem, entry, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, 8, 8);
      const flags = inv.getUint32(0, true);
      const id = inv.getUint32(4, true);
      if (flags & ~IOMMU_TEST_INVALIDATE_FLAG_ALL) kfail('EOPNOTSUPP', 'invalidation flags');
      if (id >= MOCK_NESTED_DOMAIN_IOTLB_NUM) kfail('EINVAL', 'iotlb_id');
      if (flags & IOMMU_TEST_INVALIDATE_FLAG_ALL) domain.iotlb.fill(0);
      else domain.iotlb[id] = 0;
      done++;
    }
  } catch (e) {
    return { done, error: e };
  }
  return { done, error: null };
}

/**
 * The core's owner check and the driver's attach_dev (mock_domain_nop_attach,
 * prepare_domain_attach_device, viommu_attach_dev): EINVAL when the domain cannot serve the
 * device; else virtio-iommu finalises a domain attached for the first time, which takes the
 * IOMMU's geometry only now (an IOAS it joined before keeps what it reserved then).
 */
export function domainAttachDev(domain: IommuDomain | NestedDomain, dev: DeviceBackend): void {
  if (domain.owner !== dev.kind) kfail('EINVAL', 'domain of another IOMMU driver');
  if (dev.kind === 'mock') {
    if (domain.dirtyOps && dev.mockFlags & MOCK_DEV.NO_DIRTY)
      kfail('EINVAL', 'dirty domain, no-dirty device');
    return;
  }
  if ('iotlb' in domain) return; // unreachable: nested domains are the mock's
  const spec = dev.iommu!;
  if (domain.dirtyOps && !spec.dirty_tracking) kfail('EINVAL', 'dirty domain, IOMMU without dirty tracking');
  if (domain.maxAddr > spec.aperture_last + 1n) kfail('EINVAL', 'domain maps beyond the IOMMU address width');
  const pending = domain.pendingAperture;
  if (pending) {
    domain.apertureStart = pending.start;
    domain.apertureEnd = pending.end;
    domain.pendingAperture = null;
  }
}

/** ops->hw_info(): the driver's GET_HW_INFO payload and type (NONE and no data for a driver without the op). */
export function hwInfo(dev: DeviceBackend): { type: number; data: Uint8Array } {
  if (dev.kind === 'host' && !isVtd(dev.iommu!)) return { type: 0, data: new Uint8Array(0) };
  if (dev.kind === 'mock') {
    const data = new Uint8Array(8); // struct iommu_test_hw_info { flags; test_reg; }
    new DataView(data.buffer).setUint32(4, IOMMU_HW_INFO_SELFTEST_REGVAL, true);
    return { type: IOMMU_HW_INFO_TYPE_SELFTEST, data };
  }
  const data = new Uint8Array(24); // struct iommu_hw_info_vtd
  const v = new DataView(data.buffer);
  v.setUint32(0, IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, true); // intel_iommu_hw_info() always sets it in 6.12
  v.setBigUint64(8, dev.iommu!.cap_reg, true);
  v.setBigUint64(16, dev.iommu!.ecap_reg, true);
  return { type: IOMMU_HW_INFO_TYPE_INTEL_VTD, data };
}

/** struct iommufd_ioas */
export class Ioas extends IommufdObject {
  readonly type = 'ioas';
  readonly iopt: IoPagetable;
  /** hwpt_list: the paging HWPTs built on this IOAS (each holds a users reference). */
  readonly hwpts: HwptPaging[] = [];
  /** Accesses attached (each holds a users reference). */
  readonly accesses = new Set<Access>();

  constructor(mem: ProcessMemory) {
    super();
    this.iopt = new IoPagetable(mem);
  }
}

/** struct iommufd_hwpt_paging */
export class HwptPaging extends IommufdObject {
  readonly type = 'hwpt_paging';
  /** Made by an attach to an IOAS; destroyed with its last device. */
  autoDomain = false;
  /** Attached devices (users references beyond the table's own). */
  users = 0;
  /** Nested HWPTs built on this one (each holds a users reference too). */
  children = 0;
  /** False once destroyed (translators check it). */
  alive = true;
  /** enforce_cache_coherency: set at allocation for devices with IOMMU_CAP_ENFORCE_CACHE_COHERENCY. */
  enforceCacheCoherency = false;

  constructor(
    readonly ioas: Ioas,
    readonly domain: IommuDomain,
    readonly nestParent: boolean,
  ) {
    super();
  }
}

/** struct iommufd_hwpt_nested: a stage-1 domain on a NEST_PARENT paging HWPT. */
export class HwptNested extends IommufdObject {
  readonly type = 'hwpt_nested';
  /** Never automatic: only HWPT_ALLOC makes one. */
  readonly autoDomain = false;
  /** Attached devices (users references beyond the table's own). */
  users = 0;
  /** hwpt->fault: the fault queue given with FAULT_ID_VALID (holds a users reference on it). */
  fault: Fault | null = null;

  constructor(
    readonly parent: HwptPaging,
    readonly domain: NestedDomain,
  ) {
    super();
  }

  /** find_hwpt_paging()'s IOAS: the parent's holds the reserved regions of the attached devices. */
  get ioas(): Ioas {
    return this.parent.ioas;
  }
}

/** struct iommufd_hw_pagetable: what a device attaches to. */
export type Hwpt = HwptPaging | HwptNested;

/** struct iommufd_group: per context and iommu group. */
export class Igroup {
  /** The HWPT the group is attached to. */
  hwpt: Hwpt | null = null;
  /** device_list: the attached devices. */
  readonly devices: IommufdDevice[] = [];
  /** Every bound device of the group (their DMA follows the group's domain). */
  readonly bound = new Set<IommufdDevice>();

  constructor(readonly key: string) {}
}

/** struct iommufd_device */
export class IommufdDevice extends IommufdObject {
  readonly type = 'device';

  constructor(
    readonly dev: DeviceBackend,
    readonly igroup: Igroup,
  ) {
    super();
  }

  /** iommufd_device_is_attached() */
  get attached(): boolean {
    return this.igroup.devices.includes(this);
  }
}

/** A range pinned through a selftest access (struct selftest_access_item). */
export interface AccessItem {
  id: number;
  iova: bigint;
  length: bigint;
}

/** struct iommufd_access with the selftest's driver state (selftest_access). */
export class Access extends IommufdObject implements IoptAccess {
  readonly type = 'access';
  /** The IOAS pins come from (NULL while changing IOAS, to block new pins). */
  ioas: Ioas | null = null;
  /** The IOAS unpins go to (access->ioas_unpin), still the old one while changing. */
  ioasUnpin: Ioas | null = null;
  readonly iovaAlignment: bigint;
  readonly items: AccessItem[] = [];
  nextId = 0;
  /** Unpins an item's range (iommufd_access_unpin_pages), set by the owner. */
  unpin: (iova: bigint, length: bigint) => void = () => {};

  constructor(
    /** MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES: ops with pin support, PAGE_SIZE alignment. */
    readonly needsPin: boolean,
  ) {
    super();
    this.iovaAlignment = needsPin ? PAGE_SIZE : 1n;
  }

  /** iommufd_test_access_unmap(): drops every item intersecting [iova, iova + length). */
  unmap(iova: bigint, length: bigint): void {
    const last = iova + length - 1n;
    for (const item of [...this.items]) {
      if (iova > item.iova + item.length - 1n || last < item.iova) continue;
      this.items.splice(this.items.indexOf(item), 1);
      this.unpin(item.iova, item.length);
    }
  }
}

/** struct iommufd_fault: held by its fd while open and by the HWPTs using it. */
export class Fault extends IommufdObject {
  readonly type = 'fault';
  fileOpen = true;
  hwptUsers = 0;
}

/** struct selftest_obj (TYPE_IDEV): the mock device made by IOMMU_TEST_OP_MOCK_DOMAIN. */
export class SelftestObj extends IommufdObject {
  readonly type = 'selftest';

  constructor(readonly idev: IommufdDevice) {
    super();
  }
}

/** Any object of the table. */
export type AnyObject = Ioas | HwptPaging | HwptNested | IommufdDevice | Access | Fault | SelftestObj;

/** The object table (an xarray with XA_FLAGS_ALLOC1): ids from 1, the lowest free id first. */
export class ObjectTable {
  private readonly objs = new Map<number, AnyObject>();
  private readonly free: number[] = []; // a min-heap of released ids below `next`
  private next = 1;

  /** Number of objects. */
  get size(): number {
    return this.objs.size;
  }

  /** Reserves an id (xa_alloc). */
  allocId(): number {
    if (this.free.length) return heapPop(this.free);
    return this.next++;
  }

  /** Returns an id that was never published or whose object is gone. */
  releaseId(id: number): void {
    heapPush(this.free, id);
  }

  /** Publishes `obj` under its id (iommufd_object_finalize). */
  finalize(obj: AnyObject): void {
    this.objs.set(obj.id, obj);
  }

  /** Removes the object and frees its id. */
  remove(obj: AnyObject): void {
    if (this.objs.get(obj.id) === obj) {
      this.objs.delete(obj.id);
      this.releaseId(obj.id);
    }
  }

  /** iommufd_get_object(): ENOENT for an unknown id or another type. */
  get<T extends ObjType>(id: number, type?: T): Extract<AnyObject, { type: T }> {
    const o = this.objs.get(id);
    if (!o || (type && o.type !== type)) kfail('ENOENT', `no ${type ?? 'object'} ${id}`);
    return o as Extract<AnyObject, { type: T }>;
  }

  /** The object with this id, if any. */
  peek(id: number): AnyObject | undefined {
    return this.objs.get(id);
  }

  /** Every object, by ascending id (xa_for_each order). */
  all(): AnyObject[] {
    return [...this.objs.values()].sort((a, b) => a.id - b.id);
  }
}

function heapPush(h: number[], v: number): void {
  h.push(v);
  let i = h.length - 1;
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (h[p]! <= v) break;
    h[i] = h[p]!;
    i = p;
  }
  h[i] = v;
}

function heapPop(h: number[]): number {
  const top = h[0]!;
  const v = h.pop()!;
  if (h.length) {
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const c = l + 1 < h.length && h[l + 1]! < h[l]! ? l + 1 : l;
      if (h[c]! >= v) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = v;
  }
  return top;
}
