// uapi conformance: a real device (edu) behind QEMU 7.2's virtio-iommu, through iommufd
// (its VFIO cdev) and through the legacy type1 container (the other edu): the facts that
// differ from VT-d (uapi-iommufd-vtd, uapi-vfio-type1, which run in the vtd VM).
//   VT-d (QEMU 7.2, aw-bits 39): IOVAs [0, 2^39), 4 KiB pages, MSI window reserved,
//     GET_HW_INFO type INTEL_VTD, every HWPT usable.
//   virtio-iommu: IOVAs [0, 2^64) (the device's input range), 4 KiB pages, the same MSI
//     window (QEMU declares it as a reserved region), GET_HW_INFO type NONE; and a 6.12
//     defect: a virtio-iommu domain gets its geometry only when first attached, so a HWPT
//     added to an IOAS before that (HWPT_ALLOC, or the automatic HWPT of a replace)
//     reserves all of the IOAS but IOVA 0, and no map fits until every HWPT is gone.
// The tests of the first suite run in order on one bound device.
import { expect } from 'chai';
import {
  IOMMU_GET_HW_INFO,
  IOMMU_HW_INFO_TYPE,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_FLAGS,
  IOMMU_HWPT_DIRTY_TRACKING,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FLAGS,
  VFIO_CHECK_EXTENSION,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DMA_MAP_FLAG,
  VFIO_DMA_UNMAP_FLAG,
  VFIO_EXTENSION,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_TYPE1_INFO_CAP,
  VFIO_IOMMU_UNMAP_DMA,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_map,
  vfio_device_attach_iommufd_pt,
  vfio_device_detach_iommufd_pt,
  vfio_info_cap_header,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
  vfio_iommu_type1_info_cap_iova_range,
  vfio_iova_range,
} from '../../src/uapi/index.js';
import { expectErrno, iommufdFixture, MSI_LAST, MSI_START, PAGE, type1Fixture, U64_MAX } from './kit.js';
import { ioctlRecorder } from './recording-port.js';
import { describeKernelOn } from './variant.js';

ioctlRecorder.registerSuite('uapi-iommufd-virtio');

const P = BigInt(PAGE);
const F = IOMMU_IOAS_MAP_FLAGS;
/** The usable IOVA space with a virtio-iommu domain (VT-d: the same, up to 2^39 - 1). */
const VIRTIO_RANGES = [
  { start: 0n, last: MSI_START - 1n },
  { start: MSI_LAST + 1n, last: U64_MAX },
];

