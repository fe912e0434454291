/**
 * The golden probe: a C program generated from the uapi declarations (src/uapi), compiled
 * against the kernel's own headers, that prints every struct size, field offset and size,
 * ioctl number and constant. Its output is compared line by line with what the TypeScript
 * layer computes. `node dist/test/golden/probe.js --write` refreshes the committed copy
 * (test/golden/uapi-probe.txt) used where no headers can be had.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONSTANTS, IOCTLS, STRUCTS, type Header } from '../../src/uapi/index.js';

const SCALAR_BYTES = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8 } as const;

/** Where the committed probe output lives (in the source tree, not dist/). */
export const COMMITTED = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../test/golden/uapi-probe.txt');

/** A set of kernel headers to probe against. */
export interface Headers {
  /** Directory holding linux/iommufd.h and linux/vfio.h. */
  include: string;
  /** Path of iommufd_test.h, when the kernel source is at hand. */
  selftest: string | null;
  /** Where they came from, for the test log. */
  source: string;
}

/** The lines the TypeScript layer says the probe must print, for the headers given. */
export function expectedLines(headers: readonly Header[]): string[] {
  const lines: string[] = [];
  for (const s of STRUCTS) {
    if (!headers.includes(s.header)) continue;
    lines.push(`struct ${s.name} size ${s.size}`);
    for (const f of s.fields) lines.push(`field ${s.name}.${f.name} offset ${f.offset} size ${SCALAR_BYTES[f.type] * f.count}`);
  }
  for (const io of IOCTLS) if (headers.includes(io.header)) lines.push(`ioctl ${io.name} 0x${io.request.toString(16)}`);
  for (const g of CONSTANTS) {
    if (!headers.includes(g.header)) continue;
    for (const [k, v] of Object.entries(g.values)) lines.push(`const ${g.prefix}${k} ${v}`);
  }
  return lines;
}

/** The C source of the probe. */
export function probeSource(headers: readonly Header[]): string {
  const out: string[] = [
    '#include <stddef.h>',
    '#include <stdio.h>',
    '#include <linux/types.h>',
    '#include <linux/iommufd.h>',
    '#include <linux/vfio.h>',
  ];
  if (headers.includes('selftest')) out.push('#include "iommufd_test.h"');
  out.push('int main(void) {');
  for (const s of STRUCTS) {
    if (!headers.includes(s.header)) continue;
    out.push(`  printf("struct ${s.name} size %zu\\n", sizeof(${s.cType}));`);
    for (const f of s.fields) {
      out.push(
        `  printf("field ${s.name}.${f.name} offset %zu size %zu\\n", offsetof(${s.cType}, ${f.cPath}), sizeof(((${s.cType} *)0)->${f.cPath}));`,
      );
    }
  }
  for (const io of IOCTLS) {
    if (headers.includes(io.header)) out.push(`  printf("ioctl ${io.name} 0x%lx\\n", (unsigned long)(${io.name}));`);
  }
  for (const g of CONSTANTS) {
    if (!headers.includes(g.header)) continue;
    for (const k of Object.keys(g.values)) {
      out.push(`  printf("const ${g.prefix}${k} %lld\\n", (long long)(${g.prefix}${k}));`);
    }
  }
  out.push('  return 0;', '}');
  return out.join('\n') + '\n';
}

function cacheDir(): string {
  return path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'vfio-engine');
}

/**
 * Finds Linux >= 6.12 uapi headers: $VFIO_ENGINE_UAPI_INCLUDE; else the headers of Debian's
 * linux-source-6.12 tarball, extracted once into the cache (what `make headers_install` would
 * install for these files; `__user` is defined empty when compiling); else the installed
 * /usr/include headers when they are new enough (then without the selftest header).
 */
export function findHeaders(): Headers | null {
  const env = process.env.VFIO_ENGINE_UAPI_INCLUDE;
  if (env && fs.existsSync(path.join(env, 'linux/iommufd.h'))) {
    const st = path.join(env, 'iommufd_test.h');
    return { include: env, selftest: fs.existsSync(st) ? st : null, source: `VFIO_ENGINE_UAPI_INCLUDE=${env}` };
  }
  const tarballs = fs.existsSync('/usr/src')
    ? fs
        .readdirSync('/usr/src')
        .filter((f) => /^linux-source-(6\.(1[2-9]|[2-9]\d)|[7-9]\.\d+)\.tar\.xz$/.test(f))
        .sort()
    : [];
  if (tarballs.length) {
    const tarball = path.join('/usr/src', tarballs[tarballs.length - 1]!);
    const top = tarballs[tarballs.length - 1]!.replace(/\.tar\.xz$/, '');
    const dir = path.join(cacheDir(), `uapi-${top}`);
    const stamp = path.join(dir, '.complete');
    if (!fs.existsSync(stamp)) {
      fs.rmSync(dir, { recursive: true, force: true });
      fs.mkdirSync(path.join(dir, 'linux'), { recursive: true });
      const members = ['include/uapi/linux/iommufd.h', 'include/uapi/linux/vfio.h', 'drivers/iommu/iommufd/iommufd_test.h'];
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'uapi-'));
      execFileSync('tar', ['-xJf', tarball, '-C', tmp, ...members.map((m) => `${top}/${m}`)]);
      fs.copyFileSync(path.join(tmp, top, members[0]!), path.join(dir, 'linux/iommufd.h'));
      fs.copyFileSync(path.join(tmp, top, members[1]!), path.join(dir, 'linux/vfio.h'));
      fs.copyFileSync(path.join(tmp, top, members[2]!), path.join(dir, 'iommufd_test.h'));
      fs.rmSync(tmp, { recursive: true, force: true });
      fs.writeFileSync(stamp, tarball + '\n');
    }
    return { include: dir, selftest: path.join(dir, 'iommufd_test.h'), source: `${tarball} (uapi headers extracted)` };
  }
  const sys = '/usr/include/linux/iommufd.h';
  if (fs.existsSync(sys) && fs.readFileSync(sys, 'utf8').includes('IOMMU_FAULT_QUEUE_ALLOC')) {
    return { include: '/usr/include', selftest: null, source: '/usr/include (installed uapi headers)' };
  }
  return null;
}

/** Compiles and runs the probe against `h`; returns its output lines. */
export function runProbe(h: Headers): string[] {
  const which: Header[] = h.selftest ? ['uapi', 'selftest'] : ['uapi'];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-engine-probe-'));
  try {
    const src = path.join(dir, 'probe.c');
    const exe = path.join(dir, 'probe');
    fs.writeFileSync(src, probeSource(which));
    const inc = ['-I', h.include];
    if (h.selftest) inc.push('-I', path.dirname(h.selftest));
    execFileSync('cc', ['-std=gnu11', '-D__user=', ...inc, '-o', exe, src], { stdio: ['ignore', 'pipe', 'pipe'] });
    return execFileSync(exe, { encoding: 'utf8' }).trimEnd().split('\n');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The committed probe output (from real 6.12 headers, with the selftest header). */
export function committedLines(): string[] {
  return fs.readFileSync(COMMITTED, 'utf8').trimEnd().split('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv.includes('--write')) {
  const h = findHeaders();
  if (!h?.selftest) throw new Error('need the kernel source headers (linux-source-6.12) to refresh the committed probe output');
  fs.writeFileSync(COMMITTED, runProbe(h).join('\n') + '\n');
  console.log(`wrote ${COMMITTED} from ${h.source}`);
}
