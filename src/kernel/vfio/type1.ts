/**
 * drivers/vfio/vfio_iommu_type1.c: the type1 IOMMU driver behind a legacy container
 * (struct vfio_iommu). User mappings (struct vfio_dma) are the nodes of a red-black tree
 * (dma_list) inserted, searched and walked with the kernel's own comparisons on Linux's
 * rbtree (../rbtree.ts); pinning and locked-memory accounting are per mapping, never per page.
 * All the groups of a container share one IOMMU domain here (they sit behind the same
 * IOMMU, so the kernel would merge their domains), and its translation is installed on
 * every device of those groups.
 *
 * Address arithmetic wraps at 2^64 where the kernel's u64/dma_addr_t arithmetic does, so
 * the top-of-address-space corner cases answer as the kernel does. They are reachable
 * where the IOVA space is all of 64-bit (virtio-iommu): a mapping that ends at 2^64 has
 * dma->iova + dma->size == 0, so vfio_find_dma() and vfio_find_dma_first_node() never
 * match it (a map over it is no EEXIST, an unmap of it unmaps nothing), and with such
 * overlapping mappings in the tree what a search finds depends on the tree's shape.
 */
import { KernelErrno, kfail } from '../errno.js';
import { RbNode, RbRoot } from '../rbtree.js';
import type { SimKernel } from '../kernel.js';
import type { DmaTranslator, IoctlIn } from '../types.js';
import { ERRNO } from '../../uapi/errno.js';
import {
  VFIO_CHECK_EXTENSION,
  VFIO_DMA_MAP_FLAG,
  VFIO_DMA_UNMAP_FLAG,
  VFIO_EXTENSION,
  VFIO_IOMMU_DIRTY_PAGES,
  VFIO_IOMMU_DIRTY_PAGES_FLAG,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_TYPE1_INFO_CAP,
  VFIO_IOMMU_UNMAP_DMA,
  vfio_bitmap,
  vfio_iommu_type1_dirty_bitmap,
  vfio_iommu_type1_dirty_bitmap_get,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
} from '../../uapi/vfio.js';
import { PAGE_SIZE } from './context.js';
import type { VfioGroup } from './group.js';
import { InfoCaps, copyFromUser, copyToUser, dv, offsetofend } from './uaccess.js';

const U64_MAX = (1n << 64n) - 1n;
const u64 = (x: bigint): bigint => BigInt.asUintN(64, x);
/** ULONG_MAX, SIZE_MAX on x86-64. */
const SIZE_MAX = U64_MAX;
const PAGE_MASK = u64(~(PAGE_SIZE - 1n));
/** IOMMU_READ / IOMMU_WRITE (from the device's point of view). */
const IOMMU_READ = 1;
const IOMMU_WRITE = 2;
/** DIRTY_BITMAP_PAGES_MAX = INT_MAX bits; DIRTY_BITMAP_SIZE_MAX = its bytes (256 MiB). */
const DIRTY_BITMAP_PAGES_MAX = 0x7fff_ffffn;
const dirtyBitmapBytes = (n: bigint): bigint => ((n + 63n) & ~63n) / 8n;
const DIRTY_BITMAP_SIZE_MAX = dirtyBitmapBytes(DIRTY_BITMAP_PAGES_MAX);
/** access_ok(): a user range must end below TASK_SIZE_MAX (x86-64, 4-level paging). */
const TASK_SIZE_MAX = 0x7fff_ffff_f000n;

/** __ffs(): the lowest set bit's value (the minimum page size of a bitmap). */
const lowestBit = (x: bigint): bigint => x & -x;
const ffsShift = (x: bigint): bigint => {
  let s = 0n;
  if (x === 0n) return 0n;
  while (!((x >> s) & 1n)) s++;
  return s;
};

/** One user DMA mapping (struct vfio_dma): a node of dma_list. */
export class VfioDma extends RbNode {
  /** Pin handles (kernel.mem.pin) of the page-backed parts; VM_PFNMAP parts are not pinned. */
  pins: number[] = [];
  /** Bytes charged to locked_vm for this mapping (dma->locked_vm). */
  locked = 0n;
  /** Unmapped with VFIO_DMA_UNMAP_FLAG_VADDR and not yet given a new vaddr. */
  vaddr_invalid = false;

