/**
 * SimPort: the syscall port on the simulated kernel, with the same ioctl numbers, struct
 * bytes and errno answers as Linux. The kernel runs in a thread of its own
 * (src/kernel/thread.ts); every SimPort, in the main thread or a worker, reaches it
 * through a synchronous shared-memory channel, so all threads see one kernel. Memory is
 * real (memfd and mmap), so a simulated device's DMA moves real bytes.
 */
import { Worker } from 'node:worker_threads';
import {
  ChannelClient,
  CHANNEL_MAX_DATA,
  createChannel,
  stopChannel,
  waitReady,
  type ChannelShared,
} from './channel.js';
import type { SimKernel, SysCall, SysResult, VfsCall } from './kernel.js';
import type { KernelThreadData } from './thread.js';
import { defaultTopology, type Topology } from './topology.js';
import type { Ioctl } from '../uapi/layout.js';
import { SyscallError, requestFields, type ErrorFields } from '../port/errors.js';
import { LinuxPort } from '../port/linux.js';
import { endThread, StartupTracker } from '../port/native-guard.js';
import type { IoctlArg, Rlimit, SyscallPort } from '../port/port.js';

type Call = (c: SysCall) => SysResult;

/** A running simulated kernel: ports for this thread, the handle for workers, and stop(). */
export interface SimKernelHandle {
  /** A port for the calling thread. */
  port(): SimPort;
  /** Pass this to worker threads (workerData); they call SimPort.attach(shared). */
  readonly shared: ChannelShared;
  /** Stops the kernel thread and waits for it to end (every simulated fd is gone with it). */
  stop(): Promise<void>;
}

/** The syscall port on the simulated kernel. */
export class SimPort implements SyscallPort {
  readonly kind = 'sim' as const;
  // For memory(): mappings are real and process-wide. Made on first use, because a LinuxPort
  // loads koffi in this thread, and threads that only make calls (DMA workers) never need it.
  private local: LinuxPort | undefined;
  private readonly intArg = new Uint8Array(4);

  private constructor(private readonly call: Call) {}

  /** Starts a simulated kernel in its own thread. */
  static async start(topology: Topology = defaultTopology()): Promise<SimKernelHandle> {
    const k = spawnKernel(topology);
    await new Promise<void>((resolve, reject) => {
      k.worker.once('message', () => resolve());
      k.worker.once('error', reject);
      k.worker.once('exit', (code) =>
        reject(new Error(`the simulated kernel thread exited with code ${code} before it was ready`)),
      );
    });
    k.worker.unref(); // a forgotten stop() must not keep the process alive
    return kernelHandle(k);
  }

  /**
   * Starts a simulated kernel thread and blocks until it is ready: for callers that cannot
   * await (a lazily made port). Startup errors surface as a timeout with the worker's error.
   */
  static startSync(topology: Topology = defaultTopology(), timeoutMs = 30_000): SimKernelHandle {
    const k = spawnKernel(topology);
    let failure: unknown;
    k.worker.once('error', (e) => (failure = e));
    k.worker.unref();
    if (!waitReady(k.shared, timeoutMs)) {
      // The thread may be loading koffi right now: never terminate it here. Told to stop, it
      // ends by itself once it gets to its serve loop (endThread terminates it only if not).
      stopChannel(k.shared);
      void endThread(k.worker, k.startup);
      throw new Error(
        `the simulated kernel thread did not start within ${timeoutMs} ms${failure ? `: ${String(failure)}` : ''}`,
      );
    }
    return kernelHandle(k);
  }

  /** A port in this thread onto a kernel thread started elsewhere (piscina workers). */
  static attach(shared: ChannelShared): SimPort {
    const client = new ChannelClient(shared);
    return new SimPort((c) => client.call(c));
  }

  /** A port that calls `kernel` directly in this thread (unit tests of the model; no device DMA engines run). */
  static direct(kernel: SimKernel): SimPort {
    return new SimPort((c) => {
      const r = kernel.syscall(c);
      kernel.poll();
      return r;
    });
  }

  private fail(op: string, errno: number, fields: ErrorFields): never {
    throw new SyscallError(op, errno, fields);
  }

  open(path: string, flags: number): number {
    const r = this.call({ op: 'open', path, flags });
    if (r.errno) this.fail('open', r.errno, { path, flags });
    return Number(r.rc);
  }

  close(fd: number): void {
    const r = this.call({ op: 'close', fd });
    if (r.errno) this.fail('close', r.errno, { fd });
  }

