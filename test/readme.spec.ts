import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe('README', function () {
  this.timeout(30_000);

  it('shows examples/uapi-port.mjs verbatim, and the example runs', function () {
    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    const example = fs.readFileSync(path.join(root, 'examples/uapi-port.mjs'), 'utf8');
    expect(readme).to.include(example.trimEnd());
    const out = execFileSync(process.execPath, [path.join(root, 'examples/uapi-port.mjs')], {
      encoding: 'utf8',
    });
    // Without /dev/iommu the kernel answers ENOTTY; with it, ENOENT (IOAS 1 does not exist).
    expect(out).to.match(
      /^(ENOTTY|ENOENT): IOMMU_IOAS_MAP failed: .* ioas_id=1 flags=7 iova=0x100000 length=0x200000 /,
    );
  });

  it('shows examples/sim-kernel.mjs verbatim, and it maps on the simulated kernel and gets EEXIST', function () {
    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    const example = fs.readFileSync(path.join(root, 'examples/sim-kernel.mjs'), 'utf8');
    expect(readme).to.include(example.trimEnd());
    const out = execFileSync(process.execPath, [path.join(root, 'examples/sim-kernel.mjs')], {
      encoding: 'utf8',
    });
    expect(out).to.match(/^IOAS 1: mapped 1 MiB at IOVA 0x40000000\n/);
    expect(out).to.match(
      /IOMMU_IOAS_MAP failed: EEXIST \(File exists\) \[fd=\d+ ioas_id=1 flags=7 iova=0x40000000 length=0x100000 /,
    );
  });

  it('shows examples/engine.mjs verbatim, and it attaches with auto selection and maps', function () {
    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    const example = fs.readFileSync(path.join(root, 'examples/engine.mjs'), 'utf8');
    expect(readme).to.include(example.trimEnd());
    const out = execFileSync(process.execPath, [path.join(root, 'examples/engine.mjs')], {
      encoding: 'utf8',
    });
    expect(out).to.match(/^0000:00:03\.0: iommufd\n0000:00:06\.0: legacy\nmemory\/txn0: 2 mapped in /);
    expect(out).to.match(/container0: 0x0\+0x1000000\ncontainer1: 0x0\+0x1000000\n$/);
  });

  it('names the quick start commands and the test command', function () {
    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    expect(readme).to.include('npm ci && npm start');
    expect(readme).to.include('npm test');
  });
});
