// Hot reset through the container backends (QEMU's vfio_legacy_pci_hot_reset and
// iommufd_cdev_pci_hot_reset): every device the reset affects must be ours, else the backend
// refuses with a VfioError before asking the kernel, and the kernel itself refuses the same
// request (6.12 vfio_pci_dev_set_hot_reset: EINVAL). Runs on a simulated kernel in this
// thread, so the test sees which devices were reset.
//
// The real 6.12 kernel counts a device as owned when (legacy) the caller passes its group's
// fd, or (cdev) it is bound to the caller's iommufd or its IOMMU group has a device that
// is (vfio_iommufd_get_dev_id: -ENOENT, VFIO_PCI_DEVID_OWNED). So the default topology's
// 05.0/05.1 pair, one IOMMU group, cannot give an unowned dependent: a reset needs two
// functions in two groups. The host here adds one: a two-function device with ACS behind a
// root port (each function its own group, one secondary bus reset). The test VM has no such
// device (each edu alone behind its own root port), so the refusal has no real-kernel test.
import { expect } from 'chai';
import { vfioDeviceAttach, type VfioDevice } from '../src/backends/device.js';
import { VfioHost } from '../src/backends/host.js';
import { IommufdBackend } from '../src/backends/iommufd.js';
import type { IommufdOption } from '../src/backends/select.js';
import { DEFAULT_DRIVERS } from '../src/kernel/drivers.js';
import { SimKernel } from '../src/kernel/kernel.js';
import { defaultTopology, type Topology } from '../src/kernel/topology.js';
import { vfioOf, type VfioDriver } from '../src/kernel/vfio/driver.js';
import { SyscallError } from '../src/port/errors.js';
import { LinuxPort } from '../src/port/linux.js';
import { O } from '../src/uapi/libc.js';
import { SimPort } from '../src/kernel/sim-port.js';
import { VFIO_DEVICE_PCI_HOT_RESET, vfio_pci_hot_reset } from '../src/uapi/index.js';
import { expectVfioError, simFds } from './backends-kit.js';

const FN0 = '0000:01:00.0';
const FN1 = '0000:01:00.1';

/** The default host plus a two-function device behind a root port: groups 8 and 9, one bus reset. */
function sharedResetTopology(): Topology {
  const t = defaultTopology();
  const fn = t.devices.find((d) => d.bdf === '0000:00:05.0')!;
  t.devices.push(
    { ...fn, bdf: FN0, group: 8, cdev: 'vfio5', reset: false, reset_domain: 'rp1-secondary-bus' },
    { ...fn, bdf: FN1, group: 9, cdev: 'vfio6', reset: false, reset_domain: 'rp1-secondary-bus' },
  );
  return t;
}

