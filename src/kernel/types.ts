/**
 * The contracts between the parts of the simulated kernel: the generic file interface the
 * dispatcher drives, and what the iommufd model and the VFIO/PCI model ask of each other
 * (a device cdev binds to an iommufd; an attached device's DMA goes through a translator).
 */
import type { DeviceSpec, IommuSpec } from './topology.js';

/** What an fd of the simulated kernel refers to ('anon': an anon-inode fd handed out by an ioctl). */
export type FileKind = 'iommufd' | 'container' | 'group' | 'device' | 'anon';

/** An ioctl argument as the file receives it: the caller's bytes (struct, int pointer, C string) or a value. */
export interface IoctlIn {
  /** The caller's argument buffer, or null for by-value ioctls. Written in place for outputs. */
  bytes: Uint8Array | null;
  /** The by-value argument (VFIO_CHECK_EXTENSION, VFIO_SET_IOMMU), 0 otherwise. */
  value: number;
}

/** An open file of the simulated kernel. Methods throw KernelErrno. */
export interface SimFile {
  readonly kind: FileKind;
  /** Handles an ioctl by request number (the number alone is ambiguous across kinds; the file decides). */
  ioctl(request: number, arg: IoctlIn): number;
  pread?(buf: Uint8Array, offset: bigint): number;
  pwrite?(buf: Uint8Array, offset: bigint): number;
  /** Real backing for an mmap of this file at `offset` (device BARs): a real fd, its offset, and VM_PFNMAP. */
  mmapBacking?(length: bigint, offset: bigint, prot: number): { fd: number; offset: bigint; pfnmap: boolean };
  /** The last reference closed: undo everything the file holds (iommufd destroys all its objects). */
  release(): void;
}

/** Translates a device's DMA address to a process address; null means the IOMMU blocks the access. */
export interface DmaTranslator {
  translate(iova: bigint, length: number, write: boolean): bigint | null;
}

/** A device as the IOMMU side sees it. */
export interface IommuDevice {
  readonly spec: DeviceSpec;
  readonly iommu: IommuSpec;
  /** The IOMMU group number. */
  readonly group: number;
  /** Installed by whoever attaches the device to a domain; null = DMA blocked. */
  setTranslator(t: DmaTranslator | null): void;
}

/** What a VFIO device cdev asks of an iommufd file (VFIO_DEVICE_BIND_IOMMUFD / ATTACH / DETACH). */
export interface IommufdBinding {
  /** Binds a device; returns its dev_id (an iommufd object id). */
  bindDevice(dev: IommuDevice): number;
  /** Unbinds (detaching first when attached); called on device fd release too. */
  unbindDevice(devId: number): void;
  /** Attaches to an IOAS (through an automatic HWPT) or an HWPT; returns the pt_id to report (the HWPT id). */
  attachDevice(devId: number, ptId: number): number;
  /** Detaches from whatever the device is attached to. */
  detachDevice(devId: number): void;
}
