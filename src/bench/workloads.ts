/**
 * The benchmark workloads of `vfio-engine bench`, on the engine (createEngine) with the null or
 * the simulated kernel. Each measures the whole engine beside its baselines in the same run:
 * 'qemu' (QEMU's way: one ioctl per section, in order, on the main thread, into the same
 * container the engine uses) and, on the simulated kernel, 'model' (the same ioctls on an
 * in-thread copy of the simulated kernel: the model's own cost, without the channel).
 * A workload reports samples through its context and never judges them (targets.ts does).
 */
import { runInNewContext } from 'node:vm';
import v8 from 'node:v8';
import { createEngine, type Engine } from '../engine.js';
import type { AddressSpace, MemoryRegion } from '../actors/address-space.js';
import { dmaMap, dmaUnmap, type DmaTarget } from '../backends/dma.js';
import { DEFAULT_DRIVERS } from '../kernel/drivers.js';
import { SimKernel } from '../kernel/kernel.js';
import { testVmTopology } from '../kernel/topology.js';
import { LinuxPort } from '../port/linux.js';
import { MAP, MFD, O, PROT, type SyscallPort } from '../port/port.js';
import { SimPort } from '../port/sim.js';
import { IOMMU_IOAS_ALLOC, iommu_ioas_alloc } from '../uapi/iommufd.js';
import type { BenchKernel, BenchSample } from './types.js';

/** What a workload is given: where to run, how big, and where its samples go. */
export interface WorkloadContext {
  readonly kernel: BenchKernel;
  /** DMA worker threads of the engine. */
  readonly workers: number;
  /** Multiplies every count (1 = the documented sizes; CI's smoke run uses a small one). */
  readonly scale: number;
  readonly round: number;
  /** Records one sample (workload, kernel and round are filled in). */
  record(s: Omit<BenchSample, 'workload' | 'kernel' | 'round'>): void;
  /** Progress: one step of the workload is about to run. */
  step(label: string): void;
}

/** One workload of the runner. */
export interface Workload {
  readonly name: string;
  /** One line for --help and the README. */
  readonly description: string;
  /** The kernels it runs on (the runner skips the others, saying so). */
  readonly kernels: readonly BenchKernel[];
  /** Whether an untimed warm-up round comes first (cheap workloads; not the big tables). */
  readonly warmup: boolean;
  /** Progress steps per round, for the bar's total. */
  steps(scale: number): number;
  run(ctx: WorkloadContext): Promise<void>;
}

const KiB = 1n << 10n;
const MiB = 1n << 20n;
const GiB = 1n << 30n;
/** Where the workloads' guest RAM starts: above 4 GiB, clear of the MSI window. */
const BASE = 4n * GiB;

/** `n` scaled, at least `min`. */
export function scaled(n: number, scale: number, min = 1): number {
  return Math.max(min, Math.round(n * scale));
}

/** '16,384 x 4 KiB' */
export function shapeName(count: number, size: bigint): string {
  return `${count.toLocaleString('en-US')} x ${size >= MiB ? `${size / MiB} MiB` : `${size / KiB} KiB`}`;
}

// ---------------------------------------------------------------------------------------------
// The rig: an engine with one or two iommufd containers, and guest RAM

interface Rig {
  readonly engine: Engine;
  readonly space: AddressSpace;
  readonly port: SyscallPort;
  /** The first container's target, for the 'qemu' baseline. */
  readonly target: DmaTarget;
  readonly fd: number;
  readonly va: bigint;
  readonly bytes: bigint;
  close(): Promise<void>;
}

