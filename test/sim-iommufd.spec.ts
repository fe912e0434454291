// The simulated kernel's iommufd, part 1: the ioctl dispatcher and the IOAS ioctls with no
// device attached. Expected answers come from Linux 6.12 (main.c, ioas.c, io_pagetable.c,
// tools/testing/selftests/iommu/iommufd.c); B5 #n cites anchors-style-and-reliability.md.
import { expect } from 'chai';
import { _IO } from '../src/uapi/layout.js';
import {
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FLAGS as F,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_ID,
  IOMMU_OPTION_OP,
  IOMMU_VFIO_IOAS,
  iommu_destroy,
  iommu_ioas_alloc,
  iommu_ioas_allow_iovas,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_iova_range,
  iommu_option,
  iommu_vfio_ioas,
  type Ioctl,
} from '../src/uapi/index.js';
import { IOMMU_TEST_CMD, IOMMU_TEST_OP, iommu_test_cmd_add_reserved } from '../src/uapi/iommufd-test.js';
import type { StructInfo } from '../src/uapi/layout.js';
import { PROT } from '../src/uapi/libc.js';
import { expectErrno, PAGE, RW, Sim, U64_MAX } from './sim-iommufd-kit.js';

const IOCTLS: [Ioctl, string][] = [
  [IOMMU_DESTROY, 'id'],
  [IOMMU_IOAS_ALLOC, 'out_ioas_id'],
  [IOMMU_IOAS_ALLOW_IOVAS, 'allowed_iovas'],
  [IOMMU_IOAS_COPY, 'src_iova'],
  [IOMMU_IOAS_IOVA_RANGES, 'out_iova_alignment'],
  [IOMMU_IOAS_MAP, 'iova'],
  [IOMMU_IOAS_UNMAP, 'length'],
  [IOMMU_OPTION, 'val64'],
  [IOMMU_VFIO_IOAS, '__reserved'],
  [IOMMU_HWPT_ALLOC, '__reserved'],
  [IOMMU_GET_HW_INFO, '__reserved'],
  [IOMMU_HWPT_SET_DIRTY_TRACKING, '__reserved'],
  [IOMMU_HWPT_GET_DIRTY_BITMAP, 'data'],
  [IOMMU_HWPT_INVALIDATE, '__reserved'],
  [IOMMU_FAULT_QUEUE_ALLOC, 'out_fault_fd'],
  [IOMMU_TEST_CMD, 'last'],
];

function structOf(req: Ioctl): StructInfo {
  if (req.arg.kind !== 'struct') throw new Error('not a struct ioctl');
  return req.arg.struct;
}

function minSize(s: StructInfo, last: string): number {
  const f = s.fields.find((x) => x.name === last)!;
  const size = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8 }[f.type];
  return f.offset + size * f.count;
}

