// The engine on the real kernel with a realistic q35 memory map: RAM below 4 GiB around the
// legacy VGA hole, RAM above 4 GiB, the option and BIOS ROMs (mapped read-only), VGA and a
// device BAR (MMIO: skipped). One device per backend choice (on, off, auto, an explicit
// iommufd object); a device attached after the commit gets the current map replayed; auto
// shares the IOAS of the device already on iommufd. After every test the kernel holds exactly
// the engine's tables. Runs in both VMs and on the simulated kernel.
import { expect } from 'chai';
import { expectDmaFault } from './dma-faults.js';
import { createEngine, type Engine, type EngineEvent } from '../../src/engine.js';
import type { AddressSpace, MemoryRegion } from '../../src/actors/address-space.js';
import type { RegionKind } from '../../src/memory/sections.js';
import { expectTablesMatchKernel } from '../engine-kit.js';
import { describeKernel } from './guest.js';
import { Edu, EDU_DMA_BUFFER } from './edu.js';
import { eduPair, kernelHandles, pattern, Resources, type MemfdBuffer } from './kit.js';
import { onSimulatedKernel } from './recording-port.js';
import { simulatedTopology } from './variant.js';

const KiB = 1024n;
const MiB = 1024n * KiB;
const GiB = 1024n * MiB;

/** The q35 layout: guest physical address, size, kind, and where it lives in the RAM memfd. */
const Q35: readonly { gpa: bigint; size: bigint; kind: RegionKind; offset: bigint }[] = [
  { gpa: 0n, size: 640n * KiB, kind: 'ram', offset: 0n }, // low RAM
  { gpa: 0xa_0000n, size: 128n * KiB, kind: 'mmio', offset: 0n }, // VGA window
  { gpa: 0xc_0000n, size: 128n * KiB, kind: 'rom', offset: 0xc_0000n }, // option ROMs (pc.rom)
  { gpa: 0xe_0000n, size: 128n * KiB, kind: 'rom', offset: 0xe_0000n }, // isa-bios (BIOS alias)
  { gpa: 1n * MiB, size: 63n * MiB, kind: 'ram', offset: 1n * MiB }, // RAM up to 64 MiB
  { gpa: 0xfebf_0000n, size: 64n * KiB, kind: 'mmio', offset: 0n }, // a device BAR
  { gpa: 0xfffc_0000n, size: 256n * KiB, kind: 'rom', offset: 64n * MiB }, // pc.bios
  { gpa: 4n * GiB, size: 32n * MiB, kind: 'ram', offset: 64n * MiB + 256n * KiB }, // RAM above 4 GiB
];
const MEMFD = 96n * MiB + 256n * KiB;
/** What the section rules must leave of Q35: [iova, size, readonly]. */
const EXPECTED = Q35.filter((r) => r.kind !== 'mmio').map((r) => [r.gpa, r.size, r.kind === 'rom'] as const);
/** A DIMM hot-added above 4 GiB. */
const DIMM = { gpa: 5n * GiB, size: 16n * MiB, kind: 'ram' as const, offset: 80n * MiB };

