/**
 * Where a run is: a bar on a terminal, one plain line per step anywhere else (a log file or
 * a CI console would keep every redraw of a bar as garbage).
 */
import cliProgress from 'cli-progress';

/** What the runner tells the progress display. */
export interface Progress {
  /**
   * Step k (1-based, counted by the calls) of the run starts; `label` says what it runs,
   * e.g. 'bulk null 16,384 x 4 KiB engine'. More steps than the total raise the total.
   */
  step(label: string): void;
  /** A line for the user (a skipped workload, a profile written), above the bar on a terminal. */
  note(line: string): void;
  /** Ends the display (the bar's last frame stays); later calls do nothing. Idempotent. */
  stop(): void;
}

/** What createProgress needs: the step count and the stream (a terminal gets a bar). */
export interface ProgressOptions {
  readonly total: number;
  readonly stream: NodeJS.WritableStream & { readonly isTTY?: boolean };
}

/**
 * A progress display for `total` steps on `stream`: a cli-progress bar
 * ('<label> [bar] k/total') when the stream is a TTY, else one line per step
 * ('[k/total] <label>'). Nothing but those lines is ever written to a non-TTY stream.
 */
export function createProgress({ total, stream }: ProgressOptions): Progress {
  let k = 0;
  let stopped = false;
  if (stream.isTTY !== true) {
    return {
      step(label) {
        if (stopped) return;
        k++;
        stream.write(`[${k}/${Math.max(total, k)}] ${label}\n`);
      },
      note(line) {
        if (!stopped) stream.write(`${line}\n`);
      },
      stop() {
        stopped = true;
      },
    };
  }
  const bar = new cliProgress.SingleBar(
    {
      format: '{label} [{bar}] {value}/{total}',
      stream,
      // A hidden cursor would stay hidden after Ctrl-C, and cli-progress's cure for that
      // (gracefulExit) listens for SIGINT, which stops Node from exiting on it.
      hideCursor: false,
      // Redraw on every tick, not only when the text changed: a note() wipes the bar's line.
      forceRedraw: true,
      // cli-progress stays silent on a stream that is not (or stops being) a terminal.
      noTTYOutput: false,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    step(label) {
      if (stopped) return;
      k++;
      if (!started) {
        bar.start(Math.max(total, k), k, { label });
        started = true;
        return;
      }
      if (k > bar.getTotal()) bar.setTotal(k);
      bar.update(k, { label });
    },
    note(line) {
      if (stopped) return;
      // Over the bar's line (carriage return, erase it), then the bar redraws below.
      stream.write(started ? `\r\x1b[K${line}\n` : `${line}\n`);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      if (started) bar.stop();
    },
  };
}
