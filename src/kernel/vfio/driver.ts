/**
 * The VFIO driver of the simulated kernel: vfio-pci bound to every device of the topology,
 * their IOMMU groups, the legacy container, and what device discovery reads of them in
 * /sys and /dev, laid out as on a real host.
 */
import type { Driver, DriverFactory, SimKernel } from '../kernel.js';
import type { SimFile } from '../types.js';
import type { VfioContext } from './context.js';
import { VfioContainerFile } from './container.js';
import { VfioDeviceFile } from './device.js';
import { VfioGroup, VfioGroupFile } from './group.js';
import { VfioPciDevice, pageAlign } from './pci.js';

/** Character-device majors of /dev/vfio/<group> and /dev/vfio/devices/vfioN (dynamic on a real host). */
export const VFIO_GROUP_MAJOR = 245;
export const VFIO_CDEV_MAJOR = 244;

/** The VFIO model of one simulated kernel, for tests that look inside (edu faults, pins, resets). */
export class VfioDriver implements Driver, VfioContext {
  readonly devices: VfioPciDevice[] = [];
  readonly groups = new Map<number, VfioGroup>();

  constructor(readonly kernel: SimKernel) {
    const t = kernel.topology;
    let nextBar = 0xfd00_0000;
    for (const spec of t.devices) {
      const addrs = spec.bars.map((size) => {
        if (!size) return 0;
        const align = Number(pageAlign(BigInt(size)));
        const a = Math.ceil(nextBar / align) * align;
        nextBar = a + align;
        return a;
      });
      const slot = spec.bdf.slice(0, -2);
      const multifunction = t.devices.some((o) => o !== spec && o.bdf.startsWith(slot));
      const dev = new VfioPciDevice(kernel, spec, t.iommu, addrs, multifunction);
      let g = this.groups.get(spec.group);
      if (!g) {
        g = new VfioGroup(spec.group, this);
        this.groups.set(spec.group, g);
      }
      g.devices.push(dev);
      dev.vgroup = g;
      this.devices.push(dev);
    }
    this.fillVfs();
  }

  /** The device with PCI address `bdf`. */
  device(bdf: string): VfioPciDevice | undefined {
    return this.devices.find((d) => d.spec.bdf === bdf);
  }

  /** Opens /dev/vfio/vfio, /dev/vfio/<group> and /dev/vfio/devices/vfioN. */
  open(path: string): SimFile | null {
    if (path === '/dev/vfio/vfio') return new VfioContainerFile(this);
    const g = /^\/dev\/vfio\/(\d+)$/.exec(path);
    if (g) {
      const group = this.groups.get(Number(g[1]));
      return group ? VfioGroupFile.open(group) : null;
    }
    const c = /^\/dev\/vfio\/devices\/(vfio\d+)$/.exec(path);
    if (c) {
      const dev = this.devices.find((d) => d.spec.cdev === c[1]);
      return dev ? new VfioDeviceFile(dev, null) : null; // vfio_device_fops_cdev_open()
    }
    return null;
  }

  /** Runs the devices' DMA engines. */
  poll(): boolean {
    let did = false;
    for (const d of this.devices) if (d.edu?.poll()) did = true;
    return did;
  }

  /** True while an edu device is open (its registers are watched). */
  busy(): boolean {
    return this.devices.some((d) => d.edu?.attached);
  }

  /** Releases the host resources of the device models (BAR memfds, the kernel's BAR mappings). */
  dispose(): void {
    for (const d of this.devices) d.dispose();
  }

  private fillVfs(): void {
    const vfs = this.kernel.vfs;
    const iommu = this.kernel.topology.iommu;
    vfs.addFile('/dev/vfio/vfio');
    vfs.addDir('/sys/bus/pci/drivers/vfio-pci');
    for (const [id] of this.groups) {
      vfs.addFile(`/dev/vfio/${id}`);
      vfs.addFile(`/sys/class/vfio/${id}/dev`, `${VFIO_GROUP_MAJOR}:${id}\n`);
      const base = `/sys/kernel/iommu_groups/${id}`;
      vfs.addDir(`${base}/devices`);
      vfs.addFile(`${base}/type`, 'DMA\n'); // iommu.strict=1 on the test VM's command line
      vfs.addFile(
        `${base}/reserved_regions`,
        iommu.reserved.map(([a, b]) => `0x${hex(a, 16)} 0x${hex(b, 16)} msi\n`).join(''),
      );
    }
    for (const d of this.devices) {
      const { bdf, cdev } = d.spec;
      const root = `pci${bdf.slice(0, 7)}`; // pci<domain>:<bus>
      const dir = `/sys/devices/${root}/${bdf}`;
      vfs.addFile(`${dir}/vendor`, `0x${hex(d.spec.vendor, 4)}\n`);
      vfs.addFile(`${dir}/device`, `0x${hex(d.spec.device, 4)}\n`);
      vfs.addFile(`${dir}/class`, `0x${hex(d.pers.classCode, 6)}\n`);
      vfs.addLink(`${dir}/iommu_group`, `../../../kernel/iommu_groups/${d.group}`);
      vfs.addLink(`${dir}/driver`, '../../../bus/pci/drivers/vfio-pci');
      vfs.addLink(`/sys/bus/pci/devices/${bdf}`, `../../../devices/${root}/${bdf}`);
      vfs.addLink(`/sys/bus/pci/drivers/vfio-pci/${bdf}`, `../../../../devices/${root}/${bdf}`);
      vfs.addLink(`/sys/kernel/iommu_groups/${d.group}/devices/${bdf}`, `../../../../devices/${root}/${bdf}`);
      if (cdev) {
        const minor = Number(cdev.replace(/^vfio/, ''));
        vfs.addFile(`${dir}/vfio-dev/${cdev}/dev`, `${VFIO_CDEV_MAJOR}:${minor}\n`);
        vfs.addLink(`/sys/class/vfio-dev/${cdev}`, `../../devices/${root}/${bdf}/vfio-dev/${cdev}`);
        vfs.addFile(`/dev/vfio/devices/${cdev}`);
      }
    }
  }
}

function hex(v: number | bigint, width: number): string {
  return v.toString(16).padStart(width, '0');
}

const instances = new WeakMap<SimKernel, VfioDriver>();

/** The VFIO driver: vfio-pci devices, groups and the type1 container of kernel.topology. */
export const vfioDriver: DriverFactory = (kernel) => {
  const d = new VfioDriver(kernel);
  instances.set(kernel, d);
  return d;
};

/** The VFIO model of `kernel` (tests inspect devices, faults and resets through it). */
export function vfioOf(kernel: SimKernel): VfioDriver | undefined {
  return instances.get(kernel);
}
