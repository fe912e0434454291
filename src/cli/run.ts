/**
 * `vfio-engine run [scenario.json]`: a VM's life on the engine (scenarios/q35.json by
 * default): devices attached, memory committed, hot-added and removed, a device unplugged,
 * then an orderly shutdown, printing each step, backend choices, tables and timings.
 * The scenario comes checked (scenario.ts); what fails while it runs is a reported step
 * failure (exit code 1), and the run goes on to the next step and shuts down.
 */
import { createEngine, traceInspector } from '../engine.js';
import type { MemoryRegion } from '../actors/address-space.js';
import type { EngineEvent } from '../actors/events.js';
import { MAP, MFD, PROT } from '../uapi/libc.js';
import type { Topology } from '../kernel/topology.js';
import type { Scenario, ScenarioRegion } from './scenario.js';

const hex = (v: bigint) => `0x${v.toString(16)}`;
const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** Options of {@link runScenario}. */
export interface RunOptions {
  /** The simulated host ('sim' only; default defaultTopology()). */
  readonly topology?: Topology;
  /** Where the report goes (default console.log). */
  readonly out?: (line: string) => void;
  /** Also print every actor's state changes (the trace inspector), as `  | ` lines. */
  readonly inspect?: boolean;
}

/**
 * Runs a checked scenario (scenario.ts loadScenario) and returns the exit code: 1 when a step
 * failed (an attach, an unplug, a transaction, a container), 0 otherwise. A failed step is
 * reported and the run goes on; the engine is always shut down.
 */
