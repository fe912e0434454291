/**
 * The VFIO type1 ioctls on an iommufd fd (drivers/iommu/iommufd/vfio_compat.c): an
 * iommufd used as a VFIO container works on its compat IOAS (IOMMU_VFIO_IOAS). Modelled:
 * GET_API_VERSION, CHECK_EXTENSION, SET_IOMMU, IOMMU_GET_INFO (with the DMA_AVAIL and
 * IOVA_RANGE capabilities), MAP_DMA and UNMAP_DMA. Not modelled: the area cuts that
 * type1 v1 (SET_IOMMU TYPE1, huge pages off) allows in UNMAP_DMA; such an unmap fails
 * like v2's. Every other number is ENOTTY, as -ENOIOCTLCMD becomes.
 */
import { kfail } from '../errno.js';
import type { IoctlIn } from '../types.js';
import {
  VFIO_CHECK_EXTENSION,
  VFIO_EXTENSION,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
} from '../../uapi/vfio.js';
import type { IommufdFile } from './file.js';
import { IOMMU_READ, IOMMU_WRITE } from './io-pagetable.js';
import type { Ioas } from './objects.js';
import { PAGE_SIZE, U64_MAX } from './pages.js';
import { offsetofend } from './ucmd.js';

const DMA_MAP_READ = 1;
const DMA_MAP_WRITE = 2;
const DMA_UNMAP_ALL = 2;
const INFO_PGSIZES = 1;
const INFO_CAPS = 2;

function compatIoas(ctx: IommufdFile): Ioas {
  return ctx.vfioIoas ?? kfail('ENODEV', 'no compat IOAS');
}

// copy_from_user() of the leading `minsz` bytes of the caller's struct.
function userStruct(arg: IoctlIn, minsz: number): Uint8Array {
  if (!arg.bytes || arg.bytes.byteLength < minsz) kfail('EFAULT');
  return arg.bytes;
}

/** iommufd_vfio_ioctl() */
export function vfioCompatIoctl(ctx: IommufdFile, request: number, arg: IoctlIn): number {
  switch (request) {
    case VFIO_GET_API_VERSION.request:
      return 0;
    case VFIO_CHECK_EXTENSION.request:
      return checkExtension(ctx, arg.value);
    case VFIO_SET_IOMMU.request:
      return setIommu(ctx, arg.value);
    case VFIO_IOMMU_GET_INFO.request:
      return getInfo(ctx, arg);
    case VFIO_IOMMU_MAP_DMA.request:
      return mapDma(ctx, arg);
    case VFIO_IOMMU_UNMAP_DMA.request:
      return unmapDma(ctx, arg);
    default:
      return kfail('ENOTTY', `ioctl 0x${request.toString(16)}`);
  }
}

function checkExtension(ctx: IommufdFile, type: number): number {
  switch (type) {
    case VFIO_EXTENSION.TYPE1_IOMMU:
    case VFIO_EXTENSION.TYPE1v2_IOMMU:
    case VFIO_EXTENSION.UNMAP_ALL:
      return ctx.noIommuMode ? 0 : 1;
    case VFIO_EXTENSION.DMA_CC_IOMMU: {
      // iommufd_vfio_cc_iommu(): its error (no compat IOAS) is the ioctl's.
      const ioas = compatIoas(ctx);
      return ioas.hwpts.every((h) => h.enforceCacheCoherency) ? 1 : 0;
    }
    default: // NOIOMMU (no CONFIG_VFIO_NOIOMMU), TYPE1_NESTING, UPDATE_VADDR, unknown
      return 0;
  }
}

function setIommu(ctx: IommufdFile, type: number): number {
  if ((type !== VFIO_EXTENSION.TYPE1_IOMMU && type !== VFIO_EXTENSION.TYPE1v2_IOMMU) || ctx.noIommuMode) {
    kfail('EINVAL', 'IOMMU type');
  }
  const ioas = compatIoas(ctx);
  // Type1 v1 may unmap inside a mapping: emulated by giving up huge IOPTEs.
  if (type === VFIO_EXTENSION.TYPE1_IOMMU) ioas.iopt.disableLarge();
  return 0;
}

function mapDma(ctx: IommufdFile, arg: IoctlIn): number {
  const minsz = offsetofend(vfio_iommu_type1_dma_map, 'size');
  const m = vfio_iommu_type1_dma_map.view(userStruct(arg, minsz));
  if (m.argsz < minsz || m.flags & ~(DMA_MAP_READ | DMA_MAP_WRITE)) kfail('EINVAL', 'argsz or flags');
  const prot = (m.flags & DMA_MAP_READ ? IOMMU_READ : 0) | (m.flags & DMA_MAP_WRITE ? IOMMU_WRITE : 0);
  const ioas = compatIoas(ctx);
  ioas.iopt.mapUserPages(m.vaddr, m.size, m.iova, false, prot);
  return 0;
}

