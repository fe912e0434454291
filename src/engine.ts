/**
 * The public API: createEngine() owns a syscall port (and the simulated kernel thread for
 * 'sim'), a VfioHost, a DmaPool, and the address spaces' actors.
 */
import { Subject, type Observable } from 'rxjs';
import { IommufdBackend } from './backends/iommufd.js';
import { VfioHost } from './backends/host.js';
import { defaultTopology, type Topology } from './kernel/topology.js';
import { LinuxPort } from './port/linux.js';
import type { SyscallPort } from './port/port.js';
import { NullPort } from './port/null.js';
import { SimPort, type SimKernelHandle } from './kernel/sim-port.js';
import { DmaPool } from './workers/pool.js';
import { AddressSpace } from './actors/address-space.js';
import type { EngineEvent } from './actors/events.js';
import { fanOutInspector, type ActorInspector } from './actors/inspect.js';

/** createEngine's options. */
export interface EngineOptions {
  /**
   * 'sim' (default: a simulated kernel thread), 'linux' (this machine), 'null' (the simulated
   * kernel with its DMA ioctls answered at once, in every thread: the engine's own cost, for
   * benchmarks; see NullPort), or a port of your own (linux kind).
   */
  readonly kernel?: 'sim' | 'null' | 'linux' | SyscallPort;
  /** The simulated host ('sim' and 'null'); default defaultTopology(). */
  readonly topology?: Topology;
  /** DMA worker threads (default 2). */
  readonly workers?: number;
  /** Called with every engine event (as events$, without subscribing). */
  readonly inspect?: (e: EngineEvent) => void;
  /**
   * xstate's inspection API for every actor the engine creates (address spaces, containers,
   * devices): an Observer or function of InspectionEvent, e.g. Stately's @statelyai/inspect
   * `inspector.inspect`, or traceInspector() for one line per state change.
   */
  readonly inspector?: ActorInspector | readonly ActorInspector[];
}

/** A running engine. */
export interface Engine {
  /** The syscall port the engine uses (guest RAM comes from its memfdCreate + mmap). */
  readonly port: SyscallPort;
  /** The process-wide VFIO state (containers, groups, devices). */
  readonly host: VfioHost;
  /** Engine events: backend choices, containers, transactions with timing, warnings. */
  readonly events$: Observable<EngineEvent>;
  /** A new address space (QEMU's AddressSpace as VFIO sees it). */
  createAddressSpace(name?: string): AddressSpace;
  /** An explicit iommufd object to share between devices (QEMU's -object iommufd,id=…). */
  createIommufd(id?: string): IommufdBackend;
  /** Every actor's state value and key context, per address space. */
  state(): Record<string, ReturnType<AddressSpace['state']>>;
  /** Detaches every device, unmaps, closes every fd, stops the pool and the simulated kernel. */
  shutdown(): Promise<void>;
}

/** Creates an engine on a kernel port. */
export async function createEngine(opts: EngineOptions = {}): Promise<Engine> {
  const kernel = opts.kernel ?? 'sim';
  let sim: SimKernelHandle | null = null;
  let port: SyscallPort;
  if (kernel === 'sim' || kernel === 'null') {
    sim = await SimPort.start(opts.topology ?? defaultTopology());
    port = kernel === 'null' ? new NullPort(sim.port()) : sim.port();
  } else if (kernel === 'linux') port = new LinuxPort();
  else port = kernel;
  const threads = Math.max(1, opts.workers ?? 2);
  const events = new Subject<EngineEvent>();
  const pool = new DmaPool({
    port,
    sim: sim?.shared,
    nullDma: kernel === 'null',
    minThreads: threads,
    maxThreads: threads,
    onError: (e) => events.next({ type: 'warning', message: `DMA worker: ${String(e)}` }),
  });
  const host = new VfioHost(port);
  const spaces = new Map<string, AddressSpace>();
  const counters = new Map<string, number>();
  const nextId = (prefix: string) => {
    const n = counters.get(prefix) ?? 0;
    counters.set(prefix, n + 1);
    return `${prefix}${n}`;
  };
  const emit = (e: EngineEvent) => {
    try {
      opts.inspect?.(e);
    } finally {
      events.next(e);
    }
  };
  const inspect = fanOutInspector(opts.inspector === undefined ? [] : [opts.inspector].flat());
  let down: Promise<void> | null = null;
  return {
    port,
    host,
    events$: events.asObservable(),
    createAddressSpace(name) {
      if (down) throw new Error('engine is shut down');
      const n = name ?? nextId('as');
      if (spaces.has(n)) throw new Error(`address space '${n}' exists`);
      const s = new AddressSpace(n, { host, pool, emit, nextId, inspect });
      spaces.set(n, s);
      return s;
    },
    createIommufd(id) {
      return new IommufdBackend(port, { id: id ?? nextId('iommufd-obj') });
    },
    state() {
      const out: Record<string, ReturnType<AddressSpace['state']>> = {};
      for (const [n, s] of spaces) out[n] = s.state();
      return out;
    },
    shutdown() {
      down ??= (async () => {
        try {
          await Promise.allSettled([...spaces.values()].map((s) => s.shutdown()));
          // Anything the actors could not release (a failed teardown) goes now.
          for (const c of [...host.containers]) {
            try {
              c.destroy();
            } catch (e) {
              emit({ type: 'warning', message: `destroy ${c.describe()}: ${String(e)}` });
            }
          }
          await pool.close();
        } finally {
          events.complete();
          await sim?.stop();
        }
      })();
      return down;
    },
  };
}

export { AddressSpace } from './actors/address-space.js';
export type { AddDeviceOptions, CommitResult, DeviceInfo, MemoryRegion } from './actors/address-space.js';
export { traceInspector, type ActorInspector } from './actors/inspect.js';
export type { EngineEvent } from './actors/events.js';
