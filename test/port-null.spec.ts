// NullPort: the DMA ioctls answered at once, everything else forwarded (the engine's own cost).
import { expect } from 'chai';
import { SimKernel } from '../src/kernel/kernel.js';
import { DEFAULT_DRIVERS } from '../src/kernel/drivers.js';
import { testVmTopology } from '../src/kernel/topology.js';
import { LinuxPort } from '../src/port/linux.js';
import { NullPort } from '../src/port/null.js';
import { O } from '../src/uapi/libc.js';
import { SimPort } from '../src/kernel/sim-port.js';
import { dmaMap, dmaUnmap, dmaUnmapAll } from '../src/backends/dma.js';
import { IOMMU_IOAS_ALLOC, iommu_ioas_alloc } from '../src/uapi/index.js';

describe('NullPort: DMA ioctls answered at once, the rest by the port it wraps', function () {
  it('IOAS_MAP/UNMAP succeed without reaching the kernel; an unmap reports the range, unmap-all 0; IOAS_ALLOC and open go through', function () {
    const inner = SimPort.direct(new SimKernel(testVmTopology(), new LinuxPort(), DEFAULT_DRIVERS));
    const port = new NullPort(inner);
    expect(port.kind).to.equal('sim');
    const fd = port.open('/dev/iommu', O.RDWR | O.CLOEXEC);
    const a = iommu_ioas_alloc.view().reset();
    port.ioctl(fd, IOMMU_IOAS_ALLOC, a.bytes);
    expect(a.out_ioas_id).to.equal(1);
    const t = { kind: 'iommufd', iommufd: fd, ioasId: a.out_ioas_id } as const;
    // A map of memory that does not exist: the kernel would refuse it; the null port does not ask.
    dmaMap(port, t, 0x1000_0000n, 0x1000n, 0xdead_0000n, false);
    expect(dmaUnmap(port, t, 0x1000_0000n, 0x1000n)).to.equal(0x1000n);
    expect(dmaUnmapAll(port, t)).to.equal(0n);
    // The kernel behind it saw none of it: nothing is mapped there.
    expect(dmaUnmap(inner, t, 0x1000_0000n, 0x1000n)).to.equal(0n);
    port.close(fd);
  });

  it('type1: MAP_DMA/UNMAP_DMA at once; unmap-all reports 0 bytes', function () {
    const inner = SimPort.direct(new SimKernel(testVmTopology(), new LinuxPort(), DEFAULT_DRIVERS));
    const port = new NullPort(inner);
    const t = { kind: 'legacy', containerFd: 12345 } as const; // never reaches a kernel
    dmaMap(port, t, 0x1000_0000n, 0x2000n, 0xdead_0000n, true);
    expect(dmaUnmap(port, t, 0x1000_0000n, 0x2000n)).to.equal(0x2000n);
    expect(dmaUnmapAll(port, t)).to.equal(0n);
  });
});
