/**
 * A PCI device bound to vfio-pci (struct vfio_pci_core_device with its vfio_device): the
 * virtualized config space vfio-pci shows the user, the regions (BARs backed by real
 * memfds, so an mmap of the device fd is shared memory), IRQ counts, resets, and the
 * state vfio_main.c keeps per device (open_count, the iommufd binding).
 */
import { kfail } from '../errno.js';
import type { SimKernel } from '../kernel.js';
import type { DeviceSpec, IommuSpec } from '../topology.js';
import type { DmaTranslator, IommuDevice, IommufdBinding } from '../types.js';
import { MAP, MFD, PROT } from '../../uapi/libc.js';
import { VFIO_IRQ_INFO, VFIO_PCI_IRQ, VFIO_PCI_REGION, VFIO_REGION_INFO_FLAG } from '../../uapi/vfio.js';
import { PAGE_SIZE } from './context.js';
import { EduEngine } from './edu.js';
import type { VfioGroup } from './group.js';

/** VFIO_PCI_OFFSET_SHIFT: region index = file offset >> 40. */
export const VFIO_PCI_OFFSET_SHIFT = 40n;
/** VFIO_PCI_OFFSET_MASK: the offset inside a region. */
export const VFIO_PCI_OFFSET_MASK = (1n << VFIO_PCI_OFFSET_SHIFT) - 1n;
/** VFIO_PCI_INDEX_TO_OFFSET(index) */
export const indexToOffset = (index: number): bigint => BigInt(index) << VFIO_PCI_OFFSET_SHIFT;

/** PCI config space registers (include/uapi/linux/pci_regs.h). */
export const PCI = {
  VENDOR_ID: 0x00,
  DEVICE_ID: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  REVISION_ID: 0x08,
  CLASS_PROG: 0x09,
  CACHE_LINE_SIZE: 0x0c,
  LATENCY_TIMER: 0x0d,
  HEADER_TYPE: 0x0e,
  BASE_ADDRESS_0: 0x10,
  SUBSYSTEM_VENDOR_ID: 0x2c,
  SUBSYSTEM_ID: 0x2e,
  CAPABILITY_LIST: 0x34,
  INTERRUPT_LINE: 0x3c,
  INTERRUPT_PIN: 0x3d,
  COMMAND_IO: 0x1,
  COMMAND_MEMORY: 0x2,
  COMMAND_MASTER: 0x4,
  STATUS_CAP_LIST: 0x10,
  CAP_ID_MSI: 0x05,
  CAP_ID_EXP: 0x10,
  CAP_ID_MSIX: 0x11,
  CFG_SPACE_SIZE: 256,
  CFG_SPACE_EXP_SIZE: 4096,
} as const;

/** What kind of PCI function a device model is (edu: QEMU's conventional PCI edu; generic: a PCIe NIC). */
interface Personality {
  classCode: number;
  revision: number;
  subVendor: number;
  subDevice: number;
  /** PCI Express (extended config space, the ERR IRQ). */
  pcie: boolean;
  msiVectors: number;
  /** MSI-X vectors (0 = no MSI-X) and the BAR holding the table. */
  msixVectors: number;
  msixBar: number;
}

function personality(spec: DeviceSpec): Personality {
  if (spec.model === 'edu') {
    // hw/misc/edu.c: PCI_CLASS_OTHERS, revision 0x10, conventional PCI, one 64-bit MSI vector.
    return {
      classCode: 0x00ff00,
      revision: 0x10,
      subVendor: 0x1af4,
      subDevice: 0x1100,
      pcie: false,
      msiVectors: 1,
      msixVectors: 0,
      msixBar: -1,
    };
  }
  const msixBar = [3, 4, 5, 2, 1].find((i) => (spec.bars[i] ?? 0) >= 0x4000) ?? -1;
  return {
    classCode: 0x020000,
    revision: 0,
    subVendor: spec.vendor,
    subDevice: 0,
    pcie: true,
    msiVectors: 1,
    msixVectors: msixBar >= 0 ? 5 : 0,
    msixBar,
  };
}

const MSI_CAP = 0x50;
const MSIX_CAP = 0x70;
const EXP_CAP = 0xa0;
/** Offset of the MSI-X table and PBA inside their BAR. */
const MSIX_TABLE_OFFSET = 0;
const MSIX_PBA_OFFSET = 0x2000;

