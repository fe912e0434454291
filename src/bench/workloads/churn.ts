/**
 * `churn`: plug and unplug of 2 MiB blocks of a virtio-mem device's memory, as QEMU's
 * RamDiscardListener maps and unmaps each populated block: transactions of 1-8 neighbouring
 * blocks plugged or unplugged, awaited one by one, over a device half plugged to begin with.
 * Beside the engine: the same block ops one ioctl each, in the same order.
 */
import { floorOpsMode } from '../floor.js';
import {
  GiB,
  LINUX_GRID_RAM,
  MiB,
  commitOk,
  lcg,
  modelRig,
  oneIoctlPerOp,
  openRig,
  scaled,
  seconds,
  sizeName,
  type OpListItem,
  type Section,
  type Workload,
} from '../rig.js';

const BLOCK = 2n * MiB;
/** The device memory region: above the workloads' RAM, where QEMU puts hot-pluggable memory. */
const DEVICE_GPA = 64n * GiB;

/** One transaction of the churn: the blocks it plugs or unplugs. */
export interface ChurnTxn {
  readonly plug: boolean;
  readonly blocks: readonly number[];
}

/** The churn over `blocks` blocks, the first half plugged to begin with: deterministic. */
export function churnPlan(blocks: number, txns: number, seed = 0xc0ffee): ChurnTxn[] {
  const plugged = new Uint8Array(blocks);
  plugged.fill(1, 0, blocks >> 1);
  const next = lcg(seed);
  const out: ChurnTxn[] = [];
  while (out.length < txns) {
    const plug = (next() & 1) === 1;
    const k = 1 + (next() % 8);
    const start = next() % blocks;
    const list: number[] = [];
    for (let b = start; b < Math.min(blocks, start + k); b++) {
      if (plugged[b] === (plug ? 0 : 1)) {
        plugged[b] = plug ? 1 : 0;
        list.push(b);
      }
    }
    if (list.length) out.push({ plug, blocks: list });
  }
  return out;
}

/** The churn workload. */
export const churn: Workload = {
  name: 'churn',
  description:
    'virtio-mem style plug and unplug of 2 MiB blocks, 1-8 neighbouring blocks per transaction, over a device half plugged',
  kernels: ['null', 'sim', 'linux'],
  warmup: true,
  steps: () => 1,
  async run(ctx) {
    const blocks = scaled(512, ctx.scale, 16);
    const plan = churnPlan(blocks, scaled(1_000, ctx.scale, 10));
    const ops = plan.reduce((n, t) => n + t.blocks.length, 0);
    const full = BigInt(blocks) * BLOCK;
    const ramBytes = ctx.kernel === 'linux' && full > LINUX_GRID_RAM ? LINUX_GRID_RAM : full;
    const section = (b: number): Section => ({
      iova: DEVICE_GPA + BigInt(b) * BLOCK,
      size: BLOCK,
      offset: (BigInt(b) * BLOCK) % ramBytes,
    });
    const initial = Array.from({ length: blocks >> 1 }, (_, b) => section(b));
    const name = `${plan.length.toLocaleString('en-US')} txns over ${sizeName(full)}`;
    ctx.step(`churn ${name}`);
    const base = { case: name, metric: 'ops/s' as const, n: ops, backend: 'iommufd' as const };
    // The block ops in the plan's order, from the same starting state (mapped before the
    // clock) to an empty container (the blocks left plugged are unmapped after it).
    const list: OpListItem[] = initial.map((s) => ({ map: s }));
    list.push('start');
    const plugged = new Set(initial.map((_, b) => b));
    for (const t of plan)
      for (const b of t.blocks) {
        list.push(t.plug ? { map: section(b) } : { unmap: section(b) });
        if (t.plug) plugged.add(b);
        else plugged.delete(b);
      }
    list.push('stop');
    for (const b of plugged) list.push({ unmap: section(b) });
    const record = (mode: string) => (t: number) =>
      ctx.record({ ...base, mode, phase: 'plug/unplug', value: ops / t });
    floorOpsMode(ctx, { backend: 'iommufd', ramBytes, backing: 'memfd' }, list, record('floor'));
    const rig = await openRig(ctx, ramBytes);
    try {
      await rig.attach();
      // QEMU's way into the same container, which it leaves empty again.
      record('qemu')(oneIoctlPerOp(rig.port, rig.target, rig.ram.va, list));
      if (ctx.kernel === 'sim') {
        const m = modelRig();
        try {
          record('model')(oneIoctlPerOp(m.port, m.target, rig.ram.va, list));
        } finally {
          m.close();
        }
      }
      rig.space.begin();
      for (const s of initial) rig.space.regionAdd(rig.region(s));
      await commitOk(rig.space);
      const t0 = process.hrtime.bigint();
      for (const t of plan) {
        rig.space.begin();
        for (const b of t.blocks) {
          const r = rig.region(section(b));
          if (t.plug) rig.space.regionAdd(r);
          else rig.space.regionDel(r);
        }
        await commitOk(rig.space);
      }
      ctx.record({ ...base, mode: 'engine', phase: 'plug/unplug', value: ops / seconds(t0) });
    } finally {
      await rig.close();
    }
  },
};
