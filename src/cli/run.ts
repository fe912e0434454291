/**
 * `vfio-engine run [scenario.json]`: a VM's life on the engine (scenarios/q35.json by
 * default): devices attached, memory committed, hot-added and removed, a device unplugged,
 * then an orderly shutdown, printing each step, backend choices, tables and timings.
 */
import fs from 'node:fs';
import { createEngine, traceInspector } from '../engine.js';
import type { MemoryRegion } from '../actors/address-space.js';
import type { EngineEvent } from '../actors/events.js';
import { MAP, MFD, PROT } from '../port/port.js';
import type { RegionKind } from '../memory/sections.js';
import type { Topology } from '../kernel/topology.js';

/** A region in a scenario: numbers or hex strings; `offset` into the guest RAM memfd. */
interface ScenarioRegion {
  gpa: string | number;
  size: string | number;
  offset?: string | number;
  kind?: RegionKind;
  readonly?: boolean;
}

/** A scenario file (README: Scenarios). */
export interface Scenario {
  name?: string;
  ramMiB?: number;
  devices: { id: string; host: string; iommufd?: 'on' | 'off' | 'auto' }[];
  steps: (
    | { step: 'attach'; devices: string[] }
    | { step: 'commit'; title?: string; add?: ScenarioRegion[]; del?: ScenarioRegion[] }
    | { step: 'unplug'; device: string }
  )[];
}

const hex = (v: bigint) => `0x${v.toString(16)}`;

/** Options of {@link runScenario}. */
export interface RunOptions {
  /** The simulated host ('sim' only; default defaultTopology()). */
  readonly topology?: Topology;
  /** Where the report goes (default console.log). */
  readonly out?: (line: string) => void;
  /** Also print every actor's state changes (the trace inspector), as `  | ` lines. */
  readonly inspect?: boolean;
}

/** Runs a scenario; returns the exit code: 1 when a step failed (attach, transaction, container). */
export async function runScenario(
  path: string,
  kernel: 'sim' | 'linux',
  opts: RunOptions = {},
): Promise<number> {
  const out = opts.out ?? console.log;
  const sc = JSON.parse(fs.readFileSync(path, 'utf8')) as Scenario;
  out(`scenario: ${sc.name ?? path} (kernel: ${kernel === 'sim' ? 'simulated' : 'this machine'})`);
  let code = 0;
  const show = (e: EngineEvent) => {
    if (e.type === 'container.failed' || e.type === 'txn.failed' || e.type === 'batch.failed') code = 1;
    if (e.type === 'backend.selected') out(`  ${e.device} (${e.host}): ${e.backend}: ${e.reason}`);
    else if (e.type === 'container.created') out(`  ${e.container}: created (${e.target})`);
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
  const engine = await createEngine({
    kernel,
    topology: opts.topology,
    inspect: show,
    inspector: opts.inspect ? traceInspector((l) => out(`  | ${l}`)) : undefined,
  });
  const port = engine.port;
  const ramSize = BigInt(sc.ramMiB ?? 256) << 20n;
  const memfd = port.memfdCreate('guest-ram', MFD.CLOEXEC);
  port.ftruncate(memfd, ramSize);
  const va = port.mmap(ramSize, PROT.READ | PROT.WRITE, MAP.SHARED, memfd);
  const region = (r: ScenarioRegion): MemoryRegion => {
    const offset = BigInt(r.offset ?? 0);
    return {
      gpa: BigInt(r.gpa),
      size: BigInt(r.size),
      kind: r.kind ?? 'ram',
      readonly: r.readonly ?? false,
      backing: { fd: memfd, offset, vaddr: va + offset },
    };
  };
  const space = engine.createAddressSpace('memory');
  const ids = new Map<string, string>();
  const tables = () => {
    for (const [c, t] of Object.entries(space.mappings())) {
      out(`  ${c} (${space.containerBackend(c)?.describe()}): ${t.length} mapping(s)`);
      for (const m of t)
        out(
          `    iova ${hex(m.iova).padStart(12)} size ${hex(m.size).padStart(10)}${m.readonly ? ' ro' : ''}`,
        );
    }
  };
  try {
    for (const [i, st] of sc.steps.entries()) {
      if (st.step === 'attach') {
        out(`step ${i + 1}: attach ${st.devices.join(', ')}`);
        for (const name of st.devices) {
          const d = sc.devices.find((x) => x.id === name);
          if (!d) throw new Error(`unknown device '${name}'`);
          try {
            const info = await space.addDevice({ host: d.host, iommufd: d.iommufd ?? 'auto', id: name });
            ids.set(name, info.id);
          } catch (e) {
            code = 1;
            out(`  ${name}: attach failed: ${(e as Error).message}`);
          }
        }
      } else if (st.step === 'commit') {
        out(`step ${i + 1}: ${st.title ?? 'commit'}`);
        space.begin();
        for (const r of st.del ?? []) space.regionDel(region(r));
        for (const r of st.add ?? []) space.regionAdd(region(r));
        await space.commit();
      } else {
        out(`step ${i + 1}: hot-unplug ${st.device}`);
        await space.removeDevice(ids.get(st.device) ?? st.device);
      }
      tables();
    }
    out('shutdown');
  } finally {
    port.munmap(va, ramSize);
    port.close(memfd);
    await engine.shutdown();
  }
  return code;
}
