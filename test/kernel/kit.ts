/**
 * Shared helpers of the kernel suites: errno expectations, resource tracking
 * (fds, memfd and anonymous mappings, released in reverse order), the edu
 * devices of the VM, the few iommufd calls every suite repeats, and the suites'
 * fixtures (what a suite opens in `before` and releases in `after`). Every kernel
 * call goes through the project's uapi layouts and a SyscallPort.
 */
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { SyscallError } from '../../src/port/errors.js';
import { type SyscallPort } from '../../src/port/port.js';
import { MAP, MFD, O, PROT } from '../../src/uapi/libc.js';
import {
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FLAGS,
  IOMMU_IOAS_UNMAP,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_EXTENSION,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_GROUP_UNSET_CONTAINER,
  VFIO_SET_IOMMU,
  iommu_destroy,
  iommu_ioas_alloc,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_unmap,
  iommu_iova_range,
  vfio_device_bind_iommufd,
  type ErrnoName,
} from '../../src/uapi/index.js';
import { openFds } from '../backends-kit.js';
import { guestTopology, type EduDevice } from './guest.js';
import { kernelPort } from './recording-port.js';

/** The guest's page size (x86-64). */
export const PAGE = 4096;
/** ULONG_MAX on a 64-bit kernel. */
export const U64_MAX = 0xffff_ffff_ffff_ffffn;
/**
 * The x86 MSI window, [MSI_START, MSI_LAST]: reserved in every domain of the VMs' IOMMUs
 * (IOMMU_RESV_MSI in VT-d; QEMU declares it as a reserved region of virtio-iommu).
 */
export const MSI_START = 0xfee0_0000n;
export const MSI_LAST = 0xfeef_ffffn;

/**
 * Runs `fn`, which must fail with `expected` (an errno name, or a number for
 * errnos the ERRNO table lacks); returns the SyscallError.
 */
export function expectErrno(expected: ErrnoName | number, fn: () => unknown, what = ''): SyscallError {
  let rc: unknown;
  try {
    rc = fn();
  } catch (e) {
    if (!(e instanceof SyscallError)) throw e;
    const label = what ? `${what}: ${e.message}` : e.message;
    if (typeof expected === 'number') expect(e.errno, label).to.equal(expected);
    else expect(e.code, label).to.equal(expected);
    return e;
  }
  return expect.fail(
    `${what || 'the call'} returned ${String(rc)}; the kernel was expected to answer ${expected}`,
  );
}

/** A shared memfd mapping (what a VMM maps for guest RAM). */
export interface MemfdBuffer {
  readonly fd: number;
  readonly va: bigint;
  readonly size: number;
  /** The mapped bytes, aliasing the process memory. */
  readonly bytes: Uint8Array;
}

/** Anonymous process memory whose address the kernel reads or writes (arrays, bitmaps, payloads). */
export interface Scratch {
  readonly va: bigint;
  readonly bytes: Uint8Array;
}

type Held = { kind: 'fd'; fd: number } | { kind: 'map'; va: bigint; length: bigint };

/** Tracks what a suite opens and maps; {@link release} undoes it newest first. */
export class Resources {
  private held: Held[] = [];

  constructor(readonly port: SyscallPort) {}

  /** open(2), tracked. */
  open(path: string, flags: number = O.RDWR | O.CLOEXEC): number {
    return this.adopt(this.port.open(path, flags));
  }

  /** Tracks an fd the kernel handed out (a device fd, a fault queue fd). */
  adopt(fd: number): number {
    this.held.push({ kind: 'fd', fd });
    return fd;
  }

  /** Closes a tracked fd now. */
  close(fd: number): void {
    const i = this.held.findIndex((h) => h.kind === 'fd' && h.fd === fd);
    expect(i, `fd ${fd} is not tracked`).to.be.at.least(0);
    this.held.splice(i, 1);
    this.port.close(fd);
  }

