/**
 * struct io_pagetable (drivers/iommu/iommufd/io_pagetable.c): the IOVA → user VA map of
 * one IOAS. Areas map slices of iopt_pages; reserved ranges (domain apertures, device
 * MSI windows, selftest reservations) and allowed ranges steer the IOVA allocator; the
 * domains attached to the IOAS set the IOVA alignment and make the pages pinned.
 * Function names follow the kernel's iopt_* so the checks can be compared line by line.
 * Every call is atomic here (the kernel's "area->pages == NULL" states cannot be seen),
 * except where the kernel itself is not: a failed unmap keeps what it already removed.
 */
import { kfail, KernelErrno } from '../errno.js';
import type { ProcessMemory } from '../memory.js';
import { IntervalList, type Span } from './interval-list.js';
import { IoptPages, mergeSpans, PAGE_SIZE, syncAll, U64_MAX, type PagesUser } from './pages.js';

/** IOMMU_READ / IOMMU_WRITE of include/linux/iommu.h (an area's iommu_prot). */
export const IOMMU_READ = 1;
/** See IOMMU_READ. */
export const IOMMU_WRITE = 2;

// HPAGE_SIZE with CONFIG_TRANSPARENT_HUGEPAGE (x86-64): the cap on an allocated IOVA's alignment.
const HPAGE_SIZE = 2n << 20n;
const EDEADLK = 35;

/** The parts of struct iommu_domain the io_pagetable and the iommufd objects use. */
export interface IommuDomain {
  /** Which driver made it (domain->owner): attaching to another driver's device is EINVAL. */
  readonly owner: 'host' | 'mock';
  readonly pgsizeBitmap: bigint;
  /** domain->geometry: the aperture, read by iopt_table_add_domain() when the domain joins an IOAS. */
  apertureStart: bigint;
  apertureEnd: bigint;
  /**
   * The aperture the driver sets at the domain's first attach (virtio-iommu's
   * viommu_domain_finalise()), or null once set or when the driver set it at allocation.
   * Until then the aperture is the allocation's zeroed [0, 0].
   */
  pendingAperture: { start: bigint; end: bigint } | null;
  /** domain->dirty_ops: allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING. */
  readonly dirtyOps: boolean;
  /** Dirty tracking enabled (IOMMU_HWPT_SET_DIRTY_TRACKING). */
  dirtyTracking: boolean;
  /** Dirty IO pages, by index iova / ioPageSize (the mock's MOCK_PFN_DIRTY_IOVA bits, VT-d's D bits). */
  readonly dirty: Set<bigint>;
  /** The page size dirty bits are kept at: MOCK_IO_PAGE_SIZE or 4 KiB. */
  readonly ioPageSize: bigint;
  /** Highest IOVA + 1 ever mapped (VT-d's dmar_domain->max_addr, checked at attach). */
  maxAddr: bigint;
}

/** struct iopt_area: [start, last] of IOVA mapping a slice of `pages`. */
export class IoptArea implements Span, PagesUser {
  /** Active in-kernel accesses pinning part of this area (area->num_accesses). */
  numAccesses = 0;

  constructor(
    readonly iopt: IoPagetable,
    readonly pages: IoptPages,
    readonly start: bigint,
    readonly last: bigint,
    /** Bytes into the first page where the area starts (area->page_offset). */
    readonly pageOffset: bigint,
    readonly pagesStart: bigint,
    readonly pagesLast: bigint,
    /** IOMMU_READ | IOMMU_WRITE */
    readonly prot: number,
  ) {}

  /** Loaded into a domain: the io_pagetable has one. */
  get filled(): boolean {
    return this.iopt.domains.length > 0;
  }

  /** iopt_area_start_byte(): offset of `iova` from the start of the pages' first page. */
  startByte(iova: bigint): bigint {
    return iova - this.start + this.pageOffset + this.pagesStart * PAGE_SIZE;
  }

  /** The user address `iova` maps to. */
  va(iova: bigint): bigint {
    return this.pages.uptr + this.startByte(iova);
  }
}

