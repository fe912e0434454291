/**
 * vfio-engine: keeps the IOMMU DMA mappings of VFIO-assigned devices in step with a
 * virtual machine's memory map. This entry point exports the engine (createEngine), its
 * typed errors and actor inspector, the Linux uapi layer, the syscall ports and the
 * simulated kernel's topologies.
 */
export * from './uapi/index.js';
export { SyscallError, type ErrorFields, type SerializedSyscallError } from './port/errors.js';
export { LinuxPort } from './port/linux.js';
export { type IoctlArg, type Rlimit, type SyscallPort } from './port/port.js';
export { SimPort, type SimKernelHandle } from './kernel/sim-port.js';
export {
  defaultTopology,
  testVmTopology,
  loadTopology,
  parseTopology,
  type Topology,
  type DeviceSpec,
  type IommuSpec,
  type TestVmIommu,
} from './kernel/topology.js';
export {
  createEngine,
  AddressSpace,
  type Engine,
  type EngineOptions,
  type EngineEvent,
  type AddDeviceOptions,
  type DeviceInfo,
  type MemoryRegion,
  type CommitResult,
  traceInspector,
  type ActorInspector,
} from './engine.js';
export type { ListenerEvent } from './memory/transaction.js';
export type { DmaMapping } from './memory/sections.js';
export { VfioError } from './backends/errors.js';