describe('backends: hot reset refuses a reset that affects a device we do not own (simulated kernel)', function () {
  let kernel: SimKernel;
  let vfio: VfioDriver;
  let port: SimPort;
  let host: VfioHost;
  let baseline: string[];

  beforeEach(function () {
    baseline = simFds();
    kernel = new SimKernel(sharedResetTopology(), new LinuxPort(), DEFAULT_DRIVERS);
    vfio = vfioOf(kernel)!;
    port = SimPort.direct(kernel);
    host = new VfioHost(port);
  });
  afterEach(function () {
    for (const d of [...host.devices.values()]) d.close();
    expect(host.containers, 'containers left').to.have.length(0);
    expect(simFds(), 'simulated fds left open').to.deep.equal(baseline);
    vfio.dispose();
  });

  const attach = (bdf: string, iommufd: IommufdOption, space = 'as0') =>
    vfioDeviceAttach(host, bdf, { iommufd, space });
  /** Resets each device has had so far (the kernel's count). */
  const resets = (...bdfs: string[]) => bdfs.map((b) => vfio.device(b)!.resets);
  /** Hot-resets `dev` through its container: each of `bdfs` must be reset once. */
  const expectResetsAll = (dev: VfioDevice, bdfs = [FN0, FN1]) => {
    const before = resets(...bdfs);
    dev.container!.pciHotReset(dev);
    expect(resets(...bdfs), dev.bdf).to.deep.equal(before.map((n) => n + 1));
  };
  /** VFIO_DEVICE_PCI_HOT_RESET with these group fds (none: the cdev form), straight to the kernel. */
  const kernelHotReset = (deviceFd: number, groupFds: number[]): string => {
    const buf = new Uint8Array(vfio_pci_hot_reset.size + 4 * groupFds.length);
    const r = vfio_pci_hot_reset.view(buf).reset();
    r.argsz = buf.byteLength;
    r.count = groupFds.length;
    const dv = new DataView(buf.buffer);
    groupFds.forEach((fd, i) => dv.setInt32(vfio_pci_hot_reset.size + 4 * i, fd, true));
    try {
      port.ioctl(deviceFd, VFIO_DEVICE_PCI_HOT_RESET, buf);
      return 'OK';
    } catch (e) {
      if (e instanceof SyscallError) return e.code;
      throw e;
    }
  };

  describe('legacy (group fds)', function () {
    it('refuses when the reset also resets a device of a group we have not opened, naming the group; the kernel refuses it too (EINVAL) and nothing is reset', function () {
      const a = attach(FN0, 'off');
      const before = resets(FN0, FN1);
      const e = expectVfioError(() => a.container!.pciHotReset(a));
      expect(e).to.deep.include({ op: 'pci_hot_reset', device: FN0, code: 'EPERM' });
      expect(e.message).to.equal(
        `pci_hot_reset ${FN0} on ${a.container!.describe()}: EPERM (Operation not permitted): ` +
          `depends on group 9 (${FN1}) which is not owned`,
      );
      expect(e.cause, 'refused before the kernel was asked').to.equal(undefined);
      expect(kernelHotReset(a.fd, [a.vfioGroup!.fd]), 'the kernel, given only group 8').to.equal('EINVAL');
      expect(resets(FN0, FN1)).to.deep.equal(before);
      // VfioDevice.reset() takes the same path (no FLR on these functions).
      expect(expectVfioError(() => a.reset()).code).to.equal('EPERM');
      expect(resets(FN0, FN1)).to.deep.equal(before);
    });

    it('resets both functions once both groups are ours: in one container, or in another address space', function () {
      const a = attach(FN0, 'off');
      const b = attach(FN1, 'off');
      expect(b.container).to.equal(a.container);
      expectResetsAll(a);
      b.close();
      // QEMU's vfio_group_list is process-wide: a group of another address space is ours too.
      const c = attach(FN1, 'off', 'as1');
      expect(c.container).to.not.equal(a.container);
      expectResetsAll(c);
    });
  });

  describe('iommufd (cdev, empty group array)', function () {
    it('refuses when a dependent device is not bound to our iommufd (VFIO_PCI_DEVID_NOT_OWNED), naming it; the kernel refuses it too (EINVAL) and nothing is reset', function () {
      const a = attach(FN0, 'on');
      const before = resets(FN0, FN1);
      const e = expectVfioError(() => a.container!.pciHotReset(a));
      expect(e).to.deep.include({ op: 'pci_hot_reset', device: FN0, code: 'EPERM' });
      expect(e.message).to.equal(
        `pci_hot_reset ${FN0} on ${a.container!.describe()}: EPERM (Operation not permitted): ` +
          `depends on ${FN1} not owned by iommufd object iommufd0`,
      );
      expect(e.cause).to.equal(undefined);
      expect(kernelHotReset(a.fd, []), 'the kernel, cdev form').to.equal('EINVAL');
      expect(resets(FN0, FN1)).to.deep.equal(before);
    });

    it('a dependent bound to another iommufd object is not ours either, both ways', function () {
      const a = attach(FN0, 'on');
      const other = new IommufdBackend(port, { id: 'other' });
      const b = attach(FN1, other, 'as1');
      const before = resets(FN0, FN1);
      expect(expectVfioError(() => a.container!.pciHotReset(a)).message).to.contain(
        `depends on ${FN1} not owned by iommufd object iommufd0`,
      );
      expect(expectVfioError(() => b.container!.pciHotReset(b)).message).to.contain(
        `depends on ${FN0} not owned by iommufd object other`,
      );
      expect(kernelHotReset(a.fd, [])).to.equal('EINVAL');
      expect(kernelHotReset(b.fd, [])).to.equal('EINVAL');
      expect(resets(FN0, FN1)).to.deep.equal(before);
    });

    it('resets both functions once both are bound to our iommufd: in one IOAS, or in another address space', function () {
      const a = attach(FN0, 'on');
      const b = attach(FN1, 'on');
      expect(b.container).to.equal(a.container);
      expectResetsAll(b);
      b.close();
      const c = attach(FN1, 'on', 'as1'); // another IOAS, the same iommufd object
      expect(c.container).to.not.equal(a.container);
      expectResetsAll(a);
    });
  });

  it('one function through iommufd, the other through its group: each refuses the other, as the kernel does', function () {
    const a = attach(FN0, 'on');
    const b = attach(FN1, 'off', 'as1');
    const before = resets(FN0, FN1);
    expect(expectVfioError(() => a.container!.pciHotReset(a)).message).to.contain(
      `depends on ${FN1} not owned`,
    );
    expect(expectVfioError(() => b.container!.pciHotReset(b)).message).to.contain(
      `depends on group 8 (${FN0}) which is not owned`,
    );
    expect(kernelHotReset(a.fd, [])).to.equal('EINVAL');
    expect(kernelHotReset(b.fd, [b.vfioGroup!.fd])).to.equal('EINVAL');
    // Group 8 cannot even be opened to prove ownership while FN0 is bound through its cdev.
    expect(() => port.open('/dev/vfio/8', O.RDWR | O.CLOEXEC)).to.throw(SyscallError, /EBUSY/);
    expect(resets(FN0, FN1)).to.deep.equal(before);
  });

  it('a function whose group sibling is not open is owned through the group (05.0 without 05.1): both backends reset both', function () {
    for (const mode of ['off', 'on'] as const) {
      const a = attach('0000:00:05.0', mode);
      expectResetsAll(a, ['0000:00:05.0', '0000:00:05.1']);
      a.close();
    }
  });
});
