/**
 * Random programs for the differential test: sequences of iommufd or type1 operations,
 * generated with fast-check, run on two syscall ports (the real kernel and the simulated
 * one), compared outcome by outcome. Addresses are chosen the syzkaller way, as "the nth
 * live mapping plus an offset", so random programs hit real edges (exact areas, splits,
 * overlaps by a page, unaligned starts) instead of empty space.
 */
import fc from 'fast-check';
import { SyscallError } from '../../src/port/errors.js';
import { type SyscallPort } from '../../src/port/port.js';
import { MAP, MFD, O, PROT } from '../../src/uapi/libc.js';
import {
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FLAGS,
  IOMMU_IOAS_UNMAP,
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP,
  VFIO_DMA_MAP_FLAG,
  VFIO_DMA_UNMAP_FLAG,
  VFIO_EXTENSION,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_GROUP_UNSET_CONTAINER,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  iommu_destroy,
  iommu_ioas_alloc,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_unmap,
  iommu_iova_range,
  iommu_test_cmd_mock_domain,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
} from '../../src/uapi/index.js';

const PAGE = 0x1000n;
/** Pages of user memory each program maps from. */
export const BUF_PAGES = 64;
const U64 = (1n << 64n) - 1n;

/** An address chosen relative to the live mappings: the nth one's start plus `delta` quarter pages. */
export type Sel = { nth: number; delta: number } | { abs: 'top' | 'zero' | 'msi' | 'high' };

/** A length: whole pages plus a sub-page remainder (usually none). */
export interface Len {
  pages: number;
  frac: number;
}

/** One iommufd operation. */
export type IommufdOp =
  | { op: 'map'; ioas: number; fixed: boolean; at: Sel; len: Len; va: number; vaFrac: number; flags: number }
  | { op: 'unmap'; ioas: number; at: Sel; len: Len }
  | { op: 'unmap_all'; ioas: number }
  | { op: 'copy'; from: number; at: Sel; len: Len; to: Sel; flags: number }
  | { op: 'mock_domain'; ioas: number }
  | { op: 'iova_ranges'; ioas: number }
  | { op: 'destroy'; ioas: number };

/** One type1 operation. */
export type Type1Op =
  | { op: 'map'; at: Sel; len: Len; va: number; flags: number }
  | { op: 'unmap'; at: Sel; len: Len }
  | { op: 'unmap_all' }
  | { op: 'get_info' };

const sel: fc.Arbitrary<Sel> = fc.oneof(
  { weight: 12, arbitrary: fc.record({ nth: fc.nat(7), delta: fc.integer({ min: -8, max: 8 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      abs: fc.constantFrom('top', 'zero', 'msi', 'high') as fc.Arbitrary<'top' | 'zero' | 'msi' | 'high'>,
    }),
  },
);
const len: fc.Arbitrary<Len> = fc.record({
  pages: fc.oneof(
    { weight: 10, arbitrary: fc.integer({ min: 1, max: 8 }) },
    { weight: 1, arbitrary: fc.constantFrom(0, 16, 32) },
  ),
  frac: fc.oneof(
    { weight: 12, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.constantFrom(0x400, 0x800, 0xfff) },
  ),
});
const RW = IOMMU_IOAS_MAP_FLAGS.READABLE | IOMMU_IOAS_MAP_FLAGS.WRITEABLE;
const ioasFlags = fc.oneof(
  { weight: 10, arbitrary: fc.constant(RW) },
  { weight: 2, arbitrary: fc.constant(IOMMU_IOAS_MAP_FLAGS.READABLE) },
  { weight: 1, arbitrary: fc.constantFrom(0, IOMMU_IOAS_MAP_FLAGS.WRITEABLE, RW | (1 << 5)) },
);

/** Random iommufd programs over two IOASes (0 and 1). */
export const iommufdProgram: fc.Arbitrary<IommufdOp[]> = fc.array(
  fc.oneof(
    {
      weight: 10,
      arbitrary: fc.record({
        op: fc.constant('map' as const),
        ioas: fc.nat(1),
        fixed: fc.boolean(),
        at: sel,
        len,
        va: fc.nat(BUF_PAGES - 1),
        vaFrac: fc.constantFrom(0, 0, 0, 0, 0x800),
        flags: ioasFlags,
      }),
    },
    { weight: 6, arbitrary: fc.record({ op: fc.constant('unmap' as const), ioas: fc.nat(1), at: sel, len }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('unmap_all' as const), ioas: fc.nat(1) }) },
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant('copy' as const),
        from: fc.nat(1),
        at: sel,
        len,
        to: sel,
        flags: ioasFlags,
      }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('mock_domain' as const), ioas: fc.nat(1) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('iova_ranges' as const), ioas: fc.nat(1) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('destroy' as const), ioas: fc.nat(1) }) },
  ),
  { minLength: 1, maxLength: 20 },
);

