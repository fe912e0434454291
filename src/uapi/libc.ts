/**
 * The libc and kernel ABI numbers the engine passes to open(2), mmap(2), memfd_create(2)
 * and getrlimit(2) (x86-64 / aarch64 asm-generic values), beside the uapi structs: the real
 * port hands them to the kernel, and the simulated kernel reads them.
 */
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
