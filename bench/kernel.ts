/**
 * Data-plane benchmark on the real kernel, inside the test VM (`npm run bench:kernel` boots
 * it: bench/kernel-vm.ts). The same work, side by side in one run, five ways:
 *
 *   floor     bench/floor.c: the same ioctls from C, nothing around them (spawned; built on
 *             the host by bench/build-floor.ts)
 *   qemu      QEMU's way: one ioctl per section, in order, on the main thread (dma.ts calls
 *             through LinuxPort)
 *   inline    the engine's batch executor on the main thread (DmaPool, inline)
 *   workers   the engine's DmaPool: the batch in two disjoint lanes on 2 piscina workers
 *   engine    the whole engine: createEngine({kernel: 'linux'}), an address space with the
 *             edu attached, one MemoryListener transaction of N region adds committed, then
 *             one of N dels (actors, rxjs, planner, pool, journal, tables)
 *
 * The work, per backend and shape: N sections of SIZE bytes of a shared memfd, pre-faulted
 * writable (the same one for every mode; the floor inherits it and pre-faults its own
 * mapping the same way), section i at IOVA BASE + i * SIZE, mapped (iommufd:
 * IOMMU_IOAS_MAP FIXED_IOVA | READABLE | WRITEABLE into an IOAS the edu's cdev is attached
 * to; legacy: VFIO_IOMMU_MAP_DMA READ | WRITE into a type1v2 container holding the edu's
 * group), then unmapped one by one. Every mode sets up and tears down its own container
 * outside the clock; a round runs every mode once (the order rotates each round), after one
 * untimed warm-up round; reported is each mode's fastest round (other work on the machine
 * only ever adds time), map and unmap apart; the medians follow in a second table.
 *
 * Checked outside the clock: between the maps and the unmaps, this process's VmPin
 * (iommufd) or VmLck (type1) grew by exactly N * SIZE (the kernel pinned every section);
 * after each mode, an unmap-all finds nothing and VmLck/VmPin are back where they were (the
 * floor checks its own unmap-all). Any failed op fails the run (exit 1).
 *
 *   node dist/bench/kernel.js [--shape 16384x4k]... [--rounds 3] [--backend iommufd,legacy]
 *                             [--mode floor,qemu,inline,workers,engine] [--iova 0x100000000]
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createEngine, type Engine } from '../src/engine.js';
import type { AddressSpace, MemoryRegion } from '../src/actors/address-space.js';
import { vfioDiscoverDevice, type VfioDeviceLocation } from '../src/backends/discovery.js';
import { dmaMap, dmaUnmap, dmaUnmapAll, type DmaTarget } from '../src/backends/dma.js';
import { LinuxPort } from '../src/port/linux.js';
import { MAP, MFD, O, PROT, type SyscallPort } from '../src/port/port.js';
import {
  IOMMU_IOAS_ALLOC,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_EXTENSION,
  VFIO_GROUP_FLAGS,
  VFIO_GROUP_GET_STATUS,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_SET_IOMMU,
  iommu_ioas_alloc,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_group_status,
} from '../src/uapi/index.js';
import type { BatchOp, OpResult } from '../src/workers/batch.js';
import { DmaPool } from '../src/workers/pool.js';
import { FLOOR_BINARY } from './build-floor.js';
import {
  benchMarkerLine,
  formatShape,
  formatTable,
  parseKernelBenchArgs,
  summarize,
  type KernelBackend,
  type KernelBenchOptions,
  type KernelMode,
  type Sample,
  type Shape,
} from './report.js';

const VFIO_PCI = '/sys/bus/pci/drivers/vfio-pci';

/** Guest RAM for one shape: a shared memfd, pre-faulted writable. */
interface Ram {
  readonly fd: number;
  readonly va: bigint;
  readonly bytes: bigint;
}

/** A container with the edu in it, ready for DMA ops. */
interface Bound {
  readonly target: DmaTarget;
  close(): void;
}

/** What one timed mode reports. */
interface Timing {
  mapNs: number;
  unmapNs: number;
}

