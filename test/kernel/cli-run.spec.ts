// `vfio-engine run --kernel linux` in the VM: the main job on the real kernel, with the test
// VM's scenario (scenarios/test-vm.json: one edu through iommufd, one through the legacy
// container). On the simulated kernel the same scenario runs with --topology test-vm (VT-d)
// or test-vm-virtio, as the simulated variant.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeKernel } from './guest.js';
import { onSimulatedKernel } from './recording-port.js';
import { SIMULATED_IOMMU } from './variant.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const cli = path.resolve(here, '../../src/cli/main.js');
const scenario = path.resolve(here, '../../../scenarios/test-vm.json');

describeKernel('vfio-engine run on the kernel: the test VM scenario', function () {
  this.timeout(120_000);

  it('attaches both edus (iommufd by auto, legacy by off), commits, replays, hot-adds and removes, unplugs, exits 0', function () {
    const topology = SIMULATED_IOMMU === 'vtd' ? 'test-vm' : `test-vm-${SIMULATED_IOMMU}`;
    const kernel = onSimulatedKernel() ? ['--kernel', 'sim', '--topology', topology] : ['--kernel', 'linux'];
    const r = spawnSync(process.execPath, [cli, 'run', scenario, ...kernel], { encoding: 'utf8' });
    const out = r.stdout;
    expect(r.status, `${out}\n${r.stderr}`).to.equal(0);
    expect(out).to.match(/^ {2}edu-a \(0000:01:00\.0\): iommufd: auto: \/dev\/iommu and \S+ exist/m);
    expect(out).to.match(/^ {2}edu-b \(0000:02:00\.0\): legacy: iommufd=off/m);
    expect(out).to.match(/^ {2}container1: replayed 5 mapped \+ 0 IOAS_COPY in [\d.]+ ms$/m);
    expect(out).to.match(/^ {2}memory\/txn1: 2 mapped, 0 unmapped on 2 container\(s\) in [\d.]+ ms$/m);
    expect(out).to.match(/^ {2}memory\/txn2: 0 mapped, 2 unmapped on 2 container\(s\)/m);
    expect(out).to.match(/^ {4}iova {6}0xc0000 size {4}0x40000 ro$/m);
    expect(out).to.not.match(/0xa0000 size|0xfebf0000|FAILED|warning/);
    // The last table, after edu-a's unplug and before shutdown: only the legacy container.
    const last = out.slice(out.indexOf('hot-unplug edu-a'), out.indexOf('\nshutdown'));
    expect(last).to.match(/container0: destroyed/);
    expect(last.match(/^ {4}iova /gm)).to.have.length(5);
    expect(out.trimEnd().split('\n').slice(-2)).to.deep.equal(['shutdown', '  container1: destroyed']);
  });
});
