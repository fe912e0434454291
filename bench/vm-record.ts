/**
 * How a benchmark record leaves the test VM: the guest prints it on the serial console as
 * marker lines (base64 chunks, then an end line with the length), which the host picks out
 * of the console output, kernel messages and all, and reassembles.
 *
 *   node dist/bench/vm-record.js DIR     (in the guest) prints the newest record of DIR
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseRecord } from '../src/bench/record.js';
import type { BenchRecord } from '../src/bench/types.js';

const MARK = '@@VFIO_ENGINE_BENCH_RECORD';
const CHUNK = 512;

/** The marker lines that carry `json`. */
export function recordMarkerLines(json: string): string[] {
  const b64 = Buffer.from(json, 'utf8').toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += CHUNK) lines.push(`${MARK} ${b64.slice(i, i + CHUNK)}`);
  lines.push(`${MARK}_END ${b64.length}`);
  return lines;
}

/** Collects the records that marker lines carry, from console lines in any order of noise. */
export class RecordReader {
  private chunks: string[] = [];
  /** The records completed so far. */
  readonly records: BenchRecord[] = [];
  /** What went wrong (a short or unreadable record). */
  readonly errors: string[] = [];

  /** Feeds one console line. */
  take(line: string): void {
    const end = new RegExp(`${MARK}_END (\\d+)`).exec(line);
    if (end) {
      const b64 = this.chunks.join('');
      this.chunks = [];
      if (b64.length !== Number(end[1])) {
        this.errors.push(`a record came back with ${b64.length} of ${end[1]} base64 characters`);
        return;
      }
      try {
        this.records.push(parseRecord(Buffer.from(b64, 'base64').toString('utf8'), 'the record from the VM'));
      } catch (e) {
        this.errors.push((e as Error).message);
      }
      return;
    }
    const chunk = new RegExp(`${MARK} ([A-Za-z0-9+/=]+)`).exec(line);
    if (chunk) this.chunks.push(chunk[1]!);
  }
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2];
  const files = dir ? fs.readdirSync(dir).filter((f) => /^bench-.*\.json$/.test(f)) : [];
  if (!dir || !files.length) {
    console.error(`vm-record: no bench-*.json in ${dir ?? '(no folder given)'}`);
    process.exit(1);
  }
  const newest = files.sort().at(-1)!;
  for (const line of recordMarkerLines(fs.readFileSync(path.join(dir, newest), 'utf8'))) console.log(line);
}
