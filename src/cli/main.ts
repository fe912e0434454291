#!/usr/bin/env node
/**
 * The vfio-engine command line, on commander: every verb has --help and --version, and every
 * mistake in its use (an option, an argument, a topology or scenario file) is one line on
 * stderr, `vfio-engine: <verb>: <message>`, with exit code 2. What fails while a verb works is
 * one line with exit code 1 (run reports failed steps itself and exits 1 at the end).
 *
 *   vfio-engine probe    what this host's kernel offers (iommufd, VFIO, groups, devices, memlock)
 *   vfio-engine run      a VM's life on the engine (scenarios/q35.json by default)
 *   vfio-engine bench    the benchmark runner (src/bench/): workloads, baselines, targets, plots
 *   vfio-engine uapi     the ioctl numbers and struct sizes the engine speaks (Linux 6.12)
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Argument, Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { LinuxPort } from '../port/linux.js';
import { SimPort } from '../kernel/sim-port.js';
import type { SyscallPort } from '../port/port.js';
import { IOCTLS, STRUCTS } from '../uapi/index.js';
import { defaultTopology, loadTopology, testVmTopology, type Topology } from '../kernel/topology.js';
import { benchCommand } from './bench.js';
import { probeHost } from './probe.js';
import { runScenario } from './run.js';
import { loadScenario, ScenarioError } from './scenario.js';

const root = new URL('../../../', import.meta.url);
const { version } = JSON.parse(fs.readFileSync(new URL('package.json', root), 'utf8')) as { version: string };
const defaultScenario = fileURLToPath(new URL('scenarios/q35.json', root));

/** A simulated host as --topology names it. */
interface NamedTopology {
  /** How probe names it ("the test VM"), or the file's path. */
  readonly name: string;
  readonly topology: Topology;
}

const PRESETS: Record<string, () => NamedTopology> = {
  default: () => ({ name: 'the default host', topology: defaultTopology() }),
  'test-vm': () => ({ name: 'the test VM', topology: testVmTopology('vtd') }),
  'test-vm-virtio': () => ({ name: 'the test VM with virtio-iommu', topology: testVmTopology('virtio') }),
};

// commander calls this at parse time: a file that cannot be read or parsed is a usage error there.
function parseTopologyOption(value: string): NamedTopology {
  const preset = PRESETS[value];
  if (preset) return preset();
  try {
    return { name: value, topology: loadTopology(value) };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    // fs names the call and the path after a comma ("..., open 'x.json'"): commander names it already.
    const why = err.message.replace(/, \w+ '.*'$/, '');
    if (err.code === 'ENOENT')
      throw new InvalidArgumentError(
        `Not ${Object.keys(PRESETS).join(', ')} or a topology JSON file (${why}).`,
      );
    throw new InvalidArgumentError(
      e instanceof SyntaxError && !/BigInt/.test(why) ? `Invalid JSON: ${why}.` : `${why}.`,
    );
  }
}

/** The options probe and run share (commander's parsed values). */
interface KernelOptions {
  kernel: 'sim' | 'linux';
  topology?: NamedTopology;
}

function kernelOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--kernel <kernel>', "the simulated kernel, or this machine's")
        .choices(['sim', 'linux'])
        .default('sim'),
    )
    .addOption(
      new Option(
        '--topology <topology>',
        'the simulated host (sim only): default, test-vm, test-vm-virtio, or a topology JSON file',
      ).argParser(parseTopologyOption),
    );
}

/**
 * Each verb writes its errors as `vfio-engine: <verb>: <message>`, one line each (commander's
 * own start with "error: " and put a suggestion on a line of its own).
 */
function errorsAs(cmd: Command, prefix: string): Command {
  return cmd.configureOutput({
    outputError: (str, write) => {
      const text = str
        .trimEnd()
        .replace(/^error: /, '')
        .replace(/\n\(Did you mean (.*)\?\)$/, ' (did you mean $1?)');
      for (const line of text.split('\n')) write(`${prefix}${line}\n`);
    },
  });
}

/** A verb: errors prefixed with its name, --version, and commander's errors thrown (exit code 2). */
function verb(program: Command, name: string, description: string): Command {
  const cmd = program.command(name).description(description).version(version);
  return errorsAs(cmd, `vfio-engine: ${name}: `);
}

/** Kernel options checked together; errors go out as this verb's usage errors (exit code 2). */
function checkKernel(cmd: Command, o: KernelOptions): void {
  if (o.topology && o.kernel !== 'sim')
    cmd.error('--topology describes the simulated kernel only', { exitCode: 2 });
}

