import { expect } from 'chai';
import type { DmaTarget } from '../src/backends/dma.js';
import { dmaUnmap } from '../src/backends/dma.js';
import { IntervalMap } from '../src/common/interval-map.js';
import { slotsInUse } from '../src/kernel/channel.js';
import { planResult, planTransaction, type DmaRequest } from '../src/memory/planner.js';
import type { DmaMapping } from '../src/memory/sections.js';
import { MAP, MFD, O, PROT } from '../src/uapi/libc.js';
import { SimPort, type SimKernelHandle } from '../src/kernel/sim-port.js';
import {
  ERRNO,
  IOMMU_IOAS_ALLOC,
  VFIO_EXTENSION,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_SET_IOMMU,
  iommu_ioas_alloc,
} from '../src/uapi/index.js';
import type { BatchOp } from '../src/workers/batch.js';
import { DmaPool, applyResults } from '../src/workers/pool.js';
import { firstGroup } from './differential/programs.js';

const P = 0x1000n;
const N = 1000;

/** A batch of map ops as the planner's ops, for applyResults. */
const asPlanMaps = (batch: BatchOp[]) =>
  batch.map((o) => ({
    ...o,
    op: 'map' as const,
    vaddr: o.vaddr!,
    readonly: false,
    nonFatal: false,
    source: 0,
  }));