  constructor(
    readonly iova: bigint,
    public vaddr: bigint,
    public size: bigint,
    /** IOMMU_READ | IOMMU_WRITE */
    readonly prot: number,
  ) {
    super();
  }
}

/** struct vfio_iova: a valid IOVA range, inclusive. */
interface VfioIova {
  start: bigint;
  end: bigint;
}

/** VFIO_CHECK_EXTENSION as type1 answers it (`iommu` null: no container driver yet). */
export function type1CheckExtension(iommu: VfioIommu | null, arg: number, ecap: bigint): number {
  switch (arg) {
    case VFIO_EXTENSION.TYPE1_IOMMU:
    case VFIO_EXTENSION.TYPE1v2_IOMMU:
    case VFIO_EXTENSION.TYPE1_NESTING_IOMMU:
    case VFIO_EXTENSION.UNMAP_ALL:
      return 1;
    case VFIO_EXTENSION.UPDATE_VADDR:
      return iommu ? 1 : 0; // no emulated (mdev) groups in this model
    case VFIO_EXTENSION.DMA_CC_IOMMU:
      // Every domain enforces coherency only if VT-d has Snoop Control (ECAP.SC, bit 7).
      return iommu && iommu.groups.length ? Number((ecap >> 7n) & 1n) : 0;
    default:
      return 0;
  }
}

/** The type1 driver state of one container (struct vfio_iommu). */
export class VfioIommu {
  /** User mappings by IOVA (iommu->dma_list). */
  readonly dmas = new RbRoot<VfioDma>();
  /** Mappings still allowed (dma_entry_limit minus live mappings). */
  dma_avail: number;
  vaddr_invalid_count = 0;
  pgsize_bitmap = PAGE_MASK;
  dirty_page_tracking = false;
  /** Valid IOVA ranges: the domain aperture minus the groups' reserved regions. */
  iova_list: VfioIova[] = [];
  /** Groups attached to the (single) domain. */
  readonly groups: VfioGroup[] = [];
  private readonly translator: DmaTranslator;

  constructor(
    readonly kernel: SimKernel,
    /** VFIO_TYPE1v2_IOMMU semantics (unmap must not bisect; dirty tracking). */
    readonly v2: boolean,
  ) {
    this.dma_avail = kernel.topology.dma_entry_limit;
    this.translator = { translate: (iova, length, write) => this.translate(iova, length, write) };
  }

  /** vfio_iommu_type1_ioctl() */
  ioctl(request: number, arg: IoctlIn): number {
    switch (request) {
      case VFIO_CHECK_EXTENSION.request:
        return type1CheckExtension(this, arg.value, this.kernel.topology.iommu.ecap_reg);
      case VFIO_IOMMU_GET_INFO.request:
        return this.getInfo(arg);
      case VFIO_IOMMU_MAP_DMA.request:
        return this.mapDma(arg);
      case VFIO_IOMMU_UNMAP_DMA.request:
        return this.unmapDma(arg);
      case VFIO_IOMMU_DIRTY_PAGES.request:
        return this.dirtyPages(arg);
      default:
        return kfail('ENOTTY');
    }
  }

  // --- groups -------------------------------------------------------------------------

  /** vfio_iommu_type1_attach_group() */
  attachGroup(group: VfioGroup): void {
    if (this.vaddr_invalid_count) kfail('EBUSY', 'a vaddr is invalid: attaching could need pinning');
    if (this.groups.includes(group)) kfail('EINVAL', 'group already attached');
    const iommu = this.kernel.topology.iommu;
    const aperStart = 0n;
    const aperEnd = iommu.aperture_last;
    if (this.aperConflict(aperStart, aperEnd)) kfail('EINVAL', 'aperture conflicts with existing mappings');
    for (const [a, b] of iommu.reserved)
      if (this.findDma(a, b - a + 1n)) kfail('EINVAL', 'a reserved region is mapped');
    const iova = this.iova_list.map((n) => ({ ...n }));
    aperResize(iova, aperStart, aperEnd);
    resvExclude(iova, iommu.reserved);
    if (!iova.length) kfail('EINVAL', 'no valid IOVA left');
    if (!this.groups.length) {
      // A new domain (the first group); later groups join it (same ops and coherency).
      this.pgsize_bitmap = effectivePgsizes(iommu.pgsize_bitmap);
    }
    this.iova_list = iova;
    this.groups.push(group);
    for (const d of group.devices) d.setTranslator(this.translator);
  }

