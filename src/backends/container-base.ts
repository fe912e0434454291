/**
 * What every container backend shares, as QEMU's hw/vfio/container-base.c: the state a
 * container keeps whatever its kind, the capability gates of dirty tracking
 * (vfio_container_set_dirty_page_tracking, vfio_container_query_dirty_bitmap), and destroy
 * (every device closed, then the backend's own release). LegacyContainer and
 * IommufdContainer supply only what differs: their ioctls.
 */
import { bitmapBytes, HOST_PAGE, withScratch } from './common.js';
import type { ContainerInfo } from './container.js';
import type { VfioDevice } from './device.js';
import { VfioError } from './errors.js';
import type { VfioHost } from './host.js';

/** The base of the container backends (QEMU's VFIOContainerBase). */
export abstract class ContainerBase {
  readonly devices: VfioDevice[] = [];
  info: ContainerInfo = {
    pgsizes: HOST_PAGE,
    iovaRanges: [],
    dmaMaxMappings: null,
    dirtyPagesSupported: false,
  };
  dirtyPagesStarted = false;
  destroyed = false;

  constructor(protected readonly host: VfioHost) {}

  /** How errors name the container ("legacy container fd 7", "iommufd IOAS 2"). */
  abstract describe(): string;

  /**
   * The fd that is the container's (reliability row 23): legacy its /dev/vfio/vfio, iommufd
   * its object's /dev/iommu, whose loss loses every IOAS in it.
   */
  protected abstract get watched(): {
    readonly lost: VfioError | null;
    fdUsable(): boolean;
    markLost(cause: unknown): unknown;
  };

  /** Why the container's fd is lost (errno EBADF), or null. */
  get lost(): VfioError | null {
    return this.watched.lost;
  }

  /** Whether the fd is still the file the backend opened (and not lost); marks it lost when not. */
  fdUsable(): boolean {
    return this.watched.fdUsable();
  }

  /** Marks the fd lost: an ioctl on it answered EBADF. */
  markLost(cause: unknown): void {
    this.watched.markLost(cause);
  }

  /** Starts or stops dirty page tracking; a no-op when unsupported or already in that state. */
  setDirtyPageTracking(start: boolean): void {
    if (!this.info.dirtyPagesSupported || this.dirtyPagesStarted === start) return;
    this.setDirtyTracking(start);
    this.dirtyPagesStarted = start;
  }

  /**
   * The dirty bitmap of [iova, iova + size) at `pageSize` granularity: bit i (byte i>>3,
   * bit i&7) = page i. Without tracking every page reads dirty (QEMU: perpetually dirty).
   */
  queryDirtyBitmap(iova: bigint, size: bigint, pageSize: bigint): Uint8Array {
    const bytes = bitmapBytes(size, pageSize);
    if (!this.info.dirtyPagesSupported || !this.dirtyPagesStarted) return new Uint8Array(bytes).fill(0xff);
    try {
      return withScratch(this.host.port, bytes, (va, mem) => {
        this.readDirtyBitmap(iova, size, pageSize, va);
        return mem.slice(0, bytes);
      });
    } catch (e) {
      throw VfioError.wrap(e, { op: 'query_dirty_bitmap', iova, size, target: this.describe() });
    }
  }

  /** Closes every device, then releases the backend's own resources; throws the first error. */
  destroy(): void {
    const errors: unknown[] = [];
    for (const dev of [...this.devices]) {
      try {
        dev.close();
      } catch (e) {
        errors.push(e);
      }
    }
    try {
      this.release();
    } catch (e) {
      errors.push(e);
    }
    if (errors.length) throw VfioError.wrap(errors[0], { op: 'destroy', target: this.describe() });
  }

  /** The backend's ioctls that start or stop tracking (called only when supported and changing). */
  protected abstract setDirtyTracking(start: boolean): void;
  /** The backend's ioctls that write the bitmap to `va` (called only while tracking). */
  protected abstract readDirtyBitmap(iova: bigint, size: bigint, pageSize: bigint, va: bigint): void;
  /** What destroy leaves to the backend once the devices are closed. */
  protected abstract release(): void;
}
