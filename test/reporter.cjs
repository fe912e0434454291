'use strict';
// Mocha's spec output, then the closing line CI reads: `N passed, N failed[, N skipped]`.
// With VFIO_ENGINE_TOTALS=<file> the counts are also written there as JSON, so a
// driver that runs several suites (host, then the test VM) can add them up. The file is
// rewritten as the run goes (after every test, and when a test or hook starts, naming it in
// `running`), and gets `finished: true` at the end: a runner that dies (an abort in native
// code, a process.exit in a test) leaves the counts so far and the test it was running, so
// the driver can report a crash instead of guessing. In the test VM (VFIO_ENGINE_GUEST=1) only
// the final record is written: vm/run.ts reads the file through the serial console and does
// not look at `finished`, so there a runner that dies must still leave no totals at all.
const fs = require('node:fs');
const Mocha = require('mocha');
const {
  EVENT_RUN_END,
  EVENT_TEST_BEGIN,
  EVENT_TEST_END,
  EVENT_TEST_PASS,
  EVENT_TEST_FAIL,
  EVENT_TEST_PENDING,
  EVENT_HOOK_BEGIN,
  EVENT_HOOK_END,
} = Mocha.Runner.constants;

class SpecWithTotals extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    const file = process.env.VFIO_ENGINE_TOTALS;
    const progress = process.env.VFIO_ENGINE_GUEST !== '1';
    const counts = () => {
      const s = runner.stats ?? this.stats;
      return { passed: s.passes, failed: s.failures, skipped: s.pending };
    };
    // Written whole and renamed into place: a crash mid-write must not leave half a file.
    const write = (running, finished) => {
      if (!file || (!finished && !progress)) return;
      const tmp = `${file}.tmp`;
      fs.writeFileSync(tmp, JSON.stringify({ ...counts(), running, finished }));
      fs.renameSync(tmp, file);
    };
    write(null, false);
    for (const ev of [EVENT_TEST_BEGIN, EVENT_HOOK_BEGIN]) runner.on(ev, (t) => write(t.fullTitle(), false));
    for (const ev of [EVENT_TEST_END, EVENT_HOOK_END, EVENT_TEST_PASS, EVENT_TEST_FAIL, EVENT_TEST_PENDING])
      runner.on(ev, () => write(null, false));
    runner.once(EVENT_RUN_END, () => {
      const totals = counts();
      write(null, true);
      process.stdout.write(
        `${totals.passed} passed, ${totals.failed} failed` +
          (totals.skipped ? `, ${totals.skipped} skipped` : '') +
          '\n',
      );
    });
  }
}
module.exports = SpecWithTotals;
