/**
 * The address space machine: one guest address space seen by VFIO (QEMU's VFIOAddressSpace
 * and its MemoryListener), pure. It takes one COMMIT per committed MemoryListener transaction
 * (already batched by the RxJS layer: one event per transaction, never per section or page)
 * and hands it to commitTransaction, which plans the sections and dispatches one APPLY per
 * container.
 *
 *   active.idle ─COMMIT→ active.committing ─settled→ active.idle
 *   active.idle ─SHUTDOWN→ shuttingDown ─settled→ closed
 *   DEVICE_ADDED / DEVICE_REMOVED / CONTAINER_ADDED / CONTAINER_REMOVED: bookkeeping in active
 *
 * There is no failed state: a failed commit is reported ('txn.failed') and the address space
 * stays active, because failures belong to containers (QEMU fails the container, never the
 * address space), and later transactions must still be able to unmap.
 *
 * One transaction at a time. The actor layer's concatMap sends the next COMMIT only after
 * 'txn.committed' or 'txn.failed'; a COMMIT arriving during a commit breaks that protocol. It is
 * not dropped (a lost transaction would leave the IOMMU out of step with guest memory): it is
 * counted in `txns.violations`, reported with 'protocol.violation', and deferred, like a
 * SHUTDOWN arriving during a commit; deferred events run in arrival order once the commit
 * settles. COMMITs deferred behind a SHUTDOWN are rejected ('addressSpace.rejected'), as is
 * anything else the current state cannot take. A closed address space is a stopped actor:
 * xstate ignores what is sent to it.
 */
import { assign, emit, enqueueActions, fromPromise, setup } from 'xstate';
import { notProvided, stateOf, toMachineError, type MachineError, type Rejection } from './errors.js';

/** What the actor layer gives a new address space actor. */
export interface AddressSpaceInput {
  readonly id: string;
  /** The QEMU AddressSpace name (memory, the vIOMMU's per-device spaces, ...). */
  readonly name: string;
}

/** Events the address space machine takes. */
export type AddressSpaceEvent =
  /** One whole committed transaction; ops is its section operation count. */
  | { type: 'COMMIT'; txnId: string; ops: number }
  | { type: 'DEVICE_ADDED'; deviceId: string }
  | { type: 'DEVICE_REMOVED'; deviceId: string }
  | { type: 'CONTAINER_ADDED'; containerId: string }
  | { type: 'CONTAINER_REMOVED'; containerId: string }
  | { type: 'SHUTDOWN' };

/** Events that wait for the commit in flight. */
export type DeferredAddressSpaceEvent = Extract<AddressSpaceEvent, { type: 'COMMIT' | 'SHUTDOWN' }>;

/** Transaction counters. */
export interface TxnCounts {
  readonly committed: number;
  readonly failed: number;
  /** COMMITs that arrived while a commit was in flight. */
  readonly violations: number;
}

/** The address space machine's context. */
export interface AddressSpaceContext {
  readonly id: string;
  readonly name: string;
  /** Containers serving this address space (QEMU VFIOAddressSpace.containers). */
  readonly containers: readonly string[];
  /** Devices in this address space. */
  readonly devices: readonly string[];
  readonly txns: TxnCounts;
  /** The transaction being committed. */
  readonly current: { readonly txnId: string; readonly ops: number } | null;
  readonly lastTxnId: string | null;
  readonly lastError: MachineError | null;
  /** Events deferred during a commit, oldest first. */
  readonly queue: readonly DeferredAddressSpaceEvent[];
}

/** commitTransaction's input: the transaction and the containers it goes to. */
export interface CommitTransactionInput {
  readonly addressSpaceId: string;
  readonly txnId: string;
  readonly ops: number;
  readonly containers: readonly string[];
}

/** commitTransaction's result. The actor measures the time, so the machine stays pure. */
export interface CommitTransactionOutput {
  /** Wall time of the commit, planning and dispatch to every container included. */
  readonly ms: number;
  /** Sections mapped and unmapped across all containers. */
  readonly mapped: number;
  readonly unmapped: number;
  /** Containers the transaction was dispatched to. */
  readonly containers: number;
}

