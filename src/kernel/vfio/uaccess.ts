/**
 * copy_from_user / copy_to_user for the VFIO model: the caller's ioctl argument is the byte
 * buffer the sim port passed, so an access beyond it is the EFAULT the kernel would give
 * for an unmapped tail. Also the capability-chain builder of vfio_info_cap_add().
 */
import fs from 'node:fs';
import { kfail } from '../errno.js';
import type { IoctlIn } from '../types.js';
import type { StructInfo } from '../../uapi/layout.js';

const SCALAR_SIZE = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8 } as const;

/** offsetofend(struct, field): the kernel's `minsz` for an argsz-versioned struct. */
export function offsetofend(s: StructInfo, field: string): number {
  const f = s.fields.find((x) => x.name === field);
  if (!f) throw new Error(`${s.name} has no field ${field}`);
  return f.offset + SCALAR_SIZE[f.type] * f.count;
}

/**
 * copy_from_user of `minsz` bytes at `at` into a zeroed kernel copy of at least `size`
 * bytes (the kernel's on-stack struct). EFAULT when the caller's buffer is shorter.
 */
export function copyFromUser(arg: IoctlIn, minsz: number, size = minsz, at = 0): Uint8Array {
  const b = arg.bytes;
  if (!b || at + minsz > b.byteLength) kfail('EFAULT', 'argument shorter than the kernel copies');
  const k = new Uint8Array(Math.max(size, minsz));
  k.set(b.subarray(at, at + minsz));
  return k;
}

/** copy_to_user of `src` at byte `at` of the argument; EFAULT when it does not fit. */
export function copyToUser(arg: IoctlIn, at: number, src: Uint8Array): void {
  const b = arg.bytes;
  if (!b || at + src.byteLength > b.byteLength) kfail('EFAULT', 'argument shorter than the kernel writes');
  b.set(src, at);
}

/** get_user() of an int argument (VFIO_GROUP_SET_CONTAINER). */
export function getUserInt(arg: IoctlIn): number {
  const k = copyFromUser(arg, 4);
  return new DataView(k.buffer).getInt32(0, true);
}

/**
 * strndup_user(arg, PAGE_SIZE): the NUL-terminated string argument. EINVAL when no NUL is
 * found within a page, EFAULT when the buffer ends first.
 */
export function strndupUser(arg: IoctlIn, max = 4096): string {
  const b = arg.bytes;
  if (!b) kfail('EFAULT');
  const n = Math.min(b.byteLength, max);
  const nul = b.subarray(0, n).indexOf(0);
  if (nul < 0) kfail(b.byteLength >= max ? 'EINVAL' : 'EFAULT', 'string not terminated');
  return new TextDecoder().decode(b.subarray(0, nul));
}

/** A little-endian accessor over a kernel copy. */
export function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** Whether `fd` is open in this process (fdget() succeeds), for EBADF versus EBADFD/EINVAL. */
export function fdIsOpen(fd: number): boolean {
  if (fd < 0) return false;
  try {
    fs.fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

/** struct vfio_info_cap: a capability chain built as vfio_info_cap_add() does. */
export class InfoCaps {
  private parts: Uint8Array[] = [];
  private offsets: number[] = [];
  /** Total bytes (each capability padded to 8). */
  size = 0;

  /** Appends a capability of `size` bytes (header included); returns its zeroed bytes to fill. */
  add(size: number, id: number, version: number): Uint8Array {
    const len = (size + 7) & ~7;
    const b = new Uint8Array(len);
    const d = dv(b);
    d.setUint16(0, id, true);
    d.setUint16(2, version, true);
    if (this.parts.length) dv(this.parts[this.parts.length - 1]!).setUint32(4, this.size, true);
    this.parts.push(b);
    this.offsets.push(this.size);
    this.size += len;
    return b;
  }

  /** The chain with every `next` shifted by `offset` (vfio_info_cap_shift), as one buffer. */
  shifted(offset: number): Uint8Array {
    const out = new Uint8Array(this.size);
    this.parts.forEach((p, i) => {
      const d = dv(p);
      const next = d.getUint32(4, true);
      const copy = p.slice();
      if (next) dv(copy).setUint32(4, next + offset, true);
      out.set(copy, this.offsets[i]!);
    });
    return out;
  }
}
