/**
 * The planner: one committed transaction + one container's mapping table → the kernel
 * ops to issue, grouped into lanes that may run in parallel, and the table expected
 * afterwards. This is the series' "add locks" TODO done by construction: ops whose
 * ranges overlap share a lane and keep transaction order; lanes never overlap, so two
 * workers never touch the same area (the kernel answers EBUSY to racing map/unmap).
 *
 * Unmaps cut only at existing mapping boundaries: both kernels refuse to split an area
 * (iommufd ENOENT, type1 v2 EINVAL). A del covering part of a mapping unmaps the whole
 * mapping and re-maps what remains outside the del (QEMU avoids this by mapping per
 * section, so the memory core deletes whole sections; the engine gets the same result
 * for whole-section dels, and stays correct for partial ones at the cost of a window
 * where the remainder is unmapped).
 */
import { IntervalMap, type Interval } from '../common/interval-map.js';
import type { Transaction } from './transaction.js';
import {
  sectionToMapping,
  type DmaMapping,
  type MemoryRegionSection,
  type SectionLimits,
} from './sections.js';

/** A DMA request after the section rules: map a mapping, or unmap a range. */
export type DmaRequest =
  | { readonly type: 'map'; readonly mapping: DmaMapping; readonly nonFatal?: boolean }
  | { readonly type: 'unmap'; readonly iova: bigint; readonly size: bigint };

/** A kernel op of a plan; `source` is the index of the request it comes from. */
export type PlannedOp =
  | {
      readonly op: 'map';
      readonly iova: bigint;
      readonly size: bigint;
      readonly vaddr: bigint;
      readonly readonly: boolean;
      /** A RAM-device map: its failure is a warning, not fatal. */
      readonly nonFatal: boolean;
      readonly source: number;
    }
  | { readonly op: 'unmap'; readonly iova: bigint; readonly size: bigint; readonly source: number };

/** A request the planner refuses without asking the kernel. */
export interface RefusedRequest {
  readonly source: number;
  /** overlap: a map over a live mapping (the kernel would answer EEXIST); empty: size 0. */
  readonly reason: 'overlap' | 'empty';
}

/** The plan of one transaction on one container. */
export interface Plan {
  /** Every kernel op, in transaction order. */
  readonly ops: readonly PlannedOp[];
  /**
   * The ops split into lanes: within a lane, in transaction order; across lanes, op
   * ranges are disjoint, so lanes may run concurrently in any interleaving.
   */
  readonly lanes: readonly (readonly PlannedOp[])[];
  readonly refused: readonly RefusedRequest[];
}

/** Result of applying the section rules to a transaction's ops. */
export interface SectionRequests {
  readonly requests: DmaRequest[];
  /** Transaction op index → the skip or rejection the section rules gave. */
  readonly skipped: { index: number; reason: string }[];
  readonly rejected: { index: number; reason: string; message: string }[];
}

/** Applies sectionToMapping to each op of a transaction: adds become maps, dels unmaps. */
export function sectionRequests(
  txn: Transaction<MemoryRegionSection>,
  hostPageSize: bigint,
  limits: SectionLimits = {},
): SectionRequests {
  const out: SectionRequests = { requests: [], skipped: [], rejected: [] };
  txn.ops.forEach((op, index) => {
    const d = sectionToMapping(op.region, hostPageSize, limits);
    if (d.action === 'skip') out.skipped.push({ index, reason: d.reason });
    else if (d.action === 'reject') out.rejected.push({ index, reason: d.reason, message: d.message });
    else if (op.type === 'add') out.requests.push({ type: 'map', mapping: d.mapping, nonFatal: d.nonFatal });
    else out.requests.push({ type: 'unmap', iova: d.mapping.iova, size: d.mapping.size });
  });
  return out;
}

/**
 * The table as a transaction's earlier requests leave it, without copying it: the live
 * table, less the mappings they removed, plus the ones they inserted. Each query costs
 * O(log n) on the live table plus the transaction's own changes it meets, so a transaction
 * of k requests is planned in O(k log n) whatever the table holds.
 */
