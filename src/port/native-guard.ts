/**
 * The thread-teardown guard: the one record of which threads of ours are still loading (koffi's
 * native module, or their own modules), so that none of them is torn down in the middle.
 *
 * Why: two loads abort the whole process when their thread is terminated part-way, by
 * `worker.terminate()` or by the process ending (which terminates every worker):
 * - koffi's per-thread native init: `FATAL ERROR: Error::ThrowAsJavaScriptException napi_throw`
 *   (SIGABRT, from napi_module_register_by_symbol). koffi 3.3.4, the latest, has no fix.
 * - Node's require() of an ES module graph (require(esm), on by default since Node 20.19):
 *   `FATAL ERROR: v8::Module::IsGraphAsync ... must be used on an instantiated module`. piscina
 *   loads its task module with require(), so every piscina worker is exposed while it starts.
 * A thread that has finished loading can be terminated safely.
 *
 * How:
 * - Every koffi load runs in guardNativeLoad(), counted process-wide in shared memory (handed to
 *   every worker through worker_threads environment data). The main thread's 'exit' handler
 *   closes that count and waits (at most 5 s) until it is zero; a load that would begin after
 *   that parks its thread instead, until the exit ends it.
 * - Every spawner keeps a StartupTracker: its threads call threadStarted() once their entry
 *   module has fully loaded (koffi included), and the spawner terminates a thread only once
 *   it has (settled()). The 'exit' handler waits for the trackers' threads too.
 */
import {
  type Worker,
  getEnvironmentData,
  isMainThread,
  setEnvironmentData,
  threadId,
} from 'node:worker_threads';

const LOADING = 0; // threads inside a koffi load
const CLOSED = 1; // 1: the process is exiting; no new load may start
const PARKED = 2; // first slot of the table of parked threads (see SLOTS)
const ENV_KEY = 'vfio-engine:native-loads';
// Slots of a table of threads (started, parked): a thread marks slot threadId % SLOTS with its
// id, so two threads collide only 4,096 thread ids apart, far more than any pool lives through.
const SLOTS = 4096;
const MARKS = SLOTS; // in a tracker: the word bumped (and notified) on every mark
/** How long the main thread's 'exit' handler waits for threads still loading. */
const EXIT_WAIT_MS = 5_000;

// The process-wide count. A worker finds its parent's in the environment data (a
// SharedArrayBuffer clones as the same memory); a thread that has none (the main thread, or a
// worker started by code that never loaded this module) makes it and hands it to the workers
// it starts from then on.
const root = ((): Int32Array => {
  const inherited = getEnvironmentData(ENV_KEY);
  if (inherited instanceof SharedArrayBuffer) return new Int32Array(inherited);
  const sab = new SharedArrayBuffer((PARKED + SLOTS) * 4);
  setEnvironmentData(ENV_KEY, sab);
  return new Int32Array(sab);
})();

// The live trackers (weakly: a pool never closed must not be kept alive by this list).
const trackers = new Set<WeakRef<StartupTracker>>();

// Exiting ends every worker thread right after the 'exit' handlers: hold the exit until the
// loads in progress are done. Bounded: a load that hangs must not hang the exit.
if (isMainThread) process.once('exit', () => holdExit(EXIT_WAIT_MS));

/**
 * A spawner's record of which of its threads have finished starting (loaded their modules):
 * pass `shared` to them (workerData) and have each call threadStarted(shared) once loaded;
 * terminate them only once settled() says so. While it lives (until dispose()), the main
 * thread's 'exit' handler waits for its threads too.
 */
export class StartupTracker {
  /** Pass this to the threads (workerData): they call threadStarted() with it. */
  readonly shared = new SharedArrayBuffer((SLOTS + 1) * 4);
  private readonly words = new Int32Array(this.shared);
  private readonly ref = new WeakRef(this);

  /** `threads`: the spawner's live threads, read at each check (a pool's change as it replaces them). */
  constructor(private readonly threads: () => Iterable<Worker>) {
    trackers.add(this.ref);
  }

  /** The threads that are alive, have not finished starting and are not parked (see guardNativeLoad). */
  pending(): Worker[] {
    return [...this.threads()].filter(
      (w) => w.threadId >= 0 && !this.started(w.threadId) && !parked(w.threadId),
    );
  }

