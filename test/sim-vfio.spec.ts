// The VFIO model of the simulated kernel, ioctl by ioctl, against the answers of Linux 6.12
// (drivers/vfio/{container,group,device_cdev,vfio_main,vfio_iommu_type1}.c, pci/vfio_pci_core.c).
import { expect } from 'chai';
import { SimKernel } from '../src/kernel/kernel.js';
import { defaultTopology, testVmTopology, type Topology } from '../src/kernel/topology.js';
import type { IommuDevice, IommufdBinding, IoctlIn, SimFile } from '../src/kernel/types.js';
import { vfioDriver, vfioOf, type VfioDriver } from '../src/kernel/vfio/driver.js';
import { SyscallError } from '../src/port/errors.js';
import { LinuxPort } from '../src/port/linux.js';
import { MAP, MFD, O, PROT, RLIMIT } from '../src/uapi/libc.js';
import { SimPort } from '../src/kernel/sim-port.js';
import { errnoName } from '../src/uapi/errno.js';
import {
  VFIO_CHECK_EXTENSION,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_FLAGS,
  VFIO_DEVICE_FLAGS,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_RESET,
  VFIO_DMA_MAP_FLAG,
  VFIO_DMA_UNMAP_FLAG,
  VFIO_EXTENSION,
  VFIO_GET_API_VERSION,
  VFIO_GROUP_FLAGS,
  VFIO_GROUP_GET_DEVICE_FD,
  VFIO_GROUP_GET_STATUS,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_GROUP_UNSET_CONTAINER,
  VFIO_IOMMU_DIRTY_PAGES,
  VFIO_IOMMU_DIRTY_PAGES_FLAG,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_IRQ_INFO,
  VFIO_PCI_DEVID,
  VFIO_PCI_HOT_RESET_FLAG,
  VFIO_REGION_INFO_FLAG,
  VFIO_SET_IOMMU,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_device_detach_iommufd_pt,
  vfio_device_feature,
  vfio_device_info,
  vfio_group_status,
  vfio_irq_info,
  vfio_iommu_type1_dirty_bitmap,
  vfio_iommu_type1_dirty_bitmap_get,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
  vfio_pci_dependent_device,
  vfio_pci_hot_reset,
  vfio_pci_hot_reset_info,
  vfio_region_info,
  vfio_bitmap,
} from '../src/uapi/vfio.js';
import type { Ioctl } from '../src/uapi/layout.js';

const KiB = 1024n;
const MiB = 1024n * KiB;
const RW = VFIO_DMA_MAP_FLAG.READ | VFIO_DMA_MAP_FLAG.WRITE;
const EDU = '0000:00:03.0';
const CONFIG = 7n << 40n;
/** An ioctl number no VFIO file knows. */
const unknownIoctl = (nr: number): Ioctl => ({
  ...VFIO_GET_API_VERSION,
  name: `ioctl ${nr}`,
  request: 0x3b00 + nr,
});

/** A fresh simulated host with only the VFIO driver, called in this thread. */
class Host {
  readonly kernel: SimKernel;
  readonly port: SimPort;
  readonly vfio: VfioDriver;
  private fds: number[] = [];

  constructor(topology: Topology = defaultTopology()) {
    this.kernel = new SimKernel(topology, new LinuxPort(), [vfioDriver]);
    this.port = SimPort.direct(this.kernel);
    this.vfio = vfioOf(this.kernel)!;
  }

  open(path: string): number {
    const fd = this.port.open(path, O.RDWR);
    this.fds.push(fd);
    return fd;
  }

  close(fd: number): void {
    this.fds = this.fds.filter((f) => f !== fd);
    this.port.close(fd);
  }

  ioctl(fd: number, req: Ioctl, arg?: Uint8Array | number | string): number {
    const r = this.port.ioctl(fd, req, arg);
    if (req === VFIO_GROUP_GET_DEVICE_FD) this.fds.push(r);
    return r;
  }

  /** Anonymous-like RAM: a memfd mapped shared, as guest RAM is. */
  ram(size: bigint, prot: number = PROT.READ | PROT.WRITE): bigint {
    const fd = this.port.memfdCreate('ram', MFD.CLOEXEC);
    this.port.ftruncate(fd, size);
    const va = this.port.mmap(size, prot, MAP.SHARED, fd, 0n);
    this.port.close(fd);
    return va;
  }

  /** Container + group + type1 (v2 unless told) + the device fd of `bdf`. */
  legacy(bdf = EDU, group = 1, type: number = VFIO_EXTENSION.TYPE1v2_IOMMU) {
    const container = this.open('/dev/vfio/vfio');
    const g = this.open(`/dev/vfio/${group}`);
    this.ioctl(g, VFIO_GROUP_SET_CONTAINER, container);
    this.ioctl(container, VFIO_SET_IOMMU, type);
    const device = this.ioctl(g, VFIO_GROUP_GET_DEVICE_FD, bdf);
    return { container, group: g, device };
  }

  /** Closes every fd this host opened and releases the device models. */
  dispose(): void {
    for (const fd of this.fds.reverse()) {
      try {
        this.port.close(fd);
      } catch {
        // already closed by the test
      }
    }
    this.fds = [];
    this.vfio.dispose();
  }
}

function errno(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof SyscallError) return errnoName(e.errno);
    throw e;
  }
  return 'OK';
}

function map(h: Host, c: number, iova: bigint, size: bigint, vaddr: bigint, flags: number = RW): string {
  const m = vfio_iommu_type1_dma_map.view().reset();
  m.flags = flags;
  m.iova = iova;
  m.size = size;
  m.vaddr = vaddr;
  return errno(() => h.ioctl(c, VFIO_IOMMU_MAP_DMA, m.bytes));
}

function unmap(h: Host, c: number, iova: bigint, size: bigint, flags = 0): { errno: string; size: bigint } {
  const u = vfio_iommu_type1_dma_unmap.view().reset();
  u.flags = flags;
  u.iova = iova;
  u.size = size;
  const e = errno(() => h.ioctl(c, VFIO_IOMMU_UNMAP_DMA, u.bytes));
  return { errno: e, size: u.size };
}

/** GET_INFO with the argsz grow protocol; returns the header and the parsed capability chain. */
function iommuInfo(h: Host, c: number) {
  const head = vfio_iommu_type1_info.view().reset();
  h.ioctl(c, VFIO_IOMMU_GET_INFO, head.bytes);
  const buf = new Uint8Array(head.argsz);
  const info = vfio_iommu_type1_info.view(buf);
  info.argsz = head.argsz;
  h.ioctl(c, VFIO_IOMMU_GET_INFO, buf);
  const d = new DataView(buf.buffer);
  const caps: Record<number, DataView> = {};
  for (let off = info.cap_offset; off; off = d.getUint32(off + 4, true))
    caps[d.getUint16(off, true)] = new DataView(buf.buffer, off);
  return { first: head, info, caps };
}

function cfgRead16(h: Host, dev: number, off: number): number {
  const b = new Uint8Array(2);
  h.port.pread(dev, b, CONFIG + BigInt(off));
  return new DataView(b.buffer).getUint16(0, true);
}

function cfgWrite16(h: Host, dev: number, off: number, v: number): void {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, v, true);
  h.port.pwrite(dev, b, CONFIG + BigInt(off));
}

function regionInfo(h: Host, dev: number, index: number, argsz = vfio_region_info.size) {
  const buf = new Uint8Array(Math.max(argsz, vfio_region_info.size));
  const r = vfio_region_info.view(buf);
  r.argsz = argsz;
  r.index = index;
  const e = errno(() => h.ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, buf));
  return { errno: e, r, buf };
}

function irqInfo(h: Host, dev: number, index: number) {
  const r = vfio_irq_info.view().reset();
  r.index = index;
  const e = errno(() => h.ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, r.bytes));
  return { errno: e, flags: r.flags, count: r.count };
}

/** An iommufd stand-in: records what the VFIO cdev asks of it. */
class FakeIommufd implements SimFile, IommufdBinding {
  readonly kind = 'iommufd' as const;
  readonly calls: string[] = [];
  private next: number;
  bound = new Map<number, IommuDevice>();

  constructor(first = 1) {
    this.next = first;
  }
  ioctl(_request: number, _arg: IoctlIn): number {
    throw new Error('not used');
  }
  release(): void {}
  bindDevice(dev: IommuDevice): number {
    const id = this.next++;
    this.bound.set(id, dev);
    this.calls.push(`bind ${dev.spec.bdf} -> ${id}`);
    return id;
  }
  unbindDevice(devId: number): void {
    this.calls.push(`unbind ${devId}`);
    this.bound.delete(devId);
  }
  attachDevice(devId: number, ptId: number): number {
    this.calls.push(`attach ${devId} ${ptId}`);
    return ptId + 100;
  }
  detachDevice(devId: number): void {
    this.calls.push(`detach ${devId}`);
  }
}

function bind(h: Host, dev: number, iommufd: number, argsz = vfio_device_bind_iommufd.size, flags = 0) {
  const b = vfio_device_bind_iommufd.view().reset();
  b.argsz = argsz;
  b.flags = flags;
  b.iommufd = iommufd;
  const e = errno(() => h.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, b.bytes));
  return { errno: e, devid: b.out_devid };
}

