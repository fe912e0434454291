/**
 * The container machine: one VFIO container (QEMU's VFIOContainer base over the legacy type1
 * or the iommufd backend), pure. It is the single writer of its mappings: APPLY runs one
 * committed transaction's plan at a time, and device attach and detach are serialized with it.
 *
 *   settingUp ─done→ ready ─ATTACH→ attaching ─settled→ ready
 *                    ready ─DETACH→ detaching ─done→ ready | tearingDown (last device) | failed
 *                    ready ─APPLY→ applying ─settled→ ready | failed
 *                    ready ─TEARDOWN (no devices)→ tearingDown ─settled→ destroyed
 *   settingUp ─error→ failed      detaching ─error→ failed
 *   failed ─DETACH→ detaching     failed ─TEARDOWN→ tearingDown      failed (no devices) → tearingDown
 *
 * Failure policy (QEMU listener.c, B5 #27):
 * - Until the container is initialized, a failed applyBatch or attach does not fail it: the
 *   first error is kept in `error` (later ones only in `lastError`), as QEMU keeps
 *   bcontainer->error. The container becomes initialized when an APPLY settles with at least one
 *   device attached (the replay of the address space into the container, which the actor layer
 *   sends after the first ATTACH, even when empty). If an error was kept by then, the attach
 *   fails: the container goes to failed with that first error ('container.failed', phase 'init').
 *   A first attach that fails leaves no device: failed, then torn down (QEMU frees it).
 * - After initialization a failed applyBatch is a runtime failure (QEMU hw_error): failed,
 *   'container.failed' phase 'runtime'. The machine's mapping count is then unreliable; the
 *   actor layer reconciles its table from the per-op journal and releases the container: it
 *   tells the devices (CONTAINER_FAILED), which close and detach. The last detach tears the
 *   container down.
 * - A failed applyBatch whose error is EBADF after initialization means the container's fd was
 *   closed behind the engine (reliability row 23): failed, phase 'lost', released in the same
 *   way. Before initialization it fails the attach like any other error.
 * - A failed detach also means the kernel and our view may differ: failed, phase 'detach'
 *   (released in the same way).
 *
 * Each attach and detach ends in one event naming the device: 'container.deviceAttached' or
 * 'container.deviceAttachFailed', 'container.deviceDetached' or 'container.deviceDetachFailed'
 * (then 'container.failed', phase 'detach'). The actor layer waits on them.
 *
 * No event is dropped silently. ATTACH, DETACH, APPLY and TEARDOWN arriving while an operation is
 * in flight (settingUp, attaching, detaching, applying) are deferred: kept in `queue` and raised
 * again, in arrival order, when the container is next ready or failed. The stream layer already
 * serializes APPLY per container (concatMap on 'batch.applied' / 'batch.failed'), so a deferred
 * APPLY is a protocol slip, absorbed here; device attach and detach legitimately race with
 * transactions. An event the container cannot take at all (APPLY to a failed container, ATTACH of
 * an attached device, anything while tearing down) is reported with 'container.rejected'.
 * A destroyed container is a stopped actor: xstate ignores what is sent to it.
 */
import { and, assign, emit, enqueueActions, fromPromise, setup } from 'xstate';
import { notProvided, stateOf, toMachineError, type MachineError, type Rejection } from './errors.js';

/** The container's backend (QEMU TYPE_VFIO_IOMMU_LEGACY / TYPE_VFIO_IOMMU_IOMMUFD). */
export type ContainerBackend = 'legacy' | 'iommufd';

/** What the actor layer gives a new container actor. */
export interface ContainerInput {
  readonly id: string;
  readonly addressSpaceId: string;
  readonly backend: ContainerBackend;
}

/** Events the container machine takes. */
export type ContainerEvent =
  | { type: 'ATTACH'; deviceId: string }
  | { type: 'DETACH'; deviceId: string }
  /** One committed transaction's plan for this container; ops is its operation count. */
  | { type: 'APPLY'; batchId: string; ops: number }
  | { type: 'TEARDOWN' };

/** The events that wait in the queue while an operation is in flight (all of them). */
export type DeferredContainerEvent = ContainerEvent;

