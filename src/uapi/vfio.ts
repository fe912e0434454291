/**
 * include/uapi/linux/vfio.h as of Linux 6.12: the parts the engine uses (container and
 * type1 IOMMU, groups, devices and regions, PCI hot reset, device features for DMA logging,
 * and the cdev binding to iommufd). Names mirror the header.
 */
import { _IO, constants, ioctl, struct } from './layout.js';

/** VFIO_TYPE = ';' */
export const VFIO_TYPE = 0x3b;
/** VFIO_BASE: VFIO ioctls are _IO(VFIO_TYPE, VFIO_BASE + n). */
export const VFIO_BASE = 100;
/** VFIO_API_VERSION, the answer of VFIO_GET_API_VERSION. */
export const VFIO_API = constants('VFIO_', { API_VERSION: 0 });

/** Extensions for VFIO_CHECK_EXTENSION, and IOMMU types for VFIO_SET_IOMMU. */
export const VFIO_EXTENSION = constants('VFIO_', {
  TYPE1_IOMMU: 1,
  SPAPR_TCE_IOMMU: 2,
  TYPE1v2_IOMMU: 3,
  DMA_CC_IOMMU: 4,
  EEH: 5,
  TYPE1_NESTING_IOMMU: 6,
  SPAPR_TCE_v2_IOMMU: 7,
  NOIOMMU_IOMMU: 8,
  UNMAP_ALL: 9,
  UPDATE_VADDR: 10,
});

/** struct vfio_info_cap_header: the link of every capability chain. */
export const vfio_info_cap_header = struct('vfio_info_cap_header', {
  id: 'u16',
  version: 'u16',
  next: 'u32',
});

/** VFIO_GROUP_FLAGS_* */
export const VFIO_GROUP_FLAGS = constants('VFIO_GROUP_FLAGS_', { VIABLE: 1 << 0, CONTAINER_SET: 1 << 1 });

/** struct vfio_group_status */
export const vfio_group_status = struct('vfio_group_status', { argsz: 'u32', flags: 'u32' });

/** VFIO_DEVICE_FLAGS_* */
export const VFIO_DEVICE_FLAGS = constants('VFIO_DEVICE_FLAGS_', {
  RESET: 1 << 0,
  PCI: 1 << 1,
  PLATFORM: 1 << 2,
  AMBA: 1 << 3,
  CCW: 1 << 4,
  AP: 1 << 5,
  FSL_MC: 1 << 6,
  CAPS: 1 << 7,
  CDX: 1 << 8,
});

/** struct vfio_device_info (24 bytes: `pad` is present in 6.12) */
export const vfio_device_info = struct('vfio_device_info', {
  argsz: 'u32',
  flags: 'u32',
  num_regions: 'u32',
  num_irqs: 'u32',
  cap_offset: 'u32',
  pad: 'u32',
});

/** VFIO_REGION_INFO_FLAG_* */
export const VFIO_REGION_INFO_FLAG = constants('VFIO_REGION_INFO_FLAG_', {
  READ: 1 << 0,
  WRITE: 1 << 1,
  MMAP: 1 << 2,
  CAPS: 1 << 3,
});

/** VFIO_REGION_INFO_CAP_* */
export const VFIO_REGION_INFO_CAP = constants('VFIO_REGION_INFO_CAP_', {
  SPARSE_MMAP: 1,
  TYPE: 2,
  MSIX_MAPPABLE: 3,
});

/** struct vfio_region_info */
export const vfio_region_info = struct('vfio_region_info', {
  argsz: 'u32',
  flags: 'u32',
  index: 'u32',
  cap_offset: 'u32',
  size: 'u64',
  offset: 'u64',
});

/** Region indexes of a vfio-pci device (VFIO_PCI_*_REGION_INDEX). */
export const VFIO_PCI_REGION = constants('VFIO_PCI_', {
  BAR0_REGION_INDEX: 0,
  BAR1_REGION_INDEX: 1,
  BAR2_REGION_INDEX: 2,
  BAR3_REGION_INDEX: 3,
  BAR4_REGION_INDEX: 4,
  BAR5_REGION_INDEX: 5,
  ROM_REGION_INDEX: 6,
  CONFIG_REGION_INDEX: 7,
  VGA_REGION_INDEX: 8,
  NUM_REGIONS: 9,
});

