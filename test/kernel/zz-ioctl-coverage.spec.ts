// The coverage check of the kernel suites: every ioctl the uapi layer declares was
// accepted by the real kernel at least once and refused at least once, as counted by the
// RecordingPort all suites share. Named zz- so that mocha, which sorts spec files by
// name, loads and runs it last.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { IOCTLS } from '../../src/uapi/index.js';
import { describeKernel } from './guest.js';
import { kernelHandles } from './kit.js';
import { ioctlRecorder } from './recording-port.js';

/** The spec files (base names) that drive ioctls through the shared recorder. */
const CONTRIBUTORS = [
  'e2e-dma',
  'uapi-iommufd-ioas',
  'uapi-iommufd-selftest',
  'uapi-iommufd-vtd',
  'uapi-vfio-device',
  'uapi-vfio-type1',
];

/**
 * ioctls that cannot succeed in this VM, and why. Each must still have been refused
 * at least once, and must never succeed (else the exception is stale).
 */
const NO_DIRTY_DOMAIN =
  'no domain in this VM tracks dirty pages: QEMU 7.2 VT-d has no scalable mode (no SSADS), and mock ' +
  'domains cannot be created next to intel-iommu (MOCK_DOMAIN -> EINVAL, see uapi-iommufd-selftest)';
const CANNOT_SUCCEED: Readonly<Record<string, string>> = {
  IOMMU_HWPT_SET_DIRTY_TRACKING: NO_DIRTY_DOMAIN,
  IOMMU_HWPT_GET_DIRTY_BITMAP: NO_DIRTY_DOMAIN,
  IOMMU_HWPT_INVALIDATE:
    'needs a nested HWPT: QEMU 7.2 VT-d has no scalable mode (ecap.SMTS = 0, so no nesting), and there ' +
    'is no mock domain to nest in (MOCK_DOMAIN -> EINVAL next to intel-iommu)',
  VFIO_DEVICE_RESET:
    'edu has no FLR, PM or ACPI reset and sits on the q35 root bus (no secondary bus reset): vfio-pci ' +
    'found no reset method, so reset_works is false',
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO:
    'the edu devices sit on the root bus: pci_probe_reset_slot() and pci_probe_reset_bus() fail (ENODEV)',
  VFIO_DEVICE_PCI_HOT_RESET:
    'as VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: no slot or bus reset on the root bus (ENODEV)',
};

describeKernel(
  'ioctl coverage: every ioctl of the uapi layer was accepted and refused by the real kernel',
  function () {
    before(function () {
      const here = fileURLToPath(new URL('.', import.meta.url));
      const absent = CONTRIBUTORS.filter((name) => !existsSync(`${here}${name}.spec.js`));
      expect(absent, 'contributing spec files missing from the build').to.deep.equal([]);
      const notLoaded = CONTRIBUTORS.filter((name) => !ioctlRecorder.suites.has(name));
      if (notLoaded.length) {
        // A partial run (--spec): the counts would be incomplete.
        console.log(`      coverage not checked: this run did not load ${notLoaded.join(', ')}`);
        this.skip();
      }
    });

    it('names only declared ioctls in its exception list', function () {
      const declared = new Set(IOCTLS.map((i) => i.name));
      expect(Object.keys(CANNOT_SUCCEED).filter((n) => !declared.has(n))).to.deep.equal([]);
    });

    it('saw every ioctl succeed at least once, except the documented ones, which never did', function () {
      const table = IOCTLS.map((i) => {
        const t = ioctlRecorder.tally(i.name);
        return `${i.name.padEnd(36)} ok ${String(t.ok).padStart(3)}  failed ${String(t.failed).padStart(3)}  ${[...t.errnos].sort().join(' ')}`;
      });
      console.log(table.map((l) => `      ${l}`).join('\n'));
      const never = IOCTLS.filter((i) => ioctlRecorder.tally(i.name).ok === 0 && !(i.name in CANNOT_SUCCEED));
      expect(
        never.map((i) => i.name),
        'never succeeded',
      ).to.deep.equal([]);
      const stale = Object.keys(CANNOT_SUCCEED).filter((n) => ioctlRecorder.tally(n).ok > 0);
      expect(stale, 'listed as impossible but succeeded: drop the exception').to.deep.equal([]);
    });

    it('saw every ioctl fail at least once', function () {
      const never = IOCTLS.filter((i) => ioctlRecorder.tally(i.name).failed === 0);
      expect(
        never.map((i) => i.name),
        'never failed',
      ).to.deep.equal([]);
    });

    it('finds no fd or mapping of /dev/iommu, /dev/vfio or the test memfds left open by any suite', function () {
      expect(kernelHandles()).to.deep.equal([]);
    });
  },
);
