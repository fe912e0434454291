// uapi conformance, part 2: IOMMU_TEST_CMD (CONFIG_IOMMUFD_TEST) on the real kernel.
//
// Mock domains do not work in the vtd VM, where this suite runs: MOCK_DOMAIN creates a
// device on the iommufd_mock bus, and 6.12's __iommu_probe_device() picks the ops of the
// first IOMMU registered without a fwnode for a device with no fwspec ("only one of Intel,
// AMD, ... can be present"). intel-iommu registers at rootfs_initcall, before iommufd's
// selftest, so the mock device is probed with VT-d's ops, which find no DMAR unit for it; it
// gets no IOMMU, and iommufd_device_bind() answers EINVAL (no IOMMU_CAP_CACHE_COHERENCY).
// Booted with -device virtio-iommu-pci instead (its fwnode comes from ACPI VIOT), MOCK_DOMAIN
// works: the virtio VM runs uapi-iommufd-mock. Here, without a mock domain there is no
// MD_CHECK_MAP to succeed and no dirty-tracking domain at all, so the mapping is confirmed
// with an in-kernel access instead (CREATE_ACCESS, ACCESS_RW, ACCESS_PAGES), and pin counts
// with MD_CHECK_REFS (also on the VT-d domain in uapi-iommufd-vtd).
import { expect } from 'chai';
import {
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FLAGS,
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP,
  MOCK_ACCESS,
  MOCK_APERTURE,
  MOCK_FLAGS_DEVICE,
  iommu_destroy,
  iommu_ioas_allow_iovas,
  iommu_ioas_map,
  iommu_iova_range,
  iommu_test_cmd_access_pages,
  iommu_test_cmd_access_rw,
  iommu_test_cmd_add_reserved,
  iommu_test_cmd_check_map,
  iommu_test_cmd_check_refs,
  iommu_test_cmd_create_access,
  iommu_test_cmd_destroy_access_pages,
  iommu_test_cmd_mock_domain,
  iommu_test_cmd_mock_domain_flags,
} from '../../src/uapi/index.js';
import { describeKernelOn } from './variant.js';
import { expectErrno, iommufdFixture, PAGE, pattern, U64_MAX } from './kit.js';
import { ioctlRecorder } from './recording-port.js';

ioctlRecorder.registerSuite('uapi-iommufd-selftest');

const P = BigInt(PAGE);
const BASE = BigInt(MOCK_APERTURE.START);
const F = IOMMU_IOAS_MAP_FLAGS;

