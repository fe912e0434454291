/**
 * The syscall port: everything the engine asks of the kernel, as one interface. Two
 * implementations stand behind it: LinuxPort (the real kernel, through koffi; the only
 * module that touches native code) and the simulated kernel. Every method is synchronous
 * (worker threads give the parallelism) and throws SyscallError on failure.
 */
import type { Ioctl } from '../uapi/layout.js';

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
