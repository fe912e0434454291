/**
 * The actor layer of one address space (QEMU's VFIOAddressSpace): live xstate actors of the
 * address space, container and device machines, with every effect supplied here on top of
 * the backends and the DmaPool. Committed transactions run one at a time (concatMap); each
 * container applies its batches in order (the container machine serializes); inside a batch
 * disjoint lanes run in parallel on the pool.
 */
import { Subject, concatMap, from, type Observable, type Subscription } from 'rxjs';
import { createActor, fromPromise, waitFor, type Actor } from 'xstate';
import { HOST_PAGE } from '../backends/common.js';
import type { ContainerBackend as BackendContainer } from '../backends/container.js';
import { vfioDeviceAttach, type VfioDevice } from '../backends/device.js';
import { vfioDiscoverDevice } from '../backends/discovery.js';
import { VfioError, formatRange } from '../backends/errors.js';
import type { VfioHost } from '../backends/host.js';
import { IommufdBackend } from '../backends/iommufd.js';
import { vfioSelectBackend, type IommufdOption } from '../backends/select.js';
import { IntervalMap } from '../common/interval-map.js';
import { addressSpaceMachine, containerMachine, deviceMachine } from '../machines/index.js';
import type { ApplyBatchOutput, ContainerEmitted } from '../machines/container.js';
import type { MachineError } from '../machines/errors.js';
import { packLanes, planTransaction, sectionRequests, type PlannedOp } from '../memory/planner.js';
import type { DmaMapping, MemoryRegionSection, RegionBacking, RegionKind } from '../memory/sections.js';
import { transactions, type ListenerEvent, type Transaction } from '../memory/transaction.js';
import { ERRNO, errnoName } from '../uapi/errno.js';
import type { BatchOp, OpResult } from '../workers/batch.js';
import { applyResults, type DmaPool } from '../workers/pool.js';
import type { EngineEvent } from './events.js';
import type { ActorInspector } from './inspect.js';

/** A memory region as a VMM hands it over (QEMU's MemoryRegionSection); kind defaults to 'ram'. */
export interface MemoryRegion {
  readonly gpa: bigint;
  readonly size: bigint;
  readonly backing: RegionBacking;
  readonly kind?: RegionKind;
  readonly readonly?: boolean;
}

/** What `addDevice` takes: the host device and the backend choice (QEMU's -device vfio-pci,host=…,iommufd=…). */
export interface AddDeviceOptions {
  /** PCI address (0000:00:03.0) or sysfs path. */
  readonly host: string;
  /** 'on', 'off', 'auto' (default) or an iommufd object from engine.createIommufd(). */
  readonly iommufd?: IommufdOption;
  /** Device id; default dev0, dev1, … */
  readonly id?: string;
}

/** An attached device, as `addDevice` resolves. */
export interface DeviceInfo {
  readonly id: string;
  readonly bdf: string;
  readonly backend: 'legacy' | 'iommufd';
  readonly reason: string;
  readonly container: string;
}

/** What the actor layer needs from the engine. */
export interface SpaceEnv {
  readonly host: VfioHost;
  readonly pool: DmaPool;
  readonly emit: (e: EngineEvent) => void;
  readonly nextId: (prefix: string) => string;
  /** xstate's inspection observer, given to every actor (createEngine's `inspector`). */
  readonly inspect?: ActorInspector;
}

/**
 * What a transaction did, as commit() resolves. QEMU's listener commit cannot fail; here the
 * caller learns how it went without watching events$. A transaction never rejects.
 */
export interface CommitResult {
  /** The transaction's id (`<space>/txn<N>`), null when there was nothing to commit. */
  readonly txn: string | null;
  /** False when a container could not apply it: that container failed and was released. */
  readonly ok: boolean;
  /** Mappings made and removed over every container (when ok). */
  readonly mapped: number;
  readonly unmapped: number;
  /** Containers the transaction went to. */
  readonly containers: number;
  /** Milliseconds from dispatch to the last container's answer. */
  readonly ms: number;
  /** The first error (a VfioError naming the operation, the range and the errno) when not ok. */
  readonly error?: Error;
}

const nothingCommitted: CommitResult = { txn: null, ok: true, mapped: 0, unmapped: 0, containers: 0, ms: 0 };

/** A container actor and what the actor layer keeps for it: the backend object and its mapping table. */
interface ContainerRec {
  readonly id: string;
  readonly backend: BackendContainer;
  readonly actor: Actor<typeof containerMachine>;
  /** What the kernel maps for this container (updated from each batch's journal). */
  readonly table: IntervalMap<DmaMapping>;
  /** The first error before initialization (the one a failing attach reports). */
  firstError: unknown;
  readonly listeners: Set<(e: ContainerEmitted | { type: 'stopped' }) => void>;
  /** Copies reading this container's mappings: its batches wait for them. */
  readers: Promise<unknown>[];
  /** Set when the container failed after initialization: settles once its devices are released. */
  released: Promise<void> | null;
}