function hotResetInfo(h: Host, dev: number, n: number) {
  const size = vfio_pci_hot_reset_info.size + n * vfio_pci_dependent_device.size;
  const buf = new Uint8Array(size);
  const hdr = vfio_pci_hot_reset_info.view(buf);
  hdr.argsz = size;
  const e = errno(() => h.ioctl(dev, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf));
  const devs = [];
  for (let i = 0; i < Math.min(n, hdr.count); i++)
    devs.push(
      vfio_pci_dependent_device.view(buf, vfio_pci_hot_reset_info.size + i * 8).toObject() as {
        group_id: number;
        devid: number;
        segment: number;
        bus: number;
        devfn: number;
      },
    );
  return { errno: e, flags: hdr.flags, count: hdr.count, devs };
}

function hotReset(h: Host, dev: number, fds: number[], count = fds.length, flags = 0) {
  const buf = new Uint8Array(vfio_pci_hot_reset.size + 4 * fds.length);
  const hdr = vfio_pci_hot_reset.view(buf);
  hdr.argsz = buf.byteLength;
  hdr.count = count;
  hdr.flags = flags;
  fds.forEach((fd, i) => new DataView(buf.buffer).setInt32(12 + 4 * i, fd, true));
  return errno(() => h.ioctl(dev, VFIO_DEVICE_PCI_HOT_RESET, buf));
}

function feature(h: Host, dev: number, flags: number, data = new Uint8Array(0)) {
  const buf = new Uint8Array(vfio_device_feature.size + data.byteLength);
  const f = vfio_device_feature.view(buf);
  f.argsz = buf.byteLength;
  f.flags = flags;
  buf.set(data, vfio_device_feature.size);
  return { errno: errno(() => h.ioctl(dev, VFIO_DEVICE_FEATURE, buf)), buf };
}

describe('sim VFIO: device discovery in /sys and /dev', function () {
  let h: Host;
  before(function () {
    h = new Host();
  });
  after(function () {
    h.dispose();
  });

  it('has the container, one node per group, and cdevs only for devices that have one', function () {
    const p = h.port;
    expect(p.readdir('/dev/vfio')).to.deep.equal(['1', '2', '3', '4', '5', 'devices', 'vfio']);
    expect(p.readdir('/dev/vfio/devices')).to.deep.equal(['vfio0', 'vfio1', 'vfio2', 'vfio3', 'vfio4']);
    expect(p.readdir('/sys/kernel/iommu_groups')).to.deep.equal(['1', '2', '3', '4', '5']);
    expect(p.readdir('/sys/kernel/iommu_groups/3/devices')).to.deep.equal(['0000:00:05.0', '0000:00:05.1']);
    expect(p.readFile('/sys/kernel/iommu_groups/1/reserved_regions')).to.equal(
      '0x00000000fee00000 0x00000000feefffff msi\n',
    );
  });

  it('lays out a PCI device as sysfs does: attributes, iommu_group, driver and vfio-dev', function () {
    const p = h.port;
    const dev = `/sys/bus/pci/devices/${EDU}`;
    expect(p.readlink(dev)).to.equal(`../../../devices/pci0000:00/${EDU}`);
    expect(p.readFile(`${dev}/vendor`)).to.equal('0x1234\n');
    expect(p.readFile(`${dev}/device`)).to.equal('0x11e8\n');
    expect(p.readFile(`${dev}/class`)).to.equal('0x00ff00\n');
    expect(p.readFile('/sys/bus/pci/devices/0000:00:05.0/class')).to.equal('0x020000\n');
    expect(p.readlink(`${dev}/iommu_group`)).to.equal('../../../kernel/iommu_groups/1');
    expect(p.readdir(`${dev}/iommu_group/devices`)).to.deep.equal([EDU]);
    expect(p.readlink(`${dev}/driver`)).to.equal('../../../bus/pci/drivers/vfio-pci');
    expect(p.readdir(`${dev}/driver`)).to.include(EDU);
    expect(p.readdir(`${dev}/vfio-dev`)).to.deep.equal(['vfio0']);
    expect(p.readFile(`${dev}/vfio-dev/vfio0/dev`)).to.match(/^\d+:0\n$/);
    expect(p.readFile('/sys/class/vfio-dev/vfio4/dev')).to.match(/^\d+:4\n$/);
    expect(p.exists('/sys/bus/pci/devices/0000:00:06.0/vfio-dev')).to.equal(false);
    expect(p.readdir('/sys/bus/pci/drivers/vfio-pci')).to.deep.equal([
      '0000:00:03.0',
      '0000:00:04.0',
      '0000:00:05.0',
      '0000:00:05.1',
      '0000:00:06.0',
      '0000:00:07.0',
    ]);
    expect(p.readFile('/sys/bus/pci/drivers/vfio-pci/0000:00:07.0/vendor')).to.equal('0x8086\n');
    expect(p.readlink('/sys/kernel/iommu_groups/4/devices/0000:00:06.0')).to.equal(
      '../../../../devices/pci0000:00/0000:00:06.0',
    );
  });

  it('opens only the nodes that exist', function () {
    expect(errno(() => h.port.open('/dev/vfio/9', O.RDWR))).to.equal('ENOENT');
    expect(errno(() => h.port.open('/dev/vfio/devices/vfio9', O.RDWR))).to.equal('ENOENT');
  });
});

