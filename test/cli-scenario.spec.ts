// The scenario validator of `vfio-engine run` (src/cli/scenario.ts), on its own: what it
// accepts and fills in, and one line per problem naming the file, the step and the field.
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadScenario, parseAddress, parseScenario, ScenarioError } from '../src/cli/scenario.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The problems parseScenario finds in `json` (none: the scenario is valid). */
function problems(json: unknown): readonly string[] {
  try {
    parseScenario(json, 'f.json');
    return [];
  } catch (e) {
    if (!(e instanceof ScenarioError)) throw e;
    return e.problems;
  }
}

const devices = [
  { id: 'nic', host: '0000:00:03.0' },
  { id: 'old', host: '0000:00:06.0', iommufd: 'off' },
];
const withSteps = (steps: unknown[], extra: Record<string, unknown> = {}) => ({ devices, steps, ...extra });
const commit = (...add: unknown[]) => withSteps([{ step: 'commit', add }]);

describe('vfio-engine run: the scenario validator', function () {
  it('accepts the shipped scenarios and types them (bigints, defaults)', function () {
    const q35 = loadScenario(path.join(root, 'scenarios/q35.json'));
    expect(q35.name).to.match(/^q35: /);
    expect(q35.ramMiB).to.equal(256);
    expect(q35.devices.map((d) => `${d.id}=${d.iommufd}`)).to.deep.equal([
      'nic=auto',
      'gpu=auto',
      'old=auto',
    ]);
    expect(q35.steps.map((s) => s.step)).to.deep.equal([
      'attach',
      'commit',
      'attach',
      'commit',
      'commit',
      'unplug',
    ]);
    const map = q35.steps[1]!;
    if (map.step !== 'commit') throw new Error('step 2 is a commit');
    expect(map.add[3]).to.deep.equal({
      gpa: 0xfffc0000n,
      size: 0x40000n,
      offset: 0x7f00000n,
      kind: 'rom',
      readonly: false,
    });
    expect(map.del).to.deep.equal([]);
    const vm = loadScenario(path.join(root, 'scenarios/test-vm.json'));
    expect(vm.devices.map((d) => d.iommufd)).to.deep.equal(['auto', 'off']);
  });

  it('fills in the defaults: name (the file), ramMiB 256, iommufd auto, kind ram, offset 0, not readonly', function () {
    const sc = parseScenario(
      {
        devices: [{ id: 'nic', host: '0000:00:03.0' }],
        steps: [{ step: 'commit', add: [{ gpa: 0, size: 4096 }] }],
      },
      'x.json',
    );
    expect(sc.name).to.equal('x.json');
    expect(sc.ramMiB).to.equal(256);
    expect(sc.devices[0]!.iommufd).to.equal('auto');
    expect(sc.steps[0]).to.deep.equal({
      step: 'commit',
      title: undefined,
      add: [{ gpa: 0n, size: 4096n, offset: 0n, kind: 'ram', readonly: false }],
      del: [],
    });
    expect(parseScenario({ steps: [] }, 'empty.json').devices).to.deep.equal([]);
  });

  it('takes gpa, size and offset as whole numbers or hex strings, up to 64 bits', function () {
    expect(parseAddress(4096)).to.equal(4096n);
    expect(parseAddress('0xFFFF0000')).to.equal(0xffff0000n);
    expect(parseAddress('0xffffffffffffffff')).to.equal((1n << 64n) - 1n);
    for (const bad of ['4096', '0x', 'ten', -1, 1.5, 2 ** 53, null, true, {}])
      expect(parseAddress(bad)).to.equal(null);
    expect(problems(commit({ gpa: '0x10000000000000000', size: 1 }))).to.deep.equal([
      "f.json: step 1: add[0].gpa: '0x10000000000000000' does not fit in 64 bits",
    ]);
    expect(problems(withSteps([], { ramMiB: 1 << 20 }))).to.deep.equal([]);
    expect(
      problems({ ...commit({ gpa: '0xfffffffffffff000', size: '0x2000', kind: 'mmio' }), ramMiB: 1 }),
    ).to.deep.equal([
      'f.json: step 1: add[0].size: gpa + size (0x10000000000001000) is past the 64-bit address space',
    ]);
  });

  it('names the file, the step (from 1, as the run prints) and the field of each region problem', function () {
    expect(
      problems(
        commit(
          { gpa: '12', size: 0, kind: 'dram' },
          { size: '0x1000', readonly: 'yes' },
          { gpa: 0, size: 2 ** 60 },
          { gpa: 0, sise: 4096 },
        ),
      ),
    ).to.deep.equal([
      `f.json: step 1: add[0].gpa: expected a number or a hex string ("0x..."), not '12'`,
      `f.json: step 1: add[0].kind: 'dram' is not one of ram, rom, ram_device, iommu, mmio`,
      'f.json: step 1: add[0].size: must be above 0',
      'f.json: step 1: add[1].gpa: missing: a number or a hex string ("0x...")',
      "f.json: step 1: add[1].readonly: expected true or false, not 'yes'",
      'f.json: step 1: add[2].size: expected a whole number up to 2^53 - 1 (larger: a hex string), not 1152921504606847000',
      'f.json: step 1: add[3].sise: unknown field (known: gpa, size, offset, kind, readonly)',
      'f.json: step 1: add[3].size: missing: a number or a hex string ("0x...")',
    ]);
    expect(problems(withSteps([{ step: 'commit', del: {} }]))).to.deep.equal([
      'f.json: step 1: del: expected a list of regions, not {}',
    ]);
  });

  it('keeps RAM-backed regions inside the guest RAM (mmio and iommu regions have no backing)', function () {
    const sc = { ...commit({ gpa: 0, size: '0x100000', offset: '0x300000' }), ramMiB: 4 };
    expect(problems(sc)).to.deep.equal([]);
    for (const kind of ['ram', 'rom', 'ram_device'])
      expect(
        problems({ ...commit({ gpa: 0, size: '0x100000', offset: '0x300001', kind }), ramMiB: 4 }),
      ).to.deep.equal([
        'f.json: step 1: add[0].offset: offset + size (0x400001) is past the guest RAM (ramMiB 4: 0x400000 bytes)',
      ]);
    for (const kind of ['mmio', 'iommu'])
      expect(problems({ ...commit({ gpa: 0, size: '0x10000000', kind }), ramMiB: 4 })).to.deep.equal([]);
  });

  it('checks the steps: their names, the devices they name, attach before unplug', function () {
    expect(
      problems(
        withSteps([
          { step: 'frob' },
          {},
          7,
          { step: 'attach', devices: ['nic', 'ghost'] },
          { step: 'attach', devices: ['nic'] },
          { step: 'attach', devices: [] },
          { step: 'unplug', device: 'old' },
          { step: 'unplug' },
          { step: 'unplug', device: 'nic', devices: ['nic'] },
          { step: 'unplug', device: 'nic' },
          { step: 'commit', title: 3 },
        ]),
      ),
    ).to.deep.equal([
      "f.json: step 1: step: 'frob' is not one of attach, commit, unplug",
      'f.json: step 2: step: missing: one of attach, commit, unplug',
      'f.json: step 3: expected an object with "step" (attach, commit, unplug), not 7',
      "f.json: step 4: devices[1]: 'ghost' is not declared in devices",
      "f.json: step 5: devices[0]: 'nic' is attached already (step 4)",
      'f.json: step 6: devices: expected a list of device ids, not []',
      "f.json: step 7: device: 'old' is not attached at this step (attach it in an earlier one)",
      'f.json: step 8: device: missing: a non-empty string',
      'f.json: step 9: devices: unknown field (known: step, device)',
      "f.json: step 10: device: 'nic' is not attached at this step (attach it in an earlier one)",
      'f.json: step 11: title: expected a string, not 3',
    ]);
    // Unplugged, a device may be attached again.
    expect(
      problems(
        withSteps([
          { step: 'attach', devices: ['nic'] },
          { step: 'unplug', device: 'nic' },
          { step: 'attach', devices: ['nic'] },
        ]),
      ),
    ).to.deep.equal([]);
  });

  it('checks the scenario fields and each device', function () {
    expect(problems([])).to.deep.equal(['f.json: scenario: expected a JSON object, not []']);
    expect(problems({ devices })).to.deep.equal([
      'f.json: steps: missing: a scenario is a list of steps (attach, commit, unplug)',
    ]);
    expect(
      problems({
        name: 1,
        ramMiB: 0,
        ramMb: 4,
        devices: [
          { id: 'a', host: '0000:00:03.0', iommufd: 'maybe' },
          { id: 'a', host: '' },
          'b',
          { host: '0000:00:04.0', bdf: 'x' },
        ],
        steps: {},
      }),
    ).to.deep.equal([
      'f.json: ramMb: unknown field (known: name, ramMiB, devices, steps)',
      'f.json: name: expected a string, not 1',
      'f.json: ramMiB: expected a whole number of MiB above 0, not 0',
      "f.json: devices[0].iommufd: 'maybe' is not one of on, off, auto",
      "f.json: devices[1].host: expected a non-empty string, not ''",
      "f.json: devices[1].id: 'a' is declared twice",
      "f.json: devices[2]: expected an object { id, host, iommufd }, not 'b'",
      'f.json: devices[3].bdf: unknown field (known: id, host, iommufd)',
      'f.json: devices[3].id: missing: a non-empty string',
      'f.json: steps: expected a list of steps, not {}',
    ]);
  });

  it('a file that cannot be read or is not JSON is one problem naming it', function () {
    const dir = mkdtempSync(path.join(tmpdir(), 'vfio-engine-scenario-'));
    try {
      const bad = path.join(dir, 'bad.json');
      writeFileSync(bad, '{"steps": [');
      expect(() => loadScenario(bad))
        .to.throw(ScenarioError)
        .with.property('problems')
        .that.deep.equals([`${bad}: invalid JSON: Unexpected end of JSON input`]);
      const none = path.join(dir, 'none.json');
      expect(() => loadScenario(none))
        .to.throw(ScenarioError)
        .with.property('message', `${none}: cannot read it: ENOENT: no such file or directory`);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});