export async function runScenario(
  sc: Scenario,
  kernel: 'sim' | 'linux',
  opts: RunOptions = {},
): Promise<number> {
  const out = opts.out ?? console.log;
  out(`scenario: ${sc.name} (kernel: ${kernel === 'sim' ? 'simulated' : 'this machine'})`);
  let code = 0;
  const show = (e: EngineEvent) => {
    if (e.type === 'container.failed' || e.type === 'txn.failed' || e.type === 'batch.failed') code = 1;
    // backend.selected is printed with the device's attach line, which also names its container.
    if (e.type === 'container.created') out(`  ${e.container}: created (${e.target})`);
    else if (e.type === 'container.replayed')
      out(`  ${e.container}: replayed ${e.mapped} mapped + ${e.copied} IOAS_COPY in ${e.ms.toFixed(2)} ms`);
    else if (e.type === 'container.destroyed') out(`  ${e.container}: destroyed`);
    else if (e.type === 'container.failed') out(`  ${e.container}: FAILED (${e.phase}): ${e.error.message}`);
    else if (e.type === 'txn.committed')
      out(
        `  ${e.txn}: ${e.mapped} mapped, ${e.unmapped} unmapped on ${e.containers} container(s) in ${e.ms.toFixed(2)} ms`,
      );
    else if (e.type === 'txn.failed') out(`  ${e.txn}: FAILED: ${e.error.message}`);
    else if (e.type === 'warning') out(`  warning: ${e.message}`);
  };
  // Why each device got its backend, for an attach that fails after the choice was made.
  const selected = new Map<string, string>();
  const engine = await createEngine({
    kernel,
    topology: opts.topology,
    inspect: (e) => {
      if (e.type === 'backend.selected') selected.set(e.device, `${e.backend}: ${e.reason}`);
      show(e);
    },
    inspector: opts.inspect ? traceInspector((l) => out(`  | ${l}`)) : undefined,
  });
  const port = engine.port;
  const ramSize = BigInt(sc.ramMiB) << 20n;
  let memfd = -1;
  let va = 0n;
  const space = engine.createAddressSpace('memory');
  const region = (r: ScenarioRegion): MemoryRegion => ({
    gpa: r.gpa,
    size: r.size,
    kind: r.kind,
    readonly: r.readonly,
    backing: { fd: memfd, offset: r.offset, vaddr: va + r.offset },
  });
  const tables = () => {
    for (const [c, t] of Object.entries(space.mappings())) {
      out(`  ${c} (${space.containerBackend(c)?.describe()}): ${t.length} mapping(s)`);
      for (const m of t)
        out(
          `    iova ${hex(m.iova).padStart(12)} size ${hex(m.size).padStart(10)}${m.readonly ? ' ro' : ''}`,
        );
    }
  };
  /** Devices attached by the run, and the step at which a device's attach failed. */
  const attached = new Set<string>();
  const attachFailed = new Map<string, number>();

  const attach = async (name: string, n: number) => {
    const d = sc.devices.find((x) => x.id === name)!;
    selected.delete(name);
    try {
      const info = await space.addDevice({ host: d.host, iommufd: d.iommufd, id: name });
      attached.add(name);
      attachFailed.delete(name);
      const target = space.containerBackend(info.container)?.describe();
      out(
        `  ${name} (${d.host}): ${info.backend}: ${info.reason}; attached to ${info.container} (${target})`,
      );
    } catch (e) {
      code = 1;
      attachFailed.set(name, n);
      const choice = selected.get(name);
      out(`  ${name}: attach failed: ${message(e)}${choice ? ` (backend ${choice})` : ''}`);
    }
  };

  const unplug = async (name: string) => {
    const host = sc.devices.find((x) => x.id === name)!.host;
    if (!attached.has(name)) {
      code = 1;
      const n = attachFailed.get(name);
      out(`  ${name}: unplug failed: not attached${n ? ` (its attach at step ${n} failed)` : ''}`);
      return;
    }
    // What the device holds before it goes: its container, who else is in it, what is mapped.
    const before = space.state();
    const cid = before.devices.find((x) => x.id === name)?.container ?? null;
    const c = before.containers.find((x) => x.id === cid);
    const target = cid === null ? undefined : space.containerBackend(cid)?.describe();
    try {
      await space.removeDevice(name);
    } catch (e) {
      code = 1;
      out(`  ${name}: unplug failed: ${message(e)}`);
      return;
    }
    attached.delete(name);
    let released: string;
    if (!c) released = 'it was closed already (its container failed), now forgotten';
    else if (space.state().containers.some((x) => x.id === c.id)) {
      const others = c.devices.filter((x) => x !== name);
      released = `device closed; ${c.id} (${target}) stays for ${others.join(', ') || 'no device'}`;
    } else released = `device closed; ${c.id} (${target}) released with its ${c.mappings} mapping(s)`;
    out(`  ${name} (${host}): unplugged: ${released}`);
  };

  try {
    memfd = port.memfdCreate('guest-ram', MFD.CLOEXEC);
    port.ftruncate(memfd, ramSize);
    va = port.mmap(ramSize, PROT.READ | PROT.WRITE, MAP.SHARED, memfd);
    for (const [i, st] of sc.steps.entries()) {
      const n = i + 1;
      try {
        if (st.step === 'attach') {
          out(`step ${n}: attach ${st.devices.join(', ')}`);
          for (const name of st.devices) await attach(name, n);
        } else if (st.step === 'commit') {
          out(`step ${n}: ${st.title ?? 'commit'}`);
          space.begin();
          for (const r of st.del) space.regionDel(region(r));
          for (const r of st.add) space.regionAdd(region(r));
          if (!(await space.commit()).ok) code = 1;
        } else {
          out(`step ${n}: hot-unplug ${st.device}`);
          await unplug(st.device);
        }
      } catch (e) {
        // Anything else a step throws is that step's failure, not the run's end.
        code = 1;
        out(`  step ${n} failed: ${message(e)}`);
      }
      tables();
    }
    out('shutdown');
  } finally {
    if (va !== 0n) port.munmap(va, ramSize);
    if (memfd >= 0) port.close(memfd);
    await engine.shutdown();
  }
  return code;
}
