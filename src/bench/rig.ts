/**
 * What every workload stands on: an engine on the chosen kernel (null, sim or Linux), guest
 * RAM of a chosen backing, the devices to attach (the simulated test VM's two edus, or the
 * real ones bound to vfio-pci), and QEMU's way (one ioctl per section from JS) as the
 * baseline. The region layout is one function, shared with the C floor's section list, so
 * that every mode maps the very same sections.
 */
import fs from 'node:fs';
import { createEngine, type Engine } from '../engine.js';
import type { AddressSpace, DeviceInfo, MemoryRegion } from '../actors/address-space.js';
import { vfioDiscoverDevice, type VfioDeviceLocation } from '../backends/discovery.js';
import { dmaMap, dmaUnmap, type DmaTarget } from '../backends/dma.js';
import { DEFAULT_DRIVERS } from '../kernel/drivers.js';
import { SimKernel } from '../kernel/kernel.js';
import { testVmTopology } from '../kernel/topology.js';
import { LinuxPort } from '../port/linux.js';
import { type SyscallPort } from '../port/port.js';
import { MAP, MFD, O, PROT } from '../uapi/libc.js';
import { SimPort } from '../kernel/sim-port.js';
import { IOMMU_IOAS_ALLOC, iommu_ioas_alloc } from '../uapi/iommufd.js';
import type { BenchKernel, BenchSample } from './types.js';

/** What a workload is given: where to run, how big, and where its samples go. */
export interface WorkloadContext {
  readonly kernel: BenchKernel;
  /** DMA worker threads of the engine (and the C floor's second thread count). */
  readonly workers: number;
  /** Multiplies every count (1 = the documented sizes; CI's smoke run uses a small one). */
  readonly scale: number;
  readonly round: number;
  /** Records one sample (workload, kernel and round are filled in). */
  record(s: Omit<BenchSample, 'workload' | 'kernel' | 'round'>): void;
  /** Progress: one step of the workload is about to run. */
  step(label: string): void;
  /** A line for the user (a mode skipped here, and why). */
  note(line: string): void;
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
  /** Progress steps per round on `kernel`, for the bar's total. */
  steps(scale: number, kernel: BenchKernel): number;
  run(ctx: WorkloadContext): Promise<void>;
}

/** The container backends of the bench; 'legacy' is VFIO type1. */
export type BenchBackend = 'iommufd' | 'legacy';

export const KiB = 1n << 10n;
export const MiB = 1n << 20n;
export const GiB = 1n << 30n;
/** Where the workloads' regions start: above 4 GiB, clear of the MSI window. */
export const BASE = 4n * GiB;

/** `n` scaled, at least `min`. */
export function scaled(n: number, scale: number, min = 1): number {
  return Math.max(min, Math.round(n * scale));
}

/** 4096n -> '4 KiB' */
export function sizeName(size: bigint): string {
  if (size >= GiB && size % GiB === 0n) return `${size / GiB} GiB`;
  if (size >= MiB && size % MiB === 0n) return `${size / MiB} MiB`;
  return `${size / KiB} KiB`;
}

/** '16,384 x 4 KiB' */
export function shapeName(count: number, size: bigint): string {
  return `${count.toLocaleString('en-US')} x ${sizeName(size)}`;
}

/**
 * How guest RAM is backed: 'memfd' (a shared memfd of 4 KiB pages, as QEMU's memory-backend-memfd),
 * 'thp' (private anonymous memory with transparent huge pages, QEMU's default RAM) or
 * 'hugetlb' (a memfd of 2 MiB huge pages, memory-backend-memfd,hugetlb=on). Only the real
 * kernel tells them apart; the null and simulated kernels get 'memfd'.
 */
export type Backing = 'memfd' | 'thp' | 'hugetlb';

/** Guest RAM: `bytes` at `va`; `fd` -1 for anonymous memory. */
export interface Ram {
  readonly fd: number;
  readonly va: bigint;
  readonly bytes: bigint;
  readonly backing: Backing;
}

/** One section as every mode maps it: IOVA, size, and the offset of its backing in guest RAM. */
export interface Section {
  readonly iova: bigint;
  readonly size: bigint;
  readonly offset: bigint;
  readonly readonly?: boolean;
}

/**
 * Section i of `size` bytes at IOVA BASE + i * size, backed at offset 2 i * size (modulo the
 * RAM, which the real kernel's VM cannot hold twice over): never contiguous with its
 * neighbours, so nothing can merge them.
 */
export function gridSection(i: number, size: bigint, ramBytes: bigint): Section {
  return { iova: BASE + BigInt(i) * size, size, offset: (2n * BigInt(i) * size) % ramBytes };
}

