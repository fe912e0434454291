/**
 * LinuxPort: the syscall port on the real kernel. The only module that imports koffi.
 *
 * Calls are synchronous and typed (ioctl is declared twice with fixed prototypes, one
 * taking a pointer and one an integer, rather than through the variadic form: faster,
 * and correct on the x86-64 and aarch64 SysV ABIs). errno is read immediately after a
 * call that returned -1, never otherwise (koffi keeps a stale value after success).
 * Each thread that imports this module loads its own koffi instance, so the port works
 * inside worker threads on fds the main thread opened.
 */
import fs from 'node:fs';
import koffi from 'koffi';
import type { Ioctl } from '../uapi/layout.js';
import { SyscallError, requestFields, type ErrorFields } from './errors.js';
import type { IoctlArg, Rlimit, SyscallPort } from './port.js';

const libc = koffi.load('libc.so.6');
const c = {
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

const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

function fail(op: string, fields: ErrorFields = {}): never {
  throw new SyscallError(op, koffi.errno(), fields);
}

/** The syscall port on the real Linux kernel. */
export class LinuxPort implements SyscallPort {
  readonly kind = 'linux' as const;
  // Reused for the int-pointer form (VFIO_GROUP_SET_CONTAINER): no allocation per call.
  private readonly intArg = new Int32Array(1);

  open(path: string, flags: number): number {
    const fd = c.open(path, flags, 0) as number;
    if (fd < 0) fail('open', { path, flags });
    return fd;
  }

  close(fd: number): void {
    if ((c.close(fd) as number) < 0) fail('close', { fd });
  }

  ioctl(fd: number, req: Ioctl, arg?: IoctlArg): number {
    let rc: number;
    switch (req.arg.kind) {
      case 'struct':
        rc = c.ioctlPtr(fd, req.request, arg as Uint8Array) as number;
        break;
      case 'value':
        rc = c.ioctlVal(fd, req.request, (arg as number) ?? 0) as number;
        break;
      case 'int-ptr':
        this.intArg[0] = arg as number;
        rc = c.ioctlPtr(fd, req.request, this.intArg) as number;
        break;
      case 'string':
        rc = c.ioctlPtr(fd, req.request, Buffer.from(`${arg as string}\0`)) as number;
        break;
      case 'none':
        rc = c.ioctlVal(fd, req.request, 0) as number;
        break;
    }
    if (rc < 0) {
      const errno = koffi.errno();
      throw new SyscallError(req.name, errno, requestFields(fd, req, arg));
    }
    return rc;
  }

  mmap(length: bigint, prot: number, flags: number, fd: number, offset = 0n): bigint {
    const p = c.mmap(null, length, prot, flags, fd, offset) as bigint | null;
    if (p === null || BigInt(p) === MAP_FAILED) fail('mmap', { length, prot, flags, fd, offset });
    return BigInt(p);
  }

  munmap(addr: bigint, length: bigint): void {
    if ((c.munmap(addr, length) as number) < 0) fail('munmap', { addr, length });
  }

  memfdCreate(name: string, flags = 0): number {
    const fd = c.memfd_create(name, flags) as number;
    if (fd < 0) fail('memfd_create', { name, flags });
    return fd;
  }

  ftruncate(fd: number, length: bigint): void {
    if ((c.ftruncate(fd, length) as number) < 0) fail('ftruncate', { fd, length });
  }

  pread(fd: number, buf: Uint8Array, offset: bigint): number {
    const n = Number(c.pread(fd, buf, buf.byteLength, offset));
    if (n < 0) fail('pread', { fd, count: buf.byteLength, offset });
    return n;
  }

  pwrite(fd: number, buf: Uint8Array, offset: bigint): number {
    const n = Number(c.pwrite(fd, buf, buf.byteLength, offset));
    if (n < 0) fail('pwrite', { fd, count: buf.byteLength, offset });
    return n;
  }

  getrlimit(resource: number): Rlimit {
    const r = new BigUint64Array(2);
    if ((c.getrlimit(resource, r) as number) < 0) fail('getrlimit', { resource });
    return { cur: r[0]!, max: r[1]! };
  }

  setrlimit(resource: number, limit: Rlimit): void {
    const r = new BigUint64Array([limit.cur, limit.max]);
    if ((c.setrlimit(resource, r) as number) < 0)
      fail('setrlimit', { resource, cur: limit.cur, max: limit.max });
  }

  memory(addr: bigint, length: number): Uint8Array {
    return new Uint8Array(koffi.view(addr, length));
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
