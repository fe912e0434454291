/**
 * The piscina worker of the data plane: runs batches of DMA ops on fds the main thread
 * opened (workers never open or close them). The port is made once per thread from
 * workerData: the simulated kernel's channel ('sim'; 'null' with the DMA ioctls answered at
 * once, for benchmarks), else the real kernel.
 * Only the real kernel's port loads koffi (sim workers never do), and it does so here, at
 * startup, not in the middle of a batch. The pool terminates a worker only once it has marked
 * itself started (see native-guard.ts: a thread terminated mid-load aborts the process).
 */
import { workerData } from 'piscina';
import type { DmaTarget } from '../backends/dma.js';
import { LinuxPort } from '../port/linux.js';
import { threadStarted } from '../port/native-guard.js';
import type { SyscallPort } from '../port/port.js';
import { NullPort } from '../port/null.js';
import { SimPort } from '../kernel/sim-port.js';
import type { ChannelShared } from '../kernel/channel.js';
import { executeBatch, Journal, type CrashHook } from './batch.js';

/** What DmaPool passes as workerData. */
export interface DmaWorkerData {
  /** 'null': the simulated kernel with the DMA ioctls answered at once (NullPort). */
  readonly port: 'linux' | 'sim' | 'null';
  /** The simulated kernel's channel, when `port` is 'sim' or 'null'. */
  readonly shared?: ChannelShared;
  /** The pool's StartupTracker: this thread marks itself started there once loaded. */
  readonly startup: SharedArrayBuffer;
}

/** One task: a batch (shared memory), its journal and the target. */
export interface RunBatchTask {
  readonly target: DmaTarget;
  readonly ops: BigUint64Array;
  readonly count: number;
  readonly journal: SharedArrayBuffer;
  /** Test-only fault injection. */
  readonly crash?: CrashHook;
}

const data = workerData as DmaWorkerData;
const port: SyscallPort =
  data.port === 'linux'
    ? new LinuxPort()
    : data.port === 'null'
      ? new NullPort(SimPort.attach(data.shared!))
      : SimPort.attach(data.shared!);
// Loaded (this module body runs after its graph is instantiated, where require(esm) can abort).
threadStarted(data.startup);

/** Executes one batch; results are in the journal (the return value is just the op count). */
export function runBatch(task: RunBatchTask): number {
  executeBatch(
    port,
    task.target,
    { ops: task.ops, count: task.count },
    new Journal(task.journal),
    task.crash,
  );
  return task.count;
}
