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
  // Workers destroyed, and workers that finished loading (see dma-worker.ts).
  private destroyed = 0;
  private readonly loaded = new Int32Array(new SharedArrayBuffer(4));
  /** Pool-level errors seen when no onError was given. */
  readonly errors: unknown[] = [];
  /** Number of worker threads (maxThreads). */
  readonly threads: number;

  constructor(opts: DmaPoolOptions) {
    this.port = opts.port;
    this.inlineThreshold = opts.inlineThreshold ?? 8;
    this.threads = opts.maxThreads ?? 2;
    const ext = extname(fileURLToPath(import.meta.url)); // '.ts' under tsx, '.js' built
    const loaded = this.loaded.buffer as SharedArrayBuffer;
    const workerData: DmaWorkerData = opts.sim
      ? { port: 'sim', shared: opts.sim, loaded }
      : { port: 'linux', loaded };
    this.pool = new Piscina({
      filename: new URL(`./dma-worker${ext}`, import.meta.url).href,
      minThreads: Math.min(opts.minThreads ?? 1, this.threads),
      maxThreads: this.threads,
      idleTimeout: Infinity,
      workerData,
    });
    // Without a listener a worker load failure would crash the process.
    this.pool.on('error', opts.onError ?? ((e: unknown) => this.errors.push(e)));
    this.pool.on('workerDestroy', () => this.destroyed++);
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
        try {
          await this.pool.run(task, { name: 'runBatch' });
        } catch (e) {
          crash = e;
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

  /** Waits for running batches, then stops the workers; later runs are refused. */
  async close(): Promise<void> {
    this.closed = true;
    await this.workersLoaded(10_000);
    await this.pool.close();
  }

  // Resolves once every live worker has loaded its port (or after `timeoutMs`): workers that
  // loaded, less those destroyed since (crashed ones), must cover the live ones.
  private async workersLoaded(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const n = Atomics.load(this.loaded, 0);
      if (n - this.destroyed >= this.pool.threads.length || Date.now() >= until) return;
      await Atomics.waitAsync(this.loaded, 0, n, Math.max(1, until - Date.now())).value;
    }
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
