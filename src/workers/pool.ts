/**
 * DmaPool: the main-thread side of the data plane. Runs encoded batches in piscina
 * workers (or inline, for small batches: the same executor), reads per-op results from
 * each batch's journal, and reconciles after a crashed or cancelled batch so that the
 * caller's table equals the kernel's. Fds stay owned by the main thread.
 */
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { DmaTarget } from '../backends/dma.js';
import type { IntervalMap } from '../common/interval-map.js';
import { releaseThreadSlots, type ChannelShared } from '../kernel/channel.js';
import { StartupTracker } from '../port/native-guard.js';
import type { SyscallPort } from '../port/port.js';
import { applyOp, packLanes, type Plan, type PlannedOp } from '../memory/planner.js';
import type { DmaMapping } from '../memory/sections.js';
import {
  encodeBatch,
  executeBatch,
  Journal,
  reconcile,
  type BatchOp,
  type CrashHook,
  type DmaBatch,
  type OpResult,
} from './batch.js';
import type { DmaWorkerData, RunBatchTask } from './dma-worker.js';

/** DmaPool configuration. */
export interface DmaPoolOptions {
  /** The main thread's port: inline batches and reconciliation probes. */
  readonly port: SyscallPort;
  /** When set, workers attach to this simulated kernel; otherwise they use the real one. */
  readonly sim?: ChannelShared;
  /** With `sim`: the workers' DMA ioctls are answered at once (NullPort), as the main thread's are. */
  readonly nullDma?: boolean;
  readonly minThreads?: number;
  readonly maxThreads?: number;
  /** Batches of at most this many ops run on the main thread (default 8; 0 = never). */
  readonly inlineThreshold?: number;
  /** Pool-level errors (a worker failing to load); without it they are kept in `errors`. */
  readonly onError?: (err: unknown) => void;
}

/** Per-run options. */
export interface RunOptions {
  /** Cancels cooperatively: ops not yet started end 'not-run'. */
  readonly signal?: AbortSignal;
  /** Force inline (true) or worker (false) execution. */
  readonly inline?: boolean;
  /** Test-only fault injection in the executor. */
  readonly crash?: CrashHook;
}

/** The results of one batch, in batch order. */
export interface BatchResult {
  readonly results: OpResult[];
  /** The error the executor died with (a crash), if it did not finish. */
  readonly crash?: unknown;
}

/** Runs DMA batches on worker threads. */
export class DmaPool {
  private readonly pool: Piscina;
  private readonly port: SyscallPort;
  private readonly inlineThreshold: number;
  private closed = false;
  // Which workers have finished loading (their module, koffi for the linux port): close() lets
  // piscina terminate them only then, since a thread terminated mid-load aborts the process
  // (native-guard.ts). Crash replacements are covered: the live threads are read at each check.
  private readonly startup: StartupTracker;
  // Batches running on workers: close() waits for them first.
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly onError: (err: unknown) => void;
  /** Pool-level errors seen when no onError was given. */
  readonly errors: unknown[] = [];
  /** Number of worker threads (maxThreads). */
  readonly threads: number;

  constructor(opts: DmaPoolOptions) {
    this.port = opts.port;
    this.inlineThreshold = opts.inlineThreshold ?? 8;
    this.threads = opts.maxThreads ?? 2;
    const ext = extname(fileURLToPath(import.meta.url)); // '.ts' under tsx, '.js' built
    this.startup = new StartupTracker(() => this.pool.threads);
    const startup = this.startup.shared;
    const workerData: DmaWorkerData = opts.sim
      ? { port: opts.nullDma ? 'null' : 'sim', shared: opts.sim, startup }
      : { port: 'linux', startup };
    this.pool = new Piscina({
      filename: new URL(`./dma-worker${ext}`, import.meta.url).href,
      minThreads: Math.min(opts.minThreads ?? 1, this.threads),
      maxThreads: this.threads,
      idleTimeout: Infinity,
      workerData,
    });
    // Without a listener a worker load failure would crash the process.
    this.onError = opts.onError ?? ((e: unknown) => this.errors.push(e));
    this.pool.on('error', this.onError);
    if (opts.sim) this.releaseSlotsOnExit(opts.sim);
  }

  // Each worker holds a slot of the simulated kernel's channel; a crashed worker's replacement
  // takes a new one, so a thread's slot is freed once it has exited (crash, close or terminate).
  // Its threadId is read while it runs: it reads -1 once the thread is gone.
  private releaseSlotsOnExit(sim: ChannelShared): void {
    const seen = new WeakSet<object>();
    const track = () => {
      for (const w of this.pool.threads) {
        if (seen.has(w)) continue;
        seen.add(w);
        const id = w.threadId;
        w.once('exit', () => releaseThreadSlots(sim, id));
      }
    };
    track(); // the first workers exist already; replacements are announced when ready
    this.pool.on('workerCreate', track);
  }

