// uapi conformance, part 1: the IOAS ioctls of /dev/iommu with no device attached,
// against the real kernel. Rules: anchors-mission.md 4.3 and the B5 table (cited as B5 #n).
import { expect } from 'chai';
import { O } from '../../src/uapi/libc.js';
import {
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FLAGS,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_ID,
  IOMMU_OPTION_OP,
  IOMMU_UNMAP_ALL_LENGTH,
  IOMMU_VFIO_IOAS,
  IOMMU_VFIO_IOAS_OP,
  iommu_destroy,
  iommu_ioas_alloc,
  iommu_ioas_allow_iovas,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_unmap,
  iommu_iova_range,
  iommu_option,
  iommu_vfio_ioas,
} from '../../src/uapi/index.js';
import { describeKernel } from './guest.js';
import { expectErrno, iommufdFixture, PAGE, U64_MAX } from './kit.js';
import { ioctlRecorder } from './recording-port.js';

ioctlRecorder.registerSuite('uapi-iommufd-ioas');

const F = IOMMU_IOAS_MAP_FLAGS;
const RW = F.READABLE | F.WRITEABLE;

describeKernel('uapi conformance: iommufd IOAS ioctls (no device attached)', function () {
  const f = iommufdFixture({ buf: 16, scratch: 1 });

  // A map request with every field set; tests change one field at a time.
  function mapReq(ioas: number, iova: bigint, length: bigint, flags = RW | F.FIXED_IOVA) {
    const m = iommu_ioas_map.view().reset();
    m.ioas_id = ioas;
    m.flags = flags;
    m.user_va = f.buf.va;
    m.length = length;
    m.iova = iova;
    return m;
  }
  function unmapReq(ioas: number, iova: bigint, length: bigint) {
    const u = iommu_ioas_unmap.view().reset();
    u.ioas_id = ioas;
    u.iova = iova;
    u.length = length;
    return u;
  }

  it('IOMMU_IOAS_ALLOC: fresh ids; flags -> EOPNOTSUPP, size below the minimum -> EINVAL, non-zero unknown tail -> E2BIG (B5 #16)', function () {
    const a = f.iommufd.ioasAlloc();
    const b = f.iommufd.ioasAlloc();
    expect(a).to.be.above(0);
    expect(b).to.not.equal(a);

    const bad = iommu_ioas_alloc.view().reset();
    bad.flags = 1;
    expectErrno('EOPNOTSUPP', () => f.port.ioctl(f.fd, IOMMU_IOAS_ALLOC, bad.bytes));
    bad.reset().size = 4; // smaller than offsetofend(out_ioas_id)
    expectErrno('EINVAL', () => f.port.ioctl(f.fd, IOMMU_IOAS_ALLOC, bad.bytes));

    // A newer, larger struct: accepted while the bytes the kernel does not know are zero.
    const big = new Uint8Array(iommu_ioas_alloc.size + 8);
    const v = iommu_ioas_alloc.view(big).reset();
    v.size = big.byteLength;
    f.port.ioctl(f.fd, IOMMU_IOAS_ALLOC, big);
    expect(v.out_ioas_id).to.be.above(b);
    big[iommu_ioas_alloc.size + 3] = 1;
    expectErrno('E2BIG', () => f.port.ioctl(f.fd, IOMMU_IOAS_ALLOC, big));

    for (const id of [a, b, v.out_ioas_id]) f.iommufd.destroy(id);
  });

  it('IOMMU_DESTROY: frees an IOAS even with mappings in it; unknown or already destroyed id -> ENOENT (B5 #19)', function () {
    const ioas = f.iommufd.ioasAlloc();
    f.iommufd.map(ioas, f.buf.va, PAGE, 0x10_0000n);
    f.iommufd.destroy(ioas); // mappings are not users: only devices, HWPTs and accesses hold an IOAS
    const d = iommu_destroy.view().reset();
    d.id = ioas;
    expectErrno('ENOENT', () => f.port.ioctl(f.fd, IOMMU_DESTROY, d.bytes), 'destroyed id');
    d.id = 0x7fff_0000;
    expectErrno('ENOENT', () => f.port.ioctl(f.fd, IOMMU_DESTROY, d.bytes), 'unknown id');
  });

  it('IOMMU_IOAS_MAP: fixed and kernel-chosen IOVAs; a domain-less IOAS is byte-granular (B5 #1)', function () {
    const ioas = f.iommufd.ioasAlloc();
    expect(f.iommufd.map(ioas, f.buf.va, 4n * BigInt(PAGE), 0x10_0000n)).to.equal(0x10_0000n);
    // iova_alignment is 1 until a domain is attached: an odd IOVA, VA and length are accepted.
    expect(f.iommufd.map(ioas, f.buf.va + 0x11n, 0x123n, 0x20_0011n)).to.equal(0x20_0011n);
    const auto = f.iommufd.map(ioas, f.buf.va, 2n * BigInt(PAGE));
    expect(auto % BigInt(PAGE), 'kernel-chosen IOVA keeps the page alignment of the VA').to.equal(0n);
    expect(f.iommufd.unmap(ioas, auto, 2 * PAGE)).to.equal(2n * BigInt(PAGE));
    expect(f.iommufd.unmap(ioas, 0x20_0011n, 0x123n)).to.equal(0x123n);
    expect(f.iommufd.unmap(ioas, 0x10_0000n, 4 * PAGE)).to.equal(4n * BigInt(PAGE));
    f.iommufd.destroy(ioas);
  });

  it('IOMMU_IOAS_MAP bad input: overlap -> EEXIST (B5 #4), length 0 / no R|W -> EINVAL (B5 #2, #14), unknown flag or __reserved -> EOPNOTSUPP, >= ULONG_MAX or wrap -> EOVERFLOW (B5 #3), unknown IOAS -> ENOENT', function () {
    const ioas = f.iommufd.ioasAlloc();
    const P = BigInt(PAGE);
    f.iommufd.map(ioas, f.buf.va, 4n * P, 0x10_0000n);
    const call = (m: ReturnType<typeof mapReq>) => () => f.port.ioctl(f.fd, IOMMU_IOAS_MAP, m.bytes);

    expectErrno('EEXIST', call(mapReq(ioas, 0x10_0000n, 4n * P)), 'identical map');
    expectErrno('EEXIST', call(mapReq(ioas, 0x10_0000n + 3n * P, 2n * P)), 'overlapping the tail');
    expectErrno('EEXIST', call(mapReq(ioas, 0x10_0000n - P, 2n * P)), 'overlapping the head');
    expectErrno('EEXIST', call(mapReq(ioas, 0x10_0000n + P, P)), 'inside');
    expectErrno('EINVAL', call(mapReq(ioas, 0x40_0000n, 0n)), 'length 0');
    expectErrno('EINVAL', call(mapReq(ioas, 0x40_0000n, P, F.FIXED_IOVA)), 'neither READABLE nor WRITEABLE');
    expectErrno(
      'EOPNOTSUPP',
      call(mapReq(ioas, 0x40_0000n, P, RW | F.FIXED_IOVA | (1 << 3))),
      'unknown flag',
    );
    const reserved = mapReq(ioas, 0x40_0000n, P);
    reserved.__reserved = 1;
    expectErrno('EOPNOTSUPP', call(reserved), '__reserved');
    expectErrno('EOVERFLOW', call(mapReq(ioas, U64_MAX, P)), 'iova = ULONG_MAX');
    expectErrno('EOVERFLOW', call(mapReq(ioas, 0x40_0000n, U64_MAX)), 'length = ULONG_MAX');
    expectErrno('EOVERFLOW', call(mapReq(ioas, U64_MAX - P + 1n, 2n * P)), 'iova + length wraps');
    expectErrno('ENOENT', call(mapReq(0x7fff_0000, 0x40_0000n, P)), 'unknown IOAS');
    // The failed calls left nothing behind: exactly the first map is there.
    expect(f.iommufd.unmap(ioas, 0n, IOMMU_UNMAP_ALL_LENGTH)).to.equal(4n * P);
    f.iommufd.destroy(ioas);
  });

  it('IOMMU_IOAS_UNMAP: exact and superset unmaps return the length (B5 #7); nothing mapped or a bisected area -> ENOENT (B5 #5, #6); length 0 -> EINVAL; wrap -> EOVERFLOW; unknown IOAS -> ENOENT', function () {
    const ioas = f.iommufd.ioasAlloc();
    const P = BigInt(PAGE);
    const call = (u: ReturnType<typeof unmapReq>) => () => f.port.ioctl(f.fd, IOMMU_IOAS_UNMAP, u.bytes);
    const twoAreas = () => {
      f.iommufd.map(ioas, f.buf.va, 4n * P, 0x10_0000n);
      f.iommufd.map(ioas, f.buf.va, 4n * P, 0x10_4000n);
    };
    twoAreas();
    f.iommufd.map(ioas, f.buf.va, 2n * P, 0x20_0000n);

    expectErrno('ENOENT', call(unmapReq(ioas, 0x30_0000n, P)), 'nothing mapped there');
    expectErrno('ENOENT', call(unmapReq(ioas, 0x10_1000n, P)), 'inside an area (no splitting)');
    expectErrno('EINVAL', call(unmapReq(ioas, 0x10_0000n, 0n)), 'length 0');
    expectErrno('EOVERFLOW', call(unmapReq(ioas, U64_MAX - P + 1n, 2n * P)), 'wraps');
    expectErrno('ENOENT', call(unmapReq(0x7fff_0000, 0x10_0000n, P)), 'unknown IOAS');

    // A superset of the two adjacent areas (with a hole after them) unmaps both.
    expect(f.iommufd.unmap(ioas, 0x10_0000n, 0x10_0000n)).to.equal(8n * P);
    // Not atomic: a range that covers the first area whole and cuts the second fails with
    // ENOENT, but the kernel has already unmapped the first (iopt_unmap_iova_range walks
    // the areas in order and stops at the cut one; the length unmapped is not reported).
    twoAreas();
    expectErrno('ENOENT', call(unmapReq(ioas, 0x10_0000n, 6n * P)), 'whole first area, half the second');
    expectErrno('ENOENT', call(unmapReq(ioas, 0x10_0000n, 4n * P)), 'the first area is already gone');
    expect(f.iommufd.unmap(ioas, 0x10_4000n, 4n * P)).to.equal(4n * P);
    expect(f.iommufd.unmap(ioas, 0x20_0000n, 2n * P)).to.equal(2n * P);
    // Unmap-all (iova 0, length U64_MAX) of an empty IOAS succeeds with 0 (B5 #5).
    expect(f.iommufd.unmap(ioas, 0n, IOMMU_UNMAP_ALL_LENGTH)).to.equal(0n);
    f.iommufd.map(ioas, f.buf.va, P, 0x50_0000n);
    f.iommufd.map(ioas, f.buf.va, 3n * P, 0x60_0000n);
    expect(f.iommufd.unmap(ioas, 0n, IOMMU_UNMAP_ALL_LENGTH)).to.equal(4n * P);
    f.iommufd.destroy(ioas);
  });

  it('IOMMU_IOAS_COPY: copies a mapping into another IOAS; dst occupied -> EEXIST, src not mapped -> ENOENT, no R|W -> EINVAL, unknown flag -> EOPNOTSUPP, >= ULONG_MAX -> EOVERFLOW, unknown dst -> ENOENT, WRITEABLE from read-only pages -> EPERM (B5 #13)', function () {
    const src = f.iommufd.ioasAlloc();
    const dst = f.iommufd.ioasAlloc();
    const P = BigInt(PAGE);
    f.iommufd.map(src, f.buf.va, 8n * P, 0x10_0000n);
    f.iommufd.map(src, f.buf.va, 2n * P, 0x20_0000n, F.READABLE);
    const req = (flags = RW | F.FIXED_IOVA, srcIova = 0x10_0000n, length = 8n * P, dstIoas = dst) => {
      const c = iommu_ioas_copy.view().reset();
      c.flags = flags;
      c.src_ioas_id = src;
      c.dst_ioas_id = dstIoas;
      c.src_iova = srcIova;
      c.dst_iova = 0x80_0000n;
      c.length = length;
      return c;
    };
    const c = req();
    f.port.ioctl(f.fd, IOMMU_IOAS_COPY, c.bytes);
    expect(c.dst_iova).to.equal(0x80_0000n);
    const call = (x: ReturnType<typeof req>) => () => f.port.ioctl(f.fd, IOMMU_IOAS_COPY, x.bytes);
    expectErrno('EEXIST', call(req()), 'destination occupied');
    expectErrno('ENOENT', call(req(RW | F.FIXED_IOVA, 0x30_0000n)), 'source not mapped');
    expectErrno('ENOENT', call(req(RW | F.FIXED_IOVA, 0x10_0000n, 16n * P)), 'source only partly mapped');
    expectErrno('EINVAL', call(req(F.FIXED_IOVA)), 'neither READABLE nor WRITEABLE');
    expectErrno('EOPNOTSUPP', call(req(RW | F.FIXED_IOVA | (1 << 3))), 'unknown flag');
    expectErrno('EOVERFLOW', call(req(RW | F.FIXED_IOVA, 0x10_0000n, U64_MAX)), 'length = ULONG_MAX');
    expectErrno('ENOENT', call(req(RW | F.FIXED_IOVA, 0x10_0000n, 8n * P, 0x7fff_0000)), 'unknown dst IOAS');
    expectErrno('EPERM', call(req(RW, 0x20_0000n, 2n * P)), 'WRITEABLE copy of READABLE-only pages');

    // Without FIXED_IOVA the kernel picks the destination; a read-only copy of read-only pages is fine.
    const auto = req(F.READABLE, 0x20_0000n, 2n * P);
    f.port.ioctl(f.fd, IOMMU_IOAS_COPY, auto.bytes);
    expect(auto.dst_iova).to.not.equal(0x80_0000n);
    // The copy holds its own reference to the pages: it outlives the source mapping.
    expect(f.iommufd.unmap(src, 0n, IOMMU_UNMAP_ALL_LENGTH)).to.equal(10n * P);
    expect(f.iommufd.unmap(dst, 0x80_0000n, 8n * P)).to.equal(8n * P);
    expect(f.iommufd.unmap(dst, auto.dst_iova, 2n * P)).to.equal(2n * P);
    f.iommufd.destroy(src);
    f.iommufd.destroy(dst);
  });

  it('IOMMU_IOAS_IOVA_RANGES: EMSGSIZE with the count, then the ranges (4.3); domain-less: [0, ULONG_MAX], alignment 1; __reserved -> EOPNOTSUPP; unknown IOAS -> ENOENT', function () {
    const ioas = f.iommufd.ioasAlloc();
    const { ranges, alignment } = f.iommufd.iovaRanges(ioas, f.scratch);
    expect(ranges).to.deep.equal([{ start: 0n, last: U64_MAX }]);
    expect(alignment).to.equal(1n);

    const r = iommu_ioas_iova_ranges.view().reset();
    r.ioas_id = ioas;
    r.num_iovas = 1;
    r.allowed_iovas = f.scratch.va;
    r.__reserved = 1;
    expectErrno('EOPNOTSUPP', () => f.port.ioctl(f.fd, IOMMU_IOAS_IOVA_RANGES, r.bytes));
    r.__reserved = 0;
    r.ioas_id = 0x7fff_0000;
    expectErrno('ENOENT', () => f.port.ioctl(f.fd, IOMMU_IOAS_IOVA_RANGES, r.bytes));
    f.iommufd.destroy(ioas);
  });

  it('IOMMU_IOAS_ALLOW_IOVAS: confines kernel-chosen IOVAs; no hole -> ENOSPC (B5 #9); start >= last or overlapping ranges -> EINVAL; __reserved -> EOPNOTSUPP; unknown IOAS -> ENOENT', function () {
    const ioas = f.iommufd.ioasAlloc();
    const P = BigInt(PAGE);
    const allow = (ranges: [bigint, bigint][], id = ioas) => {
      ranges.forEach(([start, last], i) => {
        const e = iommu_iova_range.view(f.scratch.bytes, i * iommu_iova_range.size);
        e.start = start;
        e.last = last;
      });
      const a = iommu_ioas_allow_iovas.view().reset();
      a.ioas_id = id;
      a.num_iovas = ranges.length;
      a.allowed_iovas = f.scratch.va;
      return a;
    };
    f.port.ioctl(f.fd, IOMMU_IOAS_ALLOW_IOVAS, allow([[0x4000_0000n, 0x4000_ffffn]]).bytes);
    const iova = f.iommufd.map(ioas, f.buf.va, 4n * P);
    expect(
      iova >= 0x4000_0000n && iova + 4n * P - 1n <= 0x4000_ffffn,
      `IOVA 0x${iova.toString(16)}`,
    ).to.equal(true);
    // 64 KiB allowed, 16 KiB used: 64 KiB more cannot fit.
    const m = iommu_ioas_map.view().reset();
    m.ioas_id = ioas;
    m.flags = RW;
    m.user_va = f.buf.va;
    m.length = 16n * P;
    expectErrno('ENOSPC', () => f.port.ioctl(f.fd, IOMMU_IOAS_MAP, m.bytes), 'no allowed hole');
    // Allowed ranges only steer the kernel's choice: a fixed IOVA outside them is fine.
    f.iommufd.map(ioas, f.buf.va, P, 0x10_0000n);

    const call = (a: ReturnType<typeof allow>) => () => f.port.ioctl(f.fd, IOMMU_IOAS_ALLOW_IOVAS, a.bytes);
    expectErrno('EINVAL', call(allow([[0x5000_0000n, 0x5000_0000n]])), 'start == last');
    expectErrno(
      'EINVAL',
      call(
        allow([
          [0x5000_0000n, 0x5000_ffffn],
          [0x5000_8000n, 0x5001_ffffn],
        ]),
      ),
      'overlapping ranges',
    );
    const reserved = allow([[0x5000_0000n, 0x5000_ffffn]]);
    reserved.__reserved = 1;
    expectErrno('EOPNOTSUPP', call(reserved), '__reserved');
    expectErrno('ENOENT', call(allow([[0x5000_0000n, 0x5000_ffffn]], 0x7fff_0000)), 'unknown IOAS');
    // num_iovas 0 lifts the restriction.
    f.port.ioctl(f.fd, IOMMU_IOAS_ALLOW_IOVAS, allow([]).bytes);
    f.iommufd.map(ioas, f.buf.va, 16n * P);
    f.iommufd.destroy(ioas);
  });

  it('IOMMU_OPTION: RLIMIT_MODE get/set (EBUSY once objects exist), HUGE_PAGES per IOAS; bad value -> EINVAL, unknown option/op, object_id with RLIMIT_MODE or __reserved -> EOPNOTSUPP, unknown IOAS -> ENOENT (B5 #24)', function () {
    const opt = (option: number, op: number, objectId = 0, val = 0n) => {
      const o = iommu_option.view().reset();
      o.option_id = option;
      o.op = op;
      o.object_id = objectId;
      o.val64 = val;
      return o;
    };
    const { RLIMIT_MODE, HUGE_PAGES } = IOMMU_OPTION_ID;
    const { GET, SET } = IOMMU_OPTION_OP;
    const call =
      (o: ReturnType<typeof opt>, on = f.fd) =>
      () =>
        f.port.ioctl(on, IOMMU_OPTION, o.bytes);

    // A fresh context (no objects) may switch to per-process accounting; root has CAP_SYS_RESOURCE.
    const fresh = f.res.open('/dev/iommu', O.RDWR | O.CLOEXEC);
    const get = opt(RLIMIT_MODE, GET);
    f.port.ioctl(fresh, IOMMU_OPTION, get.bytes);
    expect(get.val64, 'default accounting: per user').to.equal(0n);
    f.port.ioctl(fresh, IOMMU_OPTION, opt(RLIMIT_MODE, SET, 0, 1n).bytes);
    f.port.ioctl(fresh, IOMMU_OPTION, get.bytes);
    expect(get.val64).to.equal(1n);
    expectErrno('EINVAL', call(opt(RLIMIT_MODE, SET, 0, 2n), fresh), 'RLIMIT_MODE 2');
    expectErrno('EOPNOTSUPP', call(opt(RLIMIT_MODE, GET, 1)), 'RLIMIT_MODE with an object_id');
    f.res.close(fresh);

    const ioas = f.iommufd.ioasAlloc();
    expectErrno('EBUSY', call(opt(RLIMIT_MODE, SET, 0, 1n)), 'RLIMIT_MODE with objects alive');
    const huge = opt(HUGE_PAGES, GET, ioas);
    f.port.ioctl(f.fd, IOMMU_OPTION, huge.bytes);
    expect(huge.val64, 'huge pages on by default').to.equal(1n);
    f.port.ioctl(f.fd, IOMMU_OPTION, opt(HUGE_PAGES, SET, ioas, 0n).bytes);
    f.port.ioctl(f.fd, IOMMU_OPTION, huge.bytes);
    expect(huge.val64).to.equal(0n);
    f.port.ioctl(f.fd, IOMMU_OPTION, opt(HUGE_PAGES, SET, ioas, 1n).bytes);

    expectErrno('EINVAL', call(opt(HUGE_PAGES, SET, ioas, 2n)), 'HUGE_PAGES 2');
    expectErrno('ENOENT', call(opt(HUGE_PAGES, GET, 0x7fff_0000)), 'unknown IOAS');
    expectErrno('EOPNOTSUPP', call(opt(99, GET, ioas)), 'unknown option');
    expectErrno('EOPNOTSUPP', call(opt(HUGE_PAGES, 7, ioas)), 'unknown op');
    const reserved = opt(HUGE_PAGES, GET, ioas);
    reserved.__reserved = 1;
    expectErrno('EOPNOTSUPP', call(reserved), '__reserved');
    f.iommufd.destroy(ioas);
  });

  it('IOMMU_VFIO_IOAS: GET with no compat IOAS -> ENODEV; SET, GET, CLEAR; unknown op -> EOPNOTSUPP; SET of an unknown IOAS -> ENOENT', function () {
    const v = (op: number, id = 0) => {
      const x = iommu_vfio_ioas.view().reset();
      x.op = op;
      x.ioas_id = id;
      return x;
    };
    const { GET, SET, CLEAR } = IOMMU_VFIO_IOAS_OP;
    const call = (x: ReturnType<typeof v>) => () => f.port.ioctl(f.fd, IOMMU_VFIO_IOAS, x.bytes);
    expectErrno('ENODEV', call(v(GET)), 'no compat IOAS yet');
    const ioas = f.iommufd.ioasAlloc();
    f.port.ioctl(f.fd, IOMMU_VFIO_IOAS, v(SET, ioas).bytes);
    const got = v(GET);
    f.port.ioctl(f.fd, IOMMU_VFIO_IOAS, got.bytes);
    expect(got.ioas_id).to.equal(ioas);
    f.port.ioctl(f.fd, IOMMU_VFIO_IOAS, v(CLEAR).bytes);
    expectErrno('ENODEV', call(v(GET)), 'after CLEAR');
    expectErrno('ENOENT', call(v(SET, 0x7fff_0000)), 'unknown IOAS');
    expectErrno('EOPNOTSUPP', call(v(3)), 'unknown op');
    const reserved = v(GET);
    reserved.__reserved = 1;
    expectErrno('EOPNOTSUPP', call(reserved), '__reserved');
    // Destroying the compat IOAS also clears it.
    f.port.ioctl(f.fd, IOMMU_VFIO_IOAS, v(SET, ioas).bytes);
    f.iommufd.destroy(ioas);
    expectErrno('ENODEV', call(v(GET)), 'compat IOAS destroyed');
  });
});
