// The simulated kernel's iommufd, part 2: devices and domains. Selftest mock domains
// (IOMMU_TEST_OP_MOCK_DOMAIN) and a fake VT-d device bound the way the VFIO cdev does
// (bindDevice/attachDevice); alignment, reserved ranges, pinning and accounting, DMA
// translation, HWPTs, hardware info and teardown. B5 #n: anchors-style-and-reliability.md.
import { expect } from 'chai';
import { defaultTopology } from '../src/kernel/topology.js';
import { PROT, RLIMIT } from '../src/uapi/libc.js';
import { SimPort } from '../src/kernel/sim-port.js';
import {
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_HWPT_ALLOC_FLAGS as HF,
  IOMMU_HW_INFO_TYPE,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP_FLAGS as F,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_alloc,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
} from '../src/uapi/index.js';
import {
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP,
  MOCK_FLAGS_DEVICE,
  iommu_test_cmd_mock_domain_flags,
  iommu_test_cmd_mock_domain_replace,
} from '../src/uapi/iommufd-test.js';
import { SimKernel } from '../src/kernel/kernel.js';
import { iommufdDriver, type IommufdFile } from '../src/kernel/iommufd/index.js';
import { LinuxPort } from '../src/port/linux.js';
import { expectErrno, FakeDevice, MOCK_PAGE, MOCK_START, PAGE, RW, Sim, U64_MAX } from './sim-iommufd-kit.js';

const MSI_START = 0xfee0_0000n;
const MSI_LAST = 0xfeef_ffffn;
const VTD_LAST = (1n << 39n) - 1n;

describe('sim iommufd: the selftest mock IOMMU next to VT-d', function () {
  it('iommufdDriver on a VT-d topology: MOCK_DOMAIN and MOCK_DOMAIN_FLAGS -> EINVAL, nothing left behind (as in the VT-d VM)', function () {
    const kernel = new SimKernel(defaultTopology(), new LinuxPort(), [iommufdDriver]);
    const port = SimPort.direct(kernel);
    const fd = port.open('/dev/iommu', 2);
    const a = iommu_ioas_alloc.view().reset();
    port.ioctl(fd, IOMMU_IOAS_ALLOC, a.bytes);
    const m = iommu_test_cmd_mock_domain_flags.view().reset();
    m.op = IOMMU_TEST_OP.MOCK_DOMAIN;
    m.id = a.out_ioas_id;
    expectErrno('EINVAL', () => port.ioctl(fd, IOMMU_TEST_CMD, m.bytes), 'MOCK_DOMAIN');
    m.op = IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS;
    m.dev_flags = MOCK_FLAGS_DEVICE.NO_DIRTY;
    expectErrno('EINVAL', () => port.ioctl(fd, IOMMU_TEST_CMD, m.bytes), 'MOCK_DOMAIN_FLAGS');
    port.ioctl(fd, IOMMU_IOAS_ALLOC, a.bytes);
    expect(a.out_ioas_id, 'the aborted object ids are free').to.equal(2);
    port.close(fd);
  });
});

describe('sim iommufd: a host IOMMU other than VT-d (hw_info_type 0, as virtio-iommu)', function () {
  it('the mock IOMMU serves MOCK_DOMAIN; GET_HW_INFO is type NONE with no data; HWPT flags -> EOPNOTSUPP (no domain_alloc_user)', function () {
    const topo = defaultTopology();
    topo.iommu.hw_info_type = 0;
    const kernel = new SimKernel(topo, new LinuxPort(), [iommufdDriver]);
    const port = SimPort.direct(kernel);
    const fd = port.open('/dev/iommu', 2);
    const a = iommu_ioas_alloc.view().reset();
    port.ioctl(fd, IOMMU_IOAS_ALLOC, a.bytes);
    const m = iommu_test_cmd_mock_domain_flags.view().reset();
    m.op = IOMMU_TEST_OP.MOCK_DOMAIN;
    m.id = a.out_ioas_id;
    port.ioctl(fd, IOMMU_TEST_CMD, m.bytes);
    expect(m.out_hwpt_id).to.equal(4);
    const f = kernel.file(fd) as IommufdFile;
    const devId = f.bindDevice(new FakeDevice(topo));
    const h = iommu_hw_info.view().reset();
    h.dev_id = devId;
    h.data_len = 8;
    h.data_uptr = 8n; // never touched: nothing to copy, but the tail is cleared -> EFAULT
    expectErrno('EFAULT', () => port.ioctl(fd, IOMMU_GET_HW_INFO, h.bytes));
    h.data_len = 0;
    port.ioctl(fd, IOMMU_GET_HW_INFO, h.bytes);
    expect([h.out_data_type, h.data_len]).to.deep.equal([0, 0]);
    const hw = iommu_hwpt_alloc.view().reset();
    hw.dev_id = devId;
    hw.pt_id = a.out_ioas_id;
    hw.flags = HF.ALLOC_NEST_PARENT;
    expectErrno('EOPNOTSUPP', () => port.ioctl(fd, IOMMU_HWPT_ALLOC, hw.bytes));
    hw.flags = 0;
    port.ioctl(fd, IOMMU_HWPT_ALLOC, hw.bytes);
    f.unbindDevice(devId);
    port.close(fd);
    expect(kernel.mem.pinCount).to.equal(0);
  });
});

