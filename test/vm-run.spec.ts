// vm/run.ts on the host, without booting anything: the command line (parseArgs), and a
// whole runKernelSuite against a fake QEMU that reads the initramfs vm/run.ts built and
// answers with console markers, for mocha runs and for --command runs.
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import {
  fragmentMismatches,
  IOMMU_VARIANTS,
  parseArgs,
  runKernelSuite,
  type KernelSuiteOptions,
} from '../vm/run.js';
import { DmaFaultLabels } from './kernel/dma-faults.js';

describe('vm/run.ts parseArgs: the test VM command line', function () {
  it('reads every option, and passes the rest to mocha', function () {
    const o = parseArgs([
      '--iommu',
      'virtio',
      '--spec',
      'dist/test/kernel/e2e*.spec.js',
      '--spec=dist/test/kernel/engine.spec.js',
      '--kernel',
      '/k/bzImage',
      '--vm-timeout=90',
      '--edu',
      '3',
      '--no-build',
      '--grep',
      'edu',
      '--',
      '--bail',
    ]);
    expect(o.variants).to.deep.equal(['virtio']);
    expect(o.specs).to.deep.equal(['dist/test/kernel/e2e*.spec.js', 'dist/test/kernel/engine.spec.js']);
    expect(o.kernel).to.equal('/k/bzImage');
    expect(o.timeoutSeconds).to.equal(90);
    expect(o.eduDevices).to.equal(3);
    expect(o.buildKernel).to.equal(false);
    expect(o.mochaArgs).to.deep.equal(['--grep', 'edu', '--bail']);
    expect(o.command).to.equal(undefined);
    expect(parseArgs(['--iommu', 'both']).variants).to.deep.equal(IOMMU_VARIANTS);
    expect(parseArgs(['-h']).help).to.equal(true);
  });

  it('refuses bad values', function () {
    expect(() => parseArgs(['--iommu', 'amd'])).to.throw(/--iommu takes vtd, virtio or both, not amd/);
    expect(() => parseArgs(['--vm-timeout', '0'])).to.throw(/--vm-timeout needs a number/);
    expect(() => parseArgs(['--edu', '1.5'])).to.throw(/--edu needs a count/);
    expect(() => parseArgs(['--kernel'])).to.throw(/--kernel needs a value/);
  });

  it('--command takes a shell command, in either form', function () {
    expect(
      parseArgs(['--iommu', 'vtd', '--command', 'node dist/src/cli/main.js bench --kernel linux --rounds 1']),
    ).to.deep.include({
      command: 'node dist/src/cli/main.js bench --kernel linux --rounds 1',
      variants: ['vtd'],
      specs: [],
      mochaArgs: [],
    });
    expect(parseArgs(['--command=echo a=b']).command).to.equal('echo a=b');
  });

  it('--command refuses an empty command, spec globs and mocha arguments (it runs instead of mocha)', function () {
    expect(() => parseArgs(['--command'])).to.throw(/--command needs a value/);
    expect(() => parseArgs(['--command', '  '])).to.throw(/--command needs a command/);
    expect(() => parseArgs(['--command', 'true', '--spec', 'x.js'])).to.throw(
      /--command runs instead of mocha: --spec x.js does not apply/,
    );
    expect(() => parseArgs(['--grep', 'edu', '--command', 'true'])).to.throw(/--grep edu does not apply/);
  });
});

/** The files of a newc cpio archive (as vm/run.ts cpioNewc writes them). */
const READ_CPIO = `
function readCpio(b) {
  const files = new Map();
  let at = 0;
  const align = (n) => (n + 3) & ~3;
  for (;;) {
    const hex = (i) => parseInt(b.toString('ascii', at + 6 + i * 8, at + 14 + i * 8), 16);
    const size = hex(6), nameSize = hex(11);
    const name = b.toString('utf8', at + 110, at + 110 + nameSize - 1);
    if (name === 'TRAILER!!!') return files;
    const data = align(at + 110 + nameSize);
    files.set(name, b.subarray(data, data + size).toString('utf8'));
    at = align(data + size);
  }
}`;

