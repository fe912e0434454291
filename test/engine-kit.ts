// Helpers of the engine suites: guest RAM, and a probe that the engine's tables equal the kernel's.
import { expect } from 'chai';
import type { AddressSpace, Engine } from '../src/engine.js';
import { type SyscallPort } from '../src/port/port.js';
import { MAP, MFD, PROT } from '../src/uapi/libc.js';

export const MiB = 1n << 20n;

/** `size` bytes of memfd-backed guest RAM. */
export function ram(port: SyscallPort, size: bigint) {
  const fd = port.memfdCreate('engine-test-ram', MFD.CLOEXEC);
  port.ftruncate(fd, size);
  const va = port.mmap(size, PROT.READ | PROT.WRITE, MAP.SHARED, fd);
  return { fd, va, size, free: () => (port.munmap(va, size), port.close(fd)) };
}

/**
 * The kernel holds exactly what each container's table (or one container's) says: every
 * mapping unmaps exactly (its bytes), then an unmap-all finds nothing more; the mappings are
 * then restored.
 */
export function expectTablesMatchKernel(space: AddressSpace, containerId?: string): void {
  for (const [id, table] of Object.entries(space.mappings(containerId))) {
    const b = space.containerBackend(id)!;
    for (const m of table)
      expect(b.dmaUnmap(m.iova, m.size), `${id} ${m.iova.toString(16)}`).to.equal(m.size);
    expect(b.dmaUnmap(0n, 0n, { unmapAll: true }), `${id}: unmapped beyond the table`).to.equal(0n);
    for (const m of table) b.dmaMap(m.iova, m.size, m.vaddr, m.readonly);
  }
}

/** The simulated /dev nodes and device fds this process holds. */
export { simFds } from './backends-kit.js';

/** Collects events$ into an array. */
export function record(engine: Engine) {
  const events: { type: string; [k: string]: unknown }[] = [];
  engine.events$.subscribe((e) => events.push(e as never));
  return events;
}
