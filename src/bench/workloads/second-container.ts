/**
 * `second-container`: a second device joins an address space that already maps N sections,
 * in a second IOAS of the same iommufd object, which the engine fills by IOAS_COPY from the
 * first ('copy'), against a second device on an iommufd object of its own, whose IOAS the
 * engine fills by mapping again from host addresses ('map'). Timed is the replay that fills
 * the new container (the engine's container.replayed event).
 */
import type { EngineEvent } from '../../actors/events.js';
import {
  KiB,
  MiB,
  commitOk,
  expectTables,
  gridRam,
  gridSection,
  openRig,
  scaled,
  shapeName,
  type Workload,
} from '../rig.js';

const SHAPES: readonly { count: number; size: bigint }[] = [
  { count: 16_384, size: 4n * KiB },
  { count: 512, size: 2n * MiB },
];

/** The second-container workload. */
export const secondContainer: Workload = {
  name: 'second-container',
  description:
    'filling a second IOAS for a second device by IOAS_COPY from the first (copy) against mapping again from host addresses (map)',
  kernels: ['null', 'sim', 'linux'],
  warmup: true,
  steps: () => SHAPES.length * 2,
  async run(ctx) {
    for (const shape of SHAPES) {
      const count = scaled(shape.count, ctx.scale);
      const name = shapeName(count, shape.size);
      const ramBytes = gridRam(count, shape.size, ctx.kernel);
      for (const mode of ['map', 'copy'] as const) {
        ctx.step(`second-container ${name} ${mode}`);
        const rig = await openRig(ctx, ramBytes);
        const replays: Extract<EngineEvent, { type: 'container.replayed' }>[] = [];
        const sub = rig.engine.events$.subscribe((e) => {
          if (e.type === 'container.replayed') replays.push(e);
        });
        try {
          const first = await rig.attach(mode === 'copy' ? { iommufd: 'shared' } : {});
          rig.space.begin();
          for (let i = 0; i < count; i++)
            rig.space.regionAdd(rig.region(gridSection(i, shape.size, ramBytes)));
          await commitOk(rig.space);
          if (mode === 'copy') {
            // The first IOAS refuses the second device, as one whose domain cannot take a
            // device behind another IOMMU does: the engine then allocates a second IOAS on the
            // same object and replays the map into it by IOAS_COPY.
            rig.space.containerBackend(first.container)!.attachDevice = () => {
              throw new Error('refused by the benchmark: the second device needs an IOAS of its own');
            };
          }
          // One untimed replay of the same kind first: the rig's warm-up maps, but a copy
          // replay's code in the workers would otherwise run cold, its first time.
          const warm = await rig.attach({ index: 1, iommufd: mode === 'copy' ? 'shared' : 'own' });
          await rig.space.removeDevice(warm.id);
          const second = await rig.attach({ index: 1, iommufd: mode === 'copy' ? 'shared' : 'own' });
          const replay = replays.find((e) => e.container === second.container);
          if (!replay) throw new Error(`second-container ${name} ${mode}: no replay of ${second.container}`);
          const by = mode === 'copy' ? replay.copied : replay.mapped;
          if (by !== count)
            throw new Error(
              `second-container ${name} ${mode}: the replay copied ${replay.copied} and mapped ${replay.mapped}, not ${count} by ${mode}`,
            );
          expectTables(rig, count, `second-container ${name} ${mode}`);
          ctx.record({
            case: name,
            mode,
            phase: 'fill',
            metric: 'ops/s',
            value: count / (replay.ms / 1000),
            n: count,
            backend: 'iommufd',
          });
        } finally {
          sub.unsubscribe();
          await rig.close();
        }
      }
    }
  },
};
