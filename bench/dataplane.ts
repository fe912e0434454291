/**
 * Data-plane benchmark, on the simulated kernel (engine overhead, not kernel cost): mapping
 * and unmapping N sections, measured side by side in one run:
 *
 *   qemu      QEMU's way: one ioctl per section, in order, on the main thread (dma.ts calls)
 *   inline    the engine's batch executor on the main thread (typed-array batch + SAB journal)
 *   workers   the engine's DmaPool: the batch split into disjoint lanes on 2 piscina workers
 *
 * Reported as ratios to `qemu` (higher is faster). The simulated kernel serves one call at a
 * time, like a kernel lock per IOAS, so this measures what the engine adds or saves around
 * the ioctls; it says nothing about pinning cost, which only the real kernel has.
 *
 *   npm run bench            (N = 20000; BENCH_N=… to change)
 */
import { SimPort } from '../src/port/sim.js';
import { MAP, MFD, O, PROT, type SyscallPort } from '../src/port/port.js';
import { dmaMap, dmaUnmap, type DmaTarget } from '../src/backends/dma.js';
import { DmaPool } from '../src/workers/pool.js';
import type { BatchOp } from '../src/workers/batch.js';
import {
  IOMMU_IOAS_ALLOC,
  VFIO_EXTENSION,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_SET_IOMMU,
  iommu_ioas_alloc,
} from '../src/uapi/index.js';

const N = Number(process.env.BENCH_N ?? 20_000);
const SEC = 0x20_0000n; // 2 MiB sections, as hugepage-backed guest RAM or virtio-mem blocks give
const BASE = 0x1_0000_0000n;

interface Row {
  target: string;
  mode: string;
  mapPerSec: number;
  unmapPerSec: number;
}

function ops(kind: 'map' | 'unmap', va: bigint, from: number, to: number): BatchOp[] {
  const out: BatchOp[] = [];
  for (let i = from; i < to; i++) {
    const off = BigInt(i) * SEC;
    out.push(
      kind === 'map'
        ? { op: 'map', iova: BASE + off, size: SEC, vaddr: va + off }
        : { op: 'unmap', iova: BASE + off, size: SEC },
    );
  }
  return out;
}

async function measure(f: () => Promise<void> | void): Promise<number> {
  const t0 = process.hrtime.bigint();
  await f();
  return N / (Number(process.hrtime.bigint() - t0) / 1e9);
}

async function benchTarget(
  name: string,
  port: SyscallPort,
  pool: DmaPool,
  t: DmaTarget,
  va: bigint,
): Promise<Row[]> {
  const rows: Row[] = [];
  const check = (results: { status: string }[]) => {
    const bad = results.filter((r) => r.status !== 'done').length;
    if (bad) throw new Error(`${name}: ${bad} ops did not complete`);
  };
  // qemu: one ioctl per section
  const m1 = await measure(() => {
    for (let i = 0; i < N; i++) dmaMap(port, t, BASE + BigInt(i) * SEC, SEC, va + BigInt(i) * SEC, false);
  });
  const u1 = await measure(() => {
    for (let i = 0; i < N; i++) dmaUnmap(port, t, BASE + BigInt(i) * SEC, SEC);
  });
  rows.push({ target: name, mode: 'qemu', mapPerSec: m1, unmapPerSec: u1 });
  // inline batch
  const m2 = await measure(async () =>
    check((await pool.run(t, ops('map', va, 0, N), { inline: true })).results),
  );
  const u2 = await measure(async () =>
    check((await pool.run(t, ops('unmap', va, 0, N), { inline: true })).results),
  );
  rows.push({ target: name, mode: 'inline', mapPerSec: m2, unmapPerSec: u2 });
  // two workers, two disjoint lanes
  const half = N >> 1;
  const both = async (kind: 'map' | 'unmap') => {
    const r = await Promise.all([
      pool.run(t, ops(kind, va, 0, half), { inline: false }),
      pool.run(t, ops(kind, va, half, N), { inline: false }),
    ]);
    for (const x of r) check(x.results);
  };
  const m3 = await measure(() => both('map'));
  const u3 = await measure(() => both('unmap'));
  rows.push({ target: name, mode: 'workers', mapPerSec: m3, unmapPerSec: u3 });
  return rows;
}

async function main() {
  const sim = await SimPort.start();
  const port = sim.port();
  const pool = new DmaPool({ port, sim: sim.shared, minThreads: 2, maxThreads: 2 });
  const size = BigInt(N) * SEC;
  const ram = port.memfdCreate('bench-ram', MFD.CLOEXEC);
  port.ftruncate(ram, size); // sparse: nothing is touched
  const va = port.mmap(size, PROT.READ | PROT.WRITE, MAP.SHARED, ram);
  try {
    // iommufd: one IOAS (no device: the simulated pins are bookkeeping only)
    const iommufd = port.open('/dev/iommu', O.RDWR);
    const a = iommu_ioas_alloc.view().reset();
    port.ioctl(iommufd, IOMMU_IOAS_ALLOC, a.bytes);
    const rows = await benchTarget(
      'iommufd',
      port,
      pool,
      { kind: 'iommufd', iommufd, ioasId: a.out_ioas_id },
      va,
    );
    port.close(iommufd);
    // legacy type1 container on group 1 (65535 mappings at most: N must stay below)
    const container = port.open('/dev/vfio/vfio', O.RDWR);
    const group = port.open('/dev/vfio/1', O.RDWR);
    port.ioctl(group, VFIO_GROUP_SET_CONTAINER, container);
    port.ioctl(container, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU);
    rows.push(...(await benchTarget('legacy', port, pool, { kind: 'legacy', containerFd: container }, va)));
    port.close(group);
    port.close(container);

    console.log(
      `data plane, simulated kernel, ${N} sections of 2 MiB, map then unmap (ops/s; ratio to qemu)\n`,
    );
    console.log('| target | mode | map ops/s | unmap ops/s | map ratio | unmap ratio |');
    console.log('| --- | --- | ---: | ---: | ---: | ---: |');
    for (const r of rows) {
      const q = rows.find((x) => x.target === r.target && x.mode === 'qemu')!;
      const f = (n: number) => Math.round(n).toLocaleString('en-US');
      console.log(
        `| ${r.target} | ${r.mode} | ${f(r.mapPerSec)} | ${f(r.unmapPerSec)} | ${(r.mapPerSec / q.mapPerSec).toFixed(2)} | ${(r.unmapPerSec / q.unmapPerSec).toFixed(2)} |`,
      );
    }
  } finally {
    port.munmap(va, size);
    port.close(ram);
    await pool.close();
    await sim.stop();
  }
}

await main();