class TableOverlay {
  /** Starts of live mappings the transaction removed. */
  private readonly removed = new Set<bigint>();
  /** Mappings the transaction inserted. */
  private readonly added = new IntervalMap<DmaMapping>();

  constructor(private readonly live: IntervalMap<DmaMapping>) {}

  /** Whether anything overlaps [start, end). */
  overlaps(start: bigint, end: bigint): boolean {
    if (this.added.firstOverlap(start, end)) return true;
    for (const m of this.live.overlapping(start, end)) if (!this.removed.has(m.start)) return true;
    return false;
  }

  /** The mappings overlapping [start, end), in address order. */
  overlapping(start: bigint, end: bigint): Interval<DmaMapping>[] {
    const out: Interval<DmaMapping>[] = [];
    for (const m of this.live.overlapping(start, end)) if (!this.removed.has(m.start)) out.push(m);
    const added = [...this.added.overlapping(start, end)];
    if (!added.length) return out;
    return [...out, ...added].sort((a, b) => (a.start < b.start ? -1 : 1));
  }

  remove(start: bigint): void {
    if (!this.added.remove(start)) this.removed.add(start);
  }

  insert(start: bigint, end: bigint, m: DmaMapping): void {
    this.added.insert(start, end, m);
  }
}

/**
 * Plans `requests` (one transaction, in order) against `table`, the container's current
 * mappings, which it does not change. Maps over live mappings are refused (no replace in
 * either kernel); unmaps remove every mapping they touch, whole, and re-map the parts outside
 * the range. O(k log n) for k requests on a table of n mappings.
 */
export function planTransaction(requests: readonly DmaRequest[], table: IntervalMap<DmaMapping>): Plan {
  if (sortedDisjointMaps(requests)) return planSortedMaps(requests, table);
  const work = new TableOverlay(table);
  const ops: PlannedOp[] = [];
  const refused: RefusedRequest[] = [];
  requests.forEach((r, source) => {
    if (r.type === 'map') {
      const m = r.mapping;
      if (m.size <= 0n) return void refused.push({ source, reason: 'empty' });
      if (work.overlaps(m.iova, m.iova + m.size)) return void refused.push({ source, reason: 'overlap' });
      work.insert(m.iova, m.iova + m.size, m);
      ops.push({ op: 'map', ...m, nonFatal: r.nonFatal ?? false, source });
      return;
    }
    if (r.size <= 0n) return void refused.push({ source, reason: 'empty' });
    const start = r.iova;
    const end = r.iova + r.size;
    const remainders: DmaMapping[] = [];
    for (const { start: ms, end: me, value: m } of work.overlapping(start, end)) {
      work.remove(ms);
      ops.push({ op: 'unmap', iova: ms, size: me - ms, source });
      if (ms < start) remainders.push({ iova: ms, size: start - ms, vaddr: m.vaddr, readonly: m.readonly });
      if (me > end)
        remainders.push({ iova: end, size: me - end, vaddr: m.vaddr + (end - ms), readonly: m.readonly });
    }
    for (const m of remainders) {
      work.insert(m.iova, m.iova + m.size, m);
      ops.push({ op: 'map', ...m, nonFatal: false, source });
    }
  });
  return { ops, lanes: splitLanes(ops), refused };
}

/**
 * The table `plan` leaves when every op succeeds: a copy of `table` (as it was planned
 * against) with the ops applied in order. O(n); for checks against the kernel, not the
 * data path (which applies what the kernel answered, applyOp).
 */
export function planResult(table: IntervalMap<DmaMapping>, plan: Plan): IntervalMap<DmaMapping> {
  const out = new IntervalMap<DmaMapping>();
  for (const m of table) out.insert(m.start, m.end, m.value);
  for (const o of plan.ops) applyOp(out, o);
  return out;
}

