/**
 * drivers/vfio/group.c: /dev/vfio/<group>. A group is opened once at a time (EBUSY), not at
 * all while one of its devices is bound through its cdev, joins one container, and hands
 * out device fds once the container has an IOMMU. Each device opened through the group
 * holds a reference on the group file (vfio_group_use_container), so closing the group fd
 * with devices open only drops the fd; the group lets go of its container when the last
 * reference goes.
 *
 * The IOMMU group's DMA ownership (iommu_group_claim_dma_owner and
 * iommu_device_claim_dma_owner in drivers/iommu/iommu.c) is kept here too: the container
 * claims the whole group, an iommufd claims it per device for one iommufd context.
 */
import { kfail } from '../errno.js';
import type { IoctlIn, SimFile } from '../types.js';
import {
  VFIO_GROUP_FLAGS,
  VFIO_GROUP_GET_DEVICE_FD,
  VFIO_GROUP_GET_STATUS,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_GROUP_UNSET_CONTAINER,
  vfio_group_status,
} from '../../uapi/vfio.js';
import type { VfioContext } from './context.js';
import { VfioContainerFile, type VfioContainer } from './container.js';
import { VfioDeviceFile, vfioDfOpen } from './device.js';
import type { VfioPciDevice } from './pci.js';
import { copyFromUser, copyToUser, fdIsOpen, getUserInt, offsetofend, strndupUser } from './uaccess.js';

/** struct vfio_group (and the DMA ownership of its iommu_group). */
export class VfioGroup {
  /** Devices of the group (all bound to vfio-pci in this model, so the group is viable). */
  readonly devices: VfioPciDevice[] = [];
  /** The open group file, while any reference to it lives (group->opened_file). */
  opened_file: VfioGroupFile | null = null;
  container: VfioContainer | null = null;
  /** 1 for the container itself plus 1 per device opened through the group. */
  container_users = 0;
  /** Devices of the group bound through their cdev (which keeps the group closed). */
  cdev_device_open_cnt = 0;
  private owner: unknown = null;
  private owner_cnt = 0;

  constructor(
    readonly id: number,
    readonly ctx: VfioContext,
  ) {}

  /**
   * iommu_group_claim_dma_owner() (`whole`) or iommu_device_claim_dma_owner(): EPERM when
   * another owner holds the group.
   */
  claimDmaOwner(owner: unknown, whole: boolean): void {
    if (this.owner_cnt) {
      if (whole || this.owner !== owner) kfail('EPERM', 'the group has another DMA owner');
      this.owner_cnt++;
      return;
    }
    this.owner = owner;
    this.owner_cnt = 1;
  }

  /** Drops one claim (a group claim is the only one). */
  releaseDmaOwner(): void {
    if (--this.owner_cnt <= 0) {
      this.owner_cnt = 0;
      this.owner = null;
    }
  }

  /** iommu_group_dma_owner_claimed() */
  get dmaOwnerClaimed(): boolean {
    return this.owner_cnt > 0;
  }

  /** vfio_group_has_iommu(): a container is set (the iommufd compat mode is not modelled). */
  get hasIommu(): boolean {
    return this.container !== null;
  }

  /** vfio_group_use_container(): a device's first open through the group. */
  useContainer(): void {
    if (!this.container?.iommu_driver) kfail('EINVAL', 'VFIO_SET_IOMMU has not been done');
    this.opened_file!.get();
    this.container_users++;
  }

  /** vfio_group_unuse_container(): a device's last close. */
  unuseContainer(): void {
    this.container_users--;
    this.opened_file!.put();
  }
}

/** An open /dev/vfio/<group>. */
export class VfioGroupFile implements SimFile {
  readonly kind = 'group' as const;
  private refs = 1;

  constructor(readonly group: VfioGroup) {}

  /** vfio_group_fops_open(): one opener at a time, none while a cdev of the group is bound. */
  static open(group: VfioGroup): VfioGroupFile {
    if (group.cdev_device_open_cnt) kfail('EBUSY', 'a device of the group is bound through its cdev');
    if (group.opened_file) kfail('EBUSY', 'the group is already open');
    const f = new VfioGroupFile(group);
    group.opened_file = f;
    return f;
  }

