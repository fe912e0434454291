// uapi conformance, part 3: a real device (edu behind QEMU's emulated Intel VT-d) on
// iommufd through its VFIO cdev: bind, attach/detach, GET_HW_INFO, HWPTs, the IOAS rules
// that only appear with a domain attached, HWPT_INVALIDATE and fault queues.
// The tests of this suite run in order on one bound device.
import { VTD_IOMMU } from '../../src/kernel/topology.js';
import { expect } from 'chai';
import { PROT, MAP } from '../../src/uapi/libc.js';
import {
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_CAP,
  IOMMU_HW_INFO_TYPE,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_FLAGS,
  IOMMU_HWPT_DATA,
  IOMMU_HWPT_DIRTY_TRACKING,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_FLAGS,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_INVALIDATE_DATA,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FLAGS,
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_GET_INFO,
  iommu_destroy,
  iommu_fault_alloc,
  iommu_hw_info,
  iommu_hw_info_vtd,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_invalidate,
  iommu_hwpt_set_dirty_tracking,
  iommu_hwpt_vtd_s1,
  iommu_ioas_allow_iovas,
  iommu_ioas_map,
  iommu_iova_range,
  iommu_test_cmd_check_map,
  iommu_test_cmd_check_refs,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_device_detach_iommufd_pt,
  vfio_device_info,
} from '../../src/uapi/index.js';
import { describeKernelOn } from './variant.js';
import { expectErrno, iommufdFixture, MSI_LAST, MSI_START, PAGE } from './kit.js';
import { ioctlRecorder } from './recording-port.js';

ioctlRecorder.registerSuite('uapi-iommufd-vtd');

const P = BigInt(PAGE);
const F = IOMMU_IOAS_MAP_FLAGS;

