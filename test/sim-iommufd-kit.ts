/**
 * Shared helpers of the sim-iommufd specs: a same-thread simulated kernel with only the
 * iommufd driver (and the per-test fixture that makes and checks one), memory made through
 * the port, the ioctls every spec repeats, the selftest commands, and a fake VT-d device
 * for the VFIO-cdev side of the binding.
 */
import { expect } from 'chai';
import { SyscallError } from '../src/port/errors.js';
import { LinuxPort } from '../src/port/linux.js';
import { MAP, MFD, O, PROT } from '../src/uapi/libc.js';
import { SimPort } from '../src/kernel/sim-port.js';
import { SimKernel } from '../src/kernel/kernel.js';
import { KernelErrno } from '../src/kernel/errno.js';
import { makeIommufdDriver, type IommufdFile } from '../src/kernel/iommufd/index.js';
import { defaultTopology, type Topology } from '../src/kernel/topology.js';
import type { DmaTranslator, IommuDevice } from '../src/kernel/types.js';
import {
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FLAGS,
  IOMMU_IOAS_UNMAP,
  iommu_destroy,
  iommu_ioas_alloc,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_unmap,
  iommu_iova_range,
} from '../src/uapi/iommufd.js';
import {
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP,
  iommu_test_cmd_check_map,
  iommu_test_cmd_check_refs,
  iommu_test_cmd_mock_domain_flags,
} from '../src/uapi/iommufd-test.js';
import type { ErrnoName } from '../src/uapi/errno.js';
import { expectErrno as kernelExpectErrno } from './kernel/kit.js';
import type { FieldDef, Struct, StructView } from '../src/uapi/layout.js';

/** PAGE_SIZE */
export const PAGE = 4096n;
/** U64_MAX / ULONG_MAX */
export const U64_MAX = 0xffff_ffff_ffff_ffffn;
/** READABLE | WRITEABLE */
export const RW = IOMMU_IOAS_MAP_FLAGS.READABLE | IOMMU_IOAS_MAP_FLAGS.WRITEABLE;
/** MOCK_APERTURE_START */
export const MOCK_START = 1n << 24n;
/** MOCK_IO_PAGE_SIZE */
export const MOCK_PAGE = 2048n;

/**
 * The kernel suites' expectErrno, also for direct calls on the file (the VFIO side's binding
 * API), which throw the model's own KernelErrno rather than a SyscallError.
 */
export function expectErrno(expected: ErrnoName | number, fn: () => unknown, what = ''): SyscallError {
  return kernelExpectErrno(
    expected,
    () => {
      try {
        return fn();
      } catch (thrown) {
        if (thrown instanceof KernelErrno) throw new SyscallError('kernel', thrown.errno, {});
        throw thrown;
      }
    },
    what,
  );
}

/** A device of the topology as the VFIO cdev model would hand it to bindDevice(). */
export class FakeDevice implements IommuDevice {
  translator: DmaTranslator | null = null;

  constructor(
    readonly topology: Topology,
    readonly index = 0,
  ) {}

  get spec() {
    return this.topology.devices[this.index]!;
  }
  get iommu() {
    return this.topology.iommu;
  }
  get group() {
    return this.spec.group;
  }
  setTranslator(t: DmaTranslator | null): void {
    this.translator = t;
  }
}

/** What {@link Sim.fixture} makes for each test and checks after it. */
export interface SimFixtureOptions {
  /** A memfd mapping of this many bytes: `buf`. */
  buf?: bigint;
  /** After each test, once the iommufd is closed: expect no page left pinned. */
  checkPins?: boolean;
  /** After each test, once the iommufd is closed: expect no locked_vm left. */
  checkLocked?: boolean;
}

/** A fresh simulated kernel per test; its fields are set by the `beforeEach` hook. */
export interface SimFixture {
  readonly sim: Sim;
  readonly buf: bigint;
}