async function openRig(ctx: WorkloadContext, ramBytes: bigint, containers: 1 | 2 = 1): Promise<Rig> {
  if (ctx.kernel === 'linux')
    throw new Error('the engine workloads run on the null and simulated kernels here');
  const failures: string[] = [];
  const engine = await createEngine({
    kernel: ctx.kernel,
    topology: testVmTopology(),
    workers: ctx.workers,
    inspect: (e) => {
      if (e.type === 'txn.failed' || e.type === 'container.failed')
        failures.push(`${e.type}: ${e.error.message}`);
    },
  });
  const port = engine.port;
  const fd = port.memfdCreate('vfio-engine-bench', MFD.CLOEXEC);
  port.ftruncate(fd, ramBytes); // sparse: nothing here touches the pages
  const va = port.mmap(ramBytes, PROT.READ | PROT.WRITE, MAP.SHARED, fd);
  const space = engine.createAddressSpace('bench');
  const first = await space.addDevice({ host: '0000:01:00.0', iommufd: 'on' });
  if (containers === 2)
    await space.addDevice({ host: '0000:02:00.0', iommufd: engine.createIommufd('second') });
  const target = space.containerBackend(first.container)!.dataplaneTarget();
  return {
    engine,
    space,
    port,
    target,
    fd,
    va,
    bytes: ramBytes,
    async close() {
      port.munmap(va, ramBytes); // before shutdown: it stops the simulated kernel
      port.close(fd);
      await engine.shutdown();
      if (failures.length) throw new Error(`the engine failed during the workload: ${failures.join('; ')}`);
    },
  };
}

/** Region i of `size` bytes at IOVA BASE + i * size, backed at offset 2 i * size: never contiguous with its neighbours. */
function region(rig: Rig, i: number, size: bigint): MemoryRegion {
  const offset = 2n * BigInt(i) * size;
  return { gpa: BASE + BigInt(i) * size, size, backing: { fd: rig.fd, offset, vaddr: rig.va + offset } };
}

async function commitOk(space: AddressSpace): Promise<void> {
  const r = await space.commit();
  if (!r.ok) throw r.error ?? new Error(`${r.txn} failed`);
}

const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

// The 'model' baseline: the same ioctls on an in-thread simulated kernel (no channel).
function modelRig(): { port: SyscallPort; target: DmaTarget; close(): void } {
  const kernel = new SimKernel(testVmTopology(), new LinuxPort(), DEFAULT_DRIVERS);
  const port = SimPort.direct(kernel);
  const iommufd = port.open('/dev/iommu', O.RDWR | O.CLOEXEC);
  const a = iommu_ioas_alloc.view().reset();
  port.ioctl(iommufd, IOMMU_IOAS_ALLOC, a.bytes);
  return {
    port,
    target: { kind: 'iommufd', iommufd, ioasId: a.out_ioas_id },
    close: () => port.close(iommufd),
  };
}

// One ioctl per section, in order: maps then unmaps; ops/s of each.
function oneIoctlEach(
  port: SyscallPort,
  target: DmaTarget,
  count: number,
  at: (i: number) => { iova: bigint; size: bigint; vaddr: bigint },
): { add: number; del: number } {
  let t0 = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    const s = at(i);
    dmaMap(port, target, s.iova, s.size, s.vaddr, false);
  }
  const add = count / seconds(t0);
  t0 = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    const s = at(i);
    dmaUnmap(port, target, s.iova, s.size);
  }
  return { add, del: count / seconds(t0) };
}

// ---------------------------------------------------------------------------------------------
// bulk

const BULK_SHAPES: readonly { count: number; size: bigint }[] = [
  { count: 16_384, size: 4n * KiB },
  { count: 512, size: 2n * MiB },
];

