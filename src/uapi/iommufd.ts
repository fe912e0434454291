/**
 * include/uapi/linux/iommufd.h as of Linux 6.12 (IOMMU_DESTROY 0x3b80 .. IOMMU_FAULT_QUEUE_ALLOC 0x3b8e).
 * Names mirror the header; flags are grouped by their C prefix.
 */
import { _IO, constants, ioctl, struct } from './layout.js';

/** IOMMUFD_TYPE = ';' */
export const IOMMUFD_TYPE = 0x3b;

/** The ioctl command numbers (enum IOMMUFD_CMD_*). */
export const IOMMUFD_CMD = constants('IOMMUFD_CMD_', {
  BASE: 0x80,
  DESTROY: 0x80,
  IOAS_ALLOC: 0x81,
  IOAS_ALLOW_IOVAS: 0x82,
  IOAS_COPY: 0x83,
  IOAS_IOVA_RANGES: 0x84,
  IOAS_MAP: 0x85,
  IOAS_UNMAP: 0x86,
  OPTION: 0x87,
  VFIO_IOAS: 0x88,
  HWPT_ALLOC: 0x89,
  GET_HW_INFO: 0x8a,
  HWPT_SET_DIRTY_TRACKING: 0x8b,
  HWPT_GET_DIRTY_BITMAP: 0x8c,
  HWPT_INVALIDATE: 0x8d,
  FAULT_QUEUE_ALLOC: 0x8e,
});

/** struct iommu_destroy */
export const iommu_destroy = struct('iommu_destroy', { size: 'u32', id: 'u32' });

/** struct iommu_ioas_alloc */
export const iommu_ioas_alloc = struct('iommu_ioas_alloc', { size: 'u32', flags: 'u32', out_ioas_id: 'u32' });

/** struct iommu_iova_range: an inclusive [start, last] range. */
export const iommu_iova_range = struct('iommu_iova_range', { start: 'u64', last: 'u64' });

/**
 * An inclusive IOVA range [start, last] as the engine passes it around: what
 * IOMMU_IOAS_IOVA_RANGES (struct iommu_iova_range) and type1's VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
 * (struct vfio_iova_range) report a container may map.
 */
export interface IovaRange {
  readonly start: bigint;
  readonly last: bigint;
}

/** struct iommu_ioas_iova_ranges */
export const iommu_ioas_iova_ranges = struct('iommu_ioas_iova_ranges', {
  size: 'u32',
  ioas_id: 'u32',
  num_iovas: 'u32',
  __reserved: 'u32',
  allowed_iovas: 'u64',
  out_iova_alignment: 'u64',
});

/** struct iommu_ioas_allow_iovas */
export const iommu_ioas_allow_iovas = struct('iommu_ioas_allow_iovas', {
  size: 'u32',
  ioas_id: 'u32',
  num_iovas: 'u32',
  __reserved: 'u32',
  allowed_iovas: 'u64',
});

/** enum iommufd_ioas_map_flags */
export const IOMMU_IOAS_MAP_FLAGS = constants('IOMMU_IOAS_MAP_', {
  FIXED_IOVA: 1 << 0,
  WRITEABLE: 1 << 1,
  READABLE: 1 << 2,
});

/** struct iommu_ioas_map */
export const iommu_ioas_map = struct('iommu_ioas_map', {
  size: 'u32',
  flags: 'u32',
  ioas_id: 'u32',
  __reserved: 'u32',
  user_va: 'u64',
  length: 'u64',
  iova: 'u64',
});

/** struct iommu_ioas_copy */
export const iommu_ioas_copy = struct('iommu_ioas_copy', {
  size: 'u32',
  flags: 'u32',
  dst_ioas_id: 'u32',
  src_ioas_id: 'u32',
  length: 'u64',
  dst_iova: 'u64',
  src_iova: 'u64',
});

/** struct iommu_ioas_unmap */
export const iommu_ioas_unmap = struct('iommu_ioas_unmap', {
  size: 'u32',
  ioas_id: 'u32',
  iova: 'u64',
  length: 'u64',
});