/**
 * A QEMU stand-in: prints what it was asked to run (the staged command, or the spec globs
 * and mocha-args), then the markers a guest would send: EXIT taken from the command's
 * `exit N`, else 0 with totals; none at all when the command says `hang-up`.
 */
const FAKE_QEMU = `#!${process.execPath}
const fs = require('node:fs');
${READ_CPIO}
const args = process.argv.slice(2);
const files = readCpio(fs.readFileSync(args[args.indexOf('-initrd') + 1]));
const append = args[args.indexOf('-append') + 1];
const command = files.get('vfio-engine/command');
console.log('fake-qemu specs: ' + (append.match(/vfio_engine\\.spec=\\S+/g) || []).join(' '));
console.log('fake-qemu mocha-args: ' + JSON.stringify(files.get('vfio-engine/mocha-args') || ''));
if (command !== undefined) {
  console.log('fake-qemu command: ' + JSON.stringify(command));
  if (command.includes('dma-faults')) {
    console.log('[ 20.1] @@VFIO_ENGINE_DMA_FAULT begin a write to an unmapped IOVA\\r');
    console.log('[ 20.2] DMAR: [DMA Write NO_PASID] Request device [01:00.0] fault addr 0x200000 [fault reason 0x05] PTE Write access is not set\\r');
    console.log('[ 20.3] @@VFIO_ENGINE_DMA_FAULT end\\r');
    console.log('[ 21.0] virtio_iommu virtio0: page fault from EP 256 at 0xc0000 [W]\\r');
  }
  if (!command.includes('hang-up')) {
    console.log('@@VFIO_ENGINE_COVERAGE null\\r');
    console.log('@@VFIO_ENGINE_TOTALS null\\r');
    console.log('@@VFIO_ENGINE_EXIT ' + ((/exit (\\d+)/.exec(command) || [])[1] || 0) + '\\r');
  }
} else {
  console.log('@@VFIO_ENGINE_TOTALS {"passed":2,"failed":0,"skipped":1}\\r');
  console.log('@@VFIO_ENGINE_EXIT 0\\r');
}
`;