/** A config space: bytes plus a per-byte mask of the bits the user may write (vfio-pci's perm bits). */
export class PciConfig {
  readonly bytes: Uint8Array;
  readonly wmask: Uint8Array;
  private readonly view: DataView;

  constructor(readonly size: number) {
    this.bytes = new Uint8Array(size);
    this.wmask = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
  }

  u8(off: number): number {
    return this.bytes[off]!;
  }
  u16(off: number): number {
    return this.view.getUint16(off, true);
  }
  u32(off: number): number {
    return this.view.getUint32(off, true);
  }
  set16(off: number, v: number): void {
    this.view.setUint16(off, v, true);
  }
  set32(off: number, v: number): void {
    this.view.setUint32(off, v >>> 0, true);
  }
  /** Marks bits writable. */
  writable(off: number, mask: number, len: number): void {
    for (let i = 0; i < len; i++) this.wmask[off + i] = (mask >>> (8 * i)) & 0xff;
  }
  /** A user write: only the writable bits change. */
  write(off: number, data: Uint8Array): void {
    for (let i = 0; i < data.byteLength; i++) {
      const m = this.wmask[off + i]!;
      this.bytes[off + i] = (this.bytes[off + i]! & ~m) | (data[i]! & m);
    }
  }
}

/** One region as VFIO_DEVICE_GET_REGION_INFO reports it. */
export interface RegionInfo {
  flags: number;
  size: bigint;
  offset: bigint;
  /** VFIO_REGION_INFO_CAP_MSIX_MAPPABLE present. */
  msixMappable: boolean;
}

/** The device-side state of DMA logging (a migration driver's log_ops). */
export interface DmaLog {
  pageSize: bigint;
  ranges: Array<[bigint, bigint]>;
  /** Dirty page indexes (iova / pageSize) the device wrote since the last report. */
  dirty: Set<bigint>;
}

/** A PCI device bound to vfio-pci. */
export class VfioPciDevice implements IommuDevice {
  /** The IOMMU group number. */
  readonly group: number;
  /** The vfio_group (set by the driver when it builds groups). */
  vgroup!: VfioGroup;

  // struct vfio_device
  /** Opens of the device (group fds may open it several times; a cdev once). */
  open_count = 0;
  /** Bound through its cdev (device->cdev_opened). */
  cdev_opened = false;
  /** The iommufd the device is bound to (vdev->iommufd_device's ictx) and its dev_id. */
  iommufd: IommufdBinding | null = null;
  devid = 0;
  iommufd_attached = false;

  // struct vfio_pci_core_device
  readonly cfg_size: number;
  readonly config: PciConfig;
  readonly pers: Personality;
  /** Function reset works (VFIO_DEVICE_FLAGS_RESET). */
  readonly reset_works: boolean;
  pm_runtime_engaged = false;
  /** Device DMA logging state, when the device has log_ops and logging is on. */
  log: DmaLog | null = null;
  /** Resets done (FLR and bus resets): what a test can observe of a reset. */
  resets = 0;

  /** DMA translation installed by the container or iommufd; null = blocked. */
  translator: DmaTranslator | null = null;
  /** QEMU edu's DMA engine, for edu devices. */
  readonly edu: EduEngine | null;

  private readonly barFds: Array<number | null> = [null, null, null, null, null, null];
  private readonly barAddrs: number[];

  constructor(
    readonly kernel: SimKernel,
    readonly spec: DeviceSpec,
    readonly iommu: IommuSpec,
    /** Guest-physical addresses assigned to the BARs (what the BAR registers read). */
    barAddrs: number[],
    multifunction: boolean,
  ) {
    this.group = spec.group;
    this.pers = personality(spec);
    this.reset_works = spec.reset;
    this.barAddrs = barAddrs;
    this.cfg_size = this.pers.pcie ? PCI.CFG_SPACE_EXP_SIZE : PCI.CFG_SPACE_SIZE;
    this.config = new PciConfig(this.cfg_size);
    this.buildConfig(multifunction);
    this.edu = spec.model === 'edu' ? new EduEngine(this) : null;
  }

  /** Installs the DMA translation (IommuDevice). */
  setTranslator(t: DmaTranslator | null): void {
    this.translator = t;
  }