/** enum iommufd_option */
export const IOMMU_OPTION_ID = constants('IOMMU_OPTION_', { RLIMIT_MODE: 0, HUGE_PAGES: 1 });
/** enum iommufd_option_ops */
export const IOMMU_OPTION_OP = constants('IOMMU_OPTION_OP_', { SET: 0, GET: 1 });

/** struct iommu_option */
export const iommu_option = struct('iommu_option', {
  size: 'u32',
  option_id: 'u32',
  op: 'u16',
  __reserved: 'u16',
  object_id: 'u32',
  val64: 'u64',
});

/** enum iommufd_vfio_ioas_op */
export const IOMMU_VFIO_IOAS_OP = constants('IOMMU_VFIO_IOAS_', { GET: 0, SET: 1, CLEAR: 2 });

/** struct iommu_vfio_ioas */
export const iommu_vfio_ioas = struct('iommu_vfio_ioas', {
  size: 'u32',
  ioas_id: 'u32',
  op: 'u16',
  __reserved: 'u16',
});

/** enum iommufd_hwpt_alloc_flags */
export const IOMMU_HWPT_ALLOC_FLAGS = constants('IOMMU_HWPT_', {
  ALLOC_NEST_PARENT: 1 << 0,
  ALLOC_DIRTY_TRACKING: 1 << 1,
  FAULT_ID_VALID: 1 << 2,
});

/** enum iommu_hwpt_data_type */
export const IOMMU_HWPT_DATA = constants('IOMMU_HWPT_DATA_', { NONE: 0, VTD_S1: 1 });

/** struct iommu_hwpt_vtd_s1 */
export const iommu_hwpt_vtd_s1 = struct('iommu_hwpt_vtd_s1', {
  flags: 'u64',
  pgtbl_addr: 'u64',
  addr_width: 'u32',
  __reserved: 'u32',
});

/** struct iommu_hwpt_alloc (48 bytes since 6.11: fault_id) */
export const iommu_hwpt_alloc = struct('iommu_hwpt_alloc', {
  size: 'u32',
  flags: 'u32',
  dev_id: 'u32',
  pt_id: 'u32',
  out_hwpt_id: 'u32',
  __reserved: 'u32',
  data_type: 'u32',
  data_len: 'u32',
  data_uptr: 'u64',
  fault_id: 'u32',
  __reserved2: 'u32',
});

/** enum iommu_hw_info_type */
export const IOMMU_HW_INFO_TYPE = constants('IOMMU_HW_INFO_TYPE_', { NONE: 0, INTEL_VTD: 1 });

/** enum iommufd_hw_capabilities */
export const IOMMU_HW_CAP = constants('IOMMU_HW_CAP_', {
  DIRTY_TRACKING: 1 << 0,
  PCI_PASID_EXEC: 1 << 1,
  PCI_PASID_PRIV: 1 << 2,
});

/** enum iommu_hw_info_vtd_flags */
export const IOMMU_HW_INFO_VTD = constants('IOMMU_HW_INFO_VTD_', { ERRATA_772415_SPR17: 1 << 0 });

/** struct iommu_hw_info_vtd (the INTEL_VTD payload of GET_HW_INFO) */
export const iommu_hw_info_vtd = struct('iommu_hw_info_vtd', {
  flags: 'u32',
  __reserved: 'u32',
  cap_reg: 'u64',
  ecap_reg: 'u64',
});

/** struct iommu_hw_info */
export const iommu_hw_info = struct('iommu_hw_info', {
  size: 'u32',
  flags: 'u32',
  dev_id: 'u32',
  data_len: 'u32',
  data_uptr: 'u64',
  out_data_type: 'u32',
  out_max_pasid_log2: 'u8',
  __reserved: { type: 'u8', count: 3 },
  out_capabilities: 'u64',
});

/** enum iommufd_hwpt_set_dirty_tracking_flags */
export const IOMMU_HWPT_DIRTY_TRACKING = constants('IOMMU_HWPT_DIRTY_TRACKING_', { ENABLE: 1 });

