/**
 * Helpers the two backends share: the unwind stack of QEMU's attach error ladders, the
 * watch on container fds closed behind the engine's back, scratch process memory for ioctls
 * whose arguments point at user buffers, and the PCI hot-reset query.
 */
import { type SyscallPort } from '../port/port.js';
import { MAP, PROT } from '../uapi/libc.js';
import { SyscallError } from '../port/errors.js';
import {
  ERRNO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  vfio_pci_dependent_device,
  vfio_pci_hot_reset_info,
} from '../uapi/index.js';
import { VfioError } from './errors.js';

/** The host page size the engine assumes (x86-64, aarch64 4K kernels). */
export const HOST_PAGE = 4096n;

/**
 * Undo steps of an acquisition, run newest first when a later step fails (QEMU's
 * `err_*:` labels). A failing undo step does not stop the others.
 */
export class Unwind {
  private readonly steps: Array<() => void> = [];

  /** Registers how to undo the step just taken. */
  push(undo: () => void): void {
    this.steps.push(undo);
  }

  /** Runs every undo step, newest first; returns the errors they threw. */
  run(): unknown[] {
    const errors: unknown[] = [];
    while (this.steps.length) {
      try {
        this.steps.pop()!();
      } catch (e) {
        errors.push(e);
      }
    }
    return errors;
  }

  /** Forgets the undo steps: the acquisition succeeded. */
  commit(): void {
    this.steps.length = 0;
  }
}

/**
 * A container fd (/dev/vfio/vfio, /dev/iommu) the engine opened, watched for being closed
 * behind its back (reliability table, row 23). Its ioctls then fail EBADF, and once another
 * open takes the number they reach another file, so the fd's /proc/self/fd link is read when
 * it is opened and compared again before each batch and before the engine's own last ioctls
 * and close. A missing or different link, or an ioctl answering EBADF, makes the fd lost: from
 * then on nothing goes to that number, close() included.
 *
 * The engine never closes a number while a batch can still use it (the container machine runs
 * batches and teardown one at a time), so no generation counter is kept. Limits: a number taken
 * by another open of the same node (a second /dev/iommu) reads the same link and goes unseen
 * (the kernel's own object ids then usually answer ENOENT); on a port that cannot read
 * /proc/self/fd only the EBADF answers reveal a lost fd.
 */
export class OwnedFd {
  /** Why the fd is lost (errno EBADF), or null while it is still the file opened. */
  lost: VfioError | null = null;
  private readonly link: string | null;

  constructor(
    private readonly port: SyscallPort,
    /** The fd number. */
    readonly fd: number,
    /** Where errors say it was ("legacy container fd 7"). */
    private readonly what: string,
  ) {
    this.link = fdLink(port, fd);
  }

  /** The fd, for an ioctl; throws the lost error once lost. */
  get value(): number {
    if (this.lost) throw this.lost;
    return this.fd;
  }

  /** Whether the fd still refers to the file opened; marks it lost when it does not. */
  fdUsable(): boolean {
    if (this.lost) return false;
    if (this.link === null) return true;
    const now = fdLink(this.port, this.fd);
    if (now === this.link) return true;
    this.markLost(undefined, now === null ? undefined : `fd ${this.fd} now refers to ${now}`);
    return false;
  }

  /** Marks the fd lost (an ioctl on it answered EBADF); returns why. */
  markLost(cause?: unknown, detail = `fd ${this.fd} was closed behind the engine`): VfioError {
    this.lost ??= new VfioError({ op: 'container_fd', target: this.what, errno: ERRNO.EBADF, detail, cause });
    return this.lost;
  }

  /** close(2), unless the number is no longer this file's (then it is someone else's to close). */
  close(): void {
    if (this.fdUsable()) this.port.close(this.fd);
  }
}

// The target of /proc/self/fd/<fd>, or null when it cannot be read (closed, or no /proc).
function fdLink(port: SyscallPort, fd: number): string | null {
  try {
    return port.readlink(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
}

/**
 * Runs `fn` with `bytes` of zeroed anonymous process memory (where the kernel writes an
 * array or a bitmap), unmapped afterwards.
 */
export function withScratch<T>(port: SyscallPort, bytes: number, fn: (va: bigint, mem: Uint8Array) => T): T {
  const length = (BigInt(Math.max(bytes, 1)) + HOST_PAGE - 1n) & ~(HOST_PAGE - 1n);
  const va = port.mmap(length, PROT.READ | PROT.WRITE, MAP.PRIVATE | MAP.ANONYMOUS, -1);
  try {
    return fn(va, port.memory(va, Number(length)));
  } finally {
    port.munmap(va, length);
  }
}

/** One device a hot reset also resets (struct vfio_pci_dependent_device). */
export interface HotResetDependent {
  /** Group id (legacy) or devid (cdev; VFIO_PCI_DEVID_OWNED 0 / NOT_OWNED 0xffffffff). */
  id: number;
  /** PCI address of the dependent device. */
  bdf: string;
}

/** The answer of VFIO_DEVICE_GET_PCI_HOT_RESET_INFO. */
export interface HotResetInfo {
  /** VFIO_PCI_HOT_RESET_FLAG_*. */
  flags: number;
  devices: HotResetDependent[];
}

/**
 * VFIO_DEVICE_GET_PCI_HOT_RESET_INFO the documented way: ask with no room (ENOSPC with
 * the count), then again with room for every dependent device.
 */
export function vfioGetPciHotResetInfo(port: SyscallPort, deviceFd: number): HotResetInfo {
  let count = 0;
  for (let attempt = 0; ; attempt++) {
    const buf = new Uint8Array(vfio_pci_hot_reset_info.size + count * vfio_pci_dependent_device.size);
    const hdr = vfio_pci_hot_reset_info.view(buf).reset();
    hdr.argsz = buf.byteLength;
    try {
      port.ioctl(deviceFd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf);
    } catch (e) {
      if (e instanceof SyscallError && e.errno === ERRNO.ENOSPC && attempt < 2 && hdr.count > count) {
        count = hdr.count;
        continue;
      }
      throw e;
    }
    const devices = Array.from({ length: hdr.count }, (_, i) => {
      const d = vfio_pci_dependent_device.view(
        buf,
        vfio_pci_hot_reset_info.size + i * vfio_pci_dependent_device.size,
      );
      const bdf =
        `${hex(d.segment, 4)}:${hex(d.bus, 2)}:${hex(d.devfn >> 3, 2)}.` + `${(d.devfn & 7).toString()}`;
      return { id: d.group_id, bdf };
    });
    return { flags: hdr.flags, devices };
  }
}

function hex(v: number, width: number): string {
  return v.toString(16).padStart(width, '0');
}

/** Bytes of a dirty bitmap for `size` at `pageSize`, rounded up to whole u64 words. */
export function bitmapBytes(size: bigint, pageSize: bigint): number {
  const pages = (size + pageSize - 1n) / pageSize;
  return Number(((pages + 63n) / 64n) * 8n);
}