const now = () => process.hrtime.bigint();

/** The edu devices bound to vfio-pci: the first for iommufd (its cdev), the second (or the first) for legacy (its group). */
function eduDevices(port: SyscallPort): Record<KernelBackend, VfioDeviceLocation> {
  const edus = port
    .readdir(VFIO_PCI)
    .filter((bdf) => /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(bdf))
    .filter((bdf) => {
      const id = (a: string) => port.readFile(`${VFIO_PCI}/${bdf}/${a}`).trim();
      return id('vendor') === '0x1234' && id('device') === '0x11e8';
    })
    .sort()
    .map((bdf) => vfioDiscoverDevice(port, bdf));
  if (!edus.length) throw new Error(`no edu device bound to vfio-pci (${VFIO_PCI}): run inside the test VM`);
  if (!edus[0]!.cdevPath) throw new Error(`${edus[0]!.bdf} has no VFIO cdev`);
  return { iommufd: edus[0]!, legacy: edus[1] ?? edus[0]! };
}

function bindIommufd(port: SyscallPort, dev: VfioDeviceLocation): Bound {
  const iommufd = port.open('/dev/iommu', O.RDWR | O.CLOEXEC);
  const alloc = iommu_ioas_alloc.view().reset();
  port.ioctl(iommufd, IOMMU_IOAS_ALLOC, alloc.bytes);
  const ioasId = alloc.out_ioas_id;
  const fd = port.open(dev.cdevPath!, O.RDWR | O.CLOEXEC);
  const bind = vfio_device_bind_iommufd.view().reset();
  bind.iommufd = iommufd;
  port.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, bind.bytes);
  const attach = vfio_device_attach_iommufd_pt.view().reset();
  attach.pt_id = ioasId;
  port.ioctl(fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach.bytes);
  return {
    target: { kind: 'iommufd', iommufd, ioasId },
    close() {
      port.close(fd);
      port.close(iommufd);
    },
  };
}

function bindLegacy(port: SyscallPort, dev: VfioDeviceLocation): Bound {
  const container = port.open('/dev/vfio/vfio', O.RDWR | O.CLOEXEC);
  const group = port.open(dev.groupPath, O.RDWR | O.CLOEXEC);
  const status = vfio_group_status.view().reset();
  port.ioctl(group, VFIO_GROUP_GET_STATUS, status.bytes);
  if (!(status.flags & VFIO_GROUP_FLAGS.VIABLE)) throw new Error(`${dev.groupPath} is not viable`);
  port.ioctl(group, VFIO_GROUP_SET_CONTAINER, container);
  port.ioctl(container, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU);
  return {
    target: { kind: 'legacy', containerFd: container },
    close() {
      port.close(group);
      port.close(container);
    },
  };
}