  /** A memfd of `size` bytes mapped shared and read-write (or read-only with `prot`). */
  memfd(size: number, prot: number = PROT.READ | PROT.WRITE): MemfdBuffer {
    const fd = this.adopt(this.port.memfdCreate('vfio-engine-kernel-test', MFD.CLOEXEC));
    this.port.ftruncate(fd, BigInt(size));
    const va = this.mmap(BigInt(size), prot, MAP.SHARED, fd);
    return { fd, va, size, bytes: this.port.memory(va, size) };
  }

  /** Zeroed anonymous memory of `size` bytes. */
  scratch(size: number = PAGE): Scratch {
    const va = this.mmap(BigInt(size), PROT.READ | PROT.WRITE, MAP.PRIVATE | MAP.ANONYMOUS, -1);
    return { va, bytes: this.port.memory(va, size) };
  }

  /** mmap(2), tracked. */
  mmap(length: bigint, prot: number, flags: number, fd: number, offset = 0n): bigint {
    const va = this.port.mmap(length, prot, flags, fd, offset);
    this.held.push({ kind: 'map', va, length });
    return va;
  }

  /** munmap(2) of a tracked mapping now. */
  munmap(va: bigint): void {
    const i = this.held.findIndex((h) => h.kind === 'map' && h.va === va);
    expect(i, `mapping 0x${va.toString(16)} is not tracked`).to.be.at.least(0);
    const [h] = this.held.splice(i, 1) as [{ kind: 'map'; va: bigint; length: bigint }];
    this.port.munmap(h.va, h.length);
  }

  /** Unmaps and closes everything, newest first; throws the first failure after trying all. */
  release(): void {
    const errors: unknown[] = [];
    for (const h of this.held.reverse()) {
      try {
        if (h.kind === 'fd') this.port.close(h.fd);
        else this.port.munmap(h.va, h.length);
      } catch (e) {
        errors.push(e);
      }
    }
    this.held = [];
    if (errors.length) throw errors[0];
  }
}

/**
 * The two edu devices the suites use: `iommufd` goes through its cdev, `legacy`
 * through its group, so the two backends never claim the same device (a bound
 * cdev blocks its group and an open group blocks the cdev, both with EBUSY).
 */
export function eduPair(): { iommufd: EduDevice; legacy: EduDevice } {
  const edus = guestTopology();
  expect(edus.length, 'edu devices bound to vfio-pci').to.be.at.least(2);
  return { iommufd: edus[0]!, legacy: edus[1]! };
}

/** The iommufd calls the suites repeat, on one /dev/iommu fd (bad-input calls build their own structs). */
export class Iommufd {
  constructor(
    readonly port: SyscallPort,
    readonly fd: number,
  ) {}

  /** IOMMU_IOAS_ALLOC; returns the IOAS id. */
  ioasAlloc(): number {
    const a = iommu_ioas_alloc.view().reset();
    this.port.ioctl(this.fd, IOMMU_IOAS_ALLOC, a.bytes);
    return a.out_ioas_id;
  }

  /** IOMMU_DESTROY. */
  destroy(id: number): void {
    const d = iommu_destroy.view().reset();
    d.id = id;
    this.port.ioctl(this.fd, IOMMU_DESTROY, d.bytes);
  }

  /** IOMMU_IOAS_MAP at a fixed IOVA (or anywhere with `iova` undefined), read-write by default; returns the IOVA. */
  map(ioas: number, va: bigint, length: number | bigint, iova?: bigint, flags?: number): bigint {
    const F = IOMMU_IOAS_MAP_FLAGS;
    const m = iommu_ioas_map.view().reset();
    m.ioas_id = ioas;
    m.flags = (flags ?? F.READABLE | F.WRITEABLE) | (iova === undefined ? 0 : F.FIXED_IOVA);
    m.user_va = va;
    m.length = BigInt(length);
    m.iova = iova ?? 0n;
    this.port.ioctl(this.fd, IOMMU_IOAS_MAP, m.bytes);
    return m.iova;
  }