  /** vfio_group_fops_unl_ioctl() */
  ioctl(request: number, arg: IoctlIn): number {
    switch (request) {
      case VFIO_GROUP_GET_DEVICE_FD.request:
        return this.getDeviceFd(arg);
      case VFIO_GROUP_GET_STATUS.request:
        return this.getStatus(arg);
      case VFIO_GROUP_SET_CONTAINER.request:
        return this.setContainer(arg);
      case VFIO_GROUP_UNSET_CONTAINER.request:
        return this.unsetContainer();
      default:
        return kfail('ENOTTY');
    }
  }

  private getStatus(arg: IoctlIn): number {
    const minsz = offsetofend(vfio_group_status, 'flags');
    const k = copyFromUser(arg, minsz);
    const status = vfio_group_status.view(k);
    if (status.argsz < minsz) kfail('EINVAL', 'argsz too small');
    status.flags = 0;
    const g = this.group;
    if (g.hasIommu) status.flags = VFIO_GROUP_FLAGS.CONTAINER_SET | VFIO_GROUP_FLAGS.VIABLE;
    else if (!g.dmaOwnerClaimed) status.flags = VFIO_GROUP_FLAGS.VIABLE;
    copyToUser(arg, 0, k.subarray(0, minsz));
    return 0;
  }

  private setContainer(arg: IoctlIn): number {
    const fd = getUserInt(arg);
    const kernel = this.group.ctx.kernel;
    const file = kernel.file(fd);
    if (!file && !fdIsOpen(fd)) kfail('EBADF', `fd ${fd} is not open`);
    if (this.group.hasIommu) kfail('EINVAL', 'the group already has a container');
    if (file instanceof VfioContainerFile) {
      file.container.attachGroup(this.group);
      return 0;
    }
    // An iommufd fd makes the group use the iommufd's VFIO-compat IOAS; not modelled.
    if (file?.kind === 'iommufd') kfail('EOPNOTSUPP', 'group + iommufd compat is not modelled');
    return kfail('EBADFD', 'not a container fd');
  }

  private unsetContainer(): number {
    const g = this.group;
    if (!g.hasIommu) kfail('EINVAL', 'no container set');
    if (g.container_users !== 1) kfail('EBUSY', 'devices of the group are open');
    g.container!.detachGroup(g);
    return 0;
  }

  private getDeviceFd(arg: IoctlIn): number {
    const name = strndupUser(arg);
    const g = this.group;
    let device: VfioPciDevice | null = null;
    for (const d of g.devices) {
      const m = vfioPciMatch(d, name);
      if (m < 0) kfail('EINVAL', 'bad options after the device name');
      if (m) {
        device = d;
        break;
      }
    }
    if (!device) kfail('ENODEV', `no device ${JSON.stringify(name)} in group ${g.id}`);
    // vfio_df_group_open()
    if (!g.hasIommu) kfail('EINVAL', 'the group has no container');
    const df = new VfioDeviceFile(device, g);
    vfioDfOpen(df);
    df.access_granted = true;
    return g.ctx.kernel.installFile(df, `[vfio-device]:${device.spec.bdf}`);
  }

  /** Takes a reference (a device opened through the group). */
  get(): void {
    this.refs++;
  }

  /** Drops a reference; the last one is vfio_group_fops_release(). */
  put(): void {
    if (--this.refs > 0) return;
    const g = this.group;
    if (g.container) g.container.detachGroup(g);
    g.opened_file = null;
  }

  /** The fd was closed. */
  release(): void {
    this.put();
  }
}

/**
 * vfio_pci_core_match(): the name must start with the device's name, and anything after it
 * must be " vf_token=<uuid>" options (-1 = EINVAL); 1 = match, 0 = another device.
 */
function vfioPciMatch(d: VfioPciDevice, buf: string): number {
  const name = d.spec.bdf;
  if (!buf.startsWith(name)) return 0;
  let rest = buf.slice(name.length);
  if (!rest) return 1;
  if (rest[0] !== ' ') return 0;
  let token = false;
  while (rest.length) {
    if (rest[0] === ' ') {
      rest = rest.slice(1);
      continue;
    }
    if (!token && rest.startsWith('vf_token=')) {
      rest = rest.slice('vf_token='.length);
      if (rest.length < 36) return -1;
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i.test(rest)) return -1;
      token = true;
      rest = rest.slice(36);
    } else {
      return -1;
    }
  }
  // Neither a PF with VFs nor a VF: a VF token is refused.
  return token ? -1 : 1;
}
