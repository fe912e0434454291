/**
 * drivers/iommu/iommufd/iommufd_test.h as of Linux 6.12: the selftest command
 * IOMMU_TEST_CMD (0x3ba0), present when the kernel has CONFIG_IOMMUFD_TEST. It gives
 * mock domains and a way to read back what the kernel really mapped (MD_CHECK_MAP,
 * MD_CHECK_REFS), which the tests use to compare the engine's view with the kernel's.
 *
 * struct iommu_test_cmd is a header, a union of per-op payloads at offset 16, and a
 * trailing `last`. Each payload is declared here as its own layout over the same C struct.
 */
import { _IO, constants, ioctl, struct, type FieldDef } from './layout.js';
import { IOMMUFD_TYPE, IOMMUFD_CMD } from './iommufd.js';

/** IOMMU_TEST_OP_* */
export const IOMMU_TEST_OP = constants(
  'IOMMU_TEST_OP_',
  {
    ADD_RESERVED: 1,
    MOCK_DOMAIN: 2,
    MD_CHECK_MAP: 3,
    MD_CHECK_REFS: 4,
    CREATE_ACCESS: 5,
    DESTROY_ACCESS_PAGES: 6,
    ACCESS_PAGES: 7,
    ACCESS_RW: 8,
    SET_TEMP_MEMORY_LIMIT: 9,
    MOCK_DOMAIN_REPLACE: 10,
    ACCESS_REPLACE_IOAS: 11,
    MOCK_DOMAIN_FLAGS: 12,
    DIRTY: 13,
    MD_CHECK_IOTLB: 14,
    TRIGGER_IOPF: 15,
  },
  'selftest',
);

/** The mock domain's aperture: IOVAs outside [START, LAST] are reserved. */
export const MOCK_APERTURE = constants('MOCK_APERTURE_', { START: 1 << 24, LAST: 2 ** 31 - 1 }, 'selftest');

/** MOCK_FLAGS_DEVICE_* for IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS */
export const MOCK_FLAGS_DEVICE = constants(
  'MOCK_FLAGS_DEVICE_',
  { NO_DIRTY: 1 << 0, HUGE_IOVA: 1 << 1 },
  'selftest',
);

/** MOCK_FLAGS_ACCESS_* and MOCK_ACCESS_RW_* */
export const MOCK_ACCESS = constants(
  'MOCK_',
  {
    FLAGS_ACCESS_WRITE: 1 << 0,
    FLAGS_ACCESS_SYZ: 1 << 16,
    ACCESS_RW_WRITE: 1 << 0,
    ACCESS_RW_SLOW_PATH: 1 << 2,
    FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES: 1 << 0,
  },
  'selftest',
);

const UNION = 16;
const header = { size: 'u32', op: 'u32', id: 'u32', __reserved: 'u32' } as const;

// One layout per union member; every one also carries `last` at its real offset, so
// sizeof and offsetof are checked against the kernel for each.
function testCmd<const D extends Record<string, FieldDef>>(member: string, payload: D) {
  let at = UNION;
  const fields: Record<string, FieldDef> = { ...header };
  for (const [name, def] of Object.entries(payload)) {
    const type = typeof def === 'string' ? def : def.type;
    const c = typeof def === 'string' || !def.c ? `${member}.${name}` : def.c;
    const es = type === 'u64' ? 8 : 4;
    at = Math.ceil(at / es) * es;
    fields[name] = { type, at, c };
    at += es;
  }
  fields.last = { type: 'u32', at: IOMMU_TEST_CMD_LAST_OFFSET };
  return struct(`iommu_test_cmd.${member}`, fields as typeof header & D & { last: 'u32' }, {
    cType: 'struct iommu_test_cmd',
    header: 'selftest',
    size: IOMMU_TEST_CMD_SIZE,
  });
}

// The union's largest member is `dirty` (u32 + pad + 5 x u64 = 48 bytes), so `last` sits at
// 16 + 48 and the struct, 8-aligned, is 72 bytes whichever member a layout describes.
const IOMMU_TEST_CMD_LAST_OFFSET = 64;
const IOMMU_TEST_CMD_SIZE = 72;

/** Selftest data types and default values (nested mock HWPTs, mock hw_info). */
export const IOMMU_SELFTEST = constants(
  'IOMMU_',
  {
    HWPT_DATA_SELFTEST: 0xdead,
    HWPT_INVALIDATE_DATA_SELFTEST: 0xdeadbeef,
    TEST_IOTLB_DEFAULT: 0xbadbeef,
    HW_INFO_TYPE_SELFTEST: 0xfeedbeef,
    HW_INFO_SELFTEST_REGVAL: 0xdeadbeef,
  },
  'selftest',
);