/** Builds the command; `exit` receives the exit code of a verb that ran. */
function program(exit: (code: number) => void): Command {
  const program = errorsAs(new Command('vfio-engine'), 'vfio-engine: ')
    .description(
      "Keeps VFIO devices' IOMMU mappings in step with a VM's memory map (QEMU's hw/vfio as an engine).",
    )
    .version(version)
    .exitOverride();

  const probe = kernelOptions(
    verb(
      program,
      'probe',
      'survey a kernel: iommufd, the legacy VFIO container, IOMMU groups, devices bound to vfio-pci, RLIMIT_MEMLOCK',
    ),
  ).action(async (o: KernelOptions, cmd: Command) => {
    checkKernel(cmd, o);
    const sim = o.kernel === 'sim' ? await SimPort.start(o.topology?.topology) : null;
    try {
      const port: SyscallPort = sim ? sim.port() : new LinuxPort();
      const name = o.topology?.name ?? 'the default host';
      console.log(`kernel: ${sim ? `simulated (${name}; --kernel linux for this machine)` : 'this machine'}`);
      const lines = probeHost(port);
      const w = Math.max(...lines.map((l) => l.what.length));
      for (const l of lines) console.log(`${l.ok ? 'ok  ' : 'no  '} ${l.what.padEnd(w)}  ${l.detail}`);
    } finally {
      await sim?.stop();
    }
    exit(0);
  });
  probe.addHelpText(
    'after',
    "\nDefault: the simulated kernel (its default host); --kernel linux asks this machine's kernel.",
  );

  const run = kernelOptions(
    verb(
      program,
      'run',
      "a VM's life on the engine: devices attached, memory committed, hot-added and removed, a device unplugged, shutdown",
    )
      .addArgument(
        new Argument('[scenario]', 'a scenario JSON file (README: Scenarios)').default(
          defaultScenario,
          'scenarios/q35.json',
        ),
      )
      .option('--inspect', "also print every actor's state changes (the trace inspector)"),
  ).action(async (file: string, o: KernelOptions & { inspect?: boolean }, cmd: Command) => {
    checkKernel(cmd, o);
    let scenario;
    try {
      scenario = loadScenario(file);
    } catch (e) {
      if (e instanceof ScenarioError) cmd.error(e.message, { exitCode: 2, code: 'vfio-engine.scenario' });
      throw e;
    }
    exit(
      await runScenario(scenario, o.kernel, { topology: o.topology?.topology, inspect: o.inspect === true }),
    );
  });
  run.addHelpText(
    'after',
    [
      '',
      'Default scenario: scenarios/q35.json, on the simulated kernel. The scenario is checked in',
      'full before the run (each problem: file, step, field; exit code 2). Each step is printed,',
      "with each device's backend and why, its container, every container's table and each",
      "transaction's time. Exit code 1 when a step failed (the run goes on and shuts down).",
    ].join('\n'),
  );

  benchCommand(
    verb(
      program,
      'bench',
      'the benchmark runner: workloads on the null and simulated kernels, the engine beside its baselines; table, JSON and SVG plots',
    ),
    exit,
  );

  verb(
    program,
    'uapi',
    'list the ioctls (number, fd kind, argument) and struct sizes the engine uses',
  ).action(() => {
    for (const io of IOCTLS) {
      const arg =
        io.arg.kind === 'struct' ? `struct ${io.arg.struct.name} (${io.arg.struct.size} bytes)` : io.arg.kind;
      console.log(`0x${io.request.toString(16)}  ${io.name.padEnd(36)} ${io.fd.padEnd(9)} ${arg}`);
    }
    console.log(`${STRUCTS.length} struct layouts, ${IOCTLS.length} ioctls`);
    exit(0);
  });
  return program;
}

async function main(argv: string[]): Promise<number> {
  let code = 0;
  let running = '';
  const cli = program((c) => (code = c)).hook('preAction', (_, cmd) => {
    running = cmd.name();
  });
  // Without a verb: the help, as `vfio-engine help` (commander would print it as an error).
  if (argv.length === 0) {
    cli.outputHelp();
    return 0;
  }
  try {
    await cli.parseAsync(argv, { from: 'user' });
    return code;
  } catch (e) {
    // Help and --version end here with exit code 0, usage errors (printed already) with 2.
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    // A verb that failed at work: one line, no stack trace.
    process.stderr.write(
      `vfio-engine: ${running ? `${running}: ` : ''}${e instanceof Error ? e.message : String(e)}\n`,
    );
    return 1;
  }
}

// A reader that stops early (`vfio-engine run | head`) is not an error: stop quietly.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});
process.exitCode = await main(process.argv.slice(2));