  /** vfio_iommu_type1_detach_group(): the last group takes every mapping with it. */
  detachGroup(group: VfioGroup): void {
    const i = this.groups.indexOf(group);
    if (i < 0) return;
    this.groups.splice(i, 1);
    for (const d of group.devices) if (d.translator === this.translator) d.setTranslator(null);
    if (!this.groups.length) {
      this.unmapUnpinAll();
      this.pgsize_bitmap = PAGE_MASK; // no domain left
      this.iova_list = [{ start: 0n, end: U64_MAX }];
    } else {
      // The groups left share the domain: its aperture and reserved regions still apply.
      const iova = [{ start: 0n, end: this.kernel.topology.iommu.aperture_last }];
      resvExclude(iova, this.kernel.topology.iommu.reserved);
      this.iova_list = iova;
    }
  }

  /** vfio_iommu_type1_release(): the container lost its driver. */
  release(): void {
    for (const g of [...this.groups]) for (const d of g.devices) d.setTranslator(null);
    this.unmapUnpinAll();
  }

  private aperConflict(start: bigint, end: bigint): boolean {
    if (!this.iova_list.length) return false;
    const first = this.iova_list[0]!;
    const last = this.iova_list[this.iova_list.length - 1]!;
    if (start > last.end || end < first.start) return true;
    if (start > first.start && this.findDma(first.start, start - first.start)) return true;
    if (end < last.end && this.findDma(end + 1n, last.end - end)) return true;
    return false;
  }

  // --- dma_list (vfio_find_dma, vfio_find_dma_first_node, vfio_link_dma) --------------

  /** vfio_find_dma(): a mapping overlapping [start, start + size), by the kernel's walk (u64 wrap as in C). */
  findDma(start: bigint, size: bigint): VfioDma | undefined {
    let node = this.dmas.node;
    while (node) {
      if (u64(start + size) <= node.iova) node = node.left as VfioDma | null;
      else if (start >= u64(node.iova + node.size)) node = node.right as VfioDma | null;
      else return node;
    }
    return undefined;
  }

  /** vfio_find_dma_first_node() */
  private findDmaFirstNode(start: bigint, size: bigint): VfioDma | undefined {
    let res: VfioDma | undefined;
    let node = this.dmas.node;
    while (node) {
      if (start < u64(node.iova + node.size)) {
        res = node;
        if (start >= node.iova) break;
        node = node.left as VfioDma | null;
      } else node = node.right as VfioDma | null;
    }
    if (res && size && res.iova >= u64(start + size)) return undefined;
    return res;
  }

  /** vfio_link_dma() of a mapping still of size 0 (vfio_dma_do_map links it before it grows). */
  private linkDma(dma: VfioDma): void {
    let parent: VfioDma | null = null;
    let left = false;
    let node = this.dmas.node;
    while (node) {
      parent = node;
      left = dma.iova <= node.iova;
      node = (left ? node.left : node.right) as VfioDma | null;
    }
    this.dmas.link(dma, parent, left);
  }

  private next(d: VfioDma): VfioDma | undefined {
    return RbRoot.next(d) ?? undefined;
  }

  /**
   * The IOMMU's translation of `iova` (what the domain maps there): the mapping containing
   * it, searched without wrap. Where mappings overlap (the 2^64 corner above) the first
   * one the walk meets.
   */
  private lookup(iova: bigint): VfioDma | undefined {
    let node = this.dmas.node;
    while (node) {
      if (iova < node.iova) node = node.left as VfioDma | null;
      else if (iova >= node.iova + node.size) node = node.right as VfioDma | null;
      else return node;
    }
    return undefined;
  }

