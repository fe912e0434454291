// The simulated kernel's iommufd, part 3: dirty tracking, HWPT invalidation, fault queues,
// the selftest's in-kernel accesses, the VFIO compatibility ioctls, and scale.
import { expect } from 'chai';
import {
  VFIO_CHECK_EXTENSION,
  VFIO_EXTENSION,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
} from '../src/uapi/vfio.js';
import {
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_FLAGS as HF,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_FLAGS,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_MAP_FLAGS as F,
  IOMMU_OPTION,
  IOMMU_OPTION_ID,
  IOMMU_VFIO_IOAS,
  iommu_fault_alloc,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_invalidate,
  iommu_hwpt_set_dirty_tracking,
  iommu_option,
  iommu_vfio_ioas,
} from '../src/uapi/index.js';
import {
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP,
  iommu_test_cmd_access_pages,
  iommu_test_cmd_access_replace_ioas,
  iommu_test_cmd_access_rw,
  iommu_test_cmd_check_iotlb,
  iommu_test_cmd_create_access,
  iommu_test_cmd_destroy_access_pages,
  iommu_test_cmd_dirty,
  iommu_test_cmd_memory_limit,
  MOCK_FLAGS_DEVICE,
} from '../src/uapi/iommufd-test.js';
import { defaultTopology } from '../src/kernel/topology.js';
import { expectErrno, FakeDevice, MOCK_PAGE, MOCK_START, PAGE, RW, Sim, U64_MAX } from './sim-iommufd-kit.js';

// What GET_DIRTY_BITMAP answers when the walk fails changed in 6.12 stable (src/kernel/release.ts):
// the simulation gives the answer of the release its topology names.
describe('sim iommufd: GET_DIRTY_BITMAP errors by Linux release (6.12.117 drops them, 6.12.118 returns them)', function () {
  for (const linux of ['6.12.117', '6.12.118']) {
    const reports = linux === '6.12.118';
    it(`${linux}: tracking off -> ${reports ? 'EINVAL' : '0'}, nothing written; a range running past the mapping -> ${reports ? 'EINVAL' : '0'} after the mapped part's bits are written and cleared; an unmapped range -> ${reports ? 'EINVAL' : '0'}`, function () {
      const sim = new Sim({ ...defaultTopology(), linux });
      try {
        const buf = sim.memfd(8n * MOCK_PAGE);
        const ioas = sim.ioasAlloc();
        const { idev } = sim.mockDomain(ioas);
        sim.map(ioas, buf, 8n * MOCK_PAGE, MOCK_START);
        const a = iommu_hwpt_alloc.view().reset();
        a.flags = HF.ALLOC_DIRTY_TRACKING;
        a.dev_id = idev;
        a.pt_id = ioas;
        sim.port.ioctl(sim.fd, IOMMU_HWPT_ALLOC, a.bytes);
        const hwpt = a.out_hwpt_id;
        sim.mockDomain(hwpt);
        const bitmap = sim.scratch();
        const bits = sim.bytes(bitmap, 8);
        const read =
          (iova: bigint, pages: bigint, flags = 0) =>
          () => {
            const g = iommu_hwpt_get_dirty_bitmap.view().reset();
            g.hwpt_id = hwpt;
            g.iova = iova;
            g.length = pages * MOCK_PAGE;
            g.page_size = MOCK_PAGE;
            g.data = bitmap;
            g.flags = flags;
            bits.fill(0);
            sim.port.ioctl(sim.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, g.bytes);
          };
        const answer = (call: () => void, what: string) => {
          if (reports) expectErrno('EINVAL', call, what);
          else call();
        };
        answer(read(MOCK_START, 8n), 'tracking off');
        expect([...bits], 'tracking off: nothing written').to.deep.equal(new Array(8).fill(0));

        const t = iommu_hwpt_set_dirty_tracking.view().reset();
        t.hwpt_id = hwpt;
        t.flags = 1;
        sim.port.ioctl(sim.fd, IOMMU_HWPT_SET_DIRTY_TRACKING, t.bytes);
        bits[0] = 0xff; // every mapped mock page dirty
        sim.testCmd(iommu_test_cmd_dirty, IOMMU_TEST_OP.DIRTY, hwpt, (v) => {
          v.iova = MOCK_START;
          v.length = 8n * MOCK_PAGE;
          v.page_size = MOCK_PAGE;
          v.uptr = bitmap;
        });
        answer(read(MOCK_START + 4n * MOCK_PAGE, 8n), 'pages 4..11, mapped up to 7');
        expect(bits[0], 'pages 4..7 reported either way').to.equal(0x0f);
        read(MOCK_START, 8n, IOMMU_HWPT_GET_DIRTY_BITMAP_FLAGS.NO_CLEAR)();
        expect(bits[0], 'pages 4..7 were cleared, 0..3 still dirty').to.equal(0x0f);
        answer(read(MOCK_START + 8n * MOCK_PAGE, 8n), 'nothing mapped');
        expect(bits[0]).to.equal(0);
      } finally {
        sim.close();
      }
    });
  }
});