/** IRQ indexes of a vfio-pci device (VFIO_PCI_*_IRQ_INDEX). */
export const VFIO_PCI_IRQ = constants('VFIO_PCI_', {
  INTX_IRQ_INDEX: 0,
  MSI_IRQ_INDEX: 1,
  MSIX_IRQ_INDEX: 2,
  ERR_IRQ_INDEX: 3,
  REQ_IRQ_INDEX: 4,
  NUM_IRQS: 5,
});

/** VFIO_IRQ_INFO_* */
export const VFIO_IRQ_INFO = constants('VFIO_IRQ_INFO_', {
  EVENTFD: 1 << 0,
  MASKABLE: 1 << 1,
  AUTOMASKED: 1 << 2,
  NORESIZE: 1 << 3,
});

/** struct vfio_irq_info */
export const vfio_irq_info = struct('vfio_irq_info', {
  argsz: 'u32',
  flags: 'u32',
  index: 'u32',
  count: 'u32',
});

/** VFIO_PCI_HOT_RESET_FLAG_* */
export const VFIO_PCI_HOT_RESET_FLAG = constants('VFIO_PCI_HOT_RESET_FLAG_', {
  DEV_ID: 1 << 0,
  DEV_ID_OWNED: 1 << 1,
});

/** VFIO_PCI_DEVID_OWNED / VFIO_PCI_DEVID_NOT_OWNED (as the u32 the kernel writes: -1 is 0xffffffff). */
export const VFIO_PCI_DEVID = constants('VFIO_PCI_DEVID_', { OWNED: 0, NOT_OWNED: -1 });

/** struct vfio_pci_dependent_device: group_id (legacy) or devid (cdev) share the first u32. */
export const vfio_pci_dependent_device = struct('vfio_pci_dependent_device', {
  group_id: 'u32',
  devid: { type: 'u32', at: 0 },
  segment: 'u16',
  bus: 'u8',
  devfn: 'u8',
});

/** struct vfio_pci_hot_reset_info, followed by `count` vfio_pci_dependent_device. */
export const vfio_pci_hot_reset_info = struct('vfio_pci_hot_reset_info', {
  argsz: 'u32',
  flags: 'u32',
  count: 'u32',
});

/** struct vfio_pci_hot_reset, followed by `count` s32 group fds (zero with iommufd cdevs). */
export const vfio_pci_hot_reset = struct('vfio_pci_hot_reset', { argsz: 'u32', flags: 'u32', count: 'u32' });

/** VFIO_DEVICE_FEATURE_* flags and feature indexes. */
export const VFIO_DEVICE_FEATURE_FLAGS = constants('VFIO_DEVICE_FEATURE_', {
  MASK: 0xffff,
  GET: 1 << 16,
  SET: 1 << 17,
  PROBE: 1 << 18,
  PCI_VF_TOKEN: 0,
  MIGRATION: 1,
  MIG_DEVICE_STATE: 2,
  LOW_POWER_ENTRY: 3,
  LOW_POWER_ENTRY_WITH_WAKEUP: 4,
  LOW_POWER_EXIT: 5,
  DMA_LOGGING_START: 6,
  DMA_LOGGING_STOP: 7,
  DMA_LOGGING_REPORT: 8,
  MIG_DATA_SIZE: 9,
  BUS_MASTER: 10,
});

/** struct vfio_device_feature, followed by the feature's data. */
export const vfio_device_feature = struct('vfio_device_feature', { argsz: 'u32', flags: 'u32' });

/** struct vfio_device_feature_dma_logging_control */
export const vfio_device_feature_dma_logging_control = struct('vfio_device_feature_dma_logging_control', {
  page_size: 'u64',
  num_ranges: 'u32',
  __reserved: 'u32',
  ranges: 'u64',
});

