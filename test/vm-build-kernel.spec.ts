// vm/build-kernel.sh --config-only: the kernel a fresh machine builds from Debian's
// linux-source-6.12 and vm/kernel.fragment has the same .config as the prebuilt image of that
// release in shared/vm (so the suites' results on one hold for the other).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { findSharedVm } from '../vm/run.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const TARBALL = process.env.VFIO_ENGINE_LINUX_SOURCE ?? '/usr/src/linux-source-6.12.tar.xz';
const BUILD_PACKAGES = ['flex', 'bison', 'bc', 'libelf-dev', 'libssl-dev', 'gcc', 'make', 'xz-utils'];
// Lines that name the host's toolchain rather than anything the fragment chooses.
const TOOLCHAIN =
  /^(# )?CONFIG_(CC|AS|LD|GCC|CLANG|LLD|RUSTC|PAHOLE)_VERSION|^# Compiler:|^CONFIG_CC_VERSION_TEXT/;

function installed(pkg: string): boolean {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('ok installed');
}

const configLines = (text: string) => text.split('\n').filter((l) => l.trim() && !TOOLCHAIN.test(l));

describe('vm/build-kernel.sh: the kernel a fresh machine builds', function () {
  this.timeout(15 * 60_000);

  it('--config-only gives the .config of the prebuilt image of the same release, and prints one line per phase', function () {
    if (!fs.existsSync(TARBALL)) {
      this.test!.title += ` [skipped: no kernel source at ${TARBALL} (Debian: apt-get install linux-source-6.12)]`;
      this.skip();
    }
    const missing = BUILD_PACKAGES.filter((p) => !installed(p));
    if (missing.length) {
      this.test!.title += ` [skipped: the kernel build's packages are missing: ${missing.join(' ')}]`;
      this.skip();
    }
    const shared = findSharedVm(root);
    if (!shared) {
      this.test!.title += ' [skipped: no shared/vm folder beside the checkout to compare with]';
      this.skip();
    }
    const r = spawnSync('bash', [path.join(root, 'vm/build-kernel.sh'), '--config-only'], {
      encoding: 'utf8',
    });
    expect(r.status, `build-kernel.sh --config-only failed:\n${r.stdout}\n${r.stderr}`).to.equal(0);
    const lines = r.stdout.trim().split('\n');
    expect(
      lines.every((l) => l.startsWith('build-kernel: ')),
      r.stdout,
    ).to.equal(true);
    expect(
      lines.filter((l) => /^build-kernel: \[\d\/5\] /.test(l)).map((l) => l.split(' ')[2]),
    ).to.deep.equal(['packages:', 'source:', 'config:']);
    const tree = /config only: (.*)\/\.config$/.exec(lines[lines.length - 1]!)?.[1];
    expect(tree, r.stdout).to.be.a('string');
    const mk = fs.readFileSync(path.join(tree!, 'Makefile'), 'utf8');
    const num = (k: string) => new RegExp(`^${k} = (\\d+)`, 'm').exec(mk)![1];
    const version = `${num('VERSION')}.${num('PATCHLEVEL')}.${num('SUBLEVEL')}`;
    const prebuilt = path.join(shared!, `kernel-${version}-vfio.config`);
    if (!fs.existsSync(prebuilt)) {
      this.test!.title += ` [skipped: ${shared} has no prebuilt config for ${version}, the release linux-source-6.12 holds now]`;
      this.skip();
    }
    const built = configLines(fs.readFileSync(path.join(tree!, '.config'), 'utf8'));
    const want = configLines(fs.readFileSync(prebuilt, 'utf8'));
    const [wantSet, builtSet] = [new Set(want), new Set(built)];
    const extra = built.filter((l) => !wantSet.has(l));
    const lacking = want.filter((l) => !builtSet.has(l));
    expect({ extra, lacking }, `${tree}/.config vs ${prebuilt}`).to.deep.equal({ extra: [], lacking: [] });
  });
});