/** struct iopt_reserved */
interface IoptReserved extends Span {
  owner: unknown;
}

/** An in-kernel access attached to the io_pagetable (iommufd_access, for the alignment and unmap notices). */
export interface IoptAccess {
  readonly iovaAlignment: bigint;
  /** access->ops->unmap(): drop every pin intersecting [iova, iova + length). */
  unmap(iova: bigint, length: bigint): void;
}

/** struct iopt_pages_list: one slice of pages to map. */
export interface PagesListElm {
  pages: IoptPages;
  startByte: bigint;
  length: bigint;
}

/** One step of iopt_for_each_contig_area: `area` covers [cur, segLast]. */
interface ContigSeg {
  area: IoptArea;
  cur: bigint;
  segLast: bigint;
}

/** 1 << __ffs64(x) for x != 0. */
function lowestBit(x: bigint): bigint {
  return x & -x;
}

function roundupPowOfTwo(x: bigint): bigint {
  let p = 1n;
  while (p < x) p <<= 1n;
  return p;
}

/** struct io_pagetable */
export class IoPagetable {
  /** area_itree */
  readonly areas = new IntervalList<IoptArea>();
  /** reserved_itree, sorted by start (ranges of different owners may overlap). */
  private reserved: IoptReserved[] = [];
  /** allowed_itree, sorted and disjoint. */
  private allowed: Span[] = [];
  /** The domains loaded from this table, in attach order. */
  readonly domains: IommuDomain[] = [];
  /** access_list */
  readonly accesses: IoptAccess[] = [];
  iovaAlignment = 1n;
  disableLargePages = false;

  constructor(readonly mem: ProcessMemory) {}

  private reservedFirst(start: bigint, last: bigint): IoptReserved | undefined {
    return this.reserved.find((r) => r.start <= last && r.last >= start);
  }

  private allowedFirst(start: bigint, last: bigint): Span | undefined {
    return this.allowed.find((r) => r.start <= last && r.last >= start);
  }

  /** __alloc_iova_check_range(): the aligned start of a fit in [start, last], or null. */
  private static checkRange(
    start: bigint,
    last: bigint,
    length: bigint,
    align: bigint,
    pageOffset: bigint,
  ): bigint | null {
    let aligned = start + align - 1n;
    if (aligned > U64_MAX) return null;
    aligned &= BigInt.asUintN(64, ~(align - 1n));
    aligned |= pageOffset;
    if (aligned >= last || last - aligned < length - 1n) return null;
    return aligned;
  }

  /** The holes of reserved ∪ areas within [lo, hi] in order (interval_tree_for_each_double_span). */
  private *holes(lo: bigint, hi: bigint, minHole: bigint): Generator<Span> {
    const res = this.reserved.filter((r) => r.last >= lo && r.start <= hi);
    let ri = 0;
    const it = this.areas.usedSpans(lo, hi, minHole);
    let a = it.next();
    let cur = lo;
    for (;;) {
      let used: Span;
      const r = res[ri];
      if (!a.done && (!r || a.value.start <= r.start)) {
        used = a.value;
        a = it.next();
      } else if (r) {
        used = r;
        ri++;
      } else break;
      if (used.start > hi) break;
      if (used.start > cur) yield { start: cur, last: used.start - 1n };
      if (used.last >= cur) {
        if (used.last >= hi) return;
        cur = used.last + 1n;
      }
    }
    if (cur <= hi) yield { start: cur, last: hi };
  }