/** Whether every request maps, in IOVA order, none overlapping the next (a bulk add, a boot map). */
function sortedDisjointMaps(requests: readonly DmaRequest[]): boolean {
  let end = 0n;
  for (const r of requests) {
    if (r.type !== 'map' || r.mapping.size <= 0n || r.mapping.iova < end) return false;
    end = r.mapping.iova + r.mapping.size;
  }
  return true;
}

/**
 * The fast path of planTransaction for sorted, disjoint maps: none can meet another, so each
 * is checked against the live table alone, and each is a lane of its own.
 */
function planSortedMaps(requests: readonly DmaRequest[], table: IntervalMap<DmaMapping>): Plan {
  const ops: PlannedOp[] = [];
  const refused: RefusedRequest[] = [];
  requests.forEach((r, source) => {
    const m = (r as Extract<DmaRequest, { type: 'map' }>).mapping;
    if (table.firstOverlap(m.iova, m.iova + m.size)) return void refused.push({ source, reason: 'overlap' });
    ops.push({ op: 'map', ...m, nonFatal: (r as { nonFatal?: boolean }).nonFatal ?? false, source });
  });
  return { ops, lanes: ops.map((o) => [o]), refused };
}

/**
 * Groups ops into lanes: the connected components of "ranges overlap" (a sweep over
 * the ops sorted by start), each lane keeping transaction order.
 */
export function splitLanes(ops: readonly PlannedOp[]): PlannedOp[][] {
  const order = ops
    .map((_, i) => i)
    .sort((a, b) => (ops[a]!.iova < ops[b]!.iova ? -1 : ops[a]!.iova > ops[b]!.iova ? 1 : a - b));
  const laneOf = new Int32Array(ops.length);
  let lane = -1;
  let laneEnd = -1n;
  for (const i of order) {
    const o = ops[i]!;
    const e = o.iova + o.size;
    if (o.iova >= laneEnd) {
      lane++;
      laneEnd = e;
    } else if (e > laneEnd) laneEnd = e;
    laneOf[i] = lane;
  }
  // Number lanes by their first op, so lane order follows the transaction.
  const renumber = new Map<number, number>();
  const lanes: PlannedOp[][] = [];
  ops.forEach((o, i) => {
    let l = renumber.get(laneOf[i]!);
    if (l === undefined) {
      l = lanes.length;
      renumber.set(laneOf[i]!, l);
      lanes.push([]);
    }
    lanes[l]!.push(o);
  });
  return lanes;
}

/**
 * Packs lanes into at most `n` batches of about equal op count (largest lane first);
 * a batch runs its lanes one after another in one worker. Returns each batch's lanes.
 */
export function packLanes<T>(lanes: readonly (readonly T[])[], n: number): (readonly T[])[][] {
  const bins = Array.from({ length: Math.max(1, Math.min(n, lanes.length)) }, () => ({
    count: 0,
    lanes: [] as (readonly T[])[],
  }));
  const bySize = lanes.map((_, i) => i).sort((a, b) => lanes[b]!.length - lanes[a]!.length || a - b);
  for (const i of bySize) {
    let best = bins[0]!;
    for (const b of bins) if (b.count < best.count) best = b;
    best.lanes.push(lanes[i]!);
    best.count += lanes[i]!.length;
  }
  return bins.filter((b) => b.count > 0).map((b) => b.lanes);
}

/**
 * Applies one op the kernel completed to `table`: a map inserts its mapping, an unmap
 * removes the mappings inside its range (whole mappings only, as the kernel does).
 */
export function applyOp(
  table: IntervalMap<DmaMapping>,
  op: { op: 'map' | 'unmap'; iova: bigint; size: bigint; vaddr?: bigint; readonly?: boolean },
): void {
  const end = op.iova + op.size;
  if (op.op === 'map') {
    table.insert(op.iova, end, {
      iova: op.iova,
      size: op.size,
      vaddr: op.vaddr ?? 0n,
      readonly: op.readonly ?? false,
    });
    return;
  }
  for (const m of [...table.overlapping(op.iova, end)])
    if (m.start >= op.iova && m.end <= end) table.remove(m.start);
}