/**
 * The RAM a grid of `count` sections of `size` needs: twice their bytes, and on the real
 * kernel at most LINUX_GRID_RAM (a power-of-two multiple of 2 size; sections beyond share pages).
 */
export function gridRam(count: number, size: bigint, kernel: BenchKernel): bigint {
  const want = 2n * BigInt(count) * size;
  return kernel === 'linux' && want > LINUX_GRID_RAM ? LINUX_GRID_RAM : want;
}

/** The most guest RAM a grid gets on the real kernel (sections beyond it share pages). */
export const LINUX_GRID_RAM = 256n * MiB;

/** The sections of the rig's warm-up: 4 KiB each at 128 GiB (inside VT-d's 39-bit aperture, clear of every workload). */
const WARM_UP = 256;
function warmSection(i: number, ramBytes: bigint): Section {
  return {
    iova: 128n * GiB + BigInt(i) * 4n * KiB,
    size: 4n * KiB,
    offset: (BigInt(i) * 8n * KiB) % ramBytes,
  };
}

/** An engine with guest RAM, before and after its devices attach. */
export interface Rig {
  readonly ctx: WorkloadContext;
  readonly engine: Engine;
  readonly port: SyscallPort;
  readonly space: AddressSpace;
  readonly ram: Ram;
  /** The devices the workload can attach, in order (two on every kernel). */
  readonly devices: readonly VfioDeviceLocation[];
  /**
   * Attaches device `index` (default 0) with iommufd=on, or to an iommufd object of its own
   * ('own') or to the rig's one shared object ('shared'), or to type1 (backend 'legacy'). The
   * first one's container becomes `target`, after an untimed warm-up of the engine through it.
   */
  attach(opts?: { backend?: BenchBackend; index?: number; iommufd?: 'own' | 'shared' }): Promise<DeviceInfo>;
  /** The first attached container's target, for the 'qemu' baseline. */
  readonly target: DmaTarget;
  /** The MemoryRegion of a section. */
  region(s: Section): MemoryRegion;
  close(): Promise<void>;
}

const VFIO_PCI = '/sys/bus/pci/drivers/vfio-pci';

/** The edu devices bound to vfio-pci on this machine (the test VM has two). */
export function linuxEduDevices(port: SyscallPort): VfioDeviceLocation[] {
  let bound: string[];
  try {
    bound = port.readdir(VFIO_PCI);
  } catch {
    bound = [];
  }
  const edus = bound
    .filter((bdf) => /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(bdf))
    .filter((bdf) => {
      const id = (a: string) => port.readFile(`${VFIO_PCI}/${bdf}/${a}`).trim();
      return id('vendor') === '0x1234' && id('device') === '0x11e8';
    })
    .sort()
    .map((bdf) => vfioDiscoverDevice(port, bdf));
  if (edus.length < 2)
    throw new Error(
      `--kernel linux needs two edu devices bound to vfio-pci (${VFIO_PCI} has ${edus.length}): it runs in the test VM (npm run bench:kernel)`,
    );
  return edus;
}

/** Guest RAM of `bytes` and `backing` on `port`; on Linux every page is written once (pre-faulted). */
export function openRam(port: SyscallPort, kernel: BenchKernel, bytes: bigint, backing: Backing): Ram {
  let fd = -1;
  let va: bigint;
  if (backing === 'thp') {
    // THP is 'always' in the test VM's kernel: an aligned anonymous mapping gets huge pages.
    va = port.mmap(bytes, PROT.READ | PROT.WRITE, MAP.PRIVATE | MAP.ANONYMOUS, -1);
  } else {
    fd = port.memfdCreate('vfio-engine-bench', MFD.CLOEXEC | (backing === 'hugetlb' ? MFD.HUGETLB : 0));
    port.ftruncate(fd, bytes); // sparse on the null and simulated kernels: they touch no pages
    va = port.mmap(bytes, PROT.READ | PROT.WRITE, MAP.SHARED, fd);
  }
  if (kernel === 'linux') {
    // A write per page: pins for writing then find every PTE present and writable, so no
    // mode pays the faults inside its clock (the C floor does the same).
    for (let off = 0n; off < bytes; off += GiB) {
      const chunk = Number(bytes - off < GiB ? bytes - off : GiB);
      const mem = port.memory(va + off, chunk);
      for (let i = 0; i < chunk; i += 4096) mem[i] = 0;
    }
  }
  return { fd, va, bytes, backing };
}

function closeRam(port: SyscallPort, ram: Ram): void {
  port.munmap(ram.va, ram.bytes);
  if (ram.fd >= 0) port.close(ram.fd);
}

/**
 * Huge pages for a hugetlb backing of `bytes` on Linux: reserves what is missing through
 * /proc/sys/vm/nr_hugepages (root, as in the test VM). Returns the function that gives them
 * back, or why they cannot be had.
 */