describe('sim VFIO: legacy container and type1', function () {
  let h: Host;
  beforeEach(function () {
    h = new Host();
  });
  afterEach(function () {
    h.dispose();
  });

  it('answers the API version and the extensions type1 has before any group', function () {
    const c = h.open('/dev/vfio/vfio');
    expect(h.ioctl(c, VFIO_GET_API_VERSION)).to.equal(0);
    const ext = (e: number) => h.ioctl(c, VFIO_CHECK_EXTENSION, e);
    expect(ext(VFIO_EXTENSION.TYPE1_IOMMU)).to.equal(1);
    expect(ext(VFIO_EXTENSION.TYPE1v2_IOMMU)).to.equal(1);
    expect(ext(VFIO_EXTENSION.TYPE1_NESTING_IOMMU)).to.equal(1);
    expect(ext(VFIO_EXTENSION.UNMAP_ALL)).to.equal(1);
    expect(ext(VFIO_EXTENSION.UPDATE_VADDR)).to.equal(0); // needs a driver instance
    expect(ext(VFIO_EXTENSION.DMA_CC_IOMMU)).to.equal(0);
    expect(ext(VFIO_EXTENSION.SPAPR_TCE_IOMMU)).to.equal(0);
    expect(ext(VFIO_EXTENSION.NOIOMMU_IOMMU)).to.equal(0);
  });

  it('B5 #20: SET_IOMMU, MAP_DMA and other type1 ioctls fail EINVAL before a group and an IOMMU', function () {
    const c = h.open('/dev/vfio/vfio');
    expect(errno(() => h.ioctl(c, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU))).to.equal('EINVAL');
    expect(map(h, c, 0n, 4096n, h.ram(4096n))).to.equal('EINVAL');
    const g = h.open('/dev/vfio/1');
    h.ioctl(g, VFIO_GROUP_SET_CONTAINER, c);
    expect(map(h, c, 0n, 4096n, h.ram(4096n))).to.equal('EINVAL');
    expect(errno(() => h.ioctl(c, VFIO_IOMMU_GET_INFO, vfio_iommu_type1_info.view().reset().bytes))).to.equal(
      'EINVAL',
    );
  });

  it('SET_IOMMU: ENODEV for a type no driver has, EINVAL for what type1 cannot open, then only once', function () {
    const c = h.open('/dev/vfio/vfio');
    const g = h.open('/dev/vfio/1');
    h.ioctl(g, VFIO_GROUP_SET_CONTAINER, c);
    expect(errno(() => h.ioctl(c, VFIO_SET_IOMMU, VFIO_EXTENSION.SPAPR_TCE_IOMMU))).to.equal('ENODEV');
    expect(errno(() => h.ioctl(c, VFIO_SET_IOMMU, VFIO_EXTENSION.NOIOMMU_IOMMU))).to.equal('ENODEV');
    expect(errno(() => h.ioctl(c, VFIO_SET_IOMMU, VFIO_EXTENSION.UNMAP_ALL))).to.equal('EINVAL');
    expect(errno(() => h.ioctl(c, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1_NESTING_IOMMU))).to.equal('EINVAL');
    expect(h.ioctl(c, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU)).to.equal(0);
    expect(errno(() => h.ioctl(c, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU))).to.equal('EINVAL');
    expect(h.ioctl(c, VFIO_CHECK_EXTENSION, VFIO_EXTENSION.UPDATE_VADDR)).to.equal(1);
    expect(h.ioctl(c, VFIO_CHECK_EXTENSION, VFIO_EXTENSION.DMA_CC_IOMMU)).to.equal(0); // VT-d without SC
    expect(errno(() => h.ioctl(c, unknownIoctl(200)))).to.equal('ENOTTY'); // unknown: type1 answers
  });

  it('GET_INFO: argsz grows to the capability chain, then the chain is there', function () {
    const { container: c } = h.legacy();
    expect(
      errno(() => {
        const v = vfio_iommu_type1_info.view().reset();
        v.argsz = 15;
        h.ioctl(c, VFIO_IOMMU_GET_INFO, v.bytes);
      }),
    ).to.equal('EINVAL');
    const { first, info, caps } = iommuInfo(h, c);
    expect(first.flags).to.equal(VFIO_IOMMU_INFO.PGSIZES | VFIO_IOMMU_INFO.CAPS);
    expect(first.cap_offset).to.equal(0);
    expect(first.argsz).to.equal(24 + 32 + 16 + 16 + 2 * 16);
    expect(first.iova_pgsizes).to.equal(0x40201000n);
    expect(info.cap_offset).to.equal(24);
    const mig = caps[2]!;
    expect(mig.getUint32(4, true)).to.equal(56); // next
    expect(mig.getBigUint64(16, true)).to.equal(4096n);
    expect(mig.getBigUint64(24, true)).to.equal(256n * MiB);
    expect(caps[3]!.getUint32(8, true)).to.equal(65535);
    const ranges = caps[1]!;
    expect(ranges.getUint32(8, true)).to.equal(2);
    expect(ranges.getBigUint64(16, true)).to.equal(0n);
    expect(ranges.getBigUint64(24, true)).to.equal(0xfedf_ffffn);
    expect(ranges.getBigUint64(32, true)).to.equal(0xfef0_0000n);
    expect(ranges.getBigUint64(40, true)).to.equal((1n << 39n) - 1n);
    // argsz 16 copies back only 16 bytes: argsz (grown), flags, iova_pgsizes.
    const short = new Uint8Array(24).fill(0xaa);
    const v = vfio_iommu_type1_info.view(short);
    v.argsz = 16;
    h.ioctl(c, VFIO_IOMMU_GET_INFO, short);
    expect(v.argsz).to.equal(first.argsz);
    expect(v.cap_offset).to.equal(0xaaaaaaaa);
  });

  it('B5 #1, #2, #3, #14: alignment, length 0, wrap and flags are EINVAL', function () {
    const { container: c } = h.legacy();
    const va = h.ram(64n * KiB);
    expect(map(h, c, 0x1000n, 0x800n, va)).to.equal('EINVAL');
    expect(map(h, c, 0x1800n, 0x1000n, va)).to.equal('EINVAL');
    expect(map(h, c, 0x1000n, 0x1000n, va + 0x10n)).to.equal('EINVAL');
    expect(map(h, c, 0x1000n, 0n, va)).to.equal('EINVAL');
    expect(map(h, c, 0xffff_ffff_ffff_f000n, 0x2000n, va)).to.equal('EINVAL');
    expect(map(h, c, 0x1000n, 0x1000n, va, 0)).to.equal('EINVAL');
    expect(map(h, c, 0x1000n, 0x1000n, va, RW | 0x8)).to.equal('EINVAL');
    expect(map(h, c, 0x1000n, 0x1000n, va, RW | VFIO_DMA_MAP_FLAG.VADDR)).to.equal('EINVAL');
    const m = vfio_iommu_type1_dma_map.view().reset();
    m.argsz = 31;
    m.flags = RW;
    m.size = 4096n;
    m.vaddr = va;
    expect(errno(() => h.ioctl(c, VFIO_IOMMU_MAP_DMA, m.bytes))).to.equal('EINVAL');
  });

  it('refuses IOVAs outside the valid list (MSI window, past the aperture) with EINVAL', function () {
    const { container: c } = h.legacy();
    const va = h.ram(8192n);
    expect(map(h, c, 0xfee0_0000n, 4096n, va)).to.equal('EINVAL');
    expect(map(h, c, 0xfedf_f000n, 8192n, va)).to.equal('EINVAL');
    expect(map(h, c, 1n << 39n, 4096n, va)).to.equal('EINVAL');
    expect(map(h, c, 0xfedf_f000n, 4096n, va)).to.equal('OK');
  });

  it('B5 #4: any overlap is EEXIST, the same map twice too', function () {
    const { container: c } = h.legacy();
    const va = h.ram(64n * KiB);
    expect(map(h, c, 0x10000n, 0x4000n, va)).to.equal('OK');
    expect(map(h, c, 0x10000n, 0x4000n, va)).to.equal('EEXIST');
    expect(map(h, c, 0xf000n, 0x2000n, va)).to.equal('EEXIST');
    expect(map(h, c, 0x13000n, 0x2000n, va)).to.equal('EEXIST');
    expect(map(h, c, 0x11000n, 0x1000n, va)).to.equal('EEXIST');
    expect(map(h, c, 0x8000n, 0x10000n, va)).to.equal('EEXIST');
    expect(map(h, c, 0x14000n, 0x1000n, va)).to.equal('OK');
    expect(map(h, c, 0xf000n, 0x1000n, va)).to.equal('OK');
  });

  it('B5 #5, #6, #7: unmap of nothing is size 0, bisecting is EINVAL, a superset returns the sum', function () {
    const { container: c } = h.legacy();
    const va = h.ram(64n * KiB);
    expect(unmap(h, c, 0x100000n, 0x1000n)).to.deep.equal({ errno: 'OK', size: 0n });
    for (let i = 0n; i < 4n; i++)
      expect(map(h, c, 0x10000n + i * 0x2000n, 0x2000n, va + i * 0x2000n)).to.equal('OK');
    expect(unmap(h, c, 0x11000n, 0x1000n).errno).to.equal('EINVAL'); // inside
    expect(unmap(h, c, 0x10000n, 0x3000n).errno).to.equal('EINVAL'); // cuts the second
    expect(unmap(h, c, 0xf000n, 0x2000n).errno).to.equal('EINVAL'); // cuts the first from below
    expect(unmap(h, c, 0x10001n, 0x1000n).errno).to.equal('EINVAL'); // unaligned iova
    expect(unmap(h, c, 0x10000n, 0n).errno).to.equal('EINVAL');
    expect(unmap(h, c, 0x10000n, 0xffff_ffff_ffff_f000n).errno).to.equal('EINVAL'); // wraps
    expect(unmap(h, c, 0x8000n, 0xc000n)).to.deep.equal({ errno: 'OK', size: 0x4000n });
    expect(unmap(h, c, 0x0n, 0x100000n)).to.deep.equal({ errno: 'OK', size: 0x4000n });
    expect(h.kernel.mem.pinCount).to.equal(0);
    expect(h.kernel.mem.locked).to.equal(0n);
  });

  it('UNMAP_ALL: iova and size must be 0; it returns every byte', function () {
    const { container: c } = h.legacy();
    const va = h.ram(64n * KiB);
    map(h, c, 0x10000n, 0x4000n, va);
    map(h, c, 0x200000n, 0x8000n, va + 0x4000n);
    expect(unmap(h, c, 0x10000n, 0n, VFIO_DMA_UNMAP_FLAG.ALL).errno).to.equal('EINVAL');
    expect(unmap(h, c, 0n, 0x1000n, VFIO_DMA_UNMAP_FLAG.ALL).errno).to.equal('EINVAL');
    expect(unmap(h, c, 0n, 0n, VFIO_DMA_UNMAP_FLAG.ALL)).to.deep.equal({ errno: 'OK', size: 0xc000n });
    expect(unmap(h, c, 0n, 0n, 0x80).errno).to.equal('EINVAL');
  });

  it('type1 v1: an unmap starting inside a mapping succeeds with size 0', function () {
    const { container: c } = h.legacy(EDU, 1, VFIO_EXTENSION.TYPE1_IOMMU);
    const va = h.ram(16n * KiB);
    map(h, c, 0x10000n, 0x4000n, va);
    expect(unmap(h, c, 0x11000n, 0x1000n)).to.deep.equal({ errno: 'OK', size: 0n });
    expect(unmap(h, c, 0x10000n, 0x1000n)).to.deep.equal({ errno: 'OK', size: 0x4000n });
    const d = vfio_iommu_type1_dirty_bitmap.view().reset();
    d.flags = VFIO_IOMMU_DIRTY_PAGES_FLAG.START;
    expect(errno(() => h.ioctl(c, VFIO_IOMMU_DIRTY_PAGES, d.bytes))).to.equal('EACCES');
  });

  it('B5 #9: ENOSPC after dma_entry_limit mappings; DMA_AVAIL counts down', function () {
    const t = defaultTopology();
    t.dma_entry_limit = 3;
    h.dispose();
    h = new Host(t);
    const { container: c } = h.legacy();
    const va = h.ram(64n * KiB);
    for (let i = 0n; i < 3n; i++) expect(map(h, c, i * 0x1000n, 0x1000n, va)).to.equal('OK');
    expect(iommuInfo(h, c).caps[3]!.getUint32(8, true)).to.equal(0);
    expect(map(h, c, 0x10000n, 0x1000n, va)).to.equal('ENOSPC');
    expect(map(h, c, 0x1000n, 0x1000n, va)).to.equal('EEXIST'); // overlap is checked first
    unmap(h, c, 0n, 0x1000n);
    expect(map(h, c, 0x10000n, 0x1000n, va)).to.equal('OK');
  });

  it('B5 #10: ENOMEM past RLIMIT_MEMLOCK, with nothing left mapped or charged', function () {
    const { container: c } = h.legacy();
    const va = h.ram(64n * KiB);
    h.port.setrlimit(RLIMIT.MEMLOCK, { cur: 16n * KiB, max: 64n << 30n });
    expect(map(h, c, 0x10000n, 0x4000n, va)).to.equal('OK');
    expect(h.kernel.mem.locked).to.equal(16n * KiB);
    expect(map(h, c, 0x20000n, 0x1000n, va)).to.equal('ENOMEM');
    expect(unmap(h, c, 0x20000n, 0x1000n).size).to.equal(0n);
    expect(h.kernel.mem.locked).to.equal(16n * KiB);
    expect(iommuInfo(h, c).caps[3]!.getUint32(8, true)).to.equal(65534);
    unmap(h, c, 0x10000n, 0x4000n);
    expect(h.kernel.mem.locked).to.equal(0n);
  });

  it('pins like get_user_pages: EFAULT for unmapped or read-only memory mapped for device writes', function () {
    const { container: c } = h.legacy();
    const ro = h.ram(8192n, PROT.READ);
    expect(map(h, c, 0x10000n, 0x2000n, 0x7000_0000_0000n)).to.equal('EFAULT');
    expect(map(h, c, 0x10000n, 0x2000n, ro)).to.equal('EFAULT');
    expect(map(h, c, 0x10000n, 0x2000n, ro, VFIO_DMA_MAP_FLAG.READ)).to.equal('OK');
    const va = h.ram(8192n);
    h.port.munmap(va + 4096n, 4096n);
    h.port.setrlimit(RLIMIT.MEMLOCK, { cur: 0n, max: 64n << 30n });
    // The first page already passes the limit: ENOMEM wins over the hole behind it.
    expect(map(h, c, 0x20000n, 0x2000n, va)).to.equal('ENOMEM');
    expect(h.kernel.mem.pinCount).to.equal(1);
  });

  it('B5 #12: a BAR mapping (VM_PFNMAP) can be mapped by type1 and is not charged to locked_vm', function () {
    const { container: c, device } = h.legacy();
    const bar = h.port.mmap(MiB, PROT.READ | PROT.WRITE, MAP.SHARED, device, 0n);
    expect(map(h, c, 0x8000_0000n, MiB, bar)).to.equal('OK');
    expect(h.kernel.mem.locked).to.equal(0n);
    expect(h.kernel.mem.pinCount).to.equal(0);
    expect(unmap(h, c, 0x8000_0000n, MiB).size).to.equal(MiB);
    h.port.munmap(bar, MiB);
  });

  it('UNMAP with VADDR invalidates, MAP with VADDR revalidates the exact mapping', function () {
    const { container: c } = h.legacy();
    const va = h.ram(16n * KiB);
    map(h, c, 0x10000n, 0x4000n, va);
    expect(map(h, c, 0x10000n, 0x4000n, va + 0x4000n, VFIO_DMA_MAP_FLAG.VADDR)).to.equal('EINVAL');
    expect(map(h, c, 0x90000n, 0x4000n, va, VFIO_DMA_MAP_FLAG.VADDR)).to.equal('ENOENT');
    expect(unmap(h, c, 0x10000n, 0x4000n, VFIO_DMA_UNMAP_FLAG.VADDR)).to.deep.equal({
      errno: 'OK',
      size: 0x4000n,
    });
    expect(unmap(h, c, 0x10000n, 0x4000n, VFIO_DMA_UNMAP_FLAG.VADDR).errno).to.equal('EINVAL');
    // A new group cannot attach while a vaddr is invalid (attach could need to pin).
    const g2 = h.open('/dev/vfio/2');
    expect(errno(() => h.ioctl(g2, VFIO_GROUP_SET_CONTAINER, c))).to.equal('EBUSY');
    expect(map(h, c, 0x10000n, 0x2000n, va, VFIO_DMA_MAP_FLAG.VADDR)).to.equal('EINVAL');
    expect(map(h, c, 0x10000n, 0x4000n, va, VFIO_DMA_MAP_FLAG.VADDR)).to.equal('OK');
    h.ioctl(g2, VFIO_GROUP_SET_CONTAINER, c);
    expect(unmap(h, c, 0x10000n, 0x4000n).size).to.equal(0x4000n);
  });

  it('dirty pages: START, GET_BITMAP of whole mappings (all dirty), UNMAP with the bitmap, STOP', function () {
    const { container: c } = h.legacy();
    const va = h.ram(64n * KiB);
    map(h, c, 0x10000n, 0x4000n, va);
    map(h, c, 0x15000n, 0x2000n, va);
    const bm = h.ram(4096n);
    const dirty = (flags: number, iova = 0n, size = 0n, pgsize = 4096n) => {
      const buf = new Uint8Array(vfio_iommu_type1_dirty_bitmap.size + vfio_iommu_type1_dirty_bitmap_get.size);
      const d = vfio_iommu_type1_dirty_bitmap.view(buf);
      d.argsz = flags === VFIO_IOMMU_DIRTY_PAGES_FLAG.GET_BITMAP ? buf.byteLength : 8;
      d.flags = flags;
      const g = vfio_iommu_type1_dirty_bitmap_get.view(buf, 8);
      g.iova = iova;
      g.size = size;
      g.bitmap_pgsize = pgsize;
      g.bitmap_size = 8n;
      g.bitmap_data = bm;
      return errno(() => h.ioctl(c, VFIO_IOMMU_DIRTY_PAGES, buf));
    };
    const G = VFIO_IOMMU_DIRTY_PAGES_FLAG;
    expect(dirty(G.GET_BITMAP, 0x10000n, 0x8000n)).to.equal('EINVAL'); // not started
    expect(dirty(G.START | G.STOP)).to.equal('EINVAL');
    expect(dirty(G.START)).to.equal('OK');
    expect(dirty(G.GET_BITMAP, 0x11000n, 0x8000n)).to.equal('EINVAL'); // bisects
    expect(dirty(G.GET_BITMAP, 0x10000n, 0x8000n, 8192n)).to.equal('EINVAL'); // not the minimum
    expect(dirty(G.GET_BITMAP, 0x10000n, 0x8000n)).to.equal('OK');
    expect(h.port.memory(bm, 1)[0]).to.equal(0b0110_1111);
    // UNMAP with GET_DIRTY_BITMAP reports the mapping's pages too.
    h.port.memory(bm, 8).fill(0);
    const buf = new Uint8Array(vfio_iommu_type1_dma_unmap.size + vfio_bitmap.size);
    const u = vfio_iommu_type1_dma_unmap.view(buf);
    u.argsz = buf.byteLength;
    u.flags = VFIO_DMA_UNMAP_FLAG.GET_DIRTY_BITMAP;
    u.iova = 0x15000n;
    u.size = 0x2000n;
    const b = vfio_bitmap.view(buf, 24);
    b.pgsize = 4096n;
    b.size = 8n;
    b.data = bm;
    h.ioctl(c, VFIO_IOMMU_UNMAP_DMA, buf);
    expect(u.size).to.equal(0x2000n);
    expect(h.port.memory(bm, 1)[0]).to.equal(0b11);
    expect(dirty(G.STOP)).to.equal('OK');
    u.iova = 0x10000n;
    u.size = 0x4000n;
    expect(errno(() => h.ioctl(c, VFIO_IOMMU_UNMAP_DMA, buf))).to.equal('EINVAL'); // tracking off
  });

  it('B5 #21: the last group leaving drops every mapping and the container loses its IOMMU', function () {
    const { container: c, group: g, device } = h.legacy();
    const va = h.ram(64n * KiB);
    map(h, c, 0x10000n, 0x10000n, va);
    expect(h.kernel.mem.pinCount).to.equal(1);
    // The device holds the group: UNSET_CONTAINER is EBUSY while it is open.
    expect(errno(() => h.ioctl(g, VFIO_GROUP_UNSET_CONTAINER))).to.equal('EBUSY');
    h.close(device);
    h.ioctl(g, VFIO_GROUP_UNSET_CONTAINER);
    expect(h.kernel.mem.pinCount).to.equal(0);
    expect(h.kernel.mem.locked).to.equal(0n);
    expect(map(h, c, 0x10000n, 0x1000n, va)).to.equal('EINVAL');
    expect(h.ioctl(c, VFIO_CHECK_EXTENSION, VFIO_EXTENSION.UPDATE_VADDR)).to.equal(0);
    expect(errno(() => h.ioctl(g, VFIO_GROUP_UNSET_CONTAINER))).to.equal('EINVAL');
  });

  it('the container outlives its fd while a group holds it; closing the group then releases all', function () {
    const { container: c, group: g, device } = h.legacy();
    map(h, c, 0x10000n, 0x1000n, h.ram(4096n));
    h.close(c);
    expect(h.kernel.mem.pinCount).to.equal(1);
    // The device fd holds the group file: the group fd closes, the group stays open (EBUSY).
    h.close(g);
    expect(errno(() => h.port.open('/dev/vfio/1', O.RDWR))).to.equal('EBUSY');
    expect(h.kernel.mem.pinCount).to.equal(1);
    h.close(device);
    expect(h.kernel.mem.pinCount).to.equal(0);
    h.close(h.open('/dev/vfio/1'));
  });

  it('2^64 (virtio-iommu, IOVAs up to 2^64 - 1): a mapping ending there is invisible to the lookups, as in 6.12 (dma->iova + dma->size wraps to 0): its exact unmap returns 0, the same map again is no EEXIST, unmap-all finds none; closing the container frees them', function () {
    const v = new Host(testVmTopology('virtio'));
    try {
      const { container: c } = v.legacy('0000:01:00.0', 5);
      const va = v.ram(64n * KiB);
      const top = 0xffff_ffff_ffff_f000n;
      expect(map(v, c, top, 0x1000n, va)).to.equal('OK');
      expect(unmap(v, c, top, 0x1000n)).to.deep.equal({ errno: 'OK', size: 0n });
      expect(map(v, c, top, 0x1000n, va), 'the same map again').to.equal('OK');
      expect(map(v, c, top - 0x1000n, 0x2000n, va), 'over both').to.equal('OK');
      expect(unmap(v, c, 0n, 0n, VFIO_DMA_UNMAP_FLAG.ALL)).to.deep.equal({ errno: 'OK', size: 0n });
      expect(v.kernel.mem.pinCount).to.equal(3);
    } finally {
      v.dispose();
    }
    expect(v.kernel.mem.pinCount, 'after the container is closed').to.equal(0);
  });

  it('holds 65535 mappings and finds them fast', function () {
    this.timeout(60000);
    const { container: c } = h.legacy();
    const va = h.ram(4096n);
    const m = vfio_iommu_type1_dma_map.view().reset();
    m.flags = RW;
    m.size = 4096n;
    m.vaddr = va;
    const t0 = Date.now();
    for (let i = 0; i < 65535; i++) {
      // Out of order: every other mapping from the top down.
      m.iova = BigInt(i % 2 ? i : 131072 - i) * 0x2000n;
      h.port.ioctl(c, VFIO_IOMMU_MAP_DMA, m.bytes);
    }
    expect(map(h, c, 0x8000_0000n, 4096n, va)).to.equal('ENOSPC');
    expect(unmap(h, c, 0n, 0n, VFIO_DMA_UNMAP_FLAG.ALL).size).to.equal(65535n * 4096n);
    expect(Date.now() - t0).to.be.below(30000);
  });
});

