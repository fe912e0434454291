/**
 * The pure half of the benchmarks: argument parsing, medians, ratios and the markdown
 * tables, kept apart from the runs so that unit tests can check them (test/bench-report.spec.ts).
 */
import { parseArgs } from 'node:util';

/** One workload: `count` sections of `size` bytes each, mapped then unmapped. */
export interface Shape {
  readonly count: number;
  readonly size: bigint;
}

const UNITS: Record<string, bigint> = { '': 1n, k: 1n << 10n, m: 1n << 20n, g: 1n << 30n };

/** A byte count: 4096, 0x1000, 4k, 2m, 1g (binary units). */
export function parseSize(s: string): bigint {
  const m = /^(0x[0-9a-f]+|\d+)([kmg]?)$/i.exec(s.trim());
  if (!m) throw new Error(`not a size: ${JSON.stringify(s)} (e.g. 4096, 4k, 2m)`);
  return BigInt(m[1]!) * UNITS[m[2]!.toLowerCase()]!;
}

/** '16384x4k' → 16384 sections of 4 KiB; sizes must be whole 4 KiB pages. */
export function parseShape(s: string): Shape {
  const m = /^(\d+)x(.+)$/i.exec(s.trim());
  if (!m) throw new Error(`not a shape: ${JSON.stringify(s)} (COUNTxSIZE, e.g. 16384x4k)`);
  const count = Number(m[1]);
  const size = parseSize(m[2]!);
  if (!Number.isSafeInteger(count) || count < 1) throw new Error(`${s}: the count must be at least 1`);
  if (size === 0n || size % 4096n) throw new Error(`${s}: the size must be a multiple of 4 KiB`);
  return { count, size };
}

/** 4096n → '4 KiB', 2097152n → '2 MiB'. */
export function formatSize(size: bigint): string {
  for (const [unit, name] of [
    [1n << 30n, 'GiB'],
    [1n << 20n, 'MiB'],
    [1n << 10n, 'KiB'],
  ] as const) {
    if (size >= unit && size % unit === 0n) return `${size / unit} ${name}`;
  }
  return `${size} B`;
}

/** '16,384 x 4 KiB' */
export function formatShape(s: Shape): string {
  return `${s.count.toLocaleString('en-US')} x ${formatSize(s.size)}`;
}

/** The median (the mean of the middle two for an even count); NaN for none. */
export function median(xs: readonly number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** One timed run of a mode: how long its maps and its unmaps took. */
export interface Sample {
  /** Where it ran (e.g. the VM's IOMMU), when results of several places are put together. */
  readonly vm?: string;
  readonly backend: string;
  readonly shape: Shape;
  readonly mode: string;
  readonly mapNs: number;
  readonly unmapNs: number;
}

/**
 * How rounds become one figure: 'best', the fastest round (noise from other work on the
 * machine only ever adds time, so the fastest round is nearest the cost itself), or
 * 'median'.
 */
export type Estimator = 'best' | 'median';

/** One line of a result table: the rounds of one vm, backend, shape and mode, as one figure each. */
export interface Row {
  readonly vm?: string;
  readonly backend: string;
  readonly shape: Shape;
  readonly mode: string;
  readonly rounds: number;
  readonly mapPerSec: number;
  readonly unmapPerSec: number;
}

/**
 * Ops/s per (vm, backend, shape, mode), in first-seen order, over the per-round rates: the
 * fastest round (default) or their median. Map and unmap are taken apart (their best
 * rounds may differ).
 */
export function summarize(samples: readonly Sample[], estimator: Estimator = 'best'): Row[] {
  const groups = new Map<string, Sample[]>();
  for (const s of samples) {
    const k = `${s.vm ?? ''}\0${s.backend}\0${s.shape.count}x${s.shape.size}\0${s.mode}`;
    let g = groups.get(k);
    if (!g) groups.set(k, (g = []));
    g.push(s);
  }
  return [...groups.values()].map((g) => {
    const { vm, backend, shape, mode } = g[0]!;
    const rate = (ns: number) => shape.count / (ns / 1e9);
    const pick = (xs: number[]) => (estimator === 'best' ? Math.max(...xs) : median(xs));
    return {
      ...(vm === undefined ? {} : { vm }),
      backend,
      shape,
      mode,
      rounds: g.length,
      mapPerSec: pick(g.map((s) => rate(s.mapNs))),
      unmapPerSec: pick(g.map((s) => rate(s.unmapNs))),
    };
  });
}

const sameCase = (a: Row, b: Row) =>
  a.vm === b.vm &&
  a.backend === b.backend &&
  a.shape.count === b.shape.count &&
  a.shape.size === b.shape.size;

/** Ratio of a row to the same case's row of mode `base` (higher is faster); NaN without one. */
export function ratio(rows: readonly Row[], r: Row, base: string, phase: 'map' | 'unmap'): number {
  const b = rows.find((x) => sameCase(x, r) && x.mode === base);
  if (!b) return NaN;
  return phase === 'map' ? r.mapPerSec / b.mapPerSec : r.unmapPerSec / b.unmapPerSec;
}

const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
const fixed = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '-');

/**
 * The result table in markdown: ops/s, and ratios to each of `bases` (e.g. 'floor' and
 * 'qemu'), map then unmap, each within its own vm, backend and shape. A 'vm' column
 * leads when any row has one.
 */
