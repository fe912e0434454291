/**
 * An ordered map of disjoint half-open intervals [start, end) over u64 addresses, each
 * carrying a value: the "replace list with g_tree" TODO of the QEMU series. An AVL tree
 * keyed by start gives O(log n) insert, remove, point lookup and the first interval
 * overlapping a range; walking the overlaps of a range costs O(log n + k).
 */

/** One interval of the map. */
export interface Interval<V> {
  readonly start: bigint;
  /** Exclusive end. */
  readonly end: bigint;
  value: V;
}

interface Node<V> extends Interval<V> {
  left: Node<V> | null;
  right: Node<V> | null;
  height: number;
}

const h = <V>(n: Node<V> | null) => (n ? n.height : 0);
const fix = <V>(n: Node<V>) => {
  n.height = 1 + Math.max(h(n.left), h(n.right));
};

function rotateRight<V>(n: Node<V>): Node<V> {
  const l = n.left!;
  n.left = l.right;
  l.right = n;
  fix(n);
  fix(l);
  return l;
}

function rotateLeft<V>(n: Node<V>): Node<V> {
  const r = n.right!;
  n.right = r.left;
  r.left = n;
  fix(n);
  fix(r);
  return r;
}

function balance<V>(n: Node<V>): Node<V> {
  fix(n);
  const bf = h(n.left) - h(n.right);
  if (bf > 1) {
    if (h(n.left!.left) < h(n.left!.right)) n.left = rotateLeft(n.left!);
    return rotateRight(n);
  }
  if (bf < -1) {
    if (h(n.right!.right) < h(n.right!.left)) n.right = rotateRight(n.right!);
    return rotateLeft(n);
  }
  return n;
}

/** Thrown by insert() when the new interval overlaps an existing one. */
export class OverlapError extends Error {
  constructor(
    readonly start: bigint,
    readonly end: bigint,
    readonly existing: Interval<unknown>,
  ) {
    super(
      `[0x${start.toString(16)}, 0x${end.toString(16)}) overlaps [0x${existing.start.toString(16)}, 0x${existing.end.toString(16)})`,
    );
  }
}

/** Disjoint intervals in address order. */
export class IntervalMap<V> {
  private root: Node<V> | null = null;
  private count = 0;

  /** Number of intervals. */
  get size(): number {
    return this.count;
  }

  /** Adds [start, end) (start < end); throws OverlapError when it overlaps an interval already present. */
  insert(start: bigint, end: bigint, value: V): void {
    if (!(start < end)) throw new RangeError(`empty or inverted interval [${start}, ${end})`);
    const hit = this.firstOverlap(start, end);
    if (hit) throw new OverlapError(start, end, hit);
    this.root = this.ins(this.root, { start, end, value, left: null, right: null, height: 1 });
    this.count++;
  }

  private ins(n: Node<V> | null, x: Node<V>): Node<V> {
    if (!n) return x;
    if (x.start < n.start) n.left = this.ins(n.left, x);
    else n.right = this.ins(n.right, x);
    return balance(n);
  }

  /** Removes the interval starting exactly at `start`; returns it, or undefined. */
  remove(start: bigint): Interval<V> | undefined {
    let removed: Node<V> | undefined;
    const del = (n: Node<V> | null): Node<V> | null => {
      if (!n) return null;
      if (start < n.start) n.left = del(n.left);
      else if (start > n.start) n.right = del(n.right);
      else {
        removed = n;
        if (!n.left || !n.right) return n.left ?? n.right;
        // Replace by the in-order successor.
        let m = n.right;
        while (m.left) m = m.left;
        const right = this.removeMin(n.right);
        m.left = n.left;
        m.right = right;
        return balance(m);
      }
      return balance(n);
    };
    this.root = del(this.root);
    if (removed) this.count--;
    return removed && { start: removed.start, end: removed.end, value: removed.value };
  }

  private removeMin(n: Node<V>): Node<V> | null {
    if (!n.left) return n.right;
    n.left = this.removeMin(n.left);
    return balance(n);
  }

  /** The interval that starts exactly at `start`. */
  get(start: bigint): Interval<V> | undefined {
    let n = this.root;
    while (n) {
      if (start < n.start) n = n.left;
      else if (start > n.start) n = n.right;
      else return n;
    }
    return undefined;
  }

  /** The interval containing `addr`. */
  find(addr: bigint): Interval<V> | undefined {
    const f = this.floor(addr);
    return f && addr < f.end ? f : undefined;
  }

  /** The interval with the greatest start <= key. */
  floor(key: bigint): Interval<V> | undefined {
    let n = this.root;
    let best: Node<V> | undefined;
    while (n) {
      if (n.start <= key) {
        best = n;
        n = n.right;
      } else n = n.left;
    }
    return best;
  }

  /** The interval with the smallest start >= key. */
  ceil(key: bigint): Interval<V> | undefined {
    let n = this.root;
    let best: Node<V> | undefined;
    while (n) {
      if (n.start >= key) {
        best = n;
        n = n.left;
      } else n = n.right;
    }
    return best;
  }

  /** The first interval (in address order) that overlaps [start, end). */
  firstOverlap(start: bigint, end: bigint): Interval<V> | undefined {
    const f = this.floor(start);
    if (f && f.end > start) return f;
    const c = this.ceil(start);
    return c && c.start < end ? c : undefined;
  }

  /** The intervals overlapping [start, end), in address order. */
  *overlapping(start: bigint, end: bigint): Generator<Interval<V>> {
    let cur = this.firstOverlap(start, end);
    while (cur && cur.start < end) {
      yield cur;
      cur = this.ceil(cur.end);
    }
  }

  /** Every interval in address order. */
  *[Symbol.iterator](): Generator<Interval<V>> {
    const stack: Node<V>[] = [];
    let n = this.root;
    while (stack.length || n) {
      while (n) {
        stack.push(n);
        n = n.left;
      }
      n = stack.pop()!;
      yield n;
      n = n.right;
    }
  }

  /** Removes everything. */
  clear(): void {
    this.root = null;
    this.count = 0;
  }

  /** Checks the tree's invariants (order, disjointness, AVL balance); for tests. */
  check(): void {
    let prev: Node<V> | null = null;
    const walk = (n: Node<V> | null): number => {
      if (!n) return 0;
      const lh = walk(n.left);
      if (prev && prev.end > n.start) throw new Error(`overlap or disorder at 0x${n.start.toString(16)}`);
      prev = n;
      const rh = walk(n.right);
      if (Math.abs(lh - rh) > 1 || n.height !== 1 + Math.max(lh, rh)) throw new Error('unbalanced');
      return n.height;
    };
    walk(this.root);
  }
}