/** struct iommu_hwpt_selftest (IOMMU_HWPT_DATA_SELFTEST payload of HWPT_ALLOC) */
export const iommu_hwpt_selftest = struct('iommu_hwpt_selftest', { iotlb: 'u32' }, { header: 'selftest' });

/** struct iommu_hwpt_invalidate_selftest (one HWPT_INVALIDATE entry for a nested mock HWPT) */
export const iommu_hwpt_invalidate_selftest = struct(
  'iommu_hwpt_invalidate_selftest',
  { flags: 'u32', iotlb_id: 'u32' },
  { header: 'selftest' },
);

/** struct iommu_test_hw_info (GET_HW_INFO data of a mock device) */
export const iommu_test_hw_info = struct(
  'iommu_test_hw_info',
  { flags: 'u32', test_reg: 'u32' },
  { header: 'selftest' },
);

/** IOMMU_TEST_OP_ADD_RESERVED payload */
export const iommu_test_cmd_add_reserved = testCmd('add_reserved', { start: 'u64', length: 'u64' });
/** IOMMU_TEST_OP_MOCK_DOMAIN payload */
export const iommu_test_cmd_mock_domain = testCmd('mock_domain', {
  out_stdev_id: 'u32',
  out_hwpt_id: 'u32',
  out_idev_id: 'u32',
});
/** IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS payload */
export const iommu_test_cmd_mock_domain_flags = testCmd('mock_domain_flags', {
  out_stdev_id: 'u32',
  out_hwpt_id: 'u32',
  out_idev_id: 'u32',
  dev_flags: 'u32',
});
/** IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE payload */
export const iommu_test_cmd_mock_domain_replace = testCmd('mock_domain_replace', { pt_id: 'u32' });
/** IOMMU_TEST_OP_MD_CHECK_MAP payload: the mock domain must map [iova, iova+length) to uptr. */
export const iommu_test_cmd_check_map = testCmd('check_map', { iova: 'u64', length: 'u64', uptr: 'u64' });
/** IOMMU_TEST_OP_MD_CHECK_REFS payload: every page of [uptr, uptr+length) must have `refs` pins. */
export const iommu_test_cmd_check_refs = testCmd('check_refs', { length: 'u64', uptr: 'u64', refs: 'u32' });
/** IOMMU_TEST_OP_CREATE_ACCESS payload */
export const iommu_test_cmd_create_access = testCmd('create_access', { out_access_fd: 'u32', flags: 'u32' });
/** IOMMU_TEST_OP_DESTROY_ACCESS_PAGES payload */
export const iommu_test_cmd_destroy_access_pages = testCmd('destroy_access_pages', {
  access_pages_id: 'u32',
});
/** IOMMU_TEST_OP_ACCESS_PAGES payload */
export const iommu_test_cmd_access_pages = testCmd('access_pages', {
  flags: 'u32',
  out_access_pages_id: 'u32',
  iova: 'u64',
  length: 'u64',
  uptr: 'u64',
});
/** IOMMU_TEST_OP_ACCESS_RW payload */
export const iommu_test_cmd_access_rw = testCmd('access_rw', {
  iova: 'u64',
  length: 'u64',
  uptr: 'u64',
  flags: 'u32',
});
/** IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT payload */
export const iommu_test_cmd_memory_limit = testCmd('memory_limit', { limit: 'u32' });
/** IOMMU_TEST_OP_ACCESS_REPLACE_IOAS payload */
export const iommu_test_cmd_access_replace_ioas = testCmd('access_replace_ioas', { ioas_id: 'u32' });
/** IOMMU_TEST_OP_DIRTY payload: mark pages of the bitmap at uptr dirty in the mock domain. */
export const iommu_test_cmd_dirty = testCmd('dirty', {
  flags: 'u32',
  iova: 'u64',
  length: 'u64',
  page_size: 'u64',
  uptr: 'u64',
  out_nr_dirty: 'u64',
});
/** IOMMU_TEST_OP_MD_CHECK_IOTLB payload */
export const iommu_test_cmd_check_iotlb = testCmd('check_iotlb', {
  iotlb_id: { type: 'u32', c: 'check_iotlb.id' }, // `id` would shadow the header's
  iotlb: 'u32',
});

/** IOMMU_TEST_OP_TRIGGER_IOPF payload */
export const iommu_test_cmd_trigger_iopf = testCmd('trigger_iopf', {
  dev_id: 'u32',
  pasid: 'u32',
  grpid: 'u32',
  perm: 'u32',
  addr: 'u64',
});

/** IOMMU_TEST_CMD = _IO(';', IOMMUFD_CMD_BASE + 32) */
export const IOMMU_TEST_CMD = ioctl(
  'IOMMU_TEST_CMD',
  _IO(IOMMUFD_TYPE, IOMMUFD_CMD.BASE + 32),
  'iommufd',
  iommu_test_cmd_check_map,
  ['op', 'id'],
  'selftest',
);