/** VmLck and VmPin of this process, in kB: the pages type1 and iommufd account as pinned. */
function pinnedKb(): { lck: number; pin: number } {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s*(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { lck: kb('VmLck'), pin: kb('VmPin') };
}

/** The section i of a shape, as a batch op. */
function sectionOps(kind: 'map' | 'unmap', shape: Shape, ram: Ram, base: bigint, from: number, to: number) {
  const out: BatchOp[] = [];
  for (let i = from; i < to; i++) {
    const off = BigInt(i) * shape.size;
    out.push(
      kind === 'map'
        ? { op: 'map', iova: base + off, size: shape.size, vaddr: ram.va + off }
        : { op: 'unmap', iova: base + off, size: shape.size },
    );
  }
  return out;
}

/** Throws unless every op is done (and every unmap unmapped exactly its section). */
function expectDone(what: string, shape: Shape, results: readonly OpResult[], crash?: unknown): void {
  if (crash !== undefined) throw new Error(`${what}: the executor crashed: ${String(crash)}`);
  const bad = results.findIndex((r) => r.status !== 'done');
  if (bad >= 0) {
    const r = results[bad]!;
    throw new Error(`${what}: op ${bad} ended ${r.status} (errno ${r.errno}); ${results.length} ops`);
  }
  if (what.endsWith('unmap')) {
    const short = results.findIndex((r) => r.bytes !== shape.size);
    if (short >= 0)
      throw new Error(`${what}: op ${short} unmapped ${results[short]!.bytes} bytes, not ${shape.size}`);
  }
}

class KernelBench {
  readonly samples: Sample[] = [];
  private readonly port = new LinuxPort();
  private readonly devices = eduDevices(this.port);
  private readonly pool = new DmaPool({ port: this.port, minThreads: 2, maxThreads: 2, inlineThreshold: 0 });
  private engine: Engine | null = null;
  private readonly spaces = new Map<KernelBackend, AddressSpace>();
  private readonly engineErrors: string[] = [];

  constructor(
    private readonly opts: KernelBenchOptions,
    private readonly vm: string,
  ) {}

  async run(): Promise<void> {
    this.engine = await createEngine({
      kernel: 'linux',
      workers: 2,
      inspect: (e) => {
        if (e.type === 'txn.failed' || e.type === 'batch.failed' || e.type === 'container.failed')
          this.engineErrors.push(`${e.type}: ${e.error.message}`);
        else if (e.type === 'device.failed') this.engineErrors.push(`${e.type}: ${e.error.message}`);
        else if (e.type === 'warning') this.engineErrors.push(`warning: ${e.message}`);
      },
    });
    try {
      for (const shape of this.opts.shapes) {
        const ram = this.guestRam(shape.size * BigInt(shape.count));
        try {
          for (const backend of this.opts.backends) {
            const warm = { count: Math.min(shape.count, 512), size: shape.size };
            for (const mode of this.opts.modes)
              if (mode !== 'floor') await this.runMode(backend, warm, ram, mode);
            for (let r = 0; r < this.opts.rounds; r++) {
              const modes = this.opts.modes;
              for (let k = 0; k < modes.length; k++) {
                const mode = modes[(k + r) % modes.length]!;
                const t = await this.runMode(backend, shape, ram, mode);
                const sample: Sample = { vm: this.vm, backend, shape, mode, ...t };
                this.samples.push(sample);
                console.log(benchMarkerLine(sample));
              }
            }
          }
        } finally {
          this.port.munmap(ram.va, ram.bytes);
          this.port.close(ram.fd);
        }
      }
    } finally {
      await this.engine.shutdown();
      await this.pool.close();
    }
  }

  private guestRam(bytes: bigint): Ram {
    const fd = this.port.memfdCreate('vfio-engine-bench', MFD.CLOEXEC);
    this.port.ftruncate(fd, bytes);
    const va = this.port.mmap(bytes, PROT.READ | PROT.WRITE, MAP.SHARED, fd);
    // A write per page (as floor.c does): pins for writing then find every PTE present and
    // writable, so no mode pays the faults inside its clock.
    for (let off = 0n; off < bytes; off += 1n << 30n) {
      const chunk = Number(bytes - off < 1n << 30n ? bytes - off : 1n << 30n);
      const mem = this.port.memory(va + off, chunk);
      for (let i = 0; i < chunk; i += 4096) mem[i] = 0;
    }
    return { fd, va, bytes };
  }

  /** One timed mode, with the checks that it left nothing behind. */
  private async runMode(backend: KernelBackend, shape: Shape, ram: Ram, mode: KernelMode): Promise<Timing> {
    const what = `${backend} ${formatShape(shape)} ${mode}`;
    const before = pinnedKb();
    // Between the maps and the unmaps (outside the clock): the kernel pinned every section
    // once, as iommufd (VmPin) or type1 (VmLck) accounts it.
    const kb = Number((BigInt(shape.count) * shape.size) >> 10n);
    const mapped = () => {
      const now = pinnedKb();
      const want =
        backend === 'iommufd'
          ? { lck: before.lck, pin: before.pin + kb }
          : { lck: before.lck + kb, pin: before.pin };
      if (now.lck !== want.lck || now.pin !== want.pin)
        throw new Error(
          `${what}: after the maps VmLck ${now.lck} kB, VmPin ${now.pin} kB; expected ${want.lck} and ${want.pin}`,
        );
    };
    let t: Timing;
    if (mode === 'floor') t = this.floor(backend, shape, ram);
    else if (mode === 'engine') t = await this.viaEngine(backend, shape, ram, what, mapped);
    else {
      const bound =
        backend === 'iommufd'
          ? bindIommufd(this.port, this.devices.iommufd)
          : bindLegacy(this.port, this.devices.legacy);
      try {
        t = await this.direct(mode, bound.target, shape, ram, what, mapped);
        const left = dmaUnmapAll(this.port, bound.target);
        if (left !== 0n) throw new Error(`${what}: ${left} bytes still mapped after the unmaps`);
      } finally {
        bound.close();
      }
    }
    const after = pinnedKb();
    if (after.lck !== before.lck || after.pin !== before.pin) {
      throw new Error(
        `${what}: pinned memory not released (VmLck ${before.lck} -> ${after.lck} kB, VmPin ${before.pin} -> ${after.pin} kB)`,
      );
    }
    return t;
  }

  private floor(backend: KernelBackend, shape: Shape, ram: Ram): Timing {
    const device = backend === 'iommufd' ? this.devices.iommufd.cdevPath! : this.devices.legacy.groupPath;
    const args = ['--backend', backend, '--device', device, '--count', String(shape.count)];
    args.push('--size', String(shape.size), '--iova', `0x${this.opts.iova.toString(16)}`, '--fd', '3');
    // The memfd becomes the child's fd 3: the floor pins the very pages the other modes pin.
    const r = spawnSync(FLOOR_BINARY, args, { stdio: ['ignore', 'pipe', 'pipe', ram.fd], encoding: 'utf8' });
    if (r.error)
      throw new Error(
        `${FLOOR_BINARY}: ${r.error.message} (build it on the host: node dist/bench/build-floor.js)`,
      );
    if (r.status !== 0) throw new Error(`floor exited ${r.status ?? r.signal}: ${r.stderr.trim()}`);
    const out = JSON.parse(r.stdout) as { count: number; size: number; mapNs: number; unmapNs: number };
    if (out.count !== shape.count || BigInt(out.size) !== shape.size)
      throw new Error(`floor did other work: ${r.stdout}`);
    return { mapNs: out.mapNs, unmapNs: out.unmapNs };
  }

  private async direct(
    mode: KernelMode,
    t: DmaTarget,
    shape: Shape,
    ram: Ram,
    what: string,
    mapped: () => void,
  ): Promise<Timing> {
    const base = this.opts.iova;
    const n = shape.count;
    const size = shape.size;
    if (mode === 'qemu') {
      const t0 = now();
      for (let i = 0; i < n; i++)
        dmaMap(this.port, t, base + BigInt(i) * size, size, ram.va + BigInt(i) * size, false);
      const t1 = now();
      mapped();
      const t2 = now();
      for (let i = 0; i < n; i++) {
        const bytes = dmaUnmap(this.port, t, base + BigInt(i) * size, size);
        if (bytes !== size) throw new Error(`${what}: section ${i} unmapped ${bytes} bytes, not ${size}`);
      }
      const t3 = now();
      return { mapNs: Number(t1 - t0), unmapNs: Number(t3 - t2) };
    }
    if (mode === 'inline') {
      const t0 = now();
      const m = await this.pool.run(t, sectionOps('map', shape, ram, base, 0, n), { inline: true });
      const t1 = now();
      expectDone(`${what} map`, shape, m.results, m.crash);
      mapped();
      const t2 = now();
      const u = await this.pool.run(t, sectionOps('unmap', shape, ram, base, 0, n), { inline: true });
      const t3 = now();
      expectDone(`${what} unmap`, shape, u.results, u.crash);
      return { mapNs: Number(t1 - t0), unmapNs: Number(t3 - t2) };
    }
    // workers: two disjoint halves, one per worker
    const half = n >> 1;
    const both = async (kind: 'map' | 'unmap') => {
      const runs = await Promise.all([
        this.pool.run(t, sectionOps(kind, shape, ram, base, 0, half), { inline: false }),
        this.pool.run(t, sectionOps(kind, shape, ram, base, half, n), { inline: false }),
      ]);
      return () => runs.forEach((r) => expectDone(`${what} ${kind}`, shape, r.results, r.crash));
    };
    const t0 = now();
    const checkMap = await both('map');
    const t1 = now();
    checkMap();
    mapped();
    const t2 = now();
    const checkUnmap = await both('unmap');
    const t3 = now();
    checkUnmap();
    return { mapNs: Number(t1 - t0), unmapNs: Number(t3 - t2) };
  }

  private async viaEngine(
    backend: KernelBackend,
    shape: Shape,
    ram: Ram,
    what: string,
    mapped: () => void,
  ): Promise<Timing> {
    const engine = this.engine!;
    let space = this.spaces.get(backend);
    if (!space) this.spaces.set(backend, (space = engine.createAddressSpace(`bench-${backend}`)));
    const dev = this.devices[backend];
    const info = await space.addDevice({ host: dev.bdf, iommufd: backend === 'iommufd' ? 'on' : 'off' });
    try {
      if (info.backend !== backend)
        throw new Error(`${what}: the engine chose ${info.backend} (${info.reason})`);
      const regions: MemoryRegion[] = [];
      for (let i = 0; i < shape.count; i++) {
        const off = BigInt(i) * shape.size;
        regions.push({
          gpa: this.opts.iova + off,
          size: shape.size,
          backing: { fd: ram.fd, offset: off, vaddr: ram.va + off },
        });
      }
      const t0 = now();
      space.begin();
      for (const r of regions) space.regionAdd(r);
      await space.commit();
      const t1 = now();
      this.expectEngine(space, info.container, shape.count, `${what} map`);
      mapped();
      const t2 = now();
      space.begin();
      for (const r of regions) space.regionDel(r);
      await space.commit();
      const t3 = now();
      this.expectEngine(space, info.container, 0, `${what} unmap`);
      const left = space.containerBackend(info.container)!.dmaUnmap(0n, 0n, { unmapAll: true });
      if (left !== 0n) throw new Error(`${what}: ${left} bytes still mapped after the dels`);
      return { mapNs: Number(t1 - t0), unmapNs: Number(t3 - t2) };
    } finally {
      await space.removeDevice(info.id);
    }
  }

  private expectEngine(space: AddressSpace, container: string, count: number, what: string): void {
    if (this.engineErrors.length) throw new Error(`${what}: ${this.engineErrors.join('; ')}`);
    const table = space.mappings(container)[container] ?? [];
    if (table.length !== count)
      throw new Error(`${what}: the container's table holds ${table.length} mappings, not ${count}`);
  }
}

async function main(): Promise<number> {
  const opts = parseKernelBenchArgs(process.argv.slice(2));
  const vm = process.env.VFIO_ENGINE_GUEST_IOMMU ?? 'host';
  const bench = new KernelBench(opts, vm);
  const t0 = Date.now();
  await bench.run();
  const shapes = opts.shapes.map(formatShape).join(', ');
  console.log(
    `\ndata plane on the real kernel (${vm}), ` +
      `${shapes}; fastest of ${opts.rounds} rounds; ops/s, ratios higher is faster; ${((Date.now() - t0) / 1000).toFixed(1)} s\n`,
  );
  const bases = opts.modes.includes('qemu') ? ['floor', 'qemu'] : ['floor'];
  for (const line of formatTable(summarize(bench.samples), bases)) console.log(line);
  console.log(
    `\nthe same, medians of the ${opts.rounds} rounds (the spread: how much other work on the machine moved them)\n`,
  );
  for (const line of formatTable(summarize(bench.samples, 'median'), bases)) console.log(line);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`bench/kernel: ${(err as Error)?.stack ?? String(err)}`);
    process.exit(1);
  },
);