export function reserveHugePages(bytes: bigint): (() => void) | string {
  const field = (k: string) =>
    Number(new RegExp(`^${k}:\\s*(\\d+)`, 'm').exec(fs.readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? NaN);
  const pageKb = field('Hugepagesize');
  if (!(pageKb > 0)) return 'this kernel has no hugetlb pages';
  const need = Number(bytes / (BigInt(pageKb) * KiB));
  const total = field('HugePages_Total');
  const free = field('HugePages_Free');
  const restore = () => fs.writeFileSync('/proc/sys/vm/nr_hugepages', String(total));
  if (free >= need) return () => {};
  try {
    fs.writeFileSync('/proc/sys/vm/nr_hugepages', String(total + need - free));
  } catch (e) {
    return `cannot reserve ${need} huge pages of ${pageKb} kB: ${(e as Error).message}`;
  }
  const got = field('HugePages_Free');
  if (got >= need) return restore;
  restore();
  return `only ${got} of ${need} huge pages of ${pageKb} kB could be reserved`;
}

/** Opens an engine on ctx.kernel with `ramBytes` of guest RAM; nothing attached yet. */
export async function openRig(
  ctx: WorkloadContext,
  ramBytes: bigint,
  backing: Backing = 'memfd',
): Promise<Rig> {
  const failures: string[] = [];
  const engine = await createEngine({
    kernel: ctx.kernel,
    ...(ctx.kernel === 'linux' ? {} : { topology: testVmTopology() }),
    workers: ctx.workers,
    inspect: (e) => {
      if (e.type === 'txn.failed' || e.type === 'container.failed' || e.type === 'device.failed')
        failures.push(`${e.type}: ${e.error.message}`);
    },
  });
  const port = engine.port;
  let ram: Ram | null = null;
  try {
    const devices =
      ctx.kernel === 'linux'
        ? linuxEduDevices(port)
        : ['0000:01:00.0', '0000:02:00.0'].map((bdf) => vfioDiscoverDevice(port, bdf));
    ram = openRam(port, ctx.kernel, ramBytes, backing);
    const space = engine.createAddressSpace('bench');
    let target: DmaTarget | null = null;
    let shared: ReturnType<Engine['createIommufd']> | null = null;
    const theRam = ram;
    const region = (s: Section): MemoryRegion => ({
      gpa: s.iova,
      size: s.size,
      ...(s.readonly ? { readonly: true, kind: 'rom' as const } : {}),
      backing:
        theRam.fd >= 0
          ? { fd: theRam.fd, offset: s.offset, vaddr: theRam.va + s.offset }
          : { vaddr: theRam.va + s.offset },
    });
    // A new engine's DMA workers load their modules and compile on their first batches; a
    // VMM's engine lives long past that. One untimed transaction of adds and one of dels,
    // away from every workload's IOVAs, so that no timed figure is a cold start.
    const warmUp = async () => {
      space.begin();
      for (let i = 0; i < WARM_UP; i++) space.regionAdd(region(warmSection(i, theRam.bytes)));
      await commitOk(space);
      space.begin();
      for (let i = 0; i < WARM_UP; i++) space.regionDel(region(warmSection(i, theRam.bytes)));
      await commitOk(space);
    };
    return {
      ctx,
      engine,
      port,
      space,
      ram,
      devices,
      async attach(opts = {}) {
        const dev = devices[opts.index ?? 0]!;
        const backend = opts.backend ?? 'iommufd';
        const info = await space.addDevice({
          host: dev.bdf,
          iommufd:
            backend === 'legacy'
              ? 'off'
              : opts.iommufd === 'own'
                ? engine.createIommufd(`own-${dev.bdf}`)
                : opts.iommufd === 'shared'
                  ? (shared ??= engine.createIommufd('shared'))
                  : 'on',
        });
        if (info.backend !== backend) throw new Error(`the engine chose ${info.backend} (${info.reason})`);
        if (!target) {
          target = space.containerBackend(info.container)!.dataplaneTarget();
          await warmUp();
        }
        return info;
      },
      get target() {
        if (!target) throw new Error('no device attached yet');
        return target;
      },
      region,
      async close() {
        try {
          await engine.shutdown(); // unmaps everything, before the RAM goes
        } finally {
          if (ctx.kernel === 'linux') closeRam(port, theRam); // the simulated kernel stopped with the engine
        }
        if (failures.length) throw new Error(`the engine failed during the workload: ${failures.join('; ')}`);
      },
    };
  } catch (e) {
    if (ram && ctx.kernel === 'linux') closeRam(port, ram);
    await engine.shutdown();
    throw e;
  }
}

/** Commits the open transaction; throws its error when it failed. */
export async function commitOk(space: AddressSpace): Promise<void> {
  const r = await space.commit();
  if (!r.ok) throw r.error ?? new Error(`${r.txn} failed`);
}

/** Seconds since `t0` (process.hrtime.bigint()). */
export const seconds = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e9;

/** The 'model' baseline: the same ioctls on an in-thread simulated kernel (no channel). */
export function modelRig(): { port: SyscallPort; target: DmaTarget; close(): void } {
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

/**
 * An ordered list of DMA ops, as a workload whose maps and unmaps interleave issues them: a
 * map or an unmap of a section, or the start or the stop of the clock (ops outside run untimed).
 */
export type OpListItem = { readonly map: Section } | { readonly unmap: Section } | 'start' | 'stop';

/** QEMU's way for an op list: one ioctl per op, in order; the seconds between 'start' (or the first op) and 'stop' (or the last). */
export function oneIoctlPerOp(
  port: SyscallPort,
  target: DmaTarget,
  va: bigint,
  ops: readonly OpListItem[],
): number {
  let t0 = process.hrtime.bigint();
  let t = -1;
  for (const o of ops) {
    if (o === 'start') t0 = process.hrtime.bigint();
    else if (o === 'stop') t = seconds(t0);
    else if ('map' in o)
      dmaMap(port, target, o.map.iova, o.map.size, va + o.map.offset, o.map.readonly ?? false);
    else dmaUnmap(port, target, o.unmap.iova, o.unmap.size);
  }
  return t >= 0 ? t : seconds(t0);
}

/** QEMU's way: one map ioctl per section, in order, then one unmap each; seconds of each. */
export function oneIoctlEach(
  port: SyscallPort,
  target: DmaTarget,
  va: bigint,
  sections: readonly Section[],
): { map: number; unmap: number } {
  let t0 = process.hrtime.bigint();
  for (const s of sections) dmaMap(port, target, s.iova, s.size, va + s.offset, s.readonly ?? false);
  const map = seconds(t0);
  t0 = process.hrtime.bigint();
  for (const s of sections) {
    const bytes = dmaUnmap(port, target, s.iova, s.size);
    if (bytes !== s.size && port.kind === 'linux')
      throw new Error(`unmap of ${s.iova.toString(16)}: ${bytes} bytes, not ${s.size}`);
  }
  return { map, unmap: seconds(t0) };
}

/** The whole engine: one transaction adding every section, then one deleting them; seconds of each. */
export async function engineAddDel(
  rig: Rig,
  sections: readonly Section[],
  between?: () => void,
): Promise<{ map: number; unmap: number }> {
  let t0 = process.hrtime.bigint();
  rig.space.begin();
  for (const s of sections) rig.space.regionAdd(rig.region(s));
  await commitOk(rig.space);
  const map = seconds(t0);
  between?.();
  t0 = process.hrtime.bigint();
  rig.space.begin();
  for (const s of sections) rig.space.regionDel(rig.region(s));
  await commitOk(rig.space);
  return { map, unmap: seconds(t0) };
}

/** Throws unless every attached container's table holds `count` mappings. */
export function expectTables(rig: Rig, count: number, what: string): void {
  const tables = Object.entries(rig.space.mappings());
  const bad = tables.filter(([, t]) => t.length !== count);
  if (!tables.length || bad.length)
    throw new Error(
      `${what}: expected ${count} mappings per container, found ${tables.map(([c, t]) => `${c}: ${t.length}`).join(', ') || 'no container'}`,
    );
}

/**
 * The modes of a case that maps every section in one go and unmaps them in another, after the
 * floor: QEMU's way into the engine's own container (left empty again), the simulated
 * kernel's own cost on the simulated kernel, then the whole engine, whose tables are checked
 * to hold every section between the two transactions and none after.
 */
export async function addDelModes(
  rig: Rig,
  sections: readonly Section[],
  what: string,
  record: (mode: string, t: { map: number; unmap: number }) => void,
): Promise<void> {
  record('qemu', oneIoctlEach(rig.port, rig.target, rig.ram.va, sections));
  if (rig.ctx.kernel === 'sim') {
    const m = modelRig();
    try {
      record('model', oneIoctlEach(m.port, m.target, rig.ram.va, sections));
    } finally {
      m.close();
    }
  }
  record('engine', await engineAddDel(rig, sections, () => expectTables(rig, sections.length, what)));
  expectTables(rig, 0, `${what} after the dels`);
}

/** A small deterministic generator (an LCG, 24 useful bits): the same numbers every round and run. */
export function lcg(seed: number): () => number {
  let x = seed;
  return () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 8;
}