describe('sim iommufd: ioctl dispatch (main.c)', function () {
  const f = Sim.fixture();

  it('opens /dev/iommu, which the simulated /dev lists', function () {
    expect(f.sim.port.exists('/dev/iommu')).to.equal(true);
    expect(f.sim.file().kind).to.equal('iommufd');
  });

  it('every ioctl: size below offsetofend(last) -> EINVAL, non-zero tail -> E2BIG, zero tail accepted (selftest cmd_length, B5 #16)', function () {
    for (const [req, last] of IOCTLS) {
      const s = structOf(req);
      const min = minSize(s, last);
      // struct + one extra byte 0xff, as the selftest's TEST_LENGTH builds it.
      const buf = new Uint8Array(s.size + 1);
      const dv = new DataView(buf.buffer);
      buf[s.size] = 0xff;
      dv.setUint32(0, min - 1, true);
      expectErrno('EINVAL', () => f.sim.port.ioctl(f.sim.fd, req, buf), `${req.name} size ${min - 1}`);
      dv.setUint32(0, s.size + 1, true);
      expectErrno('E2BIG', () => f.sim.port.ioctl(f.sim.fd, req, buf), `${req.name} non-zero tail`);
      // The exact size and size + 1 with a zero tail give the same answer.
      const answer = (size: number) => {
        const b = new Uint8Array(s.size + 1);
        new DataView(b.buffer).setUint32(0, size, true);
        try {
          f.sim.port.ioctl(f.sim.fd, req, b);
          return 'OK';
        } catch (e) {
          return (e as { code: string }).code;
        }
      };
      expect(answer(s.size + 1), req.name).to.equal(answer(s.size));
    }
  });

  it('unknown ioctl numbers -> ENOTTY; a NULL argument -> EFAULT; unknown id -> ENOENT (selftest cmd_fail)', function () {
    const d = iommu_destroy.view().reset();
    const raw = (request: number, name = 'raw') => ({ ...IOMMU_DESTROY, request, name });
    expectErrno('ENOTTY', () => f.sim.port.ioctl(f.sim.fd, raw(_IO(0x3b, 0x7f)), d.bytes), 'BASE - 1');
    expectErrno('ENOTTY', () => f.sim.port.ioctl(f.sim.fd, raw(_IO(0x3b, 0x8f)), d.bytes), '0x8f (6.13)');
    expectErrno('ENOTTY', () => f.sim.port.ioctl(f.sim.fd, raw(_IO(0x3c, 0x80)), d.bytes), 'other type');
    expectErrno(
      'ENOTTY',
      () => f.sim.port.ioctl(f.sim.fd, raw(_IO(0x3b, 0x90)), d.bytes),
      'hole before TEST_CMD',
    );
    expectErrno(
      'EFAULT',
      () => f.sim.port.ioctl(f.sim.fd, { ...IOMMU_DESTROY, arg: { kind: 'none' } }),
      'NULL',
    );
    expectErrno('ENOENT', () => f.sim.port.ioctl(f.sim.fd, IOMMU_DESTROY, d.bytes), 'id 0');
    // A longer struct whose tail is zero works like the known one (cmd_ex_fail).
    const big = new Uint8Array(16);
    const v = iommu_destroy.view(big).reset();
    v.size = 16;
    expectErrno('ENOENT', () => f.sim.port.ioctl(f.sim.fd, IOMMU_DESTROY, big), 'longer, zero tail');
    big[12] = 1;
    expectErrno('E2BIG', () => f.sim.port.ioctl(f.sim.fd, IOMMU_DESTROY, big), 'longer, non-zero tail');
  });

  it('a larger struct with a zero tail is accepted and only the known part is written back', function () {
    const big = new Uint8Array(iommu_ioas_alloc.size + 8);
    const v = iommu_ioas_alloc.view(big).reset();
    v.size = big.byteLength;
    f.sim.port.ioctl(f.sim.fd, IOMMU_IOAS_ALLOC, big);
    expect(v.out_ioas_id).to.equal(1);
    expect([...big.subarray(iommu_ioas_alloc.size)].every((b) => b === 0)).to.equal(true);
  });
});

// A buffer at a 2 MiB-aligned address (4 MiB of it), so kernel-chosen IOVAs do not depend on where mmap put it.
function hugeAligned(sim: Sim): bigint {
  const va = sim.memfd(6n << 20n);
  return (va + (2n << 20n) - 1n) & ~((2n << 20n) - 1n);
}

