// The engine under random interleavings (fast-check): transactions (add, del, del + re-add of
// the same range), hot-plug and unplug on three containers (a shared IOAS, an IOAS of its own
// iommufd object, a legacy container), issued without waiting for each other. Whatever the
// order, every container ends holding exactly the current memory map, and the kernel exactly
// what the engine's tables say. Also: a group used by another address space is refused.
import { expect } from 'chai';
import fc from 'fast-check';
import { VfioError } from '../src/backends/errors.js';
import { createEngine, type Engine } from '../src/engine.js';
import type { AddDeviceOptions, DeviceInfo, MemoryRegion } from '../src/actors/address-space.js';
import { ERRNO } from '../src/uapi/errno.js';
import { MiB, expectTablesMatchKernel, ram, simFds } from './engine-kit.js';

const PAGE = 0x1000n;
const SLOTS = 12;
/** Slot i: guest 4 MiB * i, backed at 1 MiB * i of the RAM memfd, up to 1 MiB long. */
const gpaOf = (slot: number) => BigInt(slot) * 4n * MiB;
const offOf = (slot: number) => BigInt(slot) * MiB;

type TxnOp = { slot: number; kind: 'add' | 'del' | 'readd'; pages: number; readonly: boolean };
type Action =
  { t: 'txn'; ops: TxnOp[] } | { t: 'plug'; dev: number } | { t: 'unplug'; dev: number } | { t: 'await' };

const action: fc.Arbitrary<Action> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant('txn' as const),
      ops: fc.array(
        fc.record({
          slot: fc.integer({ min: 0, max: SLOTS - 1 }),
          kind: fc.constantFrom('add' as const, 'del' as const, 'readd' as const),
          pages: fc.integer({ min: 1, max: 256 }),
          readonly: fc.boolean(),
        }),
        { minLength: 1, maxLength: 6 },
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ t: fc.constant('plug' as const), dev: fc.integer({ min: 0, max: 2 }) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ t: fc.constant('unplug' as const), dev: fc.integer({ min: 0, max: 2 }) }),
  },
  { weight: 1, arbitrary: fc.constant({ t: 'await' as const }) },
);

describe('engine under random interleavings of transactions and hot-plug (simulated kernel)', function () {
  this.timeout(120_000);
  let engine: Engine;
  let mem: ReturnType<typeof ram>;

  before(async function () {
    engine = await createEngine({ workers: 3 });
    mem = ram(engine.port, BigInt(SLOTS) * MiB);
  });
  after(async function () {
    mem?.free();
    await engine?.shutdown();
    expect(simFds()).to.deep.equal([]);
  });

  const region = (slot: number, pages: number, readonly: boolean): MemoryRegion => ({
    gpa: gpaOf(slot),
    size: BigInt(pages) * PAGE,
    readonly,
    backing: { fd: mem.fd, offset: offOf(slot), vaddr: mem.va + offOf(slot) },
  });

  it('every container ends with the current map, and the kernel with the tables', async function () {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(action, { minLength: 1, maxLength: 30 }), async (actions) => {
        const s = engine.createAddressSpace(`stress${run++}`);
        // A device per container kind: the default iommufd object's IOAS, an IOAS of its
        // own object (its own /dev/iommu fd), and the legacy container (no cdev).
        const devices: AddDeviceOptions[] = [
          { host: '0000:00:03.0', iommufd: 'auto', id: 'ioas' },
          { host: '0000:00:04.0', iommufd: engine.createIommufd(), id: 'own' },
          { host: '0000:00:06.0', iommufd: 'auto', id: 'legacy' },
        ];
        try {
          const model = new Map<number, { pages: number; readonly: boolean }>();
          const plugged = new Map<number, Promise<DeviceInfo>>();
          const last = new Map<number, Promise<unknown>>();
          let pending: Promise<unknown>[] = [];
          for (const a of actions) {
            if (a.t === 'await') {
              await Promise.all(pending);
              pending = [];
            } else if (a.t === 'plug') {
              if (plugged.has(a.dev)) continue;
              // A VMM orders the plug and unplug of one device (the id is reused); nothing else waits.
              const p = (last.get(a.dev) ?? Promise.resolve()).then(() => s.addDevice(devices[a.dev]!));
              plugged.set(a.dev, p);
              last.set(a.dev, p);
              pending.push(p);
            } else if (a.t === 'unplug') {
              const p = plugged.get(a.dev);
              if (!p) continue;
              plugged.delete(a.dev);
              const q = p.then((d) => s.removeDevice(d.id));
              last.set(a.dev, q);
              pending.push(q);
            } else {
              s.begin();
              for (const o of a.ops) {
                const cur = model.get(o.slot);
                if (o.kind === 'add' && !cur) {
                  s.regionAdd(region(o.slot, o.pages, o.readonly));
                  model.set(o.slot, o);
                } else if (o.kind !== 'add' && cur) {
                  s.regionDel(region(o.slot, cur.pages, cur.readonly));
                  model.delete(o.slot);
                  if (o.kind === 'readd') {
                    s.regionAdd(region(o.slot, o.pages, o.readonly));
                    model.set(o.slot, o);
                  }
                }
              }
              pending.push(s.commit());
            }
          }
          await Promise.all(pending);
          await s.flush();

          const expected = [...model.entries()]
            .sort(([a], [b]) => a - b)
            .map(([slot, r]) => ({
              iova: gpaOf(slot),
              size: BigInt(r.pages) * PAGE,
              vaddr: mem.va + offOf(slot),
              readonly: r.readonly,
            }));
          const infos = await Promise.all(plugged.values());
          const containers = new Set(infos.map((d) => d.container));
          const tables = s.mappings();
          expect(Object.keys(tables).sort()).to.deep.equal([...containers].sort());
          for (const [id, t] of Object.entries(tables)) expect(t, id).to.deep.equal(expected);
          expectTablesMatchKernel(s);
          expect(s.state().containers.every((c) => c.state !== 'failed')).to.equal(true);

          for (const d of infos) await s.removeDevice(d.id);
          expect(s.mappings()).to.deep.equal({});
        } finally {
          // Also after a failure: the next run (and the shrinker) starts from a clean host.
          await s.shutdown();
        }
        expect(engine.host.containers.filter((c) => c.space === s.name)).to.deep.equal([]);
      }),
      { numRuns: Number(process.env.VFIO_ENGINE_STRESS_RUNS ?? 200) },
    );
  });

  it('a device whose IOMMU group another address space uses is refused (EBUSY), naming the group', async function () {
    const s1 = engine.createAddressSpace('owner');
    const s2 = engine.createAddressSpace('other');
    const d = await s1.addDevice({ host: '0000:00:05.0', iommufd: 'off' });
    const err = await s2.addDevice({ host: '0000:00:05.1', iommufd: 'off' }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(VfioError);
    expect((err as VfioError).errno).to.equal(ERRNO.EBUSY);
    expect((err as VfioError).message).to.match(/group 3/);
    expect((err as VfioError).message).to.include("'owner'");
    // The same group in the same address space joins.
    const e = await s1.addDevice({ host: '0000:00:05.1', iommufd: 'off' });
    expect(e.container).to.equal(d.container);
    await s1.shutdown();
    await s2.shutdown();
    expect(engine.host.containers).to.deep.equal([]);
  });
});
