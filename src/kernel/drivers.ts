/** The drivers a default simulated kernel runs: iommufd and VFIO (groups, container, PCI devices). */
import type { DriverFactory } from './kernel.js';
import { iommufdDriver } from './iommufd/index.js';
import { vfioDriver } from './vfio/driver.js';

/** Every driver of the default simulated kernel. */
export const DEFAULT_DRIVERS: readonly DriverFactory[] = [iommufdDriver, vfioDriver];