const t1Flags = fc.oneof(
  { weight: 10, arbitrary: fc.constant(VFIO_DMA_MAP_FLAG.READ | VFIO_DMA_MAP_FLAG.WRITE) },
  { weight: 2, arbitrary: fc.constant(VFIO_DMA_MAP_FLAG.READ) },
  { weight: 1, arbitrary: fc.constantFrom(0, VFIO_DMA_MAP_FLAG.WRITE) },
);

/** Random type1 programs on one container. */
export const type1Program: fc.Arbitrary<Type1Op[]> = fc.array(
  fc.oneof(
    {
      weight: 10,
      arbitrary: fc.record({
        op: fc.constant('map' as const),
        at: sel,
        len,
        va: fc.nat(BUF_PAGES - 1),
        flags: t1Flags,
      }),
    },
    { weight: 6, arbitrary: fc.record({ op: fc.constant('unmap' as const), at: sel, len }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('unmap_all' as const) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('get_info' as const) }) },
  ),
  { minLength: 1, maxLength: 20 },
);

interface Live {
  iova: bigint;
  length: bigint;
}

function resolve(s: Sel, live: Live[]): bigint {
  if ('abs' in s) {
    switch (s.abs) {
      case 'top':
        return (1n << 64n) - PAGE;
      case 'zero':
        return 0n;
      case 'msi':
        return 0xfee0_0000n;
      case 'high':
        return 1n << 39n; // the VT-d aperture end + 1 in the test VM
    }
  }
  const base = live.length ? live[s.nth % live.length]!.iova : 0x10_0000n * BigInt((s.nth % 4) + 1);
  const a = base + BigInt(s.delta) * 0x400n;
  return a < 0n ? 0n : a;
}

const bytesOf = (l: Len) => BigInt(l.pages) * PAGE + BigInt(l.frac);

// One line per outcome: what the comparison reads.
function outcome(f: () => string): string {
  try {
    return `ok ${f()}`;
  } catch (e) {
    if (e instanceof SyscallError) return `${e.code}`;
    throw e;
  }
}

function forget(live: Live[], iova: bigint, length: bigint): void {
  const end = iova + length;
  for (let i = live.length - 1; i >= 0; i--) {
    const l = live[i]!;
    if (l.iova >= iova && l.iova + l.length <= end) live.splice(i, 1);
  }
}

/** User memory for a program: a memfd of BUF_PAGES pages, mapped read-write. */
function userMemory(port: SyscallPort): { va: bigint; release: () => void } {
  const fd = port.memfdCreate('differential', MFD.CLOEXEC);
  const size = BigInt(BUF_PAGES) * PAGE;
  port.ftruncate(fd, size);
  const va = port.mmap(size, PROT.READ | PROT.WRITE, MAP.SHARED, fd, 0n);
  return {
    va,
    release: () => {
      port.munmap(va, size);
      port.close(fd);
    },
  };
}

