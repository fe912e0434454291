/**
 * QEMU's edu device (hw/misc/edu.c, QEMU 7.2) as far as the engine's tests use it: the
 * identification and liveness registers and the DMA engine. The registers live in BAR0's
 * memfd, which the user maps through the device fd; the kernel maps it too and watches the
 * command register from the kernel thread's poll loop. DMA goes through the IOMMU
 * translation installed on the device (type1 container or iommufd), so an unmapped IOVA is
 * blocked and the memory stays untouched, as the real IOMMU does.
 */
import { KernelErrno } from '../errno.js';
import type { VfioPciDevice } from './pci.js';

/** Register offsets in BAR0. */
export const EDU = {
  ID: 0x00,
  LIVENESS: 0x04,
  STATUS: 0x20,
  IRQ_STATUS: 0x24,
  DMA_SRC: 0x80,
  DMA_DST: 0x88,
  DMA_CNT: 0x90,
  DMA_CMD: 0x98,
  /** Value of the identification register: version 1.0, 0xed. */
  ID_VALUE: 0x010000ed,
  CMD_RUN: 0x1,
  /** Direction bit: 0 = RAM to device (EDU_DMA_FROM_PCI), 1 = device to RAM. */
  CMD_TO_RAM: 0x2,
  CMD_IRQ: 0x4,
  /** irq_status bit raised by a DMA completion (DMA_IRQ). */
  DMA_IRQ: 0x100,
  /** The device's DMA buffer, in device address space. */
  BUF_START: 0x40000n,
  BUF_SIZE: 4096n,
  /** DMA_BITS: edu masks DMA addresses to 28 bits (edu_clamp_addr). */
  DMA_MASK: (1n << 28n) - 1n,
} as const;

/** A DMA the device could not do; QEMU would log it (IOMMU fault) or abort the VM (range). */
export interface EduFault {
  /** bus-master: bus mastering off; iommu: no translation or no permission; range: outside the buffer. */
  kind: 'bus-master' | 'iommu' | 'range';
  /** The (masked) bus address of the transfer, or the buffer address for 'range'. */
  addr: bigint;
  count: bigint;
  /** The device was writing to memory (device to RAM). */
  write: boolean;
}

/** The edu device's state and DMA engine. */
export class EduEngine {
  /** Device-internal DMA buffer (device addresses 0x40000..0x40fff). */
  readonly buffer = new Uint8Array(Number(EDU.BUF_SIZE));
  /** DMAs refused, oldest first. */
  readonly faults: EduFault[] = [];
  /** DMAs completed. */
  transfers = 0;
  private regs: DataView | null = null;
  private mapping: { addr: bigint; length: bigint } | null = null;
  private liveness = 0;

  constructor(private readonly dev: VfioPciDevice) {}

  /** Whether the kernel has BAR0 mapped (the device is open), so poll() has work to watch. */
  get attached(): boolean {
    return this.regs !== null;
  }

  /** Maps BAR0 for the kernel and stamps the read-only registers (first open). */
  attach(): void {
    if (this.regs) return;
    this.mapping = this.dev.mapBarForKernel(0);
    const bytes = this.dev.kernel.host.memory(this.mapping.addr, 0x100);
    this.regs = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.regs.setUint32(EDU.ID, EDU.ID_VALUE, true);
    this.liveness = this.regs.getUint32(EDU.LIVENESS, true);
  }

  /** Unmaps BAR0 (last close): the kernel thread stops polling for this device. */
  detach(): void {
    if (!this.mapping) return;
    this.regs = null;
    this.dev.kernel.host.munmap(this.mapping.addr, this.mapping.length);
    this.mapping = null;
  }

  /** A write through pread/pwrite on BAR0 (the device sees each register write). */
  mmioWritten(pos: number, data: Uint8Array): void {
    if (!this.regs) return;
    const r = this.regs;
    if (pos <= EDU.LIVENESS && pos + data.byteLength >= EDU.LIVENESS + 4) {
      this.liveness = ~r.getUint32(EDU.LIVENESS, true) >>> 0;
      r.setUint32(EDU.LIVENESS, this.liveness, true);
    }
    r.setUint32(EDU.ID, EDU.ID_VALUE, true);
  }

  /**
   * One step of the device: keeps the read-only registers, inverts a new liveness value
   * (writes through the mmap are only seen here), and runs a started DMA to completion.
   */
  poll(): boolean {
    const r = this.regs;
    if (!r) return false;
    r.setUint32(EDU.ID, EDU.ID_VALUE, true);
    const live = r.getUint32(EDU.LIVENESS, true);
    if (live !== this.liveness) {
      this.liveness = ~live >>> 0;
      r.setUint32(EDU.LIVENESS, this.liveness, true);
    }
    const cmd = r.getUint32(EDU.DMA_CMD, true);
    if (!(cmd & EDU.CMD_RUN)) return false;
    this.dma(
      r.getBigUint64(EDU.DMA_SRC, true),
      r.getBigUint64(EDU.DMA_DST, true),
      r.getBigUint64(EDU.DMA_CNT, true),
      (cmd & EDU.CMD_TO_RAM) !== 0,
    );
    r.setUint32(EDU.DMA_CMD, cmd & ~EDU.CMD_RUN, true);
    if (cmd & EDU.CMD_IRQ) r.setUint32(EDU.IRQ_STATUS, r.getUint32(EDU.IRQ_STATUS, true) | EDU.DMA_IRQ, true);
    return true;
  }

  // edu_dma_timer(): the buffer side must lie inside the buffer (QEMU 7.2's edu_check_range
  // refuses a transfer that ends exactly at its end, and aborts the VM; we record a fault).
  private dma(src: bigint, dst: bigint, cnt: bigint, toRam: boolean): void {
    const bufAddr = toRam ? src : dst;
    const end = bufAddr + cnt;
    const bufEnd = EDU.BUF_START + EDU.BUF_SIZE;
    const within = (a: bigint) => EDU.BUF_START <= a && a < bufEnd;
    if (!(within(bufAddr) && end > bufAddr && within(end))) {
      this.faults.push({ kind: 'range', addr: bufAddr, count: cnt, write: toRam });
      return;
    }
    const busAddr = (toRam ? dst : src) & EDU.DMA_MASK;
    const fault = (kind: EduFault['kind']) =>
      this.faults.push({ kind, addr: busAddr, count: cnt, write: toRam });
    if (!this.dev.busMaster) return void fault('bus-master');
    const va = this.dev.translator?.translate(busAddr, Number(cnt), toRam) ?? null;
    if (va === null) return void fault('iommu');
    let mem: Uint8Array;
    try {
      mem = this.dev.kernel.mem.bytes(va, Number(cnt));
    } catch (e) {
      if (e instanceof KernelErrno) return void fault('iommu');
      throw e;
    }
    const at = Number(bufAddr - EDU.BUF_START);
    const buf = this.buffer.subarray(at, at + Number(cnt));
    if (toRam) {
      mem.set(buf);
      this.dev.logWrite(busAddr, Number(cnt));
    } else {
      buf.set(mem);
    }
    this.transfers++;
  }
}