describe('sim iommufd: mock domains (selftest)', function () {
  const f = Sim.fixture({ buf: 64n * PAGE, checkPins: true, checkLocked: true });

  it('MOCK_DOMAIN: stdev, idev and auto HWPT ids in allocation order; the IOAS takes the mock aperture and 2 KiB alignment', function () {
    const ioas = f.sim.ioasAlloc();
    const m = f.sim.mockDomain(ioas);
    expect(m).to.deep.equal({ stdev: 2, idev: 3, hwpt: 4 });
    expect(f.sim.iovaRanges(ioas)).to.deep.equal({
      ranges: [[MOCK_START, (1n << 31n) - 1n]],
      alignment: MOCK_PAGE,
    });
    // A second mock device reuses the automatic HWPT.
    const m2 = f.sim.mockDomain(ioas);
    expect(m2.hwpt).to.equal(m.hwpt);
    // IOAS and HWPT are busy; the device object is held by its driver (B5 #19).
    expectErrno('EBUSY', () => f.sim.destroy(ioas), 'IOAS with a HWPT');
    expectErrno('EBUSY', () => f.sim.destroy(m.hwpt), 'HWPT with devices');
    expectErrno('EBUSY', () => f.sim.destroy(m.idev), 'device');
    f.sim.destroy(m.stdev);
    f.sim.destroy(m2.stdev);
    // The automatic HWPT went with its last device; its id is free again.
    expectErrno('ENOENT', () => f.sim.destroy(m.hwpt));
    f.sim.destroy(ioas);
  });

  it('maps are pinned once a domain exists: MD_CHECK_MAP / MD_CHECK_REFS; unmap unpins', function () {
    const ioas = f.sim.ioasAlloc();
    const { hwpt } = f.sim.mockDomain(ioas);
    const iova = f.sim.map(ioas, f.buf, 4n * PAGE);
    expect(iova).to.equal(MOCK_START);
    f.sim.checkMap(hwpt, iova, 4n * PAGE, f.buf);
    f.sim.checkRefs(f.buf, 4n * PAGE, 1);
    f.sim.checkRefs(f.buf + 4n * PAGE, 4n * PAGE, 0);
    expectErrno('EIO', () => f.sim.checkRefs(f.buf, 4n * PAGE, 2), 'wrong count');
    expectErrno('EIO', () => f.sim.checkRefs(f.buf, 8n * PAGE, 1), 'mixed counts');
    expectErrno('EINVAL', () => f.sim.checkMap(hwpt, iova, 4n * PAGE, f.buf + PAGE), 'another address');
    expectErrno('EINVAL', () => f.sim.checkMap(hwpt, iova, 8n * PAGE, f.buf), 'past the area');
    expectErrno('EINVAL', () => f.sim.checkMap(hwpt, iova + 1n, MOCK_PAGE, f.buf), 'unaligned');
    expectErrno('ENOENT', () => f.sim.checkMap(ioas, iova, PAGE, f.buf), 'an IOAS id is not a HWPT');
    expectErrno('EINVAL', () => f.sim.checkRefs(f.buf + 1n, PAGE, 1), 'unaligned uptr');
    // A second map of the same memory is a second iopt_pages: pinned twice.
    const iova2 = f.sim.map(ioas, f.buf, 2n * PAGE);
    f.sim.checkRefs(f.buf, 2n * PAGE, 2);
    expect(f.sim.kernel.mem.locked).to.equal(6n * PAGE);
    f.sim.unmap(ioas, iova2, 2n * PAGE);
    f.sim.unmap(ioas, iova, 4n * PAGE);
    f.sim.checkRefs(f.buf, 8n * PAGE, 0);
    expect(f.sim.kernel.mem.locked).to.equal(0n);
  });

  it('selftest all_aligns: sub-page starts and lengths in MOCK_IO_PAGE_SIZE steps map, check and unmap', function () {
    const ioas = f.sim.ioasAlloc();
    const { hwpt } = f.sim.mockDomain(ioas);
    const size = 8n * PAGE;
    for (let start = 0n; start < size; start += MOCK_PAGE * 3n) {
      for (let end = start + MOCK_PAGE; end < size; end += MOCK_PAGE * 5n) {
        const iova = f.sim.map(ioas, f.buf + start, end - start);
        f.sim.checkMap(hwpt, iova, end - start, f.buf + start);
        const first = (start / PAGE) * PAGE;
        const lastPage = ((end - 1n) / PAGE + 1n) * PAGE;
        f.sim.checkRefs(f.buf + first, lastPage - first, 1);
        f.sim.unmap(ioas, iova, end - start);
      }
    }
    f.sim.checkRefs(f.buf, size, 0);
    // Lengths that are not MOCK_IO_PAGE_SIZE multiples are EINVAL (selftest ioas_iova_alloc).
    expectErrno('EINVAL', () => f.sim.map(ioas, f.buf, 100n));
    expectErrno('EINVAL', () => f.sim.map(ioas, f.buf, PAGE, MOCK_START + 1n), 'unaligned IOVA');
    expectErrno('EINVAL', () => f.sim.map(ioas, f.buf + 0x100n, PAGE, MOCK_START), 'unaligned page offset');
    expectErrno('EINVAL', () => f.sim.map(ioas, f.buf, PAGE, 0x1000n), 'below the aperture (reserved)');
  });

  it('COPY pins the shared pages once (B5 #13), wherever the domains are', function () {
    const src = f.sim.ioasAlloc();
    const dst = f.sim.ioasAlloc();
    f.sim.mockDomain(src);
    const { hwpt } = f.sim.mockDomain(dst);
    const iova = f.sim.map(src, f.buf, 4n * PAGE);
    const c = iommu_ioas_copy.view().reset();
    c.flags = RW | F.FIXED_IOVA;
    c.src_ioas_id = src;
    c.dst_ioas_id = dst;
    c.src_iova = iova;
    c.dst_iova = MOCK_START + 0x10_0000n;
    c.length = 4n * PAGE;
    f.sim.port.ioctl(f.sim.fd, IOMMU_IOAS_COPY, c.bytes);
    f.sim.checkMap(hwpt, c.dst_iova, 4n * PAGE, f.buf);
    f.sim.checkRefs(f.buf, 4n * PAGE, 1);
    expect(f.sim.kernel.mem.locked).to.equal(4n * PAGE);
    f.sim.unmap(src, iova, 4n * PAGE);
    f.sim.checkRefs(f.buf, 4n * PAGE, 1); // the copy still holds them
    f.sim.unmap(dst, c.dst_iova, 4n * PAGE);
    f.sim.checkRefs(f.buf, 4n * PAGE, 0);
  });

  it('pinning at map time: EFAULT for unmapped memory, even halfway (selftest basic, B5 #11); read-only memory mapped WRITEABLE is EFAULT', function () {
    const ioas = f.sim.ioasAlloc();
    f.sim.mockDomain(ioas);
    const half = f.sim.scratch(8n * PAGE);
    f.sim.port.munmap(half + 4n * PAGE, 4n * PAGE);
    expectErrno('EFAULT', () => f.sim.map(ioas, half, 8n * PAGE), 'half unmapped');
    const ro = f.sim.memfd(PAGE, PROT.READ);
    expectErrno('EFAULT', () => f.sim.map(ioas, ro, PAGE), 'FOLL_WRITE on read-only');
    f.sim.map(ioas, ro, PAGE, undefined, F.READABLE);
    f.sim.checkRefs(ro, PAGE, 1);
    expect(f.sim.iovaRanges(ioas).ranges.length).to.equal(1);
    f.sim.unmap(ioas, 0n, U64_MAX);
    expect(f.sim.kernel.mem.pinCount).to.equal(0);
  });

  it('B5 #11 (fork_gone): a lazy map of memory that went away fails the attach with EFAULT; nothing changes', function () {
    const ioas = f.sim.ioasAlloc();
    const gone = f.sim.scratch(4n * PAGE);
    f.sim.map(ioas, gone, 4n * PAGE, MOCK_START);
    f.sim.port.munmap(gone, 4n * PAGE);
    expectErrno('EFAULT', () => f.sim.mockDomain(ioas));
    expect(f.sim.iovaRanges(ioas).alignment, 'no domain left behind').to.equal(1n);
    expect(f.sim.ioasAlloc(), 'ids of the aborted objects are free again').to.equal(2);
    expect(f.sim.unmap(ioas, 0n, U64_MAX)).to.equal(4n * PAGE);
  });

  it('B5 #10: RLIMIT_MEMLOCK exceeded -> ENOMEM at map (with a domain) and at attach (lazy maps); the failed call leaves nothing', function () {
    f.sim.port.setrlimit(RLIMIT.MEMLOCK, { cur: 4n * PAGE, max: f.sim.port.getrlimit(RLIMIT.MEMLOCK).max });
    const ioas = f.sim.ioasAlloc();
    f.sim.map(ioas, f.buf, 3n * PAGE, MOCK_START);
    f.sim.map(ioas, f.buf, 3n * PAGE, MOCK_START + 0x10_0000n);
    expectErrno('ENOMEM', () => f.sim.mockDomain(ioas), 'attach pins 6 pages');
    expect(f.sim.kernel.mem.locked).to.equal(0n);
    f.sim.unmap(ioas, MOCK_START + 0x10_0000n, 3n * PAGE);
    f.sim.mockDomain(ioas);
    expect(f.sim.kernel.mem.locked).to.equal(3n * PAGE);
    expectErrno('ENOMEM', () => f.sim.map(ioas, f.buf, 2n * PAGE), 'map beyond the limit');
    f.sim.map(ioas, f.buf, PAGE);
    expect(f.sim.kernel.mem.locked).to.equal(4n * PAGE);
  });

  it('B5 #12: device memory (VM_PFNMAP) cannot be pinned: EFAULT at map with a domain, at attach without', function () {
    const bar = f.sim.scratch(PAGE);
    f.sim.kernel.mem.addVma({ start: bar, end: bar + PAGE, prot: PROT.READ | PROT.WRITE, pfnmap: true });
    const a = f.sim.ioasAlloc();
    f.sim.mockDomain(a);
    expectErrno('EFAULT', () => f.sim.map(a, bar, PAGE));
    const b = f.sim.ioasAlloc();
    f.sim.map(b, bar, PAGE, MOCK_START);
    expectErrno('EFAULT', () => f.sim.mockDomain(b));
  });

  it('attach: areas outside the aperture or misaligned -> EADDRINUSE (B5 #18); unknown pt -> ENOENT; a device object is no pt -> EINVAL', function () {
    const ioas = f.sim.ioasAlloc();
    f.sim.map(ioas, f.buf, PAGE, 0x1000n);
    expectErrno('EADDRINUSE', () => f.sim.mockDomain(ioas), 'area below the mock aperture');
    f.sim.unmap(ioas, 0n, U64_MAX);
    f.sim.map(ioas, f.buf + 0x10n, 0x100n, MOCK_START + 0x10n);
    expectErrno('EADDRINUSE', () => f.sim.mockDomain(ioas), 'byte-granular area');
    f.sim.unmap(ioas, 0n, U64_MAX);
    expectErrno('ENOENT', () => f.sim.mockDomain(99));
    const { idev } = f.sim.mockDomain(ioas);
    expectErrno('EINVAL', () => f.sim.mockDomain(idev), 'attach to a device id');
  });

  it('MOCK_DOMAIN_REPLACE: to another IOAS frees the old auto HWPT; to a HWPT and back (selftest replace, alloc_hwpt)', function () {
    const ioas = f.sim.ioasAlloc();
    const m = f.sim.mockDomain(ioas);
    const other = f.sim.ioasAlloc();
    const replace = (pt: number) =>
      f.sim.testCmd(iommu_test_cmd_mock_domain_replace, IOMMU_TEST_OP.MOCK_DOMAIN_REPLACE, m.stdev, (v) => {
        v.pt_id = pt;
      }).pt_id;
    const newHwpt = replace(other);
    expect(newHwpt).to.not.equal(m.hwpt);
    expectErrno('ENOENT', () => replace(m.hwpt), 'old HWPT is gone');
    expect(replace(other)).to.equal(newHwpt);
    // A manual HWPT: HWPT_ALLOC, replace onto it, it is busy, replace back, destroy.
    const a = iommu_hwpt_alloc.view().reset();
    a.dev_id = m.idev;
    a.pt_id = ioas;
    f.sim.port.ioctl(f.sim.fd, IOMMU_HWPT_ALLOC, a.bytes);
    const manual = a.out_hwpt_id;
    expect(replace(manual)).to.equal(manual);
    expectErrno('EBUSY', () => f.sim.destroy(manual));
    const back = replace(ioas);
    expect(back).to.not.equal(manual, 'a manual HWPT is never picked automatically');
    f.sim.destroy(manual);
    expectErrno('ENOENT', () => replace(99));
    expectErrno('ENOENT', () =>
      f.sim.testCmd(iommu_test_cmd_mock_domain_replace, IOMMU_TEST_OP.MOCK_DOMAIN_REPLACE, m.idev, (v) => {
        v.pt_id = ioas;
      }),
    );
    f.sim.destroy(m.stdev);
    f.sim.destroy(other);
    f.sim.destroy(ioas);
  });

  it('HWPT_ALLOC: EOPNOTSUPP flags/__reserved, EINVAL data/pt, ENOENT device; NEST_PARENT on the mock; an unattached HWPT still pins', function () {
    const ioas = f.sim.ioasAlloc();
    const m = f.sim.mockDomain(ioas);
    const req = (flags = 0, pt = ioas, dev = m.idev) => {
      const a = iommu_hwpt_alloc.view().reset();
      a.flags = flags;
      a.dev_id = dev;
      a.pt_id = pt;
      return a;
    };
    const call = (a: ReturnType<typeof req>) => () => f.sim.port.ioctl(f.sim.fd, IOMMU_HWPT_ALLOC, a.bytes);
    expectErrno('EOPNOTSUPP', call(req(~HF.ALLOC_NEST_PARENT >>> 0)), 'flags');
    expectErrno('EOPNOTSUPP', call(req(HF.FAULT_ID_VALID)), 'FAULT_ID_VALID on a paging HWPT');
    const r = req();
    r.__reserved = 1;
    expectErrno('EOPNOTSUPP', call(r), '__reserved');
    const d = req();
    d.data_len = 8;
    expectErrno('EINVAL', call(d), 'data_len with DATA_NONE');
    const t = req();
    t.data_type = 1;
    expectErrno('EINVAL', call(t), 'data type without data');
    expectErrno('ENOENT', call(req(0, ioas, 99)), 'unknown device');
    expectErrno('EINVAL', call(req(0, 99)), 'unknown pt_id is EINVAL here');
    expectErrno('EINVAL', call(req(0, m.idev)), 'pt is a device');
    expectErrno('EOPNOTSUPP', call(req(0, m.hwpt)), 'nested without data');
    const np = req(HF.ALLOC_NEST_PARENT);
    call(np)();
    const buf2 = f.sim.ioasAlloc();
    f.sim.map(buf2, f.buf, PAGE, MOCK_START);
    const onOther = req(0, buf2);
    call(onOther)();
    f.sim.checkRefs(f.buf, PAGE, 1);
    f.sim.destroy(onOther.out_hwpt_id);
    f.sim.checkRefs(f.buf, PAGE, 0);
    f.sim.destroy(np.out_hwpt_id);
  });

  it('GET_HW_INFO on a mock device: selftest type and register, data_len written back, trailing bytes zeroed', function () {
    const ioas = f.sim.ioasAlloc();
    const m = f.sim.mockDomain(ioas);
    const out = f.sim.scratch();
    f.sim.bytes(out, 16).fill(0xaa);
    const h = iommu_hw_info.view().reset();
    h.dev_id = m.idev;
    h.data_len = 16;
    h.data_uptr = out;
    f.sim.port.ioctl(f.sim.fd, IOMMU_GET_HW_INFO, h.bytes);
    expect(h.out_data_type).to.equal(0xfeedbeef);
    expect(h.data_len).to.equal(8);
    expect(h.out_capabilities).to.equal(1n);
    const v = new DataView(f.sim.bytes(out, 16).slice().buffer);
    expect(v.getUint32(4, true)).to.equal(0xdeadbeef);
    expect(v.getBigUint64(8, true)).to.equal(0n);
  });
});

