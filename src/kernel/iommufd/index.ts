/**
 * The iommufd driver of the simulated kernel: /dev/iommu, one IommufdFile per open.
 * See file.ts for the ioctls, io-pagetable.ts for the IOVA map, test-cmd.ts for the
 * selftest commands.
 */
import type { DriverFactory } from '../kernel.js';
import { IommufdFile, type IommufdShared } from './file.js';

export { IommufdFile } from './file.js';

/** The path the driver owns. */
export const IOMMUFD_PATH = '/dev/iommu';

/** Installs /dev/iommu into a SimKernel. */
export const iommufdDriver: DriverFactory = (kernel) => {
  kernel.vfs.addFile(IOMMUFD_PATH);
  const shared: IommufdShared = { groupOwners: new Map(), nextMockDev: 0 };
  return {
    open: (path) => (path === IOMMUFD_PATH ? new IommufdFile(kernel, shared) : null),
  };
};
