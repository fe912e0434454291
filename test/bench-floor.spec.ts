// The real-kernel half of the benchmark runner, without the real kernel: the C floor's build
// and its argument and input checks (bench/build-floor.ts, bench/floor.c, src/bench/floor.ts),
// the record's way back from the VM (bench/vm-record.ts) and bench:kernel's arguments
// (bench/kernel-vm.ts). The floor itself runs in the test VM (test/kernel/bench.spec.ts).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FLOOR_IOCTLS, ROOT, buildFloor, floorCompileArgs } from '../bench/build-floor.js';
import { parseKernelVmArgs } from '../bench/kernel-vm.js';
import { RecordReader, recordMarkerLines } from '../bench/vm-record.js';
import { floorInput, floorOpsInput, runFloor, runFloorOps } from '../src/bench/floor.js';
import { recordJson } from '../src/bench/record.js';
import { IOMMU_IOAS_MAP, VFIO_IOMMU_UNMAP_DMA } from '../src/uapi/index.js';
import { findHeaders } from './golden/probe.js';
import { benchRecord as sampleRecord } from './bench-kit.js';

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

  const run = (args: string[], input: string) => spawnSync(floor, args, { input, encoding: 'utf8' });
  const legacy = (ram: string, ...more: string[]) => [
    ...['--backend', 'legacy', '--device', '/nonexistent/vfio/7', '--ram', ram, '--backing', 'memfd'],
    ...more,
  ];

  it('refuses bad arguments and sections (exit 2)', function () {
    const usage = run(['--backend', 'iommufd'], '0x0 4096 0\n');
    expect(usage.status).to.equal(2);
    expect(usage.stderr).to.match(/^usage: floor/);
    expect(run(legacy('8192', '--threads', '0'), '0 4096 0\n').status, 'no threads').to.equal(2);
    expect(run(legacy('8192', '--backing', 'tmpfs'), '0 4096 0\n').status, 'unknown backing').to.equal(2);
    expect(run(legacy('8192'), '').status, 'no sections').to.equal(2);
    const unaligned = run(legacy('8192'), '0x1000 100 0\n');
    expect(unaligned.status).to.equal(2);
    expect(unaligned.stderr).to.match(/^floor: bad section 0x1000 100 0/);
    const beyond = run(legacy('8192'), '0x1000 4096 8192\n');
    expect(beyond.status, 'backing past the RAM').to.equal(2);
    expect(run(legacy('8192'), '0x1000 4096 0 rw\n').status, "a fourth word other than 'ro'").to.equal(2);
  });

  it('names the call that failed (exit 1), on one thread and on two', function () {
    for (const threads of ['1', '2']) {
      const r = run(legacy('8192', '--threads', threads), '0x100000000 4096 0\n0x100001000 4096 4096 ro\n');
      expect(r.status).to.equal(1);
      // The first open fails: /dev/vfio/vfio on a host without VFIO, else the missing group.
      expect(r.stderr).to.match(
        /^floor: open \/dev\/vfio\/vfio: |^floor: \/nonexistent\/vfio\/7: No such file/,
      );
      expect(r.stdout).to.equal('');
    }
  });

  it('refuses a bad op list (exit 2): markers out of order, wrong arity, mixed with sections, threads', function () {
    const ops = (input: string, ...more: string[]) => run(legacy('8192', ...more), input).status;
    expect(ops('start\nstart\n'), 'two starts').to.equal(2);
    expect(ops('stop\nmap 0x1000 4096 0\n'), 'stop before start').to.equal(2);
    expect(ops('0x1000 4096 0\nmap 0x2000 4096 0\n'), 'sections, then ops').to.equal(2);
    expect(ops('map 0x1000 4096\n'), 'a map without its offset').to.equal(2);
    expect(ops('unmap 0x1000 4096 0\n'), 'an unmap with an offset').to.equal(2);
    expect(
      ops('map 0x1000 4096 0\nunmap 0x1000 4096\n', '--threads', '2'),
      'an op list on 2 threads',
    ).to.equal(2);
    expect(
      ops('map 0x1000 4096 0\nstart\nunmap 0x1000 4096\nstop\n'),
      'a good list: VFIO is missing',
    ).to.equal(1);
  });

  it("runFloor passes the sections on stdin and reports the floor's error", function () {
    expect(
      floorInput([
        { iova: 0x1_0000_0000n, size: 4096n, offset: 0n },
        { iova: 0xfffc_0000n, size: 0x4_0000n, offset: 0x20_0000n, readonly: true },
      ]),
    ).to.equal('0x100000000 4096 0\n0xfffc0000 262144 2097152 ro\n');
    const device = { bdf: '0000:01:00.0', groupPath: '/nonexistent/vfio/7', cdevPath: null } as never;
    const job = (over: Partial<Parameters<typeof runFloor>[0]>) => ({
      backend: 'legacy' as const,
      device,
      ramBytes: 8192n,
      backing: 'memfd' as const,
      threads: 1,
      sections: [{ iova: 0x1_0000_0000n, size: 4096n, offset: 0n }],
      ...over,
    });
    expect(() => runFloor(job({ threads: 2 }), floor)).to.throw(/^the C floor exited 1: floor: /);
    expect(() => runFloor(job({ backend: 'iommufd' }), floor)).to.throw(/has no VFIO cdev/);
    expect(() => runFloor(job({}), path.join(dir, 'missing'))).to.throw(
      /missing: spawnSync .* ENOENT .*build-floor/,
    );
    const s = { iova: 0x1_0000_0000n, size: 4096n, offset: 4096n, readonly: true };
    expect(floorOpsInput([{ map: s }, 'start', { unmap: s }, 'stop'])).to.equal(
      'map 0x100000000 4096 4096 ro\nstart\nunmap 0x100000000 4096\nstop\n',
    );
    expect(() => runFloorOps(job({}), [{ map: s }, { unmap: s }], floor)).to.throw(/^the C floor exited 1: /);
  });
});