describe('sim iommufd: a VT-d device bound like a VFIO cdev', function () {
  const f = Sim.fixture({ buf: 64n * PAGE, checkPins: true, checkLocked: true });
  let dev: FakeDevice;
  beforeEach(function () {
    dev = new FakeDevice(f.sim.kernel.topology);
  });

  it('attach makes an auto HWPT: alignment 4 KiB, aperture 39 bits, MSI window reserved; detach undoes it', function () {
    const file = f.sim.file();
    const ioas = f.sim.ioasAlloc();
    const devId = file.bindDevice(dev);
    expect(devId).to.equal(2);
    const pt = file.attachDevice(devId, ioas);
    expect(pt).to.equal(3);
    expect(f.sim.iovaRanges(ioas)).to.deep.equal({
      ranges: [
        [0n, MSI_START - 1n],
        [MSI_LAST + 1n, VTD_LAST],
      ],
      alignment: PAGE,
    });
    expectErrno('EINVAL', () => f.sim.map(ioas, f.buf, PAGE, MSI_START), 'MSI window (B5 #15)');
    expectErrno('EINVAL', () => f.sim.map(ioas, f.buf, PAGE, 1n << 39n), 'beyond the aperture');
    expectErrno('EINVAL', () => f.sim.map(ioas, f.buf, 0x800n), 'sub-page length');
    // Attaching again is a replace onto the same HWPT: nothing changes.
    expect(file.attachDevice(devId, ioas)).to.equal(pt);
    file.detachDevice(devId);
    expect(f.sim.iovaRanges(ioas)).to.deep.equal({ ranges: [[0n, U64_MAX]], alignment: 1n });
    expectErrno('ENOENT', () => f.sim.destroy(pt), 'auto HWPT gone with the device');
    file.unbindDevice(devId);
  });

  it('DMA goes through the translator: IOVA -> user VA, null when unmapped or writing a read-only mapping; blocked after detach', function () {
    const file = f.sim.file();
    const ioas = f.sim.ioasAlloc();
    const devId = file.bindDevice(dev);
    expect(dev.translator).to.equal(null);
    file.attachDevice(devId, ioas);
    const iova = f.sim.map(ioas, f.buf, 4n * PAGE, 0x10_0000n);
    f.sim.map(ioas, f.buf + 8n * PAGE, PAGE, 0x10_4000n); // contiguous IOVA, not contiguous VA
    f.sim.map(ioas, f.buf, PAGE, 0x20_0000n, F.READABLE);
    const t = dev.translator!;
    expect(t.translate(iova + 0x123n, 16, true)).to.equal(f.buf + 0x123n);
    expect(t.translate(iova + 4n * PAGE - 8n, 8, false)).to.equal(f.buf + 4n * PAGE - 8n);
    expect(t.translate(iova + 4n * PAGE - 8n, 16, false), 'spans areas with a VA jump').to.equal(null);
    expect(t.translate(0x30_0000n, 4, false), 'unmapped').to.equal(null);
    expect(t.translate(0x20_0000n, 4, false)).to.equal(f.buf);
    expect(t.translate(0x20_0000n, 4, true), 'write to a read-only mapping').to.equal(null);
    file.detachDevice(devId);
    expect(dev.translator).to.equal(null);
    expect(t.translate(iova, 4, false), 'a stale translator blocks too').to.equal(null);
    file.unbindDevice(devId);
    f.sim.unmap(ioas, 0n, U64_MAX);
  });

  it('B5 #18: an area in the MSI window -> EADDRINUSE at attach; a mock HWPT for a VT-d device -> EINVAL; bad pt -> ENOENT', function () {
    const file = f.sim.file();
    const ioas = f.sim.ioasAlloc();
    f.sim.map(ioas, f.buf, PAGE, MSI_START + PAGE);
    const devId = file.bindDevice(dev);
    expectErrno('EADDRINUSE', () => file.attachDevice(devId, ioas), 'MSI window');
    f.sim.unmap(ioas, 0n, U64_MAX);
    const m = f.sim.mockDomain(ioas);
    // An auto HWPT of another driver is skipped (EINVAL = incompatible), a fresh one is made.
    const pt = file.attachDevice(devId, ioas);
    expect(pt).to.not.equal(m.hwpt);
    file.detachDevice(devId);
    expectErrno('EINVAL', () => file.attachDevice(devId, m.hwpt), 'mock HWPT');
    expectErrno('ENOENT', () => file.attachDevice(devId, 99));
    file.unbindDevice(devId);
  });

  it('B5 #25: DIRTY_TRACKING HWPT on an IOMMU without it -> EOPNOTSUPP; GET_HW_INFO reports VT-d registers', function () {
    const file = f.sim.file();
    const ioas = f.sim.ioasAlloc();
    const devId = file.bindDevice(dev);
    const a = iommu_hwpt_alloc.view().reset();
    a.flags = HF.ALLOC_DIRTY_TRACKING;
    a.dev_id = devId;
    a.pt_id = ioas;
    expectErrno('EOPNOTSUPP', () => f.sim.port.ioctl(f.sim.fd, IOMMU_HWPT_ALLOC, a.bytes));
    a.flags = HF.ALLOC_NEST_PARENT;
    expectErrno(
      'EOPNOTSUPP',
      () => f.sim.port.ioctl(f.sim.fd, IOMMU_HWPT_ALLOC, a.bytes),
      'no nesting (ecap)',
    );
    const out = f.sim.scratch();
    const h = iommu_hw_info.view().reset();
    h.dev_id = devId;
    h.data_len = 8; // shorter than iommu_hw_info_vtd: copies 8, reports 24
    h.data_uptr = out;
    f.sim.port.ioctl(f.sim.fd, IOMMU_GET_HW_INFO, h.bytes);
    expect(h.out_data_type).to.equal(IOMMU_HW_INFO_TYPE.INTEL_VTD);
    expect(h.data_len).to.equal(24);
    expect(h.out_capabilities).to.equal(0n);
    const v = new DataView(f.sim.bytes(out, 24).slice().buffer);
    expect(v.getUint32(0, true), 'ERRATA_772415_SPR17 flag').to.equal(1);
    expect(v.getBigUint64(8, true), 'not copied beyond data_len').to.equal(0n);
    h.data_len = 24;
    f.sim.port.ioctl(f.sim.fd, IOMMU_GET_HW_INFO, h.bytes);
    expect(new DataView(f.sim.bytes(out, 24).slice().buffer).getBigUint64(8, true)).to.equal(
      f.sim.kernel.topology.iommu.cap_reg,
    );
    h.data_uptr = 8n;
    expectErrno('EFAULT', () => f.sim.port.ioctl(f.sim.fd, IOMMU_GET_HW_INFO, h.bytes), 'bad pointer');
    h.flags = 1;
    expectErrno('EOPNOTSUPP', () => f.sim.port.ioctl(f.sim.fd, IOMMU_GET_HW_INFO, h.bytes), 'flags');
    h.flags = 0;
    h.bytes[29] = 1;
    expectErrno('EOPNOTSUPP', () => f.sim.port.ioctl(f.sim.fd, IOMMU_GET_HW_INFO, h.bytes), '__reserved');
    h.bytes[29] = 0;
    h.dev_id = ioas;
    expectErrno('ENOENT', () => f.sim.port.ioctl(f.sim.fd, IOMMU_GET_HW_INFO, h.bytes), 'not a device');
    file.unbindDevice(devId);
  });

  it('group ownership: a device bound to one iommufd is EBUSY for another; the pair of group 3 shares one HWPT', function () {
    // Another context of the same kernel: a second open of /dev/iommu.
    const fd2 = f.sim.port.open('/dev/iommu', 2);
    const f2 = f.sim.file(fd2);
    const file = f.sim.file();
    const devId = file.bindDevice(dev);
    expectErrno('EBUSY', () => f2.bindDevice(dev), 'group owned by the first context');
    file.unbindDevice(devId);
    const id2 = f2.bindDevice(dev);
    f2.unbindDevice(id2);
    f.sim.port.close(fd2);
    // Group 3: functions 05.0 and 05.1. One attach sets the group's domain; the sibling must follow it.
    const a = new FakeDevice(f.sim.kernel.topology, 2);
    const b = new FakeDevice(f.sim.kernel.topology, 3);
    const ioas1 = f.sim.ioasAlloc();
    const ioas2 = f.sim.ioasAlloc();
    const ia = file.bindDevice(a);
    const ib = file.bindDevice(b);
    const pt = file.attachDevice(ia, ioas1);
    expect(b.translator, 'the whole group translates').to.not.equal(null);
    expectErrno('EINVAL', () => file.attachDevice(ib, ioas2), 'sibling to another IOAS');
    expect(file.attachDevice(ib, ioas1)).to.equal(pt);
    file.unbindDevice(ia);
    expect(b.translator).to.not.equal(null);
    file.unbindDevice(ib);
    expect(b.translator).to.equal(null);
  });

  it('closing the iommufd while a device is bound keeps everything until the device unbinds', function () {
    const file = f.sim.file();
    const ioas = f.sim.ioasAlloc();
    const devId = file.bindDevice(dev);
    file.attachDevice(devId, ioas);
    f.sim.map(ioas, f.buf, 4n * PAGE, 0x10_0000n);
    f.sim.close();
    expect(f.sim.kernel.mem.pinCount, 'the device still holds the context').to.be.above(0);
    expect(dev.translator!.translate(0x10_0000n, 8, true)).to.equal(f.buf);
    file.unbindDevice(devId);
    expect(f.sim.kernel.mem.pinCount).to.equal(0);
    expect(f.sim.kernel.mem.locked).to.equal(0n);
    // Reopen for afterEach.
    (f.sim as unknown as { fd: number }).fd = f.sim.port.open('/dev/iommu', 2);
  });

  it('release destroys everything: pins and locked memory back to 0, translators cleared', function () {
    const ioas = f.sim.ioasAlloc();
    const m = f.sim.mockDomain(ioas);
    f.sim.map(ioas, f.buf, 16n * PAGE);
    const ioas2 = f.sim.ioasAlloc();
    f.sim.map(ioas2, f.buf, 16n * PAGE, 0x1000n);
    const a = iommu_hwpt_alloc.view().reset();
    a.dev_id = m.idev;
    a.pt_id = ioas2;
    // The mock aperture starts at 16 MiB: the area below it is in the way.
    expectErrno('EADDRINUSE', () => f.sim.port.ioctl(f.sim.fd, IOMMU_HWPT_ALLOC, a.bytes));
    f.sim.unmap(ioas2, 0n, U64_MAX);
    f.sim.map(ioas2, f.buf, 16n * PAGE, MOCK_START);
    f.sim.port.ioctl(f.sim.fd, IOMMU_HWPT_ALLOC, a.bytes);
    expect(f.sim.kernel.mem.pinCount).to.equal(2);
    expect(f.sim.kernel.mem.locked).to.equal(32n * PAGE);
    f.sim.close();
    expect(f.sim.kernel.mem.pinCount).to.equal(0);
    expect(f.sim.kernel.mem.locked).to.equal(0n);
    (f.sim as unknown as { fd: number }).fd = f.sim.port.open('/dev/iommu', 2);
  });
});

