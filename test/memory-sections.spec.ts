import { expect } from 'chai';
import { sectionToMapping, type MemoryRegionSection, type SectionDecision } from '../src/memory/sections.js';

const P = 0x1000n;
const VA = 0x7f00_0000_0000n;
const sec = (o: Partial<MemoryRegionSection> & { gpa: bigint; size: bigint }): MemoryRegionSection => ({
  kind: 'ram',
  readonly: false,
  backing: { vaddr: VA + (o.gpa & (P - 1n)) },
  ...o,
});

describe('memory/sections: QEMU listener section rules', function () {
  const cases: {
    name: string;
    s: MemoryRegionSection;
    limits?: Parameters<typeof sectionToMapping>[2];
    want: SectionDecision | string;
  }[] = [
    {
      name: 'aligned RAM maps as is',
      s: sec({ gpa: 0x10_0000n, size: 0x20_0000n }),
      want: {
        action: 'map',
        mapping: { iova: 0x10_0000n, size: 0x20_0000n, vaddr: VA, readonly: false },
        nonFatal: false,
      },
    },
    {
      name: 'start aligned up, end aligned down, vaddr follows',
      s: sec({ gpa: 0x1800n, size: 0x3000n, backing: { vaddr: VA + 0x800n } }),
      want: {
        action: 'map',
        mapping: { iova: 0x2000n, size: 0x2000n, vaddr: VA + 0x1000n, readonly: false },
        nonFatal: false,
      },
    },
    {
      name: 'sub-page section is empty after alignment',
      s: sec({ gpa: 0x1800n, size: 0x600n, backing: { vaddr: VA + 0x800n } }),
      want: 'skip:empty-after-align',
    },
    { name: 'MMIO is skipped', s: sec({ gpa: 0n, size: P, kind: 'mmio' }), want: 'skip:not-ram' },
    {
      name: 'IOMMU regions are handled elsewhere',
      s: sec({ gpa: 0n, size: P, kind: 'iommu' }),
      want: 'skip:iommu',
    },
    {
      name: 'bit 63: spurious 64-bit BAR sizing',
      s: sec({ gpa: 0x8000_0000_0000_0000n, size: P }),
      want: 'skip:bar-sizing',
    },
    {
      name: 'bit 63 skips a RAM device too',
      s: sec({ gpa: 0xffff_ffff_0000_0000n, size: P, kind: 'ram_device' }),
      want: 'skip:bar-sizing',
    },
    {
      name: 'iova and vaddr page offsets differ: rejected',
      s: sec({ gpa: 0x1000n, size: 0x2000n, backing: { vaddr: VA + 0x200n } }),
      want: 'reject:misaligned-offset',
    },
    {
      name: 'ROM is mapped readonly',
      s: sec({ gpa: 0xf_0000n, size: 0x1_0000n, kind: 'rom' }),
      want: {
        action: 'map',
        mapping: { iova: 0xf_0000n, size: 0x1_0000n, vaddr: VA, readonly: true },
        nonFatal: false,
      },
    },
    {
      name: 'readonly RAM section stays readonly',
      s: sec({ gpa: 0n, size: P, readonly: true }),
      want: { action: 'map', mapping: { iova: 0n, size: P, vaddr: VA, readonly: true }, nonFatal: false },
    },
    {
      name: 'RAM device aligned to the IOMMU page maps, non-fatal',
      s: sec({
        gpa: 0x1_0000n,
        size: 0x1_0000n,
        kind: 'ram_device',
        backing: { fd: 9, offset: 0n, vaddr: VA },
      }),
      limits: { minIommuPageSize: 0x1_0000n },
      want: {
        action: 'map',
        mapping: { iova: 0x1_0000n, size: 0x1_0000n, vaddr: VA, readonly: false },
        nonFatal: true,
      },
    },
    {
      name: 'RAM device not aligned to the IOMMU page is skipped',
      s: sec({ gpa: 0x1_1000n, size: 0x1_0000n, kind: 'ram_device', backing: { vaddr: VA } }),
      limits: { minIommuPageSize: 0x1_0000n },
      want: 'skip:ram-device-unaligned',
    },
    {
      name: 'RAM device with a size not a multiple of the IOMMU page is skipped',
      s: sec({ gpa: 0x1_0000n, size: 0x1000n, kind: 'ram_device' }),
      limits: { minIommuPageSize: 0x1_0000n },
      want: 'skip:ram-device-unaligned',
    },
    {
      name: 'inside the container IOVA ranges',
      s: sec({ gpa: 0x1000n, size: 0x1000n }),
      limits: { iovaRanges: [{ start: 0n, last: 0xfedf_ffffn }] },
      want: {
        action: 'map',
        mapping: { iova: 0x1000n, size: 0x1000n, vaddr: VA, readonly: false },
        nonFatal: false,
      },
    },
    {
      name: 'crossing into the MSI hole: outside the IOVA ranges',
      s: sec({ gpa: 0xfedf_f000n, size: 0x2000n }),
      limits: {
        iovaRanges: [
          { start: 0n, last: 0xfedf_ffffn },
          { start: 0xfef0_0000n, last: (1n << 48n) - 1n },
        ],
      },
      want: 'reject:outside-iova-ranges',
    },
    {
      name: 'a section ending at 2^63 trims without overflow',
      s: sec({ gpa: 0x7fff_ffff_ffff_f000n, size: 0x1000n }),
      want: {
        action: 'map',
        mapping: { iova: 0x7fff_ffff_ffff_f000n, size: 0x1000n, vaddr: VA, readonly: false },
        nonFatal: false,
      },
    },
  ];
  for (const c of cases) {
    it(c.name, function () {
      const d = sectionToMapping(c.s, P, c.limits);
      if (typeof c.want === 'string') {
        const [action, reason] = c.want.split(':');
        expect(d.action).to.equal(action);
        expect((d as { reason: string }).reason).to.equal(reason);
        if (d.action === 'reject') expect(d.message).to.match(/0x/);
      } else expect(d).to.deep.equal(c.want);
    });
  }

  it('uses the host page size given (64K pages)', function () {
    const d = sectionToMapping(
      sec({ gpa: 0x1000n, size: 0x3_0000n, backing: { vaddr: VA + 0x1000n } }),
      0x1_0000n,
    );
    expect(d).to.deep.equal({
      action: 'map',
      mapping: { iova: 0x1_0000n, size: 0x2_0000n, vaddr: VA + 0x1_0000n, readonly: false },
      nonFatal: false,
    });
  });
});