describe('workers: DmaPool on the simulated kernel', function () {
  this.timeout(60_000);
  let sim: SimKernelHandle;
  let port: SimPort;
  let pool: DmaPool;
  let va: bigint;
  const fds: number[] = [];

  before(async function () {
    sim = await SimPort.start();
    port = sim.port();
    pool = new DmaPool({ port, sim: sim.shared, minThreads: 2, maxThreads: 2 });
    const mfd = port.memfdCreate('guest', MFD.CLOEXEC);
    port.ftruncate(mfd, BigInt(N) * P);
    va = port.mmap(BigInt(N) * P, PROT.READ | PROT.WRITE, MAP.SHARED, mfd, 0n);
  });
  after(async function () {
    await pool?.close();
    await sim?.stop();
  });

  const iommufdTarget = (): DmaTarget => {
    const fd = port.open('/dev/iommu', O.RDWR | O.CLOEXEC);
    fds.push(fd);
    const a = iommu_ioas_alloc.view().reset();
    port.ioctl(fd, IOMMU_IOAS_ALLOC, a.bytes);
    return { kind: 'iommufd', iommufd: fd, ioasId: a.out_ioas_id };
  };
  let legacyFds: number[] = [];
  /** A fresh type1 container holding the first group (a group is opened once: close the last one first). */
  const legacyTarget = (): DmaTarget => {
    for (const fd of legacyFds.reverse()) port.close(fd);
    const c = port.open('/dev/vfio/vfio', O.RDWR | O.CLOEXEC);
    const g = port.open(`/dev/vfio/${firstGroup(port)}`, O.RDWR | O.CLOEXEC);
    port.ioctl(g, VFIO_GROUP_SET_CONTAINER, c);
    port.ioctl(c, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU);
    legacyFds = [c, g];
    return { kind: 'legacy', containerFd: c };
  };
  const maps = (n: number, base = 0x100_0000n): BatchOp[] =>
    Array.from({ length: n }, (_, i) => ({
      op: 'map',
      iova: base + BigInt(i) * 2n * P,
      size: P,
      vaddr: va + BigInt(i) * P,
    }));
  const unmaps = (n: number, base = 0x100_0000n): BatchOp[] =>
    Array.from({ length: n }, (_, i) => ({ op: 'unmap', iova: base + BigInt(i) * 2n * P, size: P }));
  /** Probes whether [iova, iova + P) is mapped, by an exact unmap (which removes it). */
  const probeTake = (t: DmaTarget, iova: bigint) => dmaUnmap(port, t, iova, P) === P;

  for (const [name, make] of [
    ['iommufd IOAS', iommufdTarget],
    ['legacy type1 container', legacyTarget],
  ] as const) {
    it(`${name}: 1,000 maps then 1,000 unmaps in worker threads`, async function () {
      const t = make();
      const r = await pool.run(t, maps(N));
      expect(r.crash).to.equal(undefined);
      expect(r.results.every((x) => x.status === 'done')).to.equal(true);
      const u = await pool.run(t, unmaps(N));
      expect(u.results.every((x) => x.status === 'done' && x.bytes === P)).to.equal(true);
      expect(probeTake(t, 0x100_0000n)).to.equal(false);
    });
  }

  it('a failing op in the middle (EEXIST) is reported per op; the table stays equal to the kernel', async function () {
    const t = iommufdTarget();
    const base = 0x200_0000n;
    await pool.run(t, [{ op: 'map', iova: base + 500n * 2n * P, size: P, vaddr: va }], { inline: true });
    const table = new IntervalMap<DmaMapping>();
    table.insert(base + 1000n * P, base + 1001n * P, {
      iova: base + 1000n * P,
      size: P,
      vaddr: va,
      readonly: false,
    });
    const batch = maps(N, base);
    const r = await pool.run(t, batch);
    expect(r.results[500]).to.include({ status: 'failed', errno: ERRNO.EEXIST });
    expect(r.results.filter((x) => x.status === 'done')).to.have.length(N - 1);
    const ops = asPlanMaps(batch);
    applyResults(table, ops, r.results);
    // Probe every page by an exact unmap: mapped exactly where the table says.
    for (let i = 0; i < N; i++) {
      const iova = base + BigInt(i) * 2n * P;
      expect(probeTake(t, iova), `page ${i}`).to.equal(table.find(iova) !== undefined);
    }
  });

  it('runs a plan in parallel lanes and the kernel ends as planResult says', async function () {
    const t = legacyTarget();
    const table = new IntervalMap<DmaMapping>();
    const reqs: DmaRequest[] = Array.from({ length: 200 }, (_, i) => ({
      type: 'map',
      mapping: { iova: 0x300_0000n + BigInt(i) * 4n * P, size: 4n * P, vaddr: va, readonly: i % 2 === 0 },
    }));
    let plan = planTransaction(reqs, table);
    let res = await pool.runPlan(t, plan);
    applyResults(table, plan.ops, res.results);
    expect([...table].length).to.equal(200);
    // Partial dels: each cuts one page in the middle of a mapping.
    plan = planTransaction(
      Array.from({ length: 200 }, (_, i) => ({
        type: 'unmap',
        iova: 0x300_0000n + BigInt(i) * 4n * P + P,
        size: P,
      })),
      table,
    );
    const expected = planResult(table, plan);
    res = await pool.runPlan(t, plan);
    expect(res.results.every((x) => x.status === 'done')).to.equal(true);
    applyResults(table, plan.ops, res.results);
    expect([...table].map((x) => x.value)).to.deep.equal([...expected].map((x) => x.value));
    for (const m of [...table]) expect(dmaUnmap(port, t, m.start, m.end - m.start)).to.equal(m.end - m.start);
  });

  for (const mode of ['throw', 'exit'] as const) {
    for (const inFlight of [false, true]) {
      it(`a worker that crashes (${mode}, ${inFlight ? 'after the ioctl, before the journal' : 'before the ioctl'}) after k ops is reconciled from the journal`, async function () {
        const t = iommufdTarget();
        const base = 0x400_0000n;
        const k = 300;
        const batch = maps(N, base);
        const r = await pool.run(t, batch, { inline: false, crash: { after: k, mode, inFlight } });
        expect(r.crash).to.not.equal(undefined);
        expect(r.results.slice(0, k).every((x) => x.status === 'done')).to.equal(true);
        expect(r.results[k]).to.include({ status: 'not-run', probed: true });
        expect(r.results.slice(k + 1).every((x) => x.status === 'not-run' && !x.probed)).to.equal(true);
        const table = new IntervalMap<DmaMapping>();
        const ops = asPlanMaps(batch);
        applyResults(table, ops, r.results);
        expect(table.size).to.equal(k);
        for (let i = 0; i < N; i++) {
          const iova = base + BigInt(i) * 2n * P;
          expect(probeTake(t, iova), `page ${i}`).to.equal(table.find(iova) !== undefined);
        }
        // The pool still works after the crash.
        const again = await pool.run(t, maps(20, base));
        expect(again.results.every((x) => x.status === 'done')).to.equal(true);
      });
    }
  }

  it('keeps working through more crashed-and-replaced workers than the kernel channel has slots', async function () {
    // Each replacement thread attaches to the simulated kernel: a slot a thread, 64 in all.
    const t = iommufdTarget();
    const base = 0x900_0000n;
    for (let i = 0; i < 80; i++) {
      const r = await pool.run(t, maps(10, base), { inline: false, crash: { after: 5, mode: 'exit' } });
      expect(r.crash, `cycle ${i}`).to.not.equal(undefined);
      expect(
        r.results.map((x) => x.status),
        `cycle ${i}`,
      ).to.deep.equal([...Array(5).fill('done'), ...Array(5).fill('not-run')]);
      for (let k = 0; k < 5; k++)
        expect(probeTake(t, base + BigInt(k) * 2n * P), `cycle ${i}`).to.equal(true);
    }
    const again = await pool.run(t, maps(20, base), { inline: false });
    expect(again.crash).to.equal(undefined);
    expect(again.results.every((x) => x.status === 'done')).to.equal(true);
    // Held now: this thread's port and the live workers' (a dead worker's slot is back by the
    // time its batch settles).
    expect(slotsInUse(sim.shared)).to.be.at.most(1 + pool.threads);
  });

  it('an in-doubt unmap is settled by re-issuing it (inline, same code)', async function () {
    const t = legacyTarget();
    const base = 0x500_0000n;
    await pool.run(t, maps(10, base), { inline: true });
    const r = await pool.run(t, unmaps(10, base), {
      inline: true,
      crash: { after: 4, mode: 'throw', inFlight: true },
    });
    expect(r.results.map((x) => x.status)).to.deep.equal([
      ...Array(5).fill('done'),
      ...Array(5).fill('not-run'),
    ]);
    expect(r.results[4]!.probed).to.equal(true);
    for (let i = 0; i < 10; i++) expect(probeTake(t, base + BigInt(i) * 2n * P)).to.equal(i >= 5);
  });

  it('IOAS_COPY shares a mapping into another IOAS of the same iommufd (a COPY batch op)', async function () {
    const src = iommufdTarget();
    const a = iommu_ioas_alloc.view().reset();
    port.ioctl(src.kind === 'iommufd' ? src.iommufd : -1, IOMMU_IOAS_ALLOC, a.bytes);
    const dst: DmaTarget = {
      kind: 'iommufd',
      iommufd: (src as { iommufd: number }).iommufd,
      ioasId: a.out_ioas_id,
    };
    await pool.run(src, [{ op: 'map', iova: 0x800_0000n, size: 4n * P, vaddr: va }], { inline: true });
    const r = await pool.run(
      dst,
      [
        {
          op: 'copy',
          iova: 0x800_0000n,
          size: 4n * P,
          srcIoas: (src as { ioasId: number }).ioasId,
          readonly: true,
        },
      ],
      { inline: true },
    );
    expect(r.results[0]!.status).to.equal('done');
    expect(dmaUnmap(port, dst, 0x800_0000n, 4n * P)).to.equal(4n * P);
  });

  it('cancellation stops a batch between ops; not-run ops had no effect', async function () {
    const t = iommufdTarget();
    const ac = new AbortController();
    ac.abort();
    const r = await pool.run(t, maps(50, 0x600_0000n), { signal: ac.signal });
    expect(r.results.every((x) => x.status === 'not-run')).to.equal(true);
    expect(probeTake(t, 0x600_0000n)).to.equal(false);
  });

  for (const inline of [true, false]) {
    it(`an fd closed under the batch (EBADF) ends it: nothing more is issued, in any lane (${inline ? 'inline' : 'worker'})`, async function () {
      const t = iommufdTarget() as Extract<DmaTarget, { kind: 'iommufd' }>;
      port.close(t.iommufd);
      const r = await pool.run(t, [maps(3, 0xa00_0000n), maps(3, 0xb00_0000n)], { inline });
      expect(r.crash).to.equal(undefined);
      expect(r.results.map((x) => [x.status, x.errno])).to.deep.equal([
        ['failed', ERRNO.EBADF],
        ...Array(5).fill(['not-run', 0]),
      ]);
    });
  }

  it('a failed op skips the rest of its lane, not other lanes', async function () {
    const t = iommufdTarget();
    const base = 0x700_0000n;
    await pool.run(t, [{ op: 'map', iova: base, size: P, vaddr: va }], { inline: true });
    const r = await pool.run(
      t,
      [
        [
          { op: 'map', iova: base, size: P, vaddr: va },
          { op: 'unmap', iova: base, size: P },
        ],
        [{ op: 'map', iova: base + 4n * P, size: P, vaddr: va }],
      ],
      { inline: true },
    );
    expect(r.results.map((x) => x.status)).to.deep.equal(['failed', 'skipped', 'done']);
  });
});