  /** IOMMU_IOAS_UNMAP; returns the length the kernel unmapped. */
  unmap(ioas: number, iova: bigint, length: number | bigint): bigint {
    const u = iommu_ioas_unmap.view().reset();
    u.ioas_id = ioas;
    u.iova = iova;
    u.length = BigInt(length);
    this.port.ioctl(this.fd, IOMMU_IOAS_UNMAP, u.bytes);
    return u.length;
  }

  /**
   * IOMMU_IOAS_IOVA_RANGES the documented way: ask with no room (EMSGSIZE, with
   * the count), then again with room for every range.
   */
  iovaRanges(
    ioas: number,
    scratch: Scratch,
  ): { ranges: { start: bigint; last: bigint }[]; alignment: bigint } {
    const r = iommu_ioas_iova_ranges.view().reset();
    r.ioas_id = ioas;
    r.num_iovas = 0;
    expectErrno('EMSGSIZE', () => this.port.ioctl(this.fd, IOMMU_IOAS_IOVA_RANGES, r.bytes), 'sizing call');
    const n = r.num_iovas;
    expect(n, 'ranges reported by the sizing call').to.be.at.least(1);
    expect(n * iommu_iova_range.size).to.be.at.most(scratch.bytes.byteLength);
    r.num_iovas = n;
    r.allowed_iovas = scratch.va;
    this.port.ioctl(this.fd, IOMMU_IOAS_IOVA_RANGES, r.bytes);
    expect(r.num_iovas).to.equal(n);
    const ranges = Array.from({ length: n }, (_, i) => {
      const e = iommu_iova_range.view(scratch.bytes, i * iommu_iova_range.size);
      return { start: e.start, last: e.last };
    });
    return { ranges, alignment: r.out_iova_alignment };
  }
}

/** Fills `bytes` with a pattern that differs for every `seed`. */
export function pattern(bytes: Uint8Array, seed: number): Uint8Array {
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + seed * 31 + (i >> 8)) & 0xff;
  return bytes;
}

/**
 * This process's open fds and mappings that belong to the kernel suites: /dev/iommu,
 * /dev/vfio/*, VFIO device and iommufd fault-queue fds, and the test memfds.
 */
export function kernelHandles(): string[] {
  const mine = /\/dev\/iommu|\/dev\/vfio|\[vfio-device\]|\[iommufd|vfio-engine-kernel-test/;
  const out = openFds()
    .filter(({ target }) => mine.test(target))
    .map(({ fd, target }) => `fd ${fd} -> ${target}`);
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    if (mine.test(line)) out.push(`map ${line}`);
  }
  return out;
}

/** The memory a suite fixture maps, in pages; what is not asked for is not made. */
export interface FixtureOptions {
  /** A memfd buffer of this many pages: `buf`. */
  buf?: number;
  /** A second memfd buffer of this many pages: `other`. */
  other?: number;
  /** Anonymous memory of this many pages: `scratch`. */
  scratch?: number;
}

/** What every suite fixture holds: its fields are set by the `before` hook (those not asked for stay undefined). */
export interface Fixture {
  /** Everything the fixture opens and maps is tracked here and released in `after`, newest first. */
  readonly res: Resources;
  /** The kernel port (`res.port`). */
  readonly port: SyscallPort;
  readonly buf: MemfdBuffer;
  readonly other: MemfdBuffer;
  readonly scratch: Scratch;
}

type Filling<T> = { -readonly [K in keyof T]?: T[K] };

/**
 * Registers, in the calling `describe`, a `before` that makes Resources on the kernel port,
 * calls `open`, maps the memory `opts` asks for, then calls `ready`; and an `after` that
 * calls `close` and then releases everything. Returns the fixture those hooks fill in.
 */
function suiteFixture<T extends Fixture>(
  opts: FixtureOptions,
  steps: {
    open(f: Filling<T>, res: Resources): void;
    ready?(f: Filling<T>, res: Resources): void;
    close?(f: Filling<T>, res: Resources): void;
  },
): T {
  const f: Filling<T> = {};
  before(function () {
    const res = new Resources(kernelPort());
    f.res = res;
    f.port = res.port;
    steps.open(f, res);
    if (opts.buf) f.buf = res.memfd(opts.buf * PAGE);
    if (opts.other) f.other = res.memfd(opts.other * PAGE);
    if (opts.scratch) f.scratch = res.scratch(opts.scratch * PAGE);
    steps.ready?.(f, res);
  });
  after(function () {
    const res = f.res;
    if (!res) return;
    try {
      steps.close?.(f, res);
    } finally {
      res.release();
    }
  });
  return f as T;
}

