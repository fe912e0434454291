// The ioctl coverage of this boot: what the real kernel answered to every ioctl of the
// uapi layer, as counted by the RecordingPort all suites share. It is judged on the host
// over both boots (VT-d and virtio-iommu, test/kernel/coverage.ts): neither can accept
// every ioctl alone. Named zz- so that mocha, which sorts spec files by name, loads and
// runs it last.
import { existsSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { describeKernel } from './guest.js';
import { CONTRIBUTORS, coverageReport } from './coverage.js';
import { kernelHandles } from './kit.js';
import { ioctlRecorder } from './recording-port.js';
import { guestIommu } from './variant.js';

describeKernel('ioctl coverage: what the real kernel answered to every ioctl of the uapi layer', function () {
  it('has every contributing suite in the build', function () {
    const here = fileURLToPath(new URL('.', import.meta.url));
    const absent = CONTRIBUTORS.filter((name) => !existsSync(`${here}${name}.spec.js`));
    expect(absent, 'contributing spec files missing from the build').to.deep.equal([]);
  });

  it(`reports this boot's counts for the check over both boots (written to $VFIO_ENGINE_COVERAGE)`, function () {
    const report = coverageReport(ioctlRecorder, guestIommu());
    const notLoaded = CONTRIBUTORS.filter((name) => !report.suites.includes(name));
    // A narrowed run (--spec): the host sees the suites list and does not judge it.
    if (notLoaded.length)
      console.log(`      this run did not load ${notLoaded.join(', ')}: coverage is partial`);
    const lines = Object.entries(report.ioctls).map(
      ([name, c]) =>
        `${name.padEnd(36)} ok ${String(c.ok).padStart(3)}  failed ${String(c.failed).padStart(3)}  ${c.errnos.join(' ')}`,
    );
    console.log(lines.map((l) => `      ${l}`).join('\n'));
    const file = process.env.VFIO_ENGINE_COVERAGE;
    if (file) writeFileSync(file, JSON.stringify(report));
    // A guest started by hand (not vm/guest-run.sh): the marker goes to the console directly.
    else if (process.env.VFIO_ENGINE_GUEST === '1')
      console.log(`@@VFIO_ENGINE_COVERAGE ${JSON.stringify(report)}`);
  });

  it('finds no fd or mapping of /dev/iommu, /dev/vfio or the test memfds left open by any suite', function () {
    expect(kernelHandles()).to.deep.equal([]);
  });
});
