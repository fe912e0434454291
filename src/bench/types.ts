/**
 * The benchmark runner's data: what a workload measures (samples), what a run writes (one
 * JSON record), and the names they use. Pure types and constants; no measuring here.
 */

/** Where the DMA ioctls go: nowhere (the engine's own cost), the simulated kernel, or Linux. */
export type BenchKernel = 'null' | 'sim' | 'linux';
/** Every kernel, in the order the runner takes them. */
export const BENCH_KERNELS: readonly BenchKernel[] = ['null', 'sim', 'linux'];

/** What a sample's value counts. Higher is better for ops/s; lower for ms and B/mapping. */
export type Metric = 'ops/s' | 'ms' | 'B/mapping';

/**
 * One measurement: one mode of one case of a workload on one kernel, in one round.
 * `mode` is the engine or one of its baselines: 'engine' (the whole engine), 'qemu' (one
 * ioctl per section, in order, from JS: QEMU's way), 'model' (the simulated kernel's own
 * cost, in-thread), 'floor' and 'floor-N' (the C floor, one thread or N).
 */
export interface BenchSample {
  readonly workload: string;
  readonly kernel: BenchKernel;
  /** The case within the workload, e.g. '16,384 x 4 KiB' or '100,000 live'. */
  readonly case: string;
  readonly mode: string;
  /** What was timed: 'add', 'del', 'txn', 'heap', ... */
  readonly phase: string;
  readonly metric: Metric;
  readonly value: number;
  /** Work items behind the value (regions, transactions, mappings). */
  readonly n: number;
  /** 0-based; warm-up rounds are not recorded. */
  readonly round: number;
  /** Backend of the container(s) measured, when it matters. */
  readonly backend?: 'iommufd' | 'legacy';
}

/** The load of the machine: /proc/loadavg's three averages. */
export type LoadAverage = readonly [number, number, number];

/** The machine a run was on. */
export interface BenchMachine {
  readonly cpus: number;
  readonly cpuModel: string;
  readonly memoryBytes: number;
  readonly os: string;
  /** The kernel the ioctls went to: this machine's (`uname -r`), or the guest's in the VM. */
  readonly kernelRelease: string;
  readonly node: string;
  readonly loadBefore: LoadAverage;
  readonly loadAfter: LoadAverage;
}

/** A target's verdict on one run. */
export interface TargetResult {
  readonly id: string;
  /** What it asks, e.g. 'engine >= 1,000,000 region ops/s for bulk 4 KiB adds'. */
  readonly description: string;
  /** The measured value in the target's unit, or null when the run did not measure it. */
  readonly value: number | null;
  readonly goal: number;
  readonly comparison: '>=' | '<=';
  readonly unit: string;
  /** 'met', 'missed', or 'not measured' (the workload or kernel was not part of the run). */
  readonly status: 'met' | 'missed' | 'not measured';
  /** How far: value / goal for '>=', goal / value for '<=' (>= 1 when met). */
  readonly ratio: number | null;
}

/** What a run measured: the options of `vfio-engine bench` that shape its samples. */
export interface BenchRunOptions {
  readonly workloads: readonly string[];
  readonly kernels: readonly BenchKernel[];
  readonly workers: number;
  readonly rounds: number;
  /** Multiplies every workload's counts (1: the documented sizes). */
  readonly scale: number;
}

/** The test VM a real-kernel run was in, as the host that booted it saw it (`npm run bench:kernel`). */
export interface BenchVm {
  /** The emulated IOMMU: 'vtd' or 'virtio'. */
  readonly iommu: string;
  /** QEMU's accelerator: 'kvm', 'tcg,thread=single' or 'tcg,thread=multi'. */
  readonly accel: string;
  readonly smp: number;
  /** Guest memory, QEMU -m syntax. */
  readonly memory: string;
  /** `qemu-system-x86_64 --version`'s first line. */
  readonly qemu: string;
  /** The host: its CPUs and model, and its load before and after the boot. */
  readonly host: BenchMachine;
}

/** One run of `vfio-engine bench`: written as one JSON file. */
export interface BenchRecord {
  readonly schema: 'vfio-engine-bench/1';
  /** ISO time the run started. */
  readonly started: string;
  readonly seconds: number;
  /** The command line, after `bench`. */
  readonly argv: readonly string[];
  /** `git rev-parse HEAD` of the checkout, or null outside one. */
  readonly commit: string | null;
  readonly machine: BenchMachine;
  readonly options: BenchRunOptions;
  readonly samples: readonly BenchSample[];
  readonly targets: readonly TargetResult[];
  /** Set when the run was in the test VM: the VM and the host that booted it. */
  readonly vm?: BenchVm;
}
