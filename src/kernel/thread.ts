/**
 * The kernel thread: a worker that owns the one SimKernel every SimPort in the process
 * talks to (main thread and piscina workers alike), and serves the call channel.
 *
 * It ends by itself: stopChannel() makes serve() return, and the thread then has nothing left
 * to run. SimPort's stop() waits for that instead of terminating it, because terminating a
 * thread while it loads koffi (LinuxPort, below) aborts the whole process.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { threadStarted } from '../port/native-guard.js';
import { LinuxPort } from '../port/linux.js';
import { markReady, serve, type ChannelShared } from './channel.js';
import { DEFAULT_DRIVERS } from './drivers.js';
import { SimKernel } from './kernel.js';
import type { Topology } from './topology.js';

/** What SimPort.start passes as workerData. */
export interface KernelThreadData {
  readonly shared: ChannelShared;
  readonly topology: Topology;
  /** The spawner's StartupTracker: this thread marks itself started once koffi is loaded (native-guard.ts). */
  readonly startup: SharedArrayBuffer;
}

const { shared, topology, startup } = workerData as KernelThreadData;
const kernel = new SimKernel(topology, new LinuxPort(), DEFAULT_DRIVERS);
threadStarted(startup); // past koffi's load: from here on a terminate() cannot abort the process
markReady(shared);
parentPort!.postMessage('ready');
serve(kernel, shared);
