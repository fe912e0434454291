/** What the parts of the VFIO model share: the kernel, and the host's devices and groups. */
import type { SimKernel } from '../kernel.js';
import type { VfioGroup } from './group.js';
import type { VfioPciDevice } from './pci.js';

/** One simulated host's VFIO state (one per SimKernel). */
export interface VfioContext {
  readonly kernel: SimKernel;
  /** Every device bound to vfio-pci, in topology order (also the vfio_device_set order). */
  readonly devices: readonly VfioPciDevice[];
  /** vfio_group by IOMMU group number. */
  readonly groups: ReadonlyMap<number, VfioGroup>;
}

/** PAGE_SIZE of the simulated host (x86-64). */
export const PAGE_SIZE = 4096n;