describe('sim VFIO: groups', function () {
  let h: Host;
  beforeEach(function () {
    h = new Host();
  });
  afterEach(function () {
    h.dispose();
  });

  it('opens a group once at a time', function () {
    const g = h.open('/dev/vfio/1');
    expect(errno(() => h.port.open('/dev/vfio/1', O.RDWR))).to.equal('EBUSY');
    h.close(g);
    h.close(h.open('/dev/vfio/1'));
  });

  it('GET_STATUS: VIABLE, then CONTAINER_SET; argsz below 8 is EINVAL', function () {
    const g = h.open('/dev/vfio/3');
    const s = vfio_group_status.view().reset();
    h.ioctl(g, VFIO_GROUP_GET_STATUS, s.bytes);
    expect(s.flags).to.equal(VFIO_GROUP_FLAGS.VIABLE);
    h.ioctl(g, VFIO_GROUP_SET_CONTAINER, h.open('/dev/vfio/vfio'));
    h.ioctl(g, VFIO_GROUP_GET_STATUS, s.bytes);
    expect(s.flags).to.equal(VFIO_GROUP_FLAGS.VIABLE | VFIO_GROUP_FLAGS.CONTAINER_SET);
    s.argsz = 7;
    expect(errno(() => h.ioctl(g, VFIO_GROUP_GET_STATUS, s.bytes))).to.equal('EINVAL');
    expect(errno(() => h.ioctl(g, VFIO_CHECK_EXTENSION, 1))).to.equal('ENOTTY');
  });

  it('B5 #17: SET_CONTAINER: EBADF, EBADFD for a fd of another kind, EINVAL when already set', function () {
    const g = h.open('/dev/vfio/1');
    expect(errno(() => h.ioctl(g, VFIO_GROUP_SET_CONTAINER, 9999))).to.equal('EBADF');
    const devnull = h.open('/dev/null');
    expect(errno(() => h.ioctl(g, VFIO_GROUP_SET_CONTAINER, devnull))).to.equal('EBADFD');
    expect(errno(() => h.ioctl(g, VFIO_GROUP_SET_CONTAINER, g))).to.equal('EBADFD');
    const c = h.open('/dev/vfio/vfio');
    h.ioctl(g, VFIO_GROUP_SET_CONTAINER, c);
    expect(errno(() => h.ioctl(g, VFIO_GROUP_SET_CONTAINER, c))).to.equal('EINVAL');
    expect(errno(() => h.ioctl(g, VFIO_GROUP_SET_CONTAINER, 9999))).to.equal('EBADF');
    // Two groups share one container and its mappings.
    const g2 = h.open('/dev/vfio/2');
    h.ioctl(g2, VFIO_GROUP_SET_CONTAINER, c);
    h.ioctl(c, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU);
    map(h, c, 0x10000n, 0x1000n, h.ram(4096n));
    h.ioctl(g, VFIO_GROUP_UNSET_CONTAINER);
    expect(h.kernel.mem.pinCount).to.equal(1); // group 2 still holds the container
    h.ioctl(g2, VFIO_GROUP_UNSET_CONTAINER);
    expect(h.kernel.mem.pinCount).to.equal(0);
  });

  it('GET_DEVICE_FD: EINVAL without a container or IOMMU, ENODEV for a name not in the group', function () {
    const g = h.open('/dev/vfio/1');
    expect(errno(() => h.ioctl(g, VFIO_GROUP_GET_DEVICE_FD, EDU))).to.equal('EINVAL');
    const c = h.open('/dev/vfio/vfio');
    h.ioctl(g, VFIO_GROUP_SET_CONTAINER, c);
    expect(errno(() => h.ioctl(g, VFIO_GROUP_GET_DEVICE_FD, EDU))).to.equal('EINVAL');
    h.ioctl(c, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU);
    expect(errno(() => h.ioctl(g, VFIO_GROUP_GET_DEVICE_FD, '0000:00:04.0'))).to.equal('ENODEV');
    expect(errno(() => h.ioctl(g, VFIO_GROUP_GET_DEVICE_FD, '0000:00:03'))).to.equal('ENODEV');
    expect(errno(() => h.ioctl(g, VFIO_GROUP_GET_DEVICE_FD, ''))).to.equal('ENODEV');
    expect(errno(() => h.ioctl(g, VFIO_GROUP_GET_DEVICE_FD, `${EDU}x`))).to.equal('ENODEV');
    expect(errno(() => h.ioctl(g, VFIO_GROUP_GET_DEVICE_FD, `${EDU} junk`))).to.equal('EINVAL');
    const token = `${EDU} vf_token=2ab74924-c335-45f4-9b16-8569e5b08258`;
    expect(errno(() => h.ioctl(g, VFIO_GROUP_GET_DEVICE_FD, token))).to.equal('EINVAL');
    const d1 = h.ioctl(g, VFIO_GROUP_GET_DEVICE_FD, EDU);
    const d2 = h.ioctl(g, VFIO_GROUP_GET_DEVICE_FD, EDU); // a group may open a device twice
    expect(d1).to.not.equal(d2);
    expect(h.vfio.device(EDU)!.open_count).to.equal(2);
  });

  it('a bound cdev keeps its group closed, an open group keeps its cdevs from binding', function () {
    const fake = new FakeIommufd();
    const ictx = h.kernel.installFile(fake, 'fake-iommufd');
    const g = h.open('/dev/vfio/1');
    const cdev = h.open('/dev/vfio/devices/vfio0'); // opening the cdev is allowed
    expect(bind(h, cdev, ictx).errno).to.equal('EBUSY');
    h.close(g);
    expect(bind(h, cdev, ictx).errno).to.equal('OK');
    expect(errno(() => h.port.open('/dev/vfio/1', O.RDWR))).to.equal('EBUSY');
    h.close(cdev);
    expect(fake.calls).to.deep.equal(['bind 0000:00:03.0 -> 1', 'unbind 1']);
    h.close(h.open('/dev/vfio/1'));
    h.close(ictx);
  });
});

