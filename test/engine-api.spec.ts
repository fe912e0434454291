// The public API's answers: commit()'s result (ok, counts, or the typed error of a failed
// container) and the actor inspector (xstate inspection of every actor the engine creates).
import { expect } from 'chai';
import type { InspectionEvent } from 'xstate';
import { VfioError } from '../src/backends/errors.js';
import { createEngine, traceInspector, type Engine } from '../src/engine.js';
import { ERRNO } from '../src/uapi/errno.js';
import { MiB, expectTablesMatchKernel, ram, simFds } from './engine-kit.js';

describe('engine API: commit results and the actor inspector (simulated kernel)', function () {
  this.timeout(60_000);
  let engine: Engine;
  let mem: ReturnType<typeof ram>;
  const inspected: InspectionEvent[] = [];
  const trace: string[] = [];

  beforeEach(async function () {
    inspected.length = 0;
    trace.length = 0;
    engine = await createEngine({
      inspector: [(e) => inspected.push(e), traceInspector((l) => trace.push(l))],
    });
    mem = ram(engine.port, 16n * MiB);
  });
  afterEach(async function () {
    mem.free();
    await engine.shutdown();
    expect(simFds()).to.deep.equal([]);
  });

  const region = (gpa: bigint, off: bigint, size: bigint) => ({
    gpa,
    size,
    backing: { fd: mem.fd, offset: off, vaddr: mem.va + off },
  });

  it('commit() resolves with what the transaction did; an empty one with nothing', async function () {
    const s = engine.createAddressSpace('api');
    const a = await s.addDevice({ host: '0000:00:03.0' });
    const b = await s.addDevice({ host: '0000:00:06.0' }); // legacy: a second container
    expect(b.container).to.not.equal(a.container);
    s.begin();
    s.regionAdd(region(0n, 0n, 4n * MiB));
    s.regionAdd(region(0x1_0000_0000n, 4n * MiB, 4n * MiB));
    const r = await s.commit();
    expect(r).to.include({ txn: 'api/txn0', ok: true, mapped: 4, unmapped: 0, containers: 2 });
    expect(r.ms).to.be.a('number');
    expect(r.error).to.equal(undefined);
    s.begin();
    expect(await s.commit()).to.include({ txn: null, ok: true, mapped: 0, containers: 0 });
    expectTablesMatchKernel(s);
  });

  it('a transaction a container cannot apply resolves ok: false with the typed error (op, range, errno)', async function () {
    const s = engine.createAddressSpace('bad');
    await s.addDevice({ host: '0000:00:03.0' });
    s.begin();
    s.regionAdd(region(0n, 0n, MiB));
    // Not mapped in the process: the kernel cannot pin it (EFAULT).
    s.regionAdd({ gpa: 0x4000_0000n, size: MiB, backing: { vaddr: 0x7000_0000_0000n } });
    const r = await s.commit();
    expect(r.ok).to.equal(false);
    expect(r.txn).to.equal('bad/txn0');
    expect(r.error).to.be.instanceOf(VfioError);
    const e = r.error as VfioError;
    expect(e.op).to.equal('dma_map');
    expect(e.iova).to.equal(0x4000_0000n);
    expect(e.size).to.equal(MiB);
    expect(e.errno).to.equal(ERRNO.EFAULT);
    expect(e.message).to.match(/dma_map .*0x40000000.*EFAULT/);
  });

  it('the inspector sees every actor (address space, container, device) under its engine id', async function () {
    const s = engine.createAddressSpace('insp');
    const d = await s.addDevice({ host: '0000:00:03.0', id: 'nic' });
    s.begin();
    s.regionAdd(region(0n, 0n, MiB));
    await s.commit();
    await s.removeDevice(d.id);
    const ids = new Set(
      inspected.filter((e) => e.type === '@xstate.actor').map((e) => (e.actorRef as { id?: string }).id),
    );
    expect([...ids]).to.include.members(['insp', 'nic', d.container]);
    const plain = trace.map((l) => l.replace(/^\+ *[\d.]+ ms {2}/, ''));
    expect(plain).to.include('nic  created -> opening  (OPEN)');
    expect(plain).to.include('nic  attaching -> attached  (xstate.done.actor.attachDevice)');
    expect(plain).to.include(`${d.container}  ready -> applying  (APPLY)`);
    expect(plain.some((l) => l.startsWith('nic  ') && l.includes('-> closed'))).to.equal(true);
  });

  it('a throwing inspector breaks nothing', async function () {
    const e2 = await createEngine({
      inspector: () => {
        throw new Error('broken inspector');
      },
    });
    try {
      const s = e2.createAddressSpace();
      const d = await s.addDevice({ host: '0000:00:03.0' });
      expect(d.backend).to.equal('iommufd');
    } finally {
      await e2.shutdown();
    }
  });
});
