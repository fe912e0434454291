/**
 * The simulated process's memory as the kernel sees it: the VMAs created through the sim
 * port (backed by real memfd or anonymous mappings, so DMA moves real bytes), pins on
 * user pages, and locked-memory accounting against RLIMIT_MEMLOCK.
 */
import type { SyscallPort } from '../port/port.js';
import { kfail } from './errno.js';

/** A mapping of the simulated process. */
export interface Vma {
  start: bigint;
  end: bigint; // exclusive
  prot: number;
  /** Device memory (a BAR): VM_PFNMAP, which iommufd cannot pin (EFAULT) and type1 can map. */
  pfnmap: boolean;
  /** The simulated file mapped (vm_file): it stays open until its last mapping goes. */
  file?: object;
}

const PROT_WRITE = 2;

/** Pins are counted per range, not per page: a 1 TiB guest costs one record per mapping. */
interface Pin {
  start: bigint;
  end: bigint;
}

/** Process memory, pins and locked-memory accounting. */
export class ProcessMemory {
  private vmas: Vma[] = []; // sorted by start, non-overlapping
  private readonly pins = new Map<number, Pin>();
  private nextPin = 1;
  /** Bytes charged against RLIMIT_MEMLOCK (locked_vm). */
  locked = 0n;

  constructor(
    /** The real port that owns the actual mappings (process-wide, so any thread sees them). */
    readonly host: SyscallPort,
    /** RLIMIT_MEMLOCK of the simulated process. */
    public memlock: { cur: bigint; max: bigint },
  ) {}

  /** Records a mapping made by the sim port. */
  addVma(v: Vma): void {
    this.removeRange(v.start, v.end);
    const i = this.vmas.findIndex((x) => x.start > v.start);
    this.vmas.splice(i < 0 ? this.vmas.length : i, 0, v);
  }

  /** Forgets [start, end), splitting VMAs that straddle it. */
  removeRange(start: bigint, end: bigint): void {
    const out: Vma[] = [];
    for (const v of this.vmas) {
      if (v.end <= start || v.start >= end) out.push(v);
      else {
        if (v.start < start) out.push({ ...v, end: start });
        if (v.end > end) out.push({ ...v, start: end });
      }
    }
    this.vmas = out;
  }

  /** Whether any mapping still holds `file` (vm_file keeps a closed file alive). */
  maps(file: object): boolean {
    return this.vmas.some((v) => v.file === file);
  }

  /** The VMAs covering [addr, addr+length) in order, or null when any byte is unmapped. */
  covering(addr: bigint, length: bigint): Vma[] | null {
    const end = addr + length;
    const hit: Vma[] = [];
    let at = addr;
    for (const v of this.vmas) {
      if (v.end <= at) continue;
      if (v.start > at) return null;
      hit.push(v);
      at = v.end;
      if (at >= end) return hit;
    }
    return at >= end ? hit : null;
  }

  /**
   * Checks that user memory can be pinned for DMA (get_user_pages): mapped, writable when
   * `write`, and not device memory unless `allowPfnmap`. Fails with EFAULT like the kernel.
   */
  checkPinnable(addr: bigint, length: bigint, write: boolean, allowPfnmap: boolean): void {
    const vs = this.covering(addr, length);
    if (!vs) kfail('EFAULT', `user memory 0x${addr.toString(16)}+0x${length.toString(16)} is not mapped`);
    for (const v of vs) {
      if (v.pfnmap && !allowPfnmap) kfail('EFAULT', 'VM_PFNMAP memory cannot be pinned');
      if (write && !(v.prot & PROT_WRITE)) kfail('EFAULT', 'read-only memory pinned for write');
    }
  }

  /** Whether [addr, addr+length) is device memory (a mapped BAR). */
  isPfnmap(addr: bigint, length: bigint): boolean {
    return this.covering(addr, length)?.some((v) => v.pfnmap) ?? false;
  }

  /** The bytes at a user address, without copying (the address must be mapped). */
  bytes(addr: bigint, length: number): Uint8Array {
    if (!this.covering(addr, BigInt(length))) kfail('EFAULT', `0x${addr.toString(16)} is not mapped`);
    return this.host.memory(addr, length);
  }

  /** Charges `bytes` to locked_vm, failing with ENOMEM beyond RLIMIT_MEMLOCK. */
  lock(bytes: bigint): void {
    if (this.locked + bytes > this.memlock.cur) kfail('ENOMEM', 'RLIMIT_MEMLOCK exceeded');
    this.locked += bytes;
  }

  /** Returns `bytes` of locked_vm. */
  unlock(bytes: bigint): void {
    this.locked -= bytes;
    if (this.locked < 0n) throw new Error('sim kernel: locked_vm went negative');
  }

  /** Pins user pages [addr, addr+length); returns a handle for unpin. */
  pin(addr: bigint, length: bigint): number {
    const id = this.nextPin++;
    this.pins.set(id, { start: addr, end: addr + length });
    return id;
  }

  /** Drops a pin. */
  unpin(id: number): void {
    if (!this.pins.delete(id)) throw new Error(`sim kernel: unpin of unknown pin ${id}`);
  }

  /**
   * The pin count of every page in [addr, addr+length) if it is the same for all, else null
   * (IOMMU_TEST_OP_MD_CHECK_REFS compares each page's count with the expected one).
   */
  uniformPinCount(addr: bigint, length: bigint): number | null {
    const end = addr + length;
    const cuts = new Set<bigint>([addr, end]);
    const hits: Pin[] = [];
    for (const p of this.pins.values()) {
      if (p.end <= addr || p.start >= end) continue;
      hits.push(p);
      if (p.start > addr) cuts.add(p.start);
      if (p.end < end) cuts.add(p.end);
    }
    const points = [...cuts].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    let count: number | null = null;
    for (let i = 0; i + 1 < points.length; i++) {
      const at = points[i]!;
      const n = hits.filter((p) => p.start <= at && p.end > at).length;
      if (count === null) count = n;
      else if (count !== n) return null;
    }
    return count ?? 0;
  }

  /** Number of live pins (leak checks). */
  get pinCount(): number {
    return this.pins.size;
  }
}