describe('sim VFIO: the device fd', function () {
  let h: Host;
  beforeEach(function () {
    h = new Host();
  });
  afterEach(function () {
    h.dispose();
  });

  it('GET_INFO: PCI, RESET only with a function reset, 9 regions, 5 IRQs; argsz 16 writes 16 bytes', function () {
    const { device } = h.legacy();
    const i = vfio_device_info.view().reset();
    h.ioctl(device, VFIO_DEVICE_GET_INFO, i.bytes);
    expect(i.toObject()).to.deep.equal({
      argsz: 24,
      flags: VFIO_DEVICE_FLAGS.PCI,
      num_regions: 9,
      num_irqs: 5,
      cap_offset: 0,
      pad: 0,
    });
    const short = new Uint8Array(24).fill(0xee);
    const s = vfio_device_info.view(short);
    s.argsz = 16;
    h.ioctl(device, VFIO_DEVICE_GET_INFO, short);
    expect(s.num_irqs).to.equal(5);
    expect(s.cap_offset).to.equal(0xeeeeeeee);
    s.argsz = 15;
    expect(errno(() => h.ioctl(device, VFIO_DEVICE_GET_INFO, short))).to.equal('EINVAL');
    const gen = h.legacy('0000:00:07.0', 5).device;
    h.ioctl(gen, VFIO_DEVICE_GET_INFO, i.bytes);
    expect(i.flags).to.equal(VFIO_DEVICE_FLAGS.PCI | VFIO_DEVICE_FLAGS.RESET);
  });

  it('GET_REGION_INFO: BARs at index << 40, config 256 bytes on conventional PCI, no ROM, VGA EINVAL', function () {
    const { device } = h.legacy();
    const RWM = VFIO_REGION_INFO_FLAG.READ | VFIO_REGION_INFO_FLAG.WRITE | VFIO_REGION_INFO_FLAG.MMAP;
    let r = regionInfo(h, device, 0).r;
    expect([r.flags, r.size, r.offset]).to.deep.equal([RWM, MiB, 0n]);
    r = regionInfo(h, device, 1).r;
    expect([r.flags, r.size, r.offset]).to.deep.equal([0, 0n, 1n << 40n]);
    r = regionInfo(h, device, 6).r;
    expect([r.flags, r.size, r.offset]).to.deep.equal([0, 0n, 6n << 40n]);
    r = regionInfo(h, device, 7).r;
    expect([r.flags, r.size, r.offset]).to.deep.equal([RWM & ~VFIO_REGION_INFO_FLAG.MMAP, 256n, 7n << 40n]);
    expect(regionInfo(h, device, 8).errno).to.equal('EINVAL');
    expect(regionInfo(h, device, 9).errno).to.equal('EINVAL');
    expect(regionInfo(h, device, 0, 31).errno).to.equal('EINVAL');
  });

  it('GET_REGION_INFO: the MSI-X BAR of a PCIe function has a capability, with the argsz protocol', function () {
    const { device } = h.legacy('0000:00:07.0', 5);
    expect(regionInfo(h, device, 7).r.size).to.equal(4096n);
    const small = regionInfo(h, device, 3);
    expect(small.r.flags & VFIO_REGION_INFO_FLAG.CAPS).to.not.equal(0);
    expect(small.r.argsz).to.equal(40);
    expect(small.r.cap_offset).to.equal(0);
    const big = regionInfo(h, device, 3, 40);
    expect(big.r.cap_offset).to.equal(32);
    expect(new DataView(big.buf.buffer).getUint16(32, true)).to.equal(3); // MSIX_MAPPABLE
    expect(big.r.size).to.equal(16n * KiB);
  });

  it('GET_IRQ_INFO: INTx, one MSI, MSI-X only on the NIC, ERR only on PCIe, REQ', function () {
    const { device } = h.legacy();
    const E = VFIO_IRQ_INFO.EVENTFD;
    expect(irqInfo(h, device, 0)).to.deep.equal({
      errno: 'OK',
      flags: E | VFIO_IRQ_INFO.MASKABLE | VFIO_IRQ_INFO.AUTOMASKED,
      count: 1,
    });
    expect(irqInfo(h, device, 1)).to.deep.equal({ errno: 'OK', flags: E | VFIO_IRQ_INFO.NORESIZE, count: 1 });
    expect(irqInfo(h, device, 2)).to.deep.equal({ errno: 'OK', flags: E | VFIO_IRQ_INFO.NORESIZE, count: 0 });
    expect(irqInfo(h, device, 3).errno).to.equal('EINVAL');
    expect(irqInfo(h, device, 4)).to.deep.equal({ errno: 'OK', flags: E | VFIO_IRQ_INFO.NORESIZE, count: 1 });
    expect(irqInfo(h, device, 5).errno).to.equal('EINVAL');
    const gen = h.legacy('0000:00:07.0', 5).device;
    expect(irqInfo(h, gen, 2)).to.deep.equal({ errno: 'OK', flags: E, count: 5 });
    expect(irqInfo(h, gen, 3)).to.deep.equal({ errno: 'OK', flags: E | VFIO_IRQ_INFO.NORESIZE, count: 1 });
  });

  it('RESET is EINVAL without a function reset', function () {
    const { device } = h.legacy();
    expect(errno(() => h.ioctl(device, VFIO_DEVICE_RESET))).to.equal('EINVAL');
    const gen = h.legacy('0000:00:07.0', 5).device;
    const before = h.vfio.device('0000:00:07.0')!.resets;
    h.ioctl(gen, VFIO_DEVICE_RESET);
    expect(h.vfio.device('0000:00:07.0')!.resets).to.equal(before + 1);
  });

  it('config space: ids, the command register (memory on, bus master off), BAR sizing, EFAULT past the end', function () {
    const { device, group } = h.legacy();
    expect(cfgRead16(h, device, 0)).to.equal(0x1234);
    expect(cfgRead16(h, device, 2)).to.equal(0x11e8);
    expect(cfgRead16(h, device, 4)).to.equal(0x0002);
    cfgWrite16(h, device, 4, 0x0006);
    expect(cfgRead16(h, device, 4)).to.equal(0x0006);
    expect(h.vfio.device(EDU)!.busMaster).to.equal(true);
    cfgWrite16(h, device, 0, 0xffff); // read-only
    expect(cfgRead16(h, device, 0)).to.equal(0x1234);
    const bar = new Uint8Array(4).fill(0xff);
    h.port.pwrite(device, bar, CONFIG + 0x10n);
    h.port.pread(device, bar, CONFIG + 0x10n);
    expect(new DataView(bar.buffer).getUint32(0, true)).to.equal(0xfff00000);
    expect(errno(() => h.port.pread(device, new Uint8Array(4), CONFIG + 254n))).to.equal('EFAULT');
    expect(errno(() => h.port.pread(device, new Uint8Array(4), 9n << 40n))).to.equal('EINVAL');
    expect(errno(() => h.port.pread(device, new Uint8Array(4), 6n << 40n))).to.equal('EINVAL');
    // The last close turns bus mastering off.
    h.close(device);
    const again = h.ioctl(group, VFIO_GROUP_GET_DEVICE_FD, EDU);
    expect(cfgRead16(h, again, 4)).to.equal(0x0002);
  });

  it('BAR0 through pread/pwrite reaches the edu registers; EINVAL past the BAR, EIO with memory decode off', function () {
    const { device } = h.legacy();
    const b = new Uint8Array(4);
    h.port.pread(device, b, 0n);
    expect(new DataView(b.buffer).getUint32(0, true)).to.equal(0x010000ed);
    new DataView(b.buffer).setUint32(0, 0x12345678, true);
    h.port.pwrite(device, b, 4n);
    h.port.pread(device, b, 4n);
    expect(new DataView(b.buffer).getUint32(0, true)).to.equal(~0x12345678 >>> 0);
    expect(h.port.pread(device, new Uint8Array(8), MiB - 4n)).to.equal(4);
    expect(errno(() => h.port.pread(device, b, MiB))).to.equal('EINVAL');
    expect(errno(() => h.port.pread(device, b, 1n << 40n))).to.equal('EINVAL');
    cfgWrite16(h, device, 4, 0);
    expect(errno(() => h.port.pread(device, b, 0n))).to.equal('EIO');
  });

  it('mmap: BARs only, within the BAR; the mapping is the BAR (VM_PFNMAP)', function () {
    const { device } = h.legacy();
    const va = h.port.mmap(MiB, PROT.READ | PROT.WRITE, MAP.SHARED, device, 0n);
    expect(new DataView(h.port.memory(va, 4).slice().buffer).getUint32(0, true)).to.equal(0x010000ed);
    expect(h.kernel.mem.isPfnmap(va, 4096n)).to.equal(true);
    h.port.munmap(va, MiB);
    expect(errno(() => h.port.mmap(2n * MiB, PROT.READ, MAP.SHARED, device, 0n))).to.equal('EINVAL');
    expect(errno(() => h.port.mmap(4096n, PROT.READ, MAP.SHARED, device, 1n << 40n))).to.equal('EINVAL');
    expect(errno(() => h.port.mmap(4096n, PROT.READ, MAP.SHARED, device, CONFIG))).to.equal('EINVAL');
    const g = h.open('/dev/vfio/2');
    expect(errno(() => h.port.mmap(4096n, PROT.READ, MAP.SHARED, g, 0n))).to.equal('ENODEV');
  });

  it('cdev-only ioctls are not device ioctls on a group fd: BIND EINVAL, ATTACH ENOTTY', function () {
    const { device } = h.legacy();
    expect(bind(h, device, 3).errno).to.equal('EINVAL');
    const a = vfio_device_attach_iommufd_pt.view().reset();
    expect(errno(() => h.ioctl(device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, a.bytes))).to.equal('ENOTTY');
    expect(errno(() => h.ioctl(device, unknownIoctl(250)))).to.equal('ENOTTY');
  });

  it('DEVICE_FEATURE: flag rules, ENOTTY for what the device lacks, PROBE and SET of low power', function () {
    const { device } = h.legacy();
    const Fl = VFIO_DEVICE_FEATURE_FLAGS;
    expect(feature(h, device, Fl.GET | Fl.MIGRATION).errno).to.equal('ENOTTY');
    expect(feature(h, device, Fl.SET | Fl.DMA_LOGGING_START).errno).to.equal('ENOTTY');
    expect(feature(h, device, Fl.GET | Fl.SET | Fl.LOW_POWER_ENTRY).errno).to.equal('EINVAL');
    expect(feature(h, device, 1 << 20).errno).to.equal('EINVAL');
    expect(feature(h, device, Fl.PROBE | Fl.SET | Fl.LOW_POWER_ENTRY).errno).to.equal('OK');
    expect(feature(h, device, Fl.PROBE | Fl.GET | Fl.LOW_POWER_ENTRY).errno).to.equal('EINVAL');
    expect(feature(h, device, Fl.LOW_POWER_ENTRY).errno).to.equal('EINVAL');
    expect(feature(h, device, Fl.SET | Fl.LOW_POWER_ENTRY).errno).to.equal('OK');
    expect(feature(h, device, Fl.SET | Fl.LOW_POWER_ENTRY).errno).to.equal('EINVAL');
    expect(feature(h, device, Fl.SET | Fl.LOW_POWER_EXIT).errno).to.equal('OK');
    expect(feature(h, device, Fl.SET | Fl.PCI_VF_TOKEN, new Uint8Array(16)).errno).to.equal('ENOTTY');
    expect(feature(h, device, Fl.SET | Fl.BUS_MASTER).errno).to.equal('ENOTTY');
  });

  it('DEVICE_FEATURE DMA logging on a device that has it: START, REPORT, STOP', function () {
    const { device } = h.legacy('0000:00:07.0', 5);
    const Fl = VFIO_DEVICE_FEATURE_FLAGS;
    const ranges = h.ram(4096n);
    const rv = new DataView(new ArrayBuffer(32));
    rv.setBigUint64(0, 0x10000n, true);
    rv.setBigUint64(8, 0x10000n, true);
    h.port.memory(ranges, 16).set(new Uint8Array(rv.buffer, 0, 16));
    const control = (n: number, page = 4096n) => {
      const c = new DataView(new ArrayBuffer(24));
      c.setBigUint64(0, page, true);
      c.setUint32(8, n, true);
      c.setBigUint64(16, ranges, true);
      return new Uint8Array(c.buffer);
    };
    expect(feature(h, device, Fl.PROBE | Fl.SET | Fl.DMA_LOGGING_START).errno).to.equal('OK');
    expect(feature(h, device, Fl.SET | Fl.DMA_LOGGING_START, control(0)).errno).to.equal('EINVAL');
    expect(feature(h, device, Fl.SET | Fl.DMA_LOGGING_START, control(257)).errno).to.equal('E2BIG');
    expect(feature(h, device, Fl.SET | Fl.DMA_LOGGING_START, control(1, 0x20000n)).errno).to.equal('EINVAL');
    expect(feature(h, device, Fl.SET | Fl.DMA_LOGGING_START, control(1)).errno).to.equal('OK');
    expect(feature(h, device, Fl.SET | Fl.DMA_LOGGING_START, control(1)).errno).to.equal('EINVAL');
    const bm = h.ram(4096n);
    const report = (page = 4096n) => {
      const d = new DataView(new ArrayBuffer(32));
      d.setBigUint64(0, 0x10000n, true);
      d.setBigUint64(8, 0x10000n, true);
      d.setBigUint64(16, page, true);
      d.setBigUint64(24, bm, true);
      return new Uint8Array(d.buffer);
    };
    expect(feature(h, device, Fl.GET | Fl.DMA_LOGGING_REPORT, report(2048n)).errno).to.equal('EINVAL');
    h.vfio.device('0000:00:07.0')!.logWrite(0x12000n, 8192);
    expect(feature(h, device, Fl.GET | Fl.DMA_LOGGING_REPORT, report()).errno).to.equal('OK');
    expect(h.port.memory(bm, 1)[0]).to.equal(0b1100);
    expect(feature(h, device, Fl.SET | Fl.DMA_LOGGING_STOP).errno).to.equal('OK');
    expect(feature(h, device, Fl.GET | Fl.DMA_LOGGING_REPORT, report()).errno).to.equal('EINVAL');
  });
});