describeKernelOn('vtd', 'uapi conformance: IOMMU_TEST_CMD selftest ops (CONFIG_IOMMUFD_TEST)', function () {
  const f = iommufdFixture({ buf: 16, other: 4, scratch: 2 });

  function mockDomain(ptId: number, devFlags?: number) {
    if (devFlags === undefined) {
      const c = iommu_test_cmd_mock_domain.view().reset();
      c.op = IOMMU_TEST_OP.MOCK_DOMAIN;
      c.id = ptId;
      return () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, c.bytes);
    }
    const c = iommu_test_cmd_mock_domain_flags.view().reset();
    c.op = IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS;
    c.id = ptId;
    c.dev_flags = devFlags;
    return () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, c.bytes);
  }
  function checkRefs(uptr: bigint, length: bigint, refs: number) {
    const c = iommu_test_cmd_check_refs.view().reset();
    c.op = IOMMU_TEST_OP.MD_CHECK_REFS;
    c.uptr = uptr;
    c.length = length;
    c.refs = refs;
    return () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, c.bytes);
  }
  /** CREATE_ACCESS on `ioas`; returns the access fd (tracked). */
  function createAccess(ioas: number, flags = 0): number {
    const c = iommu_test_cmd_create_access.view().reset();
    c.op = IOMMU_TEST_OP.CREATE_ACCESS;
    c.id = ioas;
    c.flags = flags;
    f.port.ioctl(f.fd, IOMMU_TEST_CMD, c.bytes);
    return f.res.adopt(c.out_access_fd);
  }
  function accessRw(access: number, iova: bigint, length: number, uptr: bigint, flags = 0) {
    const c = iommu_test_cmd_access_rw.view().reset();
    c.op = IOMMU_TEST_OP.ACCESS_RW;
    c.id = access;
    c.iova = iova;
    c.length = BigInt(length);
    c.uptr = uptr;
    c.flags = flags;
    return () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, c.bytes);
  }
  function accessPages(access: number, iova: bigint, length: bigint, uptr: bigint) {
    const c = iommu_test_cmd_access_pages.view().reset();
    c.op = IOMMU_TEST_OP.ACCESS_PAGES;
    c.id = access;
    c.iova = iova;
    c.length = length;
    c.uptr = uptr;
    return { cmd: c, call: () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, c.bytes) };
  }
  function destroyAccessPages(access: number, item: number) {
    const c = iommu_test_cmd_destroy_access_pages.view().reset();
    c.op = IOMMU_TEST_OP.DESTROY_ACCESS_PAGES;
    c.id = access;
    c.access_pages_id = item;
    return () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, c.bytes);
  }

  it('MOCK_DOMAIN and MOCK_DOMAIN_FLAGS -> EINVAL here (the mock device gets no IOMMU next to VT-d, see above); MD_CHECK_MAP of a non-HWPT -> ENOENT; an unknown op -> EOPNOTSUPP', function () {
    const ioas = f.iommufd.ioasAlloc();
    expectErrno('EINVAL', mockDomain(ioas), 'MOCK_DOMAIN');
    expectErrno('EINVAL', mockDomain(ioas, MOCK_FLAGS_DEVICE.NO_DIRTY), 'MOCK_DOMAIN_FLAGS');
    // The failed binds left nothing behind: the IOAS has no users.
    const c = iommu_test_cmd_check_map.view().reset();
    c.op = IOMMU_TEST_OP.MD_CHECK_MAP;
    c.id = ioas;
    c.iova = BASE;
    c.length = P;
    c.uptr = f.buf.va;
    expectErrno('ENOENT', () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, c.bytes), 'MD_CHECK_MAP of an IOAS id');
    c.op = 0x7fff;
    expectErrno('EOPNOTSUPP', () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, c.bytes), 'unknown op');
    f.iommufd.destroy(ioas);
  });

  it('CREATE_ACCESS + ACCESS_RW: the kernel reads and writes the memfd through the IOAS mapping; an unmapped IOVA -> ENOENT, writing a READABLE-only area -> EPERM, unknown flags -> EOPNOTSUPP, not an access fd -> EBADFD; the access holds the IOAS (EBUSY)', function () {
    const ioas = f.iommufd.ioasAlloc();
    f.iommufd.map(ioas, f.buf.va, 4n * P, 0x10_0000n);
    f.iommufd.map(ioas, f.other.va, P, 0x20_0000n, F.READABLE);
    const access = createAccess(ioas);
    const seen = f.scratch.bytes.subarray(0, 1000);

    pattern(f.buf.bytes, 3);
    accessRw(access, 0x10_0123n, 1000, f.scratch.va)();
    expect(Buffer.from(seen).equals(Buffer.from(f.buf.bytes.subarray(0x123, 0x123 + 1000))), 'read').to.equal(
      true,
    );
    seen.fill(0);
    accessRw(access, 0x10_0123n, 1000, f.scratch.va, MOCK_ACCESS.ACCESS_RW_SLOW_PATH)();
    expect(
      Buffer.from(seen).equals(Buffer.from(f.buf.bytes.subarray(0x123, 0x123 + 1000))),
      'slow path',
    ).to.equal(true);
    pattern(seen, 4);
    accessRw(access, 0x10_0000n + P + 7n, 1000, f.scratch.va, MOCK_ACCESS.ACCESS_RW_WRITE)();
    expect(
      Buffer.from(f.buf.bytes.subarray(PAGE + 7, PAGE + 7 + 1000)).equals(Buffer.from(seen)),
      'write',
    ).to.equal(true);

    expectErrno('ENOENT', accessRw(access, 0x30_0000n, 16, f.scratch.va), 'unmapped IOVA');
    expectErrno(
      'ENOENT',
      accessRw(access, 0x10_0000n + 4n * P - 8n, 16, f.scratch.va),
      'runs off the mapping',
    );
    expectErrno(
      'EPERM',
      accessRw(access, 0x20_0000n, 16, f.scratch.va, MOCK_ACCESS.ACCESS_RW_WRITE),
      'read-only',
    );
    expectErrno('EINVAL', accessRw(access, 0x10_0000n, 0, f.scratch.va), 'length 0');
    expectErrno('EOPNOTSUPP', accessRw(access, 0x10_0000n, 16, f.scratch.va, 1 << 5), 'unknown flag');
    expectErrno('EBADFD', accessRw(f.buf.fd, 0x10_0000n, 16, f.scratch.va), 'a memfd as access');

    const d = iommu_destroy.view().reset();
    d.id = ioas;
    expectErrno('EBUSY', () => f.port.ioctl(f.fd, IOMMU_DESTROY, d.bytes), 'IOAS with an access attached');
    f.res.close(access); // destroys the access
    f.iommufd.destroy(ioas);

    const bad = iommu_test_cmd_create_access.view().reset();
    bad.op = IOMMU_TEST_OP.CREATE_ACCESS;
    bad.id = 0x7fff_0000;
    expectErrno(
      'ENOENT',
      () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, bad.bytes),
      'CREATE_ACCESS of an unknown IOAS',
    );
    bad.flags = 1 << 5;
    expectErrno('EOPNOTSUPP', () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, bad.bytes), 'CREATE_ACCESS flags');
  });

  it("ACCESS_PAGES pins the pages behind IOVAs and checks they are the VA's (another VA -> EBADE); MD_CHECK_REFS sees each pin (refs 1, 0 after DESTROY_ACCESS_PAGES or an unmap); a wrong count -> EIO, unaligned -> EINVAL", function () {
    const ioas = f.iommufd.ioasAlloc();
    const len = 4n * P;
    f.iommufd.map(ioas, f.buf.va, len, 0x10_0000n);
    const pinning = createAccess(ioas, MOCK_ACCESS.FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
    // A domain-less IOAS pins nothing at map time.
    checkRefs(f.buf.va, len, 0)();

    const pin = accessPages(pinning, 0x10_0000n, len, f.buf.va);
    pin.call();
    checkRefs(f.buf.va, len, 1)();
    expectErrno('EIO', checkRefs(f.buf.va, len, 0), 'pinned pages counted as unpinned');
    expectErrno('EIO', checkRefs(f.buf.va, len, 2), 'one pin counted as two');
    checkRefs(f.other.va, P, 0)();
    expectErrno('EBADE', accessPages(pinning, 0x10_0000n, P, f.other.va).call, 'pages of another VA');
    destroyAccessPages(pinning, pin.cmd.out_access_pages_id)();
    checkRefs(f.buf.va, len, 0)();
    expectErrno('ENOENT', destroyAccessPages(pinning, pin.cmd.out_access_pages_id), 'already destroyed');

    // An unmap under a pin asks the access to let go first, then succeeds.
    accessPages(pinning, 0x10_0000n + P, P, f.buf.va + P).call();
    checkRefs(f.buf.va + P, P, 1)();
    expect(f.iommufd.unmap(ioas, 0x10_0000n, len)).to.equal(len);
    checkRefs(f.buf.va, len, 0)();

    expectErrno('ENOENT', accessPages(pinning, 0x10_0000n, P, f.buf.va).call, 'nothing mapped any more');
    const plain = createAccess(ioas);
    f.iommufd.map(ioas, f.buf.va, len, 0x10_0000n);
    expectErrno('EOPNOTSUPP', accessPages(plain, 0x10_0000n, P, f.buf.va).call, 'access without pin support');
    expectErrno('EINVAL', checkRefs(f.buf.va, 100n, 0), 'length not a page multiple');
    expectErrno('EINVAL', checkRefs(f.buf.va + 8n, P, 0), 'unaligned VA');
    f.res.close(plain);
    f.res.close(pinning);
    f.iommufd.destroy(ioas);
  });

  it('ADD_RESERVED splits IOVA_RANGES; a fixed map into the hole -> EINVAL, ALLOW_IOVAS over it -> EADDRINUSE (B5 #15); length 0 -> EINVAL', function () {
    const ioas = f.iommufd.ioasAlloc();
    const reserve = (start: bigint, length: bigint) => {
      const r = iommu_test_cmd_add_reserved.view().reset();
      r.op = IOMMU_TEST_OP.ADD_RESERVED;
      r.id = ioas;
      r.start = start;
      r.length = length;
      return () => f.port.ioctl(f.fd, IOMMU_TEST_CMD, r.bytes);
    };
    reserve(0x10_0000n, 0x10_0000n)();
    expect(f.iommufd.iovaRanges(ioas, f.scratch).ranges).to.deep.equal([
      { start: 0n, last: 0xf_ffffn },
      { start: 0x20_0000n, last: U64_MAX },
    ]);
    expectErrno('EINVAL', reserve(0x40_0000n, 0n), 'length 0');

    const m = iommu_ioas_map.view().reset();
    m.ioas_id = ioas;
    m.flags = F.READABLE | F.WRITEABLE | F.FIXED_IOVA;
    m.user_va = f.buf.va;
    m.length = 2n * P;
    m.iova = 0x1f_f000n;
    expectErrno('EINVAL', () => f.port.ioctl(f.fd, IOMMU_IOAS_MAP, m.bytes), 'map across the reserved end');
    const e = iommu_iova_range.view(f.scratch.bytes);
    e.start = 0x18_0000n;
    e.last = 0x27_ffffn;
    const a = iommu_ioas_allow_iovas.view().reset();
    a.ioas_id = ioas;
    a.num_iovas = 1;
    a.allowed_iovas = f.scratch.va;
    expectErrno(
      'EADDRINUSE',
      () => f.port.ioctl(f.fd, IOMMU_IOAS_ALLOW_IOVAS, a.bytes),
      'allowed range over the hole',
    );
    f.iommufd.destroy(ioas);
  });
});
