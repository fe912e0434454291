/**
 * The data plane's wire format and executor: a batch of DMA ops as one BigUint64Array
 * (no object per op), a per-op journal in a SharedArrayBuffer, and executeBatch(), the
 * one loop that runs a batch through dma.ts, on the main thread (small batches) or in a
 * worker (src/workers/dma-worker.ts).
 *
 * Batch layout: STRIDE u64 per op: [op, iova, size, vaddr, flags]. flags bit 0 =
 * readonly, bit 1 = non-fatal (RAM device), bits 32..63 = lane within the batch. For
 * COPY, `vaddr` holds the source IOAS id (the destination is the target's IOAS).
 *
 * Journal layout (Int32 words, then u64 words at the next 8-byte boundary):
 *   [0] cursor: the op about to be issued, stored *before* its ioctl; [1] finished;
 *   [2] cancel (set by the main thread: stop before the next op);
 *   [4 + 2i] status of op i, [5 + 2i] its errno; u64 [i] bytes unmapped by op i.
 * Status and errno are stored *after* the ioctl returns, bytes before status, all with
 * Atomics, so a reader that sees a final status sees its bytes. After a crash, ops
 * before the cursor are final, the op at the cursor is in doubt (its ioctl may or may
 * not have run), and ops after it never started (the executor is sequential).
 */
import { dmaMap, dmaUnmap, dmaUnmapAll, ioasCopy, type DmaTarget } from '../backends/dma.js';
import { SyscallError } from '../port/errors.js';
import type { SyscallPort } from '../port/port.js';
import { ERRNO } from '../uapi/errno.js';

/** Op codes of the batch's first field. */
export const BATCH_OP = { MAP: 1, UNMAP: 2, COPY: 3, UNMAP_ALL: 4 } as const;
/** Flag bits of the batch's fifth field (lane in bits 32..63). */
export const BATCH_FLAG = { READONLY: 1n, NON_FATAL: 2n } as const;
/** u64 words per op. */
export const STRIDE = 5;

/** Journal status of one op. */
export const JOURNAL_STATUS = { PENDING: 0, DONE: 1, FAILED: 2, SKIPPED: 3 } as const;

const J_CURSOR = 0;
const J_FINISHED = 1;
const J_CANCEL = 2;
const J_HEADER = 4;

/** One op to encode. */
export interface BatchOp {
  readonly op: 'map' | 'unmap' | 'copy' | 'unmap_all';
  readonly iova: bigint;
  readonly size: bigint;
  readonly vaddr?: bigint;
  readonly readonly?: boolean;
  readonly nonFatal?: boolean;
  /** COPY: the source IOAS. */
  readonly srcIoas?: number;
}

/** An encoded batch: `ops` lives in a SharedArrayBuffer, so workers read it without a copy. */
export interface DmaBatch {
  readonly ops: BigUint64Array;
  readonly count: number;
}

const OP_CODE = {
  map: BATCH_OP.MAP,
  unmap: BATCH_OP.UNMAP,
  copy: BATCH_OP.COPY,
  unmap_all: BATCH_OP.UNMAP_ALL,
};

/**
 * Encodes lanes of ops into one batch; ops keep lane order, and a failed op makes the
 * rest of its lane SKIPPED (they may depend on it), while other lanes go on.
 */
export function encodeBatch(lanes: readonly (readonly BatchOp[])[]): DmaBatch {
  let count = 0;
  for (const l of lanes) count += l.length;
  const ops = new BigUint64Array(new SharedArrayBuffer(count * STRIDE * 8));
  let k = 0;
  lanes.forEach((lane, li) => {
    for (const o of lane) {
      ops[k] = BigInt(OP_CODE[o.op]);
      ops[k + 1] = o.iova;
      ops[k + 2] = o.size;
      ops[k + 3] = o.op === 'copy' ? BigInt(o.srcIoas ?? 0) : (o.vaddr ?? 0n);
      ops[k + 4] =
        (o.readonly ? BATCH_FLAG.READONLY : 0n) |
        (o.nonFatal ? BATCH_FLAG.NON_FATAL : 0n) |
        (BigInt(li) << 32n);
      k += STRIDE;
    }
  });
  return { ops, count };
}

/** A per-op journal in shared memory (see the module comment for the layout). */
export class Journal {
  readonly sab: SharedArrayBuffer;
  private readonly i32: Int32Array;
  private readonly u64: BigUint64Array;