describe('sim VFIO: PCI hot reset', function () {
  let h: Host;
  beforeEach(function () {
    h = new Host();
  });
  afterEach(function () {
    h.dispose();
  });

  it('GET_PCI_HOT_RESET_INFO: ENOSPC with the count, then the affected devices and their groups', function () {
    const { device } = h.legacy('0000:00:05.0', 3);
    const small = hotResetInfo(h, device, 1);
    expect(small).to.deep.include({ errno: 'ENOSPC', count: 2, flags: 0 });
    const info = hotResetInfo(h, device, 2);
    expect(info.errno).to.equal('OK');
    expect(info.devs.map((d) => [d.group_id, d.bus, d.devfn])).to.deep.equal([
      [3, 0, 0x28],
      [3, 0, 0x29],
    ]);
    const hdr = vfio_pci_hot_reset_info.view().reset();
    hdr.argsz = 11;
    expect(errno(() => h.ioctl(device, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, hdr.bytes))).to.equal('EINVAL');
  });

  it('PCI_HOT_RESET with group fds: every affected group must be given', function () {
    const { device, group } = h.legacy('0000:00:05.0', 3);
    const other = h.open('/dev/vfio/1');
    const dev = h.vfio.device('0000:00:05.1')!;
    const before = dev.resets;
    expect(hotReset(h, device, [])).to.equal('EINVAL'); // a zero-length array is for cdevs
    expect(hotReset(h, device, [group], 1, 1)).to.equal('EINVAL'); // flags
    expect(hotReset(h, device, [group, group, group])).to.equal('EINVAL'); // more than devices
    expect(hotReset(h, device, [9999])).to.equal('EBADF');
    expect(hotReset(h, device, [device])).to.equal('EINVAL');
    expect(hotReset(h, device, [other])).to.equal('EINVAL'); // group 3 not given
    expect(hotReset(h, device, [group])).to.equal('OK');
    expect(dev.resets).to.equal(before + 1);
  });

  it('through cdevs: DEV_ID flags, devids, OWNED/NOT_OWNED, and the empty fd array', function () {
    const a = new FakeIommufd(10);
    const b = new FakeIommufd(50);
    const fa = h.kernel.installFile(a, 'iommufd-a');
    const fb = h.kernel.installFile(b, 'iommufd-b');
    const c2 = h.open('/dev/vfio/devices/vfio2'); // 05.0
    const c3 = h.open('/dev/vfio/devices/vfio3'); // 05.1, same group
    expect(bind(h, c2, fa)).to.deep.equal({ errno: 'OK', devid: 10 });
    // Device 05.1 is not bound, but its group is owned by iommufd a: OWNED.
    let info = hotResetInfo(h, c2, 2);
    const F = VFIO_PCI_HOT_RESET_FLAG;
    expect(info.flags).to.equal(F.DEV_ID | F.DEV_ID_OWNED);
    expect(info.devs.map((d) => d.devid)).to.deep.equal([10, VFIO_PCI_DEVID.OWNED]);
    expect(hotReset(h, c2, [])).to.equal('OK');
    expect(hotReset(h, c2, [fa])).to.equal('EINVAL'); // fds are for group-opened devices
    // Another iommufd cannot take a device of a group iommufd a owns.
    expect(bind(h, c3, fb).errno).to.equal('EPERM');
    expect(bind(h, c3, fa)).to.deep.equal({ errno: 'OK', devid: 11 });
    info = hotResetInfo(h, c2, 2);
    expect(info.devs.map((d) => d.devid)).to.deep.equal([10, 11]);
    h.close(c3);
    h.close(c2);
    // Bound alone to b, the other function of the slot is NOT_OWNED.
    const c3b = h.open('/dev/vfio/devices/vfio3');
    expect(bind(h, c3b, fb).errno).to.equal('OK');
    const c2b = h.open('/dev/vfio/devices/vfio2');
    expect(bind(h, c2b, fa).errno).to.equal('EPERM');
    h.close(c2b);
    info = hotResetInfo(h, c3b, 2);
    expect(info.devs.map((d) => d.devid)).to.deep.equal([VFIO_PCI_DEVID.OWNED >>> 0, 50]);
    expect(info.flags).to.equal(F.DEV_ID | F.DEV_ID_OWNED);
    h.close(c3b);
    h.close(fa);
    h.close(fb);
  });
});

