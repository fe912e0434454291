/**
 * The C floor on the real kernel: bench/floor.c (built on the host into dist/bench/floor by
 * bench/build-floor.ts before the test VM boots) issues the same map and unmap ioctls as the
 * engine, for the same sections, with nothing around them, on one thread or on N. It opens
 * its own container and guest RAM of the same size and backing, so it runs while the engine
 * holds no device.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { VfioDeviceLocation } from '../backends/discovery.js';
import { LinuxPort } from '../port/linux.js';
import {
  linuxEduDevices,
  type Backing,
  type BenchBackend,
  type OpListItem,
  type Section,
  type WorkloadContext,
} from './rig.js';

/** Where bench/build-floor.ts puts the binary: dist/bench/floor of the checkout. */
export const FLOOR_BINARY = fileURLToPath(new URL('../../bench/floor', import.meta.url));

/** What the floor is asked to do. */
export interface FloorRun {
  readonly backend: BenchBackend;
  readonly device: VfioDeviceLocation;
  readonly ramBytes: bigint;
  readonly backing: Backing;
  readonly threads: number;
  readonly sections: readonly Section[];
}

/** The floor's input on stdin: one section per line, IOVA SIZE OFFSET [ro]. */
export function floorInput(sections: readonly Section[]): string {
  return sections
    .map((s) => `0x${s.iova.toString(16)} ${s.size} ${s.offset}${s.readonly ? ' ro' : ''}\n`)
    .join('');
}

/** An op list as the floor reads it: run in order on one thread, timed from 'start' to 'stop'. */
export function floorOpsInput(ops: readonly OpListItem[]): string {
  return ops
    .map((o) => {
      if (typeof o === 'string') return `${o}\n`;
      if ('map' in o) return `map ${floorInput([o.map])}`;
      return `unmap 0x${o.unmap.iova.toString(16)} ${o.unmap.size}\n`;
    })
    .join('');
}

function spawnFloor(r: Omit<FloorRun, 'sections'>, input: string, binary: string): string {
  const device = r.backend === 'iommufd' ? r.device.cdevPath : r.device.groupPath;
  if (!device) throw new Error(`${r.device.bdf} has no VFIO cdev for the floor's iommufd run`);
  const args = ['--backend', r.backend, '--device', device, '--ram', String(r.ramBytes)];
  args.push('--backing', r.backing, '--threads', String(r.threads));
  const out = spawnSync(binary, args, { input, encoding: 'utf8' });
  if (out.error)
    throw new Error(
      `${path.basename(binary)}: ${out.error.message} (npm run bench:kernel builds it on the host: node dist/bench/build-floor.js)`,
    );
  if (out.status !== 0)
    throw new Error(`the C floor exited ${out.status ?? out.signal}: ${out.stderr.trim()}`);
  return out.stdout;
}

/** Runs the floor; resolves the seconds its maps and its unmaps took. */
export function runFloor(r: FloorRun, binary: string = FLOOR_BINARY): { map: number; unmap: number } {
  const stdout = spawnFloor(r, floorInput(r.sections), binary);
  const res = JSON.parse(stdout) as { count: number; threads: number; mapNs: number; unmapNs: number };
  if (res.count !== r.sections.length || res.threads !== r.threads)
    throw new Error(`the C floor did other work: ${stdout.trim()}`);
  return { map: res.mapNs / 1e9, unmap: res.unmapNs / 1e9 };
}

/** Runs an op list on the floor (one thread); resolves the seconds of its timed part. */
export function runFloorOps(
  r: Omit<FloorRun, 'sections' | 'threads'>,
  ops: readonly OpListItem[],
  binary: string = FLOOR_BINARY,
): number {
  const stdout = spawnFloor({ ...r, threads: 1 }, floorOpsInput(ops), binary);
  const res = JSON.parse(stdout) as { ops: number; ns: number };
  const i = ops.indexOf('start');
  const j = ops.indexOf('stop');
  const timed = ops.slice(i < 0 ? 0 : i + 1, j < 0 ? ops.length : j).length;
  if (res.ops !== timed) throw new Error(`the C floor did other work: ${stdout.trim()}`);
  return res.ns / 1e9;
}

/**
 * The floor's modes of a workload on the real kernel: 'floor' (one thread) and 'floor-N' (N =
 * the engine's workers, when more than one), each handed to `record` with its seconds. Runs
 * before the workload's engine attaches the device the floor binds.
 */
export function floorModes(
  ctx: WorkloadContext,
  run: Omit<FloorRun, 'threads' | 'device'>,
  record: (mode: string, t: { map: number; unmap: number }) => void,
): void {
  if (ctx.kernel !== 'linux') return;
  const device = linuxEduDevices(new LinuxPort())[0]!;
  for (const threads of ctx.workers > 1 ? [1, ctx.workers] : [1])
    record(threads === 1 ? 'floor' : `floor-${threads}`, runFloor({ ...run, device, threads }));
}

/** The floor's mode of an op-list workload on the real kernel ('floor', one thread: the ops are in order). */
export function floorOpsMode(
  ctx: WorkloadContext,
  run: Omit<FloorRun, 'threads' | 'device' | 'sections'>,
  ops: readonly OpListItem[],
  record: (seconds: number) => void,
): void {
  if (ctx.kernel !== 'linux') return;
  record(runFloorOps({ ...run, device: linuxEduDevices(new LinuxPort())[0]! }, ops));
}