  /** The device's view: the process address behind [iova, iova + length), or null (blocked). */
  translate(iova: bigint, length: number, write: boolean): bigint | null {
    const need = write ? IOMMU_WRITE : IOMMU_READ;
    let d = this.lookup(iova);
    if (!d || !(d.prot & need)) return null;
    const va = d.vaddr + (iova - d.iova);
    // A transfer may run across adjacent mappings when their user memory is contiguous too.
    const end = iova + BigInt(length);
    while (end > d.iova + d.size) {
      const n = this.next(d);
      if (!n || n.iova !== d.iova + d.size || n.vaddr !== d.vaddr + d.size || !(n.prot & need)) return null;
      d = n;
    }
    return va;
  }

  // --- VFIO_IOMMU_GET_INFO ---------------------------------------------------------------

  private getInfo(arg: IoctlIn): number {
    let minsz = offsetofend(vfio_iommu_type1_info, 'iova_pgsizes');
    const k = copyFromUser(arg, minsz, vfio_iommu_type1_info.size);
    const info = vfio_iommu_type1_info.view(k);
    if (info.argsz < minsz) kfail('EINVAL', 'argsz too small');
    minsz = Math.min(info.argsz, vfio_iommu_type1_info.size);
    info.flags = VFIO_IOMMU_INFO.PGSIZES;
    info.iova_pgsizes = this.pgsize_bitmap;

    const caps = new InfoCaps();
    const mig = dv(caps.add(32, VFIO_IOMMU_TYPE1_INFO_CAP.CAP_MIGRATION, 1));
    mig.setUint32(8, 0, true);
    mig.setBigUint64(16, lowestBit(this.pgsize_bitmap), true);
    mig.setBigUint64(24, DIRTY_BITMAP_SIZE_MAX, true);
    dv(caps.add(12, VFIO_IOMMU_TYPE1_INFO_CAP.DMA_AVAIL, 1)).setUint32(8, this.dma_avail, true);
    if (this.iova_list.length) {
      const n = this.iova_list.length;
      const c = dv(caps.add(16 + 16 * n, VFIO_IOMMU_TYPE1_INFO_CAP.CAP_IOVA_RANGE, 1));
      c.setUint32(8, n, true);
      this.iova_list.forEach((r, i) => {
        c.setBigUint64(16 + 16 * i, r.start, true);
        c.setBigUint64(24 + 16 * i, r.end, true);
      });
    }
    if (caps.size) {
      info.flags |= VFIO_IOMMU_INFO.CAPS;
      if (info.argsz < vfio_iommu_type1_info.size + caps.size) {
        info.argsz = vfio_iommu_type1_info.size + caps.size;
      } else {
        copyToUser(arg, vfio_iommu_type1_info.size, caps.shifted(vfio_iommu_type1_info.size));
        info.cap_offset = vfio_iommu_type1_info.size;
      }
    }
    copyToUser(arg, 0, k.subarray(0, minsz));
    return 0;
  }

  // --- VFIO_IOMMU_MAP_DMA ----------------------------------------------------------------

  private mapDma(arg: IoctlIn): number {
    const minsz = offsetofend(vfio_iommu_type1_dma_map, 'size');
    const map = vfio_iommu_type1_dma_map.view(copyFromUser(arg, minsz));
    const mask = VFIO_DMA_MAP_FLAG.READ | VFIO_DMA_MAP_FLAG.WRITE | VFIO_DMA_MAP_FLAG.VADDR;
    if (map.argsz < minsz || map.flags & ~mask) kfail('EINVAL', 'argsz or unknown flags');
    return this.doMap(map.flags, map.iova, map.vaddr, map.size);
  }

