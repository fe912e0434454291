/**
 * What the engine reports on `engine.events$`: the machines' emitted events, tagged with
 * the address space, plus the actor layer's own (container created/destroyed, warnings).
 */
import type { MachineError } from '../machines/errors.js';

/** One engine event. Every event names its address space (`space`) when it has one. */
export type EngineEvent =
  | { type: 'backend.selected'; space: string; device: string; host: string; backend: string; reason: string }
  | { type: 'device.attached'; space: string; device: string; host: string; container: string }
  | { type: 'device.failed'; space: string; device: string; error: MachineError }
  | { type: 'device.removed'; space: string; device: string }
  | { type: 'container.created'; space: string; container: string; backend: string; target: string }
  | { type: 'container.initialized'; space: string; container: string }
  | {
      type: 'container.replayed';
      space: string;
      container: string;
      mapped: number;
      copied: number;
      ms: number;
    }
  | { type: 'container.failed'; space: string; container: string; phase: string; error: MachineError }
  | { type: 'container.destroyed'; space: string; container: string }
  | {
      type: 'txn.committed';
      space: string;
      txn: string;
      ms: number;
      mapped: number;
      unmapped: number;
      containers: number;
    }
  | { type: 'txn.failed'; space: string; txn: string; error: MachineError }
  | { type: 'batch.failed'; space: string; container: string; batch: string; error: MachineError }
  | { type: 'warning'; space?: string; container?: string; message: string }
  /** Anything else a machine emitted (rejections, protocol violations), passed through. */
  | { type: 'machine'; space?: string; event: { type: string } & Record<string, unknown> };