describe('sim iommufd: dirty tracking with mock domains (selftest iommufd_dirty_tracking)', function () {
  const f = Sim.fixture({ buf: 128n * PAGE, checkPins: true });
  let idev: number;
  let stdev: number;
  beforeEach(function () {
    ({ idev, stdev } = f.sim.mockDomain(f.sim.ioasAlloc()));
  });

  function dirtyHwpt(ioas: number, flags: number = HF.ALLOC_DIRTY_TRACKING, dev = idev): number {
    const a = iommu_hwpt_alloc.view().reset();
    a.flags = flags;
    a.dev_id = dev;
    a.pt_id = ioas;
    f.sim.port.ioctl(f.sim.fd, IOMMU_HWPT_ALLOC, a.bytes);
    return a.out_hwpt_id;
  }
  function setTracking(hwpt: number, on: boolean) {
    const s = iommu_hwpt_set_dirty_tracking.view().reset();
    s.hwpt_id = hwpt;
    s.flags = on ? 1 : 0;
    f.sim.port.ioctl(f.sim.fd, IOMMU_HWPT_SET_DIRTY_TRACKING, s.bytes);
  }
  function getBitmap(hwpt: number, iova: bigint, length: bigint, pageSize: bigint, data: bigint, flags = 0) {
    const g = iommu_hwpt_get_dirty_bitmap.view().reset();
    g.hwpt_id = hwpt;
    g.iova = iova;
    g.length = length;
    g.page_size = pageSize;
    g.data = data;
    g.flags = flags;
    f.sim.port.ioctl(f.sim.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, g.bytes);
  }

  it('enforce_dirty: a NO_DIRTY device cannot attach to a dirty HWPT (EINVAL) nor allocate one (EOPNOTSUPP) (B5 #25)', function () {
    const ioas = f.sim.ioasAlloc();
    const hwpt = dirtyHwpt(ioas);
    const ok = f.sim.mockDomain(hwpt);
    expectErrno('EINVAL', () => f.sim.mockDomain(hwpt, MOCK_FLAGS_DEVICE.NO_DIRTY));
    f.sim.destroy(ok.stdev);
    f.sim.destroy(hwpt);
    const other = f.sim.ioasAlloc();
    const nd = f.sim.mockDomain(other, MOCK_FLAGS_DEVICE.NO_DIRTY);
    expectErrno('EOPNOTSUPP', () => dirtyHwpt(other, HF.ALLOC_DIRTY_TRACKING, nd.idev));
    expectErrno('EINVAL', () => f.sim.mockDomain(other, 1 << 5), 'unknown mock device flag');
  });

  it('DIRTY marks mapped pages, GET_DIRTY_BITMAP reports them and clears them unless NO_CLEAR', function () {
    const ioas = f.sim.ioasAlloc();
    const length = 64n * MOCK_PAGE;
    f.sim.map(ioas, f.buf, length, MOCK_START);
    const hwpt = dirtyHwpt(ioas);
    const bitmap = f.sim.scratch();
    const bits = f.sim.bytes(bitmap, 16);
    // Tracking off: the DIRTY op refuses; GET_DIRTY_BITMAP succeeds and reports nothing.
    bits.fill(0x55, 0, 8);
    expectErrno('EINVAL', () =>
      f.sim.testCmd(iommu_test_cmd_dirty, IOMMU_TEST_OP.DIRTY, hwpt, (v) => {
        v.iova = MOCK_START;
        v.length = length;
        v.page_size = MOCK_PAGE;
        v.uptr = bitmap;
      }),
    );
    setTracking(hwpt, true);
    const d = f.sim.testCmd(iommu_test_cmd_dirty, IOMMU_TEST_OP.DIRTY, hwpt, (v) => {
      v.iova = MOCK_START;
      v.length = length;
      v.page_size = MOCK_PAGE;
      v.uptr = bitmap;
    });
    expect(d.out_nr_dirty).to.equal(32n);
    bits.fill(0);
    getBitmap(hwpt, MOCK_START, length, MOCK_PAGE, bitmap, 1);
    expect([...bits.subarray(0, 8)]).to.deep.equal(new Array(8).fill(0x55));
    bits.fill(0);
    getBitmap(hwpt, MOCK_START, length, MOCK_PAGE, bitmap);
    expect([...bits.subarray(0, 8)]).to.deep.equal(new Array(8).fill(0x55));
    bits.fill(0);
    getBitmap(hwpt, MOCK_START, length, MOCK_PAGE, bitmap);
    expect([...bits.subarray(0, 8)], 'cleared by the previous read').to.deep.equal(new Array(8).fill(0));
    // A 4 KiB bitmap page: each dirty 2 KiB page sets the bit of its 4 KiB page.
    bits.fill(0x01, 0, 8);
    f.sim.testCmd(iommu_test_cmd_dirty, IOMMU_TEST_OP.DIRTY, hwpt, (v) => {
      v.iova = MOCK_START;
      v.length = length;
      v.page_size = MOCK_PAGE;
      v.uptr = bitmap;
    });
    bits.fill(0);
    getBitmap(hwpt, MOCK_START, length, PAGE, bitmap);
    expect([...bits.subarray(0, 4)]).to.deep.equal([0x11, 0x11, 0x11, 0x11]);
    // Checks: alignment, page_size, flags; a non-dirty HWPT is EOPNOTSUPP.
    const bad =
      (iova: bigint, len: bigint, ps: bigint, flags = 0) =>
      () =>
        getBitmap(hwpt, iova, len, ps, bitmap, flags);
    expectErrno('EINVAL', bad(MOCK_START, 0n, MOCK_PAGE), 'length 0');
    expectErrno('EINVAL', bad(MOCK_START + 1n, MOCK_PAGE, MOCK_PAGE), 'unaligned');
    expectErrno('EINVAL', bad(MOCK_START, MOCK_PAGE, 0n), 'page_size 0');
    expectErrno('EINVAL', bad(MOCK_START, MOCK_PAGE, PAGE), 'length not a page_size multiple');
    expectErrno('EOVERFLOW', bad(U64_MAX - MOCK_PAGE + 1n, 2n * MOCK_PAGE, MOCK_PAGE), 'wraps');
    expectErrno('EOPNOTSUPP', bad(MOCK_START, MOCK_PAGE, MOCK_PAGE, 2), 'flags');
    const plain = dirtyHwpt(ioas, 0);
    expectErrno(
      'EOPNOTSUPP',
      () => getBitmap(plain, MOCK_START, MOCK_PAGE, MOCK_PAGE, bitmap),
      'no dirty ops',
    );
    expectErrno('EOPNOTSUPP', () => setTracking(plain, true), 'SET_DIRTY_TRACKING without dirty ops');
    expectErrno('ENOENT', () => setTracking(ioas, true), 'an IOAS is no HWPT');
    const s = iommu_hwpt_set_dirty_tracking.view().reset();
    s.hwpt_id = hwpt;
    s.flags = 2;
    expectErrno(
      'EOPNOTSUPP',
      () => f.sim.port.ioctl(f.sim.fd, IOMMU_HWPT_SET_DIRTY_TRACKING, s.bytes),
      'flags',
    );
    f.sim.destroy(plain);
    f.sim.destroy(hwpt);
    f.sim.destroy(stdev);
  });

  it('unmapping drops the dirty bits of the range', function () {
    const ioas = f.sim.ioasAlloc();
    f.sim.map(ioas, f.buf, 8n * MOCK_PAGE, MOCK_START);
    const hwpt = dirtyHwpt(ioas);
    setTracking(hwpt, true);
    const bitmap = f.sim.scratch();
    f.sim.bytes(bitmap, 1)[0] = 0xff;
    f.sim.testCmd(iommu_test_cmd_dirty, IOMMU_TEST_OP.DIRTY, hwpt, (v) => {
      v.iova = MOCK_START;
      v.length = 8n * MOCK_PAGE;
      v.page_size = MOCK_PAGE;
      v.uptr = bitmap;
    });
    f.sim.unmap(ioas, MOCK_START, 8n * MOCK_PAGE);
    f.sim.map(ioas, f.buf, 8n * MOCK_PAGE, MOCK_START);
    f.sim.bytes(bitmap, 1)[0] = 0;
    getBitmap(hwpt, MOCK_START, 8n * MOCK_PAGE, MOCK_PAGE, bitmap);
    expect(f.sim.bytes(bitmap, 1)[0]).to.equal(0);
  });
});