  /** vfio_dma_do_map() */
  private doMap(flags: number, iova: bigint, vaddr: bigint, size: bigint): number {
    const setVaddr = (flags & VFIO_DMA_MAP_FLAG.VADDR) !== 0;
    let prot = 0;
    if (flags & VFIO_DMA_MAP_FLAG.WRITE) prot |= IOMMU_WRITE;
    if (flags & VFIO_DMA_MAP_FLAG.READ) prot |= IOMMU_READ;
    if ((prot && setVaddr) || (!prot && !setVaddr)) kfail('EINVAL', 'READ/WRITE xor VADDR');
    const pgsize = lowestBit(this.pgsize_bitmap);
    if (!size || (size | iova | vaddr) & (pgsize - 1n)) kfail('EINVAL', 'size 0 or not page aligned');
    if (u64(iova + size - 1n) < iova || u64(vaddr + size - 1n) < vaddr) kfail('EINVAL', 'wraps');

    const found = this.findDma(iova, size);
    if (setVaddr) {
      if (!found) kfail('ENOENT', 'no mapping to give a vaddr');
      if (!found.vaddr_invalid || found.iova !== iova || found.size !== size)
        kfail('EINVAL', 'not the exact invalidated mapping');
      found.vaddr = vaddr;
      found.vaddr_invalid = false;
      this.vaddr_invalid_count--;
      return 0;
    }
    if (found) kfail('EEXIST', 'overlaps an existing mapping');
    if (!this.dma_avail) kfail('ENOSPC', 'dma_entry_limit reached');
    if (!this.iovaDmaValid(iova, iova + size - 1n)) kfail('EINVAL', 'outside the valid IOVA ranges');

    this.dma_avail--;
    const dma = new VfioDma(iova, vaddr, 0n, prot);
    this.linkDma(dma); // linked at size 0, grown as it is mapped
    dma.size = size;
    try {
      this.pinMap(dma);
    } catch (e) {
      this.removeDma(dma); // vfio_remove_dma() of the partial mapping
      throw e;
    }
    if (this.dirty_page_tracking && size / pgsize > DIRTY_BITMAP_PAGES_MAX) {
      this.removeDma(dma);
      kfail('EINVAL', 'too large for a dirty bitmap');
    }
    return 0;
  }

  private iovaDmaValid(start: bigint, end: bigint): boolean {
    if (!this.iova_list.length) return true;
    return this.iova_list.some((n) => start >= n.start && end <= n.end);
  }

  /**
   * vfio_pin_map_dma(): pins the user pages in order; the first page that cannot be pinned
   * (EFAULT) or that would pass RLIMIT_MEMLOCK (ENOMEM) fails the whole map. VM_PFNMAP
   * memory (a BAR) is mapped without pinning or accounting.
   */
  private pinMap(dma: VfioDma): void {
    const mem = this.kernel.mem;
    const write = (dma.prot & IOMMU_WRITE) !== 0;
    try {
      mem.checkPinnable(dma.vaddr, dma.size, write, true);
    } catch (e) {
      if (!(e instanceof KernelErrno) || e.errno !== ERRNO.EFAULT) throw e;
      // ENOMEM wins if the limit is passed before the bad page is reached.
      const good = this.pinnablePrefix(dma.vaddr, dma.size, write);
      if (good && mem.locked + this.lockable(dma.vaddr, good) > mem.memlock.cur)
        kfail('ENOMEM', 'RLIMIT_MEMLOCK exceeded');
      throw e;
    }
    const locked = this.lockable(dma.vaddr, dma.size);
    mem.lock(locked);
    dma.locked = locked;
    for (const v of mem.covering(dma.vaddr, dma.size) ?? []) {
      if (v.pfnmap) continue;
      const s = v.start > dma.vaddr ? v.start : dma.vaddr;
      const e = v.end < dma.vaddr + dma.size ? v.end : dma.vaddr + dma.size;
      dma.pins.push(mem.pin(s, e - s));
    }
  }

  /** Bytes of [vaddr, vaddr + size) that are ordinary pages (charged to locked_vm). */
  private lockable(vaddr: bigint, size: bigint): bigint {
    let n = 0n;
    for (const v of this.kernel.mem.covering(vaddr, size) ?? []) {
      if (v.pfnmap) continue;
      const s = v.start > vaddr ? v.start : vaddr;
      const e = v.end < vaddr + size ? v.end : vaddr + size;
      n += e - s;
    }
    return n;
  }

  /** The longest page-aligned prefix of [vaddr, vaddr + size) that can be pinned. */
  private pinnablePrefix(vaddr: bigint, size: bigint, write: boolean): bigint {
    let lo = 0n;
    let hi = size / PAGE_SIZE;
    while (lo < hi) {
      const mid = (lo + hi + 1n) / 2n;
      try {
        this.kernel.mem.checkPinnable(vaddr, mid * PAGE_SIZE, write, true);
        lo = mid;
      } catch {
        hi = mid - 1n;
      }
    }
    return lo * PAGE_SIZE;
  }