/** shutdownAddressSpace's input. */
export interface ShutdownAddressSpaceInput {
  readonly id: string;
  readonly containers: readonly string[];
  readonly devices: readonly string[];
}

/** Events the address space machine emits for the engine. */
export type AddressSpaceEmitted =
  | {
      type: 'txn.committed';
      addressSpaceId: string;
      txnId: string;
      ms: number;
      result: CommitTransactionOutput;
    }
  | { type: 'txn.failed'; addressSpaceId: string; txnId: string; error: MachineError }
  | { type: 'protocol.violation'; addressSpaceId: string; txnId: string; inFlight: string }
  | ({ type: 'addressSpace.rejected'; addressSpaceId: string } & Rejection);

/** The address space machine's final output. */
export interface AddressSpaceOutput {
  readonly id: string;
  readonly txns: TxnCounts;
  readonly lastError: MachineError | null;
}

/** The address space machine (id 'addressSpace'). Supply the two actors with `.provide()`. */
export const addressSpaceMachine = setup({
  types: {
    context: {} as AddressSpaceContext,
    events: {} as AddressSpaceEvent,
    input: {} as AddressSpaceInput,
    output: {} as AddressSpaceOutput,
    emitted: {} as AddressSpaceEmitted,
  },
  actors: {
    /** Plan the transaction's sections and dispatch one APPLY per container; settles when all have. */
    commitTransaction: fromPromise<CommitTransactionOutput, CommitTransactionInput>(async () =>
      notProvided('commitTransaction'),
    ),
    /** Release the address space (its containers are torn down by their last detach). */
    shutdownAddressSpace: fromPromise<void, ShutdownAddressSpaceInput>(async () =>
      notProvided('shutdownAddressSpace'),
    ),
  },
  guards: {
    knownDevice: ({ context, event }) => 'deviceId' in event && context.devices.includes(event.deviceId),
    knownContainer: ({ context, event }) =>
      'containerId' in event && context.containers.includes(event.containerId),
  },
  actions: {
    reject: emit(({ context, event, self }, params: { reason: string } | undefined) => ({
      type: 'addressSpace.rejected' as const,
      addressSpaceId: context.id,
      event: event.type,
      state: stateOf(self),
      reason: params?.reason ?? 'not accepted in this state',
    })),
    defer: assign({
      queue: ({ context, event }) =>
        event.type === 'COMMIT' || event.type === 'SHUTDOWN' ? [...context.queue, event] : context.queue,
    }),
    countViolation: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'COMMIT') return;
      enqueue.assign({ txns: { ...context.txns, violations: context.txns.violations + 1 } });
      enqueue.emit({
        type: 'protocol.violation',
        addressSpaceId: context.id,
        txnId: event.txnId,
        inFlight: context.current?.txnId ?? '?',
      });
    }),
    /** idle takes every deferred event with a transition out, so one at a time is enough. */
    raiseNext: enqueueActions(({ context, enqueue }) => {
      const [next, ...rest] = context.queue;
      if (next === undefined) return;
      enqueue.assign({ queue: rest });
      enqueue.raise(next);
    }),
    /** On shutdown, what is still deferred can no longer run. */
    rejectQueued: enqueueActions(({ context, enqueue }) => {
      for (const event of context.queue) {
        enqueue.emit({
          type: 'addressSpace.rejected',
          addressSpaceId: context.id,
          event: event.type,
          state: 'shuttingDown',
          reason: 'deferred behind SHUTDOWN',
        });
      }
      enqueue.assign({ queue: [] });
    }),
  },
}).createMachine({
  id: 'addressSpace',
  context: ({ input }) => ({
    id: input.id,
    name: input.name,
    containers: [],
    devices: [],
    txns: { committed: 0, failed: 0, violations: 0 },
    current: null,
    lastTxnId: null,
    lastError: null,
    queue: [],
  }),
  initial: 'active',
  // Reached only when the current state has no handler: report, never drop.
  on: { '*': { actions: { type: 'reject', params: undefined } } },
  states: {
    active: {
      initial: 'idle',
      // Bookkeeping only: a commit in flight already has its container list, and a new
      // container gets the current map as its own replay.
      on: {
        DEVICE_ADDED: [
          { guard: 'knownDevice', actions: { type: 'reject', params: { reason: 'device already added' } } },
          { actions: assign({ devices: ({ context, event }) => [...context.devices, event.deviceId] }) },
        ],
        DEVICE_REMOVED: [
          {
            guard: 'knownDevice',
            actions: assign({
              devices: ({ context, event }) => context.devices.filter((d) => d !== event.deviceId),
            }),
          },
          { actions: { type: 'reject', params: { reason: 'unknown device' } } },
        ],
        CONTAINER_ADDED: [
          {
            guard: 'knownContainer',
            actions: { type: 'reject', params: { reason: 'container already added' } },
          },
          {
            actions: assign({
              containers: ({ context, event }) => [...context.containers, event.containerId],
            }),
          },
        ],
        CONTAINER_REMOVED: [
          {
            guard: 'knownContainer',
            actions: assign({
              containers: ({ context, event }) => context.containers.filter((c) => c !== event.containerId),
            }),
          },
          { actions: { type: 'reject', params: { reason: 'unknown container' } } },
        ],
      },
      states: {
        idle: {
          entry: 'raiseNext',
          on: {
            COMMIT: {
              target: 'committing',
              actions: assign({ current: ({ event }) => ({ txnId: event.txnId, ops: event.ops }) }),
            },
            SHUTDOWN: '#addressSpace.shuttingDown',
          },
        },
        committing: {
          invoke: {
            id: 'commitTransaction',
            src: 'commitTransaction',
            input: ({ context }) => ({
              addressSpaceId: context.id,
              txnId: context.current!.txnId,
              ops: context.current!.ops,
              containers: context.containers,
            }),
            onDone: {
              target: 'idle',
              actions: [
                emit(({ context, event }) => ({
                  type: 'txn.committed' as const,
                  addressSpaceId: context.id,
                  txnId: context.current!.txnId,
                  ms: event.output.ms,
                  result: event.output,
                })),
                assign({
                  txns: ({ context }) => ({ ...context.txns, committed: context.txns.committed + 1 }),
                  lastTxnId: ({ context }) => context.current!.txnId,
                  current: null,
                }),
              ],
            },
            onError: {
              target: 'idle',
              actions: [
                enqueueActions(({ context, event, enqueue }) => {
                  const error = toMachineError('commitTransaction', event.error);
                  enqueue.emit({
                    type: 'txn.failed',
                    addressSpaceId: context.id,
                    txnId: context.current!.txnId,
                    error,
                  });
                  enqueue.assign({
                    txns: { ...context.txns, failed: context.txns.failed + 1 },
                    lastTxnId: context.current!.txnId,
                    lastError: error,
                    current: null,
                  });
                }),
              ],
            },
          },
          on: {
            COMMIT: { actions: ['countViolation', 'defer'] },
            SHUTDOWN: { actions: 'defer' },
          },
        },
      },
    },
    shuttingDown: {
      entry: 'rejectQueued',
      invoke: {
        id: 'shutdownAddressSpace',
        src: 'shutdownAddressSpace',
        input: ({ context }) => ({
          id: context.id,
          containers: context.containers,
          devices: context.devices,
        }),
        onDone: 'closed',
        // Nothing more can be done: record and finish.
        onError: {
          target: 'closed',
          actions: assign({ lastError: ({ event }) => toMachineError('shutdownAddressSpace', event.error) }),
        },
      },
    },
    closed: { type: 'final' },
  },
  output: ({ context }) => ({ id: context.id, txns: context.txns, lastError: context.lastError }),
});