/** struct vfio_device_feature_dma_logging_range */
export const vfio_device_feature_dma_logging_range = struct('vfio_device_feature_dma_logging_range', {
  iova: 'u64',
  length: 'u64',
});

/** struct vfio_device_feature_dma_logging_report */
export const vfio_device_feature_dma_logging_report = struct('vfio_device_feature_dma_logging_report', {
  iova: 'u64',
  length: 'u64',
  page_size: 'u64',
  bitmap: 'u64',
});

/** struct vfio_device_bind_iommufd */
export const vfio_device_bind_iommufd = struct('vfio_device_bind_iommufd', {
  argsz: 'u32',
  flags: 'u32',
  iommufd: 's32',
  out_devid: 'u32',
});

/** struct vfio_device_attach_iommufd_pt (12 bytes in 6.12; pasid came later) */
export const vfio_device_attach_iommufd_pt = struct('vfio_device_attach_iommufd_pt', {
  argsz: 'u32',
  flags: 'u32',
  pt_id: 'u32',
});

/** struct vfio_device_detach_iommufd_pt */
export const vfio_device_detach_iommufd_pt = struct('vfio_device_detach_iommufd_pt', {
  argsz: 'u32',
  flags: 'u32',
});

/** VFIO_IOMMU_INFO_* */
export const VFIO_IOMMU_INFO = constants('VFIO_IOMMU_INFO_', { PGSIZES: 1 << 0, CAPS: 1 << 1 });

/** Capability ids of the type1 info chain. */
export const VFIO_IOMMU_TYPE1_INFO_CAP = constants('VFIO_IOMMU_TYPE1_INFO_', {
  CAP_IOVA_RANGE: 1,
  CAP_MIGRATION: 2,
  DMA_AVAIL: 3,
});

/** struct vfio_iommu_type1_info, followed by its capability chain when argsz allows. */
export const vfio_iommu_type1_info = struct('vfio_iommu_type1_info', {
  argsz: 'u32',
  flags: 'u32',
  iova_pgsizes: 'u64',
  cap_offset: 'u32',
  pad: 'u32',
});

/** struct vfio_iova_range: an inclusive [start, end] range. */
export const vfio_iova_range = struct('vfio_iova_range', { start: 'u64', end: 'u64' });

/** struct vfio_iommu_type1_info_cap_iova_range, followed by `nr_iovas` vfio_iova_range. */
export const vfio_iommu_type1_info_cap_iova_range = struct('vfio_iommu_type1_info_cap_iova_range', {
  header_id: { type: 'u16', c: 'header.id' },
  header_version: { type: 'u16', c: 'header.version' },
  header_next: { type: 'u32', c: 'header.next' },
  nr_iovas: 'u32',
  reserved: 'u32',
});

/** struct vfio_iommu_type1_info_cap_migration */
export const vfio_iommu_type1_info_cap_migration = struct('vfio_iommu_type1_info_cap_migration', {
  header_id: { type: 'u16', c: 'header.id' },
  header_version: { type: 'u16', c: 'header.version' },
  header_next: { type: 'u32', c: 'header.next' },
  flags: 'u32',
  pgsize_bitmap: 'u64',
  max_dirty_bitmap_size: 'u64',
});

/** struct vfio_iommu_type1_info_dma_avail */
export const vfio_iommu_type1_info_dma_avail = struct('vfio_iommu_type1_info_dma_avail', {
  header_id: { type: 'u16', c: 'header.id' },
  header_version: { type: 'u16', c: 'header.version' },
  header_next: { type: 'u32', c: 'header.next' },
  avail: 'u32',
});

/** VFIO_DMA_MAP_FLAG_* */
export const VFIO_DMA_MAP_FLAG = constants('VFIO_DMA_MAP_FLAG_', {
  READ: 1 << 0,
  WRITE: 1 << 1,
  VADDR: 1 << 2,
});