  /** A new journal for `count` ops, or a view of an existing one (`sab` from another thread). */
  constructor(countOrSab: number | SharedArrayBuffer) {
    if (typeof countOrSab === 'number') {
      const words = J_HEADER + 2 * countOrSab;
      const u64At = Math.ceil((words * 4) / 8) * 8;
      this.sab = new SharedArrayBuffer(u64At + 8 * countOrSab + 8);
      new Int32Array(this.sab, 0, 1)[0] = -1; // cursor: nothing issued yet
    } else this.sab = countOrSab;
    const count = Math.floor((this.sab.byteLength - 8 - J_HEADER * 4) / 16);
    this.i32 = new Int32Array(this.sab, 0, J_HEADER + 2 * count);
    const u64At = Math.ceil((this.i32.length * 4) / 8) * 8;
    this.u64 = new BigUint64Array(this.sab, u64At, count);
  }

  /** The op about to be (or last) issued; -1 before the first. */
  get cursor(): number {
    return Atomics.load(this.i32, J_CURSOR);
  }
  /** Whether the executor returned normally. */
  get finished(): boolean {
    return Atomics.load(this.i32, J_FINISHED) === 1;
  }
  /** Whether cancel() was called. */
  get cancelled(): boolean {
    return Atomics.load(this.i32, J_CANCEL) === 1;
  }
  /** Asks the executor to stop before its next op (cooperative: no thread is killed mid-ioctl). */
  cancel(): void {
    Atomics.store(this.i32, J_CANCEL, 1);
  }
  /** Status of op i (JOURNAL_STATUS). */
  status(i: number): number {
    return Atomics.load(this.i32, J_HEADER + 2 * i);
  }
  /** errno of op i when FAILED. */
  errno(i: number): number {
    return Atomics.load(this.i32, J_HEADER + 2 * i + 1);
  }
  /** Bytes unmapped by op i (unmap ops). */
  bytes(i: number): bigint {
    return Atomics.load(this.u64, i);
  }

  /** @internal executor side */
  begin(i: number): void {
    Atomics.store(this.i32, J_CURSOR, i);
  }
  /** @internal executor side */
  record(i: number, status: number, errno = 0, bytes = 0n): void {
    Atomics.store(this.u64, i, bytes);
    Atomics.store(this.i32, J_HEADER + 2 * i + 1, errno);
    Atomics.store(this.i32, J_HEADER + 2 * i, status);
  }
  /** @internal executor side */
  finish(): void {
    Atomics.store(this.i32, J_FINISHED, 1);
  }
}

/** A test-only fault: after op `after` is issued, throw or exit the thread (before or after journaling it). */
export interface CrashHook {
  readonly after: number;
  readonly mode: 'throw' | 'exit';
  /** true: crash between the ioctl's return and the journal write (leaves the op in doubt). */
  readonly inFlight?: boolean;
}

/** Thrown by a CrashHook. */
export class InjectedCrash extends Error {
  constructor(at: number) {
    super(`injected crash at op ${at}`);
  }
}

function crash(hook: CrashHook, i: number): never {
  if (hook.mode === 'exit') process.exit(70);
  throw new InjectedCrash(i);
}

/**
 * Runs a batch in order on `target`, journaling each op. Expected kernel failures are
 * journaled, never thrown: a failed op skips the rest of its lane unless it is
 * non-fatal, and EBADF (the target's fd closed) ends the batch. Anything thrown out of
 * here is a crash, handled by reconciliation.
 */