describe('bench/vm-record.ts: the record comes back over the console', function () {
  it('reassembles a record from marker lines among kernel messages', function () {
    const rec = sampleRecord();
    const lines = recordMarkerLines(recordJson(rec));
    expect(lines.length).to.be.greaterThan(1);
    const reader = new RecordReader();
    reader.take('[   12.345678] vfio-pci 0000:01:00.0: enabling device');
    for (const [i, l] of lines.entries()) reader.take(i === 1 ? `[    1.0] DMAR: fault\r${l}\r` : l);
    expect(reader.errors).to.deep.equal([]);
    expect(reader.records).to.have.length(1);
    expect(JSON.parse(recordJson(reader.records[0]!))).to.deep.equal(JSON.parse(recordJson(rec)));
  });

  it('reports a record cut short, or one that is not a record', function () {
    const lines = recordMarkerLines(recordJson(sampleRecord()));
    const reader = new RecordReader();
    for (const l of lines.filter((_, i) => i !== 1)) reader.take(l);
    expect(reader.records).to.have.length(0);
    expect(reader.errors[0]).to.match(/^a record came back with \d+ of \d+ base64 characters$/);
    for (const l of recordMarkerLines('{"schema":"nope"}')) reader.take(l);
    expect(reader.errors[1]).to.match(/the record from the VM: not a benchmark record: \$\.schema/);
  });
});

describe("bench/kernel-vm.ts: bench:kernel's arguments", function () {
  it('keeps its own options and passes the rest to the runner', function () {
    expect(parseKernelVmArgs([])).to.deep.equal({
      variants: ['vtd'],
      tcg: 'multi',
      memory: '6G',
      out: 'bench-results',
      bench: ['--scale', '0.1'],
    });
    expect(
      parseKernelVmArgs([
        'bulk',
        '--iommu',
        'both',
        '--tcg=single',
        '--rounds',
        '1',
        '--out',
        'r',
        '--memory',
        '4G',
      ]),
    ).to.deep.equal({
      variants: ['vtd', 'virtio'],
      tcg: 'single',
      memory: '4G',
      out: 'r',
      bench: ['bulk', '--rounds', '1', '--scale', '0.1'],
    });
  });

  it('keeps a --scale given', function () {
    expect(parseKernelVmArgs(['--scale=1']).bench).to.deep.equal(['--scale=1']);
    expect(parseKernelVmArgs(['--scale', '0.5']).bench).to.deep.equal(['--scale', '0.5']);
  });

  it('refuses what the VM run cannot take', function () {
    expect(() => parseKernelVmArgs(['--iommu', 'amd'])).to.throw(
      /--iommu takes vtd, virtio or both, not amd/,
    );
    expect(() => parseKernelVmArgs(['--tcg', 'many'])).to.throw(/--tcg takes single or multi/);
    expect(() => parseKernelVmArgs(['--memory', 'lots'])).to.throw(/-m syntax/);
    expect(() => parseKernelVmArgs(['--kernel', 'sim'])).to.throw(/always --kernel linux/);
    expect(() => parseKernelVmArgs(['--json'])).to.throw(/always --kernel linux/);
    expect(() => parseKernelVmArgs(['--rounds', '1; reboot'])).to.throw(/plain words/);
    expect(() => parseKernelVmArgs(['--out'])).to.throw(/--out needs a value/);
  });
});
