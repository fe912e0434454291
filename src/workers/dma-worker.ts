/**
 * The piscina worker of the data plane: runs batches of DMA ops on fds the main thread
 * opened (workers never open or close them). The port is made once per thread from
 * workerData: the simulated kernel's channel when `port` is 'sim', else the real kernel.
 */
import { workerData } from 'piscina';
import type { DmaTarget } from '../backends/dma.js';
import { LinuxPort } from '../port/linux.js';
import type { SyscallPort } from '../port/port.js';
import { SimPort } from '../port/sim.js';
import type { ChannelShared } from '../kernel/channel.js';
import { executeBatch, Journal, type CrashHook } from './batch.js';

/** What DmaPool passes as workerData. */
export interface DmaWorkerData {
  readonly port: 'linux' | 'sim';
  /** The simulated kernel's channel, when `port` is 'sim'. */
  readonly shared?: ChannelShared;
  /** An Int32 counter each worker bumps once its port (and koffi) is loaded. */
  readonly loaded: SharedArrayBuffer;
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
const port: SyscallPort = data.port === 'sim' ? SimPort.attach(data.shared!) : new LinuxPort();
// Tell the pool this thread is past loading koffi's native module: terminating a thread in the
// middle of that load aborts the whole process (napi_throw in the addon's init), so the pool
// never closes before every worker it created has counted itself here.
const loaded = new Int32Array(data.loaded);
Atomics.add(loaded, 0, 1);
Atomics.notify(loaded, 0);

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
