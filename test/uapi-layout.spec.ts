import { expect } from 'chai';
import {
  IOCTLS,
  STRUCTS,
  iommu_hw_info,
  iommu_ioas_map,
  iommu_test_cmd_check_map,
  struct,
  vfio_iommu_type1_dma_map,
} from '../src/uapi/index.js';

describe('uapi layer: layouts and accessors', function () {
  it('reads and writes u64 fields as bigint, little-endian, at the declared offsets', function () {
    const buf = new Uint8Array(40);
    const m = iommu_ioas_map.view(buf).reset();
    expect(m.size).to.equal(40);
    m.iova = 0xffff_ffff_ffff_f000n;
    m.ioas_id = 3;
    const dv = new DataView(buf.buffer);
    expect(dv.getBigUint64(iommu_ioas_map.offsetOf.iova, true)).to.equal(0xffff_ffff_ffff_f000n);
    expect(dv.getUint32(8, true)).to.equal(3);
    expect(m.iova).to.equal(0xffff_ffff_ffff_f000n);
    m.reset();
    expect(m.iova).to.equal(0n);
    expect(m.size).to.equal(40);
  });

  it('sets argsz on VFIO structs and wraps u64 values to 64 bits', function () {
    const d = vfio_iommu_type1_dma_map.view().reset();
    expect(d.argsz).to.equal(32);
    d.size = -1n;
    expect(d.size).to.equal(0xffff_ffff_ffff_ffffn);
  });

  it('lays out arrays and unions, and gives arrays no accessor', function () {
    expect(iommu_hw_info.offsetOf.out_capabilities).to.equal(32);
    expect(Object.keys(iommu_hw_info.view().toObject())).to.not.include('__reserved');
    expect(iommu_test_cmd_check_map.offsetOf.iova).to.equal(16);
    expect(iommu_test_cmd_check_map.size).to.equal(72);
  });

  it('refuses a buffer too small for the struct', function () {
    expect(() => iommu_ioas_map.view(new Uint8Array(39))).to.throw(RangeError, /iommu_ioas_map/);
  });

  it('computes natural alignment and padding like the C compiler', function () {
    const s = struct('layout_test_only', { a: 'u8', b: 'u64', c: 'u16' }, { header: 'selftest' });
    STRUCTS.splice(STRUCTS.indexOf(s), 1); // not a kernel struct: keep it out of the golden probe
    expect([s.offsetOf.a, s.offsetOf.b, s.offsetOf.c, s.size]).to.deep.equal([0, 8, 16, 24]);
  });

  it('declares every ioctl number once per fd kind', function () {
    const seen = new Set<string>();
    for (const io of IOCTLS) {
      const key = `${io.fd}:${io.request}`;
      expect(seen.has(key), `${io.name} duplicates ${key}`).to.equal(false);
      seen.add(key);
    }
  });
});