  /** vfio_remove_dma(): unmap, unpin, unaccount. */
  private removeDma(dma: VfioDma): void {
    const mem = this.kernel.mem;
    for (const p of dma.pins) mem.unpin(p);
    dma.pins = [];
    mem.unlock(dma.locked);
    dma.locked = 0n;
    this.dmas.erase(dma);
    if (dma.vaddr_invalid) this.vaddr_invalid_count--;
    this.dma_avail++;
  }

  /** vfio_iommu_unmap_unpin_all(): removes rb_first() until the tree is empty. */
  private unmapUnpinAll(): void {
    for (let d = this.dmas.first(); d; d = this.dmas.first()) this.removeDma(d);
  }

  // --- VFIO_IOMMU_UNMAP_DMA --------------------------------------------------------------

  private unmapDma(arg: IoctlIn): number {
    const minsz = offsetofend(vfio_iommu_type1_dma_unmap, 'size');
    const k = copyFromUser(arg, minsz);
    const unmap = vfio_iommu_type1_dma_unmap.view(k);
    const F = VFIO_DMA_UNMAP_FLAG;
    if (unmap.argsz < minsz || unmap.flags & ~(F.GET_DIRTY_BITMAP | F.VADDR | F.ALL))
      kfail('EINVAL', 'argsz or unknown flags');
    if (unmap.flags & F.GET_DIRTY_BITMAP && unmap.flags & (F.ALL | F.VADDR))
      kfail('EINVAL', 'GET_DIRTY_BITMAP with ALL or VADDR');
    let bitmap: { pgsize: bigint; size: bigint; data: bigint } | null = null;
    if (unmap.flags & F.GET_DIRTY_BITMAP) {
      if (unmap.argsz < minsz + vfio_bitmap.size) kfail('EINVAL', 'no room for the bitmap');
      const b = vfio_bitmap.view(copyFromUser(arg, vfio_bitmap.size, vfio_bitmap.size, minsz));
      bitmap = { pgsize: b.pgsize, size: b.size, data: b.data };
      if (!accessOk(bitmap.data, bitmap.size)) kfail('EINVAL', 'bitmap outside user space');
      verifyBitmapSize(unmap.size >> ffsShift(bitmap.pgsize), bitmap.size);
    }
    const unmapped = this.doUnmap(unmap.flags, unmap.iova, unmap.size, bitmap);
    unmap.size = unmapped;
    copyToUser(arg, 0, k.subarray(0, minsz));
    return 0;
  }

  /** vfio_dma_do_unmap(): returns the bytes unmapped. */
  private doUnmap(
    flags: number,
    iova: bigint,
    sizeIn: bigint,
    bitmap: { pgsize: bigint; data: bigint } | null,
  ): bigint {
    const unmapAll = (flags & VFIO_DMA_UNMAP_FLAG.ALL) !== 0;
    const invalidateVaddr = (flags & VFIO_DMA_UNMAP_FLAG.VADDR) !== 0;
    const pgsize = lowestBit(this.pgsize_bitmap);
    let size = sizeIn;
    if (iova & (pgsize - 1n)) kfail('EINVAL', 'iova not page aligned');
    if (unmapAll) {
      if (iova || size) kfail('EINVAL', 'UNMAP_ALL needs iova = size = 0');
      size = U64_MAX;
    } else if (!size || size & (pgsize - 1n) || u64(iova + size - 1n) < iova || size > SIZE_MAX) {
      kfail('EINVAL', 'size 0, unaligned or wrapping');
    }
    if (bitmap && (!this.dirty_page_tracking || bitmap.pgsize !== pgsize))
      kfail('EINVAL', 'dirty tracking off or wrong bitmap page size');

    // v2: the range must not bisect a mapping at either end.
    if (this.v2 && !unmapAll) {
      let d = this.findDma(iova, 1n);
      if (d && d.iova !== iova) kfail('EINVAL', 'unmap bisects a mapping at its start');
      d = this.findDma(u64(iova + size - 1n), 0n);
      if (d && u64(d.iova + d.size) !== u64(iova + size))
        kfail('EINVAL', 'unmap bisects a mapping at its end');
    }

    let unmapped = 0n;
    const first = this.findDmaFirstNode(iova, size);
    const limit = u64(iova + size);
    const touched: VfioDma[] = [];
    for (let d = first; d;) {
      if (d.iova >= limit) break;
      if (!this.v2 && iova > d.iova) break;
      const next = this.next(d);
      if (invalidateVaddr) {
        if (d.vaddr_invalid) {
          // Already invalid: undo this call's invalidations and fail.
          for (const t of touched) {
            t.vaddr_invalid = false;
            this.vaddr_invalid_count--;
          }
          kfail('EINVAL', 'vaddr already invalid');
        }
        d.vaddr_invalid = true;
        this.vaddr_invalid_count++;
        touched.push(d);
        unmapped += d.size;
        d = next;
        continue;
      }
      if (bitmap) this.updateUserBitmap(bitmap.data, d, iova, pgsize);
      unmapped += d.size;
      this.removeDma(d);
      d = next;
    }
    return unmapped;
  }

