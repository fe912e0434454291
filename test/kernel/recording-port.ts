/**
 * A SyscallPort that forwards to another one and records, per ioctl name, how
 * many calls the kernel accepted and how many it refused (with which errno).
 * All kernel suites share one recorder (mocha loads every spec file into one
 * process), so zz-ioctl-coverage.spec.ts can check that every ioctl of the uapi
 * layer was driven both ways against the real kernel.
 */
import os from 'node:os';
import { SyscallError } from '../../src/port/errors.js';
import { LinuxPort } from '../../src/port/linux.js';
import { SimPort } from '../../src/kernel/sim-port.js';
import { parseLinuxRelease, SIMULATED_LINUX } from '../../src/kernel/release.js';
import { testVmTopology, type Topology } from '../../src/kernel/topology.js';
import type { IommuVariant } from '../../vm/run.js';
import type { IoctlArg, SyscallPort } from '../../src/port/port.js';
import type { Ioctl } from '../../src/uapi/layout.js';

/** What the kernel answered to one ioctl over a run. */
export interface IoctlTally {
  /** Calls that returned >= 0. */
  ok: number;
  /** Calls that failed with an errno. */
  failed: number;
  /** The errno names of the failures (EEXIST, ENOENT, ...). */
  readonly errnos: Set<string>;
}

/** Per-ioctl tallies, plus the suites that fed them. */
export class IoctlRecorder {
  private readonly tallies = new Map<string, IoctlTally>();
  /** Names of the spec files that registered with {@link registerSuite}. */
  readonly suites = new Set<string>();

  /** Counts one call of `name`: a success, or the SyscallError it failed with. */
  record(name: string, error?: SyscallError): void {
    const t = this.tally(name);
    if (error) {
      t.failed++;
      t.errnos.add(error.code);
    } else {
      t.ok++;
    }
  }

  /** The tally of `name` (zero counts if it was never called). */
  tally(name: string): IoctlTally {
    let t = this.tallies.get(name);
    if (!t) {
      t = { ok: 0, failed: 0, errnos: new Set() };
      this.tallies.set(name, t);
    }
    return t;
  }

  /** Notes that a suite feeding this recorder was loaded (by its spec file's base name). */
  registerSuite(name: string): void {
    this.suites.add(name);
  }
}

/** The recorder shared by every kernel suite of this mocha process. */
export const ioctlRecorder = new IoctlRecorder();

/** A SyscallPort whose ioctls are counted in a recorder. */
export type RecordingPort = SyscallPort & { readonly recorder: IoctlRecorder };

/**
 * Wraps `inner`: ioctl outcomes go to `recorder` (failures re-thrown unchanged), every
 * other member is `inner`'s own, so the wrapper follows the SyscallPort interface as it grows.
 */
export function recordingPort(inner: SyscallPort, recorder: IoctlRecorder = ioctlRecorder): RecordingPort {
  const ioctl = (fd: number, req: Ioctl, arg?: IoctlArg): number => {
    let rc: number;
    try {
      rc = inner.ioctl(fd, req, arg);
    } catch (e) {
      // Only an errno is a kernel answer; anything else is a bug in the caller.
      if (e instanceof SyscallError) recorder.record(req.name, e);
      throw e;
    }
    recorder.record(req.name);
    return rc;
  };
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === 'ioctl') return ioctl;
      if (prop === 'recorder') return recorder;
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  }) as RecordingPort;
}

let shared: RecordingPort | undefined;

/** True when the kernel suites run against the simulated kernel (VFIO_ENGINE_PORT=sim). */
export function onSimulatedKernel(): boolean {
  return process.env.VFIO_ENGINE_PORT === 'sim';
}

/**
 * Which test VM the simulated kernel models: VFIO_ENGINE_SIM_IOMMU=vtd (the default) or
 * virtio. Any other value throws, so a typo cannot quietly test the other variant.
 */
export function simulatedIommu(): IommuVariant {
  const v = process.env.VFIO_ENGINE_SIM_IOMMU ?? 'vtd';
  if (v !== 'vtd' && v !== 'virtio')
    throw new Error(`VFIO_ENGINE_SIM_IOMMU is ${JSON.stringify(v)}: expected vtd or virtio`);
  return v;
}

/**
 * The Linux release the simulated kernel answers as: VFIO_ENGINE_SIM_LINUX (e.g. 6.12.117),
 * default SIMULATED_LINUX, the release a fresh machine builds.
 */
export function simulatedLinux(): string {
  const v = process.env.VFIO_ENGINE_SIM_LINUX ?? SIMULATED_LINUX;
  parseLinuxRelease(v); // throws, naming the value: a typo must not test another release
  return v;
}

/** The simulated host of the kernel suites: the test VM of the simulated variant and release (testVmTopology). */
export function simulatedTopology(): Topology {
  return testVmTopology(simulatedIommu(), simulatedLinux());
}

/**
 * The release of the kernel the suites run on: the booted kernel's (`uname -r`), or on the
 * simulated kernel the release it models. Suites ask it where 6.12 stable changed an answer.
 */
export function kernelRelease(): string {
  return onSimulatedKernel() ? simulatedLinux() : os.release();
}

/**
 * The port every kernel suite uses, wrapped in the shared recorder: LinuxPort in the
 * test VM, or with VFIO_ENGINE_PORT=sim a SimPort on a simulated kernel shaped like the
 * test VM of {@link simulatedIommu}, so the same suites check the simulation. Made on first
 * use (inside a hook or test), never at import: on the host the suites are only collected.
 */
export function kernelPort(): RecordingPort {
  shared ??= recordingPort(
    onSimulatedKernel() ? SimPort.startSync(simulatedTopology()).port() : new LinuxPort(),
  );
  return shared;
}