export function formatTable(rows: readonly Row[], bases: readonly string[]): string[] {
  const vm = rows.some((r) => r.vm !== undefined);
  const head = [
    ...(vm ? ['vm'] : []),
    'backend',
    'sections',
    'mode',
    'map ops/s',
    'unmap ops/s',
    ...bases.flatMap((b) => [`map ÷ ${b}`, `unmap ÷ ${b}`]),
  ];
  const align = head.map((_, i) => (i < (vm ? 4 : 3) ? '---' : '---:'));
  const out = [`| ${head.join(' | ')} |`, `| ${align.join(' | ')} |`];
  for (const r of rows) {
    const cells = [
      ...(vm ? [r.vm ?? ''] : []),
      r.backend,
      formatShape(r.shape),
      r.mode,
      int(r.mapPerSec),
      int(r.unmapPerSec),
      ...bases.flatMap((b) => [fixed(ratio(rows, r, b, 'map')), fixed(ratio(rows, r, b, 'unmap'))]),
    ];
    out.push(`| ${cells.join(' | ')} |`);
  }
  return out;
}

/** The modes of bench/kernel.ts, in the order a round runs them (rotated each round). */
export const KERNEL_MODES = ['floor', 'qemu', 'inline', 'workers', 'engine'] as const;
export type KernelMode = (typeof KERNEL_MODES)[number];
/** The backends of bench/kernel.ts. */
export const KERNEL_BACKENDS = ['iommufd', 'legacy'] as const;
export type KernelBackend = (typeof KERNEL_BACKENDS)[number];

/** What bench/kernel.ts runs. */
export interface KernelBenchOptions {
  readonly shapes: readonly Shape[];
  readonly rounds: number;
  readonly backends: readonly KernelBackend[];
  readonly modes: readonly KernelMode[];
  /** First IOVA (= guest-physical address) of the sections. */
  readonly iova: bigint;
}

/**
 * The default work: 16,384 sections of 4 KiB (the per-call cost: a vIOMMU or virtio-mem
 * storm) and 256 sections of 2 MiB (pinning: guest RAM), 5 rounds each, at 4 GiB.
 */
export const KERNEL_BENCH_DEFAULTS: KernelBenchOptions = {
  shapes: [
    { count: 16_384, size: 4096n },
    { count: 256, size: 2n << 20n },
  ],
  rounds: 5,
  backends: KERNEL_BACKENDS,
  modes: KERNEL_MODES,
  iova: 1n << 32n,
};

function listOf<T extends string>(flag: string, v: string, all: readonly T[]): T[] {
  const items = v.split(',').map((x) => x.trim());
  for (const x of items)
    if (!(all as readonly string[]).includes(x)) throw new Error(`${flag} takes ${all.join(', ')}; not ${x}`);
  return items as T[];
}

/**
 * Parses bench/kernel.ts's command line: --shape COUNTxSIZE (repeatable), --rounds N,
 * --backend iommufd,legacy, --mode floor,qemu,... (floor always runs: it is the
 * reference), --iova ADDR. Anything unset keeps its default.
 */
export function parseKernelBenchArgs(argv: readonly string[]): KernelBenchOptions {
  const { values: v } = parseArgs({
    args: [...argv],
    options: {
      shape: { type: 'string', multiple: true },
      rounds: { type: 'string' },
      backend: { type: 'string' },
      mode: { type: 'string' },
      iova: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  const d = KERNEL_BENCH_DEFAULTS;
  const rounds = v.rounds === undefined ? d.rounds : Number(v.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds needs a count of at least 1');
  const iova = v.iova === undefined ? d.iova : parseSize(v.iova);
  if (iova % 4096n) throw new Error('--iova must be 4 KiB aligned');
  const modes = v.mode === undefined ? null : listOf('--mode', v.mode, KERNEL_MODES);
  return {
    shapes: v.shape?.length ? v.shape.map(parseShape) : d.shapes,
    rounds,
    backends: v.backend === undefined ? d.backends : listOf('--backend', v.backend, KERNEL_BACKENDS),
    modes: modes ? KERNEL_MODES.filter((x) => x === 'floor' || modes.includes(x)) : d.modes,
    iova,
  };
}

/** The console lines bench/kernel.ts reports its samples on, one a line, read by the host. */
export const BENCH_MARKER = '@@VFIO_ENGINE_BENCH';

/** `@@VFIO_ENGINE_BENCH {"vm":...,"backend":...}`: the size as a number (it stays far below 2^53). */
export function benchMarkerLine(s: Sample): string {
  return `${BENCH_MARKER} ${JSON.stringify({ ...s, shape: { count: s.shape.count, size: Number(s.shape.size) } })}`;
}

/**
 * The sample of a marker line (found anywhere in a raw console line: a kernel message may
 * precede it); null when the line has none; throws when it has one that does not parse.
 */
export function readBenchMarker(line: string): Sample | null {
  const at = line.indexOf(`${BENCH_MARKER} `);
  if (at < 0) return null;
  const s = JSON.parse(line.slice(at + BENCH_MARKER.length + 1).trim()) as Omit<Sample, 'shape'> & {
    shape?: { count?: unknown; size?: unknown };
  };
  const ok =
    typeof s === 'object' &&
    typeof s.backend === 'string' &&
    typeof s.mode === 'string' &&
    typeof s.mapNs === 'number' &&
    typeof s.unmapNs === 'number' &&
    typeof s.shape?.count === 'number' &&
    typeof s.shape.size === 'number';
  if (!ok) throw new Error(`not a benchmark sample: ${line.slice(at, at + 200)}`);
  return { ...s, shape: { count: s.shape!.count as number, size: BigInt(s.shape!.size as number) } };
}