describe('sim iommufd: invalidation, fault queues, selftest odds and ends', function () {
  const f = Sim.fixture();

  it('HWPT_INVALIDATE: only nested HWPTs take it, so a paging HWPT is ENOENT; entry_num is written back 0 even on failure', function () {
    const ioas = f.sim.ioasAlloc();
    const { hwpt } = f.sim.mockDomain(ioas);
    const inv = iommu_hwpt_invalidate.view().reset();
    inv.hwpt_id = hwpt;
    inv.entry_num = 0;
    expectErrno('ENOENT', () => f.sim.port.ioctl(f.sim.fd, IOMMU_HWPT_INVALIDATE, inv.bytes), 'paging HWPT');
    inv.entry_num = 3;
    expectErrno(
      'EINVAL',
      () => f.sim.port.ioctl(f.sim.fd, IOMMU_HWPT_INVALIDATE, inv.bytes),
      'entries without data',
    );
    expect(inv.entry_num).to.equal(0);
    inv.entry_num = 3;
    inv.__reserved = 1;
    expectErrno(
      'EOPNOTSUPP',
      () => f.sim.port.ioctl(f.sim.fd, IOMMU_HWPT_INVALIDATE, inv.bytes),
      '__reserved',
    );
    expect(inv.entry_num).to.equal(0);
  });

  it('FAULT_QUEUE_ALLOC: an object and an fd; pread is ESPIPE (anon inode); the object is busy while the fd is open', function () {
    const fa = iommu_fault_alloc.view().reset();
    f.sim.port.ioctl(f.sim.fd, IOMMU_FAULT_QUEUE_ALLOC, fa.bytes);
    expect(fa.out_fault_id).to.equal(1);
    expect(fa.out_fault_fd).to.be.above(2);
    expectErrno('ESPIPE', () => f.sim.port.pread(fa.out_fault_fd, new Uint8Array(40), 0n));
    expectErrno('EBUSY', () => f.sim.destroy(fa.out_fault_id));
    f.sim.port.close(fa.out_fault_fd);
    f.sim.destroy(fa.out_fault_id);
    const bad = iommu_fault_alloc.view().reset();
    bad.flags = 1;
    expectErrno('EOPNOTSUPP', () => f.sim.port.ioctl(f.sim.fd, IOMMU_FAULT_QUEUE_ALLOC, bad.bytes));
  });

  it('unknown test op -> EOPNOTSUPP; SET_TEMP_MEMORY_LIMIT checks its floor; MD_CHECK_IOTLB finds no nested HWPT', function () {
    expectErrno('EOPNOTSUPP', () => f.sim.testCmd(iommu_test_cmd_memory_limit, 99, 0));
    expectErrno('EINVAL', () =>
      f.sim.testCmd(iommu_test_cmd_memory_limit, IOMMU_TEST_OP.SET_TEMP_MEMORY_LIMIT, 0),
    );
    f.sim.testCmd(iommu_test_cmd_memory_limit, IOMMU_TEST_OP.SET_TEMP_MEMORY_LIMIT, 0, (v) => {
      v.limit = 65536;
    });
    expectErrno('ENOENT', () => f.sim.testCmd(iommu_test_cmd_check_iotlb, IOMMU_TEST_OP.MD_CHECK_IOTLB, 1));
  });
});

