// The benchmark progress display (src/bench/progress.ts): plain lines on anything but a
// terminal, a cli-progress bar on one.
import { expect } from 'chai';
import { Writable } from 'node:stream';
import { createProgress } from '../src/bench/progress.js';

/** A stream that keeps what is written; a TTY when asked (with the width a bar needs). */
function sink(tty: boolean): Writable & { isTTY?: boolean; columns?: number; text(): string } {
  const chunks: string[] = [];
  const s = new Writable({
    write(chunk: Buffer | string, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  }) as Writable & { isTTY?: boolean; columns?: number; text(): string };
  if (tty) Object.assign(s, { isTTY: true, columns: 100 });
  s.text = () => chunks.join('');
  return s;
}

describe('bench progress: a bar on a terminal, lines elsewhere', function () {
  it('writes one plain line per step to a non-TTY stream, and nothing else', function () {
    const out = sink(false);
    const p = createProgress({ total: 3, stream: out });
    p.step('bulk null 16,384 x 4 KiB engine');
    p.step('bulk null 512 x 2 MiB engine');
    p.note('storm: not on the linux kernel');
    p.step('storm null 64 x 1,024 regions engine');
    p.step('one more than planned');
    p.stop();
    p.step('after stop');
    p.stop();
    expect(out.text()).to.equal(
      [
        '[1/3] bulk null 16,384 x 4 KiB engine',
        '[2/3] bulk null 512 x 2 MiB engine',
        'storm: not on the linux kernel',
        '[3/3] storm null 64 x 1,024 regions engine',
        '[4/4] one more than planned',
        '',
      ].join('\n'),
    );
    // No carriage returns, no escape codes, no bar.
    for (const c of ['\r', '\x1b', '░', '█']) expect(out.text()).to.not.contain(c);
  });

  it('treats a stream without isTTY as no terminal', function () {
    const out = sink(false);
    delete out.isTTY;
    const p = createProgress({ total: 1, stream: out });
    p.step('x');
    p.stop();
    expect(out.text()).to.equal('[1/1] x\n');
  });

  it('draws a bar on a TTY stream, and stops it', function () {
    const out = sink(true);
    const p = createProgress({ total: 4, stream: out });
    p.step('bulk sim 16,384 x 4 KiB engine');
    p.step('bulk sim 512 x 2 MiB engine');
    p.note('a profile written');
    p.stop();
    const text = out.text();
    expect(text).to.contain('bulk sim 16,384 x 4 KiB engine [').and.contain('] 1/4');
    expect(text).to.contain('bulk sim 512 x 2 MiB engine [').and.contain('] 2/4');
    expect(text).to.contain('a profile written\n');
    expect(text).to.contain('\x1b[');
    expect(text).to.not.match(/^\[\d+\/\d+\]/m);
    const after = text.length;
    p.step('after stop');
    expect(out.text().length).to.equal(after);
  });
});
