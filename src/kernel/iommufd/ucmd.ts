/**
 * struct iommufd_ucmd and the user-memory helpers of the iommufd model: the kernel copy
 * of an ioctl's struct (copy_struct_from_user), the copy back (iommufd_ucmd_respond),
 * and reads and writes of user memory through ProcessMemory (EFAULT when unmapped).
 */
import { KernelErrno, kfail } from '../errno.js';
import type { ProcessMemory } from '../memory.js';
import type { StructInfo } from '../../uapi/layout.js';

const SCALAR_SIZE = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8 } as const;

/** offsetofend(struct, field) */
export function offsetofend(s: StructInfo, field: string): number {
  const f = s.fields.find((x) => x.name === field);
  if (!f) throw new Error(`${s.name} has no field ${field}`);
  return f.offset + SCALAR_SIZE[f.type] * f.count;
}

/** One ioctl call: the caller's buffer, the size it declared, and the kernel's copy. */
export class Ucmd {
  /** The kernel copy, `size` bytes of the op's struct (the union ucmd_buffer member). */
  readonly cmd: Uint8Array;

  constructor(
    /** The caller's buffer (ucmd->ubuffer). */
    readonly user: Uint8Array,
    /** The size the caller declared in the struct's first u32 (ucmd->user_size). */
    readonly userSize: number,
    size: number,
  ) {
    this.cmd = new Uint8Array(size);
  }

  /**
   * copy_struct_from_user(): the caller's bytes up to min(user size, struct size), zeros
   * after; a larger caller struct must be zero beyond the kernel's (E2BIG).
   */
  static copyIn(user: Uint8Array, userSize: number, size: number): Ucmd {
    // The caller's buffer is all the simulation can read: a size beyond it is a fault.
    if (userSize > user.byteLength) kfail('EFAULT', 'size beyond the caller buffer');
    if (userSize > size) {
      for (let i = size; i < userSize; i++)
        if (user[i]) kfail('E2BIG', 'non-zero bytes beyond the known struct');
    }
    const u = new Ucmd(user, userSize, size);
    u.cmd.set(user.subarray(0, Math.min(userSize, size)));
    return u;
  }

  /** iommufd_ucmd_respond(): copies the kernel struct back, up to the caller's size. */
  respond(): void {
    this.user.set(this.cmd.subarray(0, Math.min(this.userSize, this.cmd.byteLength)));
  }
}

const PROT_READ = 1;
const PROT_WRITE = 2;

/**
 * Whether user memory [addr, addr + length) is mapped with `prot`. Checked before every
 * access: touching a PROT_NONE or read-only mapping would fault the simulating process itself.
 */
export function userAccessible(mem: ProcessMemory, addr: bigint, length: bigint, prot: number): boolean {
  const vmas = mem.covering(addr, length);
  return !!vmas && vmas.every((v) => (v.prot & prot) === prot);
}

/** copy_from_user(): `length` bytes of user memory (EFAULT when any byte is unmapped or unreadable). */
export function copyFromUser(mem: ProcessMemory, addr: bigint, length: number): Uint8Array {
  if (length === 0) return new Uint8Array(0);
  if (!userAccessible(mem, addr, BigInt(length), PROT_READ)) kfail('EFAULT', 'copy_from_user');
  return mem.bytes(addr, length).slice();
}

/** copy_to_user(): writes `data` at `addr` (EFAULT when any byte is unmapped or read-only). */
export function copyToUser(mem: ProcessMemory, addr: bigint, data: Uint8Array): void {
  if (!data.byteLength) return;
  if (!userAccessible(mem, addr, BigInt(data.byteLength), PROT_WRITE)) kfail('EFAULT', 'copy_to_user');
  mem.bytes(addr, data.byteLength).set(data);
}

/** clear_user(): zeroes [addr, addr + length) (EFAULT when any byte is unmapped or read-only). */
export function clearUser(mem: ProcessMemory, addr: bigint, length: bigint): void {
  if (!length) return;
  if (!userAccessible(mem, addr, length, PROT_WRITE)) kfail('EFAULT', 'clear_user');
  mem.bytes(addr, Number(length)).fill(0);
}

/** Whether a thrown value is a simulated-kernel errno of this number. */
export function isErrno(e: unknown, errno: number): boolean {
  return e instanceof KernelErrno && e.errno === errno;
}