/** The container machine's context. */
export interface ContainerContext {
  readonly id: string;
  readonly addressSpaceId: string;
  readonly backend: ContainerBackend;
  /** QEMU bcontainer->initialized: the first device is attached and the replay is applied. */
  readonly initialized: boolean;
  /** QEMU bcontainer->error: the first error while not initialized. */
  readonly error: MachineError | null;
  /** The last error of any operation. */
  readonly lastError: MachineError | null;
  /** Attached devices, in attach order (QEMU device_list). */
  readonly devices: readonly string[];
  /** Live mappings, as counted from applyBatch results. */
  readonly mappings: number;
  /** Batches applied successfully. */
  readonly batches: number;
  /** The device being attached or detached, or the batch being applied. */
  readonly pendingDevice: string | null;
  readonly pendingBatch: { readonly batchId: string; readonly ops: number } | null;
  /** Events deferred while an operation was in flight, oldest first. */
  readonly queue: readonly DeferredContainerEvent[];
  /** Set once the container has failed; it never becomes ready again. */
  readonly failed: boolean;
}

/** Why a container failed: setup, the init-time replay or attach, a runtime batch, its fd lost, a detach. */
export type ContainerFailurePhase = 'setup' | 'init' | 'runtime' | 'lost' | 'detach';

/** Events the container machine emits for the engine. */
export type ContainerEmitted =
  | { type: 'container.initialized'; containerId: string }
  | { type: 'container.failed'; containerId: string; phase: ContainerFailurePhase; error: MachineError }
  | { type: 'container.deviceAttached'; containerId: string; deviceId: string }
  | { type: 'container.deviceAttachFailed'; containerId: string; deviceId: string; error: MachineError }
  | { type: 'container.deviceDetached'; containerId: string; deviceId: string }
  | { type: 'container.deviceDetachFailed'; containerId: string; deviceId: string; error: MachineError }
  | { type: 'batch.applied'; containerId: string; batchId: string; result: ApplyBatchOutput }
  | { type: 'batch.failed'; containerId: string; batchId: string; error: MachineError }
  | ({ type: 'container.rejected'; containerId: string; deviceId?: string; batchId?: string } & Rejection);

/** What setupContainer, attachToContainer, detachFromContainer and teardownContainer get. */
export interface ContainerOpInput {
  readonly id: string;
  readonly addressSpaceId: string;
  readonly backend: ContainerBackend;
  /** The device to attach or detach (attach/detach only). */
  readonly deviceId: string | null;
  /** Devices still attached (teardown of a failed container releases them). */
  readonly devices: readonly string[];
}

/** applyBatch's input: the batch to apply; the plan itself travels outside the machine. */
export interface ApplyBatchInput {
  readonly id: string;
  readonly backend: ContainerBackend;
  readonly batchId: string;
  readonly ops: number;
}

/** applyBatch's result. It rejects if any operation failed (the journal has the details). */
export interface ApplyBatchOutput {
  /** Operations applied. */
  readonly applied: number;
  /** Mappings created and removed. */
  readonly mapped: number;
  readonly unmapped: number;
}

/** The container machine's final output. */
export interface ContainerOutput {
  readonly id: string;
  readonly error: MachineError | null;
  readonly lastError: MachineError | null;
}

const opInput = ({ context }: { context: ContainerContext }): ContainerOpInput => ({
  id: context.id,
  addressSpaceId: context.addressSpaceId,
  backend: context.backend,
  deviceId: context.pendingDevice,
  devices: context.devices,
});

// While an operation is in flight every event waits for it (see the header).
const deferWhileBusy = {
  ATTACH: { actions: 'defer' },
  DETACH: { actions: 'defer' },
  APPLY: { actions: 'defer' },
  TEARDOWN: { actions: 'defer' },
} as const;

// An error kept as lastError, and as `error` if it is the first before initialization.
const withError = (context: ContainerContext, error: MachineError) => ({
  lastError: error,
  error: !context.initialized && context.error === null ? error : context.error,
});

const rejectTearingDown = { actions: { type: 'reject', params: { reason: 'tearing down' } } } as const;