  /** PCI segment, bus and devfn from the bdf. */
  get address(): { segment: number; bus: number; devfn: number } {
    const m = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/i.exec(this.spec.bdf);
    if (!m) throw new Error(`bad bdf ${this.spec.bdf}`);
    return {
      segment: parseInt(m[1]!, 16),
      bus: parseInt(m[2]!, 16),
      devfn: (parseInt(m[3]!, 16) << 3) | parseInt(m[4]!, 10),
    };
  }

  /** BAR size in bytes (pci_resource_len). */
  barSize(i: number): number {
    return this.spec.bars[i] ?? 0;
  }

  private buildConfig(multifunction: boolean): void {
    const c = this.config;
    const p = this.pers;
    c.set16(PCI.VENDOR_ID, this.spec.vendor);
    c.set16(PCI.DEVICE_ID, this.spec.device);
    c.bytes[PCI.REVISION_ID] = p.revision;
    c.bytes[PCI.CLASS_PROG] = p.classCode & 0xff;
    c.bytes[PCI.CLASS_PROG + 1] = (p.classCode >> 8) & 0xff;
    c.bytes[PCI.CLASS_PROG + 2] = (p.classCode >> 16) & 0xff;
    c.bytes[PCI.HEADER_TYPE] = multifunction ? 0x80 : 0;
    c.set16(PCI.SUBSYSTEM_VENDOR_ID, p.subVendor);
    c.set16(PCI.SUBSYSTEM_ID, p.subDevice);
    c.bytes[PCI.INTERRUPT_PIN] = 1;
    c.bytes[PCI.INTERRUPT_LINE] = 10 + ((this.address.devfn >> 3) % 2);
    // COMMAND: IO, MEMORY, MASTER, PARITY, SERR, INTX_DISABLE (QEMU's w1 mask).
    c.writable(PCI.COMMAND, 0x0547, 2);
    c.writable(PCI.CACHE_LINE_SIZE, 0xffff, 2);
    c.writable(PCI.INTERRUPT_LINE, 0xff, 1);
    for (let i = 0; i < 6; i++) {
      const size = this.barSize(i);
      if (size) c.writable(PCI.BASE_ADDRESS_0 + 4 * i, ~(pow2(size) - 1) & 0xfffffff0, 4);
    }
    // Capabilities: MSI (64-bit), then MSI-X and the PCIe capability on PCIe functions.
    c.set16(PCI.STATUS, PCI.STATUS_CAP_LIST);
    const msi = p.pcie ? MSI_CAP : 0x40;
    c.bytes[PCI.CAPABILITY_LIST] = msi;
    c.bytes[msi] = PCI.CAP_ID_MSI;
    c.bytes[msi + 1] = p.msixVectors ? MSIX_CAP : p.pcie ? EXP_CAP : 0;
    c.set16(msi + 2, 0x0080 | ((Math.log2(p.msiVectors) | 0) << 1));
    c.writable(msi + 2, 0x0071, 2);
    c.writable(msi + 4, 0xfffffffc, 4);
    c.writable(msi + 8, 0xffffffff, 4);
    c.writable(msi + 12, 0xffff, 2);
    if (p.msixVectors) {
      c.bytes[MSIX_CAP] = PCI.CAP_ID_MSIX;
      c.bytes[MSIX_CAP + 1] = EXP_CAP;
      c.set16(MSIX_CAP + 2, p.msixVectors - 1);
      c.writable(MSIX_CAP + 2, 0xc000, 2);
      c.set32(MSIX_CAP + 4, MSIX_TABLE_OFFSET | p.msixBar);
      c.set32(MSIX_CAP + 8, MSIX_PBA_OFFSET | p.msixBar);
    }
    if (p.pcie) {
      c.bytes[EXP_CAP] = PCI.CAP_ID_EXP;
      c.set16(EXP_CAP + 2, 0x0002); // version 2, PCI Express endpoint
    }
    this.resetConfig();
  }

  // vfio_config_init(): the user's view starts from the enabled device at each first open.
  private resetConfig(): void {
    const c = this.config;
    c.set16(PCI.COMMAND, PCI.COMMAND_MEMORY); // pci_enable_device() turns on memory decode
    for (let i = 0; i < 6; i++) c.set32(PCI.BASE_ADDRESS_0 + 4 * i, this.barSize(i) ? this.barAddrs[i]! : 0);
    const msi = this.pers.pcie ? MSI_CAP : 0x40;
    c.set16(msi + 2, c.u16(msi + 2) & ~0x0071);
    if (this.pers.msixVectors) c.set16(MSIX_CAP + 2, this.pers.msixVectors - 1);
  }