/** Runs an iommufd program on `port`; returns one outcome line per operation, then the probed final tables. */
export function runIommufd(port: SyscallPort, prog: readonly IommufdOp[]): string[] {
  const mem = userMemory(port);
  const fd = port.open('/dev/iommu', O.RDWR | O.CLOEXEC);
  const trace: string[] = [];
  try {
    const ids: number[] = [];
    for (let i = 0; i < 2; i++) {
      const a = iommu_ioas_alloc.view().reset();
      port.ioctl(fd, IOMMU_IOAS_ALLOC, a.bytes);
      ids.push(a.out_ioas_id);
    }
    trace.push(`ioas ${ids.join(' ')}`);
    const live: Live[][] = [[], []];
    for (const op of prog) {
      switch (op.op) {
        case 'map': {
          const m = iommu_ioas_map.view().reset();
          m.ioas_id = ids[op.ioas]!;
          m.flags = op.flags | (op.fixed ? IOMMU_IOAS_MAP_FLAGS.FIXED_IOVA : 0);
          m.user_va = mem.va + BigInt(op.va) * PAGE + BigInt(op.vaFrac);
          // Keep the user range inside the buffer: a length past its end is EFAULT on both kernels, but tells little.
          const room = BigInt(BUF_PAGES - op.va) * PAGE - BigInt(op.vaFrac);
          const l = bytesOf(op.len);
          m.length = l > room ? room : l;
          m.iova = op.fixed ? resolve(op.at, live[op.ioas]!) : 0n;
          trace.push(
            outcome(() => {
              port.ioctl(fd, IOMMU_IOAS_MAP, m.bytes);
              live[op.ioas]!.push({ iova: m.iova, length: m.length });
              return `iova 0x${m.iova.toString(16)}`;
            }),
          );
          break;
        }
        case 'unmap': {
          const u = iommu_ioas_unmap.view().reset();
          u.ioas_id = ids[op.ioas]!;
          u.iova = resolve(op.at, live[op.ioas]!);
          u.length = bytesOf(op.len);
          trace.push(
            outcome(() => {
              port.ioctl(fd, IOMMU_IOAS_UNMAP, u.bytes);
              forget(live[op.ioas]!, u.iova, u.length);
              return `unmapped 0x${u.length.toString(16)}`;
            }),
          );
          break;
        }
        case 'unmap_all': {
          const u = iommu_ioas_unmap.view().reset();
          u.ioas_id = ids[op.ioas]!;
          u.iova = 0n;
          u.length = U64;
          trace.push(
            outcome(() => {
              port.ioctl(fd, IOMMU_IOAS_UNMAP, u.bytes);
              live[op.ioas]!.length = 0;
              return `unmapped 0x${u.length.toString(16)}`;
            }),
          );
          break;
        }
        case 'copy': {
          const to = 1 - op.from;
          const c = iommu_ioas_copy.view().reset();
          c.flags = op.flags | IOMMU_IOAS_MAP_FLAGS.FIXED_IOVA;
          c.src_ioas_id = ids[op.from]!;
          c.dst_ioas_id = ids[to]!;
          c.src_iova = resolve(op.at, live[op.from]!);
          c.length = bytesOf(op.len);
          c.dst_iova = resolve(op.to, live[to]!);
          trace.push(
            outcome(() => {
              port.ioctl(fd, IOMMU_IOAS_COPY, c.bytes);
              live[to]!.push({ iova: c.dst_iova, length: c.length });
              return `dst 0x${c.dst_iova.toString(16)}`;
            }),
          );
          break;
        }
        case 'mock_domain': {
          const t = iommu_test_cmd_mock_domain.view().reset();
          t.op = IOMMU_TEST_OP.MOCK_DOMAIN;
          t.id = ids[op.ioas]!;
          trace.push(
            outcome(() => {
              port.ioctl(fd, IOMMU_TEST_CMD, t.bytes);
              return `stdev ${t.out_stdev_id} hwpt ${t.out_hwpt_id} idev ${t.out_idev_id}`;
            }),
          );
          break;
        }
        case 'iova_ranges':
          trace.push(outcome(() => iovaRanges(port, fd, ids[op.ioas]!, mem.va)));
          break;
        case 'destroy': {
          const d = iommu_destroy.view().reset();
          d.id = ids[op.ioas]!;
          trace.push(
            outcome(() => {
              port.ioctl(fd, IOMMU_DESTROY, d.bytes);
              live[op.ioas]!.length = 0;
              return 'destroyed';
            }),
          );
          break;
        }
      }
    }
    // The final tables, read back by probing: unmapping each remembered range exactly
    // succeeds only where the kernel holds an area there; unmap-all then counts the rest.
    for (const k of [0, 1]) {
      const u = iommu_ioas_unmap.view().reset();
      for (const l of [...live[k]!].sort((a, b) => (a.iova < b.iova ? -1 : 1))) {
        u.reset();
        u.ioas_id = ids[k]!;
        u.iova = l.iova;
        u.length = l.length;
        trace.push(
          `probe ${k} 0x${l.iova.toString(16)}: ${outcome(() => {
            port.ioctl(fd, IOMMU_IOAS_UNMAP, u.bytes);
            return `0x${u.length.toString(16)}`;
          })}`,
        );
      }
      u.reset();
      u.ioas_id = ids[k]!;
      u.length = U64;
      trace.push(
        `rest ${k}: ${outcome(() => {
          port.ioctl(fd, IOMMU_IOAS_UNMAP, u.bytes);
          return `0x${u.length.toString(16)}`;
        })}`,
      );
    }
  } finally {
    port.close(fd);
    mem.release();
  }
  return trace;
}

// IOMMU_IOAS_IOVA_RANGES with the two-call pattern; the ranges are written into user memory.
function iovaRanges(port: SyscallPort, fd: number, ioas: number, scratch: bigint): string {
  const r = iommu_ioas_iova_ranges.view().reset();
  r.ioas_id = ioas;
  let first = 'fit';
  try {
    port.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, r.bytes);
  } catch (e) {
    if (!(e instanceof SyscallError) || e.code !== 'EMSGSIZE') throw e;
    first = 'EMSGSIZE';
  }
  const n = r.num_iovas;
  // The scratch page at the end of the user buffer holds the array.
  const at = scratch + BigInt(BUF_PAGES - 1) * PAGE;
  r.allowed_iovas = at;
  port.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, r.bytes);
  const mem = port.memory(at, n * iommu_iova_range.size);
  const ranges = Array.from({ length: n }, (_, i) => {
    const v = iommu_iova_range.view(mem, i * iommu_iova_range.size);
    return `[0x${v.start.toString(16)},0x${v.last.toString(16)}]`;
  });
  return `${first} n=${n} align=0x${r.out_iova_alignment.toString(16)} ${ranges.join(' ')}`;
}