  /**
   * iopt_alloc_iova(): the lowest IOVA in an allowed range (all of [PAGE_SIZE,
   * ULONG_MAX - PAGE_SIZE] when none are set) that avoids reserved ranges and areas,
   * aligned to min(roundup_pow_of_two(length), lowest set bit of uptr, 2 MiB) and keeping
   * uptr's offset in its page. Never returns IOVA 0.
   */
  allocIova(uptr: bigint, length: bigint): bigint {
    const pageOffset = uptr % PAGE_SIZE;
    if (length === 0n || length >= U64_MAX / 2n) kfail('EOVERFLOW', 'iopt_alloc_iova: length');
    // Keep the alignment the user address has, for the chance of huge IOPTEs.
    let align = roundupPowOfTwo(length);
    if (uptr !== 0n && lowestBit(uptr) < align) align = lowestBit(uptr);
    if (align >= HPAGE_SIZE) align = HPAGE_SIZE;
    if (align < this.iovaAlignment) kfail('EINVAL', 'iopt_alloc_iova: alignment below the IOAS alignment');

    const lo = PAGE_SIZE;
    const hi = U64_MAX - PAGE_SIZE;
    const spans: Span[] = this.allowed.length
      ? mergeSpans(this.allowed.filter((s) => s.last >= lo && s.start <= hi)).map((s) => ({
          start: s.start < lo ? lo : s.start,
          last: s.last > hi ? hi : s.last,
        }))
      : [{ start: lo, last: hi }];
    for (const span of spans) {
      const from = IoPagetable.checkRange(span.start, span.last, length, align, pageOffset);
      if (from === null) continue;
      for (const hole of this.holes(from, span.last, length)) {
        const iova = IoPagetable.checkRange(hole.start, hole.last, length, align, pageOffset);
        if (iova !== null) return iova;
      }
    }
    return kfail('ENOSPC', 'iopt_alloc_iova: no hole');
  }

  /** iopt_check_iova(): a fixed IOVA must be aligned, not wrap, avoid reserved ranges (EINVAL) and areas (EEXIST). */
  checkIova(iova: bigint, length: bigint): void {
    if (iova & (this.iovaAlignment - 1n)) kfail('EINVAL', 'iopt_check_iova: unaligned IOVA');
    const last = iova + length - 1n;
    if (last > U64_MAX) kfail('EOVERFLOW', 'iopt_check_iova: wraps');
    if (this.reservedFirst(iova, last)) kfail('EINVAL', 'iopt_check_iova: reserved IOVA');
    if (this.areas.iterFirst(iova, last)) kfail('EEXIST', 'iopt_check_iova: already mapped');
  }

  /** iopt_insert_area(): checks, then links the area into the tree and its pages. */
  private insertArea(
    pages: IoptPages,
    iova: bigint,
    startByte: bigint,
    length: bigint,
    prot: number,
  ): IoptArea {
    if (prot & IOMMU_WRITE && !pages.writable)
      kfail('EPERM', 'iopt_insert_area: WRITEABLE over read-only pages');
    const pageOffset = startByte % PAGE_SIZE;
    if (pageOffset & (this.iovaAlignment - 1n)) kfail('EINVAL', 'iopt_insert_area: page offset unaligned');
    const last = iova + length - 1n;
    if (last > U64_MAX) kfail('EOVERFLOW');
    const pagesLast = (startByte + length - 1n) / PAGE_SIZE;
    if (pagesLast >= pages.npages) kfail('EOVERFLOW');
    const area = new IoptArea(this, pages, iova, last, pageOffset, startByte / PAGE_SIZE, pagesLast, prot);
    this.areas.insert(area);
    pages.addUser(area);
    return area;
  }

  /** Unlinks an area and returns its pages' pins (iopt_abort_area + iopt_area_unfill_domains). */
  private removeArea(area: IoptArea): void {
    this.areas.remove(area);
    area.pages.removeUser(area);
    area.pages.sync();
    for (const d of this.domains) clearDirty(d, area.start, area.last);
  }