describe('sim iommufd: selftest accesses', function () {
  const f = Sim.fixture({ buf: 16n * PAGE, checkPins: true, checkLocked: true });

  function createAccess(ioas: number, pin = true): number {
    return f.sim.testCmd(iommu_test_cmd_create_access, IOMMU_TEST_OP.CREATE_ACCESS, ioas, (v) => {
      v.flags = pin ? 1 : 0;
    }).out_access_fd;
  }
  function accessPages(access: number, iova: bigint, length: bigint, uptr = 0n, flags = 0): number {
    return f.sim.testCmd(iommu_test_cmd_access_pages, IOMMU_TEST_OP.ACCESS_PAGES, access, (v) => {
      v.iova = iova;
      v.length = length;
      v.uptr = uptr;
      v.flags = flags;
    }).out_access_pages_id;
  }
  function destroyItem(access: number, id: number) {
    f.sim.testCmd(iommu_test_cmd_destroy_access_pages, IOMMU_TEST_OP.DESTROY_ACCESS_PAGES, access, (v) => {
      v.access_pages_id = id;
    });
  }

  it('ACCESS_PAGES pins in a domain-less IOAS; the same range twice shares the pin; unmap makes the access drop it (access_pin_unmap)', function () {
    const ioas = f.sim.ioasAlloc();
    const access = createAccess(ioas);
    const iova = f.sim.map(ioas, f.buf, 8n * PAGE, MOCK_START);
    const a = accessPages(access, iova + PAGE, 2n * PAGE, f.buf + PAGE);
    f.sim.checkRefs(f.buf + PAGE, 2n * PAGE, 1);
    f.sim.checkRefs(f.buf, PAGE, 0);
    const b = accessPages(access, iova + PAGE, 2n * PAGE);
    f.sim.checkRefs(f.buf + PAGE, 2n * PAGE, 1);
    destroyItem(access, b);
    destroyItem(access, a);
    f.sim.checkRefs(f.buf, 8n * PAGE, 0);
    expectErrno('ENOENT', () => destroyItem(access, a), 'already gone');
    const c = accessPages(access, iova, 8n * PAGE, f.buf);
    // A domain joins: the pages are already pinned, no second pin.
    const m = f.sim.mockDomain(ioas);
    f.sim.checkRefs(f.buf, 8n * PAGE, 1);
    f.sim.checkMap(m.hwpt, iova, 8n * PAGE, f.buf);
    f.sim.destroy(m.stdev);
    f.sim.checkRefs(f.buf, 8n * PAGE, 1);
    // The IOAS is busy while the access is attached.
    expectErrno('EBUSY', () => f.sim.destroy(ioas));
    f.sim.unmap(ioas, iova, 8n * PAGE);
    expectErrno('ENOENT', () => destroyItem(access, c), 'the unmap removed the item');
    f.sim.checkRefs(f.buf, 8n * PAGE, 0);
    f.sim.port.close(access);
    f.sim.destroy(ioas);
  });

  it('ACCESS_PAGES checks: EBADFD for other fds, EOPNOTSUPP without pin ops or with bad flags, ENOENT unmapped, EPERM read-only for write, EINVAL unaligned', function () {
    const ioas = f.sim.ioasAlloc();
    const noPin = createAccess(ioas, false);
    const access = createAccess(ioas);
    f.sim.map(ioas, f.buf, 4n * PAGE, MOCK_START);
    f.sim.map(ioas, f.buf, PAGE, MOCK_START + 0x10_0000n, F.READABLE);
    expectErrno(77, () => accessPages(f.sim.fd, MOCK_START, PAGE), 'the iommufd fd');
    expectErrno('EOPNOTSUPP', () => accessPages(noPin, MOCK_START, PAGE));
    expectErrno('EOPNOTSUPP', () => accessPages(access, MOCK_START, PAGE, 0n, 1 << 3));
    expectErrno('ENOENT', () => accessPages(access, MOCK_START, 8n * PAGE), 'beyond the area');
    expectErrno('ENOENT', () => accessPages(access, 0x1000n, PAGE), 'nothing mapped');
    expectErrno('EPERM', () => accessPages(access, MOCK_START + 0x10_0000n, PAGE, 0n, 1), 'write, read-only');
    expectErrno('EINVAL', () => accessPages(access, MOCK_START + 0x800n, PAGE), 'unaligned');
    expectErrno('EINVAL', () => accessPages(access, MOCK_START, 0n), 'length 0');
    expectErrno('ENOMEM', () => accessPages(access, MOCK_START, (16n << 20n) + 1n), 'beyond 16 MiB');
    expectErrno(
      52,
      () => accessPages(access, MOCK_START, PAGE, f.buf + PAGE),
      'uptr is another page (EBADE)',
    );
    f.sim.checkRefs(f.buf, 4n * PAGE, 0);
    f.sim.port.close(noPin);
    f.sim.port.close(access);
    f.sim.unmap(ioas, 0n, U64_MAX);
  });

  it('ACCESS_RW reads and writes through the IOAS, unaligned and across areas (check_access_rw)', function () {
    const ioas = f.sim.ioasAlloc();
    const access = createAccess(ioas, false);
    const bytes = f.sim.bytes(f.buf, Number(8n * PAGE));
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7) & 0xff;
    f.sim.map(ioas, f.buf, 4n * PAGE, MOCK_START + MOCK_PAGE);
    f.sim.map(ioas, f.buf + 4n * PAGE, 4n * PAGE, MOCK_START + MOCK_PAGE + 4n * PAGE);
    const tmp = f.sim.scratch();
    const rw = (iova: bigint, length: bigint, flags = 0) =>
      f.sim.testCmd(iommu_test_cmd_access_rw, IOMMU_TEST_OP.ACCESS_RW, access, (v) => {
        v.iova = iova;
        v.length = length;
        v.uptr = tmp;
        v.flags = flags;
      });
    const at = MOCK_START + MOCK_PAGE + 4n * PAGE - 50n;
    rw(at, 100n);
    expect([...f.sim.bytes(tmp, 100)]).to.deep.equal([...bytes.subarray(4 * 4096 - 50, 4 * 4096 + 50)]);
    f.sim.bytes(tmp, 100).fill(0xee);
    rw(at, 100n, 1);
    expect(bytes[4 * 4096 - 50]).to.equal(0xee);
    expect(bytes[4 * 4096 + 49]).to.equal(0xee);
    rw(at, 100n, 4); // SLOW_PATH reads the same
    expectErrno('ENOENT', () => rw(MOCK_START, 16n), 'nothing mapped');
    expectErrno('EINVAL', () => rw(at, 0n), 'length 0');
    expectErrno('EOPNOTSUPP', () => rw(at, 4n, 8), 'flags');
    f.sim.port.close(access);
    f.sim.unmap(ioas, 0n, U64_MAX);
  });

  it('ACCESS_REPLACE_IOAS moves the access, dropping its pins in the old IOAS (selftest user_copy)', function () {
    const a = f.sim.ioasAlloc();
    const b = f.sim.ioasAlloc();
    const access = createAccess(a);
    f.sim.map(a, f.buf, 4n * PAGE, MOCK_START);
    f.sim.map(b, f.buf, 4n * PAGE, MOCK_START);
    const item = accessPages(access, MOCK_START, 4n * PAGE, f.buf);
    f.sim.checkRefs(f.buf, 4n * PAGE, 1);
    const replace = (ioas: number) =>
      f.sim.testCmd(iommu_test_cmd_access_replace_ioas, IOMMU_TEST_OP.ACCESS_REPLACE_IOAS, access, (v) => {
        v.ioas_id = ioas;
      });
    expectErrno('ENOENT', () => replace(99));
    replace(b);
    f.sim.checkRefs(f.buf, 4n * PAGE, 0);
    expectErrno('ENOENT', () => destroyItem(access, item), 'unmapped by the move');
    f.sim.destroy(a);
    expectErrno('EBUSY', () => f.sim.destroy(b));
    accessPages(access, MOCK_START, 4n * PAGE, f.buf);
    f.sim.checkRefs(f.buf, 4n * PAGE, 1);
    f.sim.port.close(access);
    f.sim.checkRefs(f.buf, 4n * PAGE, 0);
    f.sim.destroy(b);
  });

  it('closing the access fd unpins its items; closing the iommufd first defers the teardown', function () {
    const ioas = f.sim.ioasAlloc();
    const access = createAccess(ioas);
    f.sim.map(ioas, f.buf, 4n * PAGE, MOCK_START);
    accessPages(access, MOCK_START, 4n * PAGE);
    f.sim.close();
    expect(f.sim.kernel.mem.pinCount, 'the access holds the context').to.equal(1);
    f.sim.port.close(access);
    expect(f.sim.kernel.mem.pinCount).to.equal(0);
    (f.sim as unknown as { fd: number }).fd = f.sim.port.open('/dev/iommu', 2);
  });
});