describe('sim VFIO: hot reset on the root bus', function () {
  let h: Host;
  beforeEach(function () {
    h = new Host();
  });
  afterEach(function () {
    h.dispose();
  });

  it('a device alone on bus 0 has no slot or bus reset: ENODEV after the argument checks (as edu in the VM)', function () {
    const { device, group } = h.legacy();
    expect(hotResetInfo(h, device, 4).errno).to.equal('ENODEV');
    const hdr = vfio_pci_hot_reset_info.view().reset();
    hdr.argsz = 8;
    expect(errno(() => h.ioctl(device, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, hdr.bytes))).to.equal('EINVAL');
    expect(hotReset(h, device, [])).to.equal('EINVAL');
    expect(hotReset(h, device, [group])).to.equal('ENODEV');
    const fake = new FakeIommufd();
    const ictx = h.kernel.installFile(fake, 'fake-iommufd');
    const cdev = h.open('/dev/vfio/devices/vfio1');
    expect(bind(h, cdev, ictx).errno).to.equal('OK');
    expect(hotReset(h, cdev, [group])).to.equal('EINVAL'); // a cdev passes an empty array
    expect(hotReset(h, cdev, [], 0, VFIO_PCI_HOT_RESET_FLAG.DEV_ID)).to.equal('EINVAL');
    expect(hotReset(h, cdev, [])).to.equal('ENODEV');
  });
});