  /**
   * iopt_map_pages(): iopt_alloc_area_pages (length alignment, IOVA allocation or
   * iopt_check_iova, iopt_insert_area per slice) then iopt_fill_domains_pages (pinning
   * when a domain exists). Returns the IOVA; on failure nothing is left behind.
   */
  mapPages(list: PagesListElm[], length: bigint, iova: bigint, alloc: boolean, prot: number): bigint {
    if (length & (this.iovaAlignment - 1n) || length === 0n) kfail('EINVAL', 'iopt_alloc_area_pages: length');
    const first = list[0]!;
    if (alloc) iova = this.allocIova(first.pages.uptr + first.startByte, length);
    else this.checkIova(iova, length);
    const inserted: IoptArea[] = [];
    const undo = () => {
      for (const a of inserted) {
        this.areas.remove(a);
        a.pages.removeUser(a);
      }
    };
    try {
      let cur = iova;
      for (const elm of list) {
        inserted.push(this.insertArea(elm.pages, cur, elm.startByte, elm.length, prot));
        cur += elm.length;
      }
    } catch (e) {
      undo();
      throw e;
    }
    if (this.domains.length) syncAll(new Set(inserted.map((a) => a.pages)), undo);
    for (const d of this.domains) if (iova + length > d.maxAddr) d.maxAddr = iova + length;
    return iova;
  }

  /** iopt_map_user_pages(): a new iopt_pages over [uptr, uptr + length), then iopt_map_pages. */
  mapUserPages(uptr: bigint, length: bigint, iova: bigint, alloc: boolean, prot: number): bigint {
    const pages = IoptPages.alloc(this.mem, uptr, length, (prot & IOMMU_WRITE) !== 0);
    return this.mapPages([{ pages, startByte: uptr - pages.uptr, length }], length, iova, alloc, prot);
  }

  /** iopt_area_contig_init/next: the areas covering [iova, last] without a gap, and whether they reach `last`. */
  contig(iova: bigint, last: bigint): { segs: ContigSeg[]; done: boolean } {
    const segs: ContigSeg[] = [];
    let area = this.areas.iterFirst(iova, iova);
    let cur = iova;
    while (area) {
      segs.push({ area, cur, segLast: last < area.last ? last : area.last });
      if (last <= area.last) return { segs, done: true };
      cur = area.last + 1n;
      const next = this.areas.iterNext(area, last);
      if (!next || next.start !== cur) break;
      area = next;
    }
    return { segs, done: false };
  }

  /** iopt_get_pages(): the slices of pages under [iova, iova + length), which must be mapped without a gap (ENOENT). */
  getPages(iova: bigint, length: bigint): PagesListElm[] {
    if (length === 0n) kfail('EINVAL', 'iopt_get_pages: length 0');
    const last = iova + length - 1n;
    if (last > U64_MAX) kfail('EOVERFLOW', 'iopt_get_pages: wraps');
    const { segs, done } = this.contig(iova, last);
    if (!done) kfail('ENOENT', 'iopt_get_pages: not fully mapped');
    return segs.map((s) => ({
      pages: s.area.pages,
      startByte: s.area.startByte(s.cur),
      length: s.segLast - s.cur + 1n,
    }));
  }

  /**
   * iopt_unmap_iova_range(): removes the areas inside [start, last] in IOVA order. An
   * area that sticks out fails the call with ENOENT, keeping what was already unmapped
   * (`out.unmapped` counts it); areas with in-kernel accesses ask them to unpin first.
   */
  unmapIovaRange(start: bigint, last: bigint, out: { unmapped: bigint }): void {
    let tries = 0;
    let area: IoptArea | undefined;
    while ((area = this.areas.iterFirst(start, last))) {
      if (area.start < start || area.last > last)
        kfail('ENOENT', 'iopt_unmap_iova_range: would split an area');
      if (area.start !== start) tries = 0;
      if (area.numAccesses) {
        start = area.start;
        for (const a of [...this.accesses]) a.unmap(area.start, area.last - area.start + 1n);
        if (++tries > 100) throw new KernelErrno(EDEADLK, 'iopt_unmap_iova_range: access does not unpin');
        continue;
      }
      this.removeArea(area);
      out.unmapped += area.last - area.start + 1n;
      if (area.last >= last) break;
      start = area.last + 1n;
    }
  }

  /** iopt_unmap_iova(): length 0 is EINVAL, a wrapping range EOVERFLOW. */
  unmapIova(iova: bigint, length: bigint, out: { unmapped: bigint }): void {
    if (length === 0n) kfail('EINVAL', 'iopt_unmap_iova: length 0');
    const last = iova + length - 1n;
    if (last > U64_MAX) kfail('EOVERFLOW', 'iopt_unmap_iova: wraps');
    this.unmapIovaRange(iova, last, out);
  }

