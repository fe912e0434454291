// The engine on the kernel with a RAM device region: edu B's BAR0, mmapped from its device
// fd (VM_PFNMAP), committed as a ram_device region next to guest RAM. Linux 6.12's type1
// maps it (vfio_iommu_type1.c: vaddr_get_pfns, follow_fault_pfn); iommufd cannot pin it
// (iommufd/pages.c: pin_user_pages answers EFAULT for VM_IO | VM_PFNMAP), and QEMU's rule
// makes that one warning, not a failure. Then peer to peer: edu A's DMA engine writes B's
// liveness register (BAR0 + 0x04, which stores the bitwise NOT of what is written) at the
// IOVA where the legacy container maps B's BAR; through iommufd the same write is blocked.
// Runs in both VMs and unchanged on the simulated kernel.
import { expect } from 'chai';
import { expectDmaFault } from './dma-faults.js';
import { createEngine, type Engine } from '../../src/engine.js';
import type { AddressSpace, MemoryRegion } from '../../src/actors/address-space.js';
import { expectTablesMatchKernel, record } from '../engine-kit.js';
import { Edu } from './edu.js';
import { describeKernel } from './guest.js';
import { eduPair, Resources, type MemfdBuffer } from './kit.js';
import { onSimulatedKernel } from './recording-port.js';
import { simulatedTopology } from './variant.js';

const RAM_GPA = 0x10_0000n;
const RAM = 4 << 20;
/** Where B's BAR0 goes in guest-physical (= IOVA) space: below edu's 28-bit DMA mask. */
const BAR_GPA = 0x800_0000n;

