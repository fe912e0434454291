// End to end on the simulated kernel: an edu device does DMA through mappings a backend
// made (iommufd with 0000:00:03.0, legacy with 0000:00:04.0), a write to an IOVA the
// backend unmapped is blocked, and teardown leaves no fd behind. Also IOMMU dirty
// tracking on a simulated IOMMU that has it.
import { expect } from 'chai';
import { defaultTopology } from '../src/kernel/topology.js';
import { SimPort, type SimKernelHandle } from '../src/port/sim.js';
import { vfioDeviceAttach, type VfioDevice } from '../src/backends/device.js';
import { VfioHost } from '../src/backends/host.js';
import type { IommufdContainer } from '../src/backends/iommufd.js';
import { Edu, EDU_DMA_BUFFER, EDU_ID } from './kernel/edu.js';
import { pattern, Resources, type MemfdBuffer } from './kernel/kit.js';
import { simFds } from './backends-kit.js';

const PAGE = 4096;
const SRC_IOVA = 0x10_0000n;
const DST_IOVA = 0x20_0000n;
const COUNT = 3000;

describe('backends end to end: edu DMA through backend mappings (simulated kernel)', function () {
  this.timeout(30_000);
  let sim: SimKernelHandle;
  let port: SimPort;
  let baseline: string[];

  before(async function () {
    sim = await SimPort.start(defaultTopology());
    port = sim.port();
    baseline = simFds();
  });
  after(async function () {
    await sim.stop();
  });

  for (const [mode, bdf] of [
    ['on', '0000:00:03.0'],
    ['off', '0000:00:04.0'],
  ] as const) {
    it(`iommufd=${mode}: ${bdf} copies RAM -> device -> RAM, and cannot write after unmap`, async function () {
      const host = new VfioHost(port);
      const res = new Resources(port);
      let dev: VfioDevice | undefined;
      try {
        dev = vfioDeviceAttach(host, bdf, { iommufd: mode });
        expect(dev.backend).to.equal(mode === 'on' ? 'iommufd' : 'legacy');
        const c = dev.container!;
        const src: MemfdBuffer = res.memfd(4 * PAGE);
        const dst: MemfdBuffer = res.memfd(4 * PAGE);
        c.dmaMap(SRC_IOVA, BigInt(src.size), src.va, true);
        c.dmaMap(DST_IOVA, BigInt(dst.size), dst.va, false);
        const edu = new Edu(res, dev.fd);
        expect(edu.enableBusMaster() & 0b110).to.equal(0b110);
        edu.mapBar0();
        expect(edu.id()).to.equal(EDU_ID);
        const want = Buffer.from(pattern(src.bytes.subarray(0, COUNT), 3));
        await edu.dma(false, SRC_IOVA, EDU_DMA_BUFFER, COUNT);
        await edu.dma(true, EDU_DMA_BUFFER, DST_IOVA + 0x100n, COUNT);
        expect(Buffer.from(dst.bytes.subarray(0x100, 0x100 + COUNT)).equals(want)).to.equal(true);

        expect(c.dmaUnmap(DST_IOVA, BigInt(dst.size))).to.equal(BigInt(dst.size));
        dst.bytes.fill(0xee);
        await edu.dma(true, EDU_DMA_BUFFER, DST_IOVA, COUNT);
        expect(dst.bytes.every((b) => b === 0xee)).to.equal(true);
      } finally {
        res.release();
        dev?.close();
      }
      expect(host.containers).to.have.length(0);
      expect(simFds()).to.deep.equal(baseline);
    });
  }
});

describe('backends: iommufd dirty tracking on an IOMMU that has it (simulated kernel)', function () {
  this.timeout(30_000);
  let sim: SimKernelHandle;
  let port: SimPort;

  before(async function () {
    const t = defaultTopology();
    t.iommu.dirty_tracking = true;
    sim = await SimPort.start(t);
    port = sim.port();
  });
  after(async function () {
    await sim.stop();
  });

  it('allocates DIRTY_TRACKING HWPTs, starts and stops tracking on them, and reads a clean bitmap', async function () {
    const host = new VfioHost(port);
    const res = new Resources(port);
    let dev: VfioDevice | undefined;
    try {
      dev = vfioDeviceAttach(host, '0000:00:03.0', { iommufd: 'on' });
      const c = dev.container as IommufdContainer;
      expect(c.info.dirtyPagesSupported).to.equal(true);
      expect(c.hwpts[0]!.flags).to.not.equal(0);
      const buf = res.memfd(4 * PAGE);
      c.dmaMap(SRC_IOVA, BigInt(buf.size), buf.va, false);
      c.setDirtyPageTracking(true);
      expect(c.dirtyPagesStarted).to.equal(true);
      expect(
        [...c.queryDirtyBitmap(SRC_IOVA, BigInt(buf.size), BigInt(PAGE))].every((b) => b === 0),
      ).to.equal(true);
      // A device write marks its page dirty.
      const edu = new Edu(res, dev.fd);
      edu.enableBusMaster();
      edu.mapBar0();
      await edu.dma(true, EDU_DMA_BUFFER, SRC_IOVA + 2n * BigInt(PAGE), 16);
      const bits = c.queryDirtyBitmap(SRC_IOVA, BigInt(buf.size), BigInt(PAGE));
      expect(bits[0]).to.equal(0b100);
      c.setDirtyPageTracking(false);
      expect(c.dirtyPagesStarted).to.equal(false);
    } finally {
      res.release();
      dev?.close();
    }
  });
});
