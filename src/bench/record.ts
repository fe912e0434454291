/**
 * The run's record: the machine it ran on, the checkout's commit, and the one JSON file a
 * run writes (and that a later run or the README reads back, validated).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BENCH_KERNELS, type BenchMachine, type BenchRecord, type LoadAverage } from './types.js';

/** The schema string of the records this version writes and reads. */
export const RECORD_SCHEMA: BenchRecord['schema'] = 'vfio-engine-bench/1';

/** The machine's load now (/proc/loadavg's 1, 5 and 15 minute averages): a busy machine skews a run. */
export function loadAverage(): LoadAverage {
  const [a = 0, b = 0, c = 0] = os.loadavg();
  return [a, b, c];
}

/** What machineInfo gives: the machine without the loads, which the runner takes before and after. */
export type MachineInfo = Omit<BenchMachine, 'loadBefore' | 'loadAfter'>;

/**
 * This machine: the CPUs this process may run on (os.availableParallelism: it honours the
 * affinity mask, which is what bounds the workers), the CPU model, memory, OS, Node.
 * `kernelRelease` is the kernel the ioctls went to: this machine's by default, the guest's
 * when the run was in the VM.
 */
export function machineInfo(kernelRelease: string = os.release()): MachineInfo {
  return {
    cpus: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model.trim() || 'unknown',
    memoryBytes: os.totalmem(),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    kernelRelease,
    node: process.version,
  };
}

/**
 * `git rev-parse HEAD` in `root`: which code a record measured. Null when root is not in a
 * checkout, git is missing or fails. GIT_DIR and GIT_WORK_TREE are dropped from the
 * environment so that `root`, not the caller's environment, decides.
 */
export function gitCommit(root: string): string | null {
  const env = { ...process.env };
  delete env.GIT_DIR;
  delete env.GIT_WORK_TREE;
  try {
    const out = execFileSync('git', ['rev-parse', 'HEAD'], {
      cwd: root,
      env,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10_000,
    }).trim();
    // sha1 or sha256 object names; anything else is not an answer.
    return /^([0-9a-f]{40}|[0-9a-f]{64})$/.test(out) ? out : null;
  } catch {
    return null;
  }
}

/** The record's file name: `bench-<started>.json` with ':' and '.' (not safe everywhere) as '-'. */
export function recordFileName(record: Pick<BenchRecord, 'started'>): string {
  return `bench-${record.started.replace(/[^0-9A-Za-z_-]/g, '-')}.json`;
}

/**
 * The record as JSON: a stray bigint (the engine counts in bigint) becomes a number when
 * it is exact and a decimal string when not, rather than making JSON.stringify throw at
 * the end of a long run. JSON has no NaN or Infinity: those are written as null.
 */
export function recordJson(record: BenchRecord): string {
  return `${JSON.stringify(
    record,
    (_k, v: unknown) =>
      typeof v === 'bigint'
        ? v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
          ? Number(v)
          : v.toString()
        : v,
    2,
  )}\n`;
}

/** Writes the record as `<dir>/bench-<started>.json` (creating dir); returns its path. */
export async function writeRecord(dir: string, record: BenchRecord): Promise<string> {
  await fs.mkdir(dir, { recursive: true });
  const file = path.join(dir, recordFileName(record));
  await fs.writeFile(file, recordJson(record));
  return file;
}

type Json = Record<string, unknown>;