  /**
   * update_user_bitmap(): every page of an IOMMU-mapped vfio_dma reads as dirty (these groups
   * cannot report finer dirtiness). Bits [shift, shift + nbits) of the u64 words from
   * `copy_offset` are set; the low `shift` bits of the first word are kept; the rest of the
   * words written is zero, exactly as the kernel's copy_to_user leaves them.
   */
  private updateUserBitmap(data: bigint, dma: VfioDma, base: bigint, pgsize: bigint): void {
    const pgshift = ffsShift(pgsize);
    const nbits = dma.size >> pgshift;
    const bitOffset = (dma.iova - base) >> pgshift;
    const copyOffset = bitOffset / 64n;
    const shift = bitOffset % 64n;
    const bytes = Number(dirtyBitmapBytes(nbits + shift));
    const at = data + copyOffset * 8n;
    const user = this.kernel.mem.bytes(at, bytes);
    const leftover = shift ? dv(user).getBigUint64(0, true) & ((1n << shift) - 1n) : 0n;
    const out = new Uint8Array(bytes);
    setBits(out, Number(shift), Number(nbits));
    if (shift) {
      const o = dv(out);
      o.setBigUint64(0, o.getBigUint64(0, true) | leftover, true);
    }
    user.set(out);
  }

  // --- VFIO_IOMMU_DIRTY_PAGES ------------------------------------------------------------

  private dirtyPages(arg: IoctlIn): number {
    if (!this.v2) kfail('EACCES', 'dirty tracking needs type1v2');
    const minsz = offsetofend(vfio_iommu_type1_dirty_bitmap, 'flags');
    const dirty = vfio_iommu_type1_dirty_bitmap.view(copyFromUser(arg, minsz));
    const F = VFIO_IOMMU_DIRTY_PAGES_FLAG;
    if (dirty.argsz < minsz || dirty.flags & ~(F.START | F.STOP | F.GET_BITMAP)) kfail('EINVAL');
    // Exactly one flag (__ffs(0) == __fls(0) on x86 lets 0 through to the final EINVAL).
    if (dirty.flags & (dirty.flags - 1)) kfail('EINVAL', 'one flag at a time');
    const pgsize = lowestBit(this.pgsize_bitmap);
    if (dirty.flags & F.START) {
      if (!this.dirty_page_tracking) {
        for (const d of this.dmas)
          if (d.size / pgsize > DIRTY_BITMAP_PAGES_MAX) kfail('EINVAL', 'a mapping is too large');
        this.dirty_page_tracking = true;
      }
      return 0;
    }
    if (dirty.flags & F.STOP) {
      this.dirty_page_tracking = false;
      return 0;
    }
    if (dirty.flags & F.GET_BITMAP) {
      const dataSize = dirty.argsz - minsz;
      const get = vfio_iommu_type1_dirty_bitmap_get;
      if (!dataSize || dataSize < get.size) kfail('EINVAL', 'no room for the range');
      const range = get.view(copyFromUser(arg, get.size, get.size, minsz));
      if (u64(range.iova + range.size) < range.iova) kfail('EINVAL', 'range wraps');
      if (!accessOk(range.bitmap_data, range.bitmap_size)) kfail('EINVAL', 'bitmap outside user space');
      verifyBitmapSize(range.size >> ffsShift(range.bitmap_pgsize), range.bitmap_size);
      if (range.bitmap_pgsize !== pgsize) kfail('EINVAL', 'bitmap page size is not the minimum');
      if (range.iova & (pgsize - 1n)) kfail('EINVAL', 'iova not page aligned');
      if (!range.size || range.size & (pgsize - 1n)) kfail('EINVAL', 'size 0 or unaligned');
      if (!this.dirty_page_tracking) kfail('EINVAL', 'dirty tracking is off');
      this.iovaDirtyBitmap(range.bitmap_data, range.iova, range.size, pgsize);
      return 0;
    }
    return kfail('EINVAL');
  }