const bulk: Workload = {
  name: 'bulk',
  description:
    'one transaction of N adds, then one of N dels: 4 KiB and 2 MiB sections, backing not contiguous between neighbours',
  kernels: ['null', 'sim'],
  warmup: true,
  steps: () => BULK_SHAPES.length,
  async run(ctx) {
    for (const shape of BULK_SHAPES) {
      const count = scaled(shape.count, ctx.scale);
      const name = shapeName(count, shape.size);
      ctx.step(`bulk ${name}`);
      const rig = await openRig(ctx, 2n * BigInt(count) * shape.size);
      try {
        const at = (i: number) => {
          const r = region(rig, i, shape.size);
          return { iova: r.gpa, size: r.size, vaddr: r.backing.vaddr };
        };
        // QEMU's way first, into the same container, which it leaves empty again.
        const q = oneIoctlEach(rig.port, rig.target, count, at);
        const base = { case: name, metric: 'ops/s' as const, n: count, backend: 'iommufd' as const };
        ctx.record({ ...base, mode: 'qemu', phase: 'add', value: q.add });
        ctx.record({ ...base, mode: 'qemu', phase: 'del', value: q.del });
        if (ctx.kernel === 'sim') {
          const m = modelRig();
          try {
            const r = oneIoctlEach(m.port, m.target, count, at);
            ctx.record({ ...base, mode: 'model', phase: 'add', value: r.add });
            ctx.record({ ...base, mode: 'model', phase: 'del', value: r.del });
          } finally {
            m.close();
          }
        }
        let t0 = process.hrtime.bigint();
        rig.space.begin();
        for (let i = 0; i < count; i++) rig.space.regionAdd(region(rig, i, shape.size));
        await commitOk(rig.space);
        ctx.record({ ...base, mode: 'engine', phase: 'add', value: count / seconds(t0) });
        t0 = process.hrtime.bigint();
        rig.space.begin();
        for (let i = 0; i < count; i++) rig.space.regionDel(region(rig, i, shape.size));
        await commitOk(rig.space);
        ctx.record({ ...base, mode: 'engine', phase: 'del', value: count / seconds(t0) });
      } finally {
        await rig.close();
      }
    }
  },
};

// ---------------------------------------------------------------------------------------------
// storm

// A small deterministic generator: the same storm every round and every run.
function* regionCounts(txns: number, seed = 0x5eed): Generator<number> {
  let x = seed;
  for (let i = 0; i < txns; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    yield 1 + ((x >>> 16) % 8);
  }
}

const storm: Workload = {
  name: 'storm',
  description:
    'transactions of 1-8 regions of 4 KiB (each mapped, then unmapped by a later one), awaited one by one and pipelined, as a guest driver behind a vIOMMU makes them',
  kernels: ['null', 'sim'],
  warmup: true,
  steps: () => 2,
  async run(ctx) {
    const txns = scaled(2_000, ctx.scale, 10);
    const sizes = [...regionCounts(txns)];
    const regions = sizes.reduce((a, b) => a + b, 0);
    const size = 4n * KiB;
    const name = `${txns.toLocaleString('en-US')} txns`;
    const rig = await openRig(ctx, 2n * BigInt(regions) * size);
    try {
      const base = { case: name, metric: 'ops/s' as const, n: 2 * regions, backend: 'iommufd' as const };
      // Baseline: the same sections one ioctl each, in the storm's order (map k, unmap the previous k).
      const q = (() => {
        const t0 = process.hrtime.bigint();
        let first = 0;
        let prev = -1;
        let prevCount = 0;
        for (const k of sizes) {
          for (let i = first; i < first + k; i++) {
            const r = region(rig, i, size);
            dmaMap(rig.port, rig.target, r.gpa, size, r.backing.vaddr, false);
          }
          for (let i = prev; prev >= 0 && i < prev + prevCount; i++)
            dmaUnmap(rig.port, rig.target, region(rig, i, size).gpa, size);
          prev = first;
          prevCount = k;
          first += k;
        }
        for (let i = prev; i < prev + prevCount; i++)
          dmaUnmap(rig.port, rig.target, region(rig, i, size).gpa, size);
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
            rig.space.regionDel(region(rig, i, size));
          for (let i = first; i < first + k; i++) rig.space.regionAdd(region(rig, i, size));
          if (phase === 'awaited') await commitOk(rig.space);
          else pending.push(commitOk(rig.space));
          prev = first;
          prevCount = k;
          first += k;
        }
        rig.space.begin();
        for (let i = prev; i < prev + prevCount; i++) rig.space.regionDel(region(rig, i, size));
        pending.push(commitOk(rig.space));
        await Promise.all(pending);
        ctx.record({ ...base, mode: 'engine', phase, value: (2 * regions) / seconds(t0) });
      }
    } finally {
      await rig.close();
    }
  },
};