describe('sim iommufd: IOMMU with dirty tracking', function () {
  it('a DIRTY_TRACKING HWPT records DMA writes while enabled; the capability is reported', function () {
    const topo = defaultTopology();
    topo.iommu.dirty_tracking = true;
    const sim = new Sim(topo);
    const dev = new FakeDevice(topo);
    const f = sim.file();
    const ioas = sim.ioasAlloc();
    const devId = f.bindDevice(dev);
    const a = iommu_hwpt_alloc.view().reset();
    a.flags = HF.ALLOC_DIRTY_TRACKING;
    a.dev_id = devId;
    a.pt_id = ioas;
    sim.port.ioctl(sim.fd, IOMMU_HWPT_ALLOC, a.bytes);
    expect(f.attachDevice(devId, a.out_hwpt_id)).to.equal(a.out_hwpt_id);
    const h = iommu_hw_info.view().reset();
    h.dev_id = devId;
    sim.port.ioctl(sim.fd, IOMMU_GET_HW_INFO, h.bytes);
    expect(h.out_capabilities).to.equal(1n);
    const buf = sim.memfd(16n * PAGE);
    sim.map(ioas, buf, 16n * PAGE, 0x10_0000n);
    const t = dev.translator!;
    t.translate(0x10_0000n + 5n * PAGE + 8n, 8, true); // before tracking: not recorded
    const s = iommu_hwpt_set_dirty_tracking.view().reset();
    s.hwpt_id = a.out_hwpt_id;
    s.flags = 1;
    sim.port.ioctl(sim.fd, IOMMU_HWPT_SET_DIRTY_TRACKING, s.bytes);
    t.translate(0x10_0000n + PAGE + 8n, 2 * Number(PAGE), true); // pages 1..3
    t.translate(0x10_0000n + 9n * PAGE, 8, false); // reads do not dirty
    const bitmap = sim.scratch();
    const g = iommu_hwpt_get_dirty_bitmap.view().reset();
    g.hwpt_id = a.out_hwpt_id;
    g.iova = 0x10_0000n;
    g.length = 16n * PAGE;
    g.page_size = PAGE;
    g.data = bitmap;
    sim.port.ioctl(sim.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, g.bytes);
    expect(sim.bytes(bitmap, 2)[0]).to.equal(0b1110);
    expect(sim.bytes(bitmap, 2)[1]).to.equal(0);
    sim.unmap(ioas, 0n, U64_MAX);
    f.detachDevice(devId);
    f.unbindDevice(devId);
    sim.close();
    expect(sim.kernel.mem.pinCount).to.equal(0);
  });

  it('runs in the kernel thread too (DEFAULT_DRIVERS): output structs come back over the channel', async function () {
    const k = await SimPort.start();
    try {
      const port = k.port();
      const fd = port.open('/dev/iommu', 2);
      const a = iommu_ioas_alloc.view().reset();
      port.ioctl(fd, IOMMU_IOAS_ALLOC, a.bytes);
      expect(a.out_ioas_id).to.equal(1);
      const r = iommu_ioas_iova_ranges.view().reset();
      r.ioas_id = 1;
      expectErrno('EMSGSIZE', () => port.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, r.bytes));
      expect(r.num_iovas).to.equal(1);
      port.close(fd);
    } finally {
      await k.stop();
    }
  });
});
