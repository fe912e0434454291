/**
 * The test VM boots in one of two IOMMU variants (vm/run.ts --iommu): QEMU's Intel VT-d
 * or virtio-iommu. Suites whose facts hold for one IOMMU only are declared with
 * {@link describeKernelOn}; the guest learns its variant from vm/guest-run.sh
 * (VFIO_ENGINE_GUEST_IOMMU, from `vfio_engine.iommu=` on the kernel command line).
 */
import type { IommuVariant } from '../../vm/run.js';
import { KERNEL_SKIP_REASON } from './guest.js';
import { onSimulatedKernel, simulatedIommu, simulatedTopology } from './recording-port.js';

export type { IommuVariant };
/** The simulated host the kernel suites run on with VFIO_ENGINE_PORT=sim (for engines made by a spec). */
export { simulatedTopology };

/** The variant of this VM, or null outside the VM (or in a guest started without one). */
export function guestIommu(): IommuVariant | null {
  const v = process.env.VFIO_ENGINE_GUEST_IOMMU;
  return v === 'vtd' || v === 'virtio' ? v : null;
}

/**
 * The variant the simulated kernel models (src/kernel/topology.ts testVmTopology): chosen
 * with VFIO_ENGINE_SIM_IOMMU=vtd|virtio, default vtd; `npm test` and `npm run test:sim` run
 * the kernel suites on both.
 */
export const SIMULATED_IOMMU: IommuVariant = simulatedIommu();

/**
 * `describe` for a kernel suite that holds on one IOMMU variant only. In that variant's
 * VM (or on the simulated kernel, if it models that variant) it runs; elsewhere it is
 * `describe.skip` with the reason in the title, so its tests count as skipped and no hook runs. A guest that does not know its variant
 * fails the suite instead of skipping it: every suite would otherwise vanish unnoticed.
 */
export function describeKernelOn(
  variant: IommuVariant,
  title: string,
  fn: (this: Mocha.Suite) => void,
): Mocha.Suite | void {
  if (process.env.VFIO_ENGINE_GUEST !== '1') {
    if (!onSimulatedKernel()) return describe.skip(`${title} [skipped: ${KERNEL_SKIP_REASON}]`, fn);
    if (variant === SIMULATED_IOMMU) return describe(`${title} [simulated kernel, ${variant}]`, fn);
    return describe.skip(
      `${title} [skipped: needs the ${variant} VM; this run simulates ${SIMULATED_IOMMU} (VFIO_ENGINE_SIM_IOMMU=${variant} runs it)]`,
      fn,
    );
  }
  const here = guestIommu();
  if (here === variant) return describe(title, fn);
  if (here !== null) {
    return describe.skip(
      `${title} [skipped: needs the ${variant} VM (node dist/vm/run.js --iommu ${variant}); this one is ${here}]`,
      fn,
    );
  }
  return describe(title, function () {
    before(function () {
      throw new Error(
        `VFIO_ENGINE_GUEST_IOMMU is ${JSON.stringify(process.env.VFIO_ENGINE_GUEST_IOMMU)}: ` +
          `expected vtd or virtio from vm/guest-run.sh`,
      );
    });
    fn.call(this);
  });
}
