// Hot reset through the container backends on the kernel (QEMU's vfio_legacy_pci_hot_reset
// and iommufd_cdev_pci_hot_reset): what the backends read of VFIO_DEVICE_GET_PCI_HOT_RESET_INFO
// (the ENOSPC sizing call, then group ids or, through a cdev, DEV_ID devids) and the reset
// they ask for (the group fds they own; an empty array through a cdev). In the test VM each
// edu sits alone below its own root port, so a reset affects that device only and every
// reset is allowed: the refusals (a dependent device not ours) need a two-function device
// and are tested on the simulated kernel (test/backends-hot-reset.spec.ts).
import { expect } from 'chai';
import { vfioGetPciHotResetInfo } from '../../src/backends/common.js';
import { vfioDeviceAttach, type VfioDevice } from '../../src/backends/device.js';
import { VfioHost } from '../../src/backends/host.js';
import { VFIO_DEVICE_FLAGS, VFIO_PCI_HOT_RESET_FLAG } from '../../src/uapi/index.js';
import { describeKernel } from './guest.js';
import { eduPair } from './kit.js';
import { ioctlRecorder, kernelPort } from './recording-port.js';

describeKernel('backends on the kernel: hot reset of an edu below its own root port', function () {
  let host: VfioHost;

  beforeEach(function () {
    host = new VfioHost(kernelPort());
  });
  afterEach(function () {
    for (const d of [...host.devices.values()]) d.close();
    expect(host.containers).to.have.length(0);
  });

  /** Resets `dev` through its container; returns the count of VFIO_DEVICE_PCI_HOT_RESET calls the kernel accepted. */
  const hotReset = (dev: VfioDevice): number => {
    const ok = () => ioctlRecorder.tally('VFIO_DEVICE_PCI_HOT_RESET').ok;
    const before = ok();
    dev.container!.pciHotReset(dev);
    return ok() - before;
  };

  it('legacy: the info names the device and its group; the reset passes that group fd', function () {
    const edu = eduPair().legacy;
    const dev = vfioDeviceAttach(host, edu.bdf, { iommufd: 'off' });
    const info = vfioGetPciHotResetInfo(host.port, dev.fd);
    expect(info).to.deep.equal({ flags: 0, devices: [{ id: edu.group, bdf: edu.bdf }] });
    expect(hotReset(dev)).to.equal(1);
  });

  it('iommufd: the info has DEV_ID_OWNED and the device id; the reset passes no fd', function () {
    const edu = eduPair().iommufd;
    const dev = vfioDeviceAttach(host, edu.bdf, { iommufd: 'on' });
    const F = VFIO_PCI_HOT_RESET_FLAG;
    const info = vfioGetPciHotResetInfo(host.port, dev.fd);
    expect(info).to.deep.equal({
      flags: F.DEV_ID | F.DEV_ID_OWNED,
      devices: [{ id: dev.devid, bdf: edu.bdf }],
    });
    expect(hotReset(dev)).to.equal(1);
  });

  it('both backends side by side: each device resets alone; VfioDevice.reset() takes the function reset the kernel offers', function () {
    const pair = eduPair();
    const a = vfioDeviceAttach(host, pair.iommufd.bdf, { iommufd: 'on' });
    const b = vfioDeviceAttach(host, pair.legacy.bdf, { iommufd: 'off' });
    expect(hotReset(a)).to.equal(1);
    expect(hotReset(b)).to.equal(1);
    // Below a root port the kernel offers VFIO_DEVICE_RESET (a bus reset), so reset() uses it.
    const tally = () =>
      ['VFIO_DEVICE_RESET', 'VFIO_DEVICE_PCI_HOT_RESET'].map((n) => ioctlRecorder.tally(n).ok);
    const [resets, hotResets] = tally();
    for (const d of [a, b]) {
      expect(d.info.flags & VFIO_DEVICE_FLAGS.RESET, d.bdf).to.not.equal(0);
      d.reset();
    }
    expect(tally()).to.deep.equal([resets! + 2, hotResets]);
  });
});