export function executeBatch(
  port: SyscallPort,
  target: DmaTarget,
  batch: DmaBatch,
  journal: Journal,
  hook?: CrashHook,
): void {
  const ops = batch.ops;
  let poisonedLane = -1n; // lanes are contiguous in a batch, so one marker is enough
  for (let i = 0; i < batch.count; i++) {
    const k = i * STRIDE;
    const flags = ops[k + 4]!;
    const lane = flags >> 32n;
    if (journal.cancelled) break;
    if (lane === poisonedLane) {
      journal.record(i, JOURNAL_STATUS.SKIPPED);
      continue;
    }
    journal.begin(i);
    if (hook && hook.after === i && !hook.inFlight) crash(hook, i);
    let bytes = 0n;
    let errno = 0;
    try {
      const op = Number(ops[k]);
      const iova = ops[k + 1]!;
      const size = ops[k + 2]!;
      const ro = (flags & BATCH_FLAG.READONLY) !== 0n;
      switch (op) {
        case BATCH_OP.MAP:
          dmaMap(port, target, iova, size, ops[k + 3]!, ro);
          break;
        case BATCH_OP.UNMAP:
          bytes = dmaUnmap(port, target, iova, size);
          break;
        case BATCH_OP.COPY:
          if (target.kind !== 'iommufd') throw new SyscallError('IOMMU_IOAS_COPY', ERRNO.EINVAL, { iova });
          ioasCopy(port, target.iommufd, target.ioasId, Number(ops[k + 3]), iova, size, ro);
          break;
        case BATCH_OP.UNMAP_ALL:
          bytes = dmaUnmapAll(port, target);
          break;
        default:
          throw new SyscallError('batch', ERRNO.EINVAL, { op });
      }
    } catch (e) {
      if (!(e instanceof SyscallError)) throw e;
      errno = e.errno;
    }
    if (hook && hook.after === i && hook.inFlight) crash(hook, i);
    if (errno) {
      journal.record(i, JOURNAL_STATUS.FAILED, errno);
      // The fd is gone, and its number may soon be another file's: issue nothing more (not-run).
      if (errno === ERRNO.EBADF) break;
      if ((flags & BATCH_FLAG.NON_FATAL) === 0n) poisonedLane = lane;
    } else journal.record(i, JOURNAL_STATUS.DONE, 0, bytes);
  }
  journal.finish();
}

/** The outcome of one op after reconciliation. */
export type OpStatus =
  /** The kernel did it. */
  | 'done'
  /** The kernel refused it (errno); no effect. */
  | 'failed'
  /** Not issued: an earlier op of its lane failed. */
  | 'skipped'
  /** Not issued (cancelled, the fd gone, or the worker died first), or issued and undone by the probe: no effect. */
  | 'not-run';

/** One op's result. */
export interface OpResult {
  readonly status: OpStatus;
  readonly errno: number;
  /** Bytes unmapped (unmap ops). */
  readonly bytes: bigint;
  /** Its outcome was unknown (a crash mid-ioctl) and was settled by probing. */
  readonly probed: boolean;
}

/**
 * Reads the journal into per-op results; when the executor did not finish, settles the
 * op at the cursor by probing with an exact unmap of its range (iommufd has no way to
 * list mappings): for a map or copy, `size` bytes unmapped means it had happened and
 * is now undone, 0 that it had not, so either way it is 'not-run'; an unmap is
 * re-issued, after which the range is empty, so it is 'done'. Probing is only sound
 * because the plan never maps over a live mapping and lanes are disjoint: the range of
 * the op in doubt holds nothing but that op's own mapping.
 */
export function reconcile(
  port: SyscallPort,
  target: DmaTarget,
  batch: DmaBatch,
  journal: Journal,
): OpResult[] {
  const out: OpResult[] = [];
  const cursor = journal.cursor;
  const finished = journal.finished;
  for (let i = 0; i < batch.count; i++) {
    const st = journal.status(i);
    if (st === JOURNAL_STATUS.DONE)
      out.push({ status: 'done', errno: 0, bytes: journal.bytes(i), probed: false });
    else if (st === JOURNAL_STATUS.FAILED)
      out.push({ status: 'failed', errno: journal.errno(i), bytes: 0n, probed: false });
    else if (st === JOURNAL_STATUS.SKIPPED)
      out.push({ status: 'skipped', errno: 0, bytes: 0n, probed: false });
    else if (!finished && i === cursor) out.push(probe(port, target, batch, i));
    else out.push({ status: 'not-run', errno: 0, bytes: 0n, probed: false });
  }
  return out;
}

function probe(port: SyscallPort, target: DmaTarget, batch: DmaBatch, i: number): OpResult {
  const k = i * STRIDE;
  const op = Number(batch.ops[k]);
  const iova = batch.ops[k + 1]!;
  const size = batch.ops[k + 2]!;
  if (op === BATCH_OP.UNMAP_ALL)
    return { status: 'done', errno: 0, bytes: dmaUnmapAll(port, target), probed: true };
  const bytes = dmaUnmap(port, target, iova, size);
  if (op === BATCH_OP.UNMAP) return { status: 'done', errno: 0, bytes, probed: true };
  if (bytes !== 0n && bytes !== size) {
    throw new Error(`probe of op ${i}: unmapped 0x${bytes.toString(16)} of 0x${size.toString(16)} bytes`);
  }
  return { status: 'not-run', errno: 0, bytes: 0n, probed: true };
}
