// uapi conformance, part 5: the legacy VFIO interface: a /dev/vfio/vfio container with the
// type1 IOMMU driver (v2), an IOMMU group of one edu device, and that device opened through
// the group. The tests run in order on one container and group. The IOVA space asserted
// is VT-d's (39-bit aperture): this suite runs in the vtd VM; virtio-iommu's type1 facts
// are in uapi-iommufd-virtio.
import { expect } from 'chai';
import { MAP, PROT } from '../../src/uapi/libc.js';
import {
  VFIO_API,
  VFIO_CHECK_EXTENSION,
  VFIO_DEVICE_FLAGS,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_PCI_HOT_RESET,
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
  VFIO_IOMMU_TYPE1_INFO_CAP,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  vfio_bitmap,
  vfio_device_info,
  vfio_group_status,
  vfio_info_cap_header,
  vfio_iommu_type1_dirty_bitmap,
  vfio_iommu_type1_dirty_bitmap_get,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
  vfio_iommu_type1_info_cap_iova_range,
  vfio_iommu_type1_info_cap_migration,
  vfio_iommu_type1_info_dma_avail,
  vfio_iova_range,
  vfio_pci_dependent_device,
  vfio_pci_hot_reset,
  vfio_pci_hot_reset_info,
} from '../../src/uapi/index.js';
import { describeKernelOn } from './variant.js';
import { expectErrno, MSI_LAST, MSI_START, PAGE, type1Fixture } from './kit.js';
import { ioctlRecorder } from './recording-port.js';

ioctlRecorder.registerSuite('uapi-vfio-type1');

const P = BigInt(PAGE);
const RW = VFIO_DMA_MAP_FLAG.READ | VFIO_DMA_MAP_FLAG.WRITE;
/** vfio_iommu_type1 dma_entry_limit default (U16_MAX). */
const DMA_ENTRY_LIMIT = 65535;

/** What VFIO_IOMMU_GET_INFO and its capability chain say. */
interface Type1Info {
  flags: number;
  pgsizes: bigint;
  capIds: number[];
  iovaRanges: { start: bigint; end: bigint }[];
  migration?: { flags: number; pgsizeBitmap: bigint; maxDirtyBitmapSize: bigint; version: number };
  dmaAvail?: number;
}