describeKernel('engine on the kernel: a BAR as a ram_device region, peer-to-peer DMA', function () {
  this.timeout(120_000);
  let engine: Engine;
  let events: ReturnType<typeof record>;
  let res: Resources;
  let ram: MemfdBuffer;
  let space: AddressSpace;
  let bar: MemoryRegion;
  /** A's BAR mapping, released before A's fd is closed (a mapping keeps the device open). */
  let resA: Resources | undefined;
  const dev: Record<'a' | 'b', { bdf: string; id: string; container: string; edu: Edu }> = {} as never;

  before(async function () {
    engine = await createEngine(
      onSimulatedKernel() ? { kernel: 'sim', topology: simulatedTopology() } : { kernel: 'linux' },
    );
    events = record(engine);
    res = new Resources(engine.port);
    ram = res.memfd(RAM);
  });
  after(async function () {
    resA?.release();
    res?.release();
    await engine?.shutdown();
  });

  /** Opens edu `bdf` of the engine for DMA (bus mastering, BAR0 mapped through `r`). */
  function eduOf(r: Resources, bdf: string): { edu: Edu; bar: { va: bigint; size: bigint } } {
    const edu = new Edu(r, engine.host.devices.get(bdf)!.fd);
    edu.enableBusMaster();
    return { edu, bar: edu.mapBar0() };
  }
  const commit = async (op: 'add' | 'del', ...regions: MemoryRegion[]) => {
    space.begin();
    for (const r of regions) (op === 'add' ? space.regionAdd : space.regionDel).call(space, r);
    await space.commit();
  };
  const spans = (container: string) => space.mappings()[container]?.map((m) => [m.iova, m.size]);
  const stage = () => ram.bytes.subarray(0, 4);

  it('attaches edu A through iommufd and edu B through the legacy container; B maps its BAR0', async function () {
    const pair = eduPair();
    space = engine.createAddressSpace('memory');
    const a = await space.addDevice({ host: pair.iommufd.bdf, iommufd: 'on' });
    const b = await space.addDevice({ host: pair.legacy.bdf, iommufd: 'off' });
    expect([a.backend, b.backend]).to.deep.equal(['iommufd', 'legacy']);
    resA = new Resources(engine.port);
    dev.a = { ...a, edu: eduOf(resA, a.bdf).edu };
    const eb = eduOf(res, b.bdf);
    dev.b = { ...b, edu: eb.edu };
    bar = { gpa: BAR_GPA, size: eb.bar.size, backing: { vaddr: eb.bar.va }, kind: 'ram_device' };
  });

  it("commits RAM and B's BAR: the legacy container maps both, iommufd refuses the BAR (EFAULT) with one warning, nothing fails", async function () {
    const ramRegion: MemoryRegion = {
      gpa: RAM_GPA,
      size: BigInt(RAM),
      backing: { fd: ram.fd, offset: 0n, vaddr: ram.va },
      kind: 'ram',
    };
    await commit('add', ramRegion, bar);
    // Removed and added again: the map is tried again, and still warned about once.
    await commit('del', bar);
    await commit('add', bar);
    expect(spans(dev.b.container)).to.deep.equal([
      [RAM_GPA, BigInt(RAM)],
      [BAR_GPA, bar.size],
    ]);
    expect(spans(dev.a.container)).to.deep.equal([[RAM_GPA, BigInt(RAM)]]);
    const warnings = events.filter((e) => e.type === 'warning');
    expect(warnings, JSON.stringify(warnings.map((w) => w.message))).to.have.length(1);
    expect(warnings[0]).to.deep.include({ space: 'memory', container: dev.a.container });
    expect(warnings[0]!.message).to.match(
      /^ram_device map \[0x8000000, \+0x100000\): EFAULT on iommufd IOAS \d+/,
    );
    expect(events.filter((e) => /failed$/.test(e.type)).map((e) => e.type)).to.deep.equal([]);
    expect(events.filter((e) => e.type === 'txn.committed')).to.have.length(3);
    const st = engine.state().memory!;
    expect(st.containers.map((c) => c.state)).to.not.include('failed');
    expect(st.devices.map((d) => d.state)).to.deep.equal(['attached', 'attached']);
    expectTablesMatchKernel(space);
  });

  it("A through iommufd cannot write B's register at the BAR's IOVA (not mapped there)", async function () {
    await dev.b.edu.writeWord(stage(), RAM_GPA, BAR_GPA + 4n, 0x600d_cafe); // B to itself, to set a known value
    expect(await dev.b.edu.livenessOnceIt(~0x600d_cafe), 'B through its own container').to.equal(
      ~0x600d_cafe >>> 0,
    );
    await expectDmaFault("A's write to B's BAR, not mapped through iommufd", () =>
      dev.a.edu.writeWord(stage(), RAM_GPA, BAR_GPA + 4n, 0x0bad_f00d),
    );
    expect(await dev.b.edu.livenessOnceIt(~0x0bad_f00d)).to.equal(~0x600d_cafe >>> 0);
  });

  it("peer to peer: A moved to the legacy backend writes B's liveness register through the BAR mapping", async function () {
    resA!.release(); // A's BAR mapping holds A's device file open
    resA = undefined;
    await space.removeDevice(dev.a.id);
    const a = await space.addDevice({ host: dev.a.bdf, iommufd: 'off' });
    expect(a.backend).to.equal('legacy');
    expect(spans(a.container)).to.deep.include([BAR_GPA, bar.size]);
    resA = new Resources(engine.port);
    dev.a = { ...a, edu: eduOf(resA, a.bdf).edu };
    for (const v of [0x1234_5678, 0xa5a5_0f0f]) {
      await dev.a.edu.writeWord(stage(), RAM_GPA, BAR_GPA + 4n, v);
      expect(await dev.b.edu.livenessOnceIt(~v), `A wrote 0x${v.toString(16)}`).to.equal(~v >>> 0);
    }
  });

  it("with the BAR region removed A's write no longer reaches B", async function () {
    await commit('del', bar);
    for (const c of Object.keys(space.mappings())) expect(spans(c)).to.deep.equal([[RAM_GPA, BigInt(RAM)]]);
    expectTablesMatchKernel(space);
    await expectDmaFault("A's write to B's BAR after the region's removal", () =>
      dev.a.edu.writeWord(stage(), RAM_GPA, BAR_GPA + 4n, 0x7777_0000),
    );
    expect(await dev.b.edu.livenessOnceIt(~0x7777_0000)).to.equal(~0xa5a5_0f0f >>> 0);
  });
});
