import os from 'node:os';
import fc from 'fast-check';
import { testVmTopology } from '../../src/kernel/topology.js';
import { LinuxPort } from '../../src/port/linux.js';
import { SimPort, type SimKernelHandle } from '../../src/kernel/sim-port.js';
import {
  compareTraces,
  firstGroup,
  iommufdProgram,
  runIommufd,
  runType1,
  type1Program,
} from '../differential/programs.js';
import { describeVm } from './guest.js';
import { guestIommu } from './variant.js';

// The simulated kernel against the real one: the same random programs on both, outcome by
// outcome, in both VMs, each against the simulation of its own variant (testVmTopology: in
// the virtio-iommu VM mock domains work on both kernels, and the IOVA space is 64-bit). A
// divergence fails with fast-check's shrunk (minimal) program and the first step where the
// kernels disagree.
// CI runs 10,000 (.ci/run sets VFIO_ENGINE_DIFF_RUNS); a local npm test runs 1,000.
const RUNS = Number(process.env.VFIO_ENGINE_DIFF_RUNS ?? 1_000);
const SEED = Number(process.env.VFIO_ENGINE_DIFF_SEED ?? 20261123);

describeVm(
  `differential: simulated kernel vs Linux 6.12${guestIommu() ? ` (${guestIommu()} VM)` : ''}`,
  function () {
    this.timeout(0);
    let sim: SimKernelHandle;
    let simPort: SimPort;
    const linux = new LinuxPort();

    before(async function () {
      const variant = guestIommu();
      if (!variant) throw new Error('VFIO_ENGINE_GUEST_IOMMU is not vtd or virtio: which VM to simulate?');
      // The simulation of this VM's variant, answering as the release it booted.
      sim = await SimPort.start(testVmTopology(variant, os.release()));
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
