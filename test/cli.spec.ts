import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli/main.js');
const run = (...args: string[]) => execFileSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

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
});
