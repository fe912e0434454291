import fc from 'fast-check';
import { LinuxPort } from '../../src/port/linux.js';
import { SimPort, type SimKernelHandle } from '../../src/port/sim.js';
import {
  compareTraces,
  firstGroup,
  iommufdProgram,
  runIommufd,
  runType1,
  type1Program,
} from '../differential/programs.js';
import { describeVm } from './guest.js';
import { SIMULATED_IOMMU, guestIommu } from './variant.js';

// The simulated kernel against the real one: the same random programs on both, outcome by
// outcome. A divergence fails with fast-check's shrunk (minimal) program and the first step
// where the kernels disagree.
// CI runs 10,000 (.ci/run sets VFIO_ENGINE_DIFF_RUNS); a local npm test runs 1,000.
const RUNS = Number(process.env.VFIO_ENGINE_DIFF_RUNS ?? 1_000);
const SEED = Number(process.env.VFIO_ENGINE_DIFF_SEED ?? 20261123);

// The simulated kernel models the VT-d VM; in the virtio-iommu boot there is nothing to compare with.
const describeHere =
  process.env.VFIO_ENGINE_GUEST === '1' && guestIommu() !== SIMULATED_IOMMU
    ? (title: string, fn: (this: Mocha.Suite) => void) =>
        describe.skip(
          `${title} [skipped: the simulated kernel models the ${SIMULATED_IOMMU} VM, this one is ${guestIommu()}]`,
          fn,
        )
    : describeVm;

describeHere(
  'differential: simulated kernel vs Linux 6.12',
  function () {
    this.timeout(0);
    let sim: SimKernelHandle;
    let simPort: SimPort;
    const linux = new LinuxPort();

    before(async function () {
      sim = await SimPort.start();
      simPort = sim.port();
    });
    after(async function () {
      await sim?.stop();
    });

    it(`iommufd: ${RUNS} random programs agree (IOAS map/unmap/copy, mock domains, IOVA ranges, destroy)`, function () {
      fc.assert(
        fc.property(iommufdProgram, (prog) => {
          const d = compareTraces(runIommufd(linux, prog), runIommufd(simPort, prog), ['linux', 'sim']);
          if (d) throw new Error(d);
        }),
        { numRuns: RUNS, seed: SEED },
      );
    });

    it(`type1: ${RUNS} random programs agree (MAP_DMA/UNMAP_DMA, unmap-all, GET_INFO)`, function () {
      const gl = firstGroup(linux);
      const gs = firstGroup(simPort);
      fc.assert(
        fc.property(type1Program, (prog) => {
          const d = compareTraces(runType1(linux, gl, prog), runType1(simPort, gs, prog), ['linux', 'sim']);
          if (d) throw new Error(d);
        }),
        { numRuns: RUNS, seed: SEED + 1 },
      );
    });
  },
  'compares the simulated kernel with the real one: runs only inside the test VM',
);
