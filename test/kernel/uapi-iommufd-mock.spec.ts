// uapi conformance: the iommufd selftest's mock domains (CONFIG_IOMMUFD_TEST), which work
// only in the virtio-iommu VM: in 6.12 a mock device is probed with the ops of the first
// IOMMU registered without a fwnode, so next to intel-iommu it gets VT-d's ops, no IOMMU,
// and MOCK_DOMAIN answers EINVAL (uapi-iommufd-selftest). virtio-iommu has a fwnode (ACPI
// VIOT), so the mock IOMMU serves the mock bus here. Mock domains are what the real kernel
// offers for MD_CHECK_MAP (reading back what a domain maps), dirty tracking and nested
// HWPTs with HWPT_INVALIDATE, none of which QEMU 7.2's VT-d has. Usage follows Linux
// tools/testing/selftests/iommu (iommufd.c, iommufd_utils.h).
import { expect } from 'chai';
import {
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_CAP,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_FLAGS,
  IOMMU_HWPT_DATA,
  IOMMU_HWPT_DIRTY_TRACKING,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_FLAGS,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FLAGS,
  IOMMU_SELFTEST,
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP,
  MOCK_APERTURE,
  MOCK_FLAGS_DEVICE,
  iommu_destroy,
  iommu_fault_alloc,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_invalidate,
  iommu_hwpt_invalidate_selftest,
  iommu_hwpt_selftest,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_map,
  iommu_test_cmd_check_iotlb,
  iommu_test_cmd_check_map,
  iommu_test_cmd_check_refs,
  iommu_test_cmd_dirty,
  iommu_test_cmd_mock_domain,
  iommu_test_cmd_mock_domain_flags,
  iommu_test_cmd_mock_domain_replace,
  iommu_test_hw_info,
} from '../../src/uapi/index.js';
import { expectErrno, iommufdFixture, PAGE } from './kit.js';
import { LINUX_CHANGES, linuxAtLeast } from '../../src/kernel/release.js';
import { ioctlRecorder, kernelRelease } from './recording-port.js';
import { describeKernelOn } from './variant.js';

ioctlRecorder.registerSuite('uapi-iommufd-mock');

const P = BigInt(PAGE);
/** selftest.c MOCK_IO_PAGE_SIZE (PAGE_SIZE / 2): the mock domain's only page size. */
const MOCK_PAGE = P / 2n;
const BASE = BigInt(MOCK_APERTURE.START);
const LAST = BigInt(MOCK_APERTURE.LAST);
const A = IOMMU_HWPT_ALLOC_FLAGS;
/** iommufd_test.h IOMMU_TEST_INVALIDATE_FLAG_ALL. */
const INVALIDATE_FLAG_ALL = 1 << 0;
/** iommufd_test.h IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID: a data type no driver takes. */
const INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef;
/** iommufd_test.h MOCK_NESTED_DOMAIN_IOTLB_NUM: mock IOTLB entries per nested HWPT. */
const IOTLB_NUM = 4;

/** What MOCK_DOMAIN hands back. */
interface Mock {
  /** The selftest object: destroying it unbinds and frees the mock device. */
  stdev: number;
  /** The HWPT the device was attached to (automatic when given an IOAS). */
  hwpt: number;
  /** The iommufd device id, for HWPT_ALLOC and GET_HW_INFO. */
  idev: number;
}

