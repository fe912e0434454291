import { expect } from 'chai';
import { Subject } from 'rxjs';
import { VfioError } from '../src/backends/errors.js';
import type { IommufdContainer } from '../src/backends/iommufd.js';
import { LegacyContainer } from '../src/backends/legacy.js';
import { O, RLIMIT } from '../src/uapi/libc.js';
import { createEngine, type Engine } from '../src/engine.js';
import type { ListenerEvent } from '../src/memory/transaction.js';
import type { MemoryRegion } from '../src/actors/address-space.js';
import { MiB, expectTablesMatchKernel, ram, record, simFds } from './engine-kit.js';
import { Edu } from './kernel/edu.js';
import { Resources } from './kernel/kit.js';

describe('engine on the simulated kernel', function () {
  this.timeout(60_000);
  let engine: Engine;
  let events: ReturnType<typeof record>;
  let mem: ReturnType<typeof ram>;
  const spaces: ReturnType<Engine['createAddressSpace']>[] = [];
  const space = (name?: string) => {
    const s = engine.createAddressSpace(name);
    spaces.push(s);
    return s;
  };
  const region = (
    gpa: bigint,
    off: bigint,
    size: bigint,
    extra: Partial<MemoryRegion> = {},
  ): MemoryRegion => ({
    gpa,
    size,
    backing: { fd: mem.fd, offset: off, vaddr: mem.va + off },
    ...extra,
  });

  beforeEach(async function () {
    engine = await createEngine({ workers: 2 });
    events = record(engine);
    mem = ram(engine.port, 64n * MiB);
    spaces.length = 0;
  });
  afterEach(async function () {
    // After every test: the tables equal the kernel's, and shutdown leaves no fd open.
    for (const s of spaces) {
      await s.flush();
      expectTablesMatchKernel(s);
    }
    mem.free();
    await engine.shutdown();
    expect(simFds()).to.deep.equal([]);
    expect(events.filter((e) => e.type === 'container.created').length).to.equal(
      events.filter((e) => e.type === 'container.destroyed').length,
    );
  });

  it('selects backends with auto, falling back to legacy for a device without a cdev, and says why', async function () {
    const s = space('memory');
    const a = await s.addDevice({ host: '0000:00:03.0' });
    const b = await s.addDevice({ host: '0000:00:06.0', iommufd: 'auto' });
    expect(a.backend).to.equal('iommufd');
    expect(b.backend).to.equal('legacy');
    expect(b.reason).to.match(/has no VFIO cdev, using the legacy container/);
    const sel = events.filter((e) => e.type === 'backend.selected');
    expect(sel.map((e) => e.backend)).to.deep.equal(['iommufd', 'legacy']);
    const st = engine.state().memory!;
    expect(st.devices.map((d) => d.state)).to.deep.equal(['attached', 'attached']);
    expect(st.containers.map((c) => c.backend)).to.deep.equal(['iommufd', 'legacy']);
  });

  it("iommufd 'on' for a device without a cdev fails the add with a clear error and leaves nothing", async function () {
    const s = space();
    const err = await s.addDevice({ host: '0000:00:06.0', iommufd: 'on' }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(VfioError);
    expect((err as VfioError).message).to.match(/iommufd=on: cannot use iommufd/);
    expect(engine.state()[s.name]!.devices).to.deep.equal([]);
  });

  it('replays a q35 map into the container of a device added later (ROM read-only, MMIO skipped)', async function () {
    const s = space();
    s.begin();
    s.regionAdd(region(0n, 0n, 16n * MiB));
    s.regionAdd(region(0xfebc_0000n, 0n, 0x1000n, { kind: 'mmio' }));
    s.regionAdd(region(0xfff0_0000n, 48n * MiB, MiB, { kind: 'rom' }));
    s.regionAdd(region(0x1_0000_0000n, 16n * MiB, 32n * MiB));
    await s.commit();
    expect(s.mappings()).to.deep.equal({});
    const d = await s.addDevice({ host: '0000:00:03.0' });
    const t = s.mappings()[d.container]!;
    expect(t.map((m) => [m.iova, m.size, m.readonly])).to.deep.equal([
      [0n, 16n * MiB, false],
      [0xfff0_0000n, MiB, true],
      [0x1_0000_0000n, 32n * MiB, false],
    ]);
  });

  it('takes a del and re-add of the same range in one transaction, and hot-add/remove', async function () {
    const s = space();
    const d = await s.addDevice({ host: '0000:00:04.0' });
    s.begin();
    s.regionAdd(region(0n, 0n, 8n * MiB));
    await s.commit();
    s.begin();
    s.regionDel(region(0n, 0n, 8n * MiB));
    s.regionAdd(region(0n, 8n * MiB, 8n * MiB));
    s.regionAdd(region(0x4000_0000n, 16n * MiB, 4n * MiB)); // hot-add
    await s.commit();
    let t = s.mappings()[d.container]!;
    expect(t.map((m) => [m.iova, m.vaddr - mem.va])).to.deep.equal([
      [0n, 8n * MiB],
      [0x4000_0000n, 16n * MiB],
    ]);
    expectTablesMatchKernel(s);
    s.regionDel(region(0x4000_0000n, 16n * MiB, 4n * MiB)); // hot-remove, outside a transaction
    await s.flush();
    t = s.mappings()[d.container]!;
    expect(t.map((m) => m.iova)).to.deep.equal([0n]);
    const txns = events.filter((e) => e.type === 'txn.committed');
    expect(txns).to.have.length(3);
    for (const e of txns) expect(e.ms).to.be.a('number');
  });

  it('takes memory changes as an Observable of listener events', async function () {
    const s = space();
    const d = await s.addDevice({ host: '0000:00:03.0' });
    const ev$ = new Subject<ListenerEvent<MemoryRegion>>();
    const sub = s.listen(ev$);
    ev$.next({ type: 'begin' });
    ev$.next({ type: 'add', region: region(0x10_0000n, 0n, 4n * MiB) });
    ev$.next({ type: 'commit' });
    ev$.next({ type: 'commit' }); // a protocol slip: reported, not fatal
    await s.flush();
    sub.unsubscribe();
    expect(s.mappings()[d.container]!.map((m) => m.iova)).to.deep.equal([0x10_0000n]);
    expect(
      events.some((e) => e.type === 'warning' && /commit-without-begin/.test(e.message as string)),
    ).to.equal(true);
  });

  it('hot-unplugs a device while a transaction is in flight; the last device tears the container down', async function () {
    const s = space();
    const a = await s.addDevice({ host: '0000:00:03.0' });
    const b = await s.addDevice({ host: '0000:00:04.0' });
    expect(b.container).to.equal(a.container); // two devices share the IOAS
    s.begin();
    for (let i = 0n; i < 256n; i++) s.regionAdd(region(i * 0x20_0000n, i * 0x1000n * 16n, 0x1000n * 16n));
    const committed = s.commit();
    const removed = s.removeDevice(a.id);
    await Promise.all([committed, removed]);
    expect(s.mappings()[b.container]).to.have.length(256);
    expectTablesMatchKernel(s);
    await s.removeDevice(b.id);
    expect(s.mappings()).to.deep.equal({});
    expect(events.filter((e) => e.type === 'container.destroyed')).to.have.length(1);
  });

  it('serves both backends in one address space and keeps both tables equal to the kernel', async function () {
    const s = space();
    const a = await s.addDevice({ host: '0000:00:03.0', iommufd: 'on' });
    const b = await s.addDevice({ host: '0000:00:05.0', iommufd: 'off' });
    const c = await s.addDevice({ host: '0000:00:05.1', iommufd: 'off' }); // same group: same container
    expect(c.container).to.equal(b.container);
    s.begin();
    s.regionAdd(region(0n, 0n, 4n * MiB));
    s.regionAdd(region(0x1_0000_0000n, 4n * MiB, 4n * MiB, { readonly: true }));
    await s.commit();
    const m = s.mappings();
    expect(Object.keys(m)).to.deep.equal([a.container, b.container]);
    expect(m[a.container]).to.deep.equal(m[b.container]);
  });

  it('fills a second IOAS on the same iommufd object by IOAS_COPY', async function () {
    const s = space();
    const obj = engine.createIommufd('shared');
    const a = await s.addDevice({ host: '0000:00:03.0', iommufd: obj });
    s.begin();
    for (let i = 0n; i < 8n; i++) s.regionAdd(region(i * 0x100_0000n, i * MiB, MiB, { readonly: i === 7n }));
    await s.commit();
    // An IOAS that cannot take the device (another IOMMU, in real life) makes the backend allocate a second one.
    const first = s.containerBackend(a.container)!;
    first.attachDevice = () => {
      throw new Error('incompatible');
    };
    const b = await s.addDevice({ host: '0000:00:04.0', iommufd: obj });
    expect(b.container).to.not.equal(a.container);
    const replay = events.find((e) => e.type === 'container.replayed' && e.container === b.container)!;
    expect(replay.copied).to.equal(8);
    expect(replay.mapped).to.equal(0);
    expect(s.mappings()[b.container]).to.deep.equal(s.mappings()[a.container]);
  });

  it('fails an attach with the first error when the replay cannot map, leaving nothing behind', async function () {
    const s = space();
    s.begin();
    s.regionAdd(region(0n, 0n, 4n * MiB));
    s.regionAdd({ gpa: 0x4000_0000n, size: MiB, backing: { vaddr: 0x7000_0000_0000n } }); // not mapped in the process
    await s.commit();
    const err = await s.addDevice({ host: '0000:00:03.0' }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(VfioError);
    expect((err as VfioError).op).to.equal('dma_map');
    expect((err as VfioError).iova).to.equal(0x4000_0000n);
    expect(events.some((e) => e.type === 'container.failed' && e.phase === 'init')).to.equal(true);
    expect(s.mappings()).to.deep.equal({});
    expect(engine.host.containers).to.deep.equal([]);
    // Without the bad region the device attaches.
    s.regionDel({ gpa: 0x4000_0000n, size: MiB, backing: { vaddr: 0x7000_0000_0000n } });
    const d = await s.addDevice({ host: '0000:00:03.0' });
    expect(s.mappings()[d.container]).to.have.length(1);
  });

  it('releases the other devices of a container whose detach failed (the kernel and the table may differ)', async function () {
    const s = space();
    const a = await s.addDevice({ host: '0000:00:03.0' });
    const b = await s.addDevice({ host: '0000:00:04.0' });
    expect(b.container).to.equal(a.container);
    s.begin();
    s.regionAdd(region(0n, 0n, 4n * MiB));
    await s.commit();
    const backend = s.containerBackend(a.container)!;
    const detach = backend.detachDevice.bind(backend);
    let calls = 0;
    backend.detachDevice = (dev) => {
      if (calls++ === 0) throw new VfioError({ op: 'detach_device', device: dev.bdf, errno: 5 });
      detach(dev);
    };
    await s.removeDevice(a.id);
    await s.flush();
    const failed = events.find((e) => e.type === 'container.failed')!;
    expect([failed.container, failed.phase, (failed.error as { code?: string }).code]).to.deep.equal([
      a.container,
      'detach',
      'EIO',
    ]);
    const devFailed = events.filter((e) => e.type === 'device.failed');
    expect(devFailed.map((e) => [e.device, (e.error as { code?: string }).code])).to.have.deep.members([
      [a.id, 'EIO'],
      [b.id, 'EIO'],
    ]);
    expect(events.some((e) => e.type === 'container.destroyed' && e.container === a.container)).to.equal(
      true,
    );
    expect(simFds()).to.deep.equal([]);
    expect(engine.state()[s.name]!.devices.map((d) => [d.id, d.state])).to.deep.equal([[b.id, 'closed']]);
  });

  it('releases the devices of containers that fail at runtime: closed, detached, torn down, nothing left in the kernel', async function () {
    const s = space();
    const a = await s.addDevice({ host: '0000:00:03.0', iommufd: 'on' });
    const b = await s.addDevice({ host: '0000:00:05.0', iommufd: 'off' });
    const c = await s.addDevice({ host: '0000:00:05.1', iommufd: 'off' }); // b's group: b's container
    // When a container fails its table is reconciled from the journal: it equals the kernel's.
    const atFailure = new Map<string, bigint[]>();
    let mismatch: unknown;
    const sub = engine.events$.subscribe((e) => {
      if (e.type !== 'container.failed') return;
      atFailure.set(
        e.container,
        s.mappings(e.container)[e.container]!.map((m) => m.iova),
      );
      try {
        expectTablesMatchKernel(s, e.container);
      } catch (err) {
        mismatch = err;
      }
    });
    const bad = { gpa: 0x4000_0000n, size: MiB, backing: { vaddr: 0x7000_0000_0000n } }; // not mapped in the process
    s.begin();
    s.regionAdd(region(0n, 0n, 4n * MiB));
    s.regionAdd(bad);
    s.regionAdd(region(0x8000_0000n, 4n * MiB, 4n * MiB));
    await s.commit(); // settles once the failed containers have released their devices
    sub.unsubscribe();
    expect(mismatch).to.equal(undefined);
    expect(Object.fromEntries(atFailure)).to.deep.equal({
      [a.container]: [0n, 0x8000_0000n],
      [b.container]: [0n, 0x8000_0000n],
    });
    const failed = events.filter((e) => e.type === 'container.failed');
    expect(failed.map((e) => [e.container, e.phase])).to.have.deep.members([
      [a.container, 'runtime'],
      [b.container, 'runtime'],
    ]);
    expect((failed[0]!.error as { code?: string }).code).to.equal('EFAULT');
    expect(events.some((e) => e.type === 'txn.failed')).to.equal(true);
    expect(events.filter((e) => e.type === 'device.failed').map((e) => e.device)).to.have.members([
      a.id,
      b.id,
      c.id,
    ]);
    expect(events.filter((e) => e.type === 'container.destroyed').map((e) => e.container)).to.have.members([
      a.container,
      b.container,
    ]);
    // Released: every fd closed, no container left; the devices show closed, with the error.
    expect(simFds()).to.deep.equal([]);
    expect(engine.host.containers).to.deep.equal([]);
    expect(s.mappings()).to.deep.equal({});
    const st = engine.state()[s.name]!;
    expect(st.containers).to.deep.equal([]);
    expect(st.devices.map((d) => [d.id, d.state, d.container, d.error?.code])).to.deep.equal([
      [a.id, 'closed', null, 'EFAULT'],
      [b.id, 'closed', null, 'EFAULT'],
      [c.id, 'closed', null, 'EFAULT'],
    ]);
    // The kernel let go too: the group and the cdev open again, and a new container's table
    // equals the kernel's (checked after each test).
    s.regionDel(bad);
    await s.removeDevice(b.id);
    expect(engine.state()[s.name]!.devices.map((d) => d.id)).to.deep.equal([a.id, c.id]);
    const b2 = await s.addDevice({ host: '0000:00:05.0', iommufd: 'off' });
    const a2 = await s.addDevice({ host: '0000:00:03.0', iommufd: 'on' });
    expect(s.mappings()[b2.container]!.map((m) => m.iova)).to.deep.equal([0n, 0x8000_0000n]);
    expect(s.mappings()[a2.container]!.map((m) => m.iova)).to.deep.equal([0n, 0x8000_0000n]);
  });

  /** The fd behind a container: legacy, the container's; iommufd, its object's /dev/iommu. */
  const containerFd = (s: ReturnType<typeof space>, id: string): number => {
    const b = s.containerBackend(id)!;
    return b instanceof LegacyContainer ? b.fd : (b as IommufdContainer).backend.fd;
  };

  for (const backend of ['iommufd', 'legacy'] as const) {
    it(`${backend}: a container fd closed behind the engine fails the next batch with EBADF; the container is lost and released, and the kernel keeps nothing of it`, async function () {
      // Room for one copy of the guest's pages: the re-add below fits only if the kernel
      // unpinned what the lost container had mapped.
      engine.port.setrlimit(RLIMIT.MEMLOCK, {
        cur: 6n * MiB,
        max: engine.port.getrlimit(RLIMIT.MEMLOCK).max,
      });
      const option = () => (backend === 'iommufd' ? engine.createIommufd() : 'off');
      const s = space();
      const d = await s.addDevice({ host: '0000:00:03.0', iommufd: option() });
      s.begin();
      s.regionAdd(region(0n, 0n, 4n * MiB));
      await s.commit();
      engine.port.close(containerFd(s, d.container)); // behind the engine's back
      s.begin();
      s.regionAdd(region(0x1000_0000n, 4n * MiB, MiB));
      await s.commit();
      const batch = events.find((e) => e.type === 'batch.failed')!;
      expect(batch.container).to.equal(d.container);
      expect(batch.error).to.deep.include({ code: 'EBADF', errno: 9, syscall: 'dma_map' });
      // Closed, or already taken again by a file another thread of the process opened (a DMA
      // worker still loading its modules): the engine names whichever it finds, and sends nothing.
      expect((batch.error as { message: string }).message).to.match(
        /^dma_map \[0x10000000, \+0x100000\) on (iommufd IOAS|legacy container fd) \d+: EBADF .*(closed behind the engine|now refers to \/)/,
      );
      const failed = events.find((e) => e.type === 'container.failed')!;
      expect([failed.container, failed.phase]).to.deep.equal([d.container, 'lost']);
      expect(events.some((e) => e.type === 'container.destroyed' && e.container === d.container)).to.equal(
        true,
      );
      expect(simFds()).to.deep.equal([]);
      const st = engine.state()[s.name]!;
      expect(st.containers).to.deep.equal([]);
      expect(st.devices.map((x) => [x.state, x.error?.code])).to.deep.equal([['closed', 'EBADF']]);
      await s.removeDevice(d.id);
      const again = await s.addDevice({ host: '0000:00:03.0', iommufd: option() });
      expect(s.mappings()[again.container]!.map((m) => m.iova)).to.deep.equal([0n, 0x1000_0000n]);
    });
  }

  it('sends nothing to a container fd number another file has taken, and never closes it; other containers go on', async function () {
    const s = space();
    const a = await s.addDevice({ host: '0000:00:03.0', iommufd: engine.createIommufd() });
    const b = await s.addDevice({ host: '0000:00:05.0', iommufd: 'off' });
    s.begin();
    s.regionAdd(region(0n, 0n, 4n * MiB));
    await s.commit();
    const fd = containerFd(s, a.container);
    engine.port.close(fd);
    // The kernel hands out the lowest free number: open /dev/null until it is that one.
    const extra: number[] = [];
    let other = -1;
    while (extra.length < 64 && other !== fd) extra.push((other = engine.port.open('/dev/null', O.RDONLY)));
    expect(other, 'the closed number came back').to.equal(fd);
    for (const x of extra) if (x !== fd) engine.port.close(x);
    s.begin();
    s.regionAdd(region(0x1000_0000n, 4n * MiB, MiB));
    await s.commit();
    // EBADF, not ENOTTY: the map was never sent to /dev/null.
    const batch = events.find((e) => e.type === 'batch.failed')!;
    expect(batch.error).to.deep.include({ code: 'EBADF' });
    expect((batch.error as { message: string }).message).to.include(`fd ${fd} now refers to /dev/null`);
    expect(engine.port.readlink(`/proc/self/fd/${fd}`)).to.equal('/dev/null');
    engine.port.close(fd);
    expect(Object.keys(s.mappings())).to.deep.equal([b.container]);
    expect(s.mappings()[b.container]!.map((m) => m.iova)).to.deep.equal([0n, 0x1000_0000n]);
  });

  it('takes an EBADF answer as a lost fd where the fd check cannot tell (no /proc/self/fd)', async function () {
    const s = space();
    const d = await s.addDevice({ host: '0000:00:04.0', iommufd: 'off' });
    const fd = containerFd(s, d.container);
    const link = `/proc/self/fd/${fd}`;
    const before = engine.port.readlink(link);
    const readlink = engine.port.readlink.bind(engine.port);
    engine.port.readlink = (p) => (p === link ? before : readlink(p));
    engine.port.close(fd);
    s.begin();
    for (let i = 0n; i < 4n; i++) s.regionAdd(region(i * 0x100_0000n, i * MiB, MiB));
    await s.commit();
    const batch = events.find((e) => e.type === 'batch.failed')!;
    expect(batch.error).to.deep.include({ code: 'EBADF', syscall: 'dma_map' });
    expect(events.find((e) => e.type === 'container.failed')!.phase).to.equal('lost');
    expect(simFds()).to.deep.equal([]);
    expect(engine.state()[s.name]!.containers).to.deep.equal([]);
  });

  describe('a ram_device region (a BAR mmapped from a device fd): legacy maps it, iommufd warns once', function () {
    // Linux 6.12: IOMMU_IOAS_MAP pins user pages, and a BAR mmap is VM_PFNMAP: EFAULT
    // (iommufd/pages.c, pin_user_pages); type1 maps it through follow_fault_pfn. QEMU's
    // region_add: a RAM device that cannot be mapped is a warning, once, not a failure.
    const BAR_GPA = 0x800_0000n; // below edu's 28-bit DMA mask
    let res: Resources;
    beforeEach(function () {
      res = new Resources(engine.port);
    });
    afterEach(function () {
      res.release(); // the BAR regions are deleted by then: the tables hold no mapping of them
    });

    /** The edu behind `bdf` (attached), with bus mastering on and BAR0 mapped. */
    const eduOf = (bdf: string) => {
      const edu = new Edu(res, engine.host.devices.get(bdf)!.fd);
      edu.enableBusMaster();
      return { edu, bar: edu.mapBar0() };
    };
    const barRegion = (va: bigint): MemoryRegion => ({
      gpa: BAR_GPA,
      size: MiB,
      backing: { vaddr: va },
      kind: 'ram_device',
    });
    const warnings = () => events.filter((e) => e.type === 'warning');
    const spans = (t: { iova: bigint; size: bigint }[] | undefined) => t?.map((m) => [m.iova, m.size]);
    const expectWarnedOnce = (container: string) => {
      const w = warnings();
      expect(w, JSON.stringify(w.map((e) => e.message))).to.have.length(1);
      expect(w[0]).to.deep.include({ container });
      expect(w[0]!.message).to.match(
        /^ram_device map \[0x8000000, \+0x100000\): EFAULT on iommufd IOAS \d+: p2p to this region will not work$/,
      );
    };
    const expectNothingFailed = (s: ReturnType<typeof space>) => {
      expect(events.filter((e) => /failed$/.test(e.type)).map((e) => e.type)).to.deep.equal([]);
      const st = engine.state()[s.name]!;
      expect(st.containers.map((c) => c.state)).to.not.include('failed');
      expect(st.devices.map((d) => d.state)).to.deep.equal(st.devices.map(() => 'attached'));
    };

    it('maps it in the legacy container and skips it with one warning in the iommufd one, over several commits; a legacy device reaches the BAR, the iommufd one cannot', async function () {
      const s = space();
      const a = await s.addDevice({ host: '0000:00:03.0', iommufd: 'on' });
      const b = await s.addDevice({ host: '0000:00:04.0', iommufd: 'off' });
      const c = await s.addDevice({ host: '0000:00:06.0', iommufd: 'off' });
      expect(c.container).to.equal(b.container);
      const [ea, eb, ec] = [a, b, c].map((d) => eduOf(d.bdf));
      // RAM where the BAR goes, then replaced in one transaction by the BAR and RAM after it:
      // one lane (unmap, map BAR, map RAM), and the refused BAR map must not skip the RAM map.
      s.begin();
      s.regionAdd(region(0n, 0n, 4n * MiB));
      s.regionAdd(region(BAR_GPA, 4n * MiB, 2n * MiB));
      await s.commit();
      s.begin();
      s.regionDel(region(BAR_GPA, 4n * MiB, 2n * MiB));
      s.regionAdd(barRegion(ec!.bar.va));
      s.regionAdd(region(BAR_GPA + MiB, 5n * MiB, MiB));
      await s.commit();
      expect(spans(s.mappings()[b.container])).to.deep.equal([
        [0n, 4n * MiB],
        [BAR_GPA, MiB],
        [BAR_GPA + MiB, MiB],
      ]);
      expect(spans(s.mappings()[a.container])).to.deep.equal([
        [0n, 4n * MiB],
        [BAR_GPA + MiB, MiB],
      ]);
      expectWarnedOnce(a.container);
      expectNothingFailed(s);
      expectTablesMatchKernel(s);

      // Peer to peer: 04.0 writes 06.0's liveness register through the legacy mapping; 03.0's
      // write to the same IOVA is blocked by its IOMMU.
      const stage = engine.port.memory(mem.va, 4);
      await eb!.edu.writeWord(stage, 0n, BAR_GPA + 4n, 0x1234_5678);
      expect(await ec!.edu.livenessOnceIt(~0x1234_5678), 'the legacy device wrote').to.equal(
        ~0x1234_5678 >>> 0,
      );
      await ea!.edu.writeWord(stage, 0n, BAR_GPA + 4n, 0x0bad_f00d);
      expect(await ec!.edu.livenessOnceIt(~0x0bad_f00d), 'the iommufd device wrote').to.equal(
        ~0x1234_5678 >>> 0,
      );

      // Unrelated commits, then the BAR removed and added again: the map is retried (legacy
      // maps it again) and fails again on iommufd, still with the one warning.
      s.begin();
      s.regionAdd(region(0x2000_0000n, 8n * MiB, 4n * MiB));
      await s.commit();
      s.begin();
      s.regionDel(barRegion(ec!.bar.va));
      await s.commit();
      expect(spans(s.mappings()[b.container])).to.have.length(3);
      s.begin();
      s.regionAdd(barRegion(ec!.bar.va));
      await s.commit();
      expect(spans(s.mappings()[b.container])).to.deep.include([BAR_GPA, MiB]);
      expect(spans(s.mappings()[a.container])).to.not.deep.include([BAR_GPA, MiB]);
      expectWarnedOnce(a.container);
      expectNothingFailed(s);
      expectTablesMatchKernel(s);
      expect(events.filter((e) => e.type === 'txn.committed')).to.have.length(5);
      s.begin();
      s.regionDel(barRegion(ec!.bar.va));
      await s.commit();
    });

    it('an iommufd device added after the BAR is in the map: its replay skips the BAR with one warning and the attach succeeds', async function () {
      const s = space();
      const b = await s.addDevice({ host: '0000:00:06.0', iommufd: 'off' });
      const eb = eduOf(b.bdf);
      s.begin();
      s.regionAdd(region(0n, 0n, 4n * MiB));
      s.regionAdd(barRegion(eb.bar.va));
      await s.commit();
      expect(warnings()).to.deep.equal([]);
      const a = await s.addDevice({ host: '0000:00:03.0', iommufd: 'on' });
      expect(a.container).to.not.equal(b.container);
      const replayed = events.find((e) => e.type === 'container.replayed' && e.container === a.container);
      expect(replayed).to.deep.include({ mapped: 1, copied: 0 });
      expect(spans(s.mappings()[a.container])).to.deep.equal([[0n, 4n * MiB]]);
      expect(spans(s.mappings()[b.container])).to.deep.equal([
        [0n, 4n * MiB],
        [BAR_GPA, MiB],
      ]);
      expectWarnedOnce(a.container);
      expectNothingFailed(s);
      expectTablesMatchKernel(s);
      s.begin();
      s.regionDel(barRegion(eb.bar.va));
      await s.commit();
    });
  });
});