describeKernelOn('virtio', 'uapi conformance: iommufd with a VFIO cdev behind virtio-iommu', function () {
  const f = iommufdFixture({ bind: true, buf: 16, scratch: 2 });
  let ioas: number;

  const attach = (ptId: number) => {
    const a = vfio_device_attach_iommufd_pt.view().reset();
    a.pt_id = ptId;
    f.port.ioctl(f.dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, a.bytes);
    return a.pt_id;
  };
  const detach = () =>
    f.port.ioctl(f.dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, vfio_device_detach_iommufd_pt.view().reset().bytes);
  const fixedMap = (iova: bigint, length: bigint, va = f.buf.va) => {
    const m = iommu_ioas_map.view().reset();
    m.ioas_id = ioas;
    m.flags = F.READABLE | F.WRITEABLE | F.FIXED_IOVA;
    m.user_va = va;
    m.length = length;
    m.iova = iova;
    return () => f.port.ioctl(f.fd, IOMMU_IOAS_MAP, m.bytes);
  };
  const hwptReq = (flags: number) => {
    const h = iommu_hwpt_alloc.view().reset();
    h.dev_id = f.devId;
    h.pt_id = ioas;
    h.flags = flags;
    return h;
  };
  const ranges = () => f.iommufd.iovaRanges(ioas, f.scratch);

  it('IOMMU_GET_HW_INFO: type NONE (virtio-iommu has no hw_info), no data, no capabilities; the buffer given is zero-filled', function () {
    const info = iommu_hw_info.view().reset();
    info.dev_id = f.devId;
    info.data_len = 16;
    info.data_uptr = f.scratch.va;
    f.scratch.bytes.fill(0xff, 0, 16);
    f.port.ioctl(f.fd, IOMMU_GET_HW_INFO, info.bytes);
    expect(info.out_data_type).to.equal(IOMMU_HW_INFO_TYPE.NONE);
    expect(info.data_len).to.equal(0);
    expect(info.out_capabilities, 'no DIRTY_TRACKING').to.equal(0n);
    expect(info.out_max_pasid_log2).to.equal(0);
    expect([...f.scratch.bytes.subarray(0, 16)]).to.deep.equal(new Array(16).fill(0));
  });

  it('attached to an IOAS: IOVA_RANGES is all of 64-bit space but the MSI window, 4 KiB aligned (VT-d stops at 2^39); a map above 2^52 fits; unaligned or in the MSI window -> EINVAL; a byte-granular map blocks the attach -> EADDRINUSE', function () {
    ioas = f.iommufd.ioasAlloc();
    f.iommufd.map(ioas, f.buf.va + 0x10n, 0x100n, 0x1_0010n);
    const a = vfio_device_attach_iommufd_pt.view().reset();
    a.pt_id = ioas;
    expectErrno(
      'EADDRINUSE',
      () => f.port.ioctl(f.dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, a.bytes),
      'byte-granular map',
    );
    f.iommufd.unmap(ioas, 0x1_0010n, 0x100n);

    expect(attach(ioas), 'automatic HWPT').to.not.equal(ioas);
    expect(ranges()).to.deep.equal({ ranges: VIRTIO_RANGES, alignment: P });
    fixedMap(1n << 52n, 2n * P)();
    fixedMap(U64_MAX + 1n - P, P)();
    expectErrno('EINVAL', fixedMap(0x10_0800n, P), 'IOVA not 4 KiB aligned');
    expectErrno('EINVAL', fixedMap(MSI_START, P), 'in the MSI window');
    expectErrno('EINVAL', fixedMap(MSI_START - P, 2n * P), 'across its start');
    expect(f.iommufd.unmap(ioas, 1n << 52n, 2n * P)).to.equal(2n * P);
    expect(f.iommufd.unmap(ioas, U64_MAX + 1n - P, P)).to.equal(P);
  });

  it('IOMMU_HWPT_ALLOC: DIRTY_TRACKING, NEST_PARENT and FAULT_ID_VALID -> EOPNOTSUPP (no domain_alloc_user); with a mapping in the IOAS a plain HWPT -> EADDRINUSE: a fresh virtio-iommu domain has an empty aperture', function () {
    const A = IOMMU_HWPT_ALLOC_FLAGS;
    for (const [what, flags] of [
      ['DIRTY_TRACKING', A.ALLOC_DIRTY_TRACKING],
      ['NEST_PARENT', A.ALLOC_NEST_PARENT],
      ['FAULT_ID_VALID', A.FAULT_ID_VALID],
    ] as const) {
      expectErrno('EOPNOTSUPP', () => f.port.ioctl(f.fd, IOMMU_HWPT_ALLOC, hwptReq(flags).bytes), what);
    }
    f.iommufd.map(ioas, f.buf.va, 4n * P, 0x10_0000n);
    expectErrno(
      'EADDRINUSE',
      () => f.port.ioctl(f.fd, IOMMU_HWPT_ALLOC, hwptReq(0).bytes),
      'IOAS with a mapping',
    );
    expect(ranges().ranges, 'nothing left behind').to.deep.equal(VIRTIO_RANGES);
    f.iommufd.unmap(ioas, 0x10_0000n, 4n * P);
  });

  it('6.12: a HWPT allocated on an empty IOAS shrinks its IOVA space to [0, 0] (every map -> EINVAL), attached or not, and so does the automatic HWPT of a replace; only a detach (no HWPT left) frees the IOAS; SET_DIRTY_TRACKING / GET_DIRTY_BITMAP -> EOPNOTSUPP', function () {
    const h = hwptReq(0);
    f.port.ioctl(f.fd, IOMMU_HWPT_ALLOC, h.bytes);
    const hwpt = h.out_hwpt_id;
    const stuck = (when: string) => {
      expect(ranges().ranges, when).to.deep.equal([{ start: 0n, last: 0n }]);
      expectErrno('EINVAL', fixedMap(0x10_0000n, P), `map ${when}`);
    };
    stuck('after HWPT_ALLOC');

    const t = iommu_hwpt_set_dirty_tracking.view().reset();
    t.hwpt_id = hwpt;
    t.flags = IOMMU_HWPT_DIRTY_TRACKING.ENABLE;
    expectErrno(
      'EOPNOTSUPP',
      () => f.port.ioctl(f.fd, IOMMU_HWPT_SET_DIRTY_TRACKING, t.bytes),
      'dirty tracking',
    );
    const g = iommu_hwpt_get_dirty_bitmap.view().reset();
    g.hwpt_id = hwpt;
    g.iova = 0n;
    g.length = P;
    g.page_size = P;
    g.data = f.scratch.va;
    expectErrno('EOPNOTSUPP', () => f.port.ioctl(f.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, g.bytes), 'dirty bitmap');

    expect(attach(hwpt), 'replace onto the allocated HWPT').to.equal(hwpt);
    stuck('with the device on it');
    const auto = attach(ioas);
    expect(auto, 'a new automatic HWPT').to.not.be.oneOf([hwpt, ioas]);
    stuck('after replacing back to the IOAS');
    f.iommufd.destroy(hwpt);
    stuck('with only the automatic HWPT of the replace');

    detach();
    expect(ranges()).to.deep.equal({ ranges: [{ start: 0n, last: U64_MAX }], alignment: 1n });
    attach(ioas); // a first attach: the domain is finalised before it joins the IOAS
    expect(ranges()).to.deep.equal({ ranges: VIRTIO_RANGES, alignment: P });
    fixedMap(0x10_0000n, P)();
    f.iommufd.unmap(ioas, 0x10_0000n, P);
    detach();
    f.iommufd.destroy(ioas);
  });
});

