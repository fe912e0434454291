/**
 * `bulk`: one transaction of N adds, then one of N dels, of 4 KiB and of 2 MiB sections whose
 * backing is not contiguous between neighbours (so nothing merges them). Beside the engine:
 * QEMU's way (one ioctl per section from JS, into the same container), the simulated kernel's
 * own cost ('model'), and on Linux the C floor on one thread and on N, for both backends.
 */
import { floorModes } from '../floor.js';
import {
  KiB,
  MiB,
  gridRam,
  gridSection,
  addDelModes,
  openRig,
  scaled,
  shapeName,
  type BenchBackend,
  type Workload,
} from '../rig.js';
import type { BenchKernel } from '../types.js';

const SHAPES: readonly { count: number; size: bigint }[] = [
  { count: 16_384, size: 4n * KiB },
  { count: 512, size: 2n * MiB },
];

// type1 beside iommufd where the floor can tell what each costs; the engine's own cost and
// the simulated kernel are measured on iommufd.
const backendsOn = (kernel: BenchKernel): BenchBackend[] =>
  kernel === 'linux' ? ['iommufd', 'legacy'] : ['iommufd'];

/** The bulk workload. */
export const bulk: Workload = {
  name: 'bulk',
  description:
    'one transaction of N adds, then one of N dels: 4 KiB and 2 MiB sections, backing not contiguous between neighbours',
  kernels: ['null', 'sim', 'linux'],
  warmup: true,
  steps: (_scale, kernel) => SHAPES.length * backendsOn(kernel).length,
  async run(ctx) {
    for (const shape of SHAPES) {
      for (const backend of backendsOn(ctx.kernel)) {
        const count = scaled(shape.count, ctx.scale);
        const name = shapeName(count, shape.size);
        ctx.step(`bulk ${name} ${backend}`);
        const ramBytes = gridRam(count, shape.size, ctx.kernel);
        const sections = Array.from({ length: count }, (_, i) => gridSection(i, shape.size, ramBytes));
        const base = { case: name, metric: 'ops/s' as const, n: count, backend };
        const record = (mode: string, t: { map: number; unmap: number }) => {
          ctx.record({ ...base, mode, phase: 'add', value: count / t.map });
          ctx.record({ ...base, mode, phase: 'del', value: count / t.unmap });
        };
        floorModes(ctx, { backend, ramBytes, backing: 'memfd', sections }, record);
        const rig = await openRig(ctx, ramBytes);
        try {
          await rig.attach({ backend });
          await addDelModes(rig, sections, `bulk ${name} ${backend}`, record);
        } finally {
          await rig.close();
        }
      }
    }
  },
};
