// End-to-end DMA on the simulated kernel thread, the way test/kernel/e2e-dma.spec.ts does it
// on the real one: an edu device copies RAM -> device -> RAM through IOVAs mapped with the
// uapi layer, and a device write to an unmapped IOVA is blocked. The kernel runs in its own
// thread (SimPort.start), whose poll loop drives the edu DMA engine.
import { expect } from 'chai';
import { DEFAULT_DRIVERS } from '../src/kernel/drivers.js';
import { iommufdDriver } from '../src/kernel/iommufd/index.js';
import { SimPort, type SimKernelHandle } from '../src/port/sim.js';
import {
  IOMMU_IOAS_MAP_FLAGS,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DMA_MAP_FLAG,
  VFIO_EXTENSION,
  VFIO_GROUP_GET_DEVICE_FD,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
} from '../src/uapi/index.js';
import { Edu, EDU_DMA_BUFFER, EDU_ID } from './kernel/edu.js';
import { Iommufd, PAGE, pattern, Resources, type MemfdBuffer } from './kernel/kit.js';

const P = BigInt(PAGE);
const BUF_PAGES = 4;
const SRC_IOVA = 0x10_0000n;
const DST_IOVA = 0x20_0000n;
const COUNT = 3000;

interface Rig {
  edu: Edu;
  src: MemfdBuffer;
  dst: MemfdBuffer;
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
    expect(Buffer.from(dst.bytes.subarray(0x100, 0x100 + COUNT)).equals(Buffer.from(want))).to.equal(true);
    expect(dst.bytes.subarray(0, 0x100).every((b) => b === 0)).to.equal(true);
    expect(dst.bytes.subarray(0x100 + COUNT).every((b) => b === 0)).to.equal(true);
  });

  it('after unmap, a device write to the old IOVA is blocked and leaves the memory untouched', async function () {
    const { edu, src, dst } = rig();
    const want = pattern(src.bytes.subarray(0, COUNT), 2);
    await edu.dma(false, SRC_IOVA, EDU_DMA_BUFFER, COUNT);
    expect(rig().unmapDst()).to.equal(BigInt(BUF_PAGES) * P);
    dst.bytes.fill(0xee);
    await edu.dma(true, EDU_DMA_BUFFER, DST_IOVA, COUNT);
    expect(dst.bytes.every((b) => b === 0xee)).to.equal(true);
    // The same write to a still-mapped IOVA lands: the block came from the IOMMU.
    const at = 2 * PAGE;
    src.bytes.fill(0, at, at + COUNT);
    await edu.dma(true, EDU_DMA_BUFFER, SRC_IOVA + BigInt(at), COUNT);
    expect(Buffer.from(src.bytes.subarray(at, at + COUNT)).equals(Buffer.from(want))).to.equal(true);
  });
}

describe('sim VFIO end to end: edu DMA on the kernel thread', function () {
  this.timeout(30_000);
  let sim: SimKernelHandle;

  before(async function () {
    sim = await SimPort.start();
  });
  after(async function () {
    await sim?.stop();
  });

  describe('legacy: /dev/vfio/vfio container + group, type1v2 MAP_DMA', function () {
    let r: Rig;
    let res: Resources | undefined;
    before(function () {
      const rs = (res = new Resources(sim.port()));
      const container = rs.open('/dev/vfio/vfio');
      const group = rs.open('/dev/vfio/2');
      rs.port.ioctl(group, VFIO_GROUP_SET_CONTAINER, container);
      rs.port.ioctl(container, VFIO_SET_IOMMU, VFIO_EXTENSION.TYPE1v2_IOMMU);
      const dev = rs.adopt(rs.port.ioctl(group, VFIO_GROUP_GET_DEVICE_FD, '0000:00:04.0'));
      const src = rs.memfd(BUF_PAGES * PAGE);
      const dst = rs.memfd(BUF_PAGES * PAGE);
      const map = (buf: MemfdBuffer, iova: bigint) => {
        const m = vfio_iommu_type1_dma_map.view().reset();
        m.flags = VFIO_DMA_MAP_FLAG.READ | VFIO_DMA_MAP_FLAG.WRITE;
        m.vaddr = buf.va;
        m.iova = iova;
        m.size = BigInt(buf.size);
        rs.port.ioctl(container, VFIO_IOMMU_MAP_DMA, m.bytes);
      };
      map(src, SRC_IOVA);
      map(dst, DST_IOVA);
      const unmapDst = () => {
        const u = vfio_iommu_type1_dma_unmap.view().reset();
        u.iova = DST_IOVA;
        u.size = BigInt(dst.size);
        rs.port.ioctl(container, VFIO_IOMMU_UNMAP_DMA, u.bytes);
        return u.size;
      };
      const edu = new Edu(rs, dev);
      r = { edu, src, dst, unmapDst };
      expect(edu.enableBusMaster() & 0b110).to.equal(0b110);
      edu.mapBar0();
    });
    after(function () {
      res?.release();
    });
    dmaTests(() => r);
  });

  describe('iommufd: /dev/iommu + VFIO cdev, IOAS_MAP', function () {
    let r: Rig;
    let res: Resources | undefined;
    before(function () {
      // The kernel thread runs DEFAULT_DRIVERS: iommufd must be one of them.
      expect(DEFAULT_DRIVERS).to.include(iommufdDriver);
      const rs = (res = new Resources(sim.port()));
      const fd = rs.open('/dev/iommu');
      const iommufd = new Iommufd(rs.port, fd);
      const dev = rs.open('/dev/vfio/devices/vfio0');
      const bind = vfio_device_bind_iommufd.view().reset();
      bind.iommufd = fd;
      rs.port.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, bind.bytes);
      const ioas = iommufd.ioasAlloc();
      const attach = vfio_device_attach_iommufd_pt.view().reset();
      attach.pt_id = ioas;
      rs.port.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach.bytes);
      const src = rs.memfd(BUF_PAGES * PAGE);
      const dst = rs.memfd(BUF_PAGES * PAGE);
      const RW = IOMMU_IOAS_MAP_FLAGS.READABLE | IOMMU_IOAS_MAP_FLAGS.WRITEABLE;
      iommufd.map(ioas, src.va, src.size, SRC_IOVA, RW);
      iommufd.map(ioas, dst.va, dst.size, DST_IOVA, RW);
      const edu = new Edu(rs, dev);
      r = { edu, src, dst, unmapDst: () => iommufd.unmap(ioas, DST_IOVA, dst.size) };
      expect(edu.enableBusMaster() & 0b110).to.equal(0b110);
      edu.mapBar0();
    });
    after(function () {
      res?.release();
    });
    dmaTests(() => r);
  });
});
