// The host side of the ioctl coverage over both VM boots (test/kernel/coverage.ts) and the
// console marker that carries each boot's counts (vm/run.ts readMarkers): on synthetic
// reports, so the judge's verdicts do not wait for a VM.
import { expect } from 'chai';
import { IOCTLS } from '../src/uapi/index.js';
import { CONTRIBUTORS, judgeCoverage, type CoverageReport, type CoverageRun } from './kernel/coverage.js';
import { IOMMU_VARIANTS, readMarkers, type ConsoleMarkers } from '../vm/run.js';

/** A report in which every ioctl was accepted and refused once. */
function fullReport(variant: string): CoverageReport {
  const ioctls: CoverageReport['ioctls'] = {};
  for (const { name } of IOCTLS) ioctls[name] = { ok: 1, failed: 1, errnos: ['EINVAL'] };
  return { variant, suites: [...CONTRIBUTORS], ioctls };
}
const runs = (patch: (vtd: CoverageReport, virtio: CoverageReport) => void = () => {}): CoverageRun[] => {
  const vtd = fullReport('vtd');
  const virtio = fullReport('virtio');
  patch(vtd, virtio);
  return [
    { iommu: 'vtd', coverage: vtd },
    { iommu: 'virtio', coverage: virtio },
  ];
};
const judge = (r: CoverageRun[]) => judgeCoverage(r, IOMMU_VARIANTS);

describe('ioctl coverage over both VM boots (host side)', function () {
  it('passes when the union accepts and refuses every ioctl, though neither boot does alone', function () {
    const [a, b] = [IOCTLS[0]!.name, IOCTLS[1]!.name];
    const verdict = judge(
      runs((vtd, virtio) => {
        vtd.ioctls[a] = { ok: 0, failed: 2, errnos: ['ENOENT'] };
        virtio.ioctls[b] = { ok: 3, failed: 0, errnos: [] };
      }),
    );
    expect(verdict.problems).to.deep.equal([]);
    expect(verdict.status).to.equal('passed');
    expect(verdict.table).to.have.length(IOCTLS.length);
  });

  it('fails on an ioctl no boot accepted, or no boot refused, naming it', function () {
    const name = IOCTLS[2]!.name;
    const never = judge(
      runs((vtd, virtio) => {
        vtd.ioctls[name]!.ok = 0;
        virtio.ioctls[name]!.ok = 0;
      }),
    );
    expect(never.status).to.equal('failed');
    expect(never.problems.join()).to.include(`never accepted by either kernel: ${name}`);
    const unrefused = judge(
      runs((vtd, virtio) => {
        delete vtd.ioctls[name];
        virtio.ioctls[name] = { ok: 1, failed: 0, errnos: [] };
      }),
    );
    expect(unrefused.problems.join()).to.include(`never refused by either kernel: ${name}`);
  });

  it('fails on an ioctl a boot reports that the uapi layer does not declare', function () {
    const verdict = judge(runs((vtd) => void (vtd.ioctls.NOT_AN_IOCTL = { ok: 1, failed: 1, errnos: [] })));
    expect(verdict.status).to.equal('failed');
    expect(verdict.problems.join()).to.include('NOT_AN_IOCTL');
  });

  it('judges nothing when a boot is missing, narrowed, unreported, of the wrong variant or short of a contributing suite', function () {
    const [vtd, virtio] = runs();
    const cases: [CoverageRun[], string][] = [
      [[vtd!], 'no virtio boot'],
      [[vtd!, { ...virtio!, partial: 'mocha --grep x' }], 'narrowed (mocha --grep x)'],
      [[vtd!, { iommu: 'virtio', coverage: null }], 'the virtio boot reported no coverage'],
      [
        [vtd!, { iommu: 'virtio', coverage: { ...virtio!.coverage!, variant: 'vtd' } }],
        'reported variant vtd',
      ],
      [
        [vtd!, { iommu: 'virtio', coverage: { ...virtio!.coverage!, suites: CONTRIBUTORS.slice(1) } }],
        `did not load ${CONTRIBUTORS[0]}`,
      ],
    ];
    for (const [r, why] of cases) {
      const verdict = judge(r);
      expect(verdict.status, why).to.equal('incomplete');
      expect(verdict.problems.join(), why).to.include(why);
    }
  });
});

describe('vm/run.ts readMarkers: the console lines a boot reports through', function () {
  const blank = (): ConsoleMarkers => ({
    guestExit: null,
    totals: null,
    coverage: null,
    coverageError: null,
    guestCrash: null,
  });

  it('reads the coverage, totals and exit markers from raw serial lines (ending in \\r)', function () {
    const m = blank();
    const report = fullReport('virtio');
    readMarkers(`@@VFIO_ENGINE_COVERAGE ${JSON.stringify(report)}\r`, m);
    readMarkers('@@VFIO_ENGINE_TOTALS {"passed":3,"failed":1,"skipped":2}\r', m);
    readMarkers('[   12.0] x @@VFIO_ENGINE_EXIT 1\r', m);
    expect(m).to.deep.equal({
      guestExit: 1,
      totals: { passed: 3, failed: 1, skipped: 2 },
      coverage: report,
      coverageError: null,
      guestCrash: null,
    });
  });

  it('records an unreadable coverage marker as an error, and null as no coverage', function () {
    const m = blank();
    readMarkers('@@VFIO_ENGINE_COVERAGE {"variant":"vtd","sui[   3.1] kernel message\r', m);
    expect(m.coverage).to.equal(null);
    expect(m.coverageError).to.match(/^unreadable coverage marker/);
    readMarkers('@@VFIO_ENGINE_COVERAGE null\r', m);
    expect([m.coverage, m.coverageError]).to.deep.equal([null, null]);
  });
});
