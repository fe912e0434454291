/**
 * The syscall port: everything the engine asks of the kernel, as one interface. Two
 * implementations stand behind it: LinuxPort (the real kernel, through koffi; the only
 * module that touches native code) and the simulated kernel. Every method is synchronous
 * (worker threads give the parallelism) and throws SyscallError on failure.
 */
import type { Ioctl } from '../uapi/layout.js';

/** open(2) flags (x86-64 / aarch64 asm-generic values). */
export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  CREAT: 0o100,
  EXCL: 0o200,
  NONBLOCK: 0o4000,
  CLOEXEC: 0o2000000,
} as const;
/** mmap(2) protections. */
export const PROT = { NONE: 0, READ: 1, WRITE: 2, EXEC: 4 } as const;
/** mmap(2) flags. */
export const MAP = {
  SHARED: 0x01,
  PRIVATE: 0x02,
  FIXED: 0x10,
  ANONYMOUS: 0x20,
  NORESERVE: 0x4000,
  POPULATE: 0x8000,
} as const;
/** memfd_create(2) flags. */
export const MFD = { CLOEXEC: 1, ALLOW_SEALING: 2, HUGETLB: 4 } as const;
/** getrlimit(2) resources used by the engine. */
export const RLIMIT = { NOFILE: 7, MEMLOCK: 8 } as const;
/** RLIM_INFINITY */
export const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

/** The argument of an ioctl: the struct bytes, an integer (by value or through an int pointer), a string, or nothing. */
export type IoctlArg = Uint8Array | number | string | undefined;

/** A resource limit. */
export interface Rlimit {
  cur: bigint;
  max: bigint;
}

/** What the engine asks of the kernel. */
export interface SyscallPort {
  /** 'linux' for the real kernel, 'sim' for the simulated one. */
  readonly kind: 'linux' | 'sim';
  /** open(2); returns the fd. */
  open(path: string, flags: number): number;
  /** close(2). */
  close(fd: number): void;
  /**
   * ioctl(2) with the argument form `req` declares; returns the non-negative result
   * (an fd for VFIO_GROUP_GET_DEVICE_FD, a flag for VFIO_CHECK_EXTENSION, else 0).
   * On failure throws SyscallError naming `req` and its key fields.
   */
  ioctl(fd: number, req: Ioctl, arg?: IoctlArg): number;
  /** mmap(2); `fd` -1 with MAP.ANONYMOUS for anonymous memory. Returns the address. */
  mmap(length: bigint, prot: number, flags: number, fd: number, offset?: bigint): bigint;
  /** munmap(2). */
  munmap(addr: bigint, length: bigint): void;
  /** memfd_create(2); returns the fd. */
  memfdCreate(name: string, flags?: number): number;
  /** ftruncate(2). */
  ftruncate(fd: number, length: bigint): void;
  /** pread(2); returns the bytes read. */
  pread(fd: number, buf: Uint8Array, offset: bigint): number;
  /** pwrite(2); returns the bytes written. */
  pwrite(fd: number, buf: Uint8Array, offset: bigint): number;
  /** getrlimit(2). */
  getrlimit(resource: number): Rlimit;
  /** setrlimit(2). */
  setrlimit(resource: number, limit: Rlimit): void;
  /** The bytes of mapped process memory [addr, addr + length), without copying. */
  memory(addr: bigint, length: number): Uint8Array;
  /**
   * Filesystem lookups the engine needs for device discovery (/sys/bus/pci/devices/…,
   * /sys/kernel/iommu_groups/…, /dev/vfio/…, /dev/iommu). On the simulated kernel these
   * answer from the simulated host; elsewhere they are the real filesystem.
   */
  readdir(path: string): string[];
  /** readlink(2): the link's target. */
  readlink(path: string): string;
  /** A whole (small) file as text: sysfs attributes such as `vendor`. */
  readFile(path: string): string;
  /** Whether `path` exists. */
  exists(path: string): boolean;
}
