/**
 * `scale`: a transaction of 1 add + 1 del with 1,000, 100,000 and 1,000,000 live 4 KiB
 * mappings in an iommufd container (type1 stops at 65,535): how a transaction's cost grows
 * with the table.
 */
import { KiB, commitOk, gridRam, gridSection, openRig, scaled, seconds, type Workload } from '../rig.js';

const LIVE = [1_000, 100_000, 1_000_000];
const TXNS = 20;

/** The scale workload. */
export const scale: Workload = {
  name: 'scale',
  description:
    'a 1 add + 1 del transaction with 1,000, 100,000 and 1,000,000 live 4 KiB mappings (iommufd): how the cost grows with the table',
  kernels: ['null', 'sim', 'linux'],
  warmup: false,
  steps: () => LIVE.length,
  async run(ctx) {
    const size = 4n * KiB;
    for (const full of LIVE) {
      const live = scaled(full, ctx.scale, 10);
      const name = `${live.toLocaleString('en-US')} live`;
      ctx.step(`scale ${name}`);
      const ramBytes = gridRam(live + TXNS + 1, size, ctx.kernel);
      const region = (i: number) => rig.region(gridSection(i, size, ramBytes));
      const rig = await openRig(ctx, ramBytes);
      try {
        await rig.attach();
        rig.space.begin();
        for (let i = 0; i < live; i++) rig.space.regionAdd(region(i));
        await commitOk(rig.space);
        // Each transaction adds the next region and removes the oldest: the table stays at `live`.
        const t0 = process.hrtime.bigint();
        for (let t = 0; t < TXNS; t++) {
          rig.space.begin();
          rig.space.regionAdd(region(live + t));
          rig.space.regionDel(region(t));
          await commitOk(rig.space);
        }
        ctx.record({
          case: name,
          mode: 'engine',
          phase: 'txn',
          metric: 'ms',
          value: (seconds(t0) * 1000) / TXNS,
          n: TXNS,
          backend: 'iommufd',
        });
      } finally {
        await rig.close();
      }
    }
  },
};