  ioctl(fd: number, req: Ioctl, arg?: IoctlArg): number {
    let bytes: Uint8Array | null = null;
    let value = 0;
    switch (req.arg.kind) {
      case 'struct':
        bytes = arg as Uint8Array;
        break;
      case 'int-ptr':
        new DataView(this.intArg.buffer).setInt32(0, arg as number, true);
        bytes = this.intArg;
        break;
      case 'string':
        bytes = new TextEncoder().encode(`${arg as string}\0`);
        break;
      case 'value':
        value = (arg as number) ?? 0;
        break;
      case 'none':
        break;
    }
    const r = this.call({ op: 'ioctl', fd, request: req.request, bytes, value });
    if (r.errno) throw new SyscallError(req.name, r.errno, requestFields(fd, req, arg));
    return Number(r.rc);
  }

  mmap(length: bigint, prot: number, flags: number, fd: number, offset = 0n): bigint {
    const r = this.call({ op: 'mmap', length, prot, flags, fd, offset });
    if (r.errno) this.fail('mmap', r.errno, { length, prot, flags, fd, offset });
    return r.rc;
  }

  munmap(addr: bigint, length: bigint): void {
    const r = this.call({ op: 'munmap', addr, length });
    if (r.errno) this.fail('munmap', r.errno, { addr, length });
  }

  memfdCreate(name: string, flags = 0): number {
    const r = this.call({ op: 'memfd_create', name, flags });
    if (r.errno) this.fail('memfd_create', r.errno, { name, flags });
    return Number(r.rc);
  }

  ftruncate(fd: number, length: bigint): void {
    const r = this.call({ op: 'ftruncate', fd, length });
    if (r.errno) this.fail('ftruncate', r.errno, { fd, length });
  }

  pread(fd: number, buf: Uint8Array, offset: bigint): number {
    let done = 0;
    while (done < buf.byteLength) {
      const chunk = buf.subarray(done, Math.min(buf.byteLength, done + CHANNEL_MAX_DATA));
      const r = this.call({ op: 'pread', fd, buf: chunk, offset: offset + BigInt(done) });
      if (r.errno) this.fail('pread', r.errno, { fd, count: buf.byteLength, offset });
      done += Number(r.rc);
      if (Number(r.rc) < chunk.byteLength) break;
    }
    return done;
  }

  pwrite(fd: number, buf: Uint8Array, offset: bigint): number {
    let done = 0;
    while (done < buf.byteLength) {
      const chunk = buf.subarray(done, Math.min(buf.byteLength, done + CHANNEL_MAX_DATA));
      const r = this.call({ op: 'pwrite', fd, buf: chunk, offset: offset + BigInt(done) });
      if (r.errno) this.fail('pwrite', r.errno, { fd, count: buf.byteLength, offset });
      done += Number(r.rc);
      if (Number(r.rc) < chunk.byteLength) break;
    }
    return done;
  }

  getrlimit(resource: number): Rlimit {
    const r = this.call({ op: 'getrlimit', resource });
    if (r.errno || !r.rlimit) this.fail('getrlimit', r.errno, { resource });
    return r.rlimit!;
  }

  setrlimit(resource: number, limit: Rlimit): void {
    const r = this.call({ op: 'setrlimit', resource, cur: limit.cur, max: limit.max });
    if (r.errno) this.fail('setrlimit', r.errno, { resource, cur: limit.cur, max: limit.max });
  }

  memory(addr: bigint, length: number): Uint8Array {
    return (this.local ??= new LinuxPort()).memory(addr, length);
  }

  private vfs(call: VfsCall, path: string, op: string): string {
    const r = this.call({ op: 'vfs', call, path });
    if (r.errno) this.fail(op, r.errno, { path });
    return r.text ?? '';
  }

  readdir(path: string): string[] {
    const t = this.vfs('readdir', path, 'readdir');
    return t ? t.split('\n') : [];
  }

  readlink(path: string): string {
    return this.vfs('readlink', path, 'readlink');
  }

  readFile(path: string): string {
    return this.vfs('readFile', path, 'open');
  }

  exists(path: string): boolean {
    return this.vfs('exists', path, 'stat') === '1';
  }
}

// A kernel thread being started: its channel, its Worker and the record of its startup (it loads koffi).
interface KernelThread {
  readonly shared: ChannelShared;
  readonly worker: Worker;
  readonly startup: StartupTracker;
}

function spawnKernel(topology: Topology): KernelThread {
  const shared = createChannel();
  const threads: Worker[] = [];
  const startup = new StartupTracker(() => threads);
  const worker = new Worker(new URL('../kernel/thread.js', import.meta.url), {
    workerData: { shared, topology, startup: startup.shared } satisfies KernelThreadData,
  });
  threads.push(worker);
  return { shared, worker, startup };
}

function kernelHandle({ shared, worker, startup }: KernelThread): SimKernelHandle {
  return {
    shared,
    port: () => SimPort.attach(shared),
    // The serve loop ends on the stop flag and the thread exits by itself; terminate() is only
    // the last resort (endThread), since terminating a thread that loads koffi aborts the process.
    stop: async () => {
      stopChannel(shared);
      await endThread(worker, startup);
    },
  };
}
