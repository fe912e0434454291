/**
 * Expected DMA faults. Some kernel tests make a device DMA to an IOVA the IOMMU must block
 * (unmapped, or read-only), and the guest kernel logs each blocked access (VT-d: `DMAR: [DMA
 * Write NO_PASID] ... PTE Write access is not set`; virtio-iommu: a page fault line). Such a
 * test runs that DMA inside {@link expectDmaFault}, which brackets it with two marker records
 * in the kernel log (/dev/kmsg, so they are ordered with the fault lines themselves);
 * vm/run.ts reads the console through a {@link DmaFaultLabels} and labels each fault line as
 * expected, naming the test's reason, or as UNEXPECTED, so that a fault nobody provoked
 * stands out. On the simulated kernel nothing is logged and the markers are not written.
 */
import fs from 'node:fs';

/** How long after the DMA the window stays open for the fault's log line. */
const FAULT_LOG_GRACE_MS = 500;

/** The kernel log marker: `@@VFIO_ENGINE_DMA_FAULT begin <why>` ... `@@VFIO_ENGINE_DMA_FAULT end`. */
export const DMA_FAULT_MARKER = '@@VFIO_ENGINE_DMA_FAULT';

// What both emulated IOMMUs' drivers print for a blocked DMA (Linux 6.12
// drivers/iommu/intel/dmar.c dmar_fault and dmar_fault_do_one: "DRHD: handling fault status
// reg", "[DMA Write NO_PASID] Request device ... fault addr"; drivers/iommu/virtio-iommu.c
// viommu_fault_handler: "page fault from EP ..."). Both are ratelimited; the "callbacks
// suppressed" note that may follow later is no fault of its own.
const FAULT_LINE = /DMAR: \[DMA (Read|Write)|DMAR: DRHD: handling fault|fault from EP \d+/;

/**
 * Runs `dma`, which the test expects the IOMMU to block, between the markers, so the guest's
 * fault lines are labelled as expected (with `why`). The result or error of `dma` passes through.
 */
export async function expectDmaFault<T>(why: string, dma: () => Promise<T>): Promise<T> {
  const guest = process.env.VFIO_ENGINE_GUEST === '1';
  // KERN_ERR (<3>): printed on the console even with `quiet`, as the fault lines are.
  if (guest) fs.writeFileSync('/dev/kmsg', `<3>${DMA_FAULT_MARKER} begin ${why.replace(/\s+/g, ' ')}\n`);
  try {
    return await dma();
  } finally {
    if (guest) {
      // The device may finish before the IOMMU's fault interrupt is handled on the other vCPU
      // (seen once under TCG): give the kernel time to log it inside the window.
      await new Promise((resolve) => setTimeout(resolve, FAULT_LOG_GRACE_MS));
      fs.writeFileSync('/dev/kmsg', `<3>${DMA_FAULT_MARKER} end\n`);
    }
  }
}

/**
 * Reads the guest console line by line: labels fault lines, drops the markers, and counts
 * the expected and unexpected faults.
 */
export class DmaFaultLabels {
  /** Fault lines seen inside an {@link expectDmaFault} window. */
  expected = 0;
  /** Fault lines seen outside any window, each as printed. */
  readonly unexpected: string[] = [];
  private why: string | null = null;

  /** The line to show for `line` (without its newline), or null for a marker line. */
  label(line: string): string | null {
    const at = line.indexOf(DMA_FAULT_MARKER);
    if (at >= 0) {
      const rest = line.slice(at + DMA_FAULT_MARKER.length).trim();
      this.why = rest.startsWith('begin') ? rest.slice('begin'.length).trim() || 'expected' : null;
      return null;
    }
    if (!FAULT_LINE.test(line) || line.includes('callbacks suppressed')) return line;
    if (this.why !== null) {
      this.expected++;
      return `${line}   [expected DMA fault: ${this.why}]`;
    }
    this.unexpected.push(line.trim());
    return `${line}   [UNEXPECTED DMA fault: no test expects one here]`;
  }
}
