// The simulated kernel: the same ioctls as on Linux, on any machine. Maps guest RAM into an
// IOAS, then shows the kernel's own answer to an overlapping map.
import {
  SimPort,
  SyscallError,
  MAP,
  MFD,
  O,
  PROT,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FLAGS as F,
  iommu_ioas_alloc,
  iommu_ioas_map,
} from 'vfio-engine';

const sim = await SimPort.start(); // the kernel thread; piscina workers use SimPort.attach(sim.shared)
const port = sim.port();
const iommufd = port.open('/dev/iommu', O.RDWR);
const alloc = iommu_ioas_alloc.view().reset();
port.ioctl(iommufd, IOMMU_IOAS_ALLOC, alloc.bytes);

const ram = port.memfdCreate('guest-ram', MFD.CLOEXEC);
port.ftruncate(ram, 1n << 20n);
const va = port.mmap(1n << 20n, PROT.READ | PROT.WRITE, MAP.SHARED, ram);

const map = iommu_ioas_map.view().reset();
map.flags = F.FIXED_IOVA | F.READABLE | F.WRITEABLE;
map.ioas_id = alloc.out_ioas_id;
map.user_va = va;
map.length = 1n << 20n;
map.iova = 0x4000_0000n;
port.ioctl(iommufd, IOMMU_IOAS_MAP, map.bytes);
console.log(`IOAS ${alloc.out_ioas_id}: mapped 1 MiB at IOVA 0x${map.iova.toString(16)}`);
try {
  port.ioctl(iommufd, IOMMU_IOAS_MAP, map.bytes); // the same range again
} catch (e) {
  if (!(e instanceof SyscallError)) throw e;
  console.log(e.message);
}
port.close(iommufd); // closing the iommufd destroys the IOAS and unpins, as in Linux
port.munmap(va, 1n << 20n);
port.close(ram);
await sim.stop();
