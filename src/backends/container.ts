/**
 * The container ops table: QEMU's VFIOIOMMUClass (include/hw/vfio/vfio-container.h) as a
 * TypeScript interface, implemented by LegacyContainer (type1 over /dev/vfio/vfio) and
 * IommufdContainer (an IOAS of a /dev/iommu). A container belongs to one address space;
 * its devices share its DMA mappings.
 */
import type { DmaTarget } from './dma.js';
import type { VfioDevice } from './device.js';
import type { IovaRange } from '../uapi/iommufd.js';
import type { VfioError } from './errors.js';

/** What a container can do (QEMU's VFIOContainer base-class fields). */
export interface ContainerInfo {
  /** Page sizes the IOMMU supports (bitmap; the lowest set bit is the mapping granule). */
  pgsizes: bigint;
  /** IOVA ranges a mapping may use (outside them the kernel answers EINVAL). */
  iovaRanges: IovaRange[];
  /** Mappings the container may still hold (legacy: DMA_AVAIL cap, else 65535); null: no limit (iommufd). */
  dmaMaxMappings: number | null;
  /** Whether the container itself can track dirty pages (type1 migration cap; iommufd DIRTY HWPTs). */
  dirtyPagesSupported: boolean;
}

/** The backend ops of one container (QEMU's VFIOIOMMUClass, grouped by concern as there). */
export interface ContainerBackend {
  /** Which backend. */
  readonly kind: 'legacy' | 'iommufd';
  /** The address space the container serves. */
  readonly space: string;
  /** Page sizes, IOVA ranges, mapping limit, dirty tracking (refreshed after attaches). */
  readonly info: ContainerInfo;
  /** Devices attached, in attach order. */
  readonly devices: readonly VfioDevice[];
  /** Whether dirty page tracking is on. */
  readonly dirtyPagesStarted: boolean;
  /** True once destroyed (the last device left, or destroy()). */
  readonly destroyed: boolean;
  /** "iommufd IOAS 2" / "legacy container fd 7": where errors say they happened. */
  describe(): string;
  /**
   * Why the container's fd (legacy: the container; iommufd: its object's /dev/iommu) is lost:
   * closed behind the engine (EBADF), so nothing is sent to that number any more and the kernel
   * drops the mappings when the devices, which still hold the file, are closed. Null while fine.
   */
  readonly lost: VfioError | null;
  /** Whether the fd is still the file the backend opened (and not lost); marks it lost when not. */
  fdUsable(): boolean;
  /** Marks the fd lost: an ioctl on it answered EBADF. */
  markLost(cause: unknown): void;

  // --- basic feature
  /** Attaches an opened device (legacy: its group joins; iommufd: HWPT attach). Throws VfioError. */
  attachDevice(dev: VfioDevice): void;
  /** Detaches a device and closes its fd; the container is destroyed when its last device leaves. */
  detachDevice(dev: VfioDevice): void;
  /** Maps [iova, iova + size) to process memory at vaddr. Throws VfioError (op dma_map). */
  dmaMap(iova: bigint, size: bigint, vaddr: bigint, readonly: boolean): void;
  /** Unmaps [iova, iova + size), or everything with unmapAll; returns the bytes unmapped. */
  dmaUnmap(iova: bigint, size: bigint, opts?: { unmapAll?: boolean }): bigint;
  /** What the data plane needs to issue DMA ioctls for this container from a worker thread. */
  dataplaneTarget(): DmaTarget;
  /**
   * The IOAS to IOMMU_IOAS_COPY from when `other` replays into this container: its IOAS id
   * when both are IOASes of one iommufd object and it is not destroyed; else null (type1 has
   * no copy).
   */
  copySourceIoas(other: ContainerBackend): number | null;

  // --- migration feature
  /** Starts or stops dirty page tracking; a no-op when unsupported or already in that state. */
  setDirtyPageTracking(start: boolean): void;
  /**
   * The dirty bitmap of [iova, iova + size) at `pageSize` granularity: bit i (byte i>>3,
   * bit i&7) = page i. Without tracking support every page reads dirty (QEMU: perpetually dirty).
   */
  queryDirtyBitmap(iova: bigint, size: bigint, pageSize: bigint): Uint8Array;

  // --- PCI specific
  /** Bus/slot reset of `dev` and every device it shares the reset with (all must be owned). */
  pciHotReset(dev: VfioDevice): void;

  /** Detaches every device and releases the container's fds and kernel objects. */
  destroy(): void;
}
