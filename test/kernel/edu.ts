/**
 * A driver for QEMU's `edu` device (hw/misc/edu.c) over a VFIO device fd, for the
 * end-to-end DMA tests: config space through region 7 (pread/pwrite), BAR0 mmapped
 * through the device fd, and the device's DMA engine. Facts from /work/shared/vm/README.md.
 */
import { expect } from 'chai';
import { MAP, PROT } from '../../src/uapi/libc.js';
import { VFIO_DEVICE_GET_REGION_INFO, VFIO_PCI_REGION, vfio_region_info } from '../../src/uapi/index.js';
import type { Resources } from './kit.js';

/** The id register's value: version 1.0, 0xed. */
export const EDU_ID = 0x010000ed;
/** Device address of edu's 4 KiB DMA buffer. */
export const EDU_DMA_BUFFER = 0x40000n;
/** QEMU 7.2 aborts the whole VM on a transfer of the full 4096 bytes: stay below. */
export const EDU_MAX_TRANSFER = 4095;
/** edu masks DMA addresses to 28 bits: IOVAs must stay below this. */
export const EDU_DMA_LIMIT = 1n << 28n;

const REG_ID = 0x00;
/** Card liveness check: a write stores its bitwise NOT. */
export const REG_LIVENESS = 0x04;
const REG_DMA_SRC = 0x80;
const REG_DMA_DST = 0x88;
const REG_DMA_COUNT = 0x90;
const REG_DMA_CMD = 0x98;
const CMD_RUN = 1;
const CMD_TO_RAM = 2; // direction bit: 0 = RAM to device, 1 = device to RAM
const PCI_COMMAND = 4;
const PCI_COMMAND_MEMORY = 1 << 1;
const PCI_COMMAND_MASTER = 1 << 2;

/** One edu device opened through VFIO (either backend: only the device fd matters here). */
export class Edu {
  private regs?: Uint32Array;
  private bar0?: bigint;

  constructor(
    private readonly res: Resources,
    private readonly device: number,
  ) {}

  /** VFIO_DEVICE_GET_REGION_INFO of `index`. */
  region(index: number): { size: bigint; offset: bigint; flags: number } {
    const r = vfio_region_info.view().reset();
    r.index = index;
    this.res.port.ioctl(this.device, VFIO_DEVICE_GET_REGION_INFO, r.bytes);
    return { size: r.size, offset: r.offset, flags: r.flags };
  }

  /** Sets memory decode and bus mastering in the PCI command register; returns the new value. */
  enableBusMaster(): number {
    const config = this.region(VFIO_PCI_REGION.CONFIG_REGION_INDEX);
    const word = new Uint8Array(2);
    const at = config.offset + BigInt(PCI_COMMAND);
    expect(this.res.port.pread(this.device, word, at)).to.equal(2);
    const dv = new DataView(word.buffer);
    dv.setUint16(0, dv.getUint16(0, true) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, true);
    expect(this.res.port.pwrite(this.device, word, at)).to.equal(2);
    expect(this.res.port.pread(this.device, word, at)).to.equal(2);
    return dv.getUint16(0, true);
  }

  /** mmaps BAR0 (1 MiB) through the device fd at the region's offset; returns where (device memory, VM_PFNMAP). */
  mapBar0(): { va: bigint; size: bigint } {
    const bar = this.region(VFIO_PCI_REGION.BAR0_REGION_INDEX);
    const va = this.res.mmap(bar.size, PROT.READ | PROT.WRITE, MAP.SHARED, this.device, bar.offset);
    this.bar0 = va;
    const bytes = this.res.port.memory(va, 0x100);
    // Uint32Array, never DataView: edu ignores MMIO accesses that are not 4 or 8 bytes wide,
    // and a typed array element is one access of its width.
    this.regs = new Uint32Array(bytes.buffer, bytes.byteOffset, 0x100 / 4);
    return { va, size: bar.size };
  }

  /**
   * munmaps BAR0. A mapping holds the device file open after its fd is closed (the device
   * stays open, so its group or cdev stays busy): unmap before the device is released.
   */
  unmapBar0(): void {
    if (this.bar0 === undefined) return;
    this.res.munmap(this.bar0);
    this.bar0 = undefined;
    this.regs = undefined;
  }

  private reg(): Uint32Array {
    expect(this.regs, 'BAR0 mapped').to.not.equal(undefined);
    return this.regs!;
  }

  /** The id register. */
  id(): number {
    return this.reg()[REG_ID / 4]!;
  }

  /** The card liveness register: reads the bitwise NOT of the last value written to it. */
  liveness(): number {
    return this.reg()[REG_LIVENESS / 4]!;
  }

  /**
   * The liveness register once it reads `want`, or after `ms` if it never does (a write by
   * another device lands when that device's DMA ends; on the simulated kernel this device
   * sees it at its next poll, a moment later).
   */
  async livenessOnceIt(want: number, ms = 200): Promise<number> {
    const deadline = Date.now() + ms;
    while (this.liveness() !== want >>> 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    return this.liveness();
  }

  /**
   * One DMA transfer of `count` bytes, `toRam` false: RAM (IOVA `src`) to the device
   * buffer at `dst`; true: device buffer `src` to RAM (IOVA `dst`). Resolves when the
   * device clears the run bit (about 100 ms of guest time), whether the IOMMU let the
   * transfer through or not.
   */
  async dma(toRam: boolean, src: bigint, dst: bigint, count: number, timeoutMs = 10_000): Promise<void> {
    expect(count).to.be.within(1, EDU_MAX_TRANSFER);
    const r = this.reg();
    // 32-bit writes set the whole 64-bit register: addresses here are below 256 MiB.
    r[REG_DMA_SRC / 4] = Number(src);
    r[REG_DMA_DST / 4] = Number(dst);
    r[REG_DMA_COUNT / 4] = count;
    r[REG_DMA_CMD / 4] = CMD_RUN | (toRam ? CMD_TO_RAM : 0);
    const deadline = Date.now() + timeoutMs;
    while (r[REG_DMA_CMD / 4]! & CMD_RUN) {
      if (Date.now() > deadline) throw new Error(`edu DMA still running after ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /**
   * The device writes the 32-bit `value` to IOVA `dst` (peer to peer when another device's
   * BAR is mapped there): staged in RAM (`stage`, at IOVA `stageIova`), DMAed into the
   * device's buffer, then out to `dst` as one 4-byte write.
   */
  async writeWord(stage: Uint8Array, stageIova: bigint, dst: bigint, value: number): Promise<void> {
    new DataView(stage.buffer, stage.byteOffset, 4).setUint32(0, value, true);
    await this.dma(false, stageIova, EDU_DMA_BUFFER, 4);
    await this.dma(true, EDU_DMA_BUFFER, dst, 4);
  }
}
