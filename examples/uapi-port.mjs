// Guest RAM from a memfd, an IOMMU_IOAS_MAP request built in place, and the typed error
// the kernel's answer becomes. Runs anywhere: without /dev/iommu the ioctl goes to
// /dev/null and the kernel answers ENOTTY.
import fs from 'node:fs';
import {
  LinuxPort,
  MAP,
  MFD,
  O,
  PROT,
  SyscallError,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FLAGS,
  iommu_ioas_map,
} from 'vfio-engine';

const port = new LinuxPort();
const size = 2n << 20n;
const ram = port.memfdCreate('guest-ram', MFD.CLOEXEC);
port.ftruncate(ram, size);
const va = port.mmap(size, PROT.READ | PROT.WRITE, MAP.SHARED, ram);
port.memory(va, 16).set(new TextEncoder().encode('hello, IOMMU'));

const req = iommu_ioas_map.view().reset(); // one reusable buffer; fields are read and written in place
req.flags = IOMMU_IOAS_MAP_FLAGS.FIXED_IOVA | IOMMU_IOAS_MAP_FLAGS.READABLE | IOMMU_IOAS_MAP_FLAGS.WRITEABLE;
req.ioas_id = 1;
req.user_va = va;
req.length = size;
req.iova = 0x100000n;

const fd = port.open(fs.existsSync('/dev/iommu') ? '/dev/iommu' : '/dev/null', O.RDWR | O.CLOEXEC);
try {
  port.ioctl(fd, IOMMU_IOAS_MAP, req.bytes);
  console.log(`mapped IOVA 0x${req.iova.toString(16)}`);
} catch (e) {
  if (!(e instanceof SyscallError)) throw e;
  console.log(`${e.code}: ${e.message}`);
} finally {
  port.close(fd);
  port.munmap(va, size);
  port.close(ram);
}