/** struct vfio_iommu_type1_dma_map */
export const vfio_iommu_type1_dma_map = struct('vfio_iommu_type1_dma_map', {
  argsz: 'u32',
  flags: 'u32',
  vaddr: 'u64',
  iova: 'u64',
  size: 'u64',
});

/** struct vfio_bitmap */
export const vfio_bitmap = struct('vfio_bitmap', { pgsize: 'u64', size: 'u64', data: 'u64' });

/** VFIO_DMA_UNMAP_FLAG_* */
export const VFIO_DMA_UNMAP_FLAG = constants('VFIO_DMA_UNMAP_FLAG_', {
  GET_DIRTY_BITMAP: 1 << 0,
  ALL: 1 << 1,
  VADDR: 1 << 2,
});

/** struct vfio_iommu_type1_dma_unmap, followed by a vfio_bitmap with GET_DIRTY_BITMAP. */
export const vfio_iommu_type1_dma_unmap = struct('vfio_iommu_type1_dma_unmap', {
  argsz: 'u32',
  flags: 'u32',
  iova: 'u64',
  size: 'u64',
});

/** VFIO_IOMMU_DIRTY_PAGES_FLAG_* */
export const VFIO_IOMMU_DIRTY_PAGES_FLAG = constants('VFIO_IOMMU_DIRTY_PAGES_FLAG_', {
  START: 1 << 0,
  STOP: 1 << 1,
  GET_BITMAP: 1 << 2,
});

/** struct vfio_iommu_type1_dirty_bitmap, followed by vfio_iommu_type1_dirty_bitmap_get with GET_BITMAP. */
export const vfio_iommu_type1_dirty_bitmap = struct('vfio_iommu_type1_dirty_bitmap', {
  argsz: 'u32',
  flags: 'u32',
});

/** struct vfio_iommu_type1_dirty_bitmap_get */
export const vfio_iommu_type1_dirty_bitmap_get = struct('vfio_iommu_type1_dirty_bitmap_get', {
  iova: 'u64',
  size: 'u64',
  bitmap_pgsize: { type: 'u64', c: 'bitmap.pgsize' },
  bitmap_size: { type: 'u64', c: 'bitmap.size' },
  bitmap_data: { type: 'u64', c: 'bitmap.data' },
});

const io = (n: number) => _IO(VFIO_TYPE, VFIO_BASE + n);