/** One simulated kernel, a port on it and an open /dev/iommu, with helpers. */
export class Sim {
  readonly kernel: SimKernel;
  readonly port: SimPort;
  readonly fd: number;

  /** With `mockIommu` (the default here) the selftest's mock domains work, as in a virtio-iommu VM. */
  constructor(topology: Topology = defaultTopology(), mockIommu = true) {
    this.kernel = new SimKernel(topology, new LinuxPort(), [makeIommufdDriver({ mockIommu })]);
    this.port = SimPort.direct(this.kernel);
    this.fd = this.port.open('/dev/iommu', O.RDWR | O.CLOEXEC);
  }

  /**
   * Registers, in the calling `describe`, a `beforeEach` that makes a new Sim (and `buf`,
   * as `opts` asks) and an `afterEach` that closes its iommufd and checks what `opts`
   * asks; returns the fixture those hooks fill in.
   */
  static fixture(opts: SimFixtureOptions = {}): SimFixture {
    const f: { sim?: Sim; buf?: bigint } = {};
    beforeEach(function () {
      const sim = (f.sim = new Sim());
      if (opts.buf) f.buf = sim.memfd(opts.buf);
    });
    afterEach(function () {
      const sim = f.sim!;
      sim.close();
      if (opts.checkPins) expect(sim.kernel.mem.pinCount, 'pins left after close').to.equal(0);
      if (opts.checkLocked) expect(sim.kernel.mem.locked, 'locked_vm left after close').to.equal(0n);
    });
    return f as SimFixture;
  }

  /** The IommufdFile behind an fd (the VFIO model's view). */
  file(fd = this.fd): IommufdFile {
    return this.kernel.file(fd) as IommufdFile;
  }

  /** A shared memfd mapping of `size` bytes; returns its address. */
  memfd(size: bigint, prot: number = PROT.READ | PROT.WRITE): bigint {
    const mfd = this.port.memfdCreate('sim-iommufd', MFD.CLOEXEC);
    this.port.ftruncate(mfd, size);
    const va = this.port.mmap(size, prot, MAP.SHARED, mfd, 0n);
    this.port.close(mfd);
    return va;
  }

  /** Anonymous memory (arrays the kernel reads or writes). */
  scratch(size: bigint = PAGE): bigint {
    return this.port.mmap(size, PROT.READ | PROT.WRITE, MAP.PRIVATE | MAP.ANONYMOUS, -1);
  }

  /** The bytes at a user address. */
  bytes(va: bigint, length: number): Uint8Array {
    return this.port.memory(va, length);
  }

  ioasAlloc(fd = this.fd): number {
    const a = iommu_ioas_alloc.view().reset();
    this.port.ioctl(fd, IOMMU_IOAS_ALLOC, a.bytes);
    return a.out_ioas_id;
  }

  destroy(id: number, fd = this.fd): void {
    const d = iommu_destroy.view().reset();
    d.id = id;
    this.port.ioctl(fd, IOMMU_DESTROY, d.bytes);
  }

  mapReq(ioas: number, va: bigint, length: bigint, iova?: bigint, flags = RW) {
    const m = iommu_ioas_map.view().reset();
    m.ioas_id = ioas;
    m.flags = flags | (iova === undefined ? 0 : IOMMU_IOAS_MAP_FLAGS.FIXED_IOVA);
    m.user_va = va;
    m.length = length;
    m.iova = iova ?? 0n;
    return m;
  }

  /** IOMMU_IOAS_MAP; returns the IOVA. */
  map(ioas: number, va: bigint, length: bigint, iova?: bigint, flags = RW): bigint {
    const m = this.mapReq(ioas, va, length, iova, flags);
    this.port.ioctl(this.fd, IOMMU_IOAS_MAP, m.bytes);
    return m.iova;
  }

