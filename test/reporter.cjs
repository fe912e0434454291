'use strict';
// Mocha's spec output, then the closing line CI reads: `N passed, N failed[, N skipped]`.
// With VFIO_ENGINE_TOTALS=<file> the counts are also written there as JSON, so a
// driver that runs several suites (host, then the test VM) can add them up.
const fs = require('node:fs');
const Mocha = require('mocha');
const { EVENT_RUN_END } = Mocha.Runner.constants;

class SpecWithTotals extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once(EVENT_RUN_END, () => {
      const s = runner.stats ?? this.stats;
      const totals = { passed: s.passes, failed: s.failures, skipped: s.pending };
      if (process.env.VFIO_ENGINE_TOTALS)
        fs.writeFileSync(process.env.VFIO_ENGINE_TOTALS, JSON.stringify(totals));
      process.stdout.write(
        `${totals.passed} passed, ${totals.failed} failed` +
          (totals.skipped ? `, ${totals.skipped} skipped` : '') +
          '\n',
      );
    });
  }
}
module.exports = SpecWithTotals;