describe('vm/run.ts runKernelSuite against a fake QEMU: mocha runs and --command runs', function () {
  this.timeout(20_000);
  let dir: string;
  const saved: Record<string, string | undefined> = {};

  before(function () {
    if (!fs.existsSync('/bin/busybox') && !process.env.VFIO_ENGINE_BUSYBOX) this.skip(); // runKernelSuite needs a static busybox for the initramfs before QEMU runs
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-engine-fake-qemu-'));
    fs.writeFileSync(path.join(dir, 'qemu'), FAKE_QEMU, { mode: 0o755 });
    fs.writeFileSync(path.join(dir, 'bzImage'), 'not a kernel');
    for (const k of ['VFIO_ENGINE_QEMU', 'VFIO_ENGINE_VM_ACCEL']) saved[k] = process.env[k];
    process.env.VFIO_ENGINE_QEMU = path.join(dir, 'qemu');
    process.env.VFIO_ENGINE_VM_ACCEL = 'tcg';
  });
  after(function () {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function run(opts: KernelSuiteOptions) {
    let text = '';
    const output = new Writable({
      write(chunk: Buffer, _enc, done) {
        text += String(chunk);
        done();
      },
    });
    const result = await runKernelSuite({
      kernel: path.join(dir, 'bzImage'),
      timeoutSeconds: 15,
      ...opts,
      output,
    });
    return { result, text };
  }

  // As run(), with the kernel left to vm/run.ts's search.
  async function runWith(opts: KernelSuiteOptions) {
    let text = '';
    const output = new Writable({
      write(chunk: Buffer, _enc, done) {
        text += String(chunk);
        done();
      },
    });
    const result = await runKernelSuite({ timeoutSeconds: 15, ...opts, output });
    return { result, text };
  }

  it('a mocha run still reads the totals, with the spec globs on the kernel command line', async function () {
    const { result, text } = await run({ iommu: 'vtd', specs: ['dist/test/kernel/engine.spec.js'] });
    expect(text).to.include('fake-qemu specs: vfio_engine.spec=dist/test/kernel/engine.spec.js');
    expect(text).to.not.include('fake-qemu command');
    expect(result).to.deep.include({ exitCode: 0, totals: { passed: 2, failed: 0, skipped: 1 } });
    expect(result.error).to.equal(undefined);
  });

  it('stages the command in the initramfs, without spec globs or mocha arguments', async function () {
    const command = `node dist/src/cli/main.js bench bulk --kernel linux --scale 0.01 && echo "it's done"`;
    const { result, text } = await run({ iommu: 'virtio', command });
    expect(text).to.include(`fake-qemu command: ${JSON.stringify(command + '\n')}`);
    expect(text).to.include('fake-qemu specs: \n');
    expect(text).to.include('fake-qemu mocha-args: ""');
    expect(text).to.include('vfio-engine: command (virtio): exit 0');
    expect(result).to.deep.include({ iommu: 'virtio', exitCode: 0, totals: null, coverage: null });
    expect(result.error).to.equal(undefined);
  });

  it("a command's exit code is the run's", async function () {
    const { result } = await run({ command: 'exit 7' });
    expect(result.exitCode).to.equal(7);
    expect(result.error).to.equal('the command exited 7 in the guest');
  });

  it("labels guest DMA faults: inside a test's expectDmaFault window as expected, outside as UNEXPECTED, reported with the count (not failed: a fault can be logged late)", async function () {
    const { result, text } = await run({ command: 'true # dma-faults' });
    expect(text).to.include(
      'PTE Write access is not set   [expected DMA fault: a write to an unmapped IOVA]',
    );
    expect(text).to.include(
      'page fault from EP 256 at 0xc0000 [W]   [UNEXPECTED DMA fault: no test expects one here]',
    );
    expect(text, 'the markers themselves are not shown').to.not.include('@@VFIO_ENGINE_DMA_FAULT');
    expect(text).to.include(
      "guest DMA faults (vtd): 1 expected, labelled with the test's reason; 1 UNEXPECTED",
    );
    expect(result.dmaFaults).to.deep.equal({
      expected: 1,
      unexpected: ['[ 21.0] virtio_iommu virtio0: page fault from EP 256 at 0xc0000 [W]'],
    });
    expect(text).to.include(
      'vfio-engine:   UNEXPECTED DMA fault: [ 21.0] virtio_iommu virtio0: page fault from EP 256 at 0xc0000 [W]',
    );
    expect(result.exitCode, 'reported, not failed').to.equal(0);
  });

  it('boots the newest image vm/build-kernel.sh left in the cache, and skips one whose .config disagrees with vm/kernel.fragment', async function () {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-engine-cache-'));
    const saved = { xdg: process.env.XDG_CACHE_HOME, kernel: process.env.VFIO_ENGINE_KERNEL };
    process.env.XDG_CACHE_HOME = cache;
    delete process.env.VFIO_ENGINE_KERNEL;
    try {
      const dir = path.join(cache, 'vfio-engine');
      fs.mkdirSync(dir);
      const image = path.join(dir, 'bzImage-99.0.0-vfio'); // newer than any prebuilt one
      fs.writeFileSync(image, 'a kernel');
      const sum = createHash('sha256').update('a kernel').digest('hex');
      fs.writeFileSync(`${image}.sha256`, `${sum}  bzImage-99.0.0-vfio\n`);
      const fragment = fs.readFileSync(path.join(process.cwd(), 'vm/kernel.fragment'), 'utf8');
      // As olddefconfig writes it: the "is not set" options may be left out altogether.
      const config = fragment
        .split('\n')
        .filter((l) => l.startsWith('CONFIG_'))
        .join('\n');
      fs.writeFileSync(`${image}.config`, config);
      let { text } = await runWith({ command: 'true', buildKernel: false });
      expect(text).to.include(`booting ${image} (built here before,`);
      fs.writeFileSync(
        `${image}.config`,
        config.replace('CONFIG_IOMMUFD_TEST=y', '# CONFIG_IOMMUFD_TEST is not set'),
      );
      ({ text } = await runWith({ command: 'true', buildKernel: false }));
      expect(text).to.include(`ignoring ${image}: its .config disagrees with CONFIG_IOMMUFD_TEST=y`);
      expect(text).to.not.include(`booting ${image}`);
    } finally {
      if (saved.xdg === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = saved.xdg;
      if (saved.kernel !== undefined) process.env.VFIO_ENGINE_KERNEL = saved.kernel;
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });

  it('a guest that never reports fails the run', async function () {
    const { result } = await run({ command: 'hang-up' });
    expect(result.exitCode).to.equal(1);
    expect(result.error).to.match(/^the guest stopped without a result \(QEMU exit 0\)/);
  });

  it('refuses an empty command, or one given with spec globs or mocha arguments, before booting', async function () {
    for (const [opts, why] of [
      [{ command: ' ' }, /the command to run in the guest is empty/],
      [{ command: 'true', specs: ['x.js'] }, /spec globs and mocha arguments do not apply/],
      [{ command: 'true', mochaArgs: ['--bail'] }, /spec globs and mocha arguments do not apply/],
    ] as [KernelSuiteOptions, RegExp][]) {
      const { result, text } = await run(opts);
      expect(result.exitCode).to.equal(1);
      expect(result.error).to.match(why);
      expect(text).to.not.include('fake-qemu');
    }
  });
});

describe('test/kernel/dma-faults.ts DmaFaultLabels: the guest console, line by line', function () {
  it('counts fault lines between the markers as expected, others as unexpected; passes other lines through; ignores the ratelimit note', function () {
    const l = new DmaFaultLabels();
    expect(l.label('[ 1.0] DMAR: DRHD: handling fault status reg 2')).to.match(/UNEXPECTED/);
    expect(l.label('[ 2.0] <3>@@VFIO_ENGINE_DMA_FAULT begin a ROM write')).to.equal(null);
    expect(l.label('[ 2.1] DMAR: DRHD: handling fault status reg 2')).to.match(
      /\[expected DMA fault: a ROM write\]$/,
    );
    expect(l.label('[ 2.2] virtio_iommu virtio0: page fault from EP 8 at 0xe0000 [W]')).to.match(
      /expected DMA fault/,
    );
    expect(l.label('    ✔ a test line')).to.equal('    ✔ a test line');
    expect(l.label('[ 2.3] @@VFIO_ENGINE_DMA_FAULT end')).to.equal(null);
    expect(l.label('[ 3.0] viommu_fault_handler: 5 callbacks suppressed')).to.equal(
      '[ 3.0] viommu_fault_handler: 5 callbacks suppressed',
    );
    expect(l.label('[ 3.1] DMAR: [DMA Read NO_PASID] Request device [02:00.0] fault addr 0x1000')).to.match(
      /UNEXPECTED/,
    );
    expect(l.expected).to.equal(2);
    expect(l.unexpected).to.deep.equal([
      '[ 1.0] DMAR: DRHD: handling fault status reg 2',
      '[ 3.1] DMAR: [DMA Read NO_PASID] Request device [02:00.0] fault addr 0x1000',
    ]);
  });
});

describe('vm/run.ts fragmentMismatches: a saved .config against vm/kernel.fragment', function () {
  it('a set option must be there as it is; an unset one only must not be set (olddefconfig may leave it out)', function () {
    const fragment = [
      '# comment',
      'CONFIG_A=y',
      'CONFIG_B="x"',
      '# CONFIG_C is not set',
      '# CONFIG_D is not set',
    ].join('\n');
    expect(fragmentMismatches('CONFIG_A=y\nCONFIG_B="x"\n# CONFIG_C is not set', fragment)).to.deep.equal([]);
    expect(fragmentMismatches('CONFIG_A=m\nCONFIG_B="x"\nCONFIG_D=y', fragment)).to.deep.equal([
      'CONFIG_A=y',
      '# CONFIG_D is not set',
    ]);
  });
});
