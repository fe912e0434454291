/**
 * LinuxPort: the syscall port on the real kernel. The only module that loads koffi.
 *
 * Calls are synchronous and typed (ioctl is declared twice with fixed prototypes, one
 * taking a pointer and one an integer, rather than through the variadic form: faster,
 * and correct on the x86-64 and aarch64 SysV ABIs). errno is read immediately after a
 * call that returned -1, never otherwise (koffi keeps a stale value after success).
 * Each thread that constructs a LinuxPort loads its own koffi instance, so the port works
 * inside worker threads on fds the main thread opened.
 *
 * koffi is loaded lazily, once per thread, by the first LinuxPort constructed there (not by
 * importing this module), and inside guardNativeLoad(): terminating a thread while it loads
 * koffi aborts the whole process (see native-guard.ts), so threads that never touch the real
 * kernel (sim-mode DMA workers) must not load it at all, and those that do must be seen.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type { LibraryHandle } from 'koffi';
import type { Ioctl } from '../uapi/layout.js';
import { SyscallError, requestFields, type ErrorFields } from './errors.js';
import { guardNativeLoad } from './native-guard.js';
import type { IoctlArg, Rlimit, SyscallPort } from './port.js';

type Koffi = typeof import('koffi');
type Fn = ReturnType<LibraryHandle['func']>;

// What a thread's koffi gives the port: the module (errno, view) and libc's functions.
interface Native {
  readonly koffi: Koffi;
  readonly open: Fn;
  readonly close: Fn;
  readonly ioctlPtr: Fn;
  readonly ioctlVal: Fn;
  readonly mmap: Fn;
  readonly munmap: Fn;
  readonly memfd_create: Fn;
  readonly ftruncate: Fn;
  readonly pread: Fn;
  readonly pwrite: Fn;
  readonly getrlimit: Fn;
  readonly setrlimit: Fn;
}

let native: Native | undefined; // this thread's, once loaded

// Loads koffi and resolves libc's functions, once per thread: the calls then go straight to them.
function loadNative(): Native {
  return (native ??= guardNativeLoad(() => {
    const koffi = createRequire(import.meta.url)('koffi') as Koffi;
    const libc = koffi.load('libc.so.6');
    return {
      koffi,
      open: libc.func('int open(const char *path, int flags, uint32_t mode)'),
      close: libc.func('int close(int fd)'),
      ioctlPtr: libc.func('ioctl', 'int', ['int', 'unsigned long', 'void *']),
      ioctlVal: libc.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']),
      mmap: libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
      munmap: libc.func('int munmap(void *addr, size_t length)'),
      memfd_create: libc.func('int memfd_create(const char *name, unsigned int flags)'),
      ftruncate: libc.func('int ftruncate(int fd, int64_t length)'),
      pread: libc.func('long pread(int fd, void *buf, size_t count, int64_t offset)'),
      pwrite: libc.func('long pwrite(int fd, const void *buf, size_t count, int64_t offset)'),
      getrlimit: libc.func('int getrlimit(int resource, void *rlim)'),
      setrlimit: libc.func('int setrlimit(int resource, const void *rlim)'),
    };
  }));
}

const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

/** The syscall port on the real Linux kernel. */
export class LinuxPort implements SyscallPort {
  readonly kind = 'linux' as const;
  // Reused for the int-pointer form (VFIO_GROUP_SET_CONTAINER): no allocation per call.
  private readonly intArg = new Int32Array(1);
  // This thread's koffi and libc functions (loaded by the first port made in the thread).
  private readonly c = loadNative();

  private fail(op: string, fields: ErrorFields = {}): never {
    throw new SyscallError(op, this.c.koffi.errno(), fields);
  }

  open(path: string, flags: number): number {
    const fd = this.c.open(path, flags, 0) as number;
    if (fd < 0) this.fail('open', { path, flags });
    return fd;
  }

  close(fd: number): void {
    if ((this.c.close(fd) as number) < 0) this.fail('close', { fd });
  }

  ioctl(fd: number, req: Ioctl, arg?: IoctlArg): number {
    let rc: number;
    switch (req.arg.kind) {
      case 'struct':
        rc = this.c.ioctlPtr(fd, req.request, arg as Uint8Array) as number;
        break;
      case 'value':
        rc = this.c.ioctlVal(fd, req.request, (arg as number) ?? 0) as number;
        break;
      case 'int-ptr':
        this.intArg[0] = arg as number;
        rc = this.c.ioctlPtr(fd, req.request, this.intArg) as number;
        break;
      case 'string':
        rc = this.c.ioctlPtr(fd, req.request, Buffer.from(`${arg as string}\0`)) as number;
        break;
      case 'none':
        rc = this.c.ioctlVal(fd, req.request, 0) as number;
        break;
    }
    if (rc < 0) {
      const errno = this.c.koffi.errno();
      throw new SyscallError(req.name, errno, requestFields(fd, req, arg));
    }
    return rc;
  }

  mmap(length: bigint, prot: number, flags: number, fd: number, offset = 0n): bigint {
    const p = this.c.mmap(null, length, prot, flags, fd, offset) as bigint | null;
    if (p === null || BigInt(p) === MAP_FAILED) this.fail('mmap', { length, prot, flags, fd, offset });
    return BigInt(p);
  }

  munmap(addr: bigint, length: bigint): void {
    if ((this.c.munmap(addr, length) as number) < 0) this.fail('munmap', { addr, length });
  }

  memfdCreate(name: string, flags = 0): number {
    const fd = this.c.memfd_create(name, flags) as number;
    if (fd < 0) this.fail('memfd_create', { name, flags });
    return fd;
  }

  ftruncate(fd: number, length: bigint): void {
    if ((this.c.ftruncate(fd, length) as number) < 0) this.fail('ftruncate', { fd, length });
  }

  pread(fd: number, buf: Uint8Array, offset: bigint): number {
    const n = Number(this.c.pread(fd, buf, buf.byteLength, offset));
    if (n < 0) this.fail('pread', { fd, count: buf.byteLength, offset });
    return n;
  }

  pwrite(fd: number, buf: Uint8Array, offset: bigint): number {
    const n = Number(this.c.pwrite(fd, buf, buf.byteLength, offset));
    if (n < 0) this.fail('pwrite', { fd, count: buf.byteLength, offset });
    return n;
  }

  getrlimit(resource: number): Rlimit {
    const r = new BigUint64Array(2);
    if ((this.c.getrlimit(resource, r) as number) < 0) this.fail('getrlimit', { resource });
    return { cur: r[0]!, max: r[1]! };
  }

  setrlimit(resource: number, limit: Rlimit): void {
    const r = new BigUint64Array([limit.cur, limit.max]);
    if ((this.c.setrlimit(resource, r) as number) < 0)
      this.fail('setrlimit', { resource, cur: limit.cur, max: limit.max });
  }

  memory(addr: bigint, length: number): Uint8Array {
    return new Uint8Array(this.c.koffi.view(addr, length));
  }

  readdir(path: string): string[] {
    return fsCall('readdir', path, () => fs.readdirSync(path));
  }

  readlink(path: string): string {
    return fsCall('readlink', path, () => fs.readlinkSync(path));
  }

  readFile(path: string): string {
    return fsCall('open', path, () => fs.readFileSync(path, 'utf8'));
  }

  exists(path: string): boolean {
    return fs.existsSync(path);
  }
}

// node:fs errors carry errno as a negative number; give them the port's error shape.
function fsCall<T>(op: string, path: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).errno;
    if (typeof errno === 'number') throw new SyscallError(op, -errno, { path });
    throw e;
  }
}
