/**
 * `boot-map`: a q35 guest's memory as the VFIO listener sees it at VM start, mapped in one
 * transaction and unmapped in one: RAM below 4 GiB (with the legacy VGA hole), pc.rom, the
 * isa-bios alias and the BIOS below 4 GiB (read-only), RAM above 4 GiB. On Linux once per
 * backing of the guest RAM: a memfd of 4 KiB pages, THP, and a hugetlb memfd where the
 * machine can reserve the huge pages.
 */
import { floorModes } from '../floor.js';
import {
  KiB,
  MiB,
  addDelModes,
  openRig,
  reserveHugePages,
  sizeName,
  type Backing,
  type Section,
  type Workload,
} from '../rig.js';

const PC_ROM = 128n * KiB;
const BIOS = 256n * KiB;

/**
 * The sections of a q35 guest with `ram` bytes of RAM at reset, as QEMU's pc_q35_init lays it
 * out (lowmem 2 GiB when the RAM reaches 2.75 GiB, else up to 2.75 GiB below 4 GiB), with
 * backing offsets into one block: the RAM at 0, pc.rom at `ram`, the BIOS at `ram` + 1 MiB.
 * Returns the sections and the block's size (the RAM plus 2 MiB, whole huge pages).
 */
export function q35BootSections(ram: bigint): { sections: Section[]; bytes: bigint } {
  const lowmem = ram >= 0xb000_0000n ? 0x8000_0000n : 0xb000_0000n;
  const below = ram < lowmem ? ram : lowmem;
  const romAt = ram;
  const biosAt = ram + MiB;
  const sections: Section[] = [
    { iova: 0n, size: 0xa_0000n, offset: 0n },
    { iova: 0xc_0000n, size: PC_ROM, offset: romAt, readonly: true },
    { iova: 0xe_0000n, size: 128n * KiB, offset: biosAt + BIOS - 128n * KiB, readonly: true },
    { iova: 0x10_0000n, size: below - 0x10_0000n, offset: 0x10_0000n },
    { iova: 0x1_0000_0000n - BIOS, size: BIOS, offset: biosAt, readonly: true },
  ];
  if (ram > below) sections.push({ iova: 0x1_0000_0000n, size: ram - below, offset: below });
  return { sections, bytes: ram + 2n * MiB };
}

const backingsOn = (kernel: string): Backing[] =>
  kernel === 'linux' ? ['memfd', 'thp', 'hugetlb'] : ['memfd'];
const BACKING_NAME: Record<Backing, string> = { memfd: '4 KiB pages', thp: 'THP', hugetlb: 'hugetlb' };

/** The boot-map workload. */
export const bootMap: Workload = {
  name: 'boot-map',
  description:
    "a q35 guest's RAM and ROMs below and above 4 GiB as mapped at VM start, then unmapped; on Linux backed by 4 KiB pages, THP and hugetlb",
  kernels: ['null', 'sim', 'linux'],
  warmup: true,
  steps: (_scale, kernel) => backingsOn(kernel).length,
  async run(ctx) {
    // 4 GiB at scale 1, in whole 2 MiB pages.
    const ram = (BigInt(Math.max(4, Math.round(4096 * ctx.scale))) * MiB) & ~(2n * MiB - 1n);
    const { sections, bytes } = q35BootSections(ram);
    for (const backing of backingsOn(ctx.kernel)) {
      const name = `q35 ${sizeName(ram)}, ${BACKING_NAME[backing]}`;
      ctx.step(`boot-map ${name}`);
      let release = () => {};
      if (backing === 'hugetlb') {
        const r = reserveHugePages(bytes);
        if (typeof r === 'string') {
          ctx.note(`boot-map: no hugetlb case here: ${r}`);
          continue;
        }
        release = r;
      }
      try {
        const base = { case: name, metric: 'ms' as const, n: sections.length, backend: 'iommufd' as const };
        const record = (mode: string, t: { map: number; unmap: number }) => {
          ctx.record({ ...base, mode, phase: 'add', value: t.map * 1000 });
          ctx.record({ ...base, mode, phase: 'del', value: t.unmap * 1000 });
        };
        floorModes(ctx, { backend: 'iommufd', ramBytes: bytes, backing, sections }, record);
        const rig = await openRig(ctx, bytes, backing);
        try {
          await rig.attach();
          await addDelModes(rig, sections, `boot-map ${name}`, record);
        } finally {
          await rig.close();
        }
      } finally {
        release();
      }
    }
  },
};