describeKernelOn('vtd', 'uapi conformance: iommufd with a VFIO cdev behind Intel VT-d', function () {
  const f = iommufdFixture({ cdev: true, buf: 16, scratch: 1 });
  let devId: number;
  let ioas: number;
  let autoHwpt: number;

  const attachReq = (ptId: number, flags = 0) => {
    const a = vfio_device_attach_iommufd_pt.view().reset();
    a.pt_id = ptId;
    a.flags = flags;
    return a;
  };
  const attach = (ptId: number) => {
    const a = attachReq(ptId);
    f.port.ioctl(f.dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, a.bytes);
    return a.pt_id;
  };
  const destroyReq = (id: number) => {
    const d = iommu_destroy.view().reset();
    d.id = id;
    return () => f.port.ioctl(f.fd, IOMMU_DESTROY, d.bytes);
  };
  const hwptAlloc = (devIdArg: number, ptId: number, flags: number) => {
    const h = iommu_hwpt_alloc.view().reset();
    h.dev_id = devIdArg;
    h.pt_id = ptId;
    h.flags = flags;
    return h;
  };

  it('an unbound cdev answers device ioctls, ATTACH and DETACH with EINVAL', function () {
    expectErrno('EINVAL', () =>
      f.port.ioctl(f.dev, VFIO_DEVICE_GET_INFO, vfio_device_info.view().reset().bytes),
    );
    expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, attachReq(1).bytes));
    const d = vfio_device_detach_iommufd_pt.view().reset();
    expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, d.bytes));
  });

  it('VFIO_DEVICE_BIND_IOMMUFD: negative fd or flags -> EINVAL, a closed fd -> EBADF, a non-iommufd fd -> EBADFD; binds; a second bind -> EINVAL (B5 #17)', function () {
    const bind = (iommufdFd: number, flags = 0) => {
      const b = vfio_device_bind_iommufd.view().reset();
      b.iommufd = iommufdFd;
      b.flags = flags;
      return b;
    };
    const call = (b: ReturnType<typeof bind>) => () => f.port.ioctl(f.dev, VFIO_DEVICE_BIND_IOMMUFD, b.bytes);
    expectErrno('EINVAL', call(bind(-1)), 'iommufd -1');
    expectErrno('EINVAL', call(bind(f.fd, 1)), 'flags');
    expectErrno('EBADF', call(bind(0x7ff0)), 'a closed fd number');
    expectErrno('EBADFD', call(bind(f.buf.fd)), 'a memfd instead of /dev/iommu');
    const b = bind(f.fd);
    f.port.ioctl(f.dev, VFIO_DEVICE_BIND_IOMMUFD, b.bytes);
    devId = b.out_devid;
    expect(devId).to.be.above(0);
    expectErrno('EINVAL', call(bind(f.fd)), 'second bind');
  });

  it('IOMMU_GET_HW_INFO: Intel VT-d registers (no scalable mode in QEMU 7.2: no dirty tracking, no nesting); data_len 0 asks the size; a larger buffer is zero-filled; flags -> EOPNOTSUPP, unknown device -> ENOENT', function () {
    const info = iommu_hw_info.view().reset();
    info.dev_id = devId;
    info.data_len = 0;
    f.port.ioctl(f.fd, IOMMU_GET_HW_INFO, info.bytes);
    expect(info.out_data_type).to.equal(IOMMU_HW_INFO_TYPE.INTEL_VTD);
    expect(info.data_len, 'sizeof(struct iommu_hw_info_vtd)').to.equal(iommu_hw_info_vtd.size);

    f.scratch.bytes.fill(0xff, 0, 64);
    info.data_len = iommu_hw_info_vtd.size + 8;
    info.data_uptr = f.scratch.va;
    f.port.ioctl(f.fd, IOMMU_GET_HW_INFO, info.bytes);
    expect(info.data_len).to.equal(iommu_hw_info_vtd.size);
    expect([...f.scratch.bytes.subarray(iommu_hw_info_vtd.size, iommu_hw_info_vtd.size + 8)]).to.deep.equal(
      new Array(8).fill(0),
    );
    const vtd = iommu_hw_info_vtd.view(f.scratch.bytes);
    // The simulated kernel's VT-d (src/kernel/topology.ts) must report the same registers.
    expect([vtd.cap_reg, vtd.ecap_reg], 'cap_reg, ecap_reg').to.deep.equal([
      VTD_IOMMU.cap_reg,
      VTD_IOMMU.ecap_reg,
    ]);
    // 6.12 sets IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 (bit 0) on every VT-d.
    expect(vtd.flags).to.equal(1);
    const mgaw = Number((vtd.cap_reg >> 16n) & 0x3fn) + 1;
    expect(mgaw, 'cap.MGAW: QEMU 7.2 intel-iommu default aw-bits').to.equal(39);
    const ecapBit = (bit: bigint) => (vtd.ecap_reg >> bit) & 1n;
    expect(ecapBit(43n), 'ecap.SMTS (scalable mode)').to.equal(0n);
    expect(ecapBit(26n), 'ecap.NEST').to.equal(0n);
    expect(info.out_capabilities & BigInt(IOMMU_HW_CAP.DIRTY_TRACKING), 'DIRTY_TRACKING cap').to.equal(0n);
    expect(info.out_max_pasid_log2, 'no PASID').to.equal(0);

    const bad = iommu_hw_info.view().reset();
    bad.dev_id = devId;
    bad.flags = 1;
    expectErrno('EOPNOTSUPP', () => f.port.ioctl(f.fd, IOMMU_GET_HW_INFO, bad.bytes), 'flags');
    bad.flags = 0;
    bad.dev_id = 0x7fff_0000;
    expectErrno('ENOENT', () => f.port.ioctl(f.fd, IOMMU_GET_HW_INFO, bad.bytes), 'unknown device');
  });

  it('VFIO_DEVICE_ATTACH_IOMMUFD_PT: unknown pt_id -> ENOENT, flags -> EINVAL; an IOAS with a byte-granular map cannot take the 4 KiB VT-d domain -> EADDRINUSE (B5 #1, #18)', function () {
    ioas = f.iommufd.ioasAlloc();
    expectErrno('ENOENT', () =>
      f.port.ioctl(f.dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, attachReq(0x7fff_0000).bytes),
    );
    expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, attachReq(ioas, 1).bytes));
    f.iommufd.map(ioas, f.buf.va + 0x10n, 0x100n, 0x1_0010n);
    expectErrno('EADDRINUSE', () =>
      f.port.ioctl(f.dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, attachReq(ioas).bytes),
    );
    f.iommufd.unmap(ioas, 0x1_0010n, 0x100n);
  });

  it('attached to an IOAS: the answer is the automatic HWPT id; the IOAS and that HWPT are busy (B5 #19); IOVA_RANGES (two calls): 4 KiB alignment, MSI window reserved', function () {
    f.iommufd.map(ioas, f.buf.va, 4n * P, 0x10_0000n); // existing page-aligned maps are fine
    const hwpt = (autoHwpt = attach(ioas));
    expect(hwpt, 'automatic HWPT').to.not.equal(ioas);
    expectErrno('EBUSY', destroyReq(ioas), 'IOAS with a device attached');
    expectErrno('EBUSY', destroyReq(hwpt), 'automatic HWPT in use');

    const { ranges, alignment } = f.iommufd.iovaRanges(ioas, f.res.scratch());
    expect(alignment).to.equal(P);
    expect(ranges[0]!.start).to.equal(0n);
    for (let i = 1; i < ranges.length; i++) expect(ranges[i]!.start > ranges[i - 1]!.last).to.equal(true);
    const hitsMsi = ranges.some((r) => r.start <= MSI_LAST && r.last >= MSI_START);
    expect(
      hitsMsi,
      `MSI window outside ${JSON.stringify(ranges, (_, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))}`,
    ).to.equal(false);
    expect(ranges.some((r) => r.last === MSI_START - 1n)).to.equal(true);
    expect(ranges.some((r) => r.start === MSI_LAST + 1n)).to.equal(true);
    expect(f.iommufd.unmap(ioas, 0x10_0000n, 4n * P)).to.equal(4n * P);
  });

  it('with the VT-d domain: unaligned IOVA, length or VA -> EINVAL (B5 #1); MSI window -> EINVAL, ALLOW_IOVAS over it -> EADDRINUSE (B5 #15); a VA without access -> EFAULT at pin time (B5 #11)', function () {
    const req = (iova: bigint, length: bigint, va = f.buf.va) => {
      const m = iommu_ioas_map.view().reset();
      m.ioas_id = ioas;
      m.flags = F.READABLE | F.WRITEABLE | F.FIXED_IOVA;
      m.user_va = va;
      m.length = length;
      m.iova = iova;
      return () => f.port.ioctl(f.fd, IOMMU_IOAS_MAP, m.bytes);
    };
    expectErrno('EINVAL', req(0x10_0800n, P), 'IOVA');
    expectErrno('EINVAL', req(0x10_0000n, 0x800n), 'length');
    expectErrno('EINVAL', req(0x10_0000n, P, f.buf.va + 0x10n), 'VA');
    expectErrno('EINVAL', req(MSI_START, P), 'inside the MSI window');
    expectErrno('EINVAL', req(MSI_START - P, 2n * P), 'across the start of the MSI window');
    const none = f.res.mmap(2n * P, PROT.NONE, MAP.PRIVATE | MAP.ANONYMOUS, -1);
    expectErrno('EFAULT', req(0x30_0000n, 2n * P, none), 'PROT_NONE memory');

    const e = iommu_iova_range.view(f.scratch.bytes);
    e.start = 0xfe00_0000n;
    e.last = 0xfeff_ffffn;
    const a = iommu_ioas_allow_iovas.view().reset();
    a.ioas_id = ioas;
    a.num_iovas = 1;
    a.allowed_iovas = f.scratch.va;
    expectErrno('EADDRINUSE', () => f.port.ioctl(f.fd, IOMMU_IOAS_ALLOW_IOVAS, a.bytes));

    // With a domain the pages are pinned at map time, once per mapping (MD_CHECK_REFS).
    const refs = (n: number) => {
      const c = iommu_test_cmd_check_refs.view().reset();
      c.op = IOMMU_TEST_OP.MD_CHECK_REFS;
      c.uptr = f.buf.va;
      c.length = 8n * P;
      c.refs = n;
      return () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, c.bytes);
    };
    refs(0)();
    req(0x10_0000n, 8n * P)();
    refs(1)();
    expectErrno('EIO', refs(0), 'pinned pages counted as unpinned');
    // MD_CHECK_MAP reads mock page tables only: a VT-d HWPT is refused.
    const check = iommu_test_cmd_check_map.view().reset();
    check.op = IOMMU_TEST_OP.MD_CHECK_MAP;
    check.id = autoHwpt;
    check.iova = 0x10_0000n;
    check.length = 8n * P;
    check.uptr = f.buf.va;
    expectErrno(
      'EINVAL',
      () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, check.bytes),
      'MD_CHECK_MAP of a VT-d HWPT',
    );
    expect(f.iommufd.unmap(ioas, 0x10_0000n, 8n * P)).to.equal(8n * P);
    refs(0)();
  });

  it('IOMMU_HWPT_ALLOC on VT-d: a paging HWPT; DIRTY_TRACKING / NEST_PARENT / FAULT_ID_VALID / unknown flag -> EOPNOTSUPP (B5 #25), data_len without a type -> EINVAL, nested on a non-parent -> EINVAL, unknown device -> ENOENT, unknown pt -> EINVAL; replace-attach; busy while attached', function () {
    const h = hwptAlloc(devId, ioas, 0);
    f.port.ioctl(f.fd, IOMMU_HWPT_ALLOC, h.bytes);
    const hwpt = h.out_hwpt_id;
    const call = (x: ReturnType<typeof hwptAlloc>) => () => f.port.ioctl(f.fd, IOMMU_HWPT_ALLOC, x.bytes);
    const A = IOMMU_HWPT_ALLOC_FLAGS;
    // QEMU 7.2's VT-d has no scalable mode (ecap.SMTS = 0): no second-level A/D bits, no nesting.
    expectErrno('EOPNOTSUPP', call(hwptAlloc(devId, ioas, A.ALLOC_DIRTY_TRACKING)), 'DIRTY_TRACKING');
    expectErrno('EOPNOTSUPP', call(hwptAlloc(devId, ioas, A.ALLOC_NEST_PARENT)), 'NEST_PARENT');
    // 6.12 takes a fault queue only for nested HWPTs.
    expectErrno(
      'EOPNOTSUPP',
      call(hwptAlloc(devId, ioas, A.FAULT_ID_VALID)),
      'FAULT_ID_VALID on a paging HWPT',
    );
    expectErrno('EOPNOTSUPP', call(hwptAlloc(devId, ioas, 1 << 7)), 'unknown flag');
    const lenOnly = hwptAlloc(devId, ioas, 0);
    lenOnly.data_len = 4;
    expectErrno('EINVAL', call(lenOnly), 'data_len with data_type NONE');
    const nested = hwptAlloc(devId, hwpt, 0);
    nested.data_type = IOMMU_HWPT_DATA.VTD_S1;
    nested.data_len = iommu_hwpt_vtd_s1.size;
    nested.data_uptr = f.scratch.va;
    iommu_hwpt_vtd_s1.view(f.scratch.bytes).addr_width = 48;
    expectErrno('EINVAL', call(nested), 'VTD_S1 on a HWPT that is not a NEST_PARENT');
    expectErrno('ENOENT', call(hwptAlloc(0x7fff_0000, ioas, 0)), 'unknown device');
    expectErrno('ENOENT', call(hwptAlloc(ioas, ioas, 0)), 'an IOAS id as device');
    // The kernel maps a failed pt_id lookup to EINVAL here (ATTACH answers ENOENT).
    expectErrno('EINVAL', call(hwptAlloc(devId, 0x7fff_0000, 0)), 'unknown pt_id');

    const auto = attach(ioas); // the automatic HWPT of the previous test
    expect(attach(hwpt), 'replace: the device now uses the allocated HWPT').to.equal(hwpt);
    expectErrno('ENOENT', destroyReq(auto), 'the automatic HWPT went with its last device');
    expectErrno('EBUSY', destroyReq(hwpt), 'HWPT with a device attached');
    expectErrno('EBUSY', destroyReq(ioas), 'IOAS under a HWPT');
    const again = attach(ioas);
    expect(again, 'a new automatic HWPT').to.not.be.oneOf([hwpt, ioas]);
    destroyReq(hwpt)();
  });

  it('IOMMU_HWPT_SET_DIRTY_TRACKING / GET_DIRTY_BITMAP on the VT-d HWPT -> EOPNOTSUPP (no dirty ops without scalable mode), after the checks of their arguments: unknown flag -> EOPNOTSUPP, not a HWPT -> ENOENT, zero or unaligned length or page size -> EINVAL, wrap -> EOVERFLOW', function () {
    const h = hwptAlloc(devId, ioas, 0);
    f.port.ioctl(f.fd, IOMMU_HWPT_ALLOC, h.bytes);
    const hwpt = h.out_hwpt_id;
    f.iommufd.map(ioas, f.buf.va, 4n * P, 0x10_0000n);
    const track = (id: number, flags: number) => {
      const t = iommu_hwpt_set_dirty_tracking.view().reset();
      t.hwpt_id = id;
      t.flags = flags;
      return () => f.port.ioctl(f.fd, IOMMU_HWPT_SET_DIRTY_TRACKING, t.bytes);
    };
    const ENABLE = IOMMU_HWPT_DIRTY_TRACKING.ENABLE;
    expectErrno('EOPNOTSUPP', track(hwpt, ENABLE), 'enable');
    expectErrno('EOPNOTSUPP', track(hwpt, 0), 'disable');
    expectErrno('EOPNOTSUPP', track(hwpt, ENABLE | 2), 'unknown flag');
    expectErrno('ENOENT', track(ioas, ENABLE), 'an IOAS id');

    const get = (o: Partial<{ id: number; flags: number; iova: bigint; length: bigint; page: bigint }>) => {
      const g = iommu_hwpt_get_dirty_bitmap.view().reset();
      g.hwpt_id = o.id ?? hwpt;
      g.flags = o.flags ?? 0;
      g.iova = o.iova ?? 0x10_0000n;
      g.length = o.length ?? 4n * P;
      g.page_size = o.page ?? P;
      g.data = f.scratch.va;
      return () => f.port.ioctl(f.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, g.bytes);
    };
    expectErrno('EOPNOTSUPP', get({}), 'valid request');
    expectErrno('EOPNOTSUPP', get({ flags: IOMMU_HWPT_GET_DIRTY_BITMAP_FLAGS.NO_CLEAR }), 'NO_CLEAR');
    expectErrno('EOPNOTSUPP', get({ flags: 2 }), 'unknown flag');
    expectErrno('ENOENT', get({ id: ioas }), 'an IOAS id');
    expectErrno('EINVAL', get({ length: 0n }), 'length 0');
    expectErrno('EINVAL', get({ page: 0n }), 'page size 0');
    expectErrno('EINVAL', get({ iova: 0x10_0800n }), 'IOVA below the IOAS alignment');
    expectErrno('EINVAL', get({ page: 2n * P, length: 3n * P }), 'range not a multiple of the bitmap page');
    expectErrno('EOVERFLOW', get({ iova: 0xffff_ffff_ffff_f000n, length: 2n * P }), 'wraps');
    f.iommufd.unmap(ioas, 0x10_0000n, 4n * P);
    destroyReq(hwpt)();
  });

  it('IOMMU_HWPT_INVALIDATE: only nested HWPTs take it (none exists here): a paging HWPT -> ENOENT, entries without a data pointer or length -> EINVAL, __reserved -> EOPNOTSUPP', function () {
    const h = hwptAlloc(devId, ioas, 0);
    f.port.ioctl(f.fd, IOMMU_HWPT_ALLOC, h.bytes);
    const inv = (
      fields: Partial<{ hwpt: number; num: number; len: number; uptr: bigint; reserved: number }>,
    ) => {
      const v = iommu_hwpt_invalidate.view().reset();
      v.hwpt_id = fields.hwpt ?? h.out_hwpt_id;
      v.data_type = IOMMU_HWPT_INVALIDATE_DATA.VTD_S1;
      v.entry_num = fields.num ?? 0;
      v.entry_len = fields.len ?? 32;
      v.data_uptr = fields.uptr ?? f.scratch.va;
      v.__reserved = fields.reserved ?? 0;
      return v;
    };
    const call = (v: ReturnType<typeof inv>) => () => f.port.ioctl(f.fd, IOMMU_HWPT_INVALIDATE, v.bytes);
    // The lookup wants IOMMUFD_OBJ_HWPT_NESTED: a paging HWPT is "not found", even for an empty batch.
    const v = inv({ num: 1 });
    expectErrno('ENOENT', call(v), 'paging HWPT');
    expect(v.entry_num, 'entries handled, written back').to.equal(0);
    expectErrno('ENOENT', call(inv({ num: 0 })), 'paging HWPT, no entries');
    expectErrno('ENOENT', call(inv({ hwpt: 0x7fff_0000, num: 1 })), 'unknown id');
    expectErrno('EINVAL', call(inv({ num: 1, uptr: 0n })), 'no data pointer');
    expectErrno('EINVAL', call(inv({ num: 1, len: 0 })), 'entry_len 0');
    expectErrno('EOPNOTSUPP', call(inv({ reserved: 1 })), '__reserved');
    destroyReq(h.out_hwpt_id)();
  });

  it('IOMMU_FAULT_QUEUE_ALLOC: an object and an fd; the object is busy while its fd is open; flags -> EOPNOTSUPP', function () {
    const q = iommu_fault_alloc.view().reset();
    f.port.ioctl(f.fd, IOMMU_FAULT_QUEUE_ALLOC, q.bytes);
    const qfd = f.res.adopt(q.out_fault_fd);
    expect(q.out_fault_id).to.be.above(0);
    expect(qfd).to.be.above(2);
    expectErrno('EBUSY', destroyReq(q.out_fault_id), 'fault queue with its fd open');
    f.res.close(qfd);
    destroyReq(q.out_fault_id)();
    const bad = iommu_fault_alloc.view().reset();
    bad.flags = 1;
    expectErrno('EOPNOTSUPP', () => f.port.ioctl(f.fd, IOMMU_FAULT_QUEUE_ALLOC, bad.bytes));
  });

  it('VFIO_DEVICE_DETACH_IOMMUFD_PT: flags -> EINVAL; detaches (a second detach is a no-op); then the IOAS can be destroyed', function () {
    const d = vfio_device_detach_iommufd_pt.view().reset();
    d.flags = 1;
    expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, d.bytes));
    d.flags = 0;
    f.port.ioctl(f.dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, d.bytes);
    f.port.ioctl(f.dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, d.bytes);
    f.iommufd.destroy(ioas);
  });
});
