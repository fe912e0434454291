// An engine on the simulated kernel: one address space, two devices (auto selection: one
// falls back to legacy), guest RAM committed as a MemoryListener transaction, then shutdown.
import { createEngine, MAP, MFD, PROT } from 'vfio-engine';

const engine = await createEngine({ kernel: 'sim' });
engine.events$.subscribe((e) => {
  if (e.type === 'backend.selected') console.log(`${e.host}: ${e.backend}`);
  if (e.type === 'txn.committed') console.log(`${e.txn}: ${e.mapped} mapped in ${e.ms.toFixed(1)} ms`);
});
const port = engine.port;
const size = 16n << 20n;
const fd = port.memfdCreate('guest-ram', MFD.CLOEXEC);
port.ftruncate(fd, size);
const vaddr = port.mmap(size, PROT.READ | PROT.WRITE, MAP.SHARED, fd);

const space = engine.createAddressSpace('memory');
await space.addDevice({ host: '0000:00:03.0', iommufd: 'auto' });
await space.addDevice({ host: '0000:00:06.0', iommufd: 'auto' }); // no cdev: legacy
space.begin();
space.regionAdd({ gpa: 0n, size, backing: { fd, offset: 0n, vaddr }, kind: 'ram' });
const result = await space.commit(); // { txn, ok, mapped, unmapped, containers, ms, error? }
if (!result.ok) console.log(`${result.txn} failed: ${result.error.message}`);
for (const [id, table] of Object.entries(space.mappings()))
  console.log(`${id}: ${table.map((m) => `0x${m.iova.toString(16)}+0x${m.size.toString(16)}`).join(', ')}`);
port.munmap(vaddr, size); // the pinned pages stay until the IOMMU lets them go
port.close(fd);
await engine.shutdown(); // detach, unmap, close every fd, stop the workers and the kernel