/** The IOMMU group a type1 program runs on: the first one the port's /dev/vfio shows. */
export function firstGroup(port: SyscallPort): number {
  const g = port
    .readdir('/dev/vfio')
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .sort((a, b) => a - b)[0];
  if (g === undefined) throw new Error('no VFIO group in /dev/vfio');
  return g;
}

/** Runs a type1 program on `port` with a fresh container holding `group`. */
export function runType1(port: SyscallPort, group: number, prog: readonly Type1Op[]): string[] {
  const mem = userMemory(port);
  const container = port.open('/dev/vfio/vfio', O.RDWR | O.CLOEXEC);
  const gfd = port.open(`/dev/vfio/${group}`, O.RDWR | O.CLOEXEC);
  const trace: string[] = [];
  try {
    port.ioctl(gfd, VFIO_GROUP_SET_CONTAINER, container);
    port.ioctl(container, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU);
    const live: Live[] = [];
    for (const op of prog) {
      switch (op.op) {
        case 'map': {
          const m = vfio_iommu_type1_dma_map.view().reset();
          m.flags = op.flags;
          m.vaddr = mem.va + BigInt(op.va) * PAGE;
          const room = BigInt(BUF_PAGES - op.va) * PAGE;
          const l = bytesOf(op.len);
          m.size = l > room ? room : l;
          m.iova = resolve(op.at, live);
          trace.push(
            outcome(() => {
              port.ioctl(container, VFIO_IOMMU_MAP_DMA, m.bytes);
              live.push({ iova: m.iova, length: m.size });
              return 'mapped';
            }),
          );
          break;
        }
        case 'unmap': {
          const u = vfio_iommu_type1_dma_unmap.view().reset();
          u.iova = resolve(op.at, live);
          u.size = bytesOf(op.len);
          const asked = u.size;
          trace.push(
            outcome(() => {
              port.ioctl(container, VFIO_IOMMU_UNMAP_DMA, u.bytes);
              forget(live, u.iova, asked);
              return `unmapped 0x${u.size.toString(16)}`;
            }),
          );
          break;
        }
        case 'unmap_all': {
          const u = vfio_iommu_type1_dma_unmap.view().reset();
          u.flags = VFIO_DMA_UNMAP_FLAG.ALL;
          trace.push(
            outcome(() => {
              port.ioctl(container, VFIO_IOMMU_UNMAP_DMA, u.bytes);
              live.length = 0;
              return `unmapped 0x${u.size.toString(16)}`;
            }),
          );
          break;
        }
        case 'get_info': {
          const info = vfio_iommu_type1_info.view().reset();
          trace.push(
            outcome(() => {
              port.ioctl(container, VFIO_IOMMU_GET_INFO, info.bytes);
              return `flags ${info.flags} pgsizes 0x${info.iova_pgsizes.toString(16)} argsz ${info.argsz}`;
            }),
          );
          break;
        }
      }
    }
    const u = vfio_iommu_type1_dma_unmap.view().reset();
    for (const l of [...live].sort((a, b) => (a.iova < b.iova ? -1 : 1))) {
      u.reset();
      u.iova = l.iova;
      u.size = l.length;
      trace.push(
        `probe 0x${l.iova.toString(16)}: ${outcome(() => {
          port.ioctl(container, VFIO_IOMMU_UNMAP_DMA, u.bytes);
          return `0x${u.size.toString(16)}`;
        })}`,
      );
    }
    u.reset();
    u.flags = VFIO_DMA_UNMAP_FLAG.ALL;
    trace.push(
      `rest: ${outcome(() => {
        port.ioctl(container, VFIO_IOMMU_UNMAP_DMA, u.bytes);
        return `0x${u.size.toString(16)}`;
      })}`,
    );
  } finally {
    try {
      port.ioctl(gfd, VFIO_GROUP_UNSET_CONTAINER);
    } catch {
      // already unset when setup failed; closing the group unsets it anyway
    }
    port.close(gfd);
    port.close(container);
    mem.release();
  }
  return trace;
}

/** The first line where two traces differ, as a readable report; null when they agree. */
export function compareTraces(
  a: readonly string[],
  b: readonly string[],
  names: [string, string],
): string | null {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i])
      return `step ${i}: ${names[0]} says ${a[i] ?? '(nothing)'}, ${names[1]} says ${b[i] ?? '(nothing)'}`;
  }
  return null;
}
