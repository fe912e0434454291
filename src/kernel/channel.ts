/**
 * The call channel to the kernel thread: one SharedArrayBuffer with a doorbell and a
 * fixed set of slots. A calling thread claims a slot once, writes a system call into it,
 * rings the doorbell and blocks in Atomics.wait until the kernel thread marks the slot
 * done. Any thread (main or worker) can call synchronously, and the kernel thread runs
 * one call at a time, as the real kernel does per ioctl on the objects it locks.
 *
 * A slot is owned by its thread (the owner word holds threadId + 1) until that thread is
 * gone and whoever started it calls releaseThreadSlots(): slots are few, and a pool that
 * replaces crashed workers would otherwise run out of them.
 */
import { threadId } from 'node:worker_threads';
import type { SimKernel, SysCall, SysResult } from './kernel.js';

/** What a thread needs to reach the kernel thread (structured-clone safe: pass in workerData). */
export interface ChannelShared {
  readonly sab: SharedArrayBuffer;
}

const SLOTS = 64;
const CTRL_BYTES = 512; // doorbell, shutdown, ready, slot owners
const C_OWNERS = 4; // ctrl index of slot 0's owner word
const HDR = 128; // per slot: Int32 header [0, 64), BigInt64 fields [64, 128)
const DATA = 64 * 1024;
const SLOT_BYTES = HDR + DATA;
/** Largest payload one call carries (ioctl argument, path, pread/pwrite chunk). */
export const CHANNEL_MAX_DATA = DATA;

// How often a waiting caller checks whether the kernel thread was stopped.
const STOP_POLL_MS = 200;
const ENODEV = 19;

const IDLE = 0,
  REQ = 1,
  DONE = 2;
// Int32 header fields
const S_STATE = 0,
  S_OP = 1,
  S_FD = 2,
  S_I1 = 3,
  S_I2 = 4,
  S_ERRNO = 5,
  S_LEN = 6,
  S_HASBYTES = 7,
  S_STRLEN = 8;
// BigInt64 fields (index into the slot's BigInt64Array at byte 64)
const B_A = 0,
  B_B = 1,
  B_RC = 3,
  B_R1 = 4,
  B_R2 = 5;

const OPS = [
  'open',
  'close',
  'ioctl',
  'mmap',
  'munmap',
  'memfd_create',
  'ftruncate',
  'pread',
  'pwrite',
  'getrlimit',
  'setrlimit',
  'vfs',
] as const;
const VFS_CALLS = ['readdir', 'readlink', 'readFile', 'exists'] as const;
const OP_CODE = new Map(OPS.map((o, i) => [o, i]));

/** Allocates a channel. */
export function createChannel(): ChannelShared {
  return { sab: new SharedArrayBuffer(CTRL_BYTES + SLOTS * SLOT_BYTES) };
}

const enc = new TextEncoder();
const dec = new TextDecoder();

class Slot {
  readonly i32: Int32Array;
  readonly i64: BigInt64Array;
  readonly data: Uint8Array;
  constructor(sab: SharedArrayBuffer, index: number) {
    const base = CTRL_BYTES + index * SLOT_BYTES;
    this.i32 = new Int32Array(sab, base, 16);
    this.i64 = new BigInt64Array(sab, base + 64, 8);
    this.data = new Uint8Array(sab, base + HDR, DATA);
  }
}

/** The calling side: one per thread. */
export class ChannelClient {
  private readonly ctrl: Int32Array;
  private readonly slot: Slot;

  constructor(shared: ChannelShared) {
    this.ctrl = new Int32Array(shared.sab, 0, CTRL_BYTES / 4);
    let index = -1;
    for (let i = 0; i < SLOTS; i++) {
      if (Atomics.compareExchange(this.ctrl, C_OWNERS + i, 0, threadId + 1) === 0) {
        index = i;
        break;
      }
    }
    if (index < 0) throw new Error(`sim kernel channel: all ${SLOTS} slots are taken (one per thread)`);
    this.slot = new Slot(shared.sab, index);
    // A released slot's last owner may have died mid-call: its request is still served (and
    // the answer written into the slot) before the slot is ours to write.
    const state = this.slot.i32;
    while (Atomics.load(state, S_STATE) === REQ && Atomics.load(this.ctrl, 1) !== 1)
      Atomics.wait(state, S_STATE, REQ, STOP_POLL_MS);
    Atomics.store(state, S_STATE, IDLE);
  }

