/**
 * NullPort: a port whose DMA ioctls succeed at once, without a kernel behind them, so that
 * what the engine costs on its own can be measured apart from any kernel model (`vfio-engine
 * bench --kernel null`). IOMMU_IOAS_MAP, IOMMU_IOAS_UNMAP, IOMMU_IOAS_COPY, VFIO_IOMMU_MAP_DMA
 * and VFIO_IOMMU_UNMAP_DMA return 0; an unmap reports the range asked for as unmapped, and an
 * unmap-all reports 0 bytes (the port keeps no table). Everything else (opening groups and
 * devices, binding, attaching, IOVA ranges) goes to the port it wraps, normally the simulated
 * kernel, so that an engine sets up exactly as it does there.
 */
import { IOMMU_IOAS_COPY, IOMMU_IOAS_MAP, IOMMU_IOAS_UNMAP, iommu_ioas_unmap } from '../uapi/iommufd.js';
import type { Ioctl } from '../uapi/layout.js';
import {
  VFIO_DMA_UNMAP_FLAG,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  vfio_iommu_type1_dma_unmap,
} from '../uapi/vfio.js';
import type { IoctlArg, Rlimit, SyscallPort } from './port.js';

// Byte offsets read in place: no view, no BigInt per call.
const IOAS_UNMAP_LENGTH = iommu_ioas_unmap.offsetOf.length;
const TYPE1_UNMAP_FLAGS = vfio_iommu_type1_dma_unmap.offsetOf.flags;
const TYPE1_UNMAP_SIZE = vfio_iommu_type1_dma_unmap.offsetOf.size;

/** The simulated kernel (or any port) with its DMA ioctls answered at once. */
export class NullPort implements SyscallPort {
  readonly kind: SyscallPort['kind'];

  /** Wraps `inner`, which serves everything but the DMA ioctls. */
  constructor(readonly inner: SyscallPort) {
    this.kind = inner.kind;
  }

  ioctl(fd: number, req: Ioctl, arg?: IoctlArg): number {
    switch (req.request) {
      case IOMMU_IOAS_MAP.request:
      case IOMMU_IOAS_COPY.request:
      case VFIO_IOMMU_MAP_DMA.request:
        return 0;
      case IOMMU_IOAS_UNMAP.request: {
        const b = arg as Uint8Array;
        // iova 0, length U64_MAX: unmap-all, of which nothing is known here.
        if (allOnes(b, IOAS_UNMAP_LENGTH)) b.fill(0, IOAS_UNMAP_LENGTH, IOAS_UNMAP_LENGTH + 8);
        return 0;
      }
      case VFIO_IOMMU_UNMAP_DMA.request: {
        const b = arg as Uint8Array;
        if (b[TYPE1_UNMAP_FLAGS]! & VFIO_DMA_UNMAP_FLAG.ALL)
          b.fill(0, TYPE1_UNMAP_SIZE, TYPE1_UNMAP_SIZE + 8);
        return 0;
      }
      default:
        return this.inner.ioctl(fd, req, arg);
    }
  }

  open(path: string, flags: number): number {
    return this.inner.open(path, flags);
  }
  close(fd: number): void {
    this.inner.close(fd);
  }
  mmap(length: bigint, prot: number, flags: number, fd: number, offset?: bigint): bigint {
    return this.inner.mmap(length, prot, flags, fd, offset);
  }
  munmap(addr: bigint, length: bigint): void {
    this.inner.munmap(addr, length);
  }
  memfdCreate(name: string, flags?: number): number {
    return this.inner.memfdCreate(name, flags);
  }
  ftruncate(fd: number, length: bigint): void {
    this.inner.ftruncate(fd, length);
  }
  pread(fd: number, buf: Uint8Array, offset: bigint): number {
    return this.inner.pread(fd, buf, offset);
  }
  pwrite(fd: number, buf: Uint8Array, offset: bigint): number {
    return this.inner.pwrite(fd, buf, offset);
  }
  getrlimit(resource: number): Rlimit {
    return this.inner.getrlimit(resource);
  }
  setrlimit(resource: number, limit: Rlimit): void {
    this.inner.setrlimit(resource, limit);
  }
  memory(addr: bigint, length: number): Uint8Array {
    return this.inner.memory(addr, length);
  }
  readdir(path: string): string[] {
    return this.inner.readdir(path);
  }
  readlink(path: string): string {
    return this.inner.readlink(path);
  }
  readFile(path: string): string {
    return this.inner.readFile(path);
  }
  exists(path: string): boolean {
    return this.inner.exists(path);
  }
}

function allOnes(b: Uint8Array, at: number): boolean {
  for (let i = at; i < at + 8; i++) if (b[i] !== 0xff) return false;
  return true;
}