/** VFIO_GET_API_VERSION (container) */
export const VFIO_GET_API_VERSION = ioctl('VFIO_GET_API_VERSION', io(0), 'container', 'none');
/** VFIO_CHECK_EXTENSION (container or group: the extension id by value) */
export const VFIO_CHECK_EXTENSION = ioctl('VFIO_CHECK_EXTENSION', io(1), 'container', 'value');
/** VFIO_SET_IOMMU (container: the IOMMU type by value) */
export const VFIO_SET_IOMMU = ioctl('VFIO_SET_IOMMU', io(2), 'container', 'value');
/** VFIO_GROUP_GET_STATUS */
export const VFIO_GROUP_GET_STATUS = ioctl('VFIO_GROUP_GET_STATUS', io(3), 'group', vfio_group_status);
/** VFIO_GROUP_SET_CONTAINER (group: pointer to the container fd) */
export const VFIO_GROUP_SET_CONTAINER = ioctl('VFIO_GROUP_SET_CONTAINER', io(4), 'group', 'int-ptr');
/** VFIO_GROUP_UNSET_CONTAINER */
export const VFIO_GROUP_UNSET_CONTAINER = ioctl('VFIO_GROUP_UNSET_CONTAINER', io(5), 'group', 'none');
/** VFIO_GROUP_GET_DEVICE_FD (group: the device name, e.g. "0000:00:03.0") */
export const VFIO_GROUP_GET_DEVICE_FD = ioctl('VFIO_GROUP_GET_DEVICE_FD', io(6), 'group', 'string');
/** VFIO_DEVICE_GET_INFO */
export const VFIO_DEVICE_GET_INFO = ioctl('VFIO_DEVICE_GET_INFO', io(7), 'device', vfio_device_info);
/** VFIO_DEVICE_GET_REGION_INFO */
export const VFIO_DEVICE_GET_REGION_INFO = ioctl(
  'VFIO_DEVICE_GET_REGION_INFO',
  io(8),
  'device',
  vfio_region_info,
  ['index'],
);
/** VFIO_DEVICE_GET_IRQ_INFO */
export const VFIO_DEVICE_GET_IRQ_INFO = ioctl('VFIO_DEVICE_GET_IRQ_INFO', io(9), 'device', vfio_irq_info, [
  'index',
]);
/** VFIO_DEVICE_RESET */
export const VFIO_DEVICE_RESET = ioctl('VFIO_DEVICE_RESET', io(11), 'device', 'none');
/** VFIO_DEVICE_GET_PCI_HOT_RESET_INFO (device; same number as VFIO_IOMMU_GET_INFO on a container) */
export const VFIO_DEVICE_GET_PCI_HOT_RESET_INFO = ioctl(
  'VFIO_DEVICE_GET_PCI_HOT_RESET_INFO',
  io(12),
  'device',
  vfio_pci_hot_reset_info,
  ['argsz', 'count'],
);
/** VFIO_DEVICE_PCI_HOT_RESET (device; same number as VFIO_IOMMU_MAP_DMA on a container) */
export const VFIO_DEVICE_PCI_HOT_RESET = ioctl(
  'VFIO_DEVICE_PCI_HOT_RESET',
  io(13),
  'device',
  vfio_pci_hot_reset,
  ['count'],
);
/** VFIO_DEVICE_FEATURE (device; same number as VFIO_IOMMU_DIRTY_PAGES on a container) */
export const VFIO_DEVICE_FEATURE = ioctl('VFIO_DEVICE_FEATURE', io(17), 'device', vfio_device_feature, [
  'flags',
]);
/** VFIO_DEVICE_BIND_IOMMUFD (cdev) */
export const VFIO_DEVICE_BIND_IOMMUFD = ioctl(
  'VFIO_DEVICE_BIND_IOMMUFD',
  io(18),
  'device',
  vfio_device_bind_iommufd,
  ['iommufd'],
);
/** VFIO_DEVICE_ATTACH_IOMMUFD_PT (cdev) */
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT = ioctl(
  'VFIO_DEVICE_ATTACH_IOMMUFD_PT',
  io(19),
  'device',
  vfio_device_attach_iommufd_pt,
  ['pt_id'],
);
/** VFIO_DEVICE_DETACH_IOMMUFD_PT (cdev) */
export const VFIO_DEVICE_DETACH_IOMMUFD_PT = ioctl(
  'VFIO_DEVICE_DETACH_IOMMUFD_PT',
  io(20),
  'device',
  vfio_device_detach_iommufd_pt,
);
/** VFIO_IOMMU_GET_INFO (container, type1) */
export const VFIO_IOMMU_GET_INFO = ioctl('VFIO_IOMMU_GET_INFO', io(12), 'container', vfio_iommu_type1_info, [
  'argsz',
]);
/** VFIO_IOMMU_MAP_DMA (container, type1) */
export const VFIO_IOMMU_MAP_DMA = ioctl('VFIO_IOMMU_MAP_DMA', io(13), 'container', vfio_iommu_type1_dma_map, [
  'flags',
  'iova',
  'size',
  'vaddr',
]);
/** VFIO_IOMMU_UNMAP_DMA (container, type1) */
export const VFIO_IOMMU_UNMAP_DMA = ioctl(
  'VFIO_IOMMU_UNMAP_DMA',
  io(14),
  'container',
  vfio_iommu_type1_dma_unmap,
  ['flags', 'iova', 'size'],
);
/** VFIO_IOMMU_DIRTY_PAGES (container, type1) */
export const VFIO_IOMMU_DIRTY_PAGES = ioctl(
  'VFIO_IOMMU_DIRTY_PAGES',
  io(17),
  'container',
  vfio_iommu_type1_dirty_bitmap,
  ['flags'],
);
