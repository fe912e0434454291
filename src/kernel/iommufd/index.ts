/**
 * The iommufd driver of the simulated kernel: /dev/iommu, one IommufdFile per open.
 * See file.ts for the ioctls, io-pagetable.ts for the IOVA map, test-cmd.ts for the
 * selftest commands.
 */
import type { DriverFactory } from '../kernel.js';
import { IommufdFile, type IommufdShared } from './file.js';

/** An open /dev/iommu (what kernel.file(fd) returns for it; the VFIO side uses its IommufdBinding). */
export { IommufdFile } from './file.js';

/** The path the driver owns. */
export const IOMMUFD_PATH = '/dev/iommu';

/** Options of the iommufd driver. */
export interface IommufdDriverOptions {
  /**
   * Whether the selftest's mock devices get the mock IOMMU. In 6.12 a device without a
   * fwspec is probed by the first IOMMU registered without a fwnode; intel-iommu registers
   * before the selftest, so behind VT-d a mock device gets no IOMMU and MOCK_DOMAIN is
   * EINVAL (as in the VT-d test VM). Behind virtio-iommu, or with no IOMMU, the mock one
   * serves it. Default: false for a VT-d topology (hw_info_type 1), true otherwise.
   */
  mockIommu?: boolean;
}

/** A driver factory installing /dev/iommu into a SimKernel. */
export function makeIommufdDriver(opts: IommufdDriverOptions = {}): DriverFactory {
  return (kernel) => {
    kernel.vfs.addFile(IOMMUFD_PATH);
    const shared: IommufdShared = {
      groupOwners: new Map(),
      nextMockDev: 0,
      mockIommu: opts.mockIommu ?? kernel.topology.iommu.hw_info_type !== 1,
    };
    return {
      open: (path) => (path === IOMMUFD_PATH ? new IommufdFile(kernel, shared) : null),
    };
  };
}

/** The iommufd driver as Linux 6.12 behaves on the topology's IOMMU. */
export const iommufdDriver: DriverFactory = makeIommufdDriver();
