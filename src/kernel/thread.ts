/**
 * The kernel thread: a worker that owns the one SimKernel every SimPort in the process
 * talks to (main thread and piscina workers alike), and serves the call channel.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { LinuxPort } from '../port/linux.js';
import { markReady, serve, type ChannelShared } from './channel.js';
import { DEFAULT_DRIVERS } from './drivers.js';
import { SimKernel } from './kernel.js';
import type { Topology } from './topology.js';

const { shared, topology } = workerData as { shared: ChannelShared; topology: Topology };
const kernel = new SimKernel(topology, new LinuxPort(), DEFAULT_DRIVERS);
markReady(shared);
parentPort!.postMessage('ready');
serve(kernel, shared);
