import { expect } from 'chai';
import { Piscina } from 'piscina';
import { LinuxPort } from '../src/port/linux.js';
import { SyscallError } from '../src/port/errors.js';
import { StartupTracker } from '../src/port/native-guard.js';
import { MAP, MFD, O, PROT, RLIMIT } from '../src/uapi/libc.js';
import {
  ERRNO,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  iommu_ioas_alloc,
  iommu_ioas_map,
} from '../src/uapi/index.js';

describe('LinuxPort (the real syscalls of this machine)', function () {
  const port = new LinuxPort();
  const PAGE = 4096n;

  it('round-trips bytes between a memfd mapping and pread/pwrite', function () {
    const fd = port.memfdCreate('vfio-engine-test', MFD.CLOEXEC);
    try {
      port.ftruncate(fd, 2n * PAGE);
      const va = port.mmap(2n * PAGE, PROT.READ | PROT.WRITE, MAP.SHARED, fd, 0n);
      const mem = port.memory(va, Number(2n * PAGE));
      mem.set([1, 2, 3, 4], 4096);
      const back = new Uint8Array(4);
      expect(port.pread(fd, back, PAGE)).to.equal(4);
      expect([...back]).to.deep.equal([1, 2, 3, 4]);
      expect(port.pwrite(fd, Uint8Array.from([9, 8, 7]), 10n)).to.equal(3);
      expect([...mem.subarray(10, 13)]).to.deep.equal([9, 8, 7]);
      port.munmap(va, 2n * PAGE);
    } finally {
      port.close(fd);
    }
  });

  it('maps anonymous memory', function () {
    const va = port.mmap(PAGE, PROT.READ | PROT.WRITE, MAP.PRIVATE | MAP.ANONYMOUS, -1);
    const mem = port.memory(va, 4096);
    expect(mem.every((b) => b === 0)).to.equal(true);
    mem[4095] = 0xab;
    expect(port.memory(va, 4096)[4095]).to.equal(0xab);
    port.munmap(va, PAGE);
  });

  it('captures errno: an iommufd ioctl on /dev/null is ENOTTY, named with its request fields', function () {
    const fd = port.open('/dev/null', O.RDWR | O.CLOEXEC);
    try {
      const m = iommu_ioas_map.view().reset();
      m.ioas_id = 7;
      m.iova = 0x100000n;
      m.length = 0x200000n;
      m.flags = 7;
      let err: unknown;
      try {
        port.ioctl(fd, IOMMU_IOAS_MAP, m.bytes);
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(SyscallError);
      const se = err as SyscallError;
      expect(se.errno).to.equal(ERRNO.ENOTTY);
      expect(se.code).to.equal('ENOTTY');
      expect(se.op).to.equal('IOMMU_IOAS_MAP');
      expect(se.fields).to.include({ fd, ioas_id: 7, iova: 0x100000n, length: 0x200000n });
      expect(se.message).to.equal(
        `IOMMU_IOAS_MAP failed: ENOTTY (Inappropriate ioctl for device) [fd=${fd} ioas_id=7 flags=7 iova=0x100000 length=0x200000 user_va=0x0]`,
      );
    } finally {
      port.close(fd);
    }
  });

  it('reports ENOENT for a missing path and EBADF for a bad fd, with no stale errno after success', function () {
    expect(() => port.open('/nonexistent/vfio', O.RDWR)).to.throw(
      SyscallError,
      /open failed: ENOENT .*path="\/nonexistent\/vfio"/,
    );
    expect(() => port.close(-1)).to.throw(SyscallError, /close failed: EBADF/);
    expect(() => port.mmap(PAGE, PROT.READ, MAP.SHARED, 12345)).to.throw(SyscallError, /mmap failed: EBADF/);
    // A success right after a failure must not report the old errno.
    const fd = port.open('/dev/null', O.RDONLY);
    port.close(fd);
  });

  it('reads and sets RLIMIT_MEMLOCK', function () {
    const lim = port.getrlimit(RLIMIT.MEMLOCK);
    expect(lim.cur <= lim.max).to.equal(true);
    const lower = lim.cur > 1n << 20n ? 1n << 20n : lim.cur;
    port.setrlimit(RLIMIT.MEMLOCK, { cur: lower, max: lim.max });
    expect(port.getrlimit(RLIMIT.MEMLOCK).cur).to.equal(lower);
    port.setrlimit(RLIMIT.MEMLOCK, lim);
    expect(port.getrlimit(RLIMIT.MEMLOCK)).to.deep.equal(lim);
  });

  describe('inside piscina worker threads, on fds the main thread owns', function () {
    let pool: Piscina;
    // The workers load koffi as they start: destroy() must not terminate one mid-load (that
    // aborts the process), so it waits until every worker has marked itself started.
    const startup = new StartupTracker(() => pool?.threads ?? []);
    before(function () {
      pool = new Piscina({
        filename: new URL('./fixtures/port-worker.js', import.meta.url).href,
        minThreads: 2,
        maxThreads: 2,
        idleTimeout: Infinity,
        workerData: { startup: startup.shared },
      });
    });
    after(async function () {
      expect(await startup.settled()).to.equal(true);
      await pool.destroy();
      startup.dispose();
    });

    it('reads errno in the worker that made the call', async function () {
      const fd = port.open('/dev/null', O.RDWR);
      try {
        const results = await Promise.all([1, 2, 3, 4].map(() => pool.run({ fd }, { name: 'ioasAlloc' })));
        for (const r of results) {
          expect(r.ok).to.equal(false);
          const e = SyscallError.fromJSON(r.error);
          expect(e.code).to.equal('ENOTTY');
          expect(e.op).to.equal('IOMMU_IOAS_ALLOC');
        }
      } finally {
        port.close(fd);
      }
    });

    it('maps and writes a memfd the main thread created', async function () {
      const fd = port.memfdCreate('shared', MFD.CLOEXEC);
      try {
        port.ftruncate(fd, PAGE);
        expect(await pool.run({ fd, n: 100, value: 0x5a }, { name: 'fill' })).to.equal(100);
        const back = new Uint8Array(101);
        port.pread(fd, back, 0n);
        expect(back.subarray(0, 100).every((b) => b === 0x5a)).to.equal(true);
        expect(back[100]).to.equal(0);
      } finally {
        port.close(fd);
      }
    });
  });

  it('passes an ioctl argument buffer at a non-zero offset', function () {
    // Views into a shared batch buffer are the hot path: the pointer must honour byteOffset.
    const fd = port.open('/dev/null', O.RDWR);
    try {
      const big = new Uint8Array(64);
      const v = iommu_ioas_alloc.view(big, 24).reset();
      expect(() => port.ioctl(fd, IOMMU_IOAS_ALLOC, v.bytes)).to.throw(SyscallError, /ENOTTY/);
      expect(big[24]).to.equal(12); // size written by reset() at the view's offset
    } finally {
      port.close(fd);
    }
  });
});
