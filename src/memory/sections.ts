/**
 * QEMU's section rules (hw/vfio/listener.c): which memory-region sections a container
 * DMA-maps, and over which IOVA range. vfio_listener_valid_section() decides skip vs
 * reject, vfio_get_section_iova_range() trims to host pages, and region_add's RAM-device
 * branch maps BARs only when aligned to the IOMMU's smallest page, with non-fatal failure.
 * The same rules give the range region_del unmaps, so add and del always agree.
 */
import type { IovaRange } from '../uapi/iommufd.js';

/** What backs a region: anonymous memory at `vaddr`, or a file (memfd) mapped at `vaddr`. */
export type RegionBacking = { vaddr: bigint } | { fd: number; offset: bigint; vaddr: bigint };

/** The memory-region kinds the listener distinguishes (memory_region_is_ram/_rom/_ram_device/_iommu). */
export type RegionKind = 'ram' | 'rom' | 'ram_device' | 'iommu' | 'mmio';

/** A MemoryRegionSection as the listener sees it: guest-physical range, kind and host backing. */
export interface MemoryRegionSection {
  /** offset_within_address_space: the guest-physical (= IOVA, without vIOMMU) start. */
  readonly gpa: bigint;
  readonly size: bigint;
  readonly kind: RegionKind;
  readonly readonly: boolean;
  /** Host memory of the section's first byte. */
  readonly backing: RegionBacking;
}

/** One DMA mapping of a container: [iova, iova + size) → vaddr. */
export interface DmaMapping {
  readonly iova: bigint;
  readonly size: bigint;
  readonly vaddr: bigint;
  readonly readonly: boolean;
}

/** Why a section is silently skipped (a trace point in QEMU, not an error). */
export type SkipReason =
  /** Not RAM/ROM/ram_device: MMIO is never DMA-mapped. */
  | 'not-ram'
  /** An IOMMU region: handled by the vIOMMU notifier, not mapped here. */
  | 'iommu'
  /** Bit 63 set: a spurious mapping while the guest sizes a 64-bit BAR. */
  | 'bar-sizing'
  /** Nothing left after aligning start up and end down to host pages. */
  | 'empty-after-align'
  /** A RAM device (BAR) not aligned to the container's minimum IOMMU page. */
  | 'ram-device-unaligned';

/** Why a section is refused (error_report in QEMU; the caller decides how fatal). */
export type RejectReason =
  /** iova and host address differ in their offset within a host page. */
  | 'misaligned-offset'
  /** The trimmed range is not inside one of the container's IOVA ranges. */
  | 'outside-iova-ranges';

/** The outcome of the section rules for one section. */
export type SectionDecision =
  | {
      readonly action: 'map';
      readonly mapping: DmaMapping;
      /** A RAM device (BAR, p2p): a failed map is a warning (once), not fatal. */
      readonly nonFatal: boolean;
    }
  | { readonly action: 'skip'; readonly reason: SkipReason }
  | { readonly action: 'reject'; readonly reason: RejectReason; readonly message: string };

/** Container properties the rules depend on besides the host page size. */
export interface SectionLimits {
  /** Smallest IOMMU page (lowest bit of pgsizes / out_iova_alignment); defaults to the host page. */
  readonly minIommuPageSize?: bigint;
  /** The container's usable IOVA ranges; absent = the whole 64-bit space. */
  readonly iovaRanges?: readonly IovaRange[];
}

const BIT63 = 1n << 63n;
const hex = (v: bigint) => `0x${v.toString(16)}`;

/**
 * Applies vfio_listener_valid_section, vfio_get_section_iova_range and region_add's
 * per-kind rules to `section`: the mapping to make (or unmap on del), a skip with its
 * reason, or a rejection with a message. `hostPageSize` must be a power of two.
 */
export function sectionToMapping(
  section: MemoryRegionSection,
  hostPageSize: bigint,
  limits: SectionLimits = {},
): SectionDecision {
  if (section.kind === 'mmio') return { action: 'skip', reason: 'not-ram' };
  if (section.gpa & BIT63) return { action: 'skip', reason: 'bar-sizing' };
  if (section.kind === 'iommu') return { action: 'skip', reason: 'iommu' };

  const mask = hostPageSize - 1n;
  const vaddr0 = section.backing.vaddr;
  if ((section.gpa & mask) !== (vaddr0 & mask)) {
    return {
      action: 'reject',
      reason: 'misaligned-offset',
      message:
        `received unaligned region iova=${hex(section.gpa)} vaddr=${hex(vaddr0)} ` +
        `host page size=${hex(hostPageSize)}`,
    };
  }

  // Int128 in QEMU: gpa + size may reach 2^64, so bigint keeps the carry.
  const iova = (section.gpa + mask) & ~mask;
  const end = (section.gpa + section.size) & ~mask;
  if (iova >= end) return { action: 'skip', reason: 'empty-after-align' };
  const size = end - iova;

  const nonFatal = section.kind === 'ram_device';
  if (nonFatal) {
    const pgmask = (limits.minIommuPageSize ?? hostPageSize) - 1n;
    if (iova & pgmask || size & pgmask) return { action: 'skip', reason: 'ram-device-unaligned' };
  }

  const ranges = limits.iovaRanges;
  if (ranges && !ranges.some((r) => r.start <= iova && end - 1n <= r.last)) {
    return {
      action: 'reject',
      reason: 'outside-iova-ranges',
      message: `iova range [${hex(iova)}, ${hex(end - 1n)}] is outside the container's valid IOVA ranges`,
    };
  }

  return {
    action: 'map',
    mapping: {
      iova,
      size,
      vaddr: vaddr0 + (iova - section.gpa),
      readonly: section.readonly || section.kind === 'rom',
    },
    nonFatal,
  };
}