/** The container machine (id 'container'). Supply the five actors with `.provide()`. */
export const containerMachine = setup({
  types: {
    context: {} as ContainerContext,
    events: {} as ContainerEvent,
    input: {} as ContainerInput,
    output: {} as ContainerOutput,
    emitted: {} as ContainerEmitted,
  },
  actors: {
    /** Open the backend (legacy: /dev/vfio/vfio, API version, IOMMU type; iommufd: IOAS_ALLOC). */
    setupContainer: fromPromise<void, ContainerOpInput>(async () => notProvided('setupContainer')),
    /** Attach a device (legacy: GROUP_SET_CONTAINER [+ SET_IOMMU]; iommufd: ATTACH_IOMMUFD_PT). */
    attachToContainer: fromPromise<void, ContainerOpInput>(async () => notProvided('attachToContainer')),
    /** Detach a device (legacy: GROUP_UNSET_CONTAINER; iommufd: DETACH_IOMMUFD_PT, HWPT put). */
    detachFromContainer: fromPromise<void, ContainerOpInput>(async () => notProvided('detachFromContainer')),
    /** Apply one batch of map/unmap operations. */
    applyBatch: fromPromise<ApplyBatchOutput, ApplyBatchInput>(async () => notProvided('applyBatch')),
    /** Release the container (unmap all, close the fd or destroy the IOAS). */
    teardownContainer: fromPromise<void, ContainerOpInput>(async () => notProvided('teardownContainer')),
  },
  guards: {
    knownDevice: ({ context, event }) => 'deviceId' in event && context.devices.includes(event.deviceId),
    noDevices: ({ context }) => context.devices.length === 0,
    initialized: ({ context }) => context.initialized,
    /** The pending detach removes the last device. */
    lastDevice: ({ context }) => context.devices.length === 1 && context.devices[0] === context.pendingDevice,
    isFailed: ({ context }) => context.failed,
    /** An APPLY is settling with a device attached while not yet initialized: the init point. */
    initPoint: ({ context }) => !context.initialized && context.devices.length > 0,
    hasError: ({ context }) => context.error !== null,
    /** An effect failed with EBADF: the container's fd was closed behind the engine. */
    fdLost: ({ event }) => toMachineError('', (event as { error?: unknown }).error).code === 'EBADF',
  },
  actions: {
    defer: assign({ queue: ({ context, event }) => [...context.queue, event] }),
    /** Raise every deferred event again, oldest first; busy states defer them anew. */
    drain: enqueueActions(({ context, enqueue }) => {
      if (context.queue.length === 0) return;
      const queued = context.queue;
      enqueue.assign({ queue: [] });
      for (const event of queued) enqueue.raise(event);
    }),
    reject: emit(({ context, event, self }, params: { reason: string } | undefined) => ({
      type: 'container.rejected' as const,
      containerId: context.id,
      event: event.type,
      state: stateOf(self),
      reason: params?.reason ?? 'not accepted in this state',
      ...('deviceId' in event ? { deviceId: event.deviceId } : {}),
      ...('batchId' in event ? { batchId: event.batchId } : {}),
    })),
    /** Keep the error as lastError, and as `error` if it is the first before initialization. */
    recordError: assign(({ context }, params: { error: MachineError }) => withError(context, params.error)),
    emitFailed: emit(({ context }, params: { phase: ContainerFailurePhase }) => ({
      type: 'container.failed' as const,
      containerId: context.id,
      phase: params.phase,
      // Before initialization the first error is the one that fails the attach.
      error: (params.phase === 'init' ? context.error : context.lastError) ?? {
        op: 'unknown',
        message: 'failed',
      },
    })),
    markFailed: assign({ failed: true }),
    clearPending: assign({ pendingDevice: null, pendingBatch: null }),
    /** The pending detach is done: the device leaves the list, and the engine is told. */
    removeDevice: enqueueActions(({ context, enqueue }) => {
      enqueue.assign({ devices: context.devices.filter((d) => d !== context.pendingDevice) });
      enqueue.emit({
        type: 'container.deviceDetached',
        containerId: context.id,
        deviceId: context.pendingDevice!,
      });
    }),
    countBatch: enqueueActions(({ context, event, enqueue }) => {
      const result = (event as unknown as { output: ApplyBatchOutput }).output;
      enqueue.assign({
        mappings: context.mappings + result.mapped - result.unmapped,
        batches: context.batches + 1,
      });
      enqueue.emit({
        type: 'batch.applied',
        containerId: context.id,
        batchId: context.pendingBatch!.batchId,
        result,
      });
    }),
    markInitialized: enqueueActions(({ context, enqueue }) => {
      enqueue.assign({ initialized: true });
      enqueue.emit({ type: 'container.initialized', containerId: context.id });
    }),
    /** applyBatch failed: its error recorded (as recordError does), and 'batch.failed'. */
    batchFailed: enqueueActions(({ context, event, enqueue }) => {
      const error = toMachineError('applyBatch', (event as { error?: unknown }).error);
      enqueue.assign(withError(context, error));
      enqueue.emit({
        type: 'batch.failed',
        containerId: context.id,
        batchId: context.pendingBatch!.batchId,
        error,
      });
    }),
    emitAttachFailed: emit(({ context }) => ({
      type: 'container.deviceAttachFailed' as const,
      containerId: context.id,
      deviceId: context.pendingDevice!,
      error: context.lastError!,
    })),
  },
}).createMachine({
  id: 'container',
  context: ({ input }) => ({
    id: input.id,
    addressSpaceId: input.addressSpaceId,
    backend: input.backend,
    initialized: false,
    error: null,
    lastError: null,
    devices: [],
    mappings: 0,
    batches: 0,
    pendingDevice: null,
    pendingBatch: null,
    queue: [],
    failed: false,
  }),
  initial: 'settingUp',
  // Reached only when the current state has no handler: report, never drop.
  on: { '*': { actions: { type: 'reject', params: undefined } } },
  states: {
    settingUp: {
      invoke: {
        id: 'setupContainer',
        src: 'setupContainer',
        input: opInput,
        onDone: 'ready',
        onError: {
          target: 'failed',
          actions: [
            {
              type: 'recordError',
              params: ({ event }) => ({ error: toMachineError('setupContainer', event.error) }),
            },
            { type: 'emitFailed', params: { phase: 'setup' } },
          ],
        },
      },
      on: deferWhileBusy,
    },
    ready: {
      entry: ['clearPending', 'drain'],
      on: {
        ATTACH: [
          { guard: 'knownDevice', actions: { type: 'reject', params: { reason: 'already attached' } } },
          { target: 'attaching', actions: assign({ pendingDevice: ({ event }) => event.deviceId }) },
        ],
        DETACH: [
          {
            guard: 'knownDevice',
            target: 'detaching',
            actions: assign({ pendingDevice: ({ event }) => event.deviceId }),
          },
          { actions: { type: 'reject', params: { reason: 'not attached' } } },
        ],
        APPLY: {
          target: 'applying',
          actions: assign({ pendingBatch: ({ event }) => ({ batchId: event.batchId, ops: event.ops }) }),
        },
        TEARDOWN: [
          { guard: 'noDevices', target: 'tearingDown' },
          // B5 #19: only a container without devices may be destroyed.
          { actions: { type: 'reject', params: { reason: 'devices attached' } } },
        ],
      },
    },
    attaching: {
      invoke: {
        id: 'attachToContainer',
        src: 'attachToContainer',
        input: opInput,
        onDone: {
          target: 'ready',
          actions: [
            assign({ devices: ({ context }) => [...context.devices, context.pendingDevice!] }),
            emit(({ context }) => ({
              type: 'container.deviceAttached' as const,
              containerId: context.id,
              deviceId: context.pendingDevice!,
            })),
          ],
        },
        onError: [
          {
            // The first attach failed: nothing is attached, the container has no purpose.
            guard: 'noDevices',
            target: 'failed',
            actions: [
              {
                type: 'recordError',
                params: ({ event }) => ({ error: toMachineError('attachToContainer', event.error) }),
              },
              'emitAttachFailed',
              {
                type: 'emitFailed',
                params: ({ context }) => ({ phase: context.initialized ? 'runtime' : 'init' }),
              },
            ],
          },
          {
            // QEMU tries the next container; this one is unaffected.
            target: 'ready',
            actions: [
              {
                type: 'recordError',
                params: ({ event }) => ({ error: toMachineError('attachToContainer', event.error) }),
              },
              'emitAttachFailed',
            ],
          },
        ],
      },
      on: deferWhileBusy,
    },
    detaching: {
      invoke: {
        id: 'detachFromContainer',
        src: 'detachFromContainer',
        input: opInput,
        onDone: [
          // QEMU: container_destroy when device_list becomes empty.
          { guard: 'lastDevice', target: 'tearingDown', actions: 'removeDevice' },
          { guard: 'isFailed', target: 'failed', actions: 'removeDevice' },
          { target: 'ready', actions: 'removeDevice' },
        ],
        // The device stays listed: the kernel may still have it attached.
        onError: {
          target: 'failed',
          actions: [
            {
              type: 'recordError',
              params: ({ event }) => ({ error: toMachineError('detachFromContainer', event.error) }),
            },
            emit(({ context }) => ({
              type: 'container.deviceDetachFailed' as const,
              containerId: context.id,
              deviceId: context.pendingDevice!,
              error: context.lastError!,
            })),
            { type: 'emitFailed', params: { phase: 'detach' } },
          ],
        },
      },
      on: deferWhileBusy,
    },
    applying: {
      invoke: {
        id: 'applyBatch',
        src: 'applyBatch',
        input: ({ context }) => ({
          id: context.id,
          backend: context.backend,
          batchId: context.pendingBatch!.batchId,
          ops: context.pendingBatch!.ops,
        }),
        onDone: [
          {
            // The replay succeeded but an earlier init-time error was kept: the attach fails.
            guard: and(['initPoint', 'hasError']),
            target: 'failed',
            actions: ['countBatch', { type: 'emitFailed', params: { phase: 'init' } }],
          },
          { guard: 'initPoint', target: 'ready', actions: ['countBatch', 'markInitialized'] },
          { target: 'ready', actions: 'countBatch' },
        ],
        onError: [
          {
            guard: and(['initialized', 'fdLost']),
            target: 'failed',
            actions: ['batchFailed', { type: 'emitFailed', params: { phase: 'lost' } }],
          },
          {
            guard: 'initialized',
            target: 'failed',
            actions: ['batchFailed', { type: 'emitFailed', params: { phase: 'runtime' } }],
          },
          {
            guard: 'initPoint',
            target: 'failed',
            actions: ['batchFailed', { type: 'emitFailed', params: { phase: 'init' } }],
          },
          { target: 'ready', actions: 'batchFailed' },
        ],
      },
      on: deferWhileBusy,
    },
    failed: {
      entry: ['markFailed', 'clearPending', 'drain'],
      always: { guard: 'noDevices', target: 'tearingDown' },
      on: {
        DETACH: [
          {
            guard: 'knownDevice',
            target: 'detaching',
            actions: assign({ pendingDevice: ({ event }) => event.deviceId }),
          },
          { actions: { type: 'reject', params: { reason: 'not attached' } } },
        ],
        TEARDOWN: 'tearingDown',
        ATTACH: { actions: { type: 'reject', params: { reason: 'container failed' } } },
        APPLY: { actions: { type: 'reject', params: { reason: 'container failed' } } },
      },
    },
    tearingDown: {
      invoke: {
        id: 'teardownContainer',
        src: 'teardownContainer',
        input: opInput,
        onDone: 'destroyed',
        // Nothing more can be done: record and finish.
        onError: {
          target: 'destroyed',
          actions: {
            type: 'recordError',
            params: ({ event }) => ({ error: toMachineError('teardownContainer', event.error) }),
          },
        },
      },
      on: {
        ATTACH: rejectTearingDown,
        DETACH: rejectTearingDown,
        APPLY: rejectTearingDown,
        TEARDOWN: rejectTearingDown,
      },
    },
    destroyed: { type: 'final' },
  },
  output: ({ context }) => ({ id: context.id, error: context.error, lastError: context.lastError }),
});