  /** Makes a system call on the kernel thread and waits for its answer. */
  call(c: SysCall): SysResult {
    const { i32, i64, data } = this.slot;
    i32[S_OP] = OP_CODE.get(c.op)!;
    i32[S_HASBYTES] = 0;
    let out: Uint8Array | null = null; // caller memory the answer is copied back into
    const putString = (s: string) => {
      const b = enc.encode(s);
      data.set(b);
      i32[S_STRLEN] = b.byteLength;
    };
    const putBytes = (b: Uint8Array) => {
      if (b.byteLength > DATA)
        throw new RangeError(`sim kernel channel: ${b.byteLength} bytes exceed ${DATA}`);
      data.set(b);
      i32[S_LEN] = b.byteLength;
      i32[S_HASBYTES] = 1;
    };
    switch (c.op) {
      case 'open':
        putString(c.path);
        i32[S_I1] = c.flags;
        break;
      case 'close':
        i32[S_FD] = c.fd;
        break;
      case 'ioctl':
        i32[S_FD] = c.fd;
        i64[B_A] = BigInt(c.request);
        i32[S_I1] = c.value;
        if (c.bytes) {
          putBytes(c.bytes);
          out = c.bytes;
        }
        break;
      case 'mmap':
        i64[B_A] = c.length;
        i32[S_I1] = c.prot;
        i32[S_I2] = c.flags;
        i32[S_FD] = c.fd;
        i64[B_B] = c.offset;
        break;
      case 'munmap':
        i64[B_A] = c.addr;
        i64[B_B] = c.length;
        break;
      case 'memfd_create':
        putString(c.name);
        i32[S_I1] = c.flags;
        break;
      case 'ftruncate':
        i32[S_FD] = c.fd;
        i64[B_A] = c.length;
        break;
      case 'pread':
        i32[S_FD] = c.fd;
        i32[S_LEN] = c.buf.byteLength;
        i64[B_A] = c.offset;
        out = c.buf;
        break;
      case 'pwrite':
        i32[S_FD] = c.fd;
        putBytes(c.buf);
        i64[B_A] = c.offset;
        break;
      case 'getrlimit':
        i32[S_I1] = c.resource;
        break;
      case 'setrlimit':
        i32[S_I1] = c.resource;
        i64[B_A] = c.cur;
        i64[B_B] = c.max;
        break;
      case 'vfs':
        putString(c.path);
        i32[S_I1] = VFS_CALLS.indexOf(c.call);
        break;
    }
    // A stopped kernel answers nothing: fail like a device that went away instead of blocking forever.
    if (Atomics.load(this.ctrl, 1) === 1) return { rc: -1n, errno: ENODEV };
    Atomics.store(i32, S_STATE, REQ);
    Atomics.add(this.ctrl, 0, 1);
    Atomics.notify(this.ctrl, 0);
    while (Atomics.load(i32, S_STATE) !== DONE) {
      if (Atomics.wait(i32, S_STATE, REQ, STOP_POLL_MS) === 'timed-out' && Atomics.load(this.ctrl, 1) === 1) {
        if (Atomics.load(i32, S_STATE) === DONE) break;
        Atomics.store(i32, S_STATE, IDLE);
        return { rc: -1n, errno: ENODEV };
      }
    }
    const rc = i64[B_RC]!;
    const errno = i32[S_ERRNO]!;
    if (out && errno === 0) out.set(data.subarray(0, out.byteLength));
    else if (out && c.op === 'ioctl') out.set(data.subarray(0, out.byteLength)); // ioctls may write before failing (EMSGSIZE)
    const r: SysResult = { rc, errno };
    if (c.op === 'vfs' && errno === 0) r.text = dec.decode(data.slice(0, i32[S_LEN]!));
    if (c.op === 'getrlimit' && errno === 0)
      r.rlimit = { cur: BigInt.asUintN(64, i64[B_R1]!), max: BigInt.asUintN(64, i64[B_R2]!) };
    Atomics.store(i32, S_STATE, IDLE);
    return r;
  }
}

/**
 * The kernel side: serves calls until stop() is signalled. Between calls it runs the
 * kernel's background work (device DMA engines), waking every millisecond while any is pending.
 */
export function serve(kernel: SimKernel, shared: ChannelShared): void {
  const ctrl = new Int32Array(shared.sab, 0, CTRL_BYTES / 4);
  const slots = Array.from({ length: SLOTS }, (_, i) => new Slot(shared.sab, i));
  for (;;) {
    const bell = Atomics.load(ctrl, 0);
    let served = false;
    for (const s of slots) {
      if (Atomics.load(s.i32, S_STATE) !== REQ) continue;
      serveOne(kernel, s);
      Atomics.store(s.i32, S_STATE, DONE);
      Atomics.notify(s.i32, S_STATE);
      served = true;
    }
    if (kernel.busy()) kernel.poll();
    if (Atomics.load(ctrl, 1) === 1) return;
    if (!served) Atomics.wait(ctrl, 0, bell, kernel.busy() ? 1 : undefined);
  }
}

/** Called by the kernel thread once its kernel exists: releases waitReady(). */
export function markReady(shared: ChannelShared): void {
  const ctrl = new Int32Array(shared.sab, 0, CTRL_BYTES / 4);
  Atomics.store(ctrl, 2, 1);
  Atomics.notify(ctrl, 2);
}

