import { expect } from 'chai';
import { Piscina } from 'piscina';
import { SimPort, type SimKernelHandle } from '../src/kernel/sim-port.js';
import { SyscallError } from '../src/port/errors.js';
import { StartupTracker } from '../src/port/native-guard.js';
import { MAP, MFD, O, PROT, RLIMIT } from '../src/uapi/libc.js';
import { IOMMU_IOAS_ALLOC, iommu_ioas_alloc } from '../src/uapi/index.js';

describe('SimPort: the channel to the simulated kernel thread', function () {
  let sim: SimKernelHandle;
  let port: SimPort;
  before(async function () {
    sim = await SimPort.start();
    port = sim.port();
  });
  after(async function () {
    await sim.stop();
  });

  it('passes calls on fds it does not own to the real kernel (ENOTTY on /dev/null)', function () {
    const fd = port.open('/dev/null', O.RDWR);
    try {
      expect(() => port.ioctl(fd, IOMMU_IOAS_ALLOC, iommu_ioas_alloc.view().reset().bytes)).to.throw(
        SyscallError,
        /IOMMU_IOAS_ALLOC failed: ENOTTY/,
      );
    } finally {
      port.close(fd);
    }
    expect(() => port.open('/nonexistent', O.RDONLY)).to.throw(SyscallError, /open failed: ENOENT/);
  });

  it('maps real memory: memfd bytes written through a sim mapping read back with pread', function () {
    const fd = port.memfdCreate('sim-ram', MFD.CLOEXEC);
    try {
      port.ftruncate(fd, 8192n);
      const va = port.mmap(8192n, PROT.READ | PROT.WRITE, MAP.SHARED, fd, 0n);
      port.memory(va, 8192).fill(0x11, 4096);
      const back = new Uint8Array(100 * 1024); // larger than one channel payload: pread is chunked
      expect(port.pread(fd, back, 0n)).to.equal(8192);
      expect(back[4096]).to.equal(0x11);
      expect(back[4095]).to.equal(0);
      port.munmap(va, 8192n);
    } finally {
      port.close(fd);
    }
  });

  it('keeps its own RLIMIT_MEMLOCK and refuses to raise the hard limit', function () {
    const lim = port.getrlimit(RLIMIT.MEMLOCK);
    port.setrlimit(RLIMIT.MEMLOCK, { cur: 1n << 20n, max: lim.max });
    expect(port.getrlimit(RLIMIT.MEMLOCK).cur).to.equal(1n << 20n);
    expect(() => port.setrlimit(RLIMIT.MEMLOCK, { cur: lim.max + 1n, max: lim.max + 1n })).to.throw(/EPERM/);
    port.setrlimit(RLIMIT.MEMLOCK, lim);
  });

  it('answers /sys and /dev lookups from the simulated host, other paths from the real filesystem', function () {
    expect(port.exists('/proc/self')).to.equal(true);
    expect(port.readFile('/proc/sys/kernel/ostype').trim()).to.equal('Linux');
    expect(() => port.readlink('/sys/bus/pci/devices/0000:99:00.0/iommu_group')).to.throw(
      SyscallError,
      /readlink failed: ENOENT/,
    );
  });

  it('is one kernel for every thread: piscina workers call it synchronously', async function () {
    // destroy() would abort the process if it terminated a worker still loading (its module, or
    // koffi in fill()): it waits until every worker has marked itself started and fill() returned.
    const startup = new StartupTracker(() => pool.threads);
    const pool: Piscina = new Piscina({
      filename: new URL('./fixtures/sim-worker.js', import.meta.url).href,
      minThreads: 2,
      maxThreads: 2,
      workerData: { shared: sim.shared, startup: startup.shared },
    });
    try {
      const fd = port.memfdCreate('shared', MFD.CLOEXEC);
      port.ftruncate(fd, 4096n);
      const n = await Promise.all([pool.run({ fd, n: 64, value: 0x7e }, { name: 'fill' })]);
      expect(n).to.deep.equal([64]);
      const back = new Uint8Array(65);
      port.pread(fd, back, 0n);
      expect(back.subarray(0, 64).every((b) => b === 0x7e)).to.equal(true);
      expect(back[64]).to.equal(0);
      port.close(fd);
    } finally {
      expect(await startup.settled()).to.equal(true);
      await pool.destroy();
      startup.dispose();
    }
  });

  it('fails calls made after the kernel thread stopped with ENODEV instead of blocking', async function () {
    const other = await SimPort.start();
    const p = other.port();
    const fd = p.open('/dev/null', O.RDONLY);
    p.close(fd);
    await other.stop();
    expect(() => p.open('/dev/null', O.RDONLY)).to.throw(SyscallError, /open failed: ENODEV/);
  });
});
