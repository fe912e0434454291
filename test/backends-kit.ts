/**
 * Helpers of the backend suites: the simulated kernel's fds this process holds (every
 * simulated fd is a real memfd named vfio-engine-sim:<path or label>), guest RAM from a
 * memfd, and a port wrapper that answers some sysfs/dev lookups differently.
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { MAP, MFD, PROT, type SyscallPort } from '../src/port/port.js';

/** Open simulated /dev nodes and VFIO device fds (not the BAR memfds the device models keep). */
export function simFds(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    if (/vfio-engine-sim:(\/dev\/|\[vfio-device\])/.test(target)) out.push(`${fd} ${target}`);
  }
  return out.sort();
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

/** `port` with some lookups overridden (a host without /dev/iommu, a device on another driver). */
export function overridePort(
  port: SyscallPort,
  over: { exists?: (path: string) => boolean | undefined; readlink?: (path: string) => string | undefined },
): SyscallPort {
  return new Proxy(port, {
    get(target, key) {
      if (key === 'exists' && over.exists) {
        return (p: string) => over.exists!(p) ?? target.exists(p);
      }
      if (key === 'readlink' && over.readlink) {
        return (p: string) => over.readlink!(p) ?? target.readlink(p);
      }
      const v = Reflect.get(target, key, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
