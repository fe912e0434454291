/**
 * IOMMU_TEST_CMD (drivers/iommu/iommufd/selftest.c, CONFIG_IOMMUFD_TEST): mock devices
 * with mock domains, read-backs of what a domain maps (MD_CHECK_MAP) and of page pin
 * counts (MD_CHECK_REFS), extra reserved IOVA, injected dirty bits, and in-kernel
 * accesses (CREATE_ACCESS, ACCESS_PAGES, ACCESS_RW, ...), the mock IOTLB of nested mock
 * domains (MD_CHECK_IOTLB). Not modelled: I/O page faults (TRIGGER_IOPF reports nothing,
 * as on a device without a fault-capable domain).
 */
import { KernelErrno, kfail } from '../errno.js';
import type { ProcessMemory } from '../memory.js';
import {
  IOMMU_TEST_OP,
  iommu_test_cmd_access_pages,
  iommu_test_cmd_access_replace_ioas,
  iommu_test_cmd_access_rw,
  iommu_test_cmd_add_reserved,
  iommu_test_cmd_check_iotlb,
  iommu_test_cmd_check_map,
  iommu_test_cmd_check_refs,
  iommu_test_cmd_create_access,
  iommu_test_cmd_destroy_access_pages,
  iommu_test_cmd_dirty,
  iommu_test_cmd_memory_limit,
  iommu_test_cmd_mock_domain_flags,
  iommu_test_cmd_mock_domain_replace,
} from '../../uapi/iommufd-test.js';
import { AccessFile } from './anon.js';
import type { IommufdFile } from './file.js';
import type { IoPagetable } from './io-pagetable.js';
import {
  MOCK_DEV,
  MOCK_IO_PAGE_SIZE,
  MOCK_NESTED_DOMAIN_IOTLB_NUM,
  mockDevice,
  SelftestObj,
  type Access,
} from './objects.js';
import { PAGE_SIZE, U64_MAX } from './pages.js';
import { copyFromUser, copyToUser, type Ucmd } from './ucmd.js';

/** MOCK_FLAGS_ACCESS_SYZ: IOVAs given as "nth area + offset" (syzkaller mode). */
export const MOCK_FLAGS_ACCESS_SYZ = 1 << 16;
const MOCK_FLAGS_ACCESS_WRITE = 1;
const MOCK_ACCESS_RW_WRITE = 1;
const MOCK_ACCESS_RW_SLOW_PATH = 1 << 2;
const MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES = 1;
const EBADFD = 77;
const EBADE = 52;
const SZ_16M = 16n << 20n;

/** __iommufd_test_syz_conv_iova(): the low u32 picks the nth area, the high u32 is an offset into it; 0 if none. */
export function syzConvIova(iopt: IoPagetable, iova: bigint): bigint {
  let nth = iova & 0xffff_ffffn;
  const offset = iova >> 32n;
  for (const area of iopt.areas) {
    if (nth === 0n) return area.start + offset;
    nth--;
  }
  return 0n;
}