/** struct iommu_hwpt_set_dirty_tracking */
export const iommu_hwpt_set_dirty_tracking = struct('iommu_hwpt_set_dirty_tracking', {
  size: 'u32',
  flags: 'u32',
  hwpt_id: 'u32',
  __reserved: 'u32',
});

/** enum iommufd_hwpt_get_dirty_bitmap_flags */
export const IOMMU_HWPT_GET_DIRTY_BITMAP_FLAGS = constants('IOMMU_HWPT_GET_DIRTY_BITMAP_', { NO_CLEAR: 1 });

/** struct iommu_hwpt_get_dirty_bitmap: bit (iova/page_size)%64 of data[(iova/page_size)/64] per page. */
export const iommu_hwpt_get_dirty_bitmap = struct('iommu_hwpt_get_dirty_bitmap', {
  size: 'u32',
  hwpt_id: 'u32',
  flags: 'u32',
  __reserved: 'u32',
  iova: 'u64',
  length: 'u64',
  page_size: 'u64',
  data: 'u64',
});

/** enum iommu_hwpt_invalidate_data_type */
export const IOMMU_HWPT_INVALIDATE_DATA = constants('IOMMU_HWPT_INVALIDATE_DATA_', { VTD_S1: 0 });

/** struct iommu_hwpt_invalidate */
export const iommu_hwpt_invalidate = struct('iommu_hwpt_invalidate', {
  size: 'u32',
  hwpt_id: 'u32',
  data_uptr: 'u64',
  data_type: 'u32',
  entry_len: 'u32',
  entry_num: 'u32',
  __reserved: 'u32',
});

/** struct iommu_hwpt_pgfault (read from a fault queue fd) */
export const iommu_hwpt_pgfault = struct('iommu_hwpt_pgfault', {
  flags: 'u32',
  dev_id: 'u32',
  pasid: 'u32',
  grpid: 'u32',
  perm: 'u32',
  __reserved: 'u32',
  addr: 'u64',
  length: 'u32',
  cookie: 'u32',
});

/** struct iommu_hwpt_page_response (written to a fault queue fd) */
export const iommu_hwpt_page_response = struct('iommu_hwpt_page_response', { cookie: 'u32', code: 'u32' });

/** struct iommu_fault_alloc */
export const iommu_fault_alloc = struct('iommu_fault_alloc', {
  size: 'u32',
  flags: 'u32',
  out_fault_id: 'u32',
  out_fault_fd: 'u32',
});

const io = (cmd: number) => _IO(IOMMUFD_TYPE, cmd);