describeKernelOn('virtio', 'uapi conformance: legacy type1 container behind virtio-iommu', function () {
  const f = type1Fixture({ buf: 4, attach: true });

  const mapReq = (iova: bigint, size: bigint) => {
    const m = vfio_iommu_type1_dma_map.view().reset();
    m.flags = VFIO_DMA_MAP_FLAG.READ | VFIO_DMA_MAP_FLAG.WRITE;
    m.vaddr = f.buf.va;
    m.iova = iova;
    m.size = size;
    return () => f.port.ioctl(f.container, VFIO_IOMMU_MAP_DMA, m.bytes);
  };

  it('VFIO_IOMMU_GET_INFO: every page size from 4 KiB up, IOVA ranges all of 64-bit space but the MSI window (VT-d: up to 2^39 - 1); no cache-coherency enforcement (DMA_CC_IOMMU 0)', function () {
    const bytes = new Uint8Array(1024);
    const info = vfio_iommu_type1_info.view(bytes).reset();
    info.argsz = bytes.byteLength;
    f.port.ioctl(f.container, VFIO_IOMMU_GET_INFO, bytes);
    expect(info.flags).to.equal(VFIO_IOMMU_INFO.PGSIZES | VFIO_IOMMU_INFO.CAPS);
    expect(info.iova_pgsizes, 'QEMU virtio-iommu page_size_mask: ~0xfff').to.equal(0xffff_ffff_ffff_f000n);
    const found: { start: bigint; last: bigint }[] = [];
    for (let off = info.cap_offset; off !== 0; off = vfio_info_cap_header.view(bytes, off).next) {
      if (vfio_info_cap_header.view(bytes, off).id !== VFIO_IOMMU_TYPE1_INFO_CAP.CAP_IOVA_RANGE) continue;
      const cap = vfio_iommu_type1_info_cap_iova_range.view(bytes, off);
      for (let i = 0; i < cap.nr_iovas; i++) {
        const at = off + vfio_iommu_type1_info_cap_iova_range.size + i * vfio_iova_range.size;
        const r = vfio_iova_range.view(bytes, at);
        found.push({ start: r.start, last: r.end });
      }
    }
    expect(found).to.deep.equal(VIRTIO_RANGES);
    expect(f.port.ioctl(f.container, VFIO_CHECK_EXTENSION, VFIO_EXTENSION.DMA_CC_IOMMU)).to.equal(0);
  });

  it('VFIO_IOMMU_MAP_DMA: maps at 2^52 and 2^63 (beyond the VT-d aperture, where it is EINVAL); the MSI window -> EINVAL', function () {
    mapReq(1n << 52n, P)();
    mapReq(1n << 63n, 2n * P)();
    expectErrno('EINVAL', mapReq(MSI_START, P), 'MSI window');
    const u = vfio_iommu_type1_dma_unmap.view().reset();
    u.flags = VFIO_DMA_UNMAP_FLAG.ALL;
    f.port.ioctl(f.container, VFIO_IOMMU_UNMAP_DMA, u.bytes);
    expect(u.size, 'both mappings').to.equal(3n * P);
  });
});
