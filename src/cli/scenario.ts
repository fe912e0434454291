/**
 * Scenario files for `vfio-engine run` (README: Scenarios): read, checked in full and turned
 * into typed steps before the engine starts, so a mistake in the file is a list of one-line
 * problems (file, step, field) and never a crash half-way through a VM's life.
 */
import fs from 'node:fs';
import type { RegionKind } from '../memory/sections.js';

/** The region kinds a scenario may name (QEMU's: ram, rom, ram_device, iommu, mmio). */
export const REGION_KINDS: readonly RegionKind[] = ['ram', 'rom', 'ram_device', 'iommu', 'mmio'];

/** A device's backend choice, as QEMU's `-device vfio-pci,iommufd=`. */
export type IommufdMode = 'on' | 'off' | 'auto';

/** The iommufd values a device may name. */
export const IOMMUFD_MODES: readonly IommufdMode[] = ['on', 'off', 'auto'];

/** The step names a scenario may use. */
export const STEP_NAMES = ['attach', 'commit', 'unplug'] as const;

/** The guest RAM size when a scenario gives no `ramMiB`. */
export const DEFAULT_RAM_MIB = 256;

/** A declared device. */
export interface ScenarioDevice {
  readonly id: string;
  /** PCI address (0000:00:03.0) or sysfs path. */
  readonly host: string;
  readonly iommufd: IommufdMode;
}

/** A checked region: `offset` is into the guest RAM memfd (0 when left out). */
export interface ScenarioRegion {
  readonly gpa: bigint;
  readonly size: bigint;
  readonly offset: bigint;
  readonly kind: RegionKind;
  readonly readonly: boolean;
}

/** A checked step. */
export type ScenarioStep =
  | { readonly step: 'attach'; readonly devices: readonly string[] }
  | {
      readonly step: 'commit';
      readonly title?: string;
      readonly add: readonly ScenarioRegion[];
      readonly del: readonly ScenarioRegion[];
    }
  | { readonly step: 'unplug'; readonly device: string };

/** A checked scenario; `name` is the file's path when the file names none. */
export interface Scenario {
  readonly name: string;
  readonly ramMiB: number;
  readonly devices: readonly ScenarioDevice[];
  readonly steps: readonly ScenarioStep[];
}

/** Why a scenario cannot run: every problem found, one line each, naming the file and the field. */
export class ScenarioError extends Error {
  /** One line per problem: `<file>: step <n>: <field>: <what is wrong>`. */
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(problems.join('\n'));
    this.name = 'ScenarioError';
    this.problems = problems;
  }
}

const U64_END = 1n << 64n;
const HEX = /^0x[0-9a-f]+$/i;
/** Kinds whose bytes come from the guest RAM memfd (mmio and iommu regions are never mapped from it). */
const BACKED: ReadonlySet<RegionKind> = new Set(['ram', 'rom', 'ram_device']);

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const show = (v: unknown) => (typeof v === 'string' ? `'${v}'` : JSON.stringify(v));
const oneOf = (list: readonly string[]) => list.join(', ');

/** Reads and checks a scenario file; throws a {@link ScenarioError} listing every problem. */
export function loadScenario(file: string): Scenario {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    // fs names the call and the path after a comma ("..., open 'x.json'"): the file is named already.
    throw new ScenarioError([`${file}: cannot read it: ${(e as Error).message.replace(/, \w+ '.*'$/, '')}`]);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ScenarioError([`${file}: invalid JSON: ${(e as Error).message}`]);
  }
  return parseScenario(json, file);
}

/**
 * Checks parsed JSON as a scenario, every field of every device, step and region, and returns
 * it typed (numbers as bigints, defaults filled in); throws a {@link ScenarioError} listing every
 * problem. Steps are numbered from 1, as the run prints them. Device use is checked in step
 * order: an attach names declared devices not attached yet, an unplug one attached earlier.
 */
