// The container backends on the simulated kernel (default topology): discovery, backend
// selection, the legacy type1 container and the iommufd IOAS container, sharing, group
// isolation between address spaces, IOAS_COPY, hot reset, dirty tracking, teardown and
// the errors they give.
import { expect } from 'chai';
import { SyscallError } from '../src/port/errors.js';
import { type SyscallPort } from '../src/port/port.js';
import { O } from '../src/uapi/libc.js';
import { SimPort, type SimKernelHandle } from '../src/kernel/sim-port.js';
import { defaultTopology } from '../src/kernel/topology.js';
import { vfioDiscoverDevice } from '../src/backends/discovery.js';
import { VfioError } from '../src/backends/errors.js';
import { VfioHost } from '../src/backends/host.js';
import { vfioDeviceAttach, type VfioDevice } from '../src/backends/device.js';
import { IommufdBackend, IommufdContainer } from '../src/backends/iommufd.js';
import { LegacyContainer } from '../src/backends/legacy.js';
import { vfioSelectBackend } from '../src/backends/select.js';
import { ERRNO, VFIO_DEVICE_FLAGS, VFIO_IOMMU_DIRTY_PAGES } from '../src/uapi/index.js';
import { expectVfioError, FaultPort, guestRam, overridePort, simFds, type GuestRam } from './backends-kit.js';

const MiB = 1n << 20n;
const PG = 0x1000n;
const VTD_RANGES = [
  { start: 0n, last: 0xfedf_ffffn },
  { start: 0xfef0_0000n, last: (1n << 39n) - 1n },
];

