/**
 * SimKernel: the simulated kernel. It owns a table of open files keyed by real fd
 * numbers (each simulated file holds a real memfd, so its number is unique in the process
 * and can be handed to worker threads like a real one), routes open() to the driver that
 * owns the path, dispatches ioctls to the file, and keeps the process's memory map.
 * Calls on fds it does not own go to the real kernel, so /dev/null still answers ENOTTY.
 *
 * Each call runs to completion before the next (callers in other threads queue on the
 * channel), which gives the per-ioctl atomicity of the real kernel.
 */
import type { Rlimit, SyscallPort } from '../port/port.js';
import { MFD, RLIMIT } from '../uapi/libc.js';
import { SyscallError } from '../port/errors.js';
import { KernelErrno, kfail } from './errno.js';
import { ProcessMemory } from './memory.js';
import type { Topology } from './topology.js';
import { SimVfs, isSimulatedPath } from './vfs.js';
import fs from 'node:fs';
import type { IoctlIn, SimFile } from './types.js';

/** A driver: opens the paths it owns and may do background work (device DMA engines). */
export interface Driver {
  /** Opens `path`, or returns null when the path is not this driver's. */
  open(path: string, flags: number): SimFile | null;
  /** Background work (a device's DMA engine); returns true when it did something. */
  poll?(): boolean;
  /** Whether poll() has work pending (the kernel loop then wakes periodically). */
  busy?(): boolean;
}

/** A system call as the sim port sends it. */
export type SysCall =
  | { op: 'open'; path: string; flags: number }
  | { op: 'close'; fd: number }
  | { op: 'ioctl'; fd: number; request: number; bytes: Uint8Array | null; value: number }
  | { op: 'mmap'; length: bigint; prot: number; flags: number; fd: number; offset: bigint }
  | { op: 'munmap'; addr: bigint; length: bigint }
  | { op: 'memfd_create'; name: string; flags: number }
  | { op: 'ftruncate'; fd: number; length: bigint }
  | { op: 'pread'; fd: number; buf: Uint8Array; offset: bigint }
  | { op: 'pwrite'; fd: number; buf: Uint8Array; offset: bigint }
  | { op: 'getrlimit'; resource: number }
  | { op: 'setrlimit'; resource: number; cur: bigint; max: bigint }
  | { op: 'vfs'; call: VfsCall; path: string };

/** Filesystem lookups (device discovery). */
export type VfsCall = 'readdir' | 'readlink' | 'readFile' | 'exists';

/** The answer: a non-negative result, or errno (> 0) with rc -1; getrlimit also returns the limit. */
export interface SysResult {
  rc: bigint;
  errno: number;
  rlimit?: Rlimit;
  /** Text answers of vfs calls (readdir: names joined by newlines; exists: '1' or '0'). */
  text?: string;
}

/** A factory that installs a driver into a kernel. */
export type DriverFactory = (k: SimKernel) => Driver;

/** The simulated kernel. */
export class SimKernel {
  readonly mem: ProcessMemory;
  /** The simulated /sys and /dev; drivers add what they simulate. */
  readonly vfs = new SimVfs();
  private readonly files = new Map<number, SimFile>();
  /** Files closed while still mmapped: released with their last mapping (see close). */
  private readonly closing = new Set<SimFile>();
  private readonly drivers: Driver[] = [];

  constructor(
    readonly topology: Topology,
    /** The real kernel, for memory and for fds the simulation does not own. */
    readonly host: SyscallPort,
    drivers: readonly DriverFactory[] = [],
  ) {
    this.mem = new ProcessMemory(host, { cur: topology.memlock, max: topology.memlock });
    for (const d of drivers) this.drivers.push(d(this));
  }

  /** The simulated file behind `fd`, if the simulation owns it. */
  file(fd: number): SimFile | undefined {
    return this.files.get(fd);
  }

  /**
   * Installs a file made by a call other than open() (VFIO_GROUP_GET_DEVICE_FD) under a new
   * fd, as open() does; returns the fd.
   */
  installFile(file: SimFile, label: string): number {
    const fd = this.host.memfdCreate(`vfio-engine-sim:${label}`, MFD.CLOEXEC);
    this.files.set(fd, file);
    return fd;
  }

  /** Runs pending background work (device DMA); returns true if any was done. */
  poll(): boolean {
    let did = false;
    for (const d of this.drivers) if (d.poll?.()) did = true;
    return did;
  }

  /** Whether any driver has background work pending. */
  busy(): boolean {
    return this.drivers.some((d) => d.busy?.());
  }

  /** Executes one system call. */
  syscall(c: SysCall): SysResult {
    try {
      if (c.op === 'getrlimit') {
        const rlimit =
          c.resource === RLIMIT.MEMLOCK ? { ...this.mem.memlock } : this.host.getrlimit(c.resource);
        return { rc: 0n, errno: 0, rlimit };
      }
      if (c.op === 'vfs') return { rc: 0n, errno: 0, text: this.lookup(c.call, c.path) };
      return { rc: this.run(c), errno: 0 };
    } catch (e) {
      if (e instanceof KernelErrno) return { rc: -1n, errno: e.errno };
      if (e instanceof SyscallError) return { rc: -1n, errno: e.errno };
      throw e;
    }
  }