export function parseScenario(json: unknown, file: string): Scenario {
  const problems: string[] = [];
  const fail = (where: string, what: string) => problems.push(`${file}: ${where}: ${what}`);
  if (!isObject(json)) {
    fail('scenario', `expected a JSON object, not ${show(json)}`);
    throw new ScenarioError(problems);
  }
  unknownFields(json, ['name', 'ramMiB', 'devices', 'steps'], '', fail);

  if (json.name !== undefined && typeof json.name !== 'string')
    fail('name', `expected a string, not ${show(json.name)}`);
  let ramMiB = DEFAULT_RAM_MIB;
  if (json.ramMiB !== undefined) {
    if (typeof json.ramMiB === 'number' && Number.isSafeInteger(json.ramMiB) && json.ramMiB > 0)
      ramMiB = json.ramMiB;
    else fail('ramMiB', `expected a whole number of MiB above 0, not ${show(json.ramMiB)}`);
  }
  const ramBytes = BigInt(ramMiB) << 20n;

  const devices: ScenarioDevice[] = [];
  if (json.devices !== undefined && !Array.isArray(json.devices))
    fail('devices', `expected a list of devices, not ${show(json.devices)}`);
  for (const [i, d] of (Array.isArray(json.devices) ? json.devices : []).entries()) {
    const where = `devices[${i}]`;
    if (!isObject(d)) {
      fail(where, `expected an object { id, host, iommufd }, not ${show(d)}`);
      continue;
    }
    unknownFields(d, ['id', 'host', 'iommufd'], `${where}.`, fail);
    const id = nonEmptyString(d.id, `${where}.id`, fail);
    const host = nonEmptyString(d.host, `${where}.host`, fail);
    if (id !== null && devices.some((x) => x.id === id)) fail(`${where}.id`, `'${id}' is declared twice`);
    let iommufd: IommufdMode = 'auto';
    if (d.iommufd !== undefined) {
      if (IOMMUFD_MODES.includes(d.iommufd as IommufdMode)) iommufd = d.iommufd as IommufdMode;
      else fail(`${where}.iommufd`, `${show(d.iommufd)} is not one of ${oneOf(IOMMUFD_MODES)}`);
    }
    if (id !== null && host !== null) devices.push({ id, host, iommufd });
  }
  // Names refer to the declaration even when another field of it was wrong: one problem, not two.
  const declared = new Set(
    (Array.isArray(json.devices) ? json.devices : []).flatMap((d) =>
      isObject(d) && typeof d.id === 'string' ? [d.id] : [],
    ),
  );

  const steps: ScenarioStep[] = [];
  if (json.steps === undefined)
    fail('steps', 'missing: a scenario is a list of steps (attach, commit, unplug)');
  else if (!Array.isArray(json.steps)) fail('steps', `expected a list of steps, not ${show(json.steps)}`);
  const attached = new Map<string, number>();
  for (const [i, s] of (Array.isArray(json.steps) ? json.steps : []).entries()) {
    const n = i + 1;
    const at = (field: string) => `step ${n}${field ? `: ${field}` : ''}`;
    const failAt = (field: string, what: string) => problems.push(`${file}: ${at(field)}: ${what}`);
    if (!isObject(s)) {
      fail(at(''), `expected an object with "step" (${oneOf(STEP_NAMES)}), not ${show(s)}`);
      continue;
    }
    const device = (v: unknown, field: string): string | null => {
      const id = nonEmptyString(v, field, failAt);
      if (id === null) return null;
      if (!declared.has(id)) {
        failAt(field, `'${id}' is not declared in devices`);
        return null;
      }
      return id;
    };
    switch (s.step) {
      case 'attach': {
        unknownFields(s, ['step', 'devices'], '', failAt);
        if (!Array.isArray(s.devices) || s.devices.length === 0) {
          failAt('devices', `expected a list of device ids, not ${show(s.devices)}`);
          break;
        }
        const ids: string[] = [];
        for (const [j, v] of s.devices.entries()) {
          const id = device(v, `devices[${j}]`);
          if (id === null) continue;
          if (attached.has(id))
            failAt(`devices[${j}]`, `'${id}' is attached already (step ${attached.get(id)})`);
          else attached.set(id, n);
          ids.push(id);
        }
        steps.push({ step: 'attach', devices: ids });
        break;
      }
      case 'commit': {
        unknownFields(s, ['step', 'title', 'add', 'del'], '', failAt);
        if (s.title !== undefined && typeof s.title !== 'string')
          failAt('title', `expected a string, not ${show(s.title)}`);
        const regions = (field: 'add' | 'del'): ScenarioRegion[] => {
          const list = s[field];
          if (list === undefined) return [];
          if (!Array.isArray(list)) {
            failAt(field, `expected a list of regions, not ${show(list)}`);
            return [];
          }
          return list.flatMap((r, j) => {
            const region = parseRegion(r, `${field}[${j}]`, ramBytes, failAt);
            return region ? [region] : [];
          });
        };
        const add = regions('add');
        const del = regions('del');
        steps.push({ step: 'commit', title: typeof s.title === 'string' ? s.title : undefined, add, del });
        break;
      }
      case 'unplug': {
        unknownFields(s, ['step', 'device'], '', failAt);
        const id = device(s.device, 'device');
        if (id === null) break;
        if (!attached.has(id))
          failAt('device', `'${id}' is not attached at this step (attach it in an earlier one)`);
        attached.delete(id);
        steps.push({ step: 'unplug', device: id });
        break;
      }
      default:
        failAt(
          'step',
          s.step === undefined
            ? `missing: one of ${oneOf(STEP_NAMES)}`
            : `${show(s.step)} is not one of ${oneOf(STEP_NAMES)}`,
        );
    }
  }

  if (problems.length) throw new ScenarioError(problems);
  return { name: typeof json.name === 'string' ? json.name : file, ramMiB, devices, steps };
}