/** Offset of the first unmapped byte of [addr, addr + length), or null when all are mapped. */
function firstUnmapped(mem: ProcessMemory, addr: bigint, length: bigint): bigint | null {
  if (mem.covering(addr, length)) return null;
  let lo = 0n; // [addr, addr + lo) is mapped
  let hi = length; // [addr, addr + hi) is not
  while (hi - lo > 1n) {
    const mid = (lo + hi) / 2n;
    if (mem.covering(addr, mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

// iommufd_access_get(): the selftest access behind an fd, else EBADFD.
function accessOf(ctx: IommufdFile, fd: number): { access: Access; ctx: IommufdFile } {
  const f = ctx.kernel.file(fd);
  if (!(f instanceof AccessFile)) throw new KernelErrno(EBADFD, `fd ${fd} is not a selftest access`);
  return { access: f.access, ctx: f.owner as IommufdFile };
}

/** iommufd_test(): runs one IOMMU_TEST_OP_*; unknown ops are EOPNOTSUPP. */
export function iommufdTest(ctx: IommufdFile, u: Ucmd): number {
  const hdr = iommu_test_cmd_check_map.view(u.cmd);
  switch (hdr.op) {
    case IOMMU_TEST_OP.ADD_RESERVED:
      return addReserved(ctx, u);
    case IOMMU_TEST_OP.MOCK_DOMAIN:
    case IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS:
      return mockDomain(ctx, u);
    case IOMMU_TEST_OP.MOCK_DOMAIN_REPLACE: {
      const c = iommu_test_cmd_mock_domain_replace.view(u.cmd);
      const sobj = ctx.objs.get(c.id, 'selftest');
      c.pt_id = ctx.changePt(sobj.idev, c.pt_id, true);
      u.respond();
      return 0;
    }
    case IOMMU_TEST_OP.MD_CHECK_MAP:
      return checkMap(ctx, u);
    case IOMMU_TEST_OP.MD_CHECK_REFS:
      return checkRefs(ctx, u);
    case IOMMU_TEST_OP.MD_CHECK_IOTLB: {
      // iommufd_test_md_check_iotlb(): ENOENT for an id that is no nested HWPT
      const c = iommu_test_cmd_check_iotlb.view(u.cmd);
      const hwpt = ctx.objs.get(c.id, 'hwpt_nested');
      if (c.iotlb_id >= MOCK_NESTED_DOMAIN_IOTLB_NUM || hwpt.domain.iotlb[c.iotlb_id] !== c.iotlb)
        kfail('EINVAL', 'mock IOTLB entry');
      return 0;
    }
    case IOMMU_TEST_OP.CREATE_ACCESS:
      return createAccess(ctx, u);
    case IOMMU_TEST_OP.ACCESS_REPLACE_IOAS: {
      const c = iommu_test_cmd_access_replace_ioas.view(u.cmd);
      const { access, ctx: owner } = accessOf(ctx, c.id);
      if (!access.ioas) kfail('ENOENT', 'access not attached');
      owner.accessChangeIoas(access, owner.objs.get(c.ioas_id, 'ioas'));
      return 0;
    }
    case IOMMU_TEST_OP.ACCESS_PAGES:
      return accessPages(ctx, u);
    case IOMMU_TEST_OP.ACCESS_RW:
      return accessRw(ctx, u);
    case IOMMU_TEST_OP.DESTROY_ACCESS_PAGES: {
      const c = iommu_test_cmd_destroy_access_pages.view(u.cmd);
      const { access } = accessOf(ctx, c.id);
      const item = access.items.find((x) => x.id === c.access_pages_id);
      if (!item) kfail('ENOENT', 'no such access item');
      access.items.splice(access.items.indexOf(item), 1);
      access.unpin(item.iova, item.length);
      return 0;
    }
    case IOMMU_TEST_OP.SET_TEMP_MEMORY_LIMIT:
      // Sizes the kernel's temporary page batches: no visible effect here beyond the check.
      if (iommu_test_cmd_memory_limit.view(u.cmd).limit < 12) kfail('EINVAL');
      return 0;
    case IOMMU_TEST_OP.DIRTY:
      return dirty(ctx, u);
    case IOMMU_TEST_OP.TRIGGER_IOPF: {
      const devId = new DataView(u.cmd.buffer, u.cmd.byteOffset + 16, 4).getUint32(0, true);
      const idev = ctx.objs.get(devId, 'device');
      if (idev.dev.kind !== 'mock') kfail('EINVAL', 'not a mock device');
      return 0; // no fault-capable domain: iommu_report_device_fault() drops it
    }
    default:
      return kfail('EOPNOTSUPP', `test op ${hdr.op}`);
  }
}

function addReserved(ctx: IommufdFile, u: Ucmd): number {
  const c = iommu_test_cmd_add_reserved.view(u.cmd);
  if (!c.length) kfail('EINVAL');
  const last = c.start + c.length - 1n;
  if (last > U64_MAX) kfail('EOVERFLOW');
  ctx.objs.get(c.id, 'ioas').iopt.reserveIova(c.start, last, null);
  return 0;
}

// iommufd_test_mock_domain(): a selftest object, a mock device bound to the context, attached to `id`.
function mockDomain(ctx: IommufdFile, u: Ucmd): number {
  const c = iommu_test_cmd_mock_domain_flags.view(u.cmd);
  const sobjId = ctx.objs.allocId();
  const flags = c.op === IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS ? c.dev_flags : 0;
  if (flags & ~(MOCK_DEV.NO_DIRTY | MOCK_DEV.HUGE_IOVA)) {
    ctx.objs.releaseId(sobjId);
    kfail('EINVAL', 'mock device flags');
  }
  const n = ctx.shared.nextMockDev++;
  if (!ctx.shared.mockIommu) {
    // Probed by VT-d, which has no DMAR unit for it: no IOMMU, so no IOMMU_CAP_CACHE_COHERENCY.
    ctx.objs.releaseId(sobjId);
    kfail('EINVAL', 'iommufd_device_bind: the mock device has no IOMMU next to VT-d');
  }
  const idev = ctx.deviceBind(mockDevice(n, flags), false);
  let ptId: number;
  try {
    ptId = ctx.changePt(idev, c.id, false);
  } catch (e) {
    ctx.deviceUnbind(idev);
    ctx.objs.releaseId(sobjId);
    throw e;
  }
  const sobj = new SelftestObj(idev);
  sobj.id = sobjId;
  c.out_hwpt_id = ptId;
  c.out_stdev_id = sobjId;
  c.out_idev_id = idev.id;
  u.respond();
  ctx.objs.finalize(sobj);
  return 0;
}

// iommufd_test_md_check_pa(): every MOCK_IO_PAGE_SIZE chunk of [iova, iova + length) maps the same
// chunk of [uptr, ...). The model compares user addresses where the kernel compares PFNs.
function checkMap(ctx: IommufdFile, u: Ucmd): number {
  const c = iommu_test_cmd_check_map.view(u.cmd);
  const { iova, length, uptr } = c;
  if (
    iova % MOCK_IO_PAGE_SIZE ||
    length % MOCK_IO_PAGE_SIZE ||
    uptr % MOCK_IO_PAGE_SIZE ||
    uptr + length > U64_MAX
  ) {
    kfail('EINVAL');
  }
  const hwpt = ctx.objs.get(c.id, 'hwpt_paging');
  if (hwpt.domain.owner !== 'mock') kfail('EINVAL', 'not a mock domain');
  if (!length) return 0;
  // The first chunk whose mapping differs: a gap, or an area pointing elsewhere.
  let bad: bigint | null = null;
  const { segs, done } = hwpt.ioas.iopt.contig(iova, iova + length - 1n);
  for (const s of segs) {
    if (s.area.va(s.cur) !== uptr + (s.cur - iova)) {
      bad = s.cur - iova;
      break;
    }
  }
  if (bad === null && !done) bad = segs.length ? segs[segs.length - 1]!.segLast + 1n - iova : 0n;
  // get_user_pages_fast() of each chunk's page comes first in the kernel's loop.
  const fault = firstUnmapped(ctx.kernel.mem, uptr, length);
  if (fault !== null && (bad === null || fault <= bad)) kfail('EFAULT');
  if (bad !== null) kfail('EINVAL', `IOVA 0x${(iova + bad).toString(16)} maps something else`);
  return 0;
}

// iommufd_test_md_check_refs(): each page of [uptr, uptr + length) is pinned exactly `refs` times (EIO).
function checkRefs(ctx: IommufdFile, u: Ucmd): number {
  const c = iommu_test_cmd_check_refs.view(u.cmd);
  const { length, uptr, refs } = c;
  if (length % PAGE_SIZE || uptr % PAGE_SIZE || uptr + length > U64_MAX) kfail('EINVAL');
  const mem = ctx.kernel.mem;
  const fault = firstUnmapped(mem, uptr, length);
  const checked = fault ?? length;
  if (checked) {
    const n = mem.uniformPinCount(uptr, checked);
    if (n !== refs) kfail('EIO', `pin count ${n ?? 'varies'}, expected ${refs}`);
  }
  if (fault !== null) kfail('EFAULT');
  return 0;
}

function createAccess(ctx: IommufdFile, u: Ucmd): number {
  const c = iommu_test_cmd_create_access.view(u.cmd);
  if (c.flags & ~MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) kfail('EOPNOTSUPP', 'access flags');
  const access = ctx.accessCreate((c.flags & MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) !== 0, c.id);
  c.out_access_fd = ctx.accessFile(access);
  u.respond();
  return 0;
}

function accessPages(ctx: IommufdFile, u: Ucmd): number {
  const c = iommu_test_cmd_access_pages.view(u.cmd);
  let { iova } = c;
  const { length, uptr, flags } = c;
  if (length > SZ_16M) kfail('ENOMEM', 'beyond the selftest limit');
  if (flags & ~(MOCK_FLAGS_ACCESS_WRITE | MOCK_FLAGS_ACCESS_SYZ)) kfail('EOPNOTSUPP', 'flags');
  const { access, ctx: owner } = accessOf(ctx, c.id);
  if (!access.needsPin) kfail('EOPNOTSUPP', 'access cannot pin pages');
  if (flags & MOCK_FLAGS_ACCESS_SYZ) iova = access.ioas ? syzConvIova(access.ioas.iopt, iova) : 0n;
  const runs = owner.accessPin(access, iova, length, (flags & MOCK_FLAGS_ACCESS_WRITE) !== 0);
  if (uptr) {
    // iommufd_test_check_pages(): the pinned pages are the pages at uptr (page by page).
    let va = uptr - (iova % PAGE_SIZE);
    let fail: KernelErrno | null = null;
    for (const r of runs) {
      if (fail) break;
      for (let i = 0n; i < r.npages; i++, va += PAGE_SIZE) {
        if (!ctx.kernel.mem.covering(va, 1n)) fail = new KernelErrno(14, 'EFAULT');
        else if (va !== r.uptr + i * PAGE_SIZE) fail = new KernelErrno(EBADE, 'another page');
        if (fail) break;
      }
    }
    if (fail) {
      access.unpin(iova, length);
      throw fail;
    }
  }
  const item = { id: access.nextId++, iova, length };
  access.items.push(item);
  c.out_access_pages_id = item.id;
  u.respond();
  return 0;
}

function accessRw(ctx: IommufdFile, u: Ucmd): number {
  const c = iommu_test_cmd_access_rw.view(u.cmd);
  let { iova } = c;
  const { length, uptr, flags } = c;
  if (length > SZ_16M) kfail('ENOMEM', 'beyond the selftest limit');
  if (flags & ~(MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH | MOCK_FLAGS_ACCESS_SYZ)) kfail('EOPNOTSUPP');
  const { access, ctx: owner } = accessOf(ctx, c.id);
  const mem = ctx.kernel.mem;
  const write = (flags & MOCK_ACCESS_RW_WRITE) !== 0;
  const tmp = write ? copyFromUser(mem, uptr, Number(length)) : new Uint8Array(Number(length));
  if (flags & MOCK_FLAGS_ACCESS_SYZ) iova = access.ioas ? syzConvIova(access.ioas.iopt, iova) : 0n;
  owner.accessRw(access, iova, tmp, write);
  if (!write) copyToUser(mem, uptr, tmp);
  return 0;
}

// iommufd_test_dirty(): sets MOCK_PFN_DIRTY_IOVA on the mapped entries the user bitmap selects.
function dirty(ctx: IommufdFile, u: Ucmd): number {
  const c = iommu_test_cmd_dirty.view(u.cmd);
  const { iova, length, page_size: ps, uptr } = c;
  if (!ps || !length || iova % ps || length % ps || !uptr) kfail('EINVAL');
  const max = length / ps;
  if (max > SZ_16M * 8n) kfail('EOVERFLOW');
  const hwpt = ctx.objs.get(c.id, 'hwpt_paging');
  const d = hwpt.domain;
  if (d.owner !== 'mock') kfail('EINVAL', 'not a mock domain');
  if (!d.dirtyTracking) kfail('EINVAL', 'dirty tracking is off');
  const bitmap = copyFromUser(ctx.kernel.mem, uptr, Number((max + 7n) / 8n));
  let count = 0n;
  for (let byte = 0; byte < bitmap.length; byte++) {
    const b = bitmap[byte]!;
    if (!b) continue;
    for (let bit = 0; bit < 8; bit++) {
      const i = BigInt(byte * 8 + bit);
      if (!(b & (1 << bit)) || i >= max) continue;
      // The selftest indexes the mock's per-MOCK_IO_PAGE_SIZE entries by (iova + i * page_size) / page_size.
      const idx = (iova + i * ps) / ps;
      if (!hwpt.ioas.iopt.areas.find(idx * MOCK_IO_PAGE_SIZE)) continue;
      d.dirty.add(idx);
      count++;
    }
  }
  c.out_nr_dirty = count;
  u.respond();
  return 0;
}