function unmapDma(ctx: IommufdFile, arg: IoctlIn): number {
  const minsz = offsetofend(vfio_iommu_type1_dma_unmap, 'size');
  const user = userStruct(arg, minsz);
  const u = vfio_iommu_type1_dma_unmap.view(user);
  if (u.argsz < minsz || u.flags & ~DMA_UNMAP_ALL) kfail('EINVAL', 'argsz or flags');
  const ioas = compatIoas(ctx);
  const out = { unmapped: 0n };
  let err: unknown = null;
  if (u.flags & DMA_UNMAP_ALL) {
    if (u.iova !== 0n || u.size !== 0n) kfail('EINVAL', 'UNMAP_ALL with a range');
    ioas.iopt.unmapAll(out);
  } else {
    try {
      // Unlike IOMMU_IOAS_UNMAP, nothing unmapped is a success with size 0.
      ioas.iopt.unmapIova(u.iova, u.size, out);
    } catch (e) {
      err = e;
    }
  }
  u.size = out.unmapped; // copied back even when the unmap failed
  if (err) throw err;
  return 0;
}

// iommufd_get_pagesizes(): the page sizes every domain supports, at least PAGE_SIZE and the IOAS alignment.
function pageSizes(ioas: Ioas): bigint {
  let bitmap = U64_MAX;
  for (const d of ioas.iopt.domains) bitmap &= d.pgsizeBitmap;
  if (bitmap & (PAGE_SIZE - 1n)) bitmap = (bitmap & ~(PAGE_SIZE - 1n) & U64_MAX) | PAGE_SIZE;
  return bitmap > ioas.iopt.iovaAlignment ? bitmap : ioas.iopt.iovaAlignment;
}

function getInfo(ctx: IommufdFile, arg: IoctlIn): number {
  const minsz0 = offsetofend(vfio_iommu_type1_info, 'iova_pgsizes');
  const user = userStruct(arg, minsz0);
  const argsz = vfio_iommu_type1_info.view(user).argsz;
  if (argsz < minsz0) kfail('EINVAL', 'argsz');
  const minsz = Math.min(argsz, vfio_iommu_type1_info.size);
  const ioas = compatIoas(ctx);
  const info = vfio_iommu_type1_info.view(new Uint8Array(vfio_iommu_type1_info.size));
  info.argsz = argsz;
  info.flags = INFO_PGSIZES;
  info.iova_pgsizes = pageSizes(ioas);
  // The capability chain goes right after the struct, as far as argsz (and the caller's buffer) reach.
  const put = (at: number, data: Uint8Array) => {
    if (at + data.byteLength > user.byteLength) kfail('EFAULT', 'capability beyond the caller buffer');
    user.set(data, at);
  };
  const header = (id: number, next = 0) => {
    const b = new Uint8Array(8);
    const v = new DataView(b.buffer);
    v.setUint16(0, id, true);
    v.setUint16(2, 1, true);
    v.setUint32(4, next, true);
    return b;
  };
  const dmaAvail = (at: number, avail: number) => {
    if (avail >= 12) {
      const b = new Uint8Array(12);
      b.set(header(3));
      new DataView(b.buffer).setUint32(8, 0xffff_ffff, true); // U32_MAX, not type1's U16_MAX
      put(at, b);
    }
    return 12;
  };
  const iovaRange = (at: number, avail: number) => {
    let nr = 0;
    for (const r of ioas.iopt.iovaRanges()) {
      if (avail >= 16 + (nr + 1) * 16) {
        const b = new Uint8Array(16);
        const v = new DataView(b.buffer);
        v.setBigUint64(0, r.start, true);
        v.setBigUint64(8, r.last, true);
        put(at + 16 + nr * 16, b);
      }
      nr++;
    }
    if (avail >= 16 + nr * 16) {
      const b = new Uint8Array(16);
      b.set(header(1));
      new DataView(b.buffer).setUint32(8, nr, true);
      put(at, b);
    }
    return 16 + nr * 16;
  };
  let total = vfio_iommu_type1_info.size;
  let lastCap: number | null = null;
  for (const fill of [dmaAvail, iovaRange]) {
    let size = argsz > total ? fill(total, argsz - total) : fill(0, 0);
    size = Math.ceil(size / 8) * 8;
    if (lastCap !== null && argsz >= total) {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, total, true);
      put(lastCap + 4, b);
    }
    lastCap = total;
    total += size;
  }
  if (argsz >= total) info.cap_offset = vfio_iommu_type1_info.size;
  info.argsz = total;
  info.flags = info.flags | INFO_CAPS;
  user.set(info.bytes.subarray(0, minsz));
  return 0;
}