  /** iopt_unmap_all(): succeeds on an empty table. */
  unmapAll(out: { unmapped: bigint } = { unmapped: 0n }): void {
    this.unmapIovaRange(0n, U64_MAX, out);
  }

  /** The IOVA ranges userspace may use: the holes of the reserved ranges (IOMMU_IOAS_IOVA_RANGES). */
  iovaRanges(): Span[] {
    return [...this.holesOfReserved()];
  }

  private *holesOfReserved(): Generator<Span> {
    let cur = 0n;
    for (const r of mergeSpans(this.reserved)) {
      if (r.start > cur) yield { start: cur, last: r.start - 1n };
      if (r.last >= U64_MAX) return;
      if (r.last + 1n > cur) cur = r.last + 1n;
    }
    yield { start: cur, last: U64_MAX };
  }

  /** iopt_reserve_iova(): EADDRINUSE over an area or an allowed range. */
  reserveIova(start: bigint, last: bigint, owner: unknown): void {
    if (this.areas.iterFirst(start, last) || this.allowedFirst(start, last)) {
      kfail('EADDRINUSE', 'iopt_reserve_iova: range in use');
    }
    const r: IoptReserved = { start, last, owner };
    const i = this.reserved.findIndex((x) => x.start > start);
    this.reserved.splice(i < 0 ? this.reserved.length : i, 0, r);
  }

  /** iopt_remove_reserved_iova(): drops every range `owner` reserved. */
  removeReserved(owner: unknown): void {
    this.reserved = this.reserved.filter((r) => r.owner !== owner);
  }

  /** iopt_set_allow_iova(): replaces the allowed ranges; EADDRINUSE (and no change) when one hits a reserved range. */
  setAllowIova(ranges: Span[]): void {
    const sorted = [...ranges].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    for (const a of sorted)
      if (this.reservedFirst(a.start, a.last)) kfail('EADDRINUSE', 'allowed range is reserved');
    this.allowed = sorted;
  }

  /** iopt_check_iova_alignment(): every area conforms to a larger alignment, else EADDRINUSE. */
  private checkIovaAlignment(align: bigint): void {
    const mask = align - 1n;
    for (const a of this.areas) {
      if (a.start & mask || (a.last - a.start + 1n) & mask || a.pageOffset & mask) {
        kfail('EADDRINUSE', 'an area does not conform to the new IOVA alignment');
      }
    }
  }

  /**
   * iopt_table_add_domain(): raises the alignment to the domain's smallest page (more
   * than PAGE_SIZE is EINVAL, misaligned areas EADDRINUSE), reserves what lies outside
   * its aperture (EADDRINUSE over areas), and loads the areas, pinning them when this is
   * the first domain (ENOMEM, EFAULT). On failure the table is unchanged.
   */
  addDomain(domain: IommuDomain): void {
    let align = lowestBit(domain.pgsizeBitmap);
    if (align < this.iovaAlignment) align = this.iovaAlignment;
    if (align > PAGE_SIZE) kfail('EINVAL', 'domain page size above PAGE_SIZE');
    if (align !== this.iovaAlignment) this.checkIovaAlignment(align);
    try {
      if (domain.apertureStart !== 0n) this.reserveIova(0n, domain.apertureStart - 1n, domain);
      if (domain.apertureEnd !== U64_MAX) this.reserveIova(domain.apertureEnd + 1n, U64_MAX, domain);
      this.domains.push(domain);
      if (this.domains.length === 1) {
        const pages = new Set<IoptPages>();
        for (const a of this.areas) pages.add(a.pages);
        syncAll(pages, () => this.domains.pop());
      }
    } catch (e) {
      this.removeReserved(domain);
      throw e;
    }
    this.iovaAlignment = align;
    const top = this.areas.lastItem();
    if (top && top.last + 1n > domain.maxAddr) domain.maxAddr = top.last + 1n;
  }