interface DeviceRec {
  readonly id: string;
  readonly host: string;
  readonly option: IommufdOption;
  readonly actor: Actor<typeof deviceMachine>;
  dev: VfioDevice | null;
  container: ContainerRec | null;
  /** The last error of an operation on the device (the machines keep only its plain form). */
  error: unknown;
}

/** One batch for a container: a committed transaction, or the replay of the current map. */
interface BatchWork {
  readonly txn: Transaction<MemoryRegionSection>;
  /** A replay: may fill by IOAS_COPY from another container of the same iommufd object. */
  readonly replay: boolean;
  /** The error the batch failed with (the machine keeps only its plain form). */
  error?: unknown;
}

const sectionOf = (r: MemoryRegion): MemoryRegionSection => ({
  gpa: r.gpa,
  size: r.size,
  backing: r.backing,
  kind: r.kind ?? 'ram',
  readonly: r.readonly ?? false,
});

const hex = (v: bigint) => `0x${v.toString(16)}`;

/** The engine operation a planned op is, as errors name it. */
const dmaOpName = (o: PlannedOp) => (o.op === 'map' ? 'dma_map' : 'dma_unmap');

function errorOf(e: unknown, fallback: MachineError | null | undefined): Error {
  if (e instanceof Error) return e;
  return new Error(fallback?.message ?? String(e));
}