  /**
   * Resolves true once every live thread has started (they may then be terminated), false
   * after `timeoutMs` with one still starting. On true, terminate in the same tick: a thread
   * spawned after the check (a replacement) would not be covered. While it waits it keeps the
   * event loop alive, unless `ref` is false (a wait in the background must not hold the process).
   */
  async settled(timeoutMs = 10_000, ref = true): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const marks = Atomics.load(this.words, MARKS);
      if (this.pending().length === 0) return true;
      const left = until - Date.now();
      if (left <= 0) return false;
      // Woken by a mark; the short cap re-reads threads that died while starting (their
      // threadId turns -1 on the event loop). The timer also keeps the event loop alive
      // meanwhile, which a pending Atomics.waitAsync does not do (the workers are unref'd).
      const cap = Math.min(left, 50);
      const wake = Atomics.waitAsync(this.words, MARKS, marks, cap);
      if (wake.async) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          wake.value,
          new Promise((r) => {
            timer = setTimeout(r, cap);
            if (!ref) timer.unref();
          }),
        ]);
        clearTimeout(timer);
      }
    }
  }

  /** Stops the 'exit' handler from waiting for these threads (they are gone). */
  dispose(): void {
    trackers.delete(this.ref);
  }

  private started(id: number): boolean {
    return Atomics.load(this.words, id % SLOTS) === id;
  }
}

/**
 * In a spawned thread: marks it started (its modules, koffi included, are loaded) in its
 * spawner's tracker. Call it at the end of the thread's entry module: its body runs only once
 * the module graph is instantiated, which is where require(esm) aborts on a terminate (not
 * later, in a setImmediate: piscina's workers may block in Atomics.wait for their tasks).
 */
export function threadStarted(shared: SharedArrayBuffer | undefined): void {
  if (!shared) return;
  const words = new Int32Array(shared);
  Atomics.store(words, threadId % SLOTS, threadId);
  Atomics.add(words, MARKS, 1);
  Atomics.notify(words, MARKS);
}

/**
 * Runs `load` (koffi's load, in LinuxPort) counted in the process-wide count. In a worker, once
 * the process is exiting, the load does not start: the thread parks until the exit ends it (so
 * the exit need not wait for it to start). The main thread is never parked (its own 'exit'
 * handlers may still need a port).
 */
export function guardNativeLoad<T>(load: () => T): T {
  Atomics.add(root, LOADING, 1);
  if (!isMainThread && Atomics.load(root, CLOSED) === 1) {
    Atomics.store(root, PARKED + (threadId % SLOTS), threadId); // before leave() wakes the exit handler
    leave();
    park();
  }
  try {
    return load();
  } finally {
    leave();
  }
}

/** Threads of this process in the middle of a koffi load now (diagnostics, tests). */
export function nativeLoadsInProgress(): number {
  return Atomics.load(root, LOADING);
}

/** Threads of the live trackers (this thread's spawners) that have not finished starting. */
export function threadsStarting(): number {
  let n = 0;
  for (const r of trackers) n += r.deref()?.pending().length ?? 0;
  return n;
}

/**
 * Ends a thread that was told to stop by other means (a flag it polls): waits up to
 * `exitWaitMs` for it to exit by itself, then, as a last resort, terminates it once it has
 * started (a thread still starting after the tracker's wait is left alive, and the exit still
 * waits for it: an unref'd live thread costs less than an aborted process).
 */
export async function endThread(worker: Worker, tracker: StartupTracker, exitWaitMs = 5_000): Promise<void> {
  if (worker.threadId >= 0) {
    const exited = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), exitWaitMs);
      worker.once('exit', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!(await exited)) {
      if (!(await tracker.settled())) return;
      await worker.terminate();
    }
  }
  tracker.dispose();
}

// A parked thread waits for its end outside any load: terminating it is safe.
function parked(id: number): boolean {
  return Atomics.load(root, PARKED + (id % SLOTS)) === id;
}

function leave(): void {
  Atomics.sub(root, LOADING, 1);
  Atomics.notify(root, LOADING);
}

// Blocks this thread for good: terminate() wakes Atomics.wait, so the thread still ends promptly.
function park(): never {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (;;) Atomics.wait(cell, 0, 0);
}

// The 'exit' handler: no new koffi load from here on, and wait (synchronously: the event loop
// is gone) for those in progress and for the trackers' threads still starting.
function holdExit(timeoutMs: number): void {
  Atomics.store(root, CLOSED, 1);
  const until = Date.now() + timeoutMs;
  for (;;) {
    const loads = Atomics.load(root, LOADING);
    if (loads === 0 && threadsStarting() === 0) return;
    const left = until - Date.now();
    if (left <= 0) return;
    // A load's end notifies this word; a thread's start is seen at the next look (5 ms).
    Atomics.wait(root, LOADING, loads, Math.min(left, 5));
  }
}
