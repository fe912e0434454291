/**
 * Helpers of the backend suites: the simulated kernel's fds this process holds (every
 * simulated fd is a real memfd named vfio-engine-sim:<path or label>), guest RAM from a
 * memfd, a port wrapper that answers some sysfs/dev lookups differently, and one that
 * injects ioctl failures.
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { expect } from 'chai';
import { VfioError } from '../src/backends/errors.js';
import { SyscallError, requestFields, type ErrorFields } from '../src/port/errors.js';
import { type IoctlArg, type SyscallPort } from '../src/port/port.js';
import { MAP, MFD, PROT } from '../src/uapi/libc.js';
import { errnoName } from '../src/uapi/errno.js';
import type { Ioctl } from '../src/uapi/layout.js';

/** This process's open fds and what each refers to (the /proc/self/fd links), in directory order. */
export function openFds(): { fd: string; target: string }[] {
  const out: { fd: string; target: string }[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      out.push({ fd, target: readlinkSync(`/proc/self/fd/${fd}`) });
    } catch {
      // the directory's own fd, closed by now
    }
  }
  return out;
}

/** Open simulated /dev nodes and VFIO device fds (not the BAR memfds the device models keep). */
export function simFds(): string[] {
  return openFds()
    .filter(({ target }) => /vfio-engine-sim:(\/dev\/|\[vfio-device\])/.test(target))
    .map(({ fd, target }) => `${fd} ${target}`)
    .sort();
}

/** Runs `fn`, which must throw a VfioError; returns it. */
export function expectVfioError(fn: () => unknown): VfioError {
  try {
    fn();
  } catch (e) {
    if (e instanceof VfioError) return e;
    throw e;
  }
  return expect.fail('expected a VfioError');
}

/** Shared memfd memory, as a VMM maps guest RAM. */
export interface GuestRam {
  fd: number;
  va: bigint;
  size: bigint;
  bytes: Uint8Array;
  free(): void;
}

/** `size` bytes of shared memfd memory. */
export function guestRam(port: SyscallPort, size: number): GuestRam {
  const fd = port.memfdCreate('vfio-engine-backends-test', MFD.CLOEXEC);
  port.ftruncate(fd, BigInt(size));
  const va = port.mmap(BigInt(size), PROT.READ | PROT.WRITE, MAP.SHARED, fd);
  return {
    fd,
    va,
    size: BigInt(size),
    bytes: port.memory(va, size),
    free() {
      port.munmap(va, BigInt(size));
      port.close(fd);
    },
  };
}

/** `port` with the methods in `over` replaced (the others bound to `port`). */
function wrapPort(port: SyscallPort, over: Partial<SyscallPort>): SyscallPort {
  return new Proxy(port, {
    get(target, key) {
      if (Object.hasOwn(over, key)) return over[key as keyof SyscallPort];
      const v = Reflect.get(target, key, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** `port` with some lookups overridden (a host without /dev/iommu, a device on another driver). */
export function overridePort(
  port: SyscallPort,
  over: { exists?: (path: string) => boolean | undefined; readlink?: (path: string) => string | undefined },
): SyscallPort {
  const exists = over.exists;
  const readlink = over.readlink;
  return wrapPort(port, {
    ...(exists && { exists: (p: string) => exists(p) ?? port.exists(p) }),
    ...(readlink && { readlink: (p: string) => readlink(p) ?? port.readlink(p) }),
  });
}

/** One ioctl a {@link FaultPort} forwarded or failed. */
export interface PortCall {
  name: string;
  /** The request's key fields (ids, flags, ranges), as a failed call would name them. */
  fields: ErrorFields;
  /** The errno name it failed with, injected or from the kernel; undefined on success. */
  failed?: string;
}

/**
 * `inner` with faults on demand: {@link failNext} makes a later call of an ioctl fail with
 * an errno the kernel can give for it, before the kernel sees it (so the kernel's state is
 * what a real failure leaves: unchanged). Records every ioctl, for checking what a
 * rollback undid.
 */
export class FaultPort {
  readonly port: SyscallPort;
  readonly calls: PortCall[] = [];
  private readonly faults: { req: Ioctl; errno: number; skip: number }[] = [];

  constructor(inner: SyscallPort) {
    const ioctl = (fd: number, req: Ioctl, arg?: IoctlArg): number => {
      const call: PortCall = { name: req.name, fields: requestFields(fd, req, arg) };
      this.calls.push(call);
      const i = this.faults.findIndex((f) => f.req === req);
      if (i >= 0 && this.faults[i]!.skip-- === 0) {
        const f = this.faults.splice(i, 1)[0]!;
        call.failed = errnoName(f.errno);
        throw new SyscallError(req.name, f.errno, call.fields);
      }
      try {
        return inner.ioctl(fd, req, arg);
      } catch (e) {
        if (e instanceof SyscallError) call.failed = e.code;
        throw e;
      }
    };
    this.port = wrapPort(inner, { ioctl });
  }

  /** The call of `req` after the next `skip` ones fails with `errno` (one fault per call). */
  failNext(req: Ioctl, errno: number, skip = 0): void {
    this.faults.push({ req, errno, skip });
  }

  /** The recorded calls of `req`. */
  callsOf(req: Ioctl): PortCall[] {
    return this.calls.filter((c) => c.name === req.name);
  }
}