  /** Releases closed files whose last mapping is gone. */
  private releaseUnmapped(): void {
    for (const f of this.closing) {
      if (this.mem.maps(f)) continue;
      this.closing.delete(f);
      f.release();
    }
  }

  private run(c: SysCall): bigint {
    switch (c.op) {
      case 'open': {
        for (const d of this.drivers) {
          const f = d.open(c.path, c.flags);
          if (!f) continue;
          // A real memfd stands behind every simulated fd: a unique number, and mmap backing.
          const fd = this.host.memfdCreate(`vfio-engine-sim:${c.path}`, MFD.CLOEXEC);
          this.files.set(fd, f);
          return BigInt(fd);
        }
        return BigInt(this.host.open(c.path, c.flags));
      }
      case 'close': {
        const f = this.files.get(c.fd);
        if (f) {
          this.files.delete(c.fd);
          // As fput(): an mmap of the file holds a reference, so release waits for munmap.
          if (this.mem.maps(f)) this.closing.add(f);
          else f.release();
        }
        this.host.close(c.fd);
        return 0n;
      }
      case 'ioctl': {
        const f = this.files.get(c.fd);
        if (!f) return BigInt(this.passthroughIoctl(c.fd, c.request, c.bytes, c.value));
        const arg: IoctlIn = { bytes: c.bytes, value: c.value };
        return BigInt(f.ioctl(c.request, arg));
      }
      case 'mmap': {
        const f = c.fd >= 0 ? this.files.get(c.fd) : undefined;
        let fd = c.fd;
        let offset = c.offset;
        let pfnmap = false;
        if (f) {
          if (!f.mmapBacking) kfail('ENODEV', `${f.kind} fds cannot be mmapped`);
          const b = f.mmapBacking(c.length, c.offset, c.prot);
          ({ fd, offset, pfnmap } = b);
        }
        const addr = this.host.mmap(c.length, c.prot, c.flags, fd, offset);
        this.mem.addVma({ start: addr, end: addr + c.length, prot: c.prot, pfnmap, file: f });
        this.releaseUnmapped();
        return addr;
      }
      case 'munmap':
        this.host.munmap(c.addr, c.length);
        this.mem.removeRange(c.addr, c.addr + c.length);
        this.releaseUnmapped();
        return 0n;
      case 'memfd_create':
        return BigInt(this.host.memfdCreate(c.name, c.flags));
      case 'ftruncate':
        if (this.files.has(c.fd)) kfail('EINVAL');
        this.host.ftruncate(c.fd, c.length);
        return 0n;
      case 'pread': {
        const f = this.files.get(c.fd);
        if (!f) return BigInt(this.host.pread(c.fd, c.buf, c.offset));
        if (!f.pread) kfail('EINVAL');
        return BigInt(f.pread(c.buf, c.offset));
      }
      case 'pwrite': {
        const f = this.files.get(c.fd);
        if (!f) return BigInt(this.host.pwrite(c.fd, c.buf, c.offset));
        if (!f.pwrite) kfail('EINVAL');
        return BigInt(f.pwrite(c.buf, c.offset));
      }
      case 'getrlimit':
      case 'vfs':
        throw new Error('unreachable: handled in syscall()');
      case 'setrlimit':
        if (c.cur > c.max) kfail('EINVAL');
        if (c.resource !== RLIMIT.MEMLOCK) {
          this.host.setrlimit(c.resource, { cur: c.cur, max: c.max });
          return 0n;
        }
        if (c.max > this.mem.memlock.max) kfail('EPERM', 'raising the hard limit needs CAP_SYS_RESOURCE');
        this.mem.memlock = { cur: c.cur, max: c.max };
        return 0n;
    }
  }

  private lookup(call: VfsCall, path: string): string {
    if (isSimulatedPath(path)) {
      switch (call) {
        case 'readdir':
          return this.vfs.readdir(path).join('\n');
        case 'readlink':
          return this.vfs.readlink(path);
        case 'readFile':
          return this.vfs.readFile(path);
        case 'exists':
          return this.vfs.exists(path) ? '1' : '0';
      }
    }
    try {
      switch (call) {
        case 'readdir':
          return fs.readdirSync(path).join('\n');
        case 'readlink':
          return fs.readlinkSync(path);
        case 'readFile':
          return fs.readFileSync(path, 'utf8');
        case 'exists':
          return fs.existsSync(path) ? '1' : '0';
      }
    } catch (e) {
      const errno = (e as NodeJS.ErrnoException).errno;
      if (typeof errno === 'number') throw new KernelErrno(-errno, String(e));
      throw e;
    }
  }

  // ioctls on fds the simulation does not own go to the real kernel, unchanged.
  private passthroughIoctl(fd: number, request: number, bytes: Uint8Array | null, value: number): number {
    const base = {
      name: `ioctl 0x${request.toString(16)}`,
      request,
      fd: 'device' as const,
      keyFields: [],
      header: 'uapi' as const,
    };
    if (!bytes) return this.host.ioctl(fd, { ...base, arg: { kind: 'value' } }, value);
    const raw = {
      name: 'raw',
      size: 0,
      align: 1,
      fields: [],
      cType: 'raw',
      header: 'uapi' as const,
      decode: () => ({}),
    };
    return this.host.ioctl(fd, { ...base, arg: { kind: 'struct', struct: raw } }, bytes);
  }
}