describe('sim iommufd: VFIO compatibility ioctls on /dev/iommu', function () {
  it('API version, extensions, SET_IOMMU, MAP_DMA/UNMAP_DMA (empty unmap succeeds), GET_INFO with capabilities', function () {
    const sim = new Sim();
    const buf = sim.memfd(8n * PAGE);
    expect(sim.port.ioctl(sim.fd, VFIO_GET_API_VERSION)).to.equal(0);
    expect(sim.port.ioctl(sim.fd, VFIO_CHECK_EXTENSION, VFIO_EXTENSION.TYPE1v2_IOMMU)).to.equal(1);
    expect(sim.port.ioctl(sim.fd, VFIO_CHECK_EXTENSION, VFIO_EXTENSION.UPDATE_VADDR)).to.equal(0);
    expectErrno(
      'ENODEV',
      () => sim.port.ioctl(sim.fd, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU),
      'no compat IOAS',
    );
    expectErrno('EINVAL', () => sim.port.ioctl(sim.fd, VFIO_SET_IOMMU, VFIO_EXTENSION.SPAPR_TCE_IOMMU));
    const ioas = sim.ioasAlloc();
    const v = iommu_vfio_ioas.view().reset();
    v.op = 1;
    v.ioas_id = ioas;
    sim.port.ioctl(sim.fd, IOMMU_VFIO_IOAS, v.bytes);
    sim.port.ioctl(sim.fd, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU);
    // Type1 v1 turns huge pages off (PAGE_SIZE alignment); v2 has them.
    sim.port.ioctl(sim.fd, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1_IOMMU);
    expect(sim.iovaRanges(ioas).alignment).to.equal(PAGE);
    const on = iommu_option.view().reset();
    on.option_id = IOMMU_OPTION_ID.HUGE_PAGES;
    on.object_id = ioas;
    on.val64 = 1n;
    sim.port.ioctl(sim.fd, IOMMU_OPTION, on.bytes);
    expect(sim.port.ioctl(sim.fd, VFIO_CHECK_EXTENSION, VFIO_EXTENSION.DMA_CC_IOMMU)).to.equal(1);
    const m = vfio_iommu_type1_dma_map.view().reset();
    m.flags = 3;
    m.vaddr = buf;
    m.iova = 0x10_0000n;
    m.size = 4n * PAGE;
    sim.port.ioctl(sim.fd, VFIO_IOMMU_MAP_DMA, m.bytes);
    expectErrno('EEXIST', () => sim.port.ioctl(sim.fd, VFIO_IOMMU_MAP_DMA, m.bytes));
    const u = vfio_iommu_type1_dma_unmap.view().reset();
    u.iova = 0x20_0000n;
    u.size = PAGE;
    sim.port.ioctl(sim.fd, VFIO_IOMMU_UNMAP_DMA, u.bytes);
    expect(u.size, 'empty range: success, 0').to.equal(0n);
    u.iova = 0x10_0000n;
    u.size = 4n * PAGE;
    sim.port.ioctl(sim.fd, VFIO_IOMMU_UNMAP_DMA, u.bytes);
    expect(u.size).to.equal(4n * PAGE);
    // GET_INFO: first with the bare struct (argsz tells the full size), then with room.
    const info = vfio_iommu_type1_info.view().reset();
    sim.port.ioctl(sim.fd, VFIO_IOMMU_GET_INFO, info.bytes);
    expect(info.flags).to.equal(3);
    expect(info.iova_pgsizes).to.equal(U64_MAX & ~(PAGE - 1n));
    expect(info.argsz).to.equal(24 + 16 + 32);
    expect(info.cap_offset).to.equal(0);
    const full = new Uint8Array(info.argsz);
    const fi = vfio_iommu_type1_info.view(full).reset();
    fi.argsz = full.byteLength;
    sim.port.ioctl(sim.fd, VFIO_IOMMU_GET_INFO, full);
    expect(fi.cap_offset).to.equal(24);
    const dv = new DataView(full.buffer);
    expect(dv.getUint16(24, true), 'DMA_AVAIL first').to.equal(3);
    expect(dv.getUint32(28, true), 'next').to.equal(40);
    expect(dv.getUint32(32, true)).to.equal(0xffff_ffff);
    expect(dv.getUint16(40, true), 'IOVA_RANGE').to.equal(1);
    expect(dv.getUint32(48, true), 'nr_iovas').to.equal(1);
    expect(dv.getBigUint64(64, true)).to.equal(U64_MAX);
    expectErrno(
      'ENOTTY',
      () => sim.port.ioctl(sim.fd, { ...VFIO_GET_API_VERSION, request: 0x3b75 }),
      'DIRTY_PAGES',
    );
    sim.close();
  });
});

