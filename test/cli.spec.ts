import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
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
  });
});