  /** vfio_iova_dirty_bitmap(): the range must cover whole mappings. */
  private iovaDirtyBitmap(data: bigint, iova: bigint, size: bigint, pgsize: bigint): void {
    let d = this.findDma(iova, 1n);
    if (d && d.iova !== iova) kfail('EINVAL', 'range bisects a mapping');
    d = this.findDma(u64(iova + size - 1n), 0n);
    if (d && u64(d.iova + d.size) !== u64(iova + size)) kfail('EINVAL', 'range bisects a mapping');
    for (const m of this.dmas) {
      if (m.iova < iova) continue;
      if (m.iova > iova + size - 1n) break;
      this.updateUserBitmap(data, m, iova, pgsize);
    }
  }
}

/** vfio_update_pgsize_bitmap() for one domain: sub-page sizes fold into PAGE_SIZE. */
function effectivePgsizes(domain: bigint): bigint {
  let b = U64_MAX & domain;
  if (b & ~PAGE_MASK) b = (b & PAGE_MASK) | PAGE_SIZE;
  return b;
}

/** vfio_iommu_aper_resize() */
function aperResize(list: VfioIova[], start: bigint, end: bigint): void {
  if (!list.length) {
    list.push({ start, end });
    return;
  }
  while (list.length) {
    const n = list[0]!;
    if (start < n.start) break;
    if (start >= n.start && start < n.end) {
      n.start = start;
      break;
    }
    list.shift();
  }
  for (let i = 0; i < list.length;) {
    const n = list[i]!;
    if (end > n.end) {
      i++;
      continue;
    }
    if (end > n.start && end <= n.end) {
      n.end = end;
      i++;
      continue;
    }
    list.splice(i, 1);
  }
}

/** vfio_iommu_resv_exclude(): cuts each reserved range out of the valid list. */
function resvExclude(list: VfioIova[], reserved: Array<[bigint, bigint]>): void {
  for (const [start, end] of reserved) {
    for (let i = 0; i < list.length;) {
      const n = list[i]!;
      if (start > n.end || end < n.start) {
        i++;
        continue;
      }
      const repl: VfioIova[] = [];
      if (start > n.start) repl.push({ start: n.start, end: start - 1n });
      if (end < n.end) repl.push({ start: end + 1n, end: n.end });
      list.splice(i, 1, ...repl);
      i += repl.length;
    }
  }
}

/** verify_bitmap_size() */
function verifyBitmapSize(npages: bigint, bitmapSize: bigint): void {
  if (!npages || !bitmapSize || bitmapSize > DIRTY_BITMAP_SIZE_MAX || bitmapSize < dirtyBitmapBytes(npages))
    kfail('EINVAL', 'bitmap size does not fit the range');
}

function accessOk(addr: bigint, size: bigint): boolean {
  return size <= TASK_SIZE_MAX && addr <= TASK_SIZE_MAX - size;
}

/** Sets bits [from, from + n) of a little-endian bitmap (n may pass 2^31: no 32-bit bit ops). */
function setBits(b: Uint8Array, from: number, n: number): void {
  const end = from + n;
  let i = from;
  for (; i < end && i % 8; i++) b[Math.floor(i / 8)] |= 1 << (i % 8);
  const whole = Math.floor((end - i) / 8);
  if (whole > 0) {
    b.fill(0xff, i / 8, i / 8 + whole);
    i += whole * 8;
  }
  for (; i < end; i++) b[Math.floor(i / 8)] |= 1 << (i % 8);
}
