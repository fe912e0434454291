// The logic of the benchmarks, not their timings: argument parsing, medians, ratios and
// tables (bench/report.ts), the marker lines the VM reports samples on, and the C floor's
// build and argument checks (bench/build-floor.ts, bench/floor.c).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FLOOR_IOCTLS, ROOT, buildFloor, floorCompileArgs } from '../bench/build-floor.js';
import {
  KERNEL_BENCH_DEFAULTS,
  benchMarkerLine,
  formatShape,
  formatTable,
  median,
  parseKernelBenchArgs,
  parseShape,
  parseSize,
  readBenchMarker,
  summarize,
  type Sample,
} from '../bench/report.js';
import { IOMMU_IOAS_MAP, VFIO_IOMMU_UNMAP_DMA } from '../src/uapi/index.js';
import { findHeaders } from './golden/probe.js';

describe('bench/report.ts: shapes, medians, ratios, tables', function () {
  it('parses sizes and shapes, and refuses what is not whole pages', function () {
    expect(parseSize('4096')).to.equal(4096n);
    expect(parseSize('0x1000')).to.equal(4096n);
    expect(parseSize('4k')).to.equal(4096n);
    expect(parseSize('2M')).to.equal(2n << 20n);
    expect(parseSize('1g')).to.equal(1n << 30n);
    expect(parseShape('16384x4k')).to.deep.equal({ count: 16384, size: 4096n });
    expect(formatShape({ count: 16384, size: 4096n })).to.equal('16,384 x 4 KiB');
    expect(formatShape({ count: 1, size: 3n << 20n })).to.equal('1 x 3 MiB');
    expect(() => parseSize('4kb')).to.throw(/not a size/);
    expect(() => parseShape('16384')).to.throw(/not a shape/);
    expect(() => parseShape('0x4k')).to.throw(/at least 1/);
    expect(() => parseShape('8x1000')).to.throw(/multiple of 4 KiB/);
  });

  it('takes the median of odd and even counts', function () {
    expect(median([3, 1, 2])).to.equal(2);
    expect(median([4, 1, 3, 2])).to.equal(2.5);
    expect(Number.isNaN(median([]))).to.equal(true);
  });

  it('summarizes rounds into ops/s per case (fastest round, or median), and ratios within a case only', function () {
    const shape = { count: 1000, size: 4096n };
    const s = (vm: string, mode: string, mapMs: number, unmapMs: number): Sample => ({
      vm,
      backend: 'iommufd',
      shape,
      mode,
      mapNs: mapMs * 1e6,
      unmapNs: unmapMs * 1e6,
    });
    const samples = [
      s('vtd', 'floor', 10, 5),
      s('vtd', 'floor', 20, 5),
      s('vtd', 'floor', 12.5, 50), // a slow unmap round: neither the best nor the median follows it
      s('vtd', 'qemu', 40, 20),
      s('virtio', 'floor', 100, 100),
      s('virtio', 'qemu', 200, 400),
    ];
    const medians = summarize(samples, 'median');
    expect(medians[0]).to.deep.include({ rounds: 3, mapPerSec: 80_000, unmapPerSec: 200_000 });
    const rows = summarize(samples);
    expect(rows.map((r) => [r.vm, r.mode, r.rounds, r.mapPerSec, r.unmapPerSec])).to.deep.equal([
      ['vtd', 'floor', 3, 100_000, 200_000],
      ['vtd', 'qemu', 1, 25_000, 50_000],
      ['virtio', 'floor', 1, 10_000, 10_000],
      ['virtio', 'qemu', 1, 5_000, 2_500],
    ]);
    expect(formatTable(rows, ['floor', 'qemu'])).to.deep.equal([
      '| vm | backend | sections | mode | map ops/s | unmap ops/s | map ÷ floor | unmap ÷ floor | map ÷ qemu | unmap ÷ qemu |',
      '| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
      '| vtd | iommufd | 1,000 x 4 KiB | floor | 100,000 | 200,000 | 1.00 | 1.00 | 4.00 | 4.00 |',
      '| vtd | iommufd | 1,000 x 4 KiB | qemu | 25,000 | 50,000 | 0.25 | 0.25 | 1.00 | 1.00 |',
      '| virtio | iommufd | 1,000 x 4 KiB | floor | 10,000 | 10,000 | 1.00 | 1.00 | 2.00 | 4.00 |',
      '| virtio | iommufd | 1,000 x 4 KiB | qemu | 5,000 | 2,500 | 0.50 | 0.25 | 1.00 | 1.00 |',
    ]);
    // No vm column without a vm; '-' for a ratio without its base.
    const [row] = summarize([{ backend: 'legacy', shape, mode: 'inline', mapNs: 1e9, unmapNs: 1e9 }]);
    expect(formatTable([row!], ['floor'])[2]).to.equal(
      '| legacy | 1,000 x 4 KiB | inline | 1,000 | 1,000 | - | - |',
    );
  });

  it('reads back the marker lines a sample is reported on, also behind a kernel message', function () {
    const sample: Sample = {
      vm: 'vtd',
      backend: 'legacy',
      shape: { count: 256, size: 2n << 20n },
      mode: 'engine',
      mapNs: 123456789,
      unmapNs: 42,
    };
    const line = benchMarkerLine(sample);
    expect(line).to.match(/^@@VFIO_ENGINE_BENCH \{/);
    expect(readBenchMarker(line)).to.deep.equal(sample);
    expect(readBenchMarker(`[   3.1] dmar: x ${line}\r`)).to.deep.equal(sample);
    expect(readBenchMarker('@@VFIO_ENGINE_EXIT 0')).to.equal(null);
    expect(() => readBenchMarker('@@VFIO_ENGINE_BENCH {"backend":"legacy"}')).to.throw(
      /not a benchmark sample/,
    );
    expect(() => readBenchMarker('@@VFIO_ENGINE_BENCH {"backe[  3.1] oops')).to.throw(SyntaxError);
  });

  it("parses bench/kernel.ts's arguments; the floor always runs", function () {
    expect(parseKernelBenchArgs([])).to.deep.equal(KERNEL_BENCH_DEFAULTS);
    const o = parseKernelBenchArgs([
      '--shape',
      '64x4k',
      '--shape=8x2m',
      '--rounds',
      '5',
      '--backend',
      'legacy',
      '--mode=engine,qemu',
      '--iova',
      '0x80000000',
    ]);
    expect(o).to.deep.equal({
      shapes: [
        { count: 64, size: 4096n },
        { count: 8, size: 2n << 20n },
      ],
      rounds: 5,
      backends: ['legacy'],
      modes: ['floor', 'qemu', 'engine'],
      iova: 0x8000_0000n,
    });
    expect(() => parseKernelBenchArgs(['--rounds', '0'])).to.throw(/--rounds/);
    expect(() => parseKernelBenchArgs(['--backend', 'spapr'])).to.throw(
      /--backend takes iommufd, legacy; not spapr/,
    );
    expect(() => parseKernelBenchArgs(['--mode', 'fast'])).to.throw(/--mode takes/);
    expect(() => parseKernelBenchArgs(['--iova', '0x1001'])).to.throw(/aligned/);
    expect(() => parseKernelBenchArgs(['--shape'])).to.throw(/--shape <value>' argument missing/);
    expect(() => parseKernelBenchArgs(['--fast'])).to.throw(/Unknown option '--fast'/);
    expect(() => parseKernelBenchArgs(['64x4k'])).to.throw(/Unexpected argument '64x4k'/);
  });
});

describe('bench/floor.c: the C floor, built on the host', function () {
  this.timeout(60_000);
  let dir: string;
  let floor: string;

  before(function () {
    if (!findHeaders()) this.skip(); // no Linux >= 6.12 uapi headers here
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-engine-floor-'));
    floor = buildFloor(path.join(dir, 'floor'));
  });
  after(function () {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("is compiled with the project's ioctl numbers, which floor.c checks against the headers", function () {
    const args = floorCompileArgs('floor.c', 'floor', '/inc');
    expect(args).to.include(`-DPROJECT_IOMMU_IOAS_MAP=0x${IOMMU_IOAS_MAP.request.toString(16)}UL`);
    expect(args).to.include(
      `-DPROJECT_VFIO_IOMMU_UNMAP_DMA=0x${VFIO_IOMMU_UNMAP_DMA.request.toString(16)}UL`,
    );
    expect(args.filter((a) => a.startsWith('-DPROJECT_'))).to.have.length(FLOOR_IOCTLS.length);
    const source = fs.readFileSync(path.join(ROOT, 'bench/floor.c'), 'utf8');
    const checked = [...source.matchAll(/^SAME\((\w+)\);$/gm)].map((m) => m[1]);
    expect(checked).to.deep.equal(FLOOR_IOCTLS.map((io) => io.name));
    expect(fs.statSync(floor).mode & 0o111).to.not.equal(0);
  });

  it('refuses bad arguments (exit 2), and names the failing call (exit 1)', function () {
    const bad = spawnSync(floor, ['--backend', 'iommufd', '--count', '1'], { encoding: 'utf8' });
    expect(bad.status).to.equal(2);
    expect(bad.stderr).to.match(/^usage: floor/);
    const unaligned = spawnSync(
      floor,
      ['--backend', 'legacy', '--device', '/x', '--count', '1', '--size', '100', '--iova', '0'],
      {
        encoding: 'utf8',
      },
    );
    expect(unaligned.status).to.equal(2);
    const missing = spawnSync(
      floor,
      [
        '--backend',
        'legacy',
        '--device',
        '/nonexistent/vfio/7',
        '--count',
        '2',
        '--size',
        '4096',
        '--iova',
        '0x100000000',
      ],
      { encoding: 'utf8' },
    );
    expect(missing.status).to.equal(1);
    // The first open fails: /dev/vfio/vfio on a host without VFIO, else the missing group.
    expect(missing.stderr).to.match(
      /^floor: open \/dev\/vfio\/vfio: |^floor: \/nonexistent\/vfio\/7: No such file/,
    );
    expect(missing.stdout).to.equal('');
  });
});
