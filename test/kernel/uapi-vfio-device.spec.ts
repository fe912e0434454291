// uapi conformance, part 4: the VFIO device ioctls on a bound cdev of an edu device
// (QEMU 1234:11e8: a conventional PCI device, alone behind its own PCIe root port, 1 MiB
// BAR0, INTx + one MSI vector, no PM or PCIe capability). The hot reset answers for the
// group path are in uapi-vfio-type1. Same facts with either IOMMU: runs in both VMs.
// The reset answers follow the topology: below a root port (the VM, pinned by the test
// bed) edu has a bus reset; on the root bus (still the simulated kernel's shape) none.
import { expect } from 'chai';
import {
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_FLAGS,
  VFIO_DEVICE_FLAGS,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_RESET,
  VFIO_IRQ_INFO,
  VFIO_PCI_HOT_RESET_FLAG,
  VFIO_PCI_IRQ,
  VFIO_PCI_REGION,
  VFIO_REGION_INFO_FLAG,
  vfio_device_bind_iommufd,
  vfio_device_feature,
  vfio_device_feature_dma_logging_control,
  vfio_device_info,
  vfio_irq_info,
  vfio_pci_dependent_device,
  vfio_pci_hot_reset,
  vfio_pci_hot_reset_info,
  vfio_region_info,
} from '../../src/uapi/index.js';
import { MAP, PROT } from '../../src/uapi/libc.js';
import { describeKernel } from './guest.js';
import { eduPair, expectErrno, iommufdFixture, Resources } from './kit.js';
import type { EduDevice } from './guest.js';
import { ioctlRecorder, kernelPort } from './recording-port.js';

ioctlRecorder.registerSuite('uapi-vfio-device');

const MiB = 1n << 20n;
/** VFIO_PCI_INDEX_TO_OFFSET: vfio-pci puts region `index` at file offset index << 40. */
const regionOffset = (index: number) => BigInt(index) << 40n;
/** True when `edu` sits below a bridge (bus != 0), where a secondary bus reset exists. */
const belowBridge = (edu: EduDevice) => parseInt(edu.bdf.split(':')[1]!, 16) !== 0;