describe('sim VFIO: the edu DMA engine (polled here by hand)', function () {
  let h: Host;
  beforeEach(function () {
    h = new Host();
  });
  afterEach(function () {
    h.dispose();
  });

  /** Legacy setup with 16 KiB of RAM at IOVA 0x100000 (`flags`), BAR0 mapped; DMA helper. */
  function rig(flags: number = RW) {
    const { container, device, group } = h.legacy();
    const ram = h.ram(16n * KiB);
    expect(map(h, container, 0x10_0000n, 16n * KiB, ram, flags)).to.equal('OK');
    const bar = h.port.mmap(MiB, PROT.READ | PROT.WRITE, MAP.SHARED, device, 0n);
    const r32 = h.port.memory(bar, 0x100);
    const reg = new DataView(r32.buffer, r32.byteOffset, 0x100);
    const edu = h.vfio.device(EDU)!.edu!;
    const dma = (toRam: boolean, src: bigint, dst: bigint, count: bigint) => {
      reg.setBigUint64(0x80, src, true);
      reg.setBigUint64(0x88, dst, true);
      reg.setBigUint64(0x90, count, true);
      reg.setUint32(0x98, 1 | (toRam ? 2 : 0) | 4, true);
      h.kernel.poll();
      expect(reg.getUint32(0x98, true) & 1, 'the run bit clears, blocked or not').to.equal(0);
    };
    return { container, device, group, ram, bar, reg, edu, dma, mem: h.port.memory(ram, Number(16n * KiB)) };
  }

  it('copies through the container mappings, raises the DMA irq status, masks addresses to 28 bits', function () {
    const { mem, dma, edu, reg, device } = rig();
    cfgWrite16(h, device, 4, 0x0006);
    mem.fill(0);
    mem.subarray(0, 100).fill(0x5a);
    dma(false, 0x10_0000n, 0x40000n, 100n);
    dma(true, 0x40000n, 0x10_0000n + 0x1000n + (1n << 28n), 100n); // bit 28 is dropped
    expect(mem.subarray(0x1000, 0x1064).every((b) => b === 0x5a)).to.equal(true);
    expect(mem[0x1064]).to.equal(0);
    expect(reg.getUint32(0x24, true) & 0x100).to.equal(0x100);
    expect(edu.transfers).to.equal(2);
    expect(edu.faults).to.deep.equal([]);
  });

  it('bus mastering off, an unmapped IOVA, a read-only mapping written, a range past the buffer: no copy, a fault', function () {
    const { mem, dma, edu, device } = rig(VFIO_DMA_MAP_FLAG.READ);
    mem.fill(0x11);
    dma(true, 0x40000n, 0x10_0000n, 16n); // bus mastering is off after open
    cfgWrite16(h, device, 4, 0x0006);
    dma(true, 0x40000n, 0x10_0000n, 16n); // the device may only read this mapping
    dma(false, 0x20_0000n, 0x40000n, 16n); // nothing mapped there
    dma(false, 0x10_0000n, 0x40000n, 4096n); // QEMU 7.2 refuses a transfer to the buffer's very end
    dma(false, 0x10_0000n, 0x3ff00n, 16n);
    expect(edu.faults.map((f) => f.kind)).to.deep.equal(['bus-master', 'iommu', 'iommu', 'range', 'range']);
    expect(mem.every((b) => b === 0x11)).to.equal(true);
    dma(false, 0x10_0000n, 0x40000n, 4095n); // reading a read-only mapping is fine
    expect(edu.transfers).to.equal(1);
  });

  it('the liveness register inverts what is written through the mapping; the engine runs only while the device is open', function () {
    const { reg, device, bar } = rig();
    reg.setUint32(4, 0x0f0f0f0f, true);
    h.kernel.poll();
    expect(reg.getUint32(4, true)).to.equal(0xf0f0f0f0);
    expect(reg.getUint32(0, true)).to.equal(0x010000ed);
    expect(h.vfio.busy()).to.equal(true);
    h.port.munmap(bar, MiB);
    h.close(device);
    expect(h.vfio.busy()).to.equal(false);
  });

  it('DMA stops when the group leaves the container: the translation goes with the mappings', function () {
    const t = rig();
    cfgWrite16(h, t.device, 4, 0x0006);
    const dev = h.vfio.device(EDU)!;
    expect(dev.translator).to.not.equal(null);
    h.port.munmap(t.bar, MiB);
    h.close(t.device);
    h.ioctl(t.group, VFIO_GROUP_UNSET_CONTAINER);
    expect(dev.translator).to.equal(null);
  });
});

describe('sim VFIO: the device cdev and iommufd binding', function () {
  let h: Host;
  beforeEach(function () {
    h = new Host();
  });
  afterEach(function () {
    h.dispose();
  });

  it('before BIND_IOMMUFD everything else on a cdev is EINVAL', function () {
    const cdev = h.open('/dev/vfio/devices/vfio0');
    expect(errno(() => h.ioctl(cdev, VFIO_DEVICE_GET_INFO, vfio_device_info.view().reset().bytes))).to.equal(
      'EINVAL',
    );
    expect(errno(() => h.ioctl(cdev, VFIO_DEVICE_RESET))).to.equal('EINVAL');
    const a = vfio_device_attach_iommufd_pt.view().reset();
    expect(errno(() => h.ioctl(cdev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, a.bytes))).to.equal('EINVAL');
    expect(errno(() => h.ioctl(cdev, unknownIoctl(250)))).to.equal('EINVAL');
    expect(errno(() => h.port.pread(cdev, new Uint8Array(4), CONFIG))).to.equal('EINVAL');
    expect(errno(() => h.port.mmap(4096n, PROT.READ, MAP.SHARED, cdev, 0n))).to.equal('EINVAL');
  });

  it('B5 #17: BIND_IOMMUFD checks argsz, flags and the fd; a second bind is EINVAL', function () {
    const fake = new FakeIommufd();
    const ictx = h.kernel.installFile(fake, 'fake-iommufd');
    const cdev = h.open('/dev/vfio/devices/vfio0');
    expect(bind(h, cdev, ictx, 15).errno).to.equal('EINVAL');
    expect(bind(h, cdev, ictx, 16, 1).errno).to.equal('EINVAL');
    expect(bind(h, cdev, -1).errno).to.equal('EINVAL');
    expect(bind(h, cdev, 9999).errno).to.equal('EBADF');
    expect(bind(h, cdev, h.open('/dev/vfio/vfio')).errno).to.equal('EBADFD');
    expect(bind(h, cdev, ictx)).to.deep.equal({ errno: 'OK', devid: 1 });
    expect(bind(h, cdev, ictx).errno).to.equal('EINVAL');
    // A second cdev fd of the same device cannot open it again.
    const cdev2 = h.open('/dev/vfio/devices/vfio0');
    expect(bind(h, cdev2, ictx).errno).to.equal('EINVAL');
    expect(fake.calls).to.deep.equal(['bind 0000:00:03.0 -> 1']);
    // Now the fd is a device: info, attach (pt_id written back), detach.
    const i = vfio_device_info.view().reset();
    h.ioctl(cdev, VFIO_DEVICE_GET_INFO, i.bytes);
    expect(i.num_regions).to.equal(9);
    const a = vfio_device_attach_iommufd_pt.view().reset();
    a.pt_id = 7;
    h.ioctl(cdev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, a.bytes);
    expect(a.pt_id).to.equal(107);
    a.flags = 1;
    expect(errno(() => h.ioctl(cdev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, a.bytes))).to.equal('EINVAL');
    const d = vfio_device_detach_iommufd_pt.view().reset();
    h.ioctl(cdev, VFIO_DEVICE_DETACH_IOMMUFD_PT, d.bytes);
    h.ioctl(cdev, VFIO_DEVICE_DETACH_IOMMUFD_PT, d.bytes); // detaching twice is fine
    d.argsz = 7;
    expect(errno(() => h.ioctl(cdev, VFIO_DEVICE_DETACH_IOMMUFD_PT, d.bytes))).to.equal('EINVAL');
    h.ioctl(cdev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, vfio_device_attach_iommufd_pt.view().reset().bytes);
    h.close(cdev);
    expect(fake.calls).to.deep.equal([
      'bind 0000:00:03.0 -> 1',
      'attach 1 7',
      'detach 1',
      'attach 1 0',
      'detach 1',
      'unbind 1',
    ]);
    // The device is free again.
    expect(bind(h, cdev2, ictx).errno).to.equal('OK');
  });
});