describe('sim iommufd: scale', function () {
  it('100,000 fixed maps in one IOAS: map, translate, kernel-chosen IOVAs past them, unmap-all, in seconds', function () {
    this.timeout(60000);
    const sim = new Sim();
    const buf = sim.memfd(PAGE);
    const f = sim.file();
    const dev = new FakeDevice(sim.kernel.topology);
    const ioas = sim.ioasAlloc();
    const devId = f.bindDevice(dev);
    f.attachDevice(devId, ioas);
    const n = 100_000;
    const t0 = Date.now();
    // Every other page, in a scattered order.
    for (let i = 0; i < n; i++) {
      const k = BigInt((i * 7919) % n);
      sim.map(ioas, buf, PAGE, 0x1_0000_0000n + k * 2n * PAGE);
    }
    const t = dev.translator!;
    for (let i = 0; i < n; i += 97) {
      expect(t.translate(0x1_0000_0000n + BigInt(i) * 2n * PAGE + 8n, 8, true)).to.equal(buf + 8n);
      expect(t.translate(0x1_0000_0000n + BigInt(i) * 2n * PAGE + PAGE, 8, true)).to.equal(null);
    }
    // Kernel-chosen IOVAs for 2-page maps cannot use the 1-page holes: they land past them, fast.
    const iova = sim.map(ioas, buf, PAGE);
    expect(iova).to.equal(0x1000n);
    expect(sim.kernel.mem.pinCount).to.equal(n + 1);
    expect(sim.unmap(ioas, 0n, U64_MAX)).to.equal(BigInt(n + 1) * PAGE);
    expect(sim.kernel.mem.pinCount).to.equal(0);
    const ms = Date.now() - t0;
    expect(ms, `${ms} ms`).to.be.below(30000);
    f.unbindDevice(devId);
    sim.close();
  });

  it('kernel-chosen IOVAs among many areas skip whole chunks whose holes are too small', function () {
    this.timeout(60000);
    const sim = new Sim();
    const buf = sim.memfd(2n * PAGE);
    const ioas = sim.ioasAlloc();
    for (let i = 0n; i < 50_000n; i++) sim.map(ioas, buf, PAGE, 0x1000n + i * 2n * PAGE);
    const t0 = Date.now();
    const got: bigint[] = [];
    for (let i = 0; i < 2000; i++) got.push(sim.map(ioas, buf, 2n * PAGE));
    expect(got[0]).to.equal(100_000n * PAGE); // right after the last area
    expect(Date.now() - t0).to.be.below(20000);
    sim.close();
  });
});

describe('sim iommufd: the selftest ioctl number', function () {
  it('IOMMU_TEST_CMD is 0x3ba0 and reaches the selftest', function () {
    expect(IOMMU_TEST_CMD.request).to.equal(0x3ba0);
    expect(RW).to.equal(6);
  });
});
