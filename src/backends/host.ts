/**
 * VfioHost: the process-wide VFIO state QEMU keeps in globals (vfio_address_spaces'
 * containers, vfio_group_list, vfio_device_list) for one syscall port: which containers
 * serve which address space, which legacy groups are open, which devices are attached,
 * and which address space each IOMMU group belongs to.
 */
import type { SyscallPort } from '../port/port.js';
import { ERRNO } from '../uapi/errno.js';
import type { ContainerBackend } from './container.js';
import type { VfioDevice } from './device.js';
import { VfioError } from './errors.js';
import { IommufdBackend } from './iommufd.js';
import type { VfioGroup } from './legacy.js';

/** The VFIO state of one process (one port). */
export class VfioHost {
  /** Every live container, in creation order (QEMU: each VFIOAddressSpace's containers). */
  readonly containers: ContainerBackend[] = [];
  /** Open legacy groups by group id (QEMU: vfio_group_list). */
  readonly groups = new Map<number, VfioGroup>();
  /** Attached devices by PCI address (QEMU: vfio_device_list). */
  readonly devices = new Map<string, VfioDevice>();
  private readonly groupSpaces = new Map<number, { space: string; users: number }>();
  private sharedIommufd: IommufdBackend | null = null;

  constructor(readonly port: SyscallPort) {}

  /** The containers serving `space`. */
  containersOf(space: string): ContainerBackend[] {
    return this.containers.filter((c) => c.space === space);
  }

  /**
   * The iommufd object devices use with iommufd 'on' or 'auto' (one /dev/iommu shared by
   * all of them, like a single `-object iommufd`).
   */
  defaultIommufd(): IommufdBackend {
    this.sharedIommufd ??= new IommufdBackend(this.port, { id: 'iommufd0' });
    return this.sharedIommufd;
  }

  /**
   * Records that a device of IOMMU group `group` is used by `space`. A group can live in
   * only one address space: its devices can reach each other's DMA (aliases, no ACS), so
   * they must all see the same mappings. Throws VfioError when another space has it.
   */
  claimGroup(group: number, space: string, device: string): void {
    const g = this.groupSpaces.get(group);
    if (g && g.space !== space) {
      throw new VfioError({
        op: 'attach_device',
        device,
        errno: ERRNO.EBUSY,
        detail:
          `IOMMU group ${group} is already used by address space '${g.space}'; ` +
          `all devices of a group must share one address space`,
      });
    }
    if (g) g.users++;
    else this.groupSpaces.set(group, { space, users: 1 });
  }

  /** Drops a claim made by {@link claimGroup}. */
  releaseGroup(group: number): void {
    const g = this.groupSpaces.get(group);
    if (g && --g.users <= 0) this.groupSpaces.delete(group);
  }

  /** The address space using IOMMU group `group`, if any. */
  groupSpace(group: number): string | undefined {
    return this.groupSpaces.get(group)?.space;
  }

  /** Removes a destroyed container from the registry. */
  forgetContainer(c: ContainerBackend): void {
    const i = this.containers.indexOf(c);
    if (i >= 0) this.containers.splice(i, 1);
  }
}
