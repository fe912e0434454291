#!/usr/bin/env node
/**
 * The vfio-engine command line.
 *
 *   vfio-engine probe    what this host's kernel offers (iommufd, VFIO, groups, devices, memlock)
 *   vfio-engine run      a VM's life on the engine (scenarios/q35.json by default)
 *   vfio-engine uapi     the ioctl numbers and struct sizes the engine speaks (Linux 6.12)
 */
import { LinuxPort } from '../port/linux.js';
import { SimPort } from '../port/sim.js';
import type { SyscallPort } from '../port/port.js';
import { IOCTLS, STRUCTS } from '../uapi/index.js';
import { defaultTopology, loadTopology, testVmTopology, type Topology } from '../kernel/topology.js';
import { probeHost } from './probe.js';
import { runScenario } from './run.js';

const USAGE = `usage: vfio-engine <command>

commands:
  probe [--kernel sim|linux] [--topology default|test-vm|test-vm-virtio|file.json]
          survey a kernel: iommufd, the legacy VFIO container, IOMMU groups, devices
          bound to vfio-pci, RLIMIT_MEMLOCK. Default: the simulated kernel (its default
          host); --kernel linux asks this machine's kernel
  run [scenario.json] [--kernel sim|linux] [--topology default|test-vm|test-vm-virtio|file.json] [--inspect]
          a VM's life: devices attached (backend chosen and why), a q35 memory map
          committed, memory hot-added and removed, a device unplugged, shutdown;
          default scenarios/q35.json on the simulated kernel; exit 1 if any step failed
          --topology: the simulated host (sim only): its default, the test VM's
          (scenarios/test-vm.json; VT-d, or test-vm-virtio), or a topology JSON file
          --inspect: also print every actor's state changes (the trace inspector)
  uapi    list the ioctls (number, fd kind, argument) and struct sizes the engine uses
  help    this text
`;

/** Options of probe and run. */
interface CliOptions {
  kernel: 'sim' | 'linux';
  /** The simulated host (sim only). */
  topology?: Topology;
  topologyName: string;
  /** The first argument that is not an option. */
  file?: string;
  /** run --inspect: trace every actor's state changes. */
  inspect: boolean;
}

/** Parses `[file] [--kernel sim|linux] [--topology …] [--inspect]`; a number is an exit code. */
function options(argv: string[]): CliOptions | number {
  const o: CliOptions = { kernel: 'sim', topologyName: 'the default host', inspect: false };
  const fail = (msg: string) => (process.stderr.write(`vfio-engine: ${msg}\n`), 2);
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--kernel') {
      const k = argv[++i];
      if (k !== 'sim' && k !== 'linux') return fail(`--kernel takes sim or linux, not '${k}'`);
      o.kernel = k;
    } else if (a === '--topology') {
      const t = argv[++i];
      if (!t) return fail('--topology takes default, test-vm, test-vm-virtio or a JSON file');
      const presets: Record<string, [string, () => Topology]> = {
        default: ['the default host', defaultTopology],
        'test-vm': ['the test VM', () => testVmTopology('vtd')],
        'test-vm-virtio': ['the test VM with virtio-iommu', () => testVmTopology('virtio')],
      };
      const [name, make] = presets[t] ?? [t, () => loadTopology(t)];
      o.topologyName = name;
      o.topology = make();
    } else if (a === '--inspect' && argv[0] === 'run') o.inspect = true;
    else if (a.startsWith('--')) return fail(`unknown option '${a}'`);
    else o.file ??= a;
  }
  if (o.topology && o.kernel !== 'sim') return fail('--topology describes the simulated kernel only');
  return o;
}

async function main(argv: string[]): Promise<number> {
  const cmd = argv[0] ?? 'help';
  switch (cmd) {
    case 'probe': {
      const o = options(argv);
      if (typeof o === 'number') return o;
      const sim = o.kernel === 'sim' ? await SimPort.start(o.topology) : null;
      try {
        const port: SyscallPort = sim ? sim.port() : new LinuxPort();
        console.log(
          `kernel: ${sim ? `simulated (${o.topologyName}; --kernel linux for this machine)` : 'this machine'}`,
        );
        const lines = probeHost(port);
        const w = Math.max(...lines.map((l) => l.what.length));
        for (const l of lines) console.log(`${l.ok ? 'ok  ' : 'no  '} ${l.what.padEnd(w)}  ${l.detail}`);
      } finally {
        await sim?.stop();
      }
      return 0;
    }
    case 'run': {
      const o = options(argv);
      if (typeof o === 'number') return o;
      const path = o.file ?? new URL('../../../scenarios/q35.json', import.meta.url).pathname;
      return runScenario(path, o.kernel, { topology: o.topology, inspect: o.inspect });
    }
    case 'uapi': {
      for (const io of IOCTLS) {
        const arg =
          io.arg.kind === 'struct'
            ? `struct ${io.arg.struct.name} (${io.arg.struct.size} bytes)`
            : io.arg.kind;
        console.log(`0x${io.request.toString(16)}  ${io.name.padEnd(36)} ${io.fd.padEnd(9)} ${arg}`);
      }
      console.log(`${STRUCTS.length} struct layouts, ${IOCTLS.length} ioctls`);
      return 0;
    }
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return 0;
    default:
      process.stderr.write(`vfio-engine: unknown command '${cmd}'\n${USAGE}`);
      return 2;
  }
}

// A reader that stops early (`vfio-engine run | head`) is not an error: stop quietly.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});
process.exitCode = await main(process.argv.slice(2));