  /** iopt_table_remove_domain(): unloads the areas (unpinning with the last domain), drops its reserved ranges, recomputes the alignment. */
  removeDomain(domain: IommuDomain): void {
    const i = this.domains.indexOf(domain);
    if (i < 0) return;
    this.domains.splice(i, 1);
    if (!this.domains.length) {
      const pages = new Set<IoptPages>();
      for (const a of this.areas) pages.add(a.pages);
      for (const p of pages) p.sync();
    }
    this.removeReserved(domain);
    try {
      this.calculateIovaAlignment();
    } catch {
      // WARN_ON in the kernel: the alignment only shrinks here.
    }
  }

  /** iopt_calculate_iova_alignment(): the largest of PAGE_SIZE (huge pages off), every domain's and access's alignment. */
  private calculateIovaAlignment(): void {
    let align = this.disableLargePages ? PAGE_SIZE : 1n;
    for (const d of this.domains) {
      const a = lowestBit(d.pgsizeBitmap);
      if (a > align) align = a;
    }
    for (const x of this.accesses) if (x.iovaAlignment > align) align = x.iovaAlignment;
    if (align > this.iovaAlignment) this.checkIovaAlignment(align);
    this.iovaAlignment = align;
  }

  /** iopt_disable_large_pages(): EINVAL once domains and areas exist; EADDRINUSE when areas are not page aligned. */
  disableLarge(): void {
    if (this.disableLargePages) return;
    if (this.domains.length && this.areas.size) kfail('EINVAL', 'domains already have pages mapped');
    this.disableLargePages = true;
    try {
      this.calculateIovaAlignment();
    } catch (e) {
      this.disableLargePages = false;
      throw e;
    }
  }

  /** iopt_enable_large_pages() */
  enableLarge(): void {
    this.disableLargePages = false;
    try {
      this.calculateIovaAlignment();
    } catch {
      // WARN_ON in the kernel: the alignment only shrinks here.
    }
  }

  /** iopt_add_access(): the access's alignment joins the table's (EADDRINUSE when areas do not conform). */
  addAccess(access: IoptAccess): void {
    this.accesses.push(access);
    try {
      this.calculateIovaAlignment();
    } catch (e) {
      this.accesses.pop();
      throw e;
    }
  }

  /** iopt_remove_access() */
  removeAccess(access: IoptAccess): void {
    const i = this.accesses.indexOf(access);
    if (i >= 0) this.accesses.splice(i, 1);
    try {
      this.calculateIovaAlignment();
    } catch {
      // WARN_ON in the kernel.
    }
  }

  /**
   * What a device's DMA of `length` bytes at `iova` reaches: the user address, or null
   * when some byte is unmapped, the areas are not contiguous in user memory, or the
   * direction is not permitted (a DMA write needs IOMMU_WRITE, a read IOMMU_READ).
   */
  translate(iova: bigint, length: bigint, write: boolean): bigint | null {
    if (length <= 0n) return null;
    let area = this.areas.find(iova);
    if (!area) return null;
    const need = write ? IOMMU_WRITE : IOMMU_READ;
    const va = area.va(iova);
    const last = iova + length - 1n;
    for (;;) {
      if (!(area.prot & need)) return null;
      if (last <= area.last) return va;
      const next = this.areas.iterFirst(area.last + 1n, area.last + 1n);
      if (!next || next.start !== area.last + 1n || next.va(next.start) !== area.va(area.last) + 1n)
        return null;
      area = next;
    }
  }
}

/** Forgets the dirty bits of a domain within [start, last] (the IO PTEs are gone). */
export function clearDirty(d: IommuDomain, start: bigint, last: bigint): void {
  if (!d.dirty.size) return;
  const first = start / d.ioPageSize;
  const end = last / d.ioPageSize;
  if (BigInt(d.dirty.size) <= end - first + 1n) {
    for (const i of d.dirty) if (i >= first && i <= end) d.dirty.delete(i);
  } else {
    for (let i = first; i <= end; i++) d.dirty.delete(i);
  }
}