// ---------------------------------------------------------------------------------------------
// scale

const SCALE_LIVE = [1_000, 100_000, 1_000_000];
const SCALE_TXNS = 20;

const scale: Workload = {
  name: 'scale',
  description:
    'a 1 add + 1 del transaction with 1,000, 100,000 and 1,000,000 live 4 KiB mappings (iommufd): how the cost grows with the table',
  kernels: ['null', 'sim'],
  warmup: false,
  steps: () => SCALE_LIVE.length,
  async run(ctx) {
    const size = 4n * KiB;
    for (const full of SCALE_LIVE) {
      const live = scaled(full, ctx.scale, 10);
      const name = `${live.toLocaleString('en-US')} live`;
      ctx.step(`scale ${name}`);
      const rig = await openRig(ctx, 2n * BigInt(live + SCALE_TXNS + 1) * size);
      try {
        rig.space.begin();
        for (let i = 0; i < live; i++) rig.space.regionAdd(region(rig, i, size));
        await commitOk(rig.space);
        // Each transaction adds the next region and removes the oldest: the table stays at `live`.
        const t0 = process.hrtime.bigint();
        for (let t = 0; t < SCALE_TXNS; t++) {
          rig.space.begin();
          rig.space.regionAdd(region(rig, live + t, size));
          rig.space.regionDel(region(rig, t, size));
          await commitOk(rig.space);
        }
        const ms = (seconds(t0) * 1000) / SCALE_TXNS;
        ctx.record({
          case: name,
          mode: 'engine',
          phase: 'txn',
          metric: 'ms',
          value: ms,
          n: SCALE_TXNS,
          backend: 'iommufd',
        });
      } finally {
        await rig.close();
      }
    }
  },
};

// ---------------------------------------------------------------------------------------------
// memory

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

const MEMORY_COUNTS = [100_000, 1_000_000];

const memory: Workload = {
  name: 'memory',
  description:
    "bytes of the main thread's heap per live mapping at 100,000 and 1,000,000 4 KiB mappings, one container and two",
  kernels: ['null'],
  warmup: false,
  steps: (scale) => new Set(MEMORY_COUNTS.map((full) => scaled(full, scale, 10_000))).size * 2,
  async run(ctx) {
    const size = 4n * KiB;
    // At least 10,000 mappings: below that the heap's own noise (a few hundred KB after gc)
    // outweighs what is measured. A small --scale then measures one count, once.
    for (const count of new Set(MEMORY_COUNTS.map((full) => scaled(full, ctx.scale, 10_000)))) {
      for (const containers of [1, 2] as const) {
        const name = `${count.toLocaleString('en-US')} mappings, ${containers} container${containers > 1 ? 's' : ''}`;
        ctx.step(`memory ${name}`);
        const rig = await openRig(ctx, 2n * BigInt(count) * size, containers);
        try {
          rig.space.begin();
          for (let i = 0; i < count; i++) rig.space.regionAdd(region(rig, i, size));
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
          for (let i = 0; i < count; i++) rig.space.regionDel(region(rig, i, size));
          await commitOk(rig.space);
          const bytes = (full - heap()) / count;
          ctx.record({
            case: name,
            mode: 'engine',
            phase: 'heap',
            metric: 'B/mapping',
            value: bytes,
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

/** Every workload, in the order the runner takes them. */
export const WORKLOADS: readonly Workload[] = [bulk, storm, scale, memory];