// The checks of readRecord: each throws naming the file and the field (a JSON path).
class Check {
  constructor(private readonly file: string) {}
  fail(field: string, want: string, got: unknown): never {
    const seen = got === undefined ? 'nothing' : JSON.stringify(got)?.slice(0, 60);
    throw new Error(`${this.file}: not a benchmark record: ${field} should be ${want}, found ${seen}`);
  }
  object(v: unknown, field: string): Json {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, 'an object', v);
    return v as Json;
  }
  array(v: unknown, field: string): unknown[] {
    if (!Array.isArray(v)) this.fail(field, 'an array', v);
    return v;
  }
  string(o: Json, k: string, at: string): void {
    if (typeof o[k] !== 'string') this.fail(`${at}.${k}`, 'a string', o[k]);
  }
  number(o: Json, k: string, at: string, nullable = false): void {
    if (typeof o[k] !== 'number' && !(nullable && o[k] === null)) this.fail(`${at}.${k}`, 'a number', o[k]);
  }
  oneOf(o: Json, k: string, at: string, values: readonly unknown[]): void {
    if (!values.includes(o[k])) this.fail(`${at}.${k}`, `one of ${values.join(', ')}`, o[k]);
  }
}

/**
 * Reads a record back: the schema string must be this version's, and the fields a reader
 * uses must have their types (top level, machine, options, each sample and target).
 * Throws an Error naming the file and the first bad field. A sample value written as null
 * (a NaN or Infinity: JSON has neither) reads back as NaN.
 */
export async function readRecord(file: string): Promise<BenchRecord> {
  return parseRecord(await fs.readFile(file, 'utf8'), file);
}

/** A record from its JSON text, checked as readRecord does; `source` names it in errors. */
export function parseRecord(text: string, source: string): BenchRecord {
  const c = new Check(source);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    if (e instanceof SyntaxError)
      throw new Error(`${source}: not a benchmark record: not JSON (${e.message})`, { cause: e });
    throw e;
  }
  const r = c.object(parsed, '$');
  if (r.schema !== RECORD_SCHEMA) c.fail('$.schema', JSON.stringify(RECORD_SCHEMA), r.schema);
  c.string(r, 'started', '$');
  c.number(r, 'seconds', '$');
  c.array(r.argv, '$.argv').forEach((a, i) => {
    if (typeof a !== 'string') c.fail(`$.argv[${i}]`, 'a string', a);
  });
  if (r.commit !== null) c.string(r, 'commit', '$');
  const m = c.object(r.machine, '$.machine');
  for (const k of ['cpus', 'memoryBytes']) c.number(m, k, '$.machine');
  for (const k of ['cpuModel', 'os', 'kernelRelease', 'node']) c.string(m, k, '$.machine');
  for (const k of ['loadBefore', 'loadAfter']) {
    const l = c.array(m[k], `$.machine.${k}`);
    if (l.length !== 3 || l.some((x) => typeof x !== 'number')) c.fail(`$.machine.${k}`, 'three numbers', l);
  }
  const o = c.object(r.options, '$.options');
  for (const k of ['workloads', 'kernels']) c.array(o[k], `$.options.${k}`);
  for (const k of ['workers', 'rounds', 'scale']) c.number(o, k, '$.options');
  const samples = c.array(r.samples, '$.samples').map((v, i) => {
    const at = `$.samples[${i}]`;
    const s = c.object(v, at);
    for (const k of ['workload', 'case', 'mode', 'phase']) c.string(s, k, at);
    c.oneOf(s, 'kernel', at, BENCH_KERNELS);
    c.oneOf(s, 'metric', at, ['ops/s', 'ms', 'B/mapping']);
    c.number(s, 'value', at, true);
    c.number(s, 'n', at);
    c.number(s, 'round', at);
    if (s.backend !== undefined) c.oneOf(s, 'backend', at, ['iommufd', 'legacy']);
    return s.value === null ? { ...s, value: NaN } : s;
  });
  c.array(r.targets, '$.targets').forEach((v, i) => {
    const at = `$.targets[${i}]`;
    const t = c.object(v, at);
    for (const k of ['id', 'description', 'unit']) c.string(t, k, at);
    c.number(t, 'goal', at);
    c.number(t, 'value', at, true);
    c.number(t, 'ratio', at, true);
    c.oneOf(t, 'comparison', at, ['>=', '<=']);
    c.oneOf(t, 'status', at, ['met', 'missed', 'not measured']);
  });
  return { ...r, samples } as unknown as BenchRecord;
}