describeKernel('uapi conformance: VFIO device ioctls on an edu cdev', function () {
  const f = iommufdFixture({ bind: true });

  it('VFIO_DEVICE_GET_INFO: a PCI device with 9 regions and 5 IRQ indexes, RESET below a root port (none on the root bus); argsz below the minimum -> EINVAL', function () {
    const info = vfio_device_info.view().reset();
    f.port.ioctl(f.dev, VFIO_DEVICE_GET_INFO, info.bytes);
    expect(info.flags & VFIO_DEVICE_FLAGS.PCI).to.not.equal(0);
    // edu has no FLR or PM reset: only a bus reset, below a bridge (see VFIO_DEVICE_RESET).
    expect(info.flags & VFIO_DEVICE_FLAGS.RESET).to.equal(belowBridge(f.edu) ? VFIO_DEVICE_FLAGS.RESET : 0);
    expect(info.flags & VFIO_DEVICE_FLAGS.CAPS, 'no capability chain (not zPCI, not PCIe)').to.equal(0);
    expect(info.num_regions).to.equal(VFIO_PCI_REGION.NUM_REGIONS);
    expect(info.num_irqs).to.equal(VFIO_PCI_IRQ.NUM_IRQS);
    info.reset().argsz = 8;
    expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_GET_INFO, info.bytes));
  });

  it('VFIO_DEVICE_GET_REGION_INFO: BAR0 is 1 MiB, mmap-able, at offset 0; config space is 256 bytes at 7 << 40; unused BAR and ROM are empty; VGA (no VGA) or an unknown index -> EINVAL', function () {
    const region = (index: number) => {
      const r = vfio_region_info.view().reset();
      r.index = index;
      f.port.ioctl(f.dev, VFIO_DEVICE_GET_REGION_INFO, r.bytes);
      return r;
    };
    const R = VFIO_REGION_INFO_FLAG;
    const bar0 = region(VFIO_PCI_REGION.BAR0_REGION_INDEX);
    expect(bar0.size).to.equal(MiB);
    expect(bar0.offset).to.equal(0n);
    expect(bar0.flags).to.equal(R.READ | R.WRITE | R.MMAP);
    const config = region(VFIO_PCI_REGION.CONFIG_REGION_INDEX);
    expect(config.size, 'conventional PCI config space').to.equal(256n);
    expect(config.offset).to.equal(regionOffset(VFIO_PCI_REGION.CONFIG_REGION_INDEX));
    expect(config.flags).to.equal(R.READ | R.WRITE);
    const bar1 = region(VFIO_PCI_REGION.BAR1_REGION_INDEX);
    expect([bar1.size, bar1.flags]).to.deep.equal([0n, 0]);
    const rom = region(VFIO_PCI_REGION.ROM_REGION_INDEX);
    expect([rom.size, rom.flags]).to.deep.equal([0n, 0]);

    const bad = vfio_region_info.view().reset();
    bad.index = VFIO_PCI_REGION.VGA_REGION_INDEX;
    expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_GET_REGION_INFO, bad.bytes), 'VGA region');
    bad.index = 99;
    expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_GET_REGION_INFO, bad.bytes), 'index 99');
    bad.index = 0;
    bad.argsz = 16;
    expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_GET_REGION_INFO, bad.bytes), 'argsz 16');
  });

  it('VFIO_DEVICE_GET_IRQ_INFO: INTx (1, maskable), MSI (1 vector), no MSI-X, REQ; ERR (not PCIe) or an unknown index -> EINVAL', function () {
    const irq = (index: number) => {
      const i = vfio_irq_info.view().reset();
      i.index = index;
      f.port.ioctl(f.dev, VFIO_DEVICE_GET_IRQ_INFO, i.bytes);
      return [i.count, i.flags];
    };
    const I = VFIO_IRQ_INFO;
    expect(irq(VFIO_PCI_IRQ.INTX_IRQ_INDEX)).to.deep.equal([1, I.EVENTFD | I.MASKABLE | I.AUTOMASKED]);
    expect(irq(VFIO_PCI_IRQ.MSI_IRQ_INDEX)).to.deep.equal([1, I.EVENTFD | I.NORESIZE]);
    expect(irq(VFIO_PCI_IRQ.MSIX_IRQ_INDEX)).to.deep.equal([0, I.EVENTFD | I.NORESIZE]);
    expect(irq(VFIO_PCI_IRQ.REQ_IRQ_INDEX)).to.deep.equal([1, I.EVENTFD | I.NORESIZE]);

    const bad = vfio_irq_info.view().reset();
    bad.index = VFIO_PCI_IRQ.ERR_IRQ_INDEX;
    expectErrno(
      'EINVAL',
      () => f.port.ioctl(f.dev, VFIO_DEVICE_GET_IRQ_INFO, bad.bytes),
      'ERR on conventional PCI',
    );
    bad.index = VFIO_PCI_IRQ.NUM_IRQS;
    expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_GET_IRQ_INFO, bad.bytes), 'index 5');
    bad.index = 0;
    bad.argsz = 8;
    expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_GET_IRQ_INFO, bad.bytes), 'argsz 8');
  });

  // edu has no FLR (not PCIe), no PM capability and no ACPI _RST. Alone on the secondary
  // bus of its own root port, the bridge's secondary bus reset resets it and nothing else;
  // on the q35 root bus there is no bus reset, vfio-pci finds no method (reset_works false).
  it('VFIO_DEVICE_RESET: resets below a root port (bus reset), -> EINVAL on the root bus; a cdev fd not bound -> EINVAL', function () {
    if (belowBridge(f.edu)) expect(f.port.ioctl(f.dev, VFIO_DEVICE_RESET)).to.equal(0);
    else expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_RESET), 'root bus: no reset method');
    const unbound = f.res.open(`/dev/vfio/devices/${f.edu.cdev}`);
    expectErrno('EINVAL', () => f.port.ioctl(unbound, VFIO_DEVICE_RESET), 'unbound cdev fd');
    f.res.close(unbound);
  });

  it('VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: below a root port one affected device, this one (its iommufd devid, owned), no room for it -> ENOSPC with the count; on the root bus -> ENODEV; argsz below the minimum -> EINVAL', function () {
    const buf = new Uint8Array(vfio_pci_hot_reset_info.size + 4 * vfio_pci_dependent_device.size);
    const h = vfio_pci_hot_reset_info.view(buf).reset();
    h.argsz = buf.byteLength;
    if (belowBridge(f.edu)) {
      f.port.ioctl(f.dev, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf);
      const F = VFIO_PCI_HOT_RESET_FLAG;
      expect(h.flags, 'cdev: devids, all owned by this iommufd').to.equal(F.DEV_ID | F.DEV_ID_OWNED);
      expect(h.count).to.equal(1);
      const d = vfio_pci_dependent_device.view(buf, vfio_pci_hot_reset_info.size);
      const [, bus, slot, fn] = f.edu.bdf.split(/[:.]/).map((x) => parseInt(x, 16));
      expect([d.devid, d.segment, d.bus, d.devfn]).to.deep.equal([f.devId, 0, bus, (slot! << 3) | fn!]);
      h.reset().argsz = vfio_pci_hot_reset_info.size;
      expectErrno('ENOSPC', () => f.port.ioctl(f.dev, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf), 'no room');
      expect(h.count, 'the count needed').to.equal(1);
    } else {
      // pci_probe_reset_slot() and pci_probe_reset_bus() both fail on the root bus.
      expectErrno('ENODEV', () => f.port.ioctl(f.dev, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf), 'root bus');
    }
    h.argsz = 8;
    expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf), 'argsz 8');
  });

  it('VFIO_DEVICE_PCI_HOT_RESET on a cdev: the empty group array resets below a root port (every affected device is bound to this iommufd), -> ENODEV on the root bus; group fds -> EINVAL, flags -> EINVAL', function () {
    const h = vfio_pci_hot_reset.view().reset();
    h.count = 1;
    expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_PCI_HOT_RESET, h.bytes), 'count 1 on a cdev');
    h.count = 0;
    h.flags = VFIO_PCI_HOT_RESET_FLAG.DEV_ID;
    expectErrno('EINVAL', () => f.port.ioctl(f.dev, VFIO_DEVICE_PCI_HOT_RESET, h.bytes), 'flags');
    h.flags = 0;
    if (belowBridge(f.edu)) expect(f.port.ioctl(f.dev, VFIO_DEVICE_PCI_HOT_RESET, h.bytes)).to.equal(0);
    else expectErrno('ENODEV', () => f.port.ioctl(f.dev, VFIO_DEVICE_PCI_HOT_RESET, h.bytes), 'root bus');
  });

  it('VFIO_DEVICE_FEATURE: PROBE of LOW_POWER_ENTRY (SET) succeeds; DMA logging, migration and BUS_MASTER -> ENOTTY (edu has none); GET on a SET-only feature, GET|SET without PROBE, unknown flags or a short argsz -> EINVAL', function () {
    const X = VFIO_DEVICE_FEATURE_FLAGS;
    const feature = (flags: number, argsz?: number) => {
      const buf = new Uint8Array(vfio_device_feature.size + vfio_device_feature_dma_logging_control.size);
      const v = vfio_device_feature.view(buf).reset();
      v.flags = flags;
      v.argsz = argsz ?? buf.byteLength;
      return () => f.port.ioctl(f.dev, VFIO_DEVICE_FEATURE, buf);
    };
    feature(X.PROBE | X.SET | X.LOW_POWER_ENTRY)();
    expectErrno('EINVAL', feature(X.PROBE | X.GET | X.LOW_POWER_ENTRY), 'LOW_POWER_ENTRY is SET-only');
    // What QEMU probes before offering device dirty tracking: edu has no log_ops.
    expectErrno('ENOTTY', feature(X.PROBE | X.SET | X.DMA_LOGGING_START), 'DMA_LOGGING_START');
    expectErrno('ENOTTY', feature(X.PROBE | X.GET | X.DMA_LOGGING_REPORT), 'DMA_LOGGING_REPORT');
    expectErrno('ENOTTY', feature(X.PROBE | X.GET | X.MIGRATION), 'MIGRATION');
    // Declared in the 6.12 header but implemented only by vfio-cdx.
    expectErrno('ENOTTY', feature(X.PROBE | X.SET | X.BUS_MASTER), 'BUS_MASTER');
    expectErrno('EINVAL', feature(X.GET | X.SET | X.LOW_POWER_ENTRY), 'GET|SET without PROBE');
    expectErrno('EINVAL', feature(X.PROBE | X.SET | X.LOW_POWER_ENTRY | (1 << 19)), 'unknown flag');
    expectErrno('EINVAL', feature(X.PROBE | X.SET | X.LOW_POWER_ENTRY, 4), 'argsz 4');
  });
});