/** Blocks until the kernel thread is ready; false after `timeoutMs`. */
export function waitReady(shared: ChannelShared, timeoutMs: number): boolean {
  const ctrl = new Int32Array(shared.sab, 0, CTRL_BYTES / 4);
  const until = Date.now() + timeoutMs;
  while (Atomics.load(ctrl, 2) !== 1) {
    const left = until - Date.now();
    if (left <= 0) return false;
    Atomics.wait(ctrl, 2, 0, left);
  }
  return true;
}

/**
 * Frees the slots a thread held. Call it once the thread has exited (a Worker's 'exit'
 * event), never while it may still call: its slot goes to the next thread that attaches.
 */
export function releaseThreadSlots(shared: ChannelShared, thread: number): void {
  const ctrl = new Int32Array(shared.sab, 0, CTRL_BYTES / 4);
  for (let i = 0; i < SLOTS; i++) Atomics.compareExchange(ctrl, C_OWNERS + i, thread + 1, 0);
}

/** Slots held by threads (diagnostics and leak checks). */
export function slotsInUse(shared: ChannelShared): number {
  const ctrl = new Int32Array(shared.sab, 0, CTRL_BYTES / 4);
  let n = 0;
  for (let i = 0; i < SLOTS; i++) if (Atomics.load(ctrl, C_OWNERS + i) !== 0) n++;
  return n;
}

/**
 * Asks the kernel thread to stop serving: wakes serve(), which returns, and the thread then
 * ends by itself (SimPort's stop() waits for that rather than terminating it). Callers blocked
 * in a call, and later calls, get ENODEV.
 */
export function stopChannel(shared: ChannelShared): void {
  const ctrl = new Int32Array(shared.sab, 0, CTRL_BYTES / 4);
  Atomics.store(ctrl, 1, 1);
  Atomics.add(ctrl, 0, 1);
  Atomics.notify(ctrl, 0);
}

function serveOne(kernel: SimKernel, s: Slot): void {
  const { i32, i64, data } = s;
  const str = () => dec.decode(data.subarray(0, i32[S_STRLEN]!));
  const op = OPS[i32[S_OP]!]!;
  let c: SysCall;
  let bytes: Uint8Array | null = null;
  switch (op) {
    case 'open':
      c = { op, path: str(), flags: i32[S_I1]! };
      break;
    case 'close':
      c = { op, fd: i32[S_FD]! };
      break;
    case 'ioctl':
      // The kernel works on its own copy, as copy_from_user/copy_to_user do.
      bytes = i32[S_HASBYTES] ? data.slice(0, i32[S_LEN]!) : null;
      c = { op, fd: i32[S_FD]!, request: Number(i64[B_A]!), bytes, value: i32[S_I1]! };
      break;
    case 'mmap':
      c = { op, length: i64[B_A]!, prot: i32[S_I1]!, flags: i32[S_I2]!, fd: i32[S_FD]!, offset: i64[B_B]! };
      break;
    case 'munmap':
      c = { op, addr: BigInt.asUintN(64, i64[B_A]!), length: i64[B_B]! };
      break;
    case 'memfd_create':
      c = { op, name: str(), flags: i32[S_I1]! };
      break;
    case 'ftruncate':
      c = { op, fd: i32[S_FD]!, length: i64[B_A]! };
      break;
    case 'pread':
      bytes = new Uint8Array(i32[S_LEN]!);
      c = { op, fd: i32[S_FD]!, buf: bytes, offset: i64[B_A]! };
      break;
    case 'pwrite':
      c = { op, fd: i32[S_FD]!, buf: data.slice(0, i32[S_LEN]!), offset: i64[B_A]! };
      break;
    case 'getrlimit':
      c = { op, resource: i32[S_I1]! };
      break;
    case 'setrlimit':
      c = {
        op,
        resource: i32[S_I1]!,
        cur: BigInt.asUintN(64, i64[B_A]!),
        max: BigInt.asUintN(64, i64[B_B]!),
      };
      break;
    case 'vfs':
      c = { op, call: VFS_CALLS[i32[S_I1]!]!, path: str() };
      break;
  }
  let r: SysResult;
  try {
    r = kernel.syscall(c);
  } catch (e) {
    // A bug in the model must not hang the caller: report EIO and log it.
    console.error('sim kernel: internal error in', op, e);
    r = { rc: -1n, errno: 5 };
  }
  i64[B_RC] = BigInt.asIntN(64, r.rc);
  i32[S_ERRNO] = r.errno;
  if (bytes) data.set(bytes);
  if (r.text !== undefined) {
    const t = enc.encode(r.text);
    if (t.byteLength > DATA) {
      r = { rc: -1n, errno: 7 }; // E2BIG: no simulated sysfs answer is this large
    } else {
      data.set(t);
      i32[S_LEN] = t.byteLength;
    }
    i64[B_RC] = BigInt.asIntN(64, r.rc);
    i32[S_ERRNO] = r.errno;
  }
  if (r.rlimit) {
    i64[B_R1] = BigInt.asIntN(64, r.rlimit.cur);
    i64[B_R2] = BigInt.asIntN(64, r.rlimit.max);
  }
}
