/**
 * iopt_pages (drivers/iommu/iommufd/pages.c): the user memory behind one IOAS_MAP, shared
 * by every area that maps a slice of it (IOAS_COPY, compat splits). A page is pinned
 * once per iopt_pages while any area over it is loaded into a domain (its io_pagetable
 * has one) or an in-kernel access holds it, whatever the number of domains or copies.
 * Pins and locked_vm charges are kept per range, never per page.
 */
import { kfail } from '../errno.js';
import type { ProcessMemory } from '../memory.js';
import type { Span } from './interval-list.js';

/** PAGE_SIZE of the simulated (x86-64) kernel. */
export const PAGE_SIZE = 4096n;
/** ULONG_MAX / SIZE_MAX / U64_MAX on a 64-bit kernel. */
export const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** What an area tells its pages: which page indexes it covers and whether its io_pagetable has a domain. */
export interface PagesUser {
  /** First page index covered (area->pages_node.start). */
  readonly pagesStart: bigint;
  /** Last page index covered, inclusive. */
  readonly pagesLast: bigint;
  /** True while the area is loaded into a domain (area->storage_domain). */
  readonly filled: boolean;
}

interface PinnedSeg extends Span {
  pin: number;
}

const NONE: PinnedSeg[] = [];

/** An in-kernel access range (struct iopt_pages_access), in page indexes. */
interface AccessSeg extends Span {
  users: number;
}

/** struct iopt_pages */
export class IoptPages {
  /** The page-aligned start of the user memory. */
  readonly uptr: bigint;
  /** Pages from uptr. */
  readonly npages: bigint;
  /** Areas referencing these pages (the kref); almost always one. */
  readonly users: PagesUser[] = [];
  /** access_itree: ranges pinned by in-kernel accesses, with their user counts. */
  readonly accesses: AccessSeg[] = [];
  private pinned: PinnedSeg[] = NONE;

  constructor(
    private readonly mem: ProcessMemory,
    uptr: bigint,
    length: bigint,
    /** Pinned with FOLL_WRITE: the mapping was made WRITEABLE. */
    readonly writable: boolean,
  ) {
    this.uptr = uptr - (uptr % PAGE_SIZE);
    this.npages = (length + (uptr - this.uptr) + PAGE_SIZE - 1n) / PAGE_SIZE;
  }

  /**
   * iopt_alloc_pages(): length 0 or beyond SIZE_MAX - PAGE_SIZE is EINVAL, a user range
   * that wraps is EOVERFLOW. Nothing is pinned yet.
   */
  static alloc(mem: ProcessMemory, uptr: bigint, length: bigint, writable: boolean): IoptPages {
    if (length > U64_MAX - PAGE_SIZE || length === 0n) kfail('EINVAL', 'iopt_alloc_pages: length');
    if (uptr + length > U64_MAX) kfail('EOVERFLOW', 'iopt_alloc_pages: uptr + length wraps');
    return new IoptPages(mem, uptr, length, writable);
  }

  /** Links an area (kref_get). */
  addUser(u: PagesUser): void {
    this.users.push(u);
  }

  /** Unlinks an area (iopt_put_pages). */
  removeUser(u: PagesUser): void {
    const i = this.users.indexOf(u);
    if (i >= 0) this.users.splice(i, 1);
  }

  /** Number of pinned pages (npinned). */
  get npinned(): bigint {
    let n = 0n;
    for (const s of this.pinned) n += s.last - s.start + 1n;
    return n;
  }

  /** The page ranges that must be pinned now: loaded areas plus accesses, merged. */
  private wanted(): Span[] {
    const spans: Span[] = [];
    for (const u of this.users) if (u.filled) spans.push({ start: u.pagesStart, last: u.pagesLast });
    for (const a of this.accesses) spans.push({ start: a.start, last: a.last });
    return mergeSpans(spans);
  }

