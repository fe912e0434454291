/**
 * `storm`: transactions of 1-8 regions of 4 KiB, each region mapped by one transaction and
 * unmapped by the next, awaited one by one and pipelined, as a guest driver behind a vIOMMU
 * makes them (with `ram` regions until the engine takes `iommu` regions). Beside the engine:
 * the same sections one ioctl each, in the storm's order.
 */
import { floorOpsMode } from '../floor.js';
import {
  KiB,
  commitOk,
  gridRam,
  gridSection,
  lcg,
  oneIoctlPerOp,
  openRig,
  scaled,
  seconds,
  type OpListItem,
  type Workload,
} from '../rig.js';

/** A small deterministic generator of region counts 1-8: the same storm every round and run. */
export function* regionCounts(txns: number, seed = 0x5eed): Generator<number> {
  const next = lcg(seed);
  for (let i = 0; i < txns; i++) yield 1 + (next() % 8);
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
    const ramBytes = gridRam(regions, size, ctx.kernel);
    const section = (i: number) => gridSection(i, size, ramBytes);
    // The storm's ops in order (map k, unmap the previous k): the baselines issue them one each.
    const ops: OpListItem[] = [];
    for (let first = 0, prev = -1, prevCount = 0, t = 0; t <= sizes.length; t++) {
      const k = sizes[t] ?? 0;
      for (let i = first; i < first + k; i++) ops.push({ map: section(i) });
      for (let i = prev; prev >= 0 && i < prev + prevCount; i++) ops.push({ unmap: section(i) });
      [prev, prevCount, first] = [first, k, first + k];
    }
    const base = { case: name, metric: 'ops/s' as const, n: 2 * regions, backend: 'iommufd' as const };
    floorOpsMode(ctx, { backend: 'iommufd', ramBytes, backing: 'memfd' }, ops, (t) => {
      for (const phase of ['awaited', 'pipelined'])
        ctx.record({ ...base, mode: 'floor', phase, value: (2 * regions) / t });
    });
    const rig = await openRig(ctx, ramBytes);
    try {
      await rig.attach();
      const q = (2 * regions) / oneIoctlPerOp(rig.port, rig.target, rig.ram.va, ops);
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
