// The benchmark record (src/bench/record.ts): the machine, the commit, and the JSON file
// written and read back (with clear errors for files that are not records).
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  gitCommit,
  loadAverage,
  machineInfo,
  readRecord,
  recordFileName,
  recordJson,
  writeRecord,
} from '../src/bench/record.js';
import type { BenchRecord } from '../src/bench/types.js';
import { benchRecord as record } from './bench-kit.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe('bench record: machine, commit, JSON file', function () {
  let dir: string;
  beforeEach(function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-record-'));
  });
  afterEach(function () {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('describes the machine and its load', function () {
    const m = machineInfo();
    expect(m.cpus).to.be.a('number').and.to.be.at.least(1);
    expect(m.cpuModel).to.be.a('string').and.not.equal('');
    expect(m.memoryBytes).to.be.above(0);
    expect(m.kernelRelease).to.equal(os.release());
    expect(m.node).to.equal(process.version);
    expect(m.os).to.contain(os.type());
    expect(machineInfo('6.1.0').kernelRelease).to.equal('6.1.0');
    const l = loadAverage();
    expect(l).to.have.length(3);
    for (const x of l) expect(x).to.be.a('number').and.at.least(0);
  });

  it('reads the commit of this checkout, and null outside one', function () {
    expect(gitCommit(root)).to.match(/^[0-9a-f]{40}$/);
    expect(gitCommit(os.tmpdir())).to.equal(null);
    expect(gitCommit(path.join(dir, 'does-not-exist'))).to.equal(null);
  });

  it('writes bench-<started>.json under a new directory and reads it back equal', async function () {
    const r = record();
    const file = await writeRecord(path.join(dir, 'a', 'b'), r);
    expect(file).to.equal(path.join(dir, 'a', 'b', 'bench-2025-01-02T03-04-05-678Z.json'));
    expect(path.basename(file)).to.match(/^[\w.-]+$/);
    expect(recordFileName(r)).to.equal('bench-2025-01-02T03-04-05-678Z.json');
    expect(await readRecord(file)).to.deep.equal(r);
  });

  it('writes no bigint (stray ones become numbers or strings) and NaN as null, read back as NaN', async function () {
    const r = record();
    const odd = {
      ...r,
      samples: [{ ...r.samples[0]!, value: NaN, n: 16n as unknown as number }],
      extra: 1n << 60n,
    } as unknown as BenchRecord;
    const json = recordJson(odd);
    expect(JSON.parse(json)).to.deep.include({ extra: String(1n << 60n) });
    expect(JSON.parse(json).samples[0]).to.include({ value: null, n: 16 });
    const back = await readRecord(await writeRecord(dir, odd));
    expect(Number.isNaN(back.samples[0]!.value)).to.equal(true);
  });

  it('refuses files that are not records, naming the file and the field', async function () {
    const write = (name: string, body: unknown) => {
      const f = path.join(dir, name);
      fs.writeFileSync(f, typeof body === 'string' ? body : JSON.stringify(body));
      return f;
    };
    const bad = async (f: string, pattern: RegExp) => {
      let err: unknown;
      try {
        await readRecord(f);
      } catch (e) {
        err = e;
      }
      expect(err, f).to.be.instanceOf(Error);
      expect((err as Error).message)
        .to.contain(f)
        .and.match(pattern);
    };
    const r = record() as unknown as Record<string, unknown>;
    await bad(write('text.json', 'not json'), /not JSON/);
    await bad(write('array.json', []), /\$ should be an object/);
    await bad(
      write('schema.json', { ...r, schema: 'vfio-engine-bench/2' }),
      /\$\.schema should be "vfio-engine-bench\/1", found "vfio-engine-bench\/2"/,
    );
    await bad(write('noschema.json', { ...r, schema: undefined }), /\$\.schema .*found nothing/);
    await bad(write('started.json', { ...r, started: 5 }), /\$\.started should be a string/);
    await bad(write('machine.json', { ...r, machine: null }), /\$\.machine should be an object/);
    await bad(
      write('load.json', { ...r, machine: { ...(r.machine as object), loadAfter: [1, 2] } }),
      /\$\.machine\.loadAfter should be three numbers/,
    );
    await bad(write('samples.json', { ...r, samples: {} }), /\$\.samples should be an array/);
    const s = (r.samples as object[])[0]!;
    await bad(
      write('kernel.json', { ...r, samples: [s, { ...s, kernel: 'bsd' }] }),
      /\$\.samples\[1\]\.kernel should be one of null, sim, linux/,
    );
    await bad(
      write('value.json', { ...r, samples: [{ ...s, value: '1' }] }),
      /\$\.samples\[0\]\.value should be a number/,
    );
    const t = (r.targets as object[])[0]!;
    await bad(write('status.json', { ...r, targets: [{ ...t, status: 'ok' }] }), /\$\.targets\[0\]\.status/);
    let missing: unknown;
    await readRecord(path.join(dir, 'none.json')).catch((e: unknown) => (missing = e));
    expect((missing as NodeJS.ErrnoException).code).to.equal('ENOENT');
  });
});