/**
 * A gpa, size or offset: a JSON number (a whole number, exact: at most 2^53 - 1) or a hex
 * string ("0x..."); null when it is neither.
 */
export function parseAddress(v: unknown): bigint | null {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? BigInt(v) : null;
  if (typeof v === 'string' && HEX.test(v)) return BigInt(v);
  return null;
}

function parseRegion(
  r: unknown,
  where: string,
  ramBytes: bigint,
  fail: (field: string, what: string) => void,
): ScenarioRegion | null {
  if (!isObject(r)) {
    fail(where, `expected a region { gpa, size, offset, kind, readonly }, not ${show(r)}`);
    return null;
  }
  let ok = true;
  const bad = (field: string, what: string) => {
    fail(`${where}.${field}`, what);
    ok = false;
  };
  unknownFields(r, ['gpa', 'size', 'offset', 'kind', 'readonly'], `${where}.`, (field, what) => {
    fail(field, what);
    ok = false;
  });
  const number = (field: 'gpa' | 'size' | 'offset', fallback?: bigint): bigint | null => {
    const v = r[field];
    if (v === undefined && fallback !== undefined) return fallback;
    if (v === undefined) {
      bad(field, 'missing: a number or a hex string ("0x...")');
      return null;
    }
    const n = parseAddress(v);
    if (n === null) {
      const why =
        typeof v === 'number'
          ? 'a whole number up to 2^53 - 1 (larger: a hex string)'
          : 'a number or a hex string ("0x...")';
      bad(field, `expected ${why}, not ${show(v)}`);
      return null;
    }
    if (n >= U64_END) {
      bad(field, `${show(v)} does not fit in 64 bits`);
      return null;
    }
    return n;
  };
  const gpa = number('gpa');
  const size = number('size');
  const offset = number('offset', 0n);
  let kind: RegionKind = 'ram';
  if (r.kind !== undefined) {
    if (REGION_KINDS.includes(r.kind as RegionKind)) kind = r.kind as RegionKind;
    else bad('kind', `${show(r.kind)} is not one of ${oneOf(REGION_KINDS)}`);
  }
  if (r.readonly !== undefined && typeof r.readonly !== 'boolean')
    bad('readonly', `expected true or false, not ${show(r.readonly)}`);
  if (size === 0n) bad('size', 'must be above 0');
  else if (size !== null && gpa !== null && gpa + size > U64_END)
    bad('size', `gpa + size (0x${(gpa + size).toString(16)}) is past the 64-bit address space`);
  // The engine maps these bytes: past the memfd they would be whatever the process has there.
  else if (size !== null && offset !== null && BACKED.has(kind) && offset + size > ramBytes)
    bad(
      'offset',
      `offset + size (0x${(offset + size).toString(16)}) is past the guest RAM (ramMiB ${ramBytes >> 20n}: 0x${ramBytes.toString(16)} bytes)`,
    );
  if (!ok || gpa === null || size === null || offset === null) return null;
  return { gpa, size, offset, kind, readonly: r.readonly === true };
}

function nonEmptyString(
  v: unknown,
  where: string,
  fail: (where: string, what: string) => void,
): string | null {
  if (typeof v === 'string' && v !== '') return v;
  fail(
    where,
    v === undefined ? 'missing: a non-empty string' : `expected a non-empty string, not ${show(v)}`,
  );
  return null;
}

// A misspelt field would otherwise be ignored and its default used in silence.
function unknownFields(
  o: Record<string, unknown>,
  known: readonly string[],
  prefix: string,
  fail: (field: string, what: string) => void,
): void {
  for (const k of Object.keys(o))
    if (!known.includes(k)) fail(`${prefix}${k}`, `unknown field (known: ${oneOf(known)})`);
}