describeKernel(
  'engine on the kernel: a q35 memory map, replayed into later devices, with each backend choice',
  function () {
    this.timeout(120_000);
    let engine: Engine;
    let res: Resources;
    let ram: MemfdBuffer;
    let space: AddressSpace;
    let handles0: string[];
    const events: EngineEvent[] = [];
    const edus = new Map<string, Edu>(); // by BDF

    const region = (r: { gpa: bigint; size: bigint; kind: RegionKind; offset: bigint }): MemoryRegion => ({
      gpa: r.gpa,
      size: r.size,
      kind: r.kind,
      // MMIO has no host memory of its own: what backs it here is never mapped.
      backing: { fd: ram.fd, offset: r.offset, vaddr: ram.va + r.offset },
    });

    /** The edu of an attached device (BAR0 mapped, bus master on), made once per device. */
    function edu(bdf: string): Edu {
      let e = edus.get(bdf);
      if (!e) {
        const dev = engine.host.devices.get(bdf);
        expect(dev, `${bdf} attached`).to.not.equal(undefined);
        e = new Edu(res, dev!.fd);
        e.enableBusMaster();
        e.mapBar0();
        edus.set(bdf, e);
      }
      return e;
    }

    /** Device reads `count` bytes at `src` and writes them to RAM at `dst` (IOVAs = GPAs). */
    async function copyThroughDevice(e: Edu, src: bigint, dst: bigint, count: number): Promise<void> {
      await e.dma(false, src, EDU_DMA_BUFFER, count);
      await e.dma(true, EDU_DMA_BUFFER, dst, count);
    }

    const bytesAt = (gpa: bigint, count: number) => {
      const r = Q35.find((x) => x.kind !== 'mmio' && x.gpa <= gpa && gpa + BigInt(count) <= x.gpa + x.size)!;
      const at = Number(r.offset + gpa - r.gpa);
      return ram.bytes.subarray(at, at + count);
    };

    /** Every device of the space DMAs RAM -> device -> RAM through the engine's mappings. */
    async function expectDma(bdf: string, seed: number): Promise<void> {
      const src = pattern(bytesAt(2n * MiB, 2000), seed);
      const dst = bytesAt(3n * MiB, 2000).fill(0);
      await copyThroughDevice(edu(bdf), 2n * MiB, 3n * MiB, 2000);
      expect(Buffer.compare(Buffer.from(dst), Buffer.from(src)), `${bdf}: DMA through RAM`).to.equal(0);
    }

    /** Removes a device and its edu (BAR0 unmapped first: see Edu.unmapBar0). */
    async function remove(id: string, bdf: string): Promise<void> {
      edus.get(bdf)?.unmapBar0();
      edus.delete(bdf);
      await space.removeDevice(id);
    }

    const tables = () =>
      Object.values(space.mappings()).map((t) => t.map((m) => [m.iova, m.size, m.readonly]));

    before(async function () {
      handles0 = kernelHandles();
      engine = await createEngine(
        onSimulatedKernel() ? { kernel: 'sim', topology: simulatedTopology() } : { kernel: 'linux' },
      );
      engine.events$.subscribe((e) => events.push(e));
      res = new Resources(engine.port);
      ram = res.memfd(Number(MEMFD));
      space = engine.createAddressSpace('q35');
    });
    afterEach(function () {
      if (space) expectTablesMatchKernel(space);
    });
    after(async function () {
      try {
        res?.release(); // BAR and RAM mappings first: the engine then closes the device fds
        await engine?.shutdown();
      } finally {
        // Nothing the engine opened outlives it.
        expect(kernelHandles()).to.deep.equal(handles0);
      }
    });

    let first: { id: string; bdf: string; container: string };
    let later: { id: string; bdf: string; container: string };

    it('iommufd=on: attaches through iommufd; the committed q35 map has RAM below and above 4 GiB, ROM read-only, no MMIO', async function () {
      const d = await space.addDevice({ host: eduPair().iommufd.bdf, iommufd: 'on' });
      expect(d.backend).to.equal('iommufd');
      expect(d.reason).to.match(/iommufd=on/);
      first = d;
      for (const r of Q35.filter((x) => x.kind === 'rom'))
        pattern(bytesAt(r.gpa, Number(r.size)), Number(r.gpa >> 12n));
      space.begin();
      for (const r of Q35) space.regionAdd(region(r));
      await space.commit();
      expect(tables()).to.deep.equal([EXPECTED]);
      await expectDma(d.bdf, 1);
    });

    it('a device reads the ROM through its mapping but cannot write it', async function () {
      const e = edu(first.bdf);
      const rom = bytesAt(0xe_0000n, 1024);
      const before = Buffer.from(rom);
      const dst = bytesAt(4n * MiB, 1024).fill(0);
      await copyThroughDevice(e, 0xe_0000n, 4n * MiB, 1024);
      expect(Buffer.compare(Buffer.from(dst), before), 'ROM read through the IOMMU').to.equal(0);
      pattern(bytesAt(5n * MiB, 1024), 9);
      // The write half faults in the IOMMU: the ROM is mapped read-only.
      await expectDmaFault('a write to the read-only ROM', () =>
        copyThroughDevice(e, 5n * MiB, 0xe_0000n, 1024),
      );
      expect(Buffer.compare(Buffer.from(rom), before), 'ROM unchanged').to.equal(0);
    });

    it('iommufd=off: a device attached later gets the map replayed into a legacy container, and DMAs through it', async function () {
      const d = await space.addDevice({ host: eduPair().legacy.bdf, iommufd: 'off' });
      expect(d.backend).to.equal('legacy');
      expect(d.container).to.not.equal(first.container);
      later = d;
      const replay = events.find((e) => e.type === 'container.replayed' && e.container === d.container);
      expect(replay, 'replay event').to.include({ mapped: EXPECTED.length, copied: 0 });
      expect(tables()).to.deep.equal([EXPECTED, EXPECTED]);
      await expectDma(d.bdf, 2);
      // Read-only holds on type1 too.
      const rom = Buffer.from(bytesAt(0xc_0000n, 512));
      pattern(bytesAt(5n * MiB, 512), 10);
      await expectDmaFault('a write to the read-only option ROM', () =>
        copyThroughDevice(edu(d.bdf), 5n * MiB, 0xc_0000n, 512),
      );
      expect(Buffer.compare(Buffer.from(bytesAt(0xc_0000n, 512)), rom), 'ROM unchanged').to.equal(0);
    });

    it('memory hot-add and hot-remove above 4 GiB reach both containers', async function () {
      space.begin();
      space.regionAdd(region(DIMM));
      await space.commit();
      const withDimm = [...EXPECTED, [DIMM.gpa, DIMM.size, false] as const];
      expect(tables()).to.deep.equal([withDimm, withDimm]);
      space.begin();
      space.regionDel(region(DIMM));
      await space.commit();
      expect(tables()).to.deep.equal([EXPECTED, EXPECTED]);
    });

    it('iommufd=auto: re-plugged, the device joins the IOAS of the iommufd device (one container, no replay)', async function () {
      await remove(later.id, later.bdf);
      expect(tables()).to.deep.equal([EXPECTED]);
      const replays = events.filter((e) => e.type === 'container.replayed').length;
      const d = await space.addDevice({ host: eduPair().legacy.bdf, iommufd: 'auto' });
      expect(d.backend, d.reason).to.equal('iommufd');
      expect(d.container, 'shared container').to.equal(first.container);
      expect(events.filter((e) => e.type === 'container.replayed')).to.have.length(replays);
      later = d;
      await expectDma(first.bdf, 3);
      await expectDma(d.bdf, 4);
    });

    it('an explicit iommufd object: the device gets its own IOAS, replayed from host addresses (no IOAS_COPY across fds)', async function () {
      await remove(later.id, later.bdf);
      const obj = engine.createIommufd('own');
      const d = await space.addDevice({ host: eduPair().legacy.bdf, iommufd: obj });
      expect(d.backend).to.equal('iommufd');
      expect(d.container).to.not.equal(first.container);
      const replay = events.find((e) => e.type === 'container.replayed' && e.container === d.container);
      expect(replay, 'replay event').to.include({ mapped: EXPECTED.length, copied: 0 });
      expect(tables()).to.deep.equal([EXPECTED, EXPECTED]);
      later = d;
      await expectDma(d.bdf, 5);
    });

    it('hot-unplug of the first device: the other keeps working; removing low RAM then blocks it', async function () {
      await remove(first.id, first.bdf);
      expect(tables()).to.deep.equal([EXPECTED]);
      await expectDma(later.bdf, 6);
      const low = Q35[4]!;
      space.begin();
      space.regionDel(region(low));
      await space.commit();
      expect(tables()).to.deep.equal([EXPECTED.filter(([gpa]) => gpa !== low.gpa)]);
      const dst = bytesAt(3n * MiB, 64).fill(0x5a);
      await expectDmaFault('a write to removed low RAM', () =>
        edu(later.bdf).dma(true, EDU_DMA_BUFFER, 3n * MiB, 64),
      );
      expect(
        dst.every((x) => x === 0x5a),
        'memory untouched',
      ).to.equal(true);
    });

    it('shutdown detaches, unmaps and closes every fd it opened', async function () {
      const mine = kernelHandles().filter((h) => !handles0.includes(h) && !/vfio-engine-kernel-test/.test(h));
      expect(mine.length, 'the engine holds fds before shutdown').to.be.greaterThan(0);
      edus.clear();
      res.release();
      await engine.shutdown();
      expect(kernelHandles()).to.deep.equal(handles0);
      expect(engine.host.containers).to.deep.equal([]);
      space = undefined as never; // nothing left to compare
    });
  },
);