describeKernelOn('vtd', 'uapi conformance: legacy VFIO container, type1 IOMMU and group', function () {
  const f = type1Fixture({ buf: 32, scratch: 1 });

  const mapReq = (iova: bigint, size: bigint, flags = RW, vaddr = f.buf.va) => {
    const m = vfio_iommu_type1_dma_map.view().reset();
    m.flags = flags;
    m.vaddr = vaddr;
    m.iova = iova;
    m.size = size;
    return () => f.port.ioctl(f.container, VFIO_IOMMU_MAP_DMA, m.bytes);
  };
  const unmap = (iova: bigint, size: bigint, flags = 0) => {
    const u = vfio_iommu_type1_dma_unmap.view().reset();
    u.flags = flags;
    u.iova = iova;
    u.size = size;
    f.port.ioctl(f.container, VFIO_IOMMU_UNMAP_DMA, u.bytes);
    return u.size;
  };
  const unmapCall =
    (iova: bigint, size: bigint, flags = 0) =>
    () =>
      unmap(iova, size, flags);
  const status = () => {
    const s = vfio_group_status.view().reset();
    f.port.ioctl(f.group, VFIO_GROUP_GET_STATUS, s.bytes);
    return s.flags;
  };

  /** VFIO_IOMMU_GET_INFO twice (the first call says how much room the chain needs), chain decoded. */
  function iommuInfo(): Type1Info {
    const first = vfio_iommu_type1_info.view().reset();
    f.port.ioctl(f.container, VFIO_IOMMU_GET_INFO, first.bytes);
    expect(first.flags & VFIO_IOMMU_INFO.CAPS, 'a capability chain exists').to.not.equal(0);
    expect(first.cap_offset, 'no room given: no chain written').to.equal(0);
    expect(first.argsz).to.be.above(vfio_iommu_type1_info.size);
    const bytes = new Uint8Array(first.argsz);
    const info = vfio_iommu_type1_info.view(bytes).reset();
    info.argsz = bytes.byteLength;
    f.port.ioctl(f.container, VFIO_IOMMU_GET_INFO, bytes);
    expect(info.cap_offset).to.equal(vfio_iommu_type1_info.size);
    const out: Type1Info = { flags: info.flags, pgsizes: info.iova_pgsizes, capIds: [], iovaRanges: [] };
    const C = VFIO_IOMMU_TYPE1_INFO_CAP;
    for (let off = info.cap_offset; off !== 0;) {
      const h = vfio_info_cap_header.view(bytes, off);
      out.capIds.push(h.id);
      if (h.id === C.CAP_IOVA_RANGE) {
        const cap = vfio_iommu_type1_info_cap_iova_range.view(bytes, off);
        expect(cap.header_version).to.equal(1);
        for (let i = 0; i < cap.nr_iovas; i++) {
          const r = vfio_iova_range.view(
            bytes,
            off + vfio_iommu_type1_info_cap_iova_range.size + i * vfio_iova_range.size,
          );
          out.iovaRanges.push({ start: r.start, end: r.end });
        }
      } else if (h.id === C.CAP_MIGRATION) {
        const m = vfio_iommu_type1_info_cap_migration.view(bytes, off);
        out.migration = {
          flags: m.flags,
          pgsizeBitmap: m.pgsize_bitmap,
          maxDirtyBitmapSize: m.max_dirty_bitmap_size,
          version: m.header_version,
        };
      } else if (h.id === C.DMA_AVAIL) {
        const d = vfio_iommu_type1_info_dma_avail.view(bytes, off);
        expect(d.header_version).to.equal(1);
        out.dmaAvail = d.avail;
      }
      expect(h.next === 0 || h.next > off, 'the chain moves forward').to.equal(true);
      off = h.next;
    }
    return out;
  }

  it('VFIO_GET_API_VERSION answers VFIO_API_VERSION (0); on a group fd -> ENOTTY', function () {
    expect(f.port.ioctl(f.container, VFIO_GET_API_VERSION)).to.equal(VFIO_API.API_VERSION);
    expectErrno('ENOTTY', () => f.port.ioctl(f.group, VFIO_GET_API_VERSION));
  });

  it('VFIO_CHECK_EXTENSION with no IOMMU set asks every driver: type1, type1v2, nesting, unmap-all = 1; the rest 0; on a group fd -> ENOTTY', function () {
    const E = VFIO_EXTENSION;
    const ext = (e: number) => f.port.ioctl(f.container, VFIO_CHECK_EXTENSION, e);
    expect(ext(E.TYPE1_IOMMU)).to.equal(1);
    expect(ext(E.TYPE1v2_IOMMU)).to.equal(1);
    expect(ext(E.TYPE1_NESTING_IOMMU), 'type1 still answers 1 for the nesting type').to.equal(1);
    expect(ext(E.UNMAP_ALL)).to.equal(1);
    // UPDATE_VADDR and DMA_CC_IOMMU depend on a live IOMMU: 0 until SET_IOMMU.
    expect(ext(E.UPDATE_VADDR)).to.equal(0);
    expect(ext(E.DMA_CC_IOMMU)).to.equal(0);
    expect(ext(E.SPAPR_TCE_IOMMU)).to.equal(0);
    expect(ext(E.NOIOMMU_IOMMU), 'CONFIG_VFIO_NOIOMMU is off').to.equal(0);
    expect(ext(E.EEH)).to.equal(0);
    expect(ext(999), 'unknown extensions are 0, not an error').to.equal(0);
    expectErrno('ENOTTY', () => f.port.ioctl(f.group, VFIO_CHECK_EXTENSION, E.TYPE1v2_IOMMU));
  });

  it('with no group in the container: SET_IOMMU, MAP_DMA (before SET_IOMMU, 4.3) and GET_INFO -> EINVAL (B5 #20)', function () {
    expectErrno(
      'EINVAL',
      () => f.port.ioctl(f.container, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU),
      'SET_IOMMU',
    );
    expectErrno('EINVAL', mapReq(0x10_0000n, P), 'MAP_DMA');
    expectErrno('EINVAL', () =>
      f.port.ioctl(f.container, VFIO_IOMMU_GET_INFO, vfio_iommu_type1_info.view().reset().bytes),
    );
  });

  it('VFIO_GROUP_GET_STATUS: viable, no container; argsz below the minimum -> EINVAL; a group ioctl on /dev/iommu -> ENOTTY (B5 #16)', function () {
    expect(status()).to.equal(VFIO_GROUP_FLAGS.VIABLE);
    const s = vfio_group_status.view().reset();
    s.argsz = 4;
    expectErrno('EINVAL', () => f.port.ioctl(f.group, VFIO_GROUP_GET_STATUS, s.bytes));
    const iommufd = f.res.open('/dev/iommu');
    expectErrno('ENOTTY', () =>
      f.port.ioctl(iommufd, VFIO_GROUP_GET_STATUS, vfio_group_status.view().reset().bytes),
    );
    f.res.close(iommufd);
  });

  it('before SET_CONTAINER: UNSET_CONTAINER -> EINVAL, GET_DEVICE_FD -> EINVAL', function () {
    expectErrno('EINVAL', () => f.port.ioctl(f.group, VFIO_GROUP_UNSET_CONTAINER));
    expectErrno('EINVAL', () => f.port.ioctl(f.group, VFIO_GROUP_GET_DEVICE_FD, f.edu.bdf));
  });

  it('VFIO_GROUP_SET_CONTAINER: fd -1 -> EBADF, a memfd -> EBADFD; joins (VIABLE | CONTAINER_SET); a second SET -> EINVAL (B5 #17)', function () {
    expectErrno('EBADF', () => f.port.ioctl(f.group, VFIO_GROUP_SET_CONTAINER, -1));
    expectErrno('EBADFD', () => f.port.ioctl(f.group, VFIO_GROUP_SET_CONTAINER, f.buf.fd));
    f.port.ioctl(f.group, VFIO_GROUP_SET_CONTAINER, f.container);
    expect(status()).to.equal(VFIO_GROUP_FLAGS.VIABLE | VFIO_GROUP_FLAGS.CONTAINER_SET);
    expectErrno('EINVAL', () => f.port.ioctl(f.group, VFIO_GROUP_SET_CONTAINER, f.container));
  });

  it('VFIO_SET_IOMMU: a type no driver offers (SPAPR TCE) -> ENODEV; TYPE1v2; a second SET_IOMMU -> EINVAL', function () {
    expectErrno('ENODEV', () => f.port.ioctl(f.container, VFIO_SET_IOMMU, VFIO_EXTENSION.SPAPR_TCE_IOMMU));
    expect(f.port.ioctl(f.container, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU)).to.equal(0);
    expectErrno('EINVAL', () => f.port.ioctl(f.container, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU));
    // Now the driver answers for its live IOMMU.
    expect(f.port.ioctl(f.container, VFIO_CHECK_EXTENSION, VFIO_EXTENSION.UPDATE_VADDR)).to.equal(1);
    // No snoop control (ecap.SC = 0 on QEMU's VT-d): the domain cannot enforce cache coherency.
    expect(f.port.ioctl(f.container, VFIO_CHECK_EXTENSION, VFIO_EXTENSION.DMA_CC_IOMMU)).to.equal(0);
  });

  it('VFIO_IOMMU_GET_INFO: argsz below the minimum -> EINVAL; two calls give the capability chain: IOVA ranges without the MSI window, migration (4 KiB pages), DMA_AVAIL 65535', function () {
    const short = vfio_iommu_type1_info.view().reset();
    short.argsz = 8;
    expectErrno('EINVAL', () => f.port.ioctl(f.container, VFIO_IOMMU_GET_INFO, short.bytes));

    const info = iommuInfo();
    expect(info.flags).to.equal(VFIO_IOMMU_INFO.PGSIZES | VFIO_IOMMU_INFO.CAPS);
    expect(info.pgsizes & -info.pgsizes, 'smallest IOMMU page: 4 KiB').to.equal(0x1000n);
    const C = VFIO_IOMMU_TYPE1_INFO_CAP;
    expect([...info.capIds].sort()).to.deep.equal([C.CAP_IOVA_RANGE, C.CAP_MIGRATION, C.DMA_AVAIL]);
    expect(info.iovaRanges[0]!.start).to.equal(0n);
    expect(
      info.iovaRanges.some((r) => r.start <= MSI_LAST && r.end >= MSI_START),
      'MSI window excluded',
    ).to.equal(false);
    expect(info.iovaRanges.some((r) => r.end === MSI_START - 1n)).to.equal(true);
    expect(info.iovaRanges.some((r) => r.start === MSI_LAST + 1n)).to.equal(true);
    // DIRTY_BITMAP_SIZE_MAX: one bit per page for INT_MAX pages.
    expect(info.migration).to.deep.equal({
      flags: 0,
      pgsizeBitmap: 0x1000n,
      maxDirtyBitmapSize: 1n << 28n,
      version: 1,
    });
    expect(info.dmaAvail).to.equal(DMA_ENTRY_LIMIT);
  });

  it('VFIO_IOMMU_MAP_DMA: maps (DMA_AVAIL counts it); any overlap -> EEXIST (B5 #4); unaligned, size 0, no READ|WRITE, unknown flag, wrap, MSI window or beyond the aperture -> EINVAL (B5 #1-3, #14, #15); VADDR of an unknown mapping -> ENOENT; PROT_NONE memory -> EFAULT', function () {
    mapReq(0x10_0000n, 8n * P)();
    expect(iommuInfo().dmaAvail).to.equal(DMA_ENTRY_LIMIT - 1);
    expectErrno('EEXIST', mapReq(0x10_0000n, 8n * P), 'identical');
    expectErrno('EEXIST', mapReq(0x10_7000n, 2n * P), 'over the tail');
    expectErrno('EEXIST', mapReq(0x0f_f000n, 2n * P), 'over the head');
    expectErrno('EEXIST', mapReq(0x10_2000n, P), 'inside');
    expectErrno('EEXIST', mapReq(0x0f_0000n, 0x10_0000n), 'around');
    expectErrno('EINVAL', mapReq(0x20_0800n, P), 'IOVA not page aligned');
    expectErrno('EINVAL', mapReq(0x20_0000n, P, RW, f.buf.va + 0x10n), 'vaddr not page aligned');
    expectErrno('EINVAL', mapReq(0x20_0000n, 0x800n), 'size not page aligned');
    expectErrno('EINVAL', mapReq(0x20_0000n, 0n), 'size 0');
    expectErrno('EINVAL', mapReq(0x20_0000n, P, 0), 'neither READ nor WRITE');
    expectErrno('EINVAL', mapReq(0x20_0000n, P, RW | (1 << 3)), 'unknown flag');
    // 6.12 answers EINVAL here; iommufd answers EOVERFLOW (B5 #3).
    expectErrno('EINVAL', mapReq(0xffff_ffff_ffff_f000n, 2n * P), 'IOVA wraps');
    expectErrno('EINVAL', mapReq(MSI_START, P), 'MSI window');
    expectErrno('EINVAL', mapReq(1n << 52n, P), 'beyond the IOMMU aperture');
    expectErrno('ENOENT', mapReq(0x40_0000n, P, VFIO_DMA_MAP_FLAG.VADDR), 'VADDR update of nothing');
    const none = f.res.mmap(2n * P, PROT.NONE, MAP.PRIVATE | MAP.ANONYMOUS, -1);
    expectErrno('EFAULT', mapReq(0x40_0000n, 2n * P, RW, none), 'PROT_NONE memory');
    expect(iommuInfo().dmaAvail, 'failed maps took no entry').to.equal(DMA_ENTRY_LIMIT - 1);
    expect(unmap(0x10_0000n, 8n * P)).to.equal(8n * P);
  });

  it('VFIO_IOMMU_UNMAP_DMA: nothing mapped -> success with size 0 (B5 #5); a bisected mapping -> EINVAL and nothing unmapped (B5 #6); unaligned, size 0, wrap, ALL with a range, unknown flag -> EINVAL; a superset returns the sum (B5 #7); ALL unmaps everything', function () {
    mapReq(0x10_0000n, 4n * P)();
    mapReq(0x10_4000n, 4n * P, RW, f.buf.va + 4n * P)();
    mapReq(0x20_0000n, 2n * P)();
    expect(unmap(0x30_0000n, P), 'nothing there').to.equal(0n);
    expectErrno('EINVAL', unmapCall(0x10_1000n, P), 'inside a mapping');
    expectErrno('EINVAL', unmapCall(0x10_0000n, 6n * P), 'first whole, second cut');
    expectErrno('EINVAL', unmapCall(0x10_0800n, P), 'IOVA not page aligned');
    expectErrno('EINVAL', unmapCall(0x10_0000n, 0x800n), 'size not page aligned');
    expectErrno('EINVAL', unmapCall(0x10_0000n, 0n), 'size 0');
    expectErrno('EINVAL', unmapCall(0xffff_ffff_ffff_f000n, 2n * P), 'wraps');
    expectErrno('EINVAL', unmapCall(0n, 4n * P, VFIO_DMA_UNMAP_FLAG.ALL), 'ALL with a size');
    expectErrno('EINVAL', unmapCall(0x10_0000n, 4n * P, 1 << 3), 'unknown flag');
    // Unlike iommufd, type1 v2 checks both ends before it unmaps anything: the first
    // mapping survived the failed call above.
    expect(unmap(0x10_0000n, 0x10_0000n), 'both adjacent mappings').to.equal(8n * P);
    expect(unmap(0n, 0n, VFIO_DMA_UNMAP_FLAG.ALL), 'ALL').to.equal(2n * P);
    expect(unmap(0n, 0n, VFIO_DMA_UNMAP_FLAG.ALL), 'ALL of nothing').to.equal(0n);
  });

  it('VFIO_IOMMU_DIRTY_PAGES: START/STOP; GET_BITMAP reports every mapped page dirty (no device can report its writes); bad flag combinations, page size, range or bitmap -> EINVAL; UNMAP_DMA can return the bitmap', function () {
    const DP = VFIO_IOMMU_DIRTY_PAGES_FLAG;
    const control = (flags: number) => {
      const d = vfio_iommu_type1_dirty_bitmap.view().reset();
      d.flags = flags;
      return () => f.port.ioctl(f.container, VFIO_IOMMU_DIRTY_PAGES, d.bytes);
    };
    const bitmapReq = (iova: bigint, size: bigint, pgsize = P, bitmapSize = 8n) => {
      const bytes = new Uint8Array(
        vfio_iommu_type1_dirty_bitmap.size + vfio_iommu_type1_dirty_bitmap_get.size,
      );
      const d = vfio_iommu_type1_dirty_bitmap.view(bytes).reset();
      d.argsz = bytes.byteLength;
      d.flags = DP.GET_BITMAP;
      const g = vfio_iommu_type1_dirty_bitmap_get.view(bytes, vfio_iommu_type1_dirty_bitmap.size);
      g.iova = iova;
      g.size = size;
      g.bitmap_pgsize = pgsize;
      g.bitmap_size = bitmapSize;
      g.bitmap_data = f.scratch.va;
      return () => f.port.ioctl(f.container, VFIO_IOMMU_DIRTY_PAGES, bytes);
    };
    mapReq(0x10_0000n, 16n * P)();
    expectErrno('EINVAL', bitmapReq(0x10_0000n, 16n * P), 'GET_BITMAP while not tracking');
    control(DP.START)();
    control(DP.START)(); // idempotent
    f.scratch.bytes.fill(0, 0, 8);
    bitmapReq(0x10_0000n, 16n * P)();
    // vfio-pci pins nothing itself, so type1 must assume the device wrote every mapped page.
    expect([...f.scratch.bytes.subarray(0, 8)]).to.deep.equal([0xff, 0xff, 0, 0, 0, 0, 0, 0]);
    expectErrno('EINVAL', bitmapReq(0x10_0000n, 16n * P, 2n * P), 'bitmap page size other than the smallest');
    expectErrno('EINVAL', bitmapReq(0x10_1000n, 15n * P), 'range bisects the mapping');
    expectErrno('EINVAL', bitmapReq(0x10_0000n, 16n * P, P, 0n), 'bitmap size 0');
    expectErrno('EINVAL', control(DP.START | DP.STOP), 'two flags');
    expectErrno('EINVAL', control(1 << 3), 'unknown flag');
    expectErrno('EINVAL', control(DP.GET_BITMAP), 'GET_BITMAP without its range');

    // UNMAP_DMA with GET_DIRTY_BITMAP: the unmap struct followed by a vfio_bitmap.
    const bytes = new Uint8Array(vfio_iommu_type1_dma_unmap.size + vfio_bitmap.size);
    const u = vfio_iommu_type1_dma_unmap.view(bytes).reset();
    u.argsz = bytes.byteLength;
    u.flags = VFIO_DMA_UNMAP_FLAG.GET_DIRTY_BITMAP;
    u.iova = 0x10_0000n;
    u.size = 16n * P;
    const b = vfio_bitmap.view(bytes, vfio_iommu_type1_dma_unmap.size);
    b.pgsize = P;
    b.size = 8n;
    b.data = f.scratch.va;
    f.scratch.bytes.fill(0, 0, 8);
    f.port.ioctl(f.container, VFIO_IOMMU_UNMAP_DMA, bytes);
    expect(u.size).to.equal(16n * P);
    expect([...f.scratch.bytes.subarray(0, 2)]).to.deep.equal([0xff, 0xff]);

    control(DP.STOP)();
    mapReq(0x10_0000n, 16n * P)();
    expectErrno('EINVAL', bitmapReq(0x10_0000n, 16n * P), 'GET_BITMAP after STOP');
    expect(unmap(0x10_0000n, 16n * P)).to.equal(16n * P);
  });

  it('VFIO_GROUP_GET_DEVICE_FD: an unknown name -> ENODEV; the BDF gives a device fd; UNSET_CONTAINER while it is open -> EBUSY; hot reset through it names groups: below a root port info gives the group id and the reset takes the group fd (none, too many, or a container fd -> EINVAL); on the root bus both -> ENODEV', function () {
    expectErrno(
      'ENODEV',
      () => f.port.ioctl(f.group, VFIO_GROUP_GET_DEVICE_FD, '0000:00:1f.7'),
      'unknown device',
    );
    expectErrno('ENODEV', () => f.port.ioctl(f.group, VFIO_GROUP_GET_DEVICE_FD, ''), 'empty name');
    const device = f.res.adopt(f.port.ioctl(f.group, VFIO_GROUP_GET_DEVICE_FD, f.edu.bdf));
    expect(device).to.be.above(2);
    const info = vfio_device_info.view().reset();
    f.port.ioctl(device, VFIO_DEVICE_GET_INFO, info.bytes);
    expect(info.flags & VFIO_DEVICE_FLAGS.PCI).to.not.equal(0);
    expectErrno('EBUSY', () => f.port.ioctl(f.group, VFIO_GROUP_UNSET_CONTAINER), 'device still open');

    // Hot reset through a group-opened device: the request names the groups it owns. Below
    // a root port (the VM) the bus reset affects only this edu; the root bus (the simulated
    // kernel's shape, see uapi-vfio-device) has none.
    const belowBridge = parseInt(f.edu.bdf.split(':')[1]!, 16) !== 0;
    const hbuf = new Uint8Array(vfio_pci_hot_reset_info.size + 4 * vfio_pci_dependent_device.size);
    const h = vfio_pci_hot_reset_info.view(hbuf).reset();
    h.argsz = hbuf.byteLength;
    if (belowBridge) {
      f.port.ioctl(device, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, hbuf);
      expect([h.flags, h.count], 'group ids, not devids').to.deep.equal([0, 1]);
      expect(vfio_pci_dependent_device.view(hbuf, vfio_pci_hot_reset_info.size).group_id).to.equal(
        f.edu.group,
      );
    } else {
      expectErrno('ENODEV', () => f.port.ioctl(device, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, hbuf), 'root bus');
    }
    const rbuf = new Uint8Array(vfio_pci_hot_reset.size + 8);
    const r = vfio_pci_hot_reset.view(rbuf).reset();
    expectErrno('EINVAL', () => f.port.ioctl(device, VFIO_DEVICE_PCI_HOT_RESET, rbuf), 'no group fds');
    r.argsz = rbuf.byteLength;
    // group_fds[]: the flexible __s32 array after the struct, which the layout leaves undeclared.
    const fds = new DataView(rbuf.buffer, vfio_pci_hot_reset.size);
    r.count = 1;
    fds.setInt32(0, f.group, true);
    if (belowBridge) {
      expect(f.port.ioctl(device, VFIO_DEVICE_PCI_HOT_RESET, rbuf)).to.equal(0);
      r.count = 2;
      fds.setInt32(4, f.group, true);
      expectErrno(
        'EINVAL',
        () => f.port.ioctl(device, VFIO_DEVICE_PCI_HOT_RESET, rbuf),
        'more fds than devices',
      );
      r.count = 1;
      fds.setInt32(0, f.container, true);
      expectErrno('EINVAL', () => f.port.ioctl(device, VFIO_DEVICE_PCI_HOT_RESET, rbuf), 'a container fd');
    } else {
      expectErrno('ENODEV', () => f.port.ioctl(device, VFIO_DEVICE_PCI_HOT_RESET, rbuf), 'root bus');
    }
    f.res.close(device);
  });

  it('VFIO_GROUP_UNSET_CONTAINER: the last group leaving takes the IOMMU and every mapping with it (B5 #21)', function () {
    mapReq(0x10_0000n, 4n * P)();
    f.port.ioctl(f.group, VFIO_GROUP_UNSET_CONTAINER);
    expect(status()).to.equal(VFIO_GROUP_FLAGS.VIABLE);
    expectErrno('EINVAL', mapReq(0x20_0000n, P), 'MAP_DMA with no IOMMU');
    expectErrno('EINVAL', () =>
      f.port.ioctl(f.container, VFIO_IOMMU_GET_INFO, vfio_iommu_type1_info.view().reset().bytes),
    );
    // Back in, with a fresh IOMMU: the old mapping is gone.
    f.port.ioctl(f.group, VFIO_GROUP_SET_CONTAINER, f.container);
    f.port.ioctl(f.container, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU);
    expect(unmap(0n, 0n, VFIO_DMA_UNMAP_FLAG.ALL)).to.equal(0n);
    expect(iommuInfo().dmaAvail).to.equal(DMA_ENTRY_LIMIT);
    f.port.ioctl(f.group, VFIO_GROUP_UNSET_CONTAINER);
  });
});
