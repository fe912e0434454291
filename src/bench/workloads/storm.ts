/**
 * `storm`: transactions of 1-8 regions of 4 KiB, each region mapped by one transaction and
 * unmapped by the next, awaited one by one and pipelined, as a guest driver behind a vIOMMU
 * makes them (with `ram` regions until the engine takes `iommu` regions). Beside the engine:
 * the same sections one ioctl each, in the storm's order.
 */
import { dmaMap, dmaUnmap } from '../../backends/dma.js';
import {
  KiB,
  LINUX_GRID_RAM,
  commitOk,
  gridRam,
  gridSection,
  openRig,
  scaled,
  seconds,
  type Workload,
} from '../rig.js';

/** A small deterministic generator of region counts 1-8: the same storm every round and run. */
export function* regionCounts(txns: number, seed = 0x5eed): Generator<number> {
  let x = seed;
  for (let i = 0; i < txns; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    yield 1 + ((x >>> 16) % 8);
  }
}

/** The storm workload. */
export const storm: Workload = {
  name: 'storm',
  description:
    'transactions of 1-8 regions of 4 KiB (each mapped, then unmapped by a later one), awaited one by one and pipelined, as a guest driver behind a vIOMMU makes them',
  kernels: ['null', 'sim', 'linux'],
  warmup: true,
  steps: () => 2,
  async run(ctx) {
    const txns = scaled(2_000, ctx.scale, 10);
    const sizes = [...regionCounts(txns)];
    const regions = sizes.reduce((a, b) => a + b, 0);
    const size = 4n * KiB;
    const name = `${txns.toLocaleString('en-US')} txns`;
    const ramBytes = gridRam(regions, size, ctx.kernel === 'linux' ? LINUX_GRID_RAM : 1n << 50n);
    const section = (i: number) => gridSection(i, size, ramBytes);
    const rig = await openRig(ctx, ramBytes);
    try {
      await rig.attach();
      const base = { case: name, metric: 'ops/s' as const, n: 2 * regions, backend: 'iommufd' as const };
      // Baseline: the same sections one ioctl each, in the storm's order (map k, unmap the previous k).
      const q = (() => {
        const t0 = process.hrtime.bigint();
        let first = 0;
        let prev = -1;
        let prevCount = 0;
        for (const k of sizes) {
          for (let i = first; i < first + k; i++) {
            const s = section(i);
            dmaMap(rig.port, rig.target, s.iova, size, rig.ram.va + s.offset, false);
          }
          for (let i = prev; prev >= 0 && i < prev + prevCount; i++)
            dmaUnmap(rig.port, rig.target, section(i).iova, size);
          prev = first;
          prevCount = k;
          first += k;
        }
        for (let i = prev; i < prev + prevCount; i++) dmaUnmap(rig.port, rig.target, section(i).iova, size);
        return (2 * regions) / seconds(t0);
      })();
      ctx.record({ ...base, mode: 'qemu', phase: 'awaited', value: q });
      ctx.record({ ...base, mode: 'qemu', phase: 'pipelined', value: q });

      for (const phase of ['awaited', 'pipelined'] as const) {
        ctx.step(`storm ${phase}`);
        const t0 = process.hrtime.bigint();
        const pending: Promise<void>[] = [];
        let first = 0;
        let prev = -1;
        let prevCount = 0;
        for (const k of sizes) {
          rig.space.begin();
          for (let i = prev; prev >= 0 && i < prev + prevCount; i++)
            rig.space.regionDel(rig.region(section(i)));
          for (let i = first; i < first + k; i++) rig.space.regionAdd(rig.region(section(i)));
          if (phase === 'awaited') await commitOk(rig.space);
          else pending.push(commitOk(rig.space));
          prev = first;
          prevCount = k;
          first += k;
        }
        rig.space.begin();
        for (let i = prev; i < prev + prevCount; i++) rig.space.regionDel(rig.region(section(i)));
        pending.push(commitOk(rig.space));
        await Promise.all(pending);
        ctx.record({ ...base, mode: 'engine', phase, value: (2 * regions) / seconds(t0) });
      }
    } finally {
      await rig.close();
    }
  },
};