  unmapReq(ioas: number, iova: bigint, length: bigint) {
    const u = iommu_ioas_unmap.view().reset();
    u.ioas_id = ioas;
    u.iova = iova;
    u.length = length;
    return u;
  }

  /** IOMMU_IOAS_UNMAP; returns the length unmapped. */
  unmap(ioas: number, iova: bigint, length: bigint): bigint {
    const u = this.unmapReq(ioas, iova, length);
    this.port.ioctl(this.fd, IOMMU_IOAS_UNMAP, u.bytes);
    return u.length;
  }

  /** IOMMU_IOAS_IOVA_RANGES the two-call way (EMSGSIZE first). */
  iovaRanges(ioas: number): { ranges: [bigint, bigint][]; alignment: bigint } {
    const r = iommu_ioas_iova_ranges.view().reset();
    r.ioas_id = ioas;
    expectErrno('EMSGSIZE', () => this.port.ioctl(this.fd, IOMMU_IOAS_IOVA_RANGES, r.bytes), 'sizing call');
    const n = r.num_iovas;
    const buf = this.scratch();
    r.allowed_iovas = buf;
    this.port.ioctl(this.fd, IOMMU_IOAS_IOVA_RANGES, r.bytes);
    expect(r.num_iovas).to.equal(n);
    const bytes = this.bytes(buf, n * 16);
    const ranges = Array.from({ length: n }, (_, i) => {
      const e = iommu_iova_range.view(bytes, i * 16);
      return [e.start, e.last] as [bigint, bigint];
    });
    this.port.munmap(buf, PAGE);
    return { ranges, alignment: r.out_iova_alignment };
  }

  /** IOMMU_TEST_OP_MOCK_DOMAIN(_FLAGS) on an IOAS or HWPT id. */
  mockDomain(id: number, devFlags?: number): { stdev: number; hwpt: number; idev: number } {
    const c = iommu_test_cmd_mock_domain_flags.view().reset();
    c.op = devFlags === undefined ? IOMMU_TEST_OP.MOCK_DOMAIN : IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS;
    c.id = id;
    c.dev_flags = devFlags ?? 0;
    this.port.ioctl(this.fd, IOMMU_TEST_CMD, c.bytes);
    return { stdev: c.out_stdev_id, hwpt: c.out_hwpt_id, idev: c.out_idev_id };
  }

  /** A test command with the given op and id, other fields set by `fill`; returns the view after the call. */
  testCmd<D extends Record<string, FieldDef>>(
    layout: Struct<D>,
    op: number,
    id: number,
    fill: (v: StructView<D>) => void = () => {},
  ): StructView<D> {
    const v = layout.view().reset();
    const h = v as unknown as { op: number; id: number };
    h.op = op;
    h.id = id;
    fill(v);
    this.port.ioctl(this.fd, IOMMU_TEST_CMD, v.bytes);
    return v;
  }

  /** IOMMU_TEST_OP_MD_CHECK_REFS: every page of [va, va + length) has `refs` pins. */
  checkRefs(va: bigint, length: bigint, refs: number): void {
    const c = iommu_test_cmd_check_refs.view().reset();
    c.op = IOMMU_TEST_OP.MD_CHECK_REFS;
    c.uptr = va;
    c.length = length;
    c.refs = refs;
    this.port.ioctl(this.fd, IOMMU_TEST_CMD, c.bytes);
  }

  /** IOMMU_TEST_OP_MD_CHECK_MAP on a mock HWPT. */
  checkMap(hwpt: number, iova: bigint, length: bigint, va: bigint): void {
    const c = iommu_test_cmd_check_map.view().reset();
    c.op = IOMMU_TEST_OP.MD_CHECK_MAP;
    c.id = hwpt;
    c.iova = iova;
    c.length = length;
    c.uptr = va;
    this.port.ioctl(this.fd, IOMMU_TEST_CMD, c.bytes);
  }

  /** Closes the iommufd fd. */
  close(): void {
    this.port.close(this.fd);
  }
}