/** What {@link iommufdFixture} opens besides its memory. */
export interface IommufdFixtureOptions extends FixtureOptions {
  /** Open the VFIO cdev of {@link eduPair}'s iommufd edu (`edu`, `dev`), right after /dev/iommu. */
  cdev?: boolean;
  /** Open the cdev as `cdev` does, and bind it to the iommufd after the memory (`devId`). */
  bind?: boolean;
}

/**
 * The fixture of a suite on /dev/iommu. Released newest first: the device fd closes
 * before /dev/iommu (unbind, then the iommufd and its objects).
 */
export interface IommufdFixture extends Fixture {
  /** The /dev/iommu fd. */
  readonly fd: number;
  readonly iommufd: Iommufd;
  readonly edu: EduDevice;
  /** The edu's cdev fd. */
  readonly dev: number;
  /** The iommufd device id of `dev` (VFIO_DEVICE_BIND_IOMMUFD's out_devid). */
  readonly devId: number;
}

/** What {@link type1Fixture} does besides opening the container, the group and the memory. */
export interface Type1FixtureOptions extends FixtureOptions {
  /**
   * Put the group in the container and set the type1v2 IOMMU, after the memory; take the
   * group out of the container again in `after`, before the release.
   */
  attach?: boolean;
}

/** The fixture of a suite on a legacy container and group. */
export interface Type1Fixture extends Fixture {
  /** {@link eduPair}'s legacy edu. */
  readonly edu: EduDevice;
  /** The /dev/vfio/vfio fd. */
  readonly container: number;
  /** The /dev/vfio/<group> fd of `edu`. */
  readonly group: number;
}

/**
 * Registers, in the calling `describe`, the hooks that open /dev/iommu (then, as `opts`
 * asks, the edu's cdev, the memory and the bind) and release it all; returns the fixture.
 */
export function iommufdFixture(opts: IommufdFixtureOptions = {}): IommufdFixture {
  return suiteFixture<IommufdFixture>(opts, {
    open(f, res) {
      const fd = (f.fd = res.open('/dev/iommu'));
      f.iommufd = new Iommufd(res.port, fd);
      if (opts.cdev || opts.bind) {
        f.edu = eduPair().iommufd;
        f.dev = res.open(`/dev/vfio/devices/${f.edu.cdev}`);
      }
    },
    ready(f, res) {
      if (!opts.bind) return;
      const b = vfio_device_bind_iommufd.view().reset();
      b.iommufd = f.fd!;
      res.port.ioctl(f.dev!, VFIO_DEVICE_BIND_IOMMUFD, b.bytes);
      f.devId = b.out_devid;
    },
  });
}

/**
 * Registers, in the calling `describe`, the hooks that open a /dev/vfio/vfio container and
 * the legacy edu's group (then, as `opts` asks, the memory and the attach) and release it
 * all; returns the fixture.
 */
export function type1Fixture(opts: Type1FixtureOptions = {}): Type1Fixture {
  return suiteFixture<Type1Fixture>(opts, {
    open(f, res) {
      f.edu = eduPair().legacy;
      f.container = res.open('/dev/vfio/vfio');
      f.group = res.open(`/dev/vfio/${f.edu.group}`);
    },
    ready(f, res) {
      if (!opts.attach) return;
      res.port.ioctl(f.group!, VFIO_GROUP_SET_CONTAINER, f.container!);
      res.port.ioctl(f.container!, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU);
    },
    close(f, res) {
      if (opts.attach) res.port.ioctl(f.group!, VFIO_GROUP_UNSET_CONTAINER);
    },
  });
}
