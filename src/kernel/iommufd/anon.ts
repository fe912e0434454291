/**
 * The anon-inode files an iommufd hands out: the fault queue of IOMMU_FAULT_QUEUE_ALLOC
 * ("[iommufd-pgfault]") and the selftest access of IOMMU_TEST_OP_CREATE_ACCESS
 * ("[iommufd_test_staccess]"). Both hold a reference on the iommufd context, so closing
 * the iommufd first defers its teardown until they are closed too.
 */
import { kfail } from '../errno.js';
import type { IoctlIn, SimFile } from '../types.js';
import type { Access, Fault } from './objects.js';

/** What an anon file needs of its iommufd context. */
export interface AnonOwner {
  /** iommufd_ctx_put() */
  putRef(): void;
  /** The access's fd was closed: unpin everything and destroy the access (iommufd_test_staccess_release). */
  releaseAccess(access: Access): void;
}

/** The fault queue fd. Nothing ever faults (no PRI-capable nested domains are modelled), so reads find nothing. */
export class FaultFile implements SimFile {
  readonly kind = 'anon';

  constructor(
    readonly fault: Fault,
    private readonly owner: AnonOwner,
  ) {}

  ioctl(): number {
    return kfail('ENOTTY', 'no ioctls on a fault queue');
  }

  // anon_inode_getfile() files lack FMODE_PREAD/FMODE_PWRITE: pread(2)/pwrite(2) are ESPIPE (read(2) would work).
  pread(): number {
    return kfail('ESPIPE');
  }

  pwrite(): number {
    return kfail('ESPIPE');
  }

  release(): void {
    this.fault.fileOpen = false;
    this.owner.putRef();
  }
}

/** The selftest access fd; its number is the access's id in the IOMMU_TEST_OP_ACCESS_* commands. */
export class AccessFile implements SimFile {
  readonly kind = 'anon';

  constructor(
    readonly access: Access,
    /** The iommufd context that made it. */
    readonly owner: AnonOwner,
  ) {}

  ioctl(_request: number, _arg: IoctlIn): number {
    return kfail('ENOTTY', 'no ioctls on a selftest access');
  }

  release(): void {
    this.owner.releaseAccess(this.access);
    this.owner.putRef();
  }
}