  /**
   * Brings the pins in line with wanted(): new pages are checked like pin_user_pages
   * (EFAULT: unmapped, read-only for a writable pin, or VM_PFNMAP) and charged to
   * RLIMIT_MEMLOCK (ENOMEM); either failure leaves everything as it was. Returns true
   * when pages were added (the caller logs it to undo a later failure).
   */
  sync(): boolean {
    const have = this.pinned;
    // The common case, one area and no access: all of it pinned or none.
    if (this.users.length <= 1 && !this.accesses.length && have.length <= 1) {
      const u = this.users[0];
      const want = u?.filled ? u : undefined;
      const h = have[0];
      if (!want && !h) return false;
      if (want && !h) {
        const va = this.uptr + want.pagesStart * PAGE_SIZE;
        const len = (want.pagesLast - want.pagesStart + 1n) * PAGE_SIZE;
        this.mem.checkPinnable(va, len, this.writable, false);
        this.mem.lock(len);
        this.pinned = [{ start: want.pagesStart, last: want.pagesLast, pin: this.mem.pin(va, len) }];
        return true;
      }
      if (!want && h) {
        this.mem.unlock((h.last - h.start + 1n) * PAGE_SIZE);
        this.mem.unpin(h.pin);
        this.pinned = NONE;
        return false;
      }
      if (h!.start === want!.pagesStart && h!.last === want!.pagesLast) return false;
    }
    const want = this.wanted();
    const added = subtractSpans(want, have);
    const removed = subtractSpans(have, want);
    if (!added.length && !removed.length) return false;
    let addBytes = 0n;
    for (const s of added) {
      const len = (s.last - s.start + 1n) * PAGE_SIZE;
      this.mem.checkPinnable(this.uptr + s.start * PAGE_SIZE, len, this.writable, false);
      addBytes += len;
    }
    if (addBytes) this.mem.lock(addBytes);
    let removeBytes = 0n;
    for (const s of removed) removeBytes += (s.last - s.start + 1n) * PAGE_SIZE;
    if (removeBytes) this.mem.unlock(removeBytes);
    // Keep the pins of unchanged ranges (both lists are sorted); re-pin the changed ones whole.
    const next: PinnedSeg[] = [];
    let j = 0;
    for (const s of want) {
      while (j < have.length && have[j]!.start < s.start) this.mem.unpin(have[j++]!.pin);
      const old = have[j];
      if (old && old.start === s.start && old.last === s.last) {
        next.push(old);
        j++;
      } else {
        next.push({
          ...s,
          pin: this.mem.pin(this.uptr + s.start * PAGE_SIZE, (s.last - s.start + 1n) * PAGE_SIZE),
        });
      }
    }
    while (j < have.length) this.mem.unpin(have[j++]!.pin);
    this.pinned = next.length ? next : NONE;
    return added.length > 0;
  }

  /** Adds an access user of [start, last] (page indexes): iopt_area_add_access without the pinning. */
  addAccess(start: bigint, last: bigint): void {
    const a = this.accesses.find((x) => x.start === start && x.last === last);
    if (a) a.users++;
    else this.accesses.push({ start, last, users: 1 });
  }

  /** Drops an access user of exactly [start, last]; false when there is none. */
  removeAccess(start: bigint, last: bigint): boolean {
    const i = this.accesses.findIndex((x) => x.start === start && x.last === last);
    if (i < 0) return false;
    if (--this.accesses[i]!.users === 0) this.accesses.splice(i, 1);
    return true;
  }
}

/**
 * Pins every iopt_pages in `pages` (in order) after a state change that grows what they
 * need; on failure re-syncs the ones already done (which can only unpin) and rethrows,
 * after `undo` has restored the state.
 */
export function syncAll(pages: Iterable<IoptPages>, undo: () => void): void {
  const done: IoptPages[] = [];
  try {
    for (const p of pages) {
      p.sync();
      done.push(p);
    }
  } catch (e) {
    undo();
    for (const p of done) p.sync();
    throw e;
  }
}

/** Sorts and merges overlapping or adjacent spans. */
export function mergeSpans(spans: Span[]): Span[] {
  if (spans.length <= 1) return spans.map((s) => ({ start: s.start, last: s.last }));
  const sorted = [...spans].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: Span[] = [{ ...sorted[0]! }];
  for (let i = 1; i < sorted.length; i++) {
    const s = sorted[i]!;
    const top = out[out.length - 1]!;
    if (s.start <= top.last + 1n) {
      if (s.last > top.last) top.last = s.last;
    } else out.push({ start: s.start, last: s.last });
  }
  return out;
}

/** a − b for sorted disjoint span lists. */
export function subtractSpans(a: readonly Span[], b: readonly Span[]): Span[] {
  const out: Span[] = [];
  let j = 0;
  for (const s of a) {
    let cur = s.start;
    while (j < b.length && b[j]!.last < cur) j++;
    let k = j;
    while (cur <= s.last) {
      const x = b[k];
      if (!x || x.start > s.last) {
        out.push({ start: cur, last: s.last });
        break;
      }
      if (x.start > cur) out.push({ start: cur, last: x.start - 1n });
      if (x.last >= s.last) break;
      cur = x.last + 1n;
      k++;
    }
  }
  return out;
}