  /** Bus mastering on (the device may issue DMA). */
  get busMaster(): boolean {
    return (this.config.u16(PCI.COMMAND) & PCI.COMMAND_MASTER) !== 0;
  }

  /** vfio_pci_core_enable(), on the first open. */
  enable(): void {
    this.resetConfig();
    if (this.reset_works) this.resets++; // pci_try_reset_function() before use
    this.edu?.attach();
  }

  /** vfio_pci_core_disable(), on the last close: bus mastering off, reset, state restored. */
  disable(): void {
    this.edu?.detach();
    this.config.set16(PCI.COMMAND, this.config.u16(PCI.COMMAND) & ~PCI.COMMAND_MASTER);
    if (this.reset_works) this.resets++;
    this.pm_runtime_engaged = false;
    this.log = null;
  }

  /**
   * A function or bus reset. The kernel saves and restores config space around it, and
   * QEMU's edu has no reset handler, so nothing the user sees changes; it is counted.
   */
  reset(): void {
    this.resets++;
  }

  /** vfio_pci_ioctl_get_region_info() for the fixed regions, or null for an invalid index (EINVAL). */
  regionInfo(index: number): RegionInfo | null {
    const offset = indexToOffset(index);
    const RW = VFIO_REGION_INFO_FLAG.READ | VFIO_REGION_INFO_FLAG.WRITE;
    if (index === VFIO_PCI_REGION.CONFIG_REGION_INDEX)
      return { flags: RW, size: BigInt(this.cfg_size), offset, msixMappable: false };
    if (index <= VFIO_PCI_REGION.BAR5_REGION_INDEX) {
      const size = this.barSize(index);
      if (!size) return { flags: 0, size: 0n, offset, msixMappable: false };
      return {
        flags: RW | VFIO_REGION_INFO_FLAG.MMAP,
        size: BigInt(size),
        offset,
        msixMappable: index === this.pers.msixBar,
      };
    }
    // No expansion ROM: the size of an absent ROM BAR is 0 and its flags 0.
    if (index === VFIO_PCI_REGION.ROM_REGION_INDEX)
      return { flags: 0, size: 0n, offset, msixMappable: false };
    // VGA: has_vga is false (CONFIG_VFIO_PCI_VGA is off and these are not VGA devices): EINVAL.
    return null;
  }

  /** The IRQ count vfio_pci_get_irq_count() reads from config space. */
  irqCount(index: number): number {
    const c = this.config;
    switch (index) {
      case VFIO_PCI_IRQ.INTX_IRQ_INDEX:
        return c.u8(PCI.INTERRUPT_PIN) ? 1 : 0;
      case VFIO_PCI_IRQ.MSI_IRQ_INDEX: {
        const msi = this.pers.pcie ? MSI_CAP : 0x40;
        return 1 << ((c.u16(msi + 2) & 0x0e) >> 1);
      }
      case VFIO_PCI_IRQ.MSIX_IRQ_INDEX:
        return this.pers.msixVectors ? (c.u16(MSIX_CAP + 2) & 0x07ff) + 1 : 0;
      case VFIO_PCI_IRQ.ERR_IRQ_INDEX:
        return this.pers.pcie ? 1 : 0;
      case VFIO_PCI_IRQ.REQ_IRQ_INDEX:
        return 1;
      default:
        return 0;
    }
  }

  /** vfio_pci_ioctl_get_irq_info()'s flags and count, or null for EINVAL. */
  irqInfo(index: number): { flags: number; count: number } | null {
    if (index >= VFIO_PCI_IRQ.NUM_IRQS) return null;
    if (index === VFIO_PCI_IRQ.ERR_IRQ_INDEX && !this.pers.pcie) return null;
    let flags: number = VFIO_IRQ_INFO.EVENTFD;
    if (index === VFIO_PCI_IRQ.INTX_IRQ_INDEX) flags |= VFIO_IRQ_INFO.MASKABLE | VFIO_IRQ_INFO.AUTOMASKED;
    // x86 with interrupt remapping allocates MSI-X vectors dynamically (has_dyn_msix).
    else if (index !== VFIO_PCI_IRQ.MSIX_IRQ_INDEX || !this.pers.msixVectors) flags |= VFIO_IRQ_INFO.NORESIZE;
    return { flags, count: this.irqCount(index) };
  }