describe('sim iommufd: objects and IOAS ioctls, no device', function () {
  const f = Sim.fixture({ buf: 64n * PAGE, checkPins: true, checkLocked: true });

  it('IOAS_ALLOC: ids from 1, the lowest free id is reused (xarray ALLOC1); flags -> EOPNOTSUPP', function () {
    expect([f.sim.ioasAlloc(), f.sim.ioasAlloc(), f.sim.ioasAlloc()]).to.deep.equal([1, 2, 3]);
    f.sim.destroy(2);
    expect(f.sim.ioasAlloc()).to.equal(2);
    expect(f.sim.ioasAlloc()).to.equal(4);
    const a = iommu_ioas_alloc.view().reset();
    a.flags = 1;
    expectErrno('EOPNOTSUPP', () => f.sim.port.ioctl(f.sim.fd, IOMMU_IOAS_ALLOC, a.bytes));
    expect(a.out_ioas_id, 'nothing written back on failure').to.equal(0);
  });

  it('DESTROY: an IOAS with mappings goes (areas are not users); again -> ENOENT (B5 #19)', function () {
    const ioas = f.sim.ioasAlloc();
    f.sim.map(ioas, f.buf, PAGE, 0x10_0000n);
    f.sim.destroy(ioas);
    expectErrno('ENOENT', () => f.sim.destroy(ioas));
    expectErrno('ENOENT', () => f.sim.destroy(0x7fff_0000));
  });

  it('MAP: fixed and kernel-chosen IOVAs; domain-less IOAS is byte granular (B5 #1)', function () {
    const ioas = f.sim.ioasAlloc();
    const buf = hugeAligned(f.sim);
    expect(f.sim.map(ioas, buf, 4n * PAGE, 0x10_0000n)).to.equal(0x10_0000n);
    expect(f.sim.map(ioas, buf + 0x11n, 0x123n, 0x20_0011n)).to.equal(0x20_0011n);
    // iopt_alloc_iova: first hole from PAGE_SIZE, aligned to min(roundup_pow_of_two(len), ffs(uptr), 2M).
    expect(f.sim.map(ioas, buf, 2n * PAGE)).to.equal(0x2000n);
    expect(f.sim.map(ioas, buf, PAGE)).to.equal(0x1000n);
    expect(f.sim.map(ioas, buf, 3n * PAGE)).to.equal(0x4000n);
    // An odd user address keeps its page offset: alignment 1, start | page_offset.
    expect(f.sim.map(ioas, buf + 0x11n, 0x10n)).to.equal(0x7011n);
    expect(f.sim.unmap(ioas, 0x20_0011n, 0x123n)).to.equal(0x123n);
    expect(f.sim.unmap(ioas, 0n, U64_MAX)).to.equal(4n * PAGE + 6n * PAGE + 0x10n);
  });

  it('MAP: the kernel-chosen IOVA follows the pow2 of the length and skips areas (iopt_alloc_iova)', function () {
    const ioas = f.sim.ioasAlloc();
    const big = hugeAligned(f.sim);
    const got: bigint[] = [];
    for (let i = 1n; i <= 10n; i++) got.push(f.sim.map(ioas, big, PAGE * i));
    for (let i = 0; i < got.length; i++) {
      const len = PAGE * BigInt(i + 1);
      const lowest = len & -len;
      expect(got[i]! % lowest, `map ${i}`).to.equal(0n);
    }
    expect(got[0]).to.equal(0x1000n);
    expect(got[1]).to.equal(0x2000n);
    // A 2 MiB-aligned VA and a 4 MiB length: alignment capped at 2 MiB.
    const iova = f.sim.map(ioas, big, 4n << 20n);
    expect(iova).to.equal(2n << 20n);
    // A VA aligned to 4 KiB only: the IOVA's alignment is the VA's lowest bit.
    expect(f.sim.map(ioas, big + PAGE, 8n * PAGE)).to.equal(0x4a000n);
    f.sim.unmap(ioas, 0n, U64_MAX);
  });

  it('MAP bad input: EEXIST overlaps (B5 #4), EINVAL length 0 / no R|W (B5 #2, #14), EOPNOTSUPP flag or __reserved, EOVERFLOW (B5 #3), ENOENT IOAS', function () {
    const ioas = f.sim.ioasAlloc();
    f.sim.map(ioas, f.buf, 4n * PAGE, 0x10_0000n);
    const call = (m: ReturnType<Sim['mapReq']>) => () => f.sim.port.ioctl(f.sim.fd, IOMMU_IOAS_MAP, m.bytes);
    expectErrno('EEXIST', call(f.sim.mapReq(ioas, f.buf, 4n * PAGE, 0x10_0000n)), 'identical');
    expectErrno('EEXIST', call(f.sim.mapReq(ioas, f.buf, 2n * PAGE, 0x10_3000n)), 'tail');
    expectErrno('EEXIST', call(f.sim.mapReq(ioas, f.buf, 2n * PAGE, 0x0f_f000n)), 'head');
    expectErrno('EEXIST', call(f.sim.mapReq(ioas, f.buf, PAGE, 0x10_1000n)), 'inside');
    expectErrno('EEXIST', call(f.sim.mapReq(ioas, f.buf, 8n * PAGE, 0x0f_f000n)), 'around');
    expectErrno('EINVAL', call(f.sim.mapReq(ioas, f.buf, 0n, 0x40_0000n)), 'length 0');
    expectErrno('EINVAL', call(f.sim.mapReq(ioas, f.buf, PAGE, 0x40_0000n, 0)), 'no R|W');
    expectErrno('EOPNOTSUPP', call(f.sim.mapReq(ioas, f.buf, PAGE, 0x40_0000n, RW | 8)), 'unknown flag');
    const r = f.sim.mapReq(ioas, f.buf, PAGE, 0x40_0000n);
    r.__reserved = 1;
    expectErrno('EOPNOTSUPP', call(r), '__reserved');
    expectErrno('EOVERFLOW', call(f.sim.mapReq(ioas, f.buf, PAGE, U64_MAX)), 'iova ULONG_MAX');
    expectErrno('EOVERFLOW', call(f.sim.mapReq(ioas, f.buf, U64_MAX, 0x40_0000n)), 'length ULONG_MAX');
    expectErrno('EOVERFLOW', call(f.sim.mapReq(ioas, f.buf, 2n * PAGE, U64_MAX - PAGE + 1n)), 'wraps');
    expectErrno(
      'EINVAL',
      call(f.sim.mapReq(ioas, f.buf, U64_MAX - 1n, 0x40_0000n)),
      'length > SIZE_MAX - PAGE',
    );
    expectErrno('EOVERFLOW', call(f.sim.mapReq(ioas, U64_MAX - PAGE, 2n * PAGE, 0x40_0000n)), 'uptr wraps');
    expectErrno('ENOENT', call(f.sim.mapReq(0x7fff_0000, f.buf, PAGE, 0x40_0000n)), 'unknown IOAS');
    // Flags are checked before the IOAS: an unknown IOAS with a bad flag is EOPNOTSUPP.
    expectErrno('EOPNOTSUPP', call(f.sim.mapReq(0x7fff_0000, f.buf, PAGE, 0x40_0000n, RW | 8)), 'order');
    expect(f.sim.unmap(ioas, 0n, U64_MAX)).to.equal(4n * PAGE);
  });

  it('MAP: a domain-less IOAS takes unmapped, read-only and device memory (nothing is pinned yet, B5 #11, #12)', function () {
    const ioas = f.sim.ioasAlloc();
    const gone = f.sim.scratch(2n * PAGE);
    f.sim.port.munmap(gone, 2n * PAGE);
    f.sim.map(ioas, gone, 2n * PAGE, 0x10_0000n);
    const ro = f.sim.memfd(PAGE, PROT.READ);
    f.sim.map(ioas, ro, PAGE, 0x20_0000n);
    const bar = f.sim.scratch(PAGE);
    f.sim.kernel.mem.addVma({ start: bar, end: bar + PAGE, prot: PROT.READ | PROT.WRITE, pfnmap: true });
    f.sim.map(ioas, bar, PAGE, 0x30_0000n);
    expect(f.sim.kernel.mem.pinCount).to.equal(0);
    expect(f.sim.unmap(ioas, 0n, U64_MAX)).to.equal(4n * PAGE);
  });

  it('UNMAP: exact and superset (B5 #7), ENOENT for nothing or a split (B5 #5, #6), EINVAL length 0, EOVERFLOW, not atomic', function () {
    const ioas = f.sim.ioasAlloc();
    const call = (u: ReturnType<Sim['unmapReq']>) => () =>
      f.sim.port.ioctl(f.sim.fd, IOMMU_IOAS_UNMAP, u.bytes);
    const base = 0x100_0000n;
    for (let i = 0n; i < 4n; i++) f.sim.map(ioas, f.buf, 8n * PAGE, base + 4n * PAGE + i * 16n * PAGE);
    // selftest unmap_fully_contained_areas
    expectErrno('ENOENT', call(f.sim.unmapReq(ioas, base, 8n * PAGE)), 'cuts the first area');
    expectErrno(
      'ENOENT',
      call(f.sim.unmapReq(ioas, base + 3n * 16n * PAGE + 8n * PAGE, 8n * PAGE)),
      'cuts the last',
    );
    expect(f.sim.unmap(ioas, base, 3n * 16n * PAGE + 8n * PAGE + 8n * PAGE)).to.equal(32n * PAGE);
    expectErrno('ENOENT', call(f.sim.unmapReq(ioas, base, PAGE)), 'nothing there');
    expectErrno('EINVAL', call(f.sim.unmapReq(ioas, base, 0n)), 'length 0');
    expectErrno('EOVERFLOW', call(f.sim.unmapReq(ioas, U64_MAX - PAGE + 1n, 2n * PAGE)), 'wraps');
    expectErrno('EOVERFLOW', call(f.sim.unmapReq(ioas, U64_MAX, PAGE)), 'iova ULONG_MAX');
    expectErrno('ENOENT', call(f.sim.unmapReq(0x7fff_0000, base, PAGE)), 'unknown IOAS');
    // Whole first area, half the second: ENOENT, yet the first one is gone.
    f.sim.map(ioas, f.buf, 4n * PAGE, 0x10_0000n);
    f.sim.map(ioas, f.buf, 4n * PAGE, 0x10_4000n);
    expectErrno('ENOENT', call(f.sim.unmapReq(ioas, 0x10_0000n, 6n * PAGE)), 'non-atomic');
    expectErrno('ENOENT', call(f.sim.unmapReq(ioas, 0x10_0000n, 4n * PAGE)), 'first already gone');
    // Unmap-all (0, U64_MAX) of an empty IOAS succeeds with 0 (B5 #5).
    expect(f.sim.unmap(ioas, 0n, U64_MAX)).to.equal(4n * PAGE);
    expect(f.sim.unmap(ioas, 0n, U64_MAX)).to.equal(0n);
  });

  it('COPY: shares pages into another IOAS; EEXIST, ENOENT (not fully mapped), EINVAL, EOPNOTSUPP, EOVERFLOW, EPERM (B5 #13)', function () {
    const src = f.sim.ioasAlloc();
    const dst = f.sim.ioasAlloc();
    const buf = hugeAligned(f.sim);
    f.sim.map(src, buf, 8n * PAGE, 0x10_0000n);
    f.sim.map(src, buf, 2n * PAGE, 0x20_0000n, F.READABLE);
    // Two adjacent areas copy as one range.
    f.sim.map(src, buf + 8n * PAGE, 2n * PAGE, 0x10_8000n);
    const req = (flags = RW | F.FIXED_IOVA, srcIova = 0x10_0000n, length = 8n * PAGE, dstIoas = dst) => {
      const c = iommu_ioas_copy.view().reset();
      c.flags = flags;
      c.src_ioas_id = src;
      c.dst_ioas_id = dstIoas;
      c.src_iova = srcIova;
      c.dst_iova = 0x80_0000n;
      c.length = length;
      return c;
    };
    const call = (c: ReturnType<typeof req>) => () => f.sim.port.ioctl(f.sim.fd, IOMMU_IOAS_COPY, c.bytes);
    call(req(RW | F.FIXED_IOVA, 0x10_0000n, 10n * PAGE))();
    expectErrno('EEXIST', call(req()), 'dst occupied');
    expectErrno('ENOENT', call(req(RW | F.FIXED_IOVA, 0x30_0000n)), 'src unmapped');
    expectErrno('ENOENT', call(req(RW | F.FIXED_IOVA, 0x10_0000n, 16n * PAGE)), 'src partly mapped');
    expectErrno('EINVAL', call(req(F.FIXED_IOVA)), 'no R|W');
    expectErrno('EINVAL', call(req(RW | F.FIXED_IOVA, 0x10_0000n, 0n)), 'length 0');
    expectErrno('EOPNOTSUPP', call(req(RW | F.FIXED_IOVA | 8)), 'unknown flag');
    expectErrno('EOVERFLOW', call(req(RW | F.FIXED_IOVA, 0x10_0000n, U64_MAX)), 'length ULONG_MAX');
    expectErrno('ENOENT', call(req(RW | F.FIXED_IOVA, 0x10_0000n, 8n * PAGE, 0x7fff_0000)), 'unknown dst');
    expectErrno('EPERM', call(req(RW, 0x20_0000n, 2n * PAGE)), 'WRITEABLE copy of read-only pages');
    const auto = req(F.READABLE, 0x20_0000n, 2n * PAGE);
    call(auto)();
    expect(auto.dst_iova).to.equal(0x2000n);
    // The copy outlives the source mapping.
    expect(f.sim.unmap(src, 0n, U64_MAX)).to.equal(12n * PAGE);
    expect(f.sim.unmap(dst, 0x80_0000n, 10n * PAGE)).to.equal(10n * PAGE);
    expect(f.sim.unmap(dst, auto.dst_iova, 2n * PAGE)).to.equal(2n * PAGE);
  });

  it('IOVA_RANGES: EMSGSIZE with the count (written back), then the ranges; domain-less [0, ULONG_MAX] alignment 1; ADD_RESERVED splits it', function () {
    const ioas = f.sim.ioasAlloc();
    expect(f.sim.iovaRanges(ioas)).to.deep.equal({ ranges: [[0n, U64_MAX]], alignment: 1n });
    f.sim.testCmd(iommu_test_cmd_add_reserved, IOMMU_TEST_OP.ADD_RESERVED, ioas, (v) => {
      v.start = PAGE;
      v.length = PAGE;
    });
    expect(f.sim.iovaRanges(ioas).ranges).to.deep.equal([
      [0n, PAGE - 1n],
      [2n * PAGE, U64_MAX],
    ]);
    // num_iovas 1 of 2: the first range is written, EMSGSIZE, num_iovas = 2.
    const out = f.sim.scratch();
    const r = iommu_ioas_iova_ranges.view().reset();
    r.ioas_id = ioas;
    r.num_iovas = 1;
    r.allowed_iovas = out;
    expectErrno('EMSGSIZE', () => f.sim.port.ioctl(f.sim.fd, IOMMU_IOAS_IOVA_RANGES, r.bytes));
    expect(r.num_iovas).to.equal(2);
    expect(iommu_iova_range.view(f.sim.bytes(out, 32), 0).last).to.equal(PAGE - 1n);
    expect(iommu_iova_range.view(f.sim.bytes(out, 32), 16).last).to.equal(0n);
    // Writing a range to an unmapped array is EFAULT (B5 #16, bad pointer).
    r.num_iovas = 2;
    r.allowed_iovas = 8n;
    expectErrno('EFAULT', () => f.sim.port.ioctl(f.sim.fd, IOMMU_IOAS_IOVA_RANGES, r.bytes));
    r.allowed_iovas = f.sim.memfd(PAGE, PROT.READ); // read-only: EFAULT too, and the simulator survives
    expectErrno(
      'EFAULT',
      () => f.sim.port.ioctl(f.sim.fd, IOMMU_IOAS_IOVA_RANGES, r.bytes),
      'read-only array',
    );
    r.__reserved = 1;
    expectErrno('EOPNOTSUPP', () => f.sim.port.ioctl(f.sim.fd, IOMMU_IOAS_IOVA_RANGES, r.bytes));
    r.__reserved = 0;
    r.ioas_id = 99;
    expectErrno('ENOENT', () => f.sim.port.ioctl(f.sim.fd, IOMMU_IOAS_IOVA_RANGES, r.bytes));
  });

  it('ALLOW_IOVAS: steers kernel-chosen IOVAs, ENOSPC when full (B5 #9), EADDRINUSE against reserved (B5 #15), EINVAL bad lists', function () {
    const ioas = f.sim.ioasAlloc();
    const arr = f.sim.scratch();
    const allow = (ranges: [bigint, bigint][], id = ioas) => {
      ranges.forEach(([s, l], i) => {
        const e = iommu_iova_range.view(f.sim.bytes(arr, 64), i * 16);
        e.start = s;
        e.last = l;
      });
      const a = iommu_ioas_allow_iovas.view().reset();
      a.ioas_id = id;
      a.num_iovas = ranges.length;
      a.allowed_iovas = arr;
      return () => f.sim.port.ioctl(f.sim.fd, IOMMU_IOAS_ALLOW_IOVAS, a.bytes);
    };
    allow([[0x4000_0000n, 0x4000_ffffn]])();
    const iova = f.sim.map(ioas, f.buf, 4n * PAGE);
    expect(iova).to.equal(0x4000_0000n);
    expectErrno('ENOSPC', () => f.sim.map(ioas, f.buf, 16n * PAGE), 'no allowed hole');
    f.sim.map(ioas, f.buf, PAGE, 0x10_0000n); // fixed IOVAs ignore the allowed ranges
    expectErrno('EINVAL', allow([[0x5000_0000n, 0x5000_0000n]]), 'start == last');
    expectErrno(
      'EINVAL',
      allow([
        [0x5000_0000n, 0x5000_ffffn],
        [0x5000_8000n, 0x5001_ffffn],
      ]),
      'overlap',
    );
    expectErrno('ENOENT', allow([[0x5000_0000n, 0x5000_ffffn]], 99), 'unknown IOAS');
    // selftest area_allowed: reserved vs allowed both ways.
    f.sim.testCmd(iommu_test_cmd_add_reserved, IOMMU_TEST_OP.ADD_RESERVED, ioas, (v) => {
      v.start = 0x6000_0000n;
      v.length = PAGE;
    });
    expectErrno('EADDRINUSE', allow([[0x5fff_0000n, 0x6000_0fffn]]), 'allowed over reserved');
    expectErrno(
      'EADDRINUSE',
      () =>
        f.sim.testCmd(iommu_test_cmd_add_reserved, IOMMU_TEST_OP.ADD_RESERVED, ioas, (v) => {
          v.start = 0x4000_8000n;
          v.length = PAGE;
        }),
      'reserved over allowed',
    );
    expectErrno(
      'EADDRINUSE',
      () =>
        f.sim.testCmd(iommu_test_cmd_add_reserved, IOMMU_TEST_OP.ADD_RESERVED, ioas, (v) => {
          v.start = 0x10_0000n;
          v.length = PAGE;
        }),
      'reserved over an area',
    );
    const bad = f.sim.scratch();
    f.sim.port.munmap(bad, PAGE);
    const a = iommu_ioas_allow_iovas.view().reset();
    a.ioas_id = ioas;
    a.num_iovas = 1;
    a.allowed_iovas = bad;
    expectErrno(
      'EFAULT',
      () => f.sim.port.ioctl(f.sim.fd, IOMMU_IOAS_ALLOW_IOVAS, a.bytes),
      'unmapped array',
    );
    allow([])();
    f.sim.map(ioas, f.buf, 16n * PAGE);
    f.sim.unmap(ioas, 0n, U64_MAX);
  });

  it('OPTION: RLIMIT_MODE (EBUSY with objects), HUGE_PAGES per IOAS; EINVAL, EOPNOTSUPP, ENOENT (B5 #24)', function () {
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
    const call = (o: ReturnType<typeof opt>) => () => f.sim.port.ioctl(f.sim.fd, IOMMU_OPTION, o.bytes);
    const get = opt(RLIMIT_MODE, GET, 0, 7n);
    call(get)();
    expect(get.val64).to.equal(0n);
    call(opt(RLIMIT_MODE, SET, 0, 1n))();
    call(get)();
    expect(get.val64).to.equal(1n);
    expectErrno('EINVAL', call(opt(RLIMIT_MODE, SET, 0, 2n)));
    expectErrno('EOPNOTSUPP', call(opt(RLIMIT_MODE, GET, 1)), 'object_id');
    expectErrno('EOPNOTSUPP', call(opt(RLIMIT_MODE, 9)), 'op');
    // selftest global_options: HUGE_PAGES of object 0 is ENOENT.
    expectErrno('ENOENT', call(opt(HUGE_PAGES, GET)));
    const ioas = f.sim.ioasAlloc();
    expectErrno('EBUSY', call(opt(RLIMIT_MODE, SET, 0, 0n)), 'objects exist');
    const huge = opt(HUGE_PAGES, GET, ioas, 3n);
    call(huge)();
    expect(huge.val64).to.equal(1n);
    // Only val64 is written back: other fields keep the caller's bytes.
    call(opt(HUGE_PAGES, SET, ioas, 0n))();
    call(huge)();
    expect(huge.val64).to.equal(0n);
    expect(f.sim.iovaRanges(ioas).alignment, 'huge pages off: PAGE_SIZE alignment').to.equal(PAGE);
    expectErrno('EINVAL', () => f.sim.map(ioas, f.buf + 0x800n, PAGE, 0x10_0000n), 'misaligned at map');
    call(opt(HUGE_PAGES, SET, ioas, 1n))();
    // selftest ioas_align_change: a misaligned area blocks the upgrade.
    f.sim.map(ioas, f.buf + 0x800n, PAGE, 0x10_1000n);
    expectErrno('EADDRINUSE', call(opt(HUGE_PAGES, SET, ioas, 0n)), 'misaligned area');
    expectErrno('EINVAL', call(opt(HUGE_PAGES, SET, ioas, 2n)));
    expectErrno('EOPNOTSUPP', call(opt(99, GET, ioas)), 'unknown option');
    expectErrno('EOPNOTSUPP', call(opt(HUGE_PAGES, 7, ioas)), 'unknown op');
    const r = opt(HUGE_PAGES, GET, ioas);
    r.__reserved = 1;
    expectErrno('EOPNOTSUPP', call(r), '__reserved');
    f.sim.unmap(ioas, 0n, U64_MAX);
  });

  it('VFIO_IOAS: GET without one -> ENODEV (not ENOENT); SET, GET, CLEAR; destroying it clears it', function () {
    const v = (op: number, id = 0) => {
      const x = iommu_vfio_ioas.view().reset();
      x.op = op;
      x.ioas_id = id;
      return x;
    };
    const call = (x: ReturnType<typeof v>) => () => f.sim.port.ioctl(f.sim.fd, IOMMU_VFIO_IOAS, x.bytes);
    expectErrno('ENODEV', call(v(0)));
    const ioas = f.sim.ioasAlloc();
    call(v(1, ioas))();
    const got = v(0);
    call(got)();
    expect(got.ioas_id).to.equal(ioas);
    call(v(2))();
    expectErrno('ENODEV', call(v(0)), 'after CLEAR');
    expectErrno('ENOENT', call(v(1, 99)), 'SET unknown');
    expectErrno('EOPNOTSUPP', call(v(3)), 'op');
    const r = v(0);
    r.__reserved = 1;
    expectErrno('EOPNOTSUPP', call(r), '__reserved');
    call(v(1, ioas))();
    f.sim.destroy(ioas);
    expectErrno('ENODEV', call(v(0)), 'destroyed');
  });
});
