/**
 * Memory per mapping, on the simulated kernel, side by side in one run: the heap the engine
 * keeps per DMA mapping (the address space's region map, each container's mapping table,
 * and whatever else it retains per mapping), against baselines holding the same entries.
 *
 *   packed     the information itself: iova, size, vaddr as three u64 in a BigUint64Array
 *   objects    a plain array of { iova, size, vaddr, readonly } objects (bigints)
 *   table      an IntervalMap<DmaMapping> alone (one container's table)
 *   regions    an IntervalMap<MemoryRegionSection> alone (the address space's region map)
 *   engine/1   createEngine: an address space with one iommufd container, N regions committed
 *   engine/2   the same with two containers (two devices on two iommufd objects)
 *
 * Each case: gc() twice, heapUsed + arrayBuffers before, build it, gc() twice, after; the
 * difference over N. The engine's fixed cost (engine, workers, device attach) is outside
 * the difference: it is measured from an attached, empty address space to the same space
 * with N mappings. The simulated kernel runs in its own thread (its own heap), so its
 * bookkeeping is not counted; the real kernel's is not either.
 *
 *   npm run bench:memory     (node --expose-gc; N = 100000, BENCH_MAPPINGS=… to change)
 */
import { createEngine, type Engine } from '../src/engine.js';
import type { MemoryRegion } from '../src/actors/address-space.js';
import { IntervalMap } from '../src/common/interval-map.js';
import { testVmTopology } from '../src/kernel/topology.js';
import type { DmaMapping, MemoryRegionSection } from '../src/memory/sections.js';
import { MAP, MFD, PROT } from '../src/port/port.js';
import { formatMemoryTable, type MemoryRow } from './report.js';

const N = Number(process.env.BENCH_MAPPINGS ?? 100_000);
const SEC = 4096n; // the smallest section: the most mappings per byte of guest RAM
const BASE = 1n << 32n;

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error('bench/memory: run with node --expose-gc (npm run bench:memory)');
  process.exit(2);
}

function heap(): number {
  gc!();
  gc!();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** Bytes per mapping that `build` makes reachable (kept until measured). */
async function perMapping(build: () => unknown): Promise<number> {
  const before = heap();
  const kept = await build();
  const after = heap();
  void kept; // alive up to here
  return (after - before) / N;
}

const iova = (i: number) => BASE + BigInt(i) * SEC;

function packed(): BigUint64Array {
  const a = new BigUint64Array(3 * N);
  for (let i = 0; i < N; i++) {
    a[3 * i] = iova(i);
    a[3 * i + 1] = SEC;
    a[3 * i + 2] = 0x7f00_0000_0000n + BigInt(i) * SEC;
  }
  return a;
}

function objects(): DmaMapping[] {
  const a: DmaMapping[] = [];
  for (let i = 0; i < N; i++)
    a.push({ iova: iova(i), size: SEC, vaddr: 0x7f00_0000_0000n + BigInt(i) * SEC, readonly: false });
  return a;
}

function table(): IntervalMap<DmaMapping> {
  const t = new IntervalMap<DmaMapping>();
  for (let i = 0; i < N; i++) {
    const m = { iova: iova(i), size: SEC, vaddr: 0x7f00_0000_0000n + BigInt(i) * SEC, readonly: false };
    t.insert(m.iova, m.iova + m.size, m);
  }
  return t;
}

function regions(): IntervalMap<MemoryRegionSection> {
  const t = new IntervalMap<MemoryRegionSection>();
  for (let i = 0; i < N; i++) {
    const off = BigInt(i) * SEC;
    const s: MemoryRegionSection = {
      gpa: iova(i),
      size: SEC,
      kind: 'ram',
      readonly: false,
      backing: { fd: 3, offset: off, vaddr: 0x7f00_0000_0000n + off },
    };
    t.insert(s.gpa, s.gpa + s.size, s);
  }
  return t;
}

/** The engine with `containers` iommufd containers in one address space: bytes per mapping of N committed regions. */
async function engine(containers: 1 | 2): Promise<{ perMapping: number; tables: number }> {
  const failures: string[] = [];
  const e: Engine = await createEngine({
    kernel: 'sim',
    topology: testVmTopology(),
    inspect: (ev) => {
      if (ev.type === 'txn.failed' || ev.type === 'batch.failed' || ev.type === 'container.failed')
        failures.push(`${ev.type}: ${ev.error.message}`);
      else if (ev.type === 'warning') failures.push(ev.message);
    },
  });
  const port = e.port;
  const bytes = BigInt(N) * SEC;
  const fd = port.memfdCreate('bench-memory', MFD.CLOEXEC);
  port.ftruncate(fd, bytes); // sparse: the simulated kernel touches nothing
  const va = port.mmap(bytes, PROT.READ | PROT.WRITE, MAP.SHARED, fd);
  try {
    const space = e.createAddressSpace('memory');
    await space.addDevice({ host: '0000:01:00.0', iommufd: 'on' });
    if (containers === 2) await space.addDevice({ host: '0000:02:00.0', iommufd: e.createIommufd('second') });
    const per = await perMapping(async () => {
      space.begin();
      for (let i = 0; i < N; i++) {
        const off = BigInt(i) * SEC;
        const r: MemoryRegion = { gpa: iova(i), size: SEC, backing: { fd, offset: off, vaddr: va + off } };
        space.regionAdd(r);
      }
      await space.commit();
    });
    const tables = Object.values(space.mappings());
    if (failures.length) throw new Error(failures.join('; '));
    if (tables.length !== containers || tables.some((t) => t.length !== N))
      throw new Error(
        `expected ${containers} tables of ${N} mappings, got ${tables.map((t) => t.length).join(', ')}`,
      );
    return { perMapping: per, tables: tables.length };
  } finally {
    port.munmap(va, bytes); // before shutdown: it stops the simulated kernel
    port.close(fd);
    await e.shutdown();
  }
}

async function main() {
  const rows: MemoryRow[] = [];
  rows.push({ name: 'packed', what: 'BigUint64Array, 3 u64 per mapping', bytes: await perMapping(packed) });
  rows.push({
    name: 'objects',
    what: 'plain array of { iova, size, vaddr, readonly }',
    bytes: await perMapping(objects),
  });
  rows.push({ name: 'table', what: 'IntervalMap<DmaMapping> alone', bytes: await perMapping(table) });
  rows.push({
    name: 'regions',
    what: 'IntervalMap<MemoryRegionSection> alone',
    bytes: await perMapping(regions),
  });
  const one = await engine(1);
  rows.push({ name: 'engine/1', what: 'address space, 1 iommufd container', bytes: one.perMapping });
  const two = await engine(2);
  rows.push({ name: 'engine/2', what: 'address space, 2 iommufd containers', bytes: two.perMapping });
  console.log(
    `memory per mapping, simulated kernel, ${N.toLocaleString('en-US')} mappings of 4 KiB ` +
      `(main-thread heap + array buffers after gc; node ${process.version})\n`,
  );
  for (const line of formatMemoryTable(rows, ['objects', 'packed'])) console.log(line);
}

await main();