  /** vfio_pci_config_rw(): the whole access must lie inside config space (else EFAULT). */
  configRw(buf: Uint8Array, pos: bigint, write: boolean): number {
    const count = BigInt(buf.byteLength);
    if (pos < 0n || pos >= BigInt(this.cfg_size) || pos + count > BigInt(this.cfg_size)) kfail('EFAULT');
    const off = Number(pos);
    if (write) this.config.write(off, buf);
    else buf.set(this.config.bytes.subarray(off, off + buf.byteLength));
    return buf.byteLength;
  }

  /** vfio_pci_bar_rw() on BAR `index`: short at the end of the BAR, EINVAL past it, EIO with memory decode off. */
  barRw(index: number, buf: Uint8Array, pos: bigint, write: boolean): number {
    const end = BigInt(this.barSize(index));
    if (!end) kfail('EINVAL', `BAR${index} is not implemented`);
    if (pos >= end) kfail('EINVAL', 'past the end of the BAR');
    const n = Number(end - pos < BigInt(buf.byteLength) ? end - pos : BigInt(buf.byteLength));
    if (!(this.config.u16(PCI.COMMAND) & PCI.COMMAND_MEMORY)) kfail('EIO', 'memory decode is off');
    const fd = this.barFd(index);
    const chunk = buf.subarray(0, n);
    if (write) {
      this.kernel.host.pwrite(fd, chunk, pos);
      if (index === 0) this.edu?.mmioWritten(Number(pos), chunk);
    } else {
      this.kernel.host.pread(fd, chunk, pos);
    }
    return n;
  }

  /** vfio_pci_core_mmap(): the memfd behind a BAR, mapped shared as VM_PFNMAP device memory. */
  mmapBacking(length: bigint, offset: bigint): { fd: number; offset: bigint; pfnmap: boolean } {
    const index = Number(offset >> VFIO_PCI_OFFSET_SHIFT);
    if (index >= VFIO_PCI_REGION.NUM_REGIONS) kfail('EINVAL', 'no such region');
    if (index >= VFIO_PCI_REGION.ROM_REGION_INDEX) kfail('EINVAL', 'only BARs can be mmapped');
    const size = this.barSize(index);
    if (!size) kfail('EINVAL', `BAR${index} is not implemented`);
    const physLen = pageAlign(BigInt(size));
    const start = offset & VFIO_PCI_OFFSET_MASK;
    if (start + length > physLen) kfail('EINVAL', 'mmap beyond the BAR');
    return { fd: this.barFd(index), offset: start, pfnmap: true };
  }

  /** The memfd standing for BAR `index` (created on first use, sized to whole pages). */
  barFd(index: number): number {
    let fd = this.barFds[index];
    if (fd === null || fd === undefined) {
      const host = this.kernel.host;
      fd = host.memfdCreate(`vfio-engine-sim:${this.spec.bdf}:bar${index}`, MFD.CLOEXEC);
      host.ftruncate(fd, pageAlign(BigInt(this.barSize(index))));
      this.barFds[index] = fd;
    }
    return fd;
  }

  /** Closes the BAR memfds (tests; a kernel thread's memfds go with the process). */
  dispose(): void {
    this.edu?.detach();
    for (let i = 0; i < this.barFds.length; i++) {
      const fd = this.barFds[i];
      if (fd !== null && fd !== undefined) this.kernel.host.close(fd);
      this.barFds[i] = null;
    }
  }

  /** Maps BAR `index` for the kernel itself (the device model watches its registers). */
  mapBarForKernel(index: number): { addr: bigint; length: bigint } {
    const length = pageAlign(BigInt(this.barSize(index)));
    const addr = this.kernel.host.mmap(length, PROT.READ | PROT.WRITE, MAP.SHARED, this.barFd(index), 0n);
    return { addr, length };
  }

  /** Records a device write for DMA logging (device dirty tracking). */
  logWrite(iova: bigint, length: number): void {
    const log = this.log;
    if (!log || length <= 0) return;
    const first = iova / log.pageSize;
    const last = (iova + BigInt(length) - 1n) / log.pageSize;
    for (let p = first; p <= last; p++) log.dirty.add(p);
  }
}

function pow2(n: number): number {
  let p = 16;
  while (p < n) p *= 2;
  return p;
}

/** PAGE_ALIGN() */
export function pageAlign(n: bigint): bigint {
  return (n + PAGE_SIZE - 1n) & ~(PAGE_SIZE - 1n);
}
