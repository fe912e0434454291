// End-to-end DMA through the real IOMMU with both backends: an edu device copies a buffer
// RAM -> device -> RAM through IOVAs the suite mapped with the uapi layer, and a device
// write to an unmapped IOVA is blocked. iommufd drives one edu through its cdev, legacy
// type1 the other through its group, each with full teardown. Runs in both VMs: the same
// DMA and the same isolation through VT-d and through virtio-iommu.
import { expect } from 'chai';
import { expectDmaFault } from './dma-faults.js';
import {
  IOMMU_IOAS_MAP_FLAGS,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DMA_MAP_FLAG,
  VFIO_EXTENSION,
  VFIO_GROUP_GET_DEVICE_FD,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  vfio_device_attach_iommufd_pt,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
} from '../../src/uapi/index.js';
import { Edu, EDU_DMA_BUFFER, EDU_DMA_LIMIT, EDU_ID } from './edu.js';
import { describeKernel } from './guest.js';
import { iommufdFixture, kernelHandles, PAGE, pattern, type1Fixture, type MemfdBuffer } from './kit.js';
import { ioctlRecorder } from './recording-port.js';

ioctlRecorder.registerSuite('e2e-dma');

const P = BigInt(PAGE);
const BUF_PAGES = 4;
const SRC_IOVA = 0x10_0000n;
const DST_IOVA = 0x20_0000n;
const COUNT = 3000;

/** What each backend sets up for the shared tests. */
interface Rig {
  edu: Edu;
  src: MemfdBuffer;
  dst: MemfdBuffer;
  /** Unmaps the destination buffer's IOVA range through the backend. */
  unmapDst(): bigint;
}

function dmaTests(rig: () => Rig) {
  it('sees the edu id register through BAR0 mmapped from the device fd', function () {
    expect(rig().edu.id().toString(16)).to.equal(EDU_ID.toString(16));
  });

  it('copies RAM -> device -> RAM through the IOMMU, and only the bytes asked for', async function () {
    const { edu, src, dst } = rig();
    const want = pattern(src.bytes.subarray(0, COUNT), 1);
    dst.bytes.fill(0);
    await edu.dma(false, SRC_IOVA, EDU_DMA_BUFFER, COUNT);
    await edu.dma(true, EDU_DMA_BUFFER, DST_IOVA + 0x100n, COUNT);
    expect(
      Buffer.from(dst.bytes.subarray(0x100, 0x100 + COUNT)).equals(Buffer.from(want)),
      'copied bytes',
    ).to.equal(true);
    expect(dst.bytes.subarray(0, 0x100).every((b) => b === 0)).to.equal(true);
    expect(dst.bytes.subarray(0x100 + COUNT).every((b) => b === 0)).to.equal(true);
  });

  it('after unmap, a device write to the old IOVA is blocked and leaves the memory untouched; the device still works', async function () {
    const { edu, src, dst } = rig();
    const want = pattern(src.bytes.subarray(0, COUNT), 2);
    await edu.dma(false, SRC_IOVA, EDU_DMA_BUFFER, COUNT);
    expect(rig().unmapDst()).to.equal(BigInt(BUF_PAGES) * P);
    dst.bytes.fill(0xee);
    await expectDmaFault('a write to an unmapped IOVA', () => edu.dma(true, EDU_DMA_BUFFER, DST_IOVA, COUNT));
    expect(
      dst.bytes.every((b) => b === 0xee),
      'memory behind the unmapped IOVA',
    ).to.equal(true);
    // The same write to a still-mapped IOVA lands: the block came from the IOMMU, not a dead device.
    const at = 2 * PAGE;
    src.bytes.fill(0, at, at + COUNT);
    await edu.dma(true, EDU_DMA_BUFFER, SRC_IOVA + BigInt(at), COUNT);
    expect(Buffer.from(src.bytes.subarray(at, at + COUNT)).equals(Buffer.from(want))).to.equal(true);
  });
}

describeKernel(
  'end-to-end DMA: edu through the emulated IOMMU (VT-d or virtio-iommu) with both backends',
  function () {
    this.timeout(60_000);
    let before0: string[] = [];

    before(function () {
      expect(SRC_IOVA + BigInt(BUF_PAGES) * P <= EDU_DMA_LIMIT && DST_IOVA < EDU_DMA_LIMIT).to.equal(true);
      before0 = kernelHandles();
    });

    describe('iommufd: /dev/iommu + VFIO cdev, IOAS_MAP', function () {
      const f = iommufdFixture({ bind: true });
      let r: Rig;
      before(function () {
        const ioas = f.iommufd.ioasAlloc();
        const attach = vfio_device_attach_iommufd_pt.view().reset();
        attach.pt_id = ioas;
        f.port.ioctl(f.dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach.bytes);
        const src = f.res.memfd(BUF_PAGES * PAGE);
        const dst = f.res.memfd(BUF_PAGES * PAGE);
        const RW = IOMMU_IOAS_MAP_FLAGS.READABLE | IOMMU_IOAS_MAP_FLAGS.WRITEABLE;
        f.iommufd.map(ioas, src.va, src.size, SRC_IOVA, RW);
        f.iommufd.map(ioas, dst.va, dst.size, DST_IOVA, RW);
        const edu = new Edu(f.res, f.dev);
        r = { edu, src, dst, unmapDst: () => f.iommufd.unmap(ioas, DST_IOVA, dst.size) };
        expect(edu.enableBusMaster() & 0b110).to.equal(0b110);
        edu.mapBar0();
      });
      dmaTests(() => r);
    });

    describe('legacy: /dev/vfio/vfio container + group, type1v2 MAP_DMA', function () {
      const f = type1Fixture();
      let r: Rig;
      before(function () {
        const { port, container, group } = f;
        port.ioctl(group, VFIO_GROUP_SET_CONTAINER, container);
        port.ioctl(container, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU);
        const dev = f.res.adopt(port.ioctl(group, VFIO_GROUP_GET_DEVICE_FD, f.edu.bdf));
        const src = f.res.memfd(BUF_PAGES * PAGE);
        const dst = f.res.memfd(BUF_PAGES * PAGE);
        const map = (buf: MemfdBuffer, iova: bigint) => {
          const m = vfio_iommu_type1_dma_map.view().reset();
          m.flags = VFIO_DMA_MAP_FLAG.READ | VFIO_DMA_MAP_FLAG.WRITE;
          m.vaddr = buf.va;
          m.iova = iova;
          m.size = BigInt(buf.size);
          port.ioctl(container, VFIO_IOMMU_MAP_DMA, m.bytes);
        };
        map(src, SRC_IOVA);
        map(dst, DST_IOVA);
        const unmapDst = () => {
          const u = vfio_iommu_type1_dma_unmap.view().reset();
          u.iova = DST_IOVA;
          u.size = BigInt(dst.size);
          port.ioctl(container, VFIO_IOMMU_UNMAP_DMA, u.bytes);
          return u.size;
        };
        const edu = new Edu(f.res, dev);
        r = { edu, src, dst, unmapDst };
        expect(edu.enableBusMaster() & 0b110).to.equal(0b110);
        edu.mapBar0();
      });
      dmaTests(() => r);
    });

    describe('teardown', function () {
      it('left no fd or mapping of /dev/iommu, /dev/vfio or the test memfds behind', function () {
        expect(kernelHandles()).to.deep.equal(before0);
      });
    });
  },
);