  /** Runs one batch (ops, or lanes of ops, or an encoded batch) on `target`; never rejects for kernel errors. */
  async run(
    target: DmaTarget,
    batch: DmaBatch | readonly BatchOp[] | readonly (readonly BatchOp[])[],
    opts: RunOptions = {},
  ): Promise<BatchResult> {
    if (this.closed) throw new Error('DmaPool is closed');
    const b = toBatch(batch);
    const journal = new Journal(b.count);
    const onAbort = () => journal.cancel();
    if (opts.signal?.aborted) journal.cancel();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let crash: unknown;
    try {
      if (opts.inline ?? b.count <= this.inlineThreshold) {
        if (opts.crash?.mode === 'exit') throw new Error("crash mode 'exit' would end the main thread");
        try {
          executeBatch(this.port, target, b, journal, opts.crash);
        } catch (e) {
          crash = e;
        }
      } else {
        const task: RunBatchTask = {
          target,
          ops: b.ops,
          count: b.count,
          journal: journal.sab,
          crash: opts.crash,
        };
        const running = this.pool.run(task, { name: 'runBatch' });
        this.inflight.add(running);
        try {
          await running;
        } catch (e) {
          crash = e;
        } finally {
          this.inflight.delete(running);
        }
      }
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
    // A crashed worker is gone (exit) or back at its task loop (throw): nothing of this batch still runs.
    const results = reconcile(this.port, target, b, journal);
    return crash === undefined && journal.finished ? { results } : { results, crash };
  }

  /**
   * Runs a plan: its lanes packed into at most `threads` batches, run in parallel.
   * Returns results aligned with plan.ops.
   */
  async runPlan(target: DmaTarget, plan: Plan, opts: Omit<RunOptions, 'crash'> = {}): Promise<PlanResult> {
    const index = new Map<PlannedOp, number>();
    plan.ops.forEach((o, i) => index.set(o, i));
    const batches = packLanes(plan.lanes, this.threads);
    const runs = await Promise.all(batches.map((lanes) => this.run(target, lanes, opts)));
    const results: OpResult[] = new Array(plan.ops.length);
    const crashes: unknown[] = [];
    runs.forEach((r, bi) => {
      let k = 0;
      for (const lane of batches[bi]!) for (const o of lane) results[index.get(o)!] = r.results[k++]!;
      if (r.crash !== undefined) crashes.push(r.crash);
    });
    return { results, crashes };
  }

  /**
   * Waits for running batches, then stops the workers; later runs are refused. Workers are
   * terminated only once every live one has finished loading (crash replacements included). A
   * worker still loading after 10 s leaves them alive (unref'd, reported through onError) until
   * it has loaded: terminating it would abort the process.
   */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.inflight]);
    // piscina's close() stops replacing workers at once (synchronously), so none can start unseen
    // between the check and it.
    if (await this.startup.settled(10_000)) return this.stopWorkers();
    this.onError(
      new Error('DmaPool.close: a worker is still loading after 10 s; the workers are stopped once it has'),
    );
    void this.startup.settled(Infinity, false).then(() => this.stopWorkers());
  }

  private async stopWorkers(): Promise<void> {
    await this.pool.close();
    this.startup.dispose();
  }
}

/** The results of a plan, aligned with plan.ops. */
export interface PlanResult {
  readonly results: OpResult[];
  readonly crashes: unknown[];
}

function toBatch(b: DmaBatch | readonly BatchOp[] | readonly (readonly BatchOp[])[]): DmaBatch {
  if ('ops' in b && b.ops instanceof BigUint64Array) return b as DmaBatch;
  const arr = b as readonly (BatchOp | readonly BatchOp[])[];
  // A flat op list: each op is its own lane (independent ops: one failure skips nothing).
  return encodeBatch(
    arr.length && !Array.isArray(arr[0]) ? (arr as BatchOp[]).map((o) => [o]) : (arr as BatchOp[][]),
  );
}

/**
 * Applies to `table` the ops the kernel completed ('done'), in plan order: afterwards the
 * table is what the kernel holds, whatever failed, was skipped or never ran.
 */
export function applyResults(
  table: IntervalMap<DmaMapping>,
  ops: readonly PlannedOp[],
  results: readonly OpResult[],
): void {
  ops.forEach((o, i) => {
    if (results[i]?.status === 'done') applyOp(table, o);
  });
}