describeKernelOn('virtio', 'uapi conformance: iommufd selftest mock domains (virtio-iommu VM)', function () {
  const f = iommufdFixture({ buf: 16, other: 4, scratch: 2 });

  const cmd = (bytes: Uint8Array) => () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, bytes);
  /** MOCK_DOMAIN (or MOCK_DOMAIN_FLAGS with `devFlags`) on `ptId`; the call and its answer. */
  function mockReq(ptId: number, devFlags?: number) {
    if (devFlags === undefined) {
      const c = iommu_test_cmd_mock_domain.view().reset();
      c.op = IOMMU_TEST_OP.MOCK_DOMAIN;
      c.id = ptId;
      return {
        call: cmd(c.bytes),
        out: (): Mock => ({ stdev: c.out_stdev_id, hwpt: c.out_hwpt_id, idev: c.out_idev_id }),
      };
    }
    const c = iommu_test_cmd_mock_domain_flags.view().reset();
    c.op = IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS;
    c.id = ptId;
    c.dev_flags = devFlags;
    return {
      call: cmd(c.bytes),
      out: (): Mock => ({ stdev: c.out_stdev_id, hwpt: c.out_hwpt_id, idev: c.out_idev_id }),
    };
  }
  function mock(ptId: number, devFlags?: number): Mock {
    const r = mockReq(ptId, devFlags);
    r.call();
    return r.out();
  }
  function replaceReq(stdev: number, ptId: number) {
    const c = iommu_test_cmd_mock_domain_replace.view().reset();
    c.op = IOMMU_TEST_OP.MOCK_DOMAIN_REPLACE;
    c.id = stdev;
    c.pt_id = ptId;
    return { call: cmd(c.bytes), pt: () => c.pt_id };
  }
  function replace(stdev: number, ptId: number): number {
    const r = replaceReq(stdev, ptId);
    r.call();
    return r.pt();
  }
  function checkMap(hwpt: number, iova: bigint, length: bigint, uptr: bigint) {
    const c = iommu_test_cmd_check_map.view().reset();
    c.op = IOMMU_TEST_OP.MD_CHECK_MAP;
    c.id = hwpt;
    c.iova = iova;
    c.length = length;
    c.uptr = uptr;
    return cmd(c.bytes);
  }
  function checkRefs(uptr: bigint, length: bigint, refs: number) {
    const c = iommu_test_cmd_check_refs.view().reset();
    c.op = IOMMU_TEST_OP.MD_CHECK_REFS;
    c.uptr = uptr;
    c.length = length;
    c.refs = refs;
    return cmd(c.bytes);
  }
  function checkIotlb(hwpt: number, id: number, value: number) {
    const c = iommu_test_cmd_check_iotlb.view().reset();
    c.op = IOMMU_TEST_OP.MD_CHECK_IOTLB;
    c.id = hwpt;
    c.iotlb_id = id;
    c.iotlb = value;
    return cmd(c.bytes);
  }
  const iotlbs = (hwpt: number) =>
    Array.from({ length: IOTLB_NUM }, (_, i) => {
      for (const v of [IOMMU_SELFTEST.TEST_IOTLB_DEFAULT, 0]) {
        try {
          checkIotlb(hwpt, i, v)();
          return v;
        } catch {
          // not this value
        }
      }
      return null;
    });
  function hwptReq(devId: number, ptId: number, flags = 0) {
    const h = iommu_hwpt_alloc.view().reset();
    h.dev_id = devId;
    h.pt_id = ptId;
    h.flags = flags;
    return h;
  }
  function hwptAlloc(devId: number, ptId: number, flags = 0): number {
    const h = hwptReq(devId, ptId, flags);
    f.port.ioctl(f.fd, IOMMU_HWPT_ALLOC, h.bytes);
    return h.out_hwpt_id;
  }
  const hwptCall = (h: ReturnType<typeof hwptReq>) => () => f.port.ioctl(f.fd, IOMMU_HWPT_ALLOC, h.bytes);
  const destroyReq = (id: number) => {
    const d = iommu_destroy.view().reset();
    d.id = id;
    return () => f.port.ioctl(f.fd, IOMMU_DESTROY, d.bytes);
  };
  function hwInfo(devId: number) {
    const info = iommu_hw_info.view().reset();
    info.dev_id = devId;
    info.data_len = iommu_test_hw_info.size;
    info.data_uptr = f.scratch.va;
    f.port.ioctl(f.fd, IOMMU_GET_HW_INFO, info.bytes);
    const data = iommu_test_hw_info.view(f.scratch.bytes);
    return { type: info.out_data_type, len: info.data_len, caps: info.out_capabilities, reg: data.test_reg };
  }
  const fixedMap = (ioas: number, va: bigint, length: bigint, iova: bigint) => {
    const m = iommu_ioas_map.view().reset();
    m.ioas_id = ioas;
    m.flags =
      IOMMU_IOAS_MAP_FLAGS.READABLE | IOMMU_IOAS_MAP_FLAGS.WRITEABLE | IOMMU_IOAS_MAP_FLAGS.FIXED_IOVA;
    m.user_va = va;
    m.length = length;
    m.iova = iova;
    return () => f.port.ioctl(f.fd, IOMMU_IOAS_MAP, m.bytes);
  };

  it('MOCK_DOMAIN: binds a mock device and attaches it to an IOAS through an automatic mock HWPT; the IOAS takes the mock aperture [16 MiB, 2 GiB) and its 2 KiB page; GET_HW_INFO gives the selftest data and DIRTY_TRACKING (not with NO_DIRTY); unknown device flag -> EINVAL, unknown IOAS -> ENOENT; the selftest object holds the IOAS', function () {
    const ioas = f.iommufd.ioasAlloc();
    const md = mock(ioas);
    expect(new Set([md.stdev, md.hwpt, md.idev, ioas]).size, 'four distinct objects').to.equal(4);
    const { ranges, alignment } = f.iommufd.iovaRanges(ioas, f.scratch);
    expect(ranges).to.deep.equal([{ start: BASE, last: LAST }]);
    expect(alignment, 'MOCK_IO_PAGE_SIZE').to.equal(MOCK_PAGE);
    expectErrno('EBUSY', destroyReq(ioas), 'IOAS with a mock device attached');
    expectErrno('EBUSY', destroyReq(md.hwpt), 'automatic HWPT in use');

    expect(hwInfo(md.idev)).to.deep.equal({
      type: IOMMU_SELFTEST.HW_INFO_TYPE_SELFTEST,
      len: iommu_test_hw_info.size,
      caps: BigInt(IOMMU_HW_CAP.DIRTY_TRACKING),
      reg: IOMMU_SELFTEST.HW_INFO_SELFTEST_REGVAL,
    });
    const nd = mock(ioas, MOCK_FLAGS_DEVICE.NO_DIRTY);
    expect(nd.hwpt, 'joins the automatic HWPT').to.equal(md.hwpt);
    expect(hwInfo(nd.idev).caps, 'NO_DIRTY device').to.equal(0n);

    expectErrno('EINVAL', mockReq(ioas, 1 << 5).call, 'unknown device flag');
    expectErrno('ENOENT', mockReq(0x7fff_0000).call, 'unknown IOAS');
    f.iommufd.destroy(nd.stdev);
    f.iommufd.destroy(md.stdev); // unbinds the device; its automatic HWPT goes with it
    expectErrno('ENOENT', destroyReq(md.hwpt), 'the automatic HWPT went with its last device');
    expect(f.iommufd.iovaRanges(ioas, f.scratch)).to.deep.equal({
      ranges: [{ start: 0n, last: 0xffff_ffff_ffff_ffffn }],
      alignment: 1n,
    });
    f.iommufd.destroy(ioas);
  });

  it('IOAS_MAP into a mock domain, read back with MD_CHECK_MAP: each IOVA maps the pages of its VA, pinned once (MD_CHECK_REFS); a 2 KiB half page maps; another VA, an unmapped IOVA or unaligned input -> EINVAL, an IOAS id -> ENOENT; maps outside the aperture or 1 KiB aligned -> EINVAL', function () {
    const ioas = f.iommufd.ioasAlloc();
    const md = mock(ioas);
    f.iommufd.map(ioas, f.buf.va, 4n * P, BASE);
    checkMap(md.hwpt, BASE, 4n * P, f.buf.va)();
    checkMap(md.hwpt, BASE + P + MOCK_PAGE, MOCK_PAGE, f.buf.va + P + MOCK_PAGE)();
    checkRefs(f.buf.va, 4n * P, 1)();

    expectErrno('EINVAL', checkMap(md.hwpt, BASE, 4n * P, f.other.va), 'pages of another VA');
    expectErrno('EINVAL', checkMap(md.hwpt, BASE + P, P, f.buf.va), 'IOVA and VA a page apart');
    expectErrno('EINVAL', checkMap(md.hwpt, BASE + 8n * P, P, f.buf.va), 'an unmapped IOVA');
    expectErrno('EINVAL', checkMap(md.hwpt, BASE + 0x400n, P, f.buf.va + 0x400n), 'not 2 KiB aligned');
    expectErrno('EINVAL', checkMap(md.hwpt, BASE, 0x400n, f.buf.va), 'length not a 2 KiB multiple');
    expectErrno('ENOENT', checkMap(ioas, BASE, P, f.buf.va), 'an IOAS id');

    // The IOAS alignment follows the smallest domain page: 2 KiB here, 4 KiB with VT-d.
    const half = fixedMap(ioas, f.buf.va + 4n * P + MOCK_PAGE, MOCK_PAGE, BASE + 8n * P + MOCK_PAGE);
    half();
    checkMap(md.hwpt, BASE + 8n * P + MOCK_PAGE, MOCK_PAGE, f.buf.va + 4n * P + MOCK_PAGE)();
    expectErrno(
      'EINVAL',
      fixedMap(ioas, f.buf.va + 5n * P + 0x400n, 0x400n, BASE + 10n * P + 0x400n),
      '1 KiB',
    );
    expectErrno('EINVAL', fixedMap(ioas, f.buf.va + 5n * P, P, 0x10_0000n), 'below the aperture');
    expectErrno('EINVAL', fixedMap(ioas, f.buf.va + 5n * P, 2n * P, LAST + 1n - P), 'across its end');
    const anywhere = f.iommufd.map(ioas, f.buf.va + 6n * P, 2n * P);
    expect(anywhere >= BASE && anywhere + 2n * P - 1n <= LAST, 'kernel-chosen IOVA in the aperture').to.equal(
      true,
    );
    checkMap(md.hwpt, anywhere, 2n * P, f.buf.va + 6n * P)();

    expect(f.iommufd.unmap(ioas, BASE, 4n * P)).to.equal(4n * P);
    expectErrno('EINVAL', checkMap(md.hwpt, BASE, P, f.buf.va), 'after the unmap');
    checkRefs(f.buf.va, 4n * P, 0)();
    f.iommufd.destroy(md.stdev);
    f.iommufd.destroy(ioas);
  });

  it('MOCK_DOMAIN_REPLACE: moves the mock device to a HWPT_ALLOC mock HWPT (the IOAS mapped into it at allocation: MD_CHECK_MAP), and back to the IOAS (a new automatic HWPT); the HWPT in use is busy; unknown pt -> ENOENT, an id that is no selftest device -> ENOENT', function () {
    const ioas = f.iommufd.ioasAlloc();
    const md = mock(ioas);
    f.iommufd.map(ioas, f.buf.va, 2n * P, BASE);
    const hwpt = hwptAlloc(md.idev, ioas);
    checkMap(hwpt, BASE, 2n * P, f.buf.va)();
    expect(replace(md.stdev, hwpt)).to.equal(hwpt);
    expectErrno('ENOENT', destroyReq(md.hwpt), 'the automatic HWPT went with its last device');
    expectErrno('EBUSY', destroyReq(hwpt), 'HWPT with the device attached');
    const back = replace(md.stdev, ioas);
    expect(back, 'a new automatic HWPT').to.not.be.oneOf([hwpt, ioas]);
    checkMap(back, BASE, 2n * P, f.buf.va)();
    expectErrno('ENOENT', replaceReq(md.stdev, 0x7fff_0000).call, 'unknown pt');
    expectErrno('ENOENT', replaceReq(ioas, hwpt).call, 'an IOAS id as device');
    f.iommufd.destroy(hwpt);
    f.iommufd.destroy(md.stdev);
    f.iommufd.unmap(ioas, BASE, 2n * P);
    f.iommufd.destroy(ioas);
  });

  it('dirty tracking end to end: HWPT_ALLOC(DIRTY_TRACKING), a device on it, SET_DIRTY_TRACKING on, IOMMU_TEST_OP_DIRTY marks every other 2 KiB page, GET_DIRTY_BITMAP reads exactly those bits (NO_CLEAR keeps them, a plain read clears them; at 4 KiB each page with a dirty half is dirty); with tracking off the read is refused (6.12.118; up to 6.12.117 it reported nothing), and so is a range past the mapping after its mapped part is read; turning it on starts clean; refusals: DIRTY while off -> EINVAL, a HWPT without dirty ops -> EOPNOTSUPP, a NO_DIRTY device -> EOPNOTSUPP / EINVAL, unknown flag -> EOPNOTSUPP', function () {
    const ioas = f.iommufd.ioasAlloc();
    const md = mock(ioas);
    const len = 16n * P;
    const pages = Number(len / MOCK_PAGE); // 32 bits of bitmap
    f.iommufd.map(ioas, f.buf.va, len, BASE);
    const hwpt = hwptAlloc(md.idev, ioas, A.ALLOC_DIRTY_TRACKING);
    const on = mock(hwpt);
    expect(on.hwpt).to.equal(hwpt);
    // A device whose IOMMU cannot track dirty pages may not join a tracking HWPT.
    expectErrno('EINVAL', mockReq(hwpt, MOCK_FLAGS_DEVICE.NO_DIRTY).call, 'NO_DIRTY device on it');

    const track = (id: number, flags: number) => {
      const t = iommu_hwpt_set_dirty_tracking.view().reset();
      t.hwpt_id = id;
      t.flags = flags;
      return () => f.port.ioctl(f.fd, IOMMU_HWPT_SET_DIRTY_TRACKING, t.bytes);
    };
    const marks = f.scratch.bytes.subarray(0, 8);
    const bitmap = f.scratch.bytes.subarray(64, 72);
    const dirty = () => {
      const c = iommu_test_cmd_dirty.view().reset();
      c.op = IOMMU_TEST_OP.DIRTY;
      c.id = hwpt;
      c.iova = BASE;
      c.length = len;
      c.page_size = MOCK_PAGE; // the op indexes mock pages by iova / page_size
      c.uptr = f.scratch.va;
      return { call: cmd(c.bytes), count: () => c.out_nr_dirty };
    };
    const read = (flags = 0, pageSize = MOCK_PAGE, iova = BASE) => {
      const g = iommu_hwpt_get_dirty_bitmap.view().reset();
      g.hwpt_id = hwpt;
      g.flags = flags;
      g.iova = iova;
      g.length = len;
      g.page_size = pageSize;
      g.data = f.scratch.va + 64n;
      bitmap.fill(0);
      return () => {
        f.port.ioctl(f.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, g.bytes);
        return [...bitmap];
      };
    };
    const none = [0, 0, 0, 0, 0, 0, 0, 0];
    marks.fill(0).fill(0x55, 0, pages / 8); // every even 2 KiB page
    expectErrno('EINVAL', dirty().call, 'DIRTY before tracking is on');
    // With tracking off the mock driver refuses the read (EINVAL). From 6.12.118 the ioctl
    // returns that error; up to 6.12.117 iommu_read_and_clear_dirty() dropped it and the ioctl
    // succeeded (src/kernel/release.ts). Either way nothing is written.
    const release = kernelRelease();
    const reports = linuxAtLeast(release, LINUX_CHANGES.dirtyBitmapErrors);
    const refusedOrEmpty = (call: () => number[], what: string) => {
      if (reports) {
        expectErrno('EINVAL', call, `${what} (Linux ${release})`);
        expect([...bitmap], `${what}: nothing written`).to.deep.equal(none);
      } else expect(call(), `${what} (Linux ${release})`).to.deep.equal(none);
    };
    refusedOrEmpty(read(), 'GET_DIRTY_BITMAP before tracking is on');

    track(hwpt, IOMMU_HWPT_DIRTY_TRACKING.ENABLE)();
    track(hwpt, IOMMU_HWPT_DIRTY_TRACKING.ENABLE)(); // already on: no change, no error
    const d = dirty();
    d.call();
    expect(d.count(), 'pages marked').to.equal(BigInt(pages / 2));
    const marked = [0x55, 0x55, 0x55, 0x55, 0, 0, 0, 0];
    const NO_CLEAR = IOMMU_HWPT_GET_DIRTY_BITMAP_FLAGS.NO_CLEAR;
    expect(read(NO_CLEAR)(), 'NO_CLEAR').to.deep.equal(marked);
    expect(read(NO_CLEAR)(), 'NO_CLEAR kept them').to.deep.equal(marked);
    expect(read()(), 'read and clear').to.deep.equal(marked);
    expect(read()(), 'cleared').to.deep.equal(none);
    dirty().call();
    expect(read(0, P)(), 'one bit per 4 KiB page').to.deep.equal([0xff, 0xff, 0, 0, 0, 0, 0, 0]);
    expectErrno('EOPNOTSUPP', read(2), 'unknown flag');
    // A range that runs past the mapping: the walk reads (and clears) the mapped half, then
    // stops at the hole: EINVAL from 6.12.118, 0 before; the mapped half's bits are written.
    read()(); // clear
    dirty().call();
    const past = read(0, MOCK_PAGE, BASE + len / 2n);
    const half = [0x55, 0x55, 0, 0, 0, 0, 0, 0];
    if (reports) expectErrno('EINVAL', past, `a range past the mapping (Linux ${release})`);
    else past();
    expect([...bitmap], 'the mapped half was read').to.deep.equal(half);
    expect(read(NO_CLEAR)(), 'and cleared: the first half is still dirty').to.deep.equal(half);

    dirty().call(); // left pending
    track(hwpt, 0)();
    refusedOrEmpty(read(), 'tracking off again');
    // Turning tracking on clears the domain's dirty bits first, for a clean snapshot.
    track(hwpt, IOMMU_HWPT_DIRTY_TRACKING.ENABLE)();
    expect(read()(), 'the pending marks are gone').to.deep.equal(none);
    track(hwpt, 0)();
    expectErrno(
      'EOPNOTSUPP',
      track(md.hwpt, IOMMU_HWPT_DIRTY_TRACKING.ENABLE),
      'HWPT without DIRTY_TRACKING',
    );
    const ioas2 = f.iommufd.ioasAlloc();
    const nd = mock(ioas2, MOCK_FLAGS_DEVICE.NO_DIRTY);
    expectErrno('EOPNOTSUPP', hwptCall(hwptReq(nd.idev, ioas2, A.ALLOC_DIRTY_TRACKING)), 'NO_DIRTY device');

    f.iommufd.destroy(nd.stdev);
    f.iommufd.destroy(ioas2);
    f.iommufd.destroy(on.stdev);
    f.iommufd.destroy(hwpt);
    f.iommufd.destroy(md.stdev);
    f.iommufd.unmap(ioas, BASE, len);
    f.iommufd.destroy(ioas);
  });

  it('nested mock HWPT: HWPT_ALLOC with IOMMU_HWPT_DATA_SELFTEST on a NEST_PARENT HWPT (iotlb 0xbadbeef in its 4 mock IOTLB entries), HWPT_INVALIDATE with IOMMU_HWPT_INVALIDATE_DATA_SELFTEST entries clears one entry, then all; a bad entry stops the batch (entry_num = entries done); the device attaches to it; FAULT_ID_VALID takes a fault queue; refusals of both ioctls', function () {
    const ioas = f.iommufd.ioasAlloc();
    const md = mock(ioas);
    const parent = hwptAlloc(md.idev, ioas, A.ALLOC_NEST_PARENT);
    const plain = hwptAlloc(md.idev, ioas);
    iommu_hwpt_selftest.view(f.scratch.bytes).iotlb = IOMMU_SELFTEST.TEST_IOTLB_DEFAULT;
    const nestedReq = (
      pt: number,
      o: Partial<{ type: number; len: number; uptr: bigint; flags: number }> = {},
    ) => {
      const h = hwptReq(md.idev, pt, o.flags ?? 0);
      h.data_type = o.type ?? IOMMU_SELFTEST.HWPT_DATA_SELFTEST;
      h.data_len = o.len ?? iommu_hwpt_selftest.size;
      h.data_uptr = o.uptr ?? f.scratch.va;
      return h;
    };
    const nested = nestedReq(parent);
    f.port.ioctl(f.fd, IOMMU_HWPT_ALLOC, nested.bytes);
    const n1 = nested.out_hwpt_id;
    expect(iotlbs(n1), 'every mock IOTLB entry holds the given value').to.deep.equal(
      new Array(IOTLB_NUM).fill(IOMMU_SELFTEST.TEST_IOTLB_DEFAULT),
    );
    expectErrno('EINVAL', checkIotlb(n1, IOTLB_NUM, 0), 'MD_CHECK_IOTLB past the last entry');
    expectErrno('EINVAL', hwptCall(nestedReq(plain)), 'on a HWPT that is no NEST_PARENT');
    expectErrno('EINVAL', hwptCall(nestedReq(n1)), 'on a nested HWPT');
    expectErrno('EINVAL', hwptCall(nestedReq(parent, { type: IOMMU_HWPT_DATA.NONE })), 'data with type NONE');
    expectErrno('EOPNOTSUPP', hwptCall(nestedReq(parent, { type: IOMMU_HWPT_DATA.VTD_S1 })), 'VTD_S1 data');
    expectErrno('EINVAL', hwptCall(nestedReq(parent, { len: 3 })), 'data shorter than iotlb');
    expectErrno('EFAULT', hwptCall(nestedReq(parent, { uptr: 0n })), 'no data pointer');
    expectErrno(
      'EOPNOTSUPP',
      hwptCall(nestedReq(parent, { flags: A.ALLOC_NEST_PARENT })),
      'nested + NEST_PARENT',
    );
    expectErrno('EBUSY', destroyReq(parent), 'parent under a nested HWPT');

    const entries = iommu_hwpt_invalidate_selftest.size;
    const entry = (i: number, flags: number, id: number) => {
      const e = iommu_hwpt_invalidate_selftest.view(f.scratch.bytes, 1024 + i * entries);
      e.flags = flags;
      e.iotlb_id = id;
    };
    const inv = (hwpt: number, num: number, type: number = IOMMU_SELFTEST.HWPT_INVALIDATE_DATA_SELFTEST) => {
      const v = iommu_hwpt_invalidate.view().reset();
      v.hwpt_id = hwpt;
      v.data_type = type;
      v.data_uptr = f.scratch.va + 1024n;
      v.entry_len = entries;
      v.entry_num = num;
      return { call: () => f.port.ioctl(f.fd, IOMMU_HWPT_INVALIDATE, v.bytes), done: () => v.entry_num };
    };
    const D = IOMMU_SELFTEST.TEST_IOTLB_DEFAULT;
    entry(0, 0, 1);
    const one = inv(n1, 1);
    one.call();
    expect(one.done()).to.equal(1);
    expect(iotlbs(n1)).to.deep.equal([D, 0, D, D]);
    inv(n1, 0).call(); // an empty batch checks the type only

    const refused = (
      what: string,
      errno: 'EINVAL' | 'EOPNOTSUPP' | 'ENOENT',
      r: ReturnType<typeof inv>,
      done: number,
    ) => {
      expectErrno(errno, r.call, what);
      expect(r.done(), `${what}: entries done`).to.equal(done);
    };
    refused('a paging (parent) HWPT', 'ENOENT', inv(parent, 1), 0);
    refused('unknown data type', 'EINVAL', inv(n1, 1, INVALIDATE_DATA_SELFTEST_INVALID), 0);
    entry(0, 0, IOTLB_NUM);
    refused('iotlb_id past the last entry', 'EINVAL', inv(n1, 1), 0);
    entry(0, 0, 2);
    entry(1, 0xffff_ffff, 3);
    refused('second entry with unknown flags', 'EOPNOTSUPP', inv(n1, 2), 1);
    expect(iotlbs(n1), 'the first entry was done').to.deep.equal([D, 0, 0, D]);
    entry(0, INVALIDATE_FLAG_ALL, 0);
    inv(n1, 1).call();
    expect(iotlbs(n1), 'FLAG_ALL').to.deep.equal([0, 0, 0, 0]);

    expect(replace(md.stdev, n1), 'the device on the nested HWPT').to.equal(n1);
    expectErrno('EBUSY', destroyReq(n1), 'nested HWPT in use');
    replace(md.stdev, ioas);

    // 6.12 takes a fault queue only for nested HWPTs (VT-d paging HWPTs refuse FAULT_ID_VALID).
    const q = iommu_fault_alloc.view().reset();
    f.port.ioctl(f.fd, IOMMU_FAULT_QUEUE_ALLOC, q.bytes);
    const qfd = f.res.adopt(q.out_fault_fd);
    const withFault = nestedReq(parent, { flags: A.FAULT_ID_VALID });
    withFault.fault_id = q.out_fault_id;
    f.port.ioctl(f.fd, IOMMU_HWPT_ALLOC, withFault.bytes);
    f.res.close(qfd);
    expectErrno('EBUSY', destroyReq(q.out_fault_id), 'fault queue (fd closed) under a HWPT');
    const badFault = nestedReq(parent, { flags: A.FAULT_ID_VALID });
    badFault.fault_id = 0x7fff_0000;
    expectErrno('ENOENT', hwptCall(badFault), 'unknown fault queue');

    for (const id of [withFault.out_hwpt_id, n1, parent, plain, md.stdev]) f.iommufd.destroy(id);
    f.iommufd.destroy(q.out_fault_id);
    f.iommufd.destroy(ioas);
  });
});
