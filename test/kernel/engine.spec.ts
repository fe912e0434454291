// The engine on the real kernel: one address space holding both backends (an edu through
// iommufd, the other through the legacy container), guest RAM committed as a MemoryListener
// transaction, DMA through the mappings the engine made, hot-unplug of one device while the
// other keeps working, and a removed region blocking the device. Runs in both VMs (on
// virtio-iommu it proves the fallback for 6.12's collapsed IOVA space after an early
// HWPT_ALLOC, see IommufdContainer.attachDevice) and unchanged on the simulated kernel.
import { expect } from 'chai';
import { expectDmaFault } from './dma-faults.js';
import { createEngine, type Engine } from '../../src/engine.js';
import type { AddressSpace, MemoryRegion } from '../../src/actors/address-space.js';
import { expectTablesMatchKernel } from '../engine-kit.js';
import { Edu } from './edu.js';
import { eduPair, pattern, Resources, type MemfdBuffer } from './kit.js';
import { onSimulatedKernel } from './recording-port.js';
import { describeKernel } from './guest.js';
import { simulatedTopology } from './variant.js';

const GPA = 0x10_0000n;
const RAM = 8 << 20;
const COUNT = 3000;

describeKernel('engine on the kernel: both backends in one address space, DMA, hot-unplug', function () {
  this.timeout(120_000);
  let engine: Engine;
  let res: Resources;
  let ram: MemfdBuffer;
  let space: AddressSpace;
  const edus: Record<'a' | 'b', { bdf: string; id: string; edu: Edu }> = {} as never;

  before(async function () {
    engine = await createEngine(
      onSimulatedKernel() ? { kernel: 'sim', topology: simulatedTopology() } : { kernel: 'linux' },
    );
    res = new Resources(engine.port);
    ram = res.memfd(RAM);
  });
  afterEach(function () {
    if (space) expectTablesMatchKernel(space);
  });
  after(async function () {
    res?.release(); // BAR and RAM mappings first: the engine then closes the device fds
    await engine?.shutdown();
  });

  // DMA `COUNT` bytes RAM -> device -> RAM: from guest RAM at GPA (IOVA = GPA) into the edu
  // buffer, then back into RAM at GPA + 2 pages. Returns whether the bytes arrived.
  async function roundTrip(edu: Edu, seed: number): Promise<boolean> {
    const src = ram.bytes.subarray(0, COUNT);
    const dst = ram.bytes.subarray(0x2000, 0x2000 + COUNT);
    pattern(src, seed);
    dst.fill(0);
    await edu.dma(false, GPA, 0x40000n, COUNT);
    await edu.dma(true, 0x40000n, GPA + 0x2000n, COUNT);
    return Buffer.compare(Buffer.from(src), Buffer.from(dst)) === 0;
  }

  it('attaches one edu through iommufd (auto) and the other through the legacy container (off)', async function () {
    const pair = eduPair();
    space = engine.createAddressSpace('memory');
    const a = await space.addDevice({ host: pair.iommufd.bdf, iommufd: 'auto' });
    const b = await space.addDevice({ host: pair.legacy.bdf, iommufd: 'off' });
    expect(a.backend, a.reason).to.equal('iommufd');
    expect(b.backend, b.reason).to.equal('legacy');
    expect(a.container).to.not.equal(b.container);
    for (const [k, d] of [
      ['a', a],
      ['b', b],
    ] as const) {
      const dev = engine.host.devices.get(d.bdf);
      expect(dev, d.bdf).to.not.equal(undefined);
      const edu = new Edu(res, dev!.fd);
      edu.enableBusMaster();
      edu.mapBar0();
      edus[k] = { bdf: d.bdf, id: d.id, edu };
    }
  });

  const guestRam = (): MemoryRegion => ({
    gpa: GPA,
    size: BigInt(RAM),
    backing: { fd: ram.fd, offset: 0n, vaddr: ram.va },
    kind: 'ram',
  });

  it('maps committed guest RAM into both containers, and both devices DMA through it', async function () {
    space.begin();
    space.regionAdd(guestRam());
    await space.commit();
    const tables = Object.values(space.mappings());
    expect(tables).to.have.length(2);
    for (const t of tables) expect(t.map((m) => [m.iova, m.size])).to.deep.equal([[GPA, BigInt(RAM)]]);
    expect(await roundTrip(edus.a.edu, 1), 'iommufd device').to.equal(true);
    expect(await roundTrip(edus.b.edu, 2), 'legacy device').to.equal(true);
  });

  it('hot-unplugs the iommufd device; the legacy device keeps working', async function () {
    edus.a.edu.unmapBar0(); // else the device stays open in the kernel (Edu.unmapBar0)
    await space.removeDevice(edus.a.id);
    expect(Object.values(space.mappings())).to.have.length(1);
    expect(await roundTrip(edus.b.edu, 3)).to.equal(true);
  });

  it('a removed region blocks the device: memory stays untouched', async function () {
    space.begin();
    space.regionDel(guestRam());
    await space.commit();
    expect(Object.values(space.mappings())[0]).to.deep.equal([]);
    const dst = ram.bytes.subarray(0x2000, 0x2000 + 64);
    dst.fill(0x5a);
    await expectDmaFault('a write to a removed region', () =>
      edus.b.edu.dma(true, 0x40000n, GPA + 0x2000n, 64),
    );
    expect(dst.every((x) => x === 0x5a)).to.equal(true);
  });
});