/** One guest address space: its devices, containers and current memory map. */
export class AddressSpace {
  private readonly actor: Actor<typeof addressSpaceMachine>;
  private readonly containers = new Map<BackendContainer, ContainerRec>();
  private readonly devices = new Map<string, DeviceRec>();
  /** The current memory map (what a new container gets replayed). */
  private readonly regions = new IntervalMap<MemoryRegionSection>();
  private readonly txnIn = new Subject<{
    txn: Transaction<MemoryRegionSection>;
    done: (r: CommitResult) => void;
  }>();
  private readonly txnSub: Subscription;
  private readonly commits = new Map<
    string,
    { txn: Transaction<MemoryRegionSection>; targets: ContainerRec[]; t0: number; error?: unknown }
  >();
  private readonly txnWaiters = new Map<string, (r: CommitResult) => void>();
  private readonly batches = new Map<string, BatchWork>();
  private readonly warned = new Set<string>();
  /** Releases of failed containers in progress (see release()). */
  private readonly releasing = new Set<Promise<void>>();
  private pushed: ListenerEvent<MemoryRegionSection>[] | null = null;
  private seq = 0;
  private last: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    /** The address space's name (QEMU's AddressSpace name). */
    readonly name: string,
    private readonly env: SpaceEnv,
  ) {
    this.actor = createActor(
      addressSpaceMachine.provide({
        actors: {
          commitTransaction: fromPromise(({ input }) => this.commitTransaction(input.txnId)),
          shutdownAddressSpace: fromPromise(async () => {}),
        },
      }),
      { id: name, input: { id: name, name }, inspect: this.env.inspect },
    );
    this.actor.on('*', (e) => {
      if (e.type === 'txn.committed') {
        this.env.emit({
          type: 'txn.committed',
          space: name,
          txn: e.txnId,
          ms: e.ms,
          mapped: e.result.mapped,
          unmapped: e.result.unmapped,
          containers: e.result.containers,
        });
        this.settleTxn(e.txnId, {
          txn: e.txnId,
          ok: true,
          mapped: e.result.mapped,
          unmapped: e.result.unmapped,
          containers: e.result.containers,
          ms: e.ms,
        });
      } else if (e.type === 'txn.failed') {
        this.env.emit({ type: 'txn.failed', space: name, txn: e.txnId, error: e.error });
        const c = this.commits.get(e.txnId);
        this.settleTxn(e.txnId, {
          txn: e.txnId,
          ok: false,
          mapped: 0,
          unmapped: 0,
          containers: c?.targets.length ?? 0,
          ms: c ? performance.now() - c.t0 : 0,
          error: errorOf(c?.error, e.error),
        });
      } else this.env.emit({ type: 'machine', space: name, event: e as never });
    });
    this.actor.start();
    // One transaction at a time: the next COMMIT only after the last settled.
    this.txnSub = this.txnIn
      .pipe(
        concatMap(({ txn, done }) =>
          from(
            this.runTxn(txn).then(done, (e: unknown) =>
              done({ ...nothingCommitted, txn: `${name}/txn${txn.seq}`, ok: false, error: errorOf(e, null) }),
            ),
          ),
        ),
      )
      .subscribe();
  }

  // ---------------------------------------------------------------- memory listener

  /**
   * Feeds MemoryListener events (begin, add, del, commit); each committed transaction is
   * applied to every container. Protocol slips are reported as warnings.
   */
  listen(events$: Observable<ListenerEvent<MemoryRegion>>): Subscription {
    return events$.pipe(transactions<MemoryRegion>()).subscribe({
      next: (ev) => {
        if (ev.type === 'transaction') {
          void this.submit({
            ...ev.transaction,
            ops: ev.transaction.ops.map((o) => ({ type: o.type, region: sectionOf(o.region) })),
          });
        } else {
          this.env.emit({
            type: 'warning',
            space: this.name,
            message: `listener protocol: ${ev.error.reason} at event ${ev.error.at}`,
          });
        }
      },
      error: (err: unknown) =>
        this.env.emit({
          type: 'warning',
          space: this.name,
          message: `listener stream failed: ${String(err)}`,
        }),
    });
  }

  /** MemoryListener.begin */
  begin(): void {
    if (this.pushed)
      this.env.emit({ type: 'warning', space: this.name, message: 'begin inside a transaction' });
    this.pushed ??= [];
  }
  /** MemoryListener.region_add */
  regionAdd(region: MemoryRegion): void {
    this.push('add', region);
  }
  /** MemoryListener.region_del */
  regionDel(region: MemoryRegion): void {
    this.push('del', region);
  }
  /**
   * MemoryListener.commit; resolves when the transaction is applied to every container (a
   * container it failed has released its devices by then).
   */
  commit(): Promise<CommitResult> {
    const ops = this.pushed;
    this.pushed = null;
    if (!ops) {
      this.env.emit({ type: 'warning', space: this.name, message: 'commit without begin' });
      return this.flush().then(() => nothingCommitted);
    }
    if (ops.length === 0) return this.flush().then(() => nothingCommitted);
    return this.submit({
      seq: this.seq++,
      ops: ops.map((o) => ({
        type: o.type as 'add' | 'del',
        region: (o as { region: MemoryRegionSection }).region,
      })),
      implicit: false,
    });
  }

  /** Resolves when every transaction submitted so far is applied and every failed container released. */
  async flush(): Promise<void> {
    await this.last;
    await Promise.all(this.releasing);
  }

  private push(type: 'add' | 'del', region: MemoryRegion): void {
    const s = sectionOf(region);
    if (this.pushed) this.pushed.push({ type, region: s });
    else void this.submit({ seq: this.seq++, ops: [{ type, region: s }], implicit: true });
  }

  private submit(txn: Transaction<MemoryRegionSection>): Promise<CommitResult> {
    if (this.closed) return Promise.reject(new Error(`address space '${this.name}' is shut down`));
    const p = new Promise<CommitResult>((done) => this.txnIn.next({ txn, done }));
    this.last = p.then(() => undefined);
    return p;
  }

  private runTxn(txn: Transaction<MemoryRegionSection>): Promise<CommitResult> {
    const txnId = `${this.name}/txn${txn.seq}`;
    // The map changes now: a container created from here on gets it in its replay.
    this.applyToRegions(txn);
    const targets = [...this.containers.values()].filter((c) => this.accepts(c));
    this.commits.set(txnId, { txn, targets, t0: performance.now() });
    return new Promise<CommitResult>((resolve) => {
      this.txnWaiters.set(txnId, resolve);
      this.actor.send({ type: 'COMMIT', txnId, ops: txn.ops.length });
    });
  }

  private settleTxn(txnId: string, result: CommitResult): void {
    this.commits.delete(txnId);
    const w = this.txnWaiters.get(txnId);
    this.txnWaiters.delete(txnId);
    w?.(result);
  }

  /** Whether a container can take a batch (not failed, tearing down or gone). */
  private accepts(c: ContainerRec): boolean {
    const s = c.actor.getSnapshot();
    return s.status === 'active' && !s.context.failed && !s.matches('tearingDown');
  }

  private applyToRegions(txn: Transaction<MemoryRegionSection>): void {
    for (const { type, region: r } of txn.ops) {
      const start = r.gpa;
      const end = r.gpa + r.size;
      if (type === 'add') {
        if (this.regions.firstOverlap(start, end)) {
          this.env.emit({
            type: 'warning',
            space: this.name,
            message: `region_add [${hex(start)}, ${hex(end)}) overlaps a live region`,
          });
        } else if (r.size > 0n) this.regions.insert(start, end, r);
        continue;
      }
      for (const m of [...this.regions.overlapping(start, end)]) {
        this.regions.remove(m.start);
        const keep = (s: bigint, e: bigint) => {
          const d = s - m.start;
          const b = m.value.backing;
          const backing =
            'fd' in b ? { ...b, vaddr: b.vaddr + d, offset: b.offset + d } : { vaddr: b.vaddr + d };
          this.regions.insert(s, e, { ...m.value, gpa: s, size: e - s, backing });
        };
        if (m.start < start) keep(m.start, start);
        if (m.end > end) keep(end, m.end);
      }
    }
  }

  /** The current memory map, in guest-physical order. */
  memoryMap(): MemoryRegionSection[] {
    return [...this.regions].map((r) => r.value);
  }

  // ---------------------------------------------------------------- transactions → containers

  private async commitTransaction(txnId: string) {
    const c = this.commits.get(txnId)!;
    const settled = await Promise.allSettled(
      c.targets.map((rec) => this.dispatch(rec, { txn: c.txn, replay: false })),
    );
    let mapped = 0;
    let unmapped = 0;
    const failures: unknown[] = [];
    for (const s of settled) {
      if (s.status === 'fulfilled') {
        mapped += s.value.mapped;
        unmapped += s.value.unmapped;
      } else failures.push(s.reason);
    }
    // A container this transaction failed releases its devices before the transaction settles.
    await Promise.all(c.targets.map((t) => t.released));
    if (failures.length) {
      c.error = failures[0]; // the original (typed) error, for commit()'s result
      throw failures[0];
    }
    return { ms: performance.now() - c.t0, mapped, unmapped, containers: c.targets.length };
  }

  /** Sends one APPLY to a container and waits for its outcome (a container that goes away applies nothing). */
  private dispatch(rec: ContainerRec, work: BatchWork): Promise<ApplyBatchOutput> {
    const batchId = this.env.nextId(`${rec.id}/batch`);
    this.batches.set(batchId, work);
    const p = this.awaitContainer<ApplyBatchOutput>(rec, (e, ok, fail) => {
      if (e.type === 'batch.applied' && e.batchId === batchId) ok(e.result);
      else if (e.type === 'batch.failed' && e.batchId === batchId) fail(errorOf(work.error, e.error));
      else if (e.type === 'container.rejected' && e.batchId === batchId) {
        // Work still queued when the container failed (its fd lost, say) fails with its errno.
        const first = work.txn.ops[0];
        fail(
          new VfioError({
            op: first?.type === 'del' ? 'dma_unmap' : 'dma_map',
            iova: first?.region.gpa,
            size: first?.region.size,
            errno: this.failureErrno(rec, e),
            target: rec.backend.describe(),
            detail: `not applied: ${rec.id} rejected it (${e.reason})`,
          }),
        );
      } else if (e.type === 'stopped') ok({ applied: 0, mapped: 0, unmapped: 0 });
    });
    rec.actor.send({ type: 'APPLY', batchId, ops: work.txn.ops.length });
    return p.finally(() => this.batches.delete(batchId));
  }

  /** The errno a failed container failed with, when it is what rejected an event. */
  private failureErrno(rec: ContainerRec, e: { state: string }): number | undefined {
    return e.state === 'failed' ? rec.actor.getSnapshot().context.lastError?.errno : undefined;
  }

  private awaitContainer<T>(
    rec: ContainerRec,
    on: (e: ContainerEmitted | { type: 'stopped' }, ok: (v: T) => void, fail: (e: unknown) => void) => void,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const l = (e: ContainerEmitted | { type: 'stopped' }) =>
        on(
          e,
          (v) => {
            rec.listeners.delete(l);
            resolve(v);
          },
          (err) => {
            rec.listeners.delete(l);
            reject(err);
          },
        );
      rec.listeners.add(l);
      if (rec.actor.getSnapshot().status !== 'active') l({ type: 'stopped' });
    });
  }

  /** applyBatch: plan against the container's table, run on the pool, apply the journal's results. */
  private async applyBatch(rec: ContainerRec, batchId: string): Promise<ApplyBatchOutput> {
    const work = this.batches.get(batchId);
    if (!work) return { applied: 0, mapped: 0, unmapped: 0 };
    await Promise.allSettled(rec.readers);
    const b = rec.backend;
    const pg = b.info.pgsizes & -b.info.pgsizes;
    const req = sectionRequests(work.txn, HOST_PAGE, {
      minIommuPageSize: pg > 0n ? pg : HOST_PAGE,
      iovaRanges: b.info.iovaRanges.length ? b.info.iovaRanges : undefined,
    });
    const errors: unknown[] = req.rejected.map(
      (r) => new VfioError({ op: 'dma_map', target: b.describe(), detail: r.message }),
    );
    const plan = planTransaction(req.requests, rec.table);
    for (const r of plan.refused) {
      if (r.reason !== 'overlap') continue;
      const m = req.requests[r.source]!;
      const iova = m.type === 'map' ? m.mapping.iova : m.iova;
      const size = m.type === 'map' ? m.mapping.size : m.size;
      errors.push(
        new VfioError({ op: 'dma_map', iova, size, target: b.describe(), detail: 'overlaps a live mapping' }),
      );
    }
    let copied = 0;
    const t0 = performance.now();
    const copyFrom = work.replay ? this.copySource(rec) : null;
    const source = copyFrom?.rec ?? null;
    let ops = plan.ops;
    let results: OpResult[];
    // Reliability row 23: no batch goes to an fd that is no longer the file the backend opened.
    const lost = b.fdUsable() ? null : b.lost;
    if (lost) {
      const o = plan.ops[0];
      errors.unshift(
        o
          ? new VfioError({
              op: dmaOpName(o),
              iova: o.iova,
              size: o.size,
              errno: lost.errno,
              target: b.describe(),
              detail: lost.detail,
              cause: lost,
            })
          : lost,
      );
      ops = [];
      results = [];
    } else if (source) {
      // IOAS_COPY what the source maps identically; map the rest from host addresses.
      const same = (o: (typeof ops)[number]) => {
        if (o.op !== 'map') return false;
        const m = source.table.get(o.iova);
        return (
          !!m && m.end - m.start === o.size && m.value.vaddr === o.vaddr && m.value.readonly === o.readonly
        );
      };
      const copies = ops.filter(same);
      const maps = ops.filter((o) => !same(o));
      const srcIoas = copyFrom!.ioasId;
      // One lane per op (all disjoint), packed over the workers; results come back by index.
      const runAll = async (list: typeof ops, copy: boolean): Promise<OpResult[]> => {
        const idx = packLanes(
          list.map((_, i) => [i]),
          this.env.pool.threads,
        );
        const out: OpResult[] = new Array(list.length);
        await Promise.all(
          idx.map(async (lanes) => {
            const batch = lanes.map((l) =>
              l.map((i): BatchOp => {
                const o = list[i]!;
                return copy
                  ? {
                      op: 'copy',
                      iova: o.iova,
                      size: o.size,
                      srcIoas,
                      readonly: o.op === 'map' && o.readonly,
                    }
                  : o;
              }),
            );
            const r = await this.env.pool.run(b.dataplaneTarget(), batch);
            if (r.crash !== undefined) errors.push(r.crash);
            let k = 0;
            for (const l of lanes) for (const i of l) out[i] = r.results[k++]!;
          }),
        );
        return out;
      };
      const reading = runAll(copies, true);
      source.readers.push(reading);
      const [c, m] = await Promise.all([reading, runAll(maps, false)]).finally(() => {
        source.readers = source.readers.filter((r) => r !== reading);
      });
      ops = [...copies, ...maps];
      results = [...c, ...m];
      copied = copies.length;
    } else {
      const r = await this.env.pool.runPlan(b.dataplaneTarget(), plan);
      results = r.results;
      errors.push(...r.crashes);
    }
    applyResults(rec.table, ops, results);
    let mapped = 0;
    let unmapped = 0;
    ops.forEach((o, i) => {
      const r = results[i]!;
      if (r.status === 'done') {
        if (o.op === 'map') mapped++;
        else unmapped++;
        return;
      }
      if (r.status !== 'failed') return;
      const what = `${o.op} ${formatRange(o.iova, o.size)}: ${errnoName(r.errno)}`;
      if (o.op === 'map' && o.nonFatal) {
        // QEMU: a RAM device (p2p BAR) that cannot be mapped is a warning, once.
        const key = `${rec.id}:${o.iova}`;
        if (!this.warned.has(key)) {
          this.warned.add(key);
          this.env.emit({
            type: 'warning',
            space: this.name,
            container: rec.id,
            message: `ram_device ${what} on ${b.describe()}: p2p to this region will not work`,
          });
        }
        return;
      }
      errors.push(
        new VfioError({ op: dmaOpName(o), iova: o.iova, size: o.size, errno: r.errno, target: b.describe() }),
      );
    });
    // An op answered EBADF: the fd was closed behind the engine (the executor stopped there).
    const badf = errors.findIndex((e) => e instanceof VfioError && e.errno === ERRNO.EBADF);
    if (badf >= 0) {
      b.markLost(errors[badf]);
      errors.unshift(...errors.splice(badf, 1)); // the error the container fails with
    }
    if (work.replay) {
      this.env.emit({
        type: 'container.replayed',
        space: this.name,
        container: rec.id,
        mapped: mapped - copied,
        copied,
        ms: performance.now() - t0,
      });
    }
    if (errors.length) {
      if (!rec.actor.getSnapshot().context.initialized && rec.firstError === undefined)
        rec.firstError = errors[0];
      work.error = errors[0];
      throw errors[0];
    }
    return { applied: mapped + unmapped, mapped, unmapped };
  }

  /** An idle, initialized container to IOAS_COPY a replay from, with its IOAS id. */
  private copySource(rec: ContainerRec): { rec: ContainerRec; ioasId: number } | null {
    for (const c of this.containers.values()) {
      if (c === rec) continue;
      const ioasId = rec.backend.copySourceIoas(c.backend);
      if (ioasId === null) continue;
      const s = c.actor.getSnapshot();
      if (s.status === 'active' && s.matches('ready') && s.context.initialized && !s.context.failed)
        return { rec: c, ioasId };
    }
    return null;
  }

  // ---------------------------------------------------------------- containers

  private containerFor(backend: BackendContainer): { rec: ContainerRec; created: boolean } {
    const existing = this.containers.get(backend);
    if (existing && existing.actor.getSnapshot().status === 'active')
      return { rec: existing, created: false };
    const id = this.env.nextId('container');
    const listeners = new Set<(e: ContainerEmitted | { type: 'stopped' }) => void>();
    const rec: ContainerRec = {
      id,
      backend,
      table: new IntervalMap<DmaMapping>(),
      firstError: undefined,
      listeners,
      readers: [],
      released: null,
      actor: createActor(
        containerMachine.provide({
          actors: {
            setupContainer: fromPromise(async () => {}),
            // vfioDeviceAttach already attached the device in the kernel.
            attachToContainer: fromPromise(async () => {}),
            detachFromContainer: fromPromise(async ({ input }) =>
              this.detachFromContainer(rec, input.deviceId!),
            ),
            applyBatch: fromPromise(({ input }) => this.applyBatch(rec, input.batchId)),
            teardownContainer: fromPromise(async () => this.teardown(rec)),
          },
        }),
        { id, input: { id, addressSpaceId: this.name, backend: backend.kind }, inspect: this.env.inspect },
      ),
    };
    rec.actor.on('*', (e: ContainerEmitted) => {
      this.forwardContainer(rec, e);
      for (const l of [...listeners]) l(e);
    });
    rec.actor.subscribe({
      complete: () => {
        this.containers.delete(backend);
        if (this.actor.getSnapshot().status === 'active')
          this.actor.send({ type: 'CONTAINER_REMOVED', containerId: id });
        this.env.emit({ type: 'container.destroyed', space: this.name, container: id });
        for (const l of [...listeners]) l({ type: 'stopped' });
      },
    });
    this.containers.set(backend, rec);
    rec.actor.start();
    this.actor.send({ type: 'CONTAINER_ADDED', containerId: id });
    this.env.emit({
      type: 'container.created',
      space: this.name,
      container: id,
      backend: backend.kind,
      target: backend.describe(),
    });
    return { rec, created: true };
  }

  private forwardContainer(rec: ContainerRec, e: ContainerEmitted): void {
    switch (e.type) {
      case 'container.initialized':
        this.env.emit({ type: 'container.initialized', space: this.name, container: rec.id });
        return;
      case 'container.failed':
        this.env.emit({
          type: 'container.failed',
          space: this.name,
          container: rec.id,
          phase: e.phase,
          error: e.error,
        });
        // A failed setup or init fails the attach in progress, which cleans up (attachDevice).
        if (e.phase !== 'setup' && e.phase !== 'init' && !rec.released) {
          const p = this.release(rec, e.error);
          rec.released = p;
          this.releasing.add(p);
          void p.finally(() => this.releasing.delete(p));
        }
        return;
      case 'batch.failed':
        this.env.emit({
          type: 'batch.failed',
          space: this.name,
          container: rec.id,
          batch: e.batchId,
          error: e.error,
        });
        return;
      // The device's own events report these ('device.attached', 'device.failed', ...).
      case 'batch.applied':
      case 'container.deviceAttached':
      case 'container.deviceDetached':
      case 'container.deviceDetachFailed':
        return;
      default:
        this.env.emit({ type: 'machine', space: this.name, event: e as never });
    }
  }

  /**
   * A container that failed after initialization can no longer follow the memory map (it takes
   * no more batches), so keeping its devices attached would leave them DMA access to memory the
   * guest map has dropped since. Its devices fail ('device.failed' with the container's error),
   * close and detach; the last one out tears the container down (unmap all, fds closed), and the
   * kernel then holds nothing for it, as its table says. The device records stay, closed, until
   * removeDevice().
   */
  private async release(rec: ContainerRec, error: MachineError): Promise<void> {
    const devices = [...this.devices.values()].filter((d) => d.container === rec);
    for (const d of devices) {
      const s = d.actor.getSnapshot();
      if (s.status === 'active' && !s.matches('failed') && !s.matches('closing'))
        d.actor.send({ type: 'CONTAINER_FAILED', containerId: rec.id, error });
      this.requestClose(d);
    }
    await Promise.allSettled(devices.map((d) => waitFor(d.actor, (s) => s.status === 'done')));
    // A device whose detach failed is still listed: nothing more can be done for it.
    if (rec.actor.getSnapshot().status === 'active') rec.actor.send({ type: 'TEARDOWN' });
    await waitFor(rec.actor, (s) => s.status === 'done').catch((e: unknown) =>
      this.env.emit({
        type: 'warning',
        space: this.name,
        container: rec.id,
        message: `release: ${String(e)}`,
      }),
    );
  }

  private detachFromContainer(rec: ContainerRec, deviceId: string): void {
    const d = this.devices.get(deviceId);
    try {
      this.detachKernel(rec, d);
    } catch (e) {
      if (d) d.error = e;
      throw e;
    }
  }

  private detachKernel(rec: ContainerRec, d: DeviceRec | undefined): void {
    const dev = d?.dev;
    if (!dev || !dev.attached) return;
    // The last device: unmap everything first, so the table and the kernel agree to the end. With
    // the fd lost nothing may go to it; the kernel drops the mappings as the device closes.
    if (rec.backend.devices.length === 1 && rec.backend.devices[0] === dev && rec.backend.fdUsable()) {
      try {
        rec.backend.dmaUnmap(0n, 0n, { unmapAll: true });
        rec.table.clear();
      } catch (e) {
        this.env.emit({
          type: 'warning',
          space: this.name,
          container: rec.id,
          message: `unmap all: ${String(e)}`,
        });
      }
    }
    dev.close();
    if (rec.backend.destroyed) rec.table.clear();
  }

  private teardown(rec: ContainerRec): void {
    try {
      if (!rec.backend.destroyed) rec.backend.destroy();
    } finally {
      rec.table.clear();
    }
  }

  // ---------------------------------------------------------------- devices

  /**
   * Hot-plugs a device: picks its backend, opens it, attaches it to a container of this
   * address space (sharing one where the kernel allows) and, for a new container, replays
   * the current map into it (by IOAS_COPY from a sibling IOAS where possible). Rejects with
   * the first error (a VfioError) if any step fails; nothing is left behind then.
   */
  async addDevice(opts: AddDeviceOptions): Promise<DeviceInfo> {
    if (this.closed) throw new Error(`address space '${this.name}' is shut down`);
    const id = opts.id ?? this.env.nextId('dev');
    if (this.devices.has(id)) throw new Error(`device id '${id}' is in use`);
    const option = opts.iommufd ?? 'auto';
    const rec: DeviceRec = {
      id,
      host: opts.host,
      option,
      dev: null,
      container: null,
      error: undefined,
      actor: createActor(
        deviceMachine.provide({
          actors: {
            openDevice: fromPromise(async () => this.openDevice(rec)),
            attachDevice: fromPromise(() => this.attachDevice(rec)),
            resetDevice: fromPromise(async () => rec.dev?.reset()),
            detachDevice: fromPromise(() => this.detachDevice(rec)),
            closeDevice: fromPromise(() => this.closeDevice(rec)),
          },
        }),
        {
          id,
          input: { id, host: opts.host, iommufd: option instanceof IommufdBackend ? option.id : option },
          inspect: this.env.inspect,
        },
      ),
    };
    rec.actor.on('*', (e) => {
      if (e.type === 'backend.selected') {
        this.env.emit({
          type: 'backend.selected',
          space: this.name,
          device: id,
          host: opts.host,
          backend: e.backend,
          reason: e.reason,
        });
      } else if (e.type === 'device.failed') {
        this.env.emit({ type: 'device.failed', space: this.name, device: id, error: e.error });
      } else this.env.emit({ type: 'machine', space: this.name, event: e as never });
    });
    this.devices.set(id, rec);
    rec.actor.start();
    this.actor.send({ type: 'DEVICE_ADDED', deviceId: id });
    rec.actor.send({ type: 'OPEN' });
    let snap = await waitFor(
      rec.actor,
      (s) => s.matches('bound') || s.matches('failed') || s.status === 'done',
    );
    if (snap.matches('bound')) {
      rec.actor.send({ type: 'ATTACH' });
      snap = await waitFor(
        rec.actor,
        (s) => s.matches('attached') || s.matches('failed') || s.status === 'done',
      );
    }
    if (snap.matches('attached')) {
      const info: DeviceInfo = {
        id,
        bdf: rec.dev!.bdf,
        backend: rec.dev!.backend,
        reason: rec.dev!.reason,
        container: rec.container!.id,
      };
      this.env.emit({
        type: 'device.attached',
        space: this.name,
        device: id,
        host: opts.host,
        container: info.container,
      });
      return info;
    }
    const err = errorOf(rec.error, snap.context.error);
    await this.removeDevice(id);
    throw err;
  }

  private openDevice(rec: DeviceRec) {
    try {
      const loc = vfioDiscoverDevice(this.env.host.port, rec.host);
      const choice = vfioSelectBackend(this.env.host, loc, rec.option);
      return { backend: choice.kind, reason: choice.reason };
    } catch (e) {
      rec.error = e;
      throw e;
    }
  }

  private async attachDevice(rec: DeviceRec): Promise<{ containerId: string }> {
    let dev: VfioDevice;
    try {
      dev = vfioDeviceAttach(this.env.host, rec.host, { space: this.name, iommufd: rec.option });
    } catch (e) {
      rec.error = e;
      throw e;
    }
    rec.dev = dev;
    const { rec: c, created } = this.containerFor(dev.container!);
    rec.container = c;
    const outcome = this.awaitContainer<void>(c, (e, ok, fail) => {
      if (
        created
          ? e.type === 'container.initialized'
          : e.type === 'container.deviceAttached' && e.deviceId === rec.id
      )
        ok();
      else if (e.type === 'container.failed') fail(errorOf(c.firstError, e.error));
      else if (e.type === 'container.deviceAttachFailed' && e.deviceId === rec.id)
        fail(errorOf(undefined, e.error));
      else if (e.type === 'container.rejected' && e.deviceId === rec.id)
        fail(
          new VfioError({
            op: 'attach_device',
            device: dev.bdf,
            target: dev.container?.describe(),
            errno: this.failureErrno(c, e),
            detail: e.reason,
          }),
        );
      else if (e.type === 'stopped') fail(new Error(`${c.id} went away during the attach`));
    });
    c.actor.send({ type: 'ATTACH', deviceId: rec.id });
    // The replay of the current map initializes a new container (even when empty).
    if (created) void this.dispatch(c, { txn: this.replayTxn(), replay: true }).catch(() => {});
    try {
      await outcome;
      return { containerId: c.id };
    } catch (e) {
      rec.error = e;
      await this.leave(rec);
      throw e;
    }
  }

  private replayTxn(): Transaction<MemoryRegionSection> {
    return { seq: -1, ops: this.memoryMap().map((region) => ({ type: 'add', region })), implicit: false };
  }

  /** Takes the device out of its container (DETACH through the container actor), or closes it directly. */
  private async leave(rec: DeviceRec): Promise<void> {
    const c = rec.container;
    const dev = rec.dev;
    if (!c || !dev) return;
    const snap = c.actor.getSnapshot();
    if (snap.status === 'active' && snap.context.devices.includes(rec.id)) {
      const done = this.awaitContainer<void>(c, (e, ok, fail) => {
        if (e.type === 'container.deviceDetached' && e.deviceId === rec.id) ok();
        else if (e.type === 'container.deviceDetachFailed' && e.deviceId === rec.id)
          fail(errorOf(rec.error, e.error));
        else if (e.type === 'container.rejected' && e.deviceId === rec.id) fail(new Error(e.reason));
        else if (e.type === 'stopped') ok();
      });
      c.actor.send({ type: 'DETACH', deviceId: rec.id });
      try {
        await done;
      } finally {
        // the machine's detach ran dev.close() (or the container went away)
        if (dev.attached) dev.close();
      }
    } else if (dev.attached) {
      dev.close();
      if (c.backend.destroyed && c.actor.getSnapshot().status === 'active')
        c.actor.send({ type: 'TEARDOWN' });
    }
    rec.container = null;
  }

  private async detachDevice(rec: DeviceRec): Promise<void> {
    try {
      await this.leave(rec);
    } catch (e) {
      rec.error = e;
      throw e;
    }
  }

  private async closeDevice(rec: DeviceRec): Promise<void> {
    await this.leave(rec);
    rec.dev = null;
  }

  /**
   * Hot-unplugs a device, at any time (also while a transaction is in flight: the detach
   * waits for the container's batch), or forgets one its failed container released. Resolves
   * when the device is closed.
   */
  async removeDevice(id: string): Promise<void> {
    const rec = this.devices.get(id);
    if (!rec) throw new Error(`no device '${id}' in address space '${this.name}'`);
    this.requestClose(rec);
    await waitFor(rec.actor, (s) => s.status === 'done');
    this.devices.delete(id);
    if (this.actor.getSnapshot().status === 'active')
      this.actor.send({ type: 'DEVICE_REMOVED', deviceId: id });
    this.env.emit({ type: 'device.removed', space: this.name, device: id });
  }

  /** Sends CLOSE unless the device is closing or closed already. */
  private requestClose(rec: DeviceRec): void {
    const s = rec.actor.getSnapshot();
    if (s.status === 'active' && !s.matches('closing')) rec.actor.send({ type: 'CLOSE' });
  }

  // ---------------------------------------------------------------- queries and shutdown

  /** Each container's mapping table (or one container's), in IOVA order. */
  mappings(containerId?: string): Record<string, DmaMapping[]> {
    const out: Record<string, DmaMapping[]> = {};
    for (const c of this.containers.values()) {
      if (containerId !== undefined && c.id !== containerId) continue;
      out[c.id] = [...c.table].map((m) => m.value);
    }
    return out;
  }

  /** The backend object behind a container (tests and tools probe the kernel through it). */
  containerBackend(containerId: string): BackendContainer | undefined {
    for (const c of this.containers.values()) if (c.id === containerId) return c.backend;
    return undefined;
  }

  /** Every actor's state value and key context. */
  state() {
    const s = this.actor.getSnapshot();
    return {
      state: s.value,
      txns: s.context.txns,
      regions: this.regions.size,
      containers: [...this.containers.values()].map((c) => {
        const cs = c.actor.getSnapshot();
        return {
          id: c.id,
          backend: c.backend.kind,
          target: c.backend.describe(),
          state: cs.value,
          initialized: cs.context.initialized,
          devices: cs.context.devices,
          mappings: c.table.size,
          error: cs.context.lastError,
        };
      }),
      devices: [...this.devices.values()].map((d) => {
        const ds = d.actor.getSnapshot();
        return {
          id: d.id,
          host: d.host,
          state: ds.value,
          backend: ds.context.backend,
          reason: ds.context.reason,
          container: d.container?.id ?? null,
          error: ds.context.error,
        };
      }),
    };
  }

  /** Orderly shutdown: waits for the transactions, removes every device (their containers go with the last), stops the actor. */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    await Promise.allSettled([...this.devices.keys()].map((id) => this.removeDevice(id)));
    for (const c of [...this.containers.values()]) {
      if (c.actor.getSnapshot().status === 'active') c.actor.send({ type: 'TEARDOWN' });
      await waitFor(c.actor, (s) => s.status === 'done').catch(() => {});
    }
    this.actor.send({ type: 'SHUTDOWN' });
    await waitFor(this.actor, (s) => s.status === 'done');
    this.txnSub.unsubscribe();
    this.txnIn.complete();
  }
}
