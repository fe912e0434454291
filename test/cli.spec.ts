import { expect } from 'chai';
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cli = path.join(root, 'dist/src/cli/main.js');
const run = (...args: string[]) =>
  execFileSync(process.execPath, [cli, ...args], { encoding: 'utf8', cwd: root });
const spawn = (...args: string[]) =>
  spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', cwd: root });
const { version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };

/**
 * A usage error: exit code 2, nothing on stdout, and on stderr only `vfio-engine: <verb>: …` lines
 * (no stack trace), which are returned.
 */
function usageError(r: SpawnSyncReturns<string>, verb: string): string[] {
  expect(r.status, r.stdout + r.stderr).to.equal(2);
  expect(r.stdout).to.equal('');
  const lines = r.stderr.trimEnd().split('\n');
  for (const l of lines) expect(l).to.match(new RegExp(`^vfio-engine: ${verb}: \\S`));
  expect(r.stderr).to.not.match(/^\s+at /m);
  return lines;
}

describe('vfio-engine CLI', function () {
  this.timeout(30_000);

  it('probe surveys the simulated kernel by default: iommufd, the container, groups, devices', function () {
    const out = run('probe');
    expect(out).to.match(/^ok +iommufd \(\/dev\/iommu\) +IOAS 1 allocated and destroyed/m);
    expect(out).to.match(/^ok +legacy VFIO container .*type1v2 yes, unmap-all yes/m);
    expect(out).to.include('0000:00:06.0 (group 4, no cdev)');
    expect(out).to.include('0000:00:05.0 (group 3, vfio2), 0000:00:05.1 (group 3, vfio3)');
  });

  it('probe --kernel linux asks this machine (and reports what is missing, not an exception)', function () {
    const out = run('probe', '--kernel', 'linux');
    expect(out).to.match(/^(ok|no) +iommufd \(\/dev\/iommu\) +/m);
    expect(out).to.match(/^ok +RLIMIT_MEMLOCK/m);
  });

  it('uapi lists every ioctl with its number', function () {
    const out = run('uapi');
    expect(out).to.match(/^0x3b85 +IOMMU_IOAS_MAP +iommufd +struct iommu_ioas_map \(40 bytes\)$/m);
    expect(out).to.match(/^0x3ba0 +IOMMU_TEST_CMD /m);
  });

  it('refuses unknown commands and options with exit code 2', function () {
    expect(spawnSync(process.execPath, [cli, 'frobnicate']).status).to.equal(2);
    expect(spawnSync(process.execPath, [cli, 'probe', '--kernel', 'xen']).status).to.equal(2);
    expect(spawnSync(process.execPath, [cli, 'run', '--frob']).status).to.equal(2);
    const r = spawnSync(process.execPath, [cli, 'run', '--kernel', 'linux', '--topology', 'test-vm'], {
      encoding: 'utf8',
    });
    expect(r.status).to.equal(2);
    expect(r.stderr).to.include('--topology describes the simulated kernel only');
  });

  it('probe --topology test-vm surveys the simulated test VM', function () {
    const out = run('probe', '--topology', 'test-vm');
    expect(out).to.match(/^kernel: simulated \(the test VM;/m);
    expect(out).to.include('0000:01:00.0 (group 5, vfio0)');
  });

  it('run --inspect traces every actor state change next to the steps', function () {
    const out = run('run', '--inspect');
    expect(out).to.match(/^ {2}\| \+ *[\d.]+ ms {2}nic {2}created -> opening {2}\(OPEN\)$/m);
    expect(out).to.match(
      /^ {2}\| \+ *[\d.]+ ms {2}memory {2}active\.idle -> active\.committing {2}\(COMMIT\)$/m,
    );
    expect(out).to.match(/^ {2}\| .* container\d {2}applying -> ready /m);
    expect(run('run')).to.not.match(/^ {2}\| /m);
  });

  it('a reader that stops early (| head -1) gets no EPIPE trace', function () {
    const r = spawnSync('sh', ['-c', `"${process.execPath}" "${cli}" run | head -1`], { encoding: 'utf8' });
    expect(r.stdout).to.match(/^scenario: /);
    expect(r.stderr).to.not.include('EPIPE');
  });

  it('run exits 1 when a step fails, and still shuts down', function () {
    const dir = mkdtempSync(path.join(tmpdir(), 'vfio-engine-cli-'));
    const file = path.join(dir, 'bad.json');
    writeFileSync(
      file,
      JSON.stringify({
        ramMiB: 4,
        devices: [
          { id: 'ok', host: '0000:00:03.0' },
          { id: 'ghost', host: '0000:00:1f.0' },
        ],
        steps: [
          { step: 'attach', devices: ['ok', 'ghost'] },
          { step: 'commit', add: [{ gpa: '0x0', size: '0x400000' }] },
        ],
      }),
    );
    const r = spawnSync(process.execPath, [cli, 'run', file], { encoding: 'utf8' });
    rmSync(dir, { recursive: true });
    expect(r.status, r.stdout + r.stderr).to.equal(1);
    expect(r.stdout).to.match(/^ {2}ghost: attach failed: .*0000:00:1f\.0/m);
    expect(r.stdout).to.match(/^ {2}memory\/txn0: 1 mapped/m);
    expect(r.stdout).to.match(/^shutdown$/m);
  });
  describe('on commander: help, version and one-line errors for every verb', function () {
    let dir: string;
    before(() => (dir = mkdtempSync(path.join(tmpdir(), 'vfio-engine-cli-'))));
    after(() => rmSync(dir, { recursive: true, force: true }));
    /** Writes a file into the scratch folder; returns its path. */
    const file = (name: string, content: string | object) => {
      const p = path.join(dir, name);
      writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content));
      return p;
    };

    it('every verb has --help (exit 0, on stdout) and --version (package.json)', function () {
      for (const verb of ['probe', 'run', 'uapi']) {
        const r = spawn(verb, '--help');
        expect(r.status, r.stderr).to.equal(0);
        expect(r.stdout).to.match(new RegExp(`^Usage: vfio-engine ${verb} `));
        expect(r.stderr).to.equal('');
        expect(run(verb, '--version')).to.equal(`${version}\n`);
      }
      expect(run('probe', '--help')).to.match(/--kernel <kernel> .*\n.*"sim", "linux"/);
      expect(run('run', '--help')).to.include('--inspect').and.include('--topology <topology>');
      expect(run('--version')).to.equal(`${version}\n`);
      expect(run('--help')).to.match(/^ {2}probe .*\n(.*\n)* {2}run .*\n(.*\n)* {2}uapi /m);
      expect(run('help', 'run')).to.equal(run('run', '--help'));
      expect(run()).to.equal(run('--help'));
    });

    it('bad options and arguments: one line each, exit code 2', function () {
      expect(usageError(spawn('run', '--kernel'), 'run')).to.deep.equal([
        "vfio-engine: run: option '--kernel <kernel>' argument missing",
      ]);
      expect(usageError(spawn('probe', '--kernel', 'xen'), 'probe')).to.deep.equal([
        "vfio-engine: probe: option '--kernel <kernel>' argument 'xen' is invalid. Allowed choices are sim, linux.",
      ]);
      expect(usageError(spawn('run', 'a.json', 'b.json'), 'run')).to.deep.equal([
        "vfio-engine: run: too many arguments for 'run'. Expected 1 argument but got 2.",
      ]);
      expect(usageError(spawn('run', '--kernal', 'sim'), 'run')).to.deep.equal([
        "vfio-engine: run: unknown option '--kernal' (did you mean --kernel?)",
      ]);
      expect(usageError(spawn('uapi', '--inspect'), 'uapi')).to.deep.equal([
        "vfio-engine: uapi: unknown option '--inspect'",
      ]);
      const r = spawn('frobnicate');
      expect(r.status).to.equal(2);
      expect(r.stderr).to.equal("vfio-engine: unknown command 'frobnicate'\n");
    });

    it('a missing or invalid scenario or topology file is a usage error, not a stack trace', function () {
      expect(usageError(spawn('run', 'nonexist.json'), 'run')).to.deep.equal([
        'vfio-engine: run: nonexist.json: cannot read it: ENOENT: no such file or directory',
      ]);
      expect(usageError(spawn('run', '--topology', 'nope'), 'run')).to.deep.equal([
        "vfio-engine: run: option '--topology <topology>' argument 'nope' is invalid. Not default, test-vm, test-vm-virtio or a topology JSON file (ENOENT: no such file or directory).",
      ]);
      const scenario = file('broken-scenario.json', '{"steps": [');
      expect(usageError(spawn('run', scenario), 'run')).to.deep.equal([
        `vfio-engine: run: ${scenario}: invalid JSON: Unexpected end of JSON input`,
      ]);
      const topology = file('broken-topology.json', '{"iommu": ');
      for (const verb of ['run', 'probe'])
        expect(usageError(spawn(verb, '--topology', topology), verb)).to.deep.equal([
          `vfio-engine: ${verb}: option '--topology <topology>' argument '${topology}' is invalid. Invalid JSON: Unexpected end of JSON input.`,
        ]);
      const big = file('bigint-topology.json', { iommu: { cap_reg: 'zz' } });
      expect(usageError(spawn('probe', '--topology', big), 'probe')[0]).to.match(
        /Cannot convert zz to a BigInt\.$/,
      );
      // A topology file that is fine still works.
      const ok = file('topology.json', { memlock: '0x100000' });
      expect(run('probe', '--topology', ok)).to.match(/^ok +RLIMIT_MEMLOCK +soft 1024 KiB/m);
    });

    it('a scenario is checked in full before the run: one line per problem (file, step, field)', function () {
      const frob = file('frob.json', {
        devices: [{ id: 'nic', host: '0000:00:03.0', iommufd: 'yes' }],
        steps: [
          { step: 'frob', device: 'nic' },
          { step: 'attach', devices: ['nic', 'ghost'] },
          { step: 'commit', add: [{ gpa: '0x0', size: '0x1000', kind: 'dram' }] },
        ],
      });
      expect(usageError(spawn('run', frob), 'run')).to.deep.equal([
        `vfio-engine: run: ${frob}: devices[0].iommufd: 'yes' is not one of on, off, auto`,
        `vfio-engine: run: ${frob}: step 1: step: 'frob' is not one of attach, commit, unplug`,
        `vfio-engine: run: ${frob}: step 2: devices[1]: 'ghost' is not declared in devices`,
        `vfio-engine: run: ${frob}: step 3: add[0].kind: 'dram' is not one of ram, rom, ram_device, iommu, mmio`,
      ]);
      const nosteps = file('nosteps.json', { devices: [] });
      expect(usageError(spawn('run', nosteps), 'run')).to.deep.equal([
        `vfio-engine: run: ${nosteps}: steps: missing: a scenario is a list of steps (attach, commit, unplug)`,
      ]);
      // Checked before the engine starts: nothing ran.
      const late = file('late.json', {
        devices: [{ id: 'nic', host: '0000:00:03.0' }],
        steps: [
          { step: 'attach', devices: ['nic'] },
          { step: 'unplug', device: 'gpu' },
        ],
      });
      expect(usageError(spawn('run', late), 'run')).to.deep.equal([
        `vfio-engine: run: ${late}: step 2: device: 'gpu' is not declared in devices`,
      ]);
    });

    it('attach and unplug print one line per device: host, backend and why, container; what was released', function () {
      const out = run('run');
      expect(out).to.match(
        /^ {2}nic \(0000:00:03\.0\): iommufd: auto: \/dev\/iommu and \S+ exist, .*; attached to container0 \(iommufd IOAS \d+\)$/m,
      );
      expect(out).to.match(
        /^ {2}old \(0000:00:06\.0\): legacy: auto: 0000:00:06\.0 has no VFIO cdev, .*; attached to container1 \(legacy container fd \d+\)$/m,
      );
      // gpu joins nic's IOAS: no container line of its own, the device line names it.
      expect(out).to.match(
        /^step 3: attach gpu\n {2}gpu \(0000:00:04\.0\): iommufd: .*; attached to container0 /m,
      );
      expect(out).to.match(
        /^step 6: hot-unplug nic\n {2}nic \(0000:00:03\.0\): unplugged: device closed; container0 \(iommufd IOAS \d+\) stays for gpu$/m,
      );
      const vm = run('run', 'scenarios/test-vm.json', '--topology', 'test-vm');
      expect(vm).to.match(
        /^ {2}container0: destroyed\n {2}edu-a \(0000:01:00\.0\): unplugged: device closed; container0 \(iommufd IOAS \d+\) released with its 5 mapping\(s\)$/m,
      );
    });

    it('a step on a device whose attach failed is a reported step failure (exit 1), not a crash', function () {
      // scenarios/test-vm.json on the default host: neither edu exists there.
      const r = spawn('run', 'scenarios/test-vm.json');
      expect(r.status, r.stdout + r.stderr).to.equal(1);
      expect(r.stderr).to.equal('');
      expect(r.stdout).to.match(/^ {2}edu-a: attach failed: .*0000:01:00\.0/m);
      expect(r.stdout).to.match(
        /^step 6: hot-unplug edu-a\n {2}edu-a: unplug failed: not attached \(its attach at step 1 failed\)$/m,
      );
      expect(r.stdout).to.match(/^shutdown$/m);
    });

    it('what fails outside a step (here: guest RAM too large to map) is one line with exit code 1', function () {
      const r = spawn('run', file('huge.json', { ramMiB: 2 ** 30, steps: [] }));
      expect(r.status, r.stdout + r.stderr).to.equal(1);
      expect(r.stderr).to.match(/^vfio-engine: run: mmap failed: ENOMEM .*\n$/);
    });

    it('unplugging a device its failed container released says so', function () {
      const f = file('released.json', {
        ramMiB: 4,
        devices: [{ id: 'nic', host: '0000:00:03.0' }],
        steps: [
          { step: 'attach', devices: ['nic'] },
          // The MSI window is outside every container's IOVA ranges: the container fails.
          { step: 'commit', add: [{ gpa: '0xfee00000', size: '0x100000' }] },
          { step: 'unplug', device: 'nic' },
        ],
      });
      const r = spawn('run', f);
      expect(r.status, r.stdout + r.stderr).to.equal(1);
      expect(r.stdout).to.match(/^ {2}container0: FAILED \(runtime\): /m);
      expect(r.stdout).to.match(
        /^ {2}nic \(0000:00:03\.0\): unplugged: it was closed already \(its container failed\), now forgotten$/m,
      );
      expect(r.stderr).to.equal('');
    });
  });
});
