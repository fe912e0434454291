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
import { probeHost } from './probe.js';
import { runScenario } from './run.js';

const USAGE = `usage: vfio-engine <command>

commands:
  probe [--kernel sim|linux]
          survey a kernel: iommufd, the legacy VFIO container, IOMMU groups, devices
          bound to vfio-pci, RLIMIT_MEMLOCK. Default: the simulated kernel (its default
          host); --kernel linux asks this machine's kernel
  run [scenario.json] [--kernel sim|linux]
          a VM's life: devices attached (backend chosen and why), a q35 memory map
          committed, memory hot-added and removed, a device unplugged, shutdown;
          default scenarios/q35.json on the simulated kernel
  uapi    list the ioctls (number, fd kind, argument) and struct sizes the engine uses
  help    this text
`;

async function main(argv: string[]): Promise<number> {
  const cmd = argv[0] ?? 'help';
  switch (cmd) {
    case 'probe': {
      const k = argv.indexOf('--kernel');
      const kernel = k >= 0 ? argv[k + 1] : 'sim';
      if (kernel !== 'sim' && kernel !== 'linux') {
        process.stderr.write(`vfio-engine: --kernel takes sim or linux, not '${kernel}'\n`);
        return 2;
      }
      const sim = kernel === 'sim' ? await SimPort.start() : null;
      try {
        const port: SyscallPort = sim ? sim.port() : new LinuxPort();
        console.log(
          `kernel: ${sim ? 'simulated (the default host; --kernel linux for this machine)' : 'this machine'}`,
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
      const k = argv.indexOf('--kernel');
      const kernel = k >= 0 ? argv[k + 1] : 'sim';
      if (kernel !== 'sim' && kernel !== 'linux') {
        process.stderr.write(`vfio-engine: --kernel takes sim or linux, not '${kernel}'\n`);
        return 2;
      }
      const file = argv.slice(1).find((a, i) => !a.startsWith('--') && argv[i] !== '--kernel');
      const path = file ?? new URL('../../../scenarios/q35.json', import.meta.url).pathname;
      return runScenario(path, kernel);
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

process.exitCode = await main(process.argv.slice(2));
