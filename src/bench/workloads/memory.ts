/**
 * `memory`: bytes of the main thread's heap per live mapping at 100,000 and 1,000,000 4 KiB
 * mappings, with one container and with two (null kernel: the engine's own tables).
 */
import { runInNewContext } from 'node:vm';
import v8 from 'node:v8';
import { KiB, commitOk, gridSection, openRig, scaled, type Workload } from '../rig.js';

let gcFn: (() => void) | undefined;
/** global.gc without --expose-gc on the command line. */
function gc(): void {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
}
function heap(): number {
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

const COUNTS = [100_000, 1_000_000];
// At least 10,000 mappings: below that the heap's own noise (a few hundred KB after gc)
// outweighs what is measured. A small --scale then measures one count, once.
const counts = (scale: number) => [...new Set(COUNTS.map((full) => scaled(full, scale, 10_000)))];

/** The memory workload. */
export const memory: Workload = {
  name: 'memory',
  description:
    "bytes of the main thread's heap per live mapping at 100,000 and 1,000,000 4 KiB mappings, one container and two",
  kernels: ['null'],
  warmup: false,
  steps: (scale) => counts(scale).length * 2,
  async run(ctx) {
    const size = 4n * KiB;
    for (const count of counts(ctx.scale)) {
      for (const containers of [1, 2] as const) {
        const name = `${count.toLocaleString('en-US')} mappings, ${containers} container${containers > 1 ? 's' : ''}`;
        ctx.step(`memory ${name}`);
        const ramBytes = 2n * BigInt(count) * size;
        const rig = await openRig(ctx, ramBytes);
        const region = (i: number) => rig.region(gridSection(i, size, ramBytes));
        try {
          await rig.attach();
          if (containers === 2) await rig.attach({ index: 1, iommufd: 'own' });
          rig.space.begin();
          for (let i = 0; i < count; i++) rig.space.regionAdd(region(i));
          await commitOk(rig.space);
          const tables = Object.values(rig.space.mappings());
          if (tables.length !== containers || tables.some((t) => t.length !== count))
            throw new Error(
              `memory: expected ${containers} tables of ${count}, got ${tables.map((t) => t.length).join(', ')}`,
            );
          // Held with the mappings, less held once they are gone: the same engine, the same
          // threads and pools, so garbage of earlier work (another rig's) cannot enter the figure.
          const full = heap();
          rig.space.begin();
          for (let i = 0; i < count; i++) rig.space.regionDel(region(i));
          await commitOk(rig.space);
          ctx.record({
            case: name,
            mode: 'engine',
            phase: 'heap',
            metric: 'B/mapping',
            value: (full - heap()) / count,
            n: count,
            backend: 'iommufd',
          });
        } finally {
          await rig.close();
        }
      }
    }
  },
};