/** IOMMU_DESTROY */
export const IOMMU_DESTROY = ioctl('IOMMU_DESTROY', io(IOMMUFD_CMD.DESTROY), 'iommufd', iommu_destroy, [
  'id',
]);
/** IOMMU_IOAS_ALLOC */
export const IOMMU_IOAS_ALLOC = ioctl(
  'IOMMU_IOAS_ALLOC',
  io(IOMMUFD_CMD.IOAS_ALLOC),
  'iommufd',
  iommu_ioas_alloc,
  ['flags'],
);
/** IOMMU_IOAS_ALLOW_IOVAS */
export const IOMMU_IOAS_ALLOW_IOVAS = ioctl(
  'IOMMU_IOAS_ALLOW_IOVAS',
  io(IOMMUFD_CMD.IOAS_ALLOW_IOVAS),
  'iommufd',
  iommu_ioas_allow_iovas,
  ['ioas_id', 'num_iovas'],
);
/** IOMMU_IOAS_COPY */
export const IOMMU_IOAS_COPY = ioctl(
  'IOMMU_IOAS_COPY',
  io(IOMMUFD_CMD.IOAS_COPY),
  'iommufd',
  iommu_ioas_copy,
  ['flags', 'src_ioas_id', 'src_iova', 'dst_ioas_id', 'dst_iova', 'length'],
);
/** IOMMU_IOAS_IOVA_RANGES */
export const IOMMU_IOAS_IOVA_RANGES = ioctl(
  'IOMMU_IOAS_IOVA_RANGES',
  io(IOMMUFD_CMD.IOAS_IOVA_RANGES),
  'iommufd',
  iommu_ioas_iova_ranges,
  ['ioas_id', 'num_iovas'],
);
/** IOMMU_IOAS_MAP */
export const IOMMU_IOAS_MAP = ioctl('IOMMU_IOAS_MAP', io(IOMMUFD_CMD.IOAS_MAP), 'iommufd', iommu_ioas_map, [
  'ioas_id',
  'flags',
  'iova',
  'length',
  'user_va',
]);
/** IOMMU_IOAS_UNMAP */
export const IOMMU_IOAS_UNMAP = ioctl(
  'IOMMU_IOAS_UNMAP',
  io(IOMMUFD_CMD.IOAS_UNMAP),
  'iommufd',
  iommu_ioas_unmap,
  ['ioas_id', 'iova', 'length'],
);
/** IOMMU_OPTION */
export const IOMMU_OPTION = ioctl('IOMMU_OPTION', io(IOMMUFD_CMD.OPTION), 'iommufd', iommu_option, [
  'option_id',
  'op',
  'object_id',
  'val64',
]);
/** IOMMU_VFIO_IOAS */
export const IOMMU_VFIO_IOAS = ioctl(
  'IOMMU_VFIO_IOAS',
  io(IOMMUFD_CMD.VFIO_IOAS),
  'iommufd',
  iommu_vfio_ioas,
  ['ioas_id', 'op'],
);
/** IOMMU_HWPT_ALLOC */
export const IOMMU_HWPT_ALLOC = ioctl(
  'IOMMU_HWPT_ALLOC',
  io(IOMMUFD_CMD.HWPT_ALLOC),
  'iommufd',
  iommu_hwpt_alloc,
  ['flags', 'dev_id', 'pt_id', 'data_type'],
);
/** IOMMU_GET_HW_INFO */
export const IOMMU_GET_HW_INFO = ioctl(
  'IOMMU_GET_HW_INFO',
  io(IOMMUFD_CMD.GET_HW_INFO),
  'iommufd',
  iommu_hw_info,
  ['dev_id', 'data_len'],
);
/** IOMMU_HWPT_SET_DIRTY_TRACKING */
export const IOMMU_HWPT_SET_DIRTY_TRACKING = ioctl(
  'IOMMU_HWPT_SET_DIRTY_TRACKING',
  io(IOMMUFD_CMD.HWPT_SET_DIRTY_TRACKING),
  'iommufd',
  iommu_hwpt_set_dirty_tracking,
  ['hwpt_id', 'flags'],
);
/** IOMMU_HWPT_GET_DIRTY_BITMAP */
export const IOMMU_HWPT_GET_DIRTY_BITMAP = ioctl(
  'IOMMU_HWPT_GET_DIRTY_BITMAP',
  io(IOMMUFD_CMD.HWPT_GET_DIRTY_BITMAP),
  'iommufd',
  iommu_hwpt_get_dirty_bitmap,
  ['hwpt_id', 'flags', 'iova', 'length', 'page_size'],
);
/** IOMMU_HWPT_INVALIDATE */
export const IOMMU_HWPT_INVALIDATE = ioctl(
  'IOMMU_HWPT_INVALIDATE',
  io(IOMMUFD_CMD.HWPT_INVALIDATE),
  'iommufd',
  iommu_hwpt_invalidate,
  ['hwpt_id', 'data_type', 'entry_len', 'entry_num'],
);
/** IOMMU_FAULT_QUEUE_ALLOC */
export const IOMMU_FAULT_QUEUE_ALLOC = ioctl(
  'IOMMU_FAULT_QUEUE_ALLOC',
  io(IOMMUFD_CMD.FAULT_QUEUE_ALLOC),
  'iommufd',
  iommu_fault_alloc,
  ['flags'],
);

/** IOMMU_IOAS_UNMAP with iova 0 and this length unmaps everything in the IOAS. */
export const IOMMU_UNMAP_ALL_LENGTH = 0xffff_ffff_ffff_ffffn;
