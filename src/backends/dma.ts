/**
 * Single DMA operations on a container: the one place that knows the ioctl semantics
 * of map, unmap and copy for both backends (QEMU's vfio_legacy_dma_map/unmap and
 * iommufd_backend_map_dma/unmap_dma/iommufd_cdev copy). Callers (backends, the data
 * plane workers) build on these; errors are SyscallError from the port.
 *
 * Each thread reuses one request buffer per ioctl kind: module state is per thread
 * (worker threads load their own copy), and the calls are synchronous, so a buffer is
 * never shared between two requests in flight.
 */
import { SyscallError } from '../port/errors.js';
import type { SyscallPort } from '../port/port.js';
import {
  ERRNO,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FLAGS,
  IOMMU_IOAS_UNMAP,
  IOMMU_UNMAP_ALL_LENGTH,
  VFIO_DMA_MAP_FLAG,
  VFIO_DMA_UNMAP_FLAG,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  iommu_ioas_copy,
  iommu_ioas_map,
  iommu_ioas_unmap,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
} from '../uapi/index.js';

/** Where DMA ops go: a type1 container fd, or an IOAS of an iommufd. */
export type DmaTarget =
  { kind: 'legacy'; containerFd: number } | { kind: 'iommufd'; iommufd: number; ioasId: number };

const ioasMap = iommu_ioas_map.view();
const ioasUnmap = iommu_ioas_unmap.view();
const ioasCopyReq = iommu_ioas_copy.view();
const type1Map = vfio_iommu_type1_dma_map.view();
const type1Unmap = vfio_iommu_type1_dma_unmap.view();

const IOAS_RW = IOMMU_IOAS_MAP_FLAGS.READABLE | IOMMU_IOAS_MAP_FLAGS.WRITEABLE;

/**
 * Maps [iova, iova + size) to the process memory at `vaddr`. iommufd: IOMMU_IOAS_MAP with
 * FIXED_IOVA; legacy: VFIO_IOMMU_MAP_DMA, and on EBUSY (a stale mapping left at that
 * IOVA, e.g. by a previous failed unmap) unmaps the range and retries once, like QEMU's
 * vfio_legacy_dma_map. Throws SyscallError.
 */
export function dmaMap(
  port: SyscallPort,
  t: DmaTarget,
  iova: bigint,
  size: bigint,
  vaddr: bigint,
  readonly: boolean,
): void {
  if (t.kind === 'iommufd') {
    const v = ioasMap.reset();
    v.flags = IOMMU_IOAS_MAP_FLAGS.FIXED_IOVA | (readonly ? IOMMU_IOAS_MAP_FLAGS.READABLE : IOAS_RW);
    v.ioas_id = t.ioasId;
    v.user_va = vaddr;
    v.length = size;
    v.iova = iova;
    port.ioctl(t.iommufd, IOMMU_IOAS_MAP, v.bytes);
    return;
  }
  const flags = VFIO_DMA_MAP_FLAG.READ | (readonly ? 0 : VFIO_DMA_MAP_FLAG.WRITE);
  try {
    legacyMap(port, t.containerFd, iova, size, vaddr, flags);
  } catch (e) {
    if (!(e instanceof SyscallError) || e.errno !== ERRNO.EBUSY) throw e;
    dmaUnmap(port, t, iova, size);
    legacyMap(port, t.containerFd, iova, size, vaddr, flags);
  }
}

function legacyMap(port: SyscallPort, fd: number, iova: bigint, size: bigint, vaddr: bigint, flags: number) {
  const v = type1Map.reset();
  v.flags = flags;
  v.vaddr = vaddr;
  v.iova = iova;
  v.size = size;
  port.ioctl(fd, VFIO_IOMMU_MAP_DMA, v.bytes);
}

/**
 * Unmaps [iova, iova + size); returns the bytes unmapped (the kernel's answer). iommufd
 * answers ENOENT when nothing is mapped there: that is 0 bytes, as in QEMU's
 * iommufd_backend_unmap_dma. Splitting a mapping is refused by both kernels (iommufd
 * ENOENT, type1 EINVAL); callers unmap whole mappings.
 */
export function dmaUnmap(port: SyscallPort, t: DmaTarget, iova: bigint, size: bigint): bigint {
  if (t.kind === 'iommufd') return ioasUnmapRaw(port, t, iova, size);
  const v = type1Unmap.reset();
  v.iova = iova;
  v.size = size;
  port.ioctl(t.containerFd, VFIO_IOMMU_UNMAP_DMA, v.bytes);
  return v.size;
}

function ioasUnmapRaw(
  port: SyscallPort,
  t: { iommufd: number; ioasId: number },
  iova: bigint,
  length: bigint,
) {
  const v = ioasUnmap.reset();
  v.ioas_id = t.ioasId;
  v.iova = iova;
  v.length = length;
  try {
    port.ioctl(t.iommufd, IOMMU_IOAS_UNMAP, v.bytes);
  } catch (e) {
    if (e instanceof SyscallError && e.errno === ERRNO.ENOENT) return 0n;
    throw e;
  }
  return v.length;
}

/**
 * Unmaps everything in the target; returns the bytes unmapped. Legacy:
 * VFIO_DMA_UNMAP_FLAG_ALL (iova and size 0); iommufd: iova 0, length U64_MAX.
 */
export function dmaUnmapAll(port: SyscallPort, t: DmaTarget): bigint {
  if (t.kind === 'iommufd') return ioasUnmapRaw(port, t, 0n, IOMMU_UNMAP_ALL_LENGTH);
  const v = type1Unmap.reset();
  v.flags = VFIO_DMA_UNMAP_FLAG.ALL;
  port.ioctl(t.containerFd, VFIO_IOMMU_UNMAP_DMA, v.bytes);
  return v.size;
}

/**
 * IOMMU_IOAS_COPY: maps in `dstIoas` at `iova` the pages that `srcIoas` maps at `iova`
 * (same IOVA in both, as QEMU uses it to share a mapping between IOASes without pinning
 * again). FIXED_IOVA, READABLE, and WRITEABLE unless `readonly`. Throws SyscallError.
 */
export function ioasCopy(
  port: SyscallPort,
  iommufd: number,
  dstIoas: number,
  srcIoas: number,
  iova: bigint,
  size: bigint,
  readonly: boolean,
): void {
  const v = ioasCopyReq.reset();
  v.flags = IOMMU_IOAS_MAP_FLAGS.FIXED_IOVA | (readonly ? IOMMU_IOAS_MAP_FLAGS.READABLE : IOAS_RW);
  v.dst_ioas_id = dstIoas;
  v.src_ioas_id = srcIoas;
  v.length = size;
  v.dst_iova = iova;
  v.src_iova = iova;
  port.ioctl(iommufd, IOMMU_IOAS_COPY, v.bytes);
}