describeKernel('uapi conformance: an mmapped BAR keeps a closed VFIO device open', function () {
  let res: Resources;
  const port = () => res.port;

  before(function () {
    res = new Resources(kernelPort());
  });
  after(function () {
    res?.release();
  });

  /** Opens the edu's cdev and binds it to a new iommufd; returns the device fd. */
  function bind(edu: EduDevice): number {
    const iommufd = res.open('/dev/iommu');
    const dev = res.open(`/dev/vfio/devices/${edu.cdev}`);
    const b = vfio_device_bind_iommufd.view().reset();
    b.iommufd = iommufd;
    port().ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, b.bytes);
    return dev;
  }

  it('close(2) of a bound cdev with BAR0 still mmapped leaves the device bound: the next bind -> EINVAL until the munmap', function () {
    const edu = eduPair().iommufd;
    const dev = bind(edu);
    const bar = vfio_region_info.view().reset();
    bar.index = VFIO_PCI_REGION.BAR0_REGION_INDEX;
    port().ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, bar.bytes);
    const va = port().mmap(bar.size, PROT.READ | PROT.WRITE, MAP.SHARED, dev, bar.offset);
    res.close(dev);
    const again = res.open(`/dev/vfio/devices/${edu.cdev}`);
    const b = vfio_device_bind_iommufd.view().reset();
    b.iommufd = res.open('/dev/iommu');
    expectErrno('EINVAL', () => port().ioctl(again, VFIO_DEVICE_BIND_IOMMUFD, b.bytes), 'still open');
    port().munmap(va, bar.size);
    port().ioctl(again, VFIO_DEVICE_BIND_IOMMUFD, b.bytes);
  });
});