describe('backends: VFIO containers on the simulated kernel', function () {
  let sim: SimKernelHandle;
  let port: SimPort;
  let host: VfioHost;
  let baseline: string[];
  let ram: GuestRam[];

  before(async function () {
    sim = await SimPort.start(defaultTopology());
    port = sim.port();
  });
  after(async function () {
    await sim.stop();
  });
  beforeEach(function () {
    host = new VfioHost(port);
    baseline = simFds();
    ram = [];
  });
  afterEach(function () {
    for (const d of [...host.devices.values()]) d.close();
    for (const r of ram) r.free();
    expect(host.containers, 'containers left').to.have.length(0);
    expect(host.groups.size, 'groups left').to.equal(0);
    expect(simFds(), 'simulated fds left open').to.deep.equal(baseline);
  });

  const mem = (size: bigint) => {
    const r = guestRam(port, Number(size));
    ram.push(r);
    return r;
  };
  const attach = (bdf: string, iommufd: 'on' | 'off' | 'auto' | IommufdBackend, space = 'as0') =>
    vfioDeviceAttach(host, bdf, { iommufd, space });

  describe('discovery', function () {
    it('finds a device by PCI address: group, cdev, device nodes', function () {
      const d = vfioDiscoverDevice(port, '0000:00:03.0');
      expect(d).to.deep.include({
        bdf: '0000:00:03.0',
        driver: 'vfio-pci',
        group: 1,
        groupPath: '/dev/vfio/1',
        groupNodeExists: true,
        cdev: 'vfio0',
        cdevPath: '/dev/vfio/devices/vfio0',
        cdevNodeExists: true,
        iommuExists: true,
      });
    });

    it('finds a device by sysfs path (bus link or /sys/devices) and by short address', function () {
      expect(vfioDiscoverDevice(port, '/sys/bus/pci/devices/0000:00:05.1/')).to.deep.include({
        bdf: '0000:00:05.1',
        group: 3,
        cdev: 'vfio3',
      });
      expect(vfioDiscoverDevice(port, '/sys/devices/pci0000:00/0000:00:04.0')).to.deep.include({
        bdf: '0000:00:04.0',
        group: 2,
      });
      expect(vfioDiscoverDevice(port, '00:07.0').bdf).to.equal('0000:00:07.0');
    });

    it('reports a device without a VFIO cdev', function () {
      expect(vfioDiscoverDevice(port, '0000:00:06.0')).to.deep.include({
        group: 4,
        cdev: null,
        cdevPath: null,
        cdevNodeExists: false,
      });
    });

    it('refuses a missing device, a malformed name and a device not bound to vfio-pci', function () {
      const e = expectVfioError(() => vfioDiscoverDevice(port, '0000:00:1f.0'));
      expect(e).to.deep.include({ op: 'discover', device: '0000:00:1f.0', code: 'ENOENT' });
      expect(e.message).to.match(/^discover 0000:00:1f\.0: ENOENT .*no such PCI device/);
      expect(expectVfioError(() => vfioDiscoverDevice(port, 'eth0')).code).to.equal('EINVAL');
      const other = overridePort(port, {
        readlink: (p) => (p.endsWith('/driver') ? '../../../bus/pci/drivers/e1000e' : undefined),
      });
      expect(expectVfioError(() => vfioDiscoverDevice(other, '0000:00:03.0')).message).to.contain(
        'bound to e1000e, not to vfio-pci',
      );
    });
  });

  describe('backend selection', function () {
    const pick = (bdf: string, opt: 'on' | 'off' | 'auto' | IommufdBackend, p: SyscallPort = port) =>
      vfioSelectBackend(new VfioHost(p), vfioDiscoverDevice(p, bdf), opt);

    it('auto: iommufd when /dev/iommu and the cdev exist', function () {
      const c = pick('0000:00:03.0', 'auto');
      expect(c.kind).to.equal('iommufd');
      expect(c.iommufd).to.be.instanceOf(IommufdBackend);
      expect(c.reason).to.match(/^auto: \/dev\/iommu and \/dev\/vfio\/devices\/vfio0 exist, using iommufd/);
    });

    it('auto: the legacy container for a device without a cdev, saying why', function () {
      const c = pick('0000:00:06.0', 'auto');
      expect(c.kind).to.equal('legacy');
      expect(c.reason).to.match(/^auto: 0000:00:06\.0 has no VFIO cdev, using the legacy container/);
    });

    it('auto without /dev/iommu: legacy; on: a clear error', function () {
      const noIommu = overridePort(port, { exists: (p) => (p === '/dev/iommu' ? false : undefined) });
      expect(pick('0000:00:03.0', 'auto', noIommu).reason).to.match(
        /^auto: no \/dev\/iommu, using the legacy/,
      );
      const e = expectVfioError(() => pick('0000:00:03.0', 'on', noIommu));
      expect(e.op).to.equal('select_backend');
      expect(e.message).to.contain('iommufd=on: cannot use iommufd: /dev/iommu does not exist');
    });

    it('on: iommufd, or an error naming the missing cdev; off: legacy', function () {
      expect(pick('0000:00:03.0', 'on').kind).to.equal('iommufd');
      const e = expectVfioError(() => pick('0000:00:06.0', 'on'));
      expect(e.message).to.contain('0000:00:06.0 has no VFIO cdev');
      const off = pick('0000:00:03.0', 'off');
      expect(off.kind).to.equal('legacy');
      expect(off.reason).to.match(/^iommufd=off:/);
    });

    it('an explicit iommufd object is used as given', function () {
      const be = new IommufdBackend(port, { id: 'iommufd-test' });
      const c = pick('0000:00:04.0', be);
      expect(c.iommufd).to.equal(be);
      expect(c.reason).to.match(/^iommufd object iommufd-test:/);
      expect(() => pick('0000:00:06.0', be)).to.throw(VfioError, /no VFIO cdev/);
    });
  });

  describe('legacy container (type1v2)', function () {
    it('attaches a device through its group and reports what GET_INFO says', function () {
      const dev = attach('0000:00:03.0', 'off');
      expect(dev.backend).to.equal('legacy');
      expect(dev.reason).to.match(/^iommufd=off/);
      expect(dev.fd).to.be.at.least(0);
      const c = dev.container as LegacyContainer;
      expect(c).to.be.instanceOf(LegacyContainer);
      expect(c.kind).to.equal('legacy');
      expect(c.info).to.deep.equal({
        pgsizes: 0x4020_1000n,
        iovaRanges: VTD_RANGES,
        dmaMaxMappings: 65535,
        dirtyPagesSupported: true,
      });
      expect(c.unmapAllSupported).to.equal(true);
      expect(c.dataplaneTarget()).to.deep.equal({ kind: 'legacy', containerFd: c.fd });
      expect(dev.info.flags & VFIO_DEVICE_FLAGS.PCI).to.not.equal(0);
      expect(simFds().some((f) => f.includes(':/dev/vfio/1 '))).to.equal(true);
    });

    it('maps, unmaps, unmaps nothing (0 bytes) and unmaps all', function () {
      const c = attach('0000:00:03.0', 'off').container!;
      const r = mem(4n * MiB);
      c.dmaMap(MiB, 2n * MiB, r.va, false);
      c.dmaMap(4n * MiB, 2n * MiB, r.va + 2n * MiB, true);
      expect(c.dmaUnmap(MiB, 2n * MiB)).to.equal(2n * MiB);
      expect(c.dmaUnmap(MiB, 2n * MiB)).to.equal(0n);
      c.dmaMap(MiB, PG, r.va, false);
      expect(c.dmaUnmap(0n, 0n, { unmapAll: true })).to.equal(2n * MiB + PG);
    });

    it('an overlapping map fails with a VfioError naming op, range, container and errno', function () {
      const c = attach('0000:00:03.0', 'off').container as LegacyContainer;
      const r = mem(MiB);
      c.dmaMap(MiB, 0x2000n, r.va, false);
      const e = expectVfioError(() => c.dmaMap(MiB, 0x2000n, r.va, false));
      expect(e).to.deep.include({ op: 'dma_map', iova: MiB, size: 0x2000n, code: 'EEXIST', errno: 17 });
      expect(e.message).to.equal(
        `dma_map [0x100000, +0x2000) on legacy container fd ${c.fd}: EEXIST (File exists)`,
      );
      expect(e.cause).to.be.instanceOf(SyscallError);
      const back = VfioError.fromJSON(structuredClone(e.toJSON()));
      expect(back.message).to.equal(e.message);
      expect(back).to.deep.include({ op: 'dma_map', iova: MiB, size: 0x2000n, code: 'EEXIST' });
      expect((back.cause as SyscallError).op).to.equal('VFIO_IOMMU_MAP_DMA');
    });

    it('a second group of the same address space joins the container; the last one out closes it', function () {
      const a = attach('0000:00:03.0', 'off');
      const b = attach('0000:00:04.0', 'off');
      const c = a.container as LegacyContainer;
      expect(b.container).to.equal(c);
      expect(c.groups.map((g) => g.id)).to.deep.equal([1, 2]);
      expect(host.containers).to.deep.equal([c]);
      const r = mem(MiB);
      c.dmaMap(MiB, MiB, r.va, false);
      a.close();
      expect(c.destroyed).to.equal(false);
      expect(c.groups.map((g) => g.id)).to.deep.equal([2]);
      expect(c.dmaUnmap(MiB, MiB)).to.equal(MiB);
      b.close();
      expect(c.destroyed).to.equal(true);
      expect(host.containers).to.have.length(0);
    });

    it('another address space gets its own container', function () {
      const a = attach('0000:00:03.0', 'off', 'as0');
      const b = attach('0000:00:04.0', 'off', 'as1');
      expect(a.container).to.not.equal(b.container);
      expect(host.containers).to.have.length(2);
    });

    it('dirty page tracking: start, read the bitmap of a mapping, stop', function () {
      const c = attach('0000:00:03.0', 'off').container!;
      const r = mem(MiB);
      c.dmaMap(MiB, 16n * PG, r.va, false);
      c.setDirtyPageTracking(true);
      expect(c.dirtyPagesStarted).to.equal(true);
      c.setDirtyPageTracking(true); // idempotent
      const bits = c.queryDirtyBitmap(MiB, 16n * PG, PG);
      expect(bits.byteLength).to.equal(8);
      // type1 reports every page of an IOMMU-mapped range as dirty.
      expect([...bits]).to.deep.equal([0xff, 0xff, 0, 0, 0, 0, 0, 0]);
      c.setDirtyPageTracking(false);
      expect(c.dirtyPagesStarted).to.equal(false);
    });

    it('dirty page tracking the kernel refuses to start (ENOMEM): a typed error, and the container stays stopped', function () {
      // One ioctl for the whole container: nothing to roll back, only the state to keep.
      const fp = new FaultPort(port);
      const dev = vfioDeviceAttach(new VfioHost(fp.port), '0000:00:03.0', { iommufd: 'off' });
      try {
        const c = dev.container as LegacyContainer;
        fp.failNext(VFIO_IOMMU_DIRTY_PAGES, ERRNO.ENOMEM);
        const e = expectVfioError(() => c.setDirtyPageTracking(true));
        expect(e.message).to.equal(
          `set_dirty_page_tracking on legacy container fd ${c.fd}: ENOMEM (Cannot allocate memory)`,
        );
        expect((e.cause as SyscallError).op).to.equal('VFIO_IOMMU_DIRTY_PAGES');
        expect(c.dirtyPagesStarted).to.equal(false);
        expect([...c.queryDirtyBitmap(MiB, 8n * PG, PG)]).to.deep.equal(Array(8).fill(0xff));
        c.setDirtyPageTracking(true);
        expect(c.dirtyPagesStarted).to.equal(true);
      } finally {
        dev.close();
      }
    });

    it('hot reset of the 05.0/05.1 pair passes the group fd; FLR for a device that has it', function () {
      const a = attach('0000:00:05.0', 'off');
      const b = attach('0000:00:05.1', 'off');
      expect(b.container).to.equal(a.container);
      expect((a.container as LegacyContainer).groups).to.have.length(1);
      a.container!.pciHotReset(a);
      expect(a.info.flags & VFIO_DEVICE_FLAGS.RESET).to.not.equal(0);
      a.reset();
    });

    it('reset of an edu on the root bus (no FLR, no slot or bus reset) fails with ENODEV', function () {
      const dev = attach('0000:00:03.0', 'off');
      const e = expectVfioError(() => dev.reset());
      expect(e).to.deep.include({ op: 'pci_hot_reset', device: '0000:00:03.0', code: 'ENODEV' });
    });
  });

  describe('iommufd container', function () {
    it('binds and attaches a device (auto domain HWPT) and reports the IOAS ranges', function () {
      const dev = attach('0000:00:03.0', 'auto');
      expect(dev.backend).to.equal('iommufd');
      expect(dev.devid).to.be.a('number');
      const c = dev.container as IommufdContainer;
      expect(c).to.be.instanceOf(IommufdContainer);
      expect(c.hwpts).to.have.length(1);
      expect(dev.hwptId).to.equal(c.hwpts[0]!.id);
      expect(c.info).to.deep.equal({
        pgsizes: PG,
        iovaRanges: VTD_RANGES,
        dmaMaxMappings: null,
        dirtyPagesSupported: false,
      });
      expect(c.dataplaneTarget()).to.deep.equal({ kind: 'iommufd', iommufd: c.backend.fd, ioasId: c.ioasId });
      expect(c.backend.users).to.equal(2); // the device and the container
    });

    it('maps, unmaps, unmaps nothing (ENOENT -> 0 bytes) and unmaps all', function () {
      const c = attach('0000:00:03.0', 'on').container!;
      const r = mem(4n * MiB);
      c.dmaMap(MiB, 2n * MiB, r.va, false);
      c.dmaMap(4n * MiB, MiB, r.va + 2n * MiB, true);
      expect(c.dmaUnmap(MiB, 2n * MiB)).to.equal(2n * MiB);
      expect(c.dmaUnmap(MiB, 2n * MiB)).to.equal(0n);
      expect(c.dmaUnmap(0n, 0n, { unmapAll: true })).to.equal(MiB);
    });

    it('an overlapping map names the IOAS in its error', function () {
      const c = attach('0000:00:03.0', 'on').container as IommufdContainer;
      const r = mem(4n * MiB);
      c.dmaMap(MiB, 2n * MiB, r.va, false);
      const e = expectVfioError(() => c.dmaMap(MiB, 2n * MiB, r.va, false));
      expect(e.message).to.equal(
        `dma_map [0x100000, +0x200000) on iommufd IOAS ${c.ioasId}: EEXIST (File exists)`,
      );
      expect((e.cause as SyscallError).op).to.equal('IOMMU_IOAS_MAP');
    });

    it('two devices of one address space share the IOAS and the HWPT', function () {
      const a = attach('0000:00:03.0', 'on');
      const b = attach('0000:00:04.0', 'on');
      const c = a.container as IommufdContainer;
      expect(b.container).to.equal(c);
      expect(c.hwpts).to.have.length(1);
      expect(b.hwptId).to.equal(a.hwptId);
      expect(c.hwpts[0]!.devices).to.deep.equal([a, b]);
      a.close();
      expect(c.destroyed).to.equal(false);
      expect(c.hwpts[0]!.devices).to.deep.equal([b]);
      b.close();
      expect(c.destroyed).to.equal(true);
      expect(c.backend.users).to.equal(0);
      expect(c.backend.hasFd).to.equal(false);
    });

    it('IOAS_COPY maps a range of one IOAS into another IOAS of the same iommufd', function () {
      const a = attach('0000:00:03.0', 'on', 'as0').container as IommufdContainer;
      const b = attach('0000:00:04.0', 'on', 'as1').container as IommufdContainer;
      expect(b).to.not.equal(a);
      expect(b.backend).to.equal(a.backend);
      expect(b.ioasId).to.not.equal(a.ioasId);
      const r = mem(2n * MiB);
      a.dmaMap(MiB, 2n * MiB, r.va, false);
      b.copyFrom(a, MiB, 2n * MiB);
      expect(b.dmaUnmap(MiB, 2n * MiB)).to.equal(2n * MiB);
      const e = expectVfioError(() => b.copyFrom(a, 8n * MiB, MiB));
      expect(e).to.deep.include({ op: 'dma_copy', code: 'ENOENT' });
      expect(e.message).to.contain(`on iommufd IOAS ${b.ioasId} from IOAS ${a.ioasId}`);
      const other = new IommufdBackend(port, { id: 'other' });
      const c = attach('0000:00:07.0', other, 'as2').container as IommufdContainer;
      expect(expectVfioError(() => c.copyFrom(a, MiB, MiB)).code).to.equal('EXDEV');
    });

    it('hot reset of the 05.0/05.1 pair with DEV_ID_OWNED and no group fds', function () {
      const a = attach('0000:00:05.0', 'on');
      const b = attach('0000:00:05.1', 'on');
      expect(b.container).to.equal(a.container);
      a.container!.pciHotReset(a);
      b.container!.pciHotReset(b);
    });

    it('dirty tracking where the IOMMU cannot: a no-op, and the bitmap reads all dirty', function () {
      const c = attach('0000:00:03.0', 'on').container!;
      c.setDirtyPageTracking(true);
      expect(c.dirtyPagesStarted).to.equal(false);
      expect([...c.queryDirtyBitmap(0n, 8n * PG, PG)]).to.deep.equal([
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      ]);
    });

    it('an iommufd object given an open fd uses it and leaves it open', function () {
      const fd = port.open('/dev/iommu', O.RDWR | O.CLOEXEC);
      try {
        const be = new IommufdBackend(port, { id: 'passed', fd });
        const dev = attach('0000:00:03.0', be);
        expect((dev.container as IommufdContainer).backend.fd).to.equal(fd);
        dev.close();
        expect(be.hasFd).to.equal(true);
        expect(simFds().some((f) => f.startsWith(`${fd} `))).to.equal(true);
      } finally {
        port.close(fd);
      }
    });
  });

  describe('failures leave nothing behind', function () {
    it('a group already used by another address space is refused (both backends)', function () {
      attach('0000:00:05.0', 'on', 'as0');
      for (const mode of ['on', 'off'] as const) {
        const e = expectVfioError(() => attach('0000:00:05.1', mode, 'as1'));
        expect(e).to.deep.include({ op: 'attach_device', device: '0000:00:05.1', code: 'EBUSY' });
        expect(e.message).to.contain("IOMMU group 3 is already used by address space 'as0'");
      }
      expect(host.devices.size).to.equal(1);
    });

    it('a device attached twice is refused', function () {
      attach('0000:00:03.0', 'on');
      expect(expectVfioError(() => attach('0000:00:03.0', 'off')).message).to.contain('already attached');
    });

    it('legacy attach when a sibling is bound through its cdev: the group open fails, nothing is left', function () {
      const before = simFds();
      attach('0000:00:05.0', 'on');
      const mid = simFds();
      expect(mid.length).to.be.greaterThan(before.length);
      const e = expectVfioError(() => attach('0000:00:05.1', 'off'));
      expect(e.op).to.equal('attach_device');
      expect(e.code).to.equal('EBUSY');
      expect(host.groups.size).to.equal(0);
      expect(host.containers.filter((c) => c.kind === 'legacy')).to.have.length(0);
      expect(simFds()).to.deep.equal(mid);
    });

    it('iommufd attach when the sibling holds the group: bind fails, the cdev fd and /dev/iommu are closed', function () {
      attach('0000:00:05.0', 'off');
      const mid = simFds();
      const e = expectVfioError(() => attach('0000:00:05.1', 'on'));
      expect(e.op).to.equal('attach_device');
      expect((e.cause as SyscallError).op).to.equal('VFIO_DEVICE_BIND_IOMMUFD');
      expect(host.containers.filter((c) => c.kind === 'iommufd')).to.have.length(0);
      expect(host.defaultIommufd().users).to.equal(0);
      expect(simFds()).to.deep.equal(mid);
    });
  });

  describe('teardown', function () {
    it('destroy() closes every device of a container and the container itself', function () {
      const devs: VfioDevice[] = [attach('0000:00:03.0', 'off'), attach('0000:00:04.0', 'off')];
      const l = devs[0]!.container!;
      const i = attach('0000:00:07.0', 'on').container!;
      const r = mem(MiB);
      l.dmaMap(MiB, MiB, r.va, false);
      i.dmaMap(MiB, MiB, r.va, false);
      l.destroy();
      i.destroy();
      expect(devs.every((d) => d.fd === -1 && d.container === null)).to.equal(true);
      expect(host.devices.size).to.equal(0);
    });
  });
});
