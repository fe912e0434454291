/**
 * The ordered index of an io_pagetable's areas (the kernel's area_itree): disjoint
 * inclusive intervals [start, last] over u64 IOVAs, kept in sorted chunks (a two-level
 * B-tree). Lookup, insert and remove are O(log n + B); an IOAS with a million areas
 * costs a few thousand chunks. Each chunk caches the largest hole between its own
 * intervals, so the IOVA allocator can step over runs of areas where nothing fits
 * instead of visiting every one.
 */

/** An inclusive interval [start, last], as the kernel's interval_tree_node. */
export interface Span {
  start: bigint;
  last: bigint;
}

const CHUNK_MAX = 256;

interface Chunk<T extends Span> {
  items: T[];
  /** Number(items[i].start): searches compare doubles and fall back to bigints only on a tie. */
  keys: number[];
  /** Largest hole (in bytes) between consecutive items of this chunk; -1n when unknown. */
  maxGap: bigint;
}

// items[i].start <= key, comparing the doubles first (Number() is monotonic, so only equal doubles need the bigints).
function startLe<T extends Span>(c: Chunk<T>, i: number, key: bigint, kn: number): boolean {
  const k = c.keys[i]!;
  return k < kn || (k === kn && c.items[i]!.start <= key);
}

/** Disjoint intervals in address order. Callers keep them disjoint (iopt_check_iova does). */
export class IntervalList<T extends Span> {
  private chunks: Chunk<T>[] = [];
  private count = 0;

  /** Number of intervals. */
  get size(): number {
    return this.count;
  }

  /** Index of the chunk whose first item has the greatest start <= key (0 when none). */
  private chunkFor(key: bigint, kn: number): number {
    let lo = 0;
    let hi = this.chunks.length - 1;
    let best = 0;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (startLe(this.chunks[mid]!, 0, key, kn)) {
        best = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return best;
  }

  /** Position of the item with the greatest start <= key, or [chunk, -1] when none in that chunk. */
  private floorPos(key: bigint): [number, number] {
    const kn = Number(key);
    const c = this.chunkFor(key, kn);
    const chunk = this.chunks[c]!;
    let lo = 0;
    let hi = chunk.items.length - 1;
    let best = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (startLe(chunk, mid, key, kn)) {
        best = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return [c, best];
  }

  private at(c: number, i: number): T | undefined {
    const chunk = this.chunks[c];
    if (!chunk) return undefined;
    if (i < chunk.items.length) return chunk.items[i];
    return this.chunks[c + 1]?.items[0];
  }

  /** The interval containing `addr`. */
  find(addr: bigint): T | undefined {
    if (!this.count) return undefined;
    const [c, i] = this.floorPos(addr);
    if (i < 0) return undefined;
    const x = this.chunks[c]!.items[i]!;
    return x.last >= addr ? x : undefined;
  }

  /** The first interval (lowest start) intersecting [start, last]: interval_tree_iter_first. */
  iterFirst(start: bigint, last: bigint): T | undefined {
    if (!this.count) return undefined;
    const [c, i] = this.floorPos(start);
    if (i >= 0) {
      const x = this.chunks[c]!.items[i]!;
      if (x.last >= start) return x;
    }
    const n = this.at(c, i + 1);
    return n && n.start <= last ? n : undefined;
  }

  /** The interval after `x` if it intersects [start, last]: interval_tree_iter_next. */
  iterNext(x: T, last: bigint): T | undefined {
    const [c, i] = this.floorPos(x.start);
    const n = this.at(c, i + 1);
    return n && n.start <= last ? n : undefined;
  }

  /** The interval with the highest start. */
  lastItem(): T | undefined {
    const c = this.chunks[this.chunks.length - 1];
    return c?.items[c.items.length - 1];
  }

  /** Adds an interval that overlaps none present. */
  insert(x: T): void {
    if (!this.chunks.length) {
      this.chunks.push({ items: [x], keys: [Number(x.start)], maxGap: -1n });
      this.count = 1;
      return;
    }
    const [c, i] = this.floorPos(x.start);
    const chunk = this.chunks[c]!;
    chunk.items.splice(i + 1, 0, x);
    chunk.keys.splice(i + 1, 0, Number(x.start));
    chunk.maxGap = -1n;
    this.count++;
    if (chunk.items.length > CHUNK_MAX) {
      const items = chunk.items.splice(CHUNK_MAX >> 1);
      const keys = chunk.keys.splice(CHUNK_MAX >> 1);
      this.chunks.splice(c + 1, 0, { items, keys, maxGap: -1n });
    }
  }

  /** Removes `x` (the same object that was inserted); returns whether it was present. */
  remove(x: T): boolean {
    if (!this.count) return false;
    const [c, i] = this.floorPos(x.start);
    const chunk = this.chunks[c]!;
    if (i < 0 || chunk.items[i] !== x) return false;
    chunk.items.splice(i, 1);
    chunk.keys.splice(i, 1);
    chunk.maxGap = -1n;
    this.count--;
    if (!chunk.items.length) this.chunks.splice(c, 1);
    return true;
  }

  /** Every interval in address order. */
  *[Symbol.iterator](): Generator<T> {
    for (const chunk of this.chunks) yield* chunk.items;
  }

  /**
   * The intervals intersecting [lo, hi] in order, as spans; a run of intervals inside
   * one chunk whose holes are all smaller than `minHole` bytes comes as one span (the
   * allocator cannot use those holes anyway, so it need not see them).
   */
  *usedSpans(lo: bigint, hi: bigint, minHole: bigint): Generator<Span> {
    if (!this.count) return;
    let [c, i] = this.floorPos(lo);
    if (i < 0 || this.chunks[c]!.items[i]!.last < lo) i++;
    for (; c < this.chunks.length; c++, i = 0) {
      const chunk = this.chunks[c]!;
      const items = chunk.items;
      if (i >= items.length) continue;
      if (items[i]!.start > hi) return;
      if (i === 0 && gapOf(chunk) < minHole) {
        yield { start: items[0]!.start, last: items[items.length - 1]!.last };
        continue;
      }
      for (; i < items.length; i++) {
        const x = items[i]!;
        if (x.start > hi) return;
        yield x;
      }
    }
  }
}

function gapOf<T extends Span>(chunk: Chunk<T>): bigint {
  if (chunk.maxGap < 0n) {
    let g = 0n;
    const items = chunk.items;
    for (let i = 1; i < items.length; i++) {
      const d = items[i]!.start - items[i - 1]!.last - 1n;
      if (d > g) g = d;
    }
    chunk.maxGap = g;
  }
  return chunk.maxGap;
}
