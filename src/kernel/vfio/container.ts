/**
 * drivers/vfio/container.c: the legacy container, /dev/vfio/vfio. A container lives as long
 * as its fd or any group attached to it; it gets an IOMMU driver (type1, the only one
 * registered on x86 without CONFIG_VFIO_NOIOMMU) with VFIO_SET_IOMMU once a group is
 * attached, and loses it, with every mapping, when its last group leaves.
 */
import { kfail } from '../errno.js';
import type { IoctlIn, SimFile } from '../types.js';
import {
  VFIO_API,
  VFIO_CHECK_EXTENSION,
  VFIO_EXTENSION,
  VFIO_GET_API_VERSION,
  VFIO_SET_IOMMU,
} from '../../uapi/vfio.js';
import type { VfioContext } from './context.js';
import type { VfioGroup } from './group.js';
import { VfioIommu, type1CheckExtension } from './type1.js';

/** struct vfio_container */
export class VfioContainer {
  /** Attached groups (container->group_list). */
  readonly groups: VfioGroup[] = [];
  /** The type1 driver state once VFIO_SET_IOMMU succeeded (container->iommu_data). */
  iommu_driver: VfioIommu | null = null;

  constructor(readonly ctx: VfioContext) {}

  /** vfio_container_ioctl_check_extension(): without a driver, ask the registered ones (type1). */
  checkExtension(arg: number): number {
    const ecap = this.ctx.kernel.topology.iommu.ecap_reg;
    return this.iommu_driver
      ? this.iommu_driver.ioctl(VFIO_CHECK_EXTENSION.request, { bytes: null, value: arg })
      : type1CheckExtension(null, arg, ecap);
  }

  /** vfio_ioctl_set_iommu() */
  setIommu(arg: number): number {
    if (!this.groups.length || this.iommu_driver) kfail('EINVAL', 'no group attached, or an IOMMU is set');
    // type1 is the only driver: it takes the types it reports as extensions.
    if (type1CheckExtension(null, arg, 0n) <= 0) kfail('ENODEV', 'no IOMMU driver supports this type');
    if (arg !== VFIO_EXTENSION.TYPE1_IOMMU && arg !== VFIO_EXTENSION.TYPE1v2_IOMMU) {
      // vfio_iommu_type1_open() refuses UNMAP_ALL; TYPE1_NESTING opens, but VT-d has no
      // enable_nesting, so attaching the groups fails: EINVAL either way.
      kfail('EINVAL', 'type1 cannot open this type');
    }
    const iommu = new VfioIommu(this.ctx.kernel, arg === VFIO_EXTENSION.TYPE1v2_IOMMU);
    const done: VfioGroup[] = [];
    try {
      for (const g of this.groups) {
        iommu.attachGroup(g);
        done.push(g);
      }
    } catch (e) {
      for (const g of done.reverse()) iommu.detachGroup(g);
      iommu.release();
      throw e;
    }
    this.iommu_driver = iommu;
    return 0;
  }

  /** vfio_container_attach_group() (VFIO_GROUP_SET_CONTAINER) */
  attachGroup(group: VfioGroup): void {
    group.claimDmaOwner(group, true);
    try {
      this.iommu_driver?.attachGroup(group);
    } catch (e) {
      group.releaseDmaOwner();
      throw e;
    }
    group.container = this;
    group.container_users = 1;
    this.groups.push(group);
  }

  /** vfio_group_detach_container(): the last group deprivileges the container. */
  detachGroup(group: VfioGroup): void {
    const driver = this.iommu_driver;
    driver?.detachGroup(group);
    group.releaseDmaOwner();
    group.container = null;
    group.container_users = 0;
    this.groups.splice(this.groups.indexOf(group), 1);
    if (driver && !this.groups.length) {
      driver.release();
      this.iommu_driver = null;
    }
  }
}

/** An open /dev/vfio/vfio. */
export class VfioContainerFile implements SimFile {
  readonly kind = 'container' as const;
  readonly container: VfioContainer;

  constructor(ctx: VfioContext) {
    this.container = new VfioContainer(ctx);
  }

  /** vfio_fops_unl_ioctl(): unknown ioctls go to the driver, or fail EINVAL without one. */
  ioctl(request: number, arg: IoctlIn): number {
    const c = this.container;
    switch (request) {
      case VFIO_GET_API_VERSION.request:
        return VFIO_API.API_VERSION;
      case VFIO_CHECK_EXTENSION.request:
        return c.checkExtension(arg.value);
      case VFIO_SET_IOMMU.request:
        return c.setIommu(arg.value);
      default:
        if (!c.iommu_driver) kfail('EINVAL', 'no IOMMU driver set');
        return c.iommu_driver.ioctl(request, arg);
    }
  }

  /** The container outlives its fd while groups hold it; its mappings go with the last group. */
  release(): void {}
}
