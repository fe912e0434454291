/**
 * Backend selection per device (the RFC's iommufd=on|off|auto, plus QEMU's explicit
 * `-object iommufd` link). 'auto' is what QEMU dropped because the locked-memory
 * accounting differs between backends, so the choice always comes with its reason,
 * memlock note included, for the engine to show.
 */
import { ERRNO } from '../uapi/errno.js';
import type { VfioDeviceLocation } from './discovery.js';
import { VfioError } from './errors.js';
import type { VfioHost } from './host.js';
import { IommufdBackend } from './iommufd.js';

/** How a device picks its backend: 'on', 'off', 'auto', or an explicit shared iommufd object. */
export type IommufdOption = 'on' | 'off' | 'auto' | IommufdBackend;

/** The backend chosen for a device, and why. */
export interface BackendChoice {
  kind: 'legacy' | 'iommufd';
  /** The iommufd object to bind to (iommufd only). */
  iommufd?: IommufdBackend;
  /** Human reason, e.g. "auto: 0000:00:06.0 has no VFIO cdev, using the legacy container". */
  reason: string;
}

const MEMLOCK_IOMMUFD = 'pinned memory is charged once per IOAS';
const MEMLOCK_LEGACY = 'pinned memory is charged once per container';

/** Picks the backend of a device. Throws VfioError (op 'select_backend') when 'on' or an object cannot be honoured. */
export function vfioSelectBackend(
  host: VfioHost,
  loc: VfioDeviceLocation,
  option: IommufdOption,
): BackendChoice {
  const { bdf } = loc;
  const noCdev = !loc.cdev
    ? `${bdf} has no VFIO cdev`
    : !loc.cdevNodeExists
      ? `${loc.cdevPath} does not exist`
      : null;
  const refuse = (label: string, why: string): never => {
    throw new VfioError({
      op: 'select_backend',
      device: bdf,
      errno: ERRNO.ENODEV,
      detail: `${label}: cannot use iommufd: ${why}`,
    });
  };
  if (option instanceof IommufdBackend) {
    if (noCdev) refuse(`iommufd object ${option.id}`, noCdev);
    if (!option.hasFd && !loc.iommuExists) refuse(`iommufd object ${option.id}`, '/dev/iommu does not exist');
    return {
      kind: 'iommufd',
      iommufd: option,
      reason: `iommufd object ${option.id}: ${bdf} through ${loc.cdevPath}; ${MEMLOCK_IOMMUFD}`,
    };
  }
  switch (option) {
    case 'off':
      return {
        kind: 'legacy',
        reason: `iommufd=off: ${bdf} through the legacy container (group ${loc.group}); ${MEMLOCK_LEGACY}`,
      };
    case 'on':
      if (!loc.iommuExists)
        refuse('iommufd=on', '/dev/iommu does not exist (kernel without CONFIG_IOMMUFD?)');
      if (noCdev)
        refuse('iommufd=on', loc.cdev ? noCdev : `${noCdev} (kernel without CONFIG_VFIO_DEVICE_CDEV?)`);
      return {
        kind: 'iommufd',
        iommufd: host.defaultIommufd(),
        reason: `iommufd=on: ${bdf} through ${loc.cdevPath}; ${MEMLOCK_IOMMUFD}`,
      };
    case 'auto': {
      const why = !loc.iommuExists ? 'no /dev/iommu' : noCdev;
      if (why) {
        return {
          kind: 'legacy',
          reason: `auto: ${why}, using the legacy container (group ${loc.group}); ${MEMLOCK_LEGACY}`,
        };
      }
      return {
        kind: 'iommufd',
        iommufd: host.defaultIommufd(),
        reason: `auto: /dev/iommu and ${loc.cdevPath} exist, using iommufd; ${MEMLOCK_IOMMUFD}`,
      };
    }
  }
}
