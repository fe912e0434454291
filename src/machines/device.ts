/**
 * The device machine: one VFIO device's lifecycle (QEMU's VFIODevice: vfio_device_attach,
 * vfio_device_detach, reset, close), pure. Every kernel effect is an invoked actor named
 * here and supplied by the actor layer.
 *
 *   created ─OPEN→ opening ─done→ bound ─ATTACH→ attaching ─done→ attached ─DETACH→ detaching ─done→ bound
 *   bound|attached ─RESET→ resetting ─settled→ (back where it was)
 *   bound ─CLOSE→ closing ─settled→ closed          attached ─CLOSE→ detaching → bound → closing
 *   opening|attaching|detaching ─error→ failed ─CLOSE→ closing      attached ─CONTAINER_FAILED→ failed
 *   created ─CLOSE→ closed
 *
 * An in-flight kernel operation is never abandoned (stopping it would leak what it opened):
 * CLOSE and CONTAINER_FAILED arriving while opening, attaching, resetting or detaching are
 * latched in context and acted on as soon as the operation settles. Any other event the
 * current state cannot take is reported with a 'device.rejected' emit, never dropped silently.
 */
import { assign, emit, enqueueActions, fromPromise, setup } from 'xstate';
import { notProvided, stateOf, toMachineError, type MachineError, type Rejection } from './errors.js';

/** The container backend a device uses (QEMU TYPE_VFIO_IOMMU_IOMMUFD / TYPE_VFIO_IOMMU_LEGACY). */
export type DeviceBackend = 'iommufd' | 'legacy';

/** How the backend is chosen: the RFC's iommufd=on|off|auto, or the id of an iommufd object (merged QEMU). */
export type IommufdSetting = 'on' | 'off' | 'auto' | (string & {});

/** What the actor layer gives a new device actor. */
export interface DeviceInput {
  readonly id: string;
  /** The host device: a PCI address (0000:00:04.0) or a sysfs path. */
  readonly host: string;
  readonly iommufd: IommufdSetting;
}

/** The device machine's context. */
export interface DeviceContext {
  readonly id: string;
  readonly host: string;
  readonly iommufd: IommufdSetting;
  /** The backend openDevice chose, null until the device is open. */
  readonly backend: DeviceBackend | null;
  /** Why that backend (reported to the user: the choice decides memlock accounting). */
  readonly reason: string | null;
  /** The container the device is attached to (kept while failed, so closeDevice can release it). */
  readonly containerId: string | null;
  /** The last error, if any. */
  readonly error: MachineError | null;
  /** CLOSE arrived during an operation: close as soon as it settles. */
  readonly closeRequested: boolean;
  /** The container failed while an operation was in flight: fail as soon as it settles. */
  readonly containerFailure: MachineError | null;
}

/** Events the device machine takes. */
export type DeviceEvent =
  | { type: 'OPEN' }
  /** Attach to a container; without containerId the actor layer picks or creates one (QEMU's search). */
  | { type: 'ATTACH'; containerId?: string }
  | { type: 'RESET' }
  | { type: 'DETACH' }
  | { type: 'CLOSE' }
  /** The container this device is attached to failed. */
  | { type: 'CONTAINER_FAILED'; containerId: string; error?: MachineError };

/** Events the device machine emits for the engine. */
export type DeviceEmitted =
  | { type: 'backend.selected'; deviceId: string; backend: DeviceBackend; reason: string }
  | { type: 'device.failed'; deviceId: string; error: MachineError }
  | { type: 'device.resetFailed'; deviceId: string; error: MachineError }
  | { type: 'device.closeFailed'; deviceId: string; error: MachineError }
  | ({ type: 'device.rejected'; deviceId: string } & Rejection);

/** openDevice's result: the backend chosen and why. */
export interface OpenDeviceOutput {
  readonly backend: DeviceBackend;
  readonly reason: string;
}

/** attachDevice's result: the container the device joined. */
export interface AttachDeviceOutput {
  readonly containerId: string;
}

/** What every device operation gets. */
export interface DeviceOpInput {
  readonly id: string;
  readonly host: string;
  readonly iommufd: IommufdSetting;
  readonly backend: DeviceBackend | null;
  readonly containerId: string | null;
}

/** attachDevice's input: containerId is the requested one (null: any compatible or a new one). */
export type AttachDeviceInput = DeviceOpInput;

/** The device machine's final output. */
export interface DeviceOutput {
  readonly id: string;
  readonly error: MachineError | null;
}

const opInput = ({ context }: { context: DeviceContext }): DeviceOpInput => ({
  id: context.id,
  host: context.host,
  iommufd: context.iommufd,
  backend: context.backend,
  containerId: context.containerId,
});

/** The device lifecycle machine (id 'device'). Supply the five actors with `.provide()`. */
export const deviceMachine = setup({
  types: {
    context: {} as DeviceContext,
    events: {} as DeviceEvent,
    input: {} as DeviceInput,
    output: {} as DeviceOutput,
    emitted: {} as DeviceEmitted,
  },
  actors: {
    /** Open the device and bind it (iommufd: cdev + BIND_IOMMUFD; legacy: group fd, viability). */
    openDevice: fromPromise<OpenDeviceOutput, DeviceOpInput>(async () => notProvided('openDevice')),
    /** Join a container in the device's address space (QEMU attach_device). */
    attachDevice: fromPromise<AttachDeviceOutput, AttachDeviceInput>(async () => notProvided('attachDevice')),
    /** VFIO_DEVICE_RESET, or a hot reset through the backend. */
    resetDevice: fromPromise<void, DeviceOpInput>(async () => notProvided('resetDevice')),
    /** Leave the container (QEMU detach_device). */
    detachDevice: fromPromise<void, DeviceOpInput>(async () => notProvided('detachDevice')),
    /** Release everything the device holds (fds, binding, a failed container's attachment). */
    closeDevice: fromPromise<void, DeviceOpInput>(async () => notProvided('closeDevice')),
  },
  guards: {
    closeRequested: ({ context }) => context.closeRequested,
    containerFailed: ({ context }) => context.containerFailure !== null,
    isAttached: ({ context }) => context.containerId !== null,
    isOwnContainer: ({ context, event }) =>
      event.type === 'CONTAINER_FAILED' && event.containerId === context.containerId,
  },
  actions: {
    reject: emit(({ context, event, self }, params: { reason: string } | undefined) => ({
      type: 'device.rejected' as const,
      deviceId: context.id,
      event: event.type,
      state: stateOf(self),
      reason: params?.reason ?? 'not accepted in this state',
    })),
    recordResetFailure: enqueueActions(({ context, event, enqueue }) => {
      const error = toMachineError('resetDevice', (event as { error?: unknown }).error);
      enqueue.assign({ error });
      enqueue.emit({ type: 'device.resetFailed', deviceId: context.id, error });
    }),
    requestClose: assign({ closeRequested: true }),
    latchContainerFailure: assign({
      containerFailure: ({ event }) =>
        event.type === 'CONTAINER_FAILED'
          ? (event.error ?? { op: 'container', message: `container ${event.containerId} failed` })
          : null,
    }),
    failFromContainer: assign({
      error: ({ context }) => context.containerFailure,
      containerFailure: null,
    }),
    emitFailed: emit(({ context }) => ({
      type: 'device.failed' as const,
      deviceId: context.id,
      error: context.error ?? { op: 'unknown', message: 'failed' },
    })),
  },
}).createMachine({
  id: 'device',
  context: ({ input }) => ({
    id: input.id,
    host: input.host,
    iommufd: input.iommufd,
    backend: null,
    reason: null,
    containerId: null,
    error: null,
    closeRequested: false,
    containerFailure: null,
  }),
  initial: 'created',
  // Reached only when the current state has no handler: report, never drop.
  on: { '*': { actions: { type: 'reject', params: { reason: 'not accepted in this state' } } } },
  states: {
    created: {
      on: {
        OPEN: 'opening',
        // Nothing is open yet, so there is nothing to close.
        CLOSE: 'closed',
      },
    },
    opening: {
      invoke: {
        id: 'openDevice',
        src: 'openDevice',
        input: opInput,
        onDone: {
          target: 'bound',
          actions: [
            assign({
              backend: ({ event }) => event.output.backend,
              reason: ({ event }) => event.output.reason,
            }),
            emit(({ context, event }) => ({
              type: 'backend.selected' as const,
              deviceId: context.id,
              backend: event.output.backend,
              reason: event.output.reason,
            })),
          ],
        },
        onError: {
          target: 'failed',
          actions: assign({ error: ({ event }) => toMachineError('openDevice', event.error) }),
        },
      },
      on: {
        CLOSE: { actions: 'requestClose' },
      },
    },
    bound: {
      always: { guard: 'closeRequested', target: 'closing' },
      on: {
        ATTACH: {
          target: 'attaching',
          actions: assign({ containerId: ({ event }) => event.containerId ?? null }),
        },
        RESET: 'resetting',
        CLOSE: 'closing',
        DETACH: { actions: { type: 'reject', params: { reason: 'not attached' } } },
      },
    },
    attaching: {
      invoke: {
        id: 'attachDevice',
        src: 'attachDevice',
        input: opInput,
        onDone: {
          target: 'attached',
          actions: assign({ containerId: ({ event }) => event.output.containerId }),
        },
        // QEMU: a failed attach fails realize.
        onError: {
          target: 'failed',
          actions: assign({
            error: ({ event }) => toMachineError('attachDevice', event.error),
            containerId: null,
          }),
        },
      },
      on: {
        CLOSE: { actions: 'requestClose' },
        // The container being joined failed: act on it once the attach settles.
        CONTAINER_FAILED: { actions: 'latchContainerFailure' },
      },
    },
    attached: {
      always: [
        { guard: 'containerFailed', target: 'failed', actions: 'failFromContainer' },
        { guard: 'closeRequested', target: 'detaching' },
      ],
      on: {
        RESET: 'resetting',
        DETACH: 'detaching',
        // Detach first: closing an attached device would leave the container listing it.
        CLOSE: { target: 'detaching', actions: 'requestClose' },
        CONTAINER_FAILED: [
          {
            guard: 'isOwnContainer',
            target: 'failed',
            actions: ['latchContainerFailure', 'failFromContainer'],
          },
          { actions: { type: 'reject', params: { reason: 'not this device’s container' } } },
        ],
        // B5 #17: a second attach is illegal, not a re-attach.
        ATTACH: { actions: { type: 'reject', params: { reason: 'already attached' } } },
      },
    },
    resetting: {
      invoke: {
        id: 'resetDevice',
        src: 'resetDevice',
        input: opInput,
        onDone: [{ guard: 'isAttached', target: 'attached' }, { target: 'bound' }],
        // QEMU reports a failed reset and carries on; so does the device.
        onError: [
          { guard: 'isAttached', target: 'attached', actions: 'recordResetFailure' },
          { target: 'bound', actions: 'recordResetFailure' },
        ],
      },
      on: {
        CLOSE: { actions: 'requestClose' },
        CONTAINER_FAILED: [
          { guard: 'isOwnContainer', actions: 'latchContainerFailure' },
          { actions: { type: 'reject', params: { reason: 'not this device’s container' } } },
        ],
      },
    },
    detaching: {
      invoke: {
        id: 'detachDevice',
        src: 'detachDevice',
        input: opInput,
        // A container failure during the detach no longer concerns this device.
        onDone: { target: 'bound', actions: assign({ containerId: null, containerFailure: null }) },
        onError: {
          target: 'failed',
          actions: assign({ error: ({ event }) => toMachineError('detachDevice', event.error) }),
        },
      },
      on: {
        CLOSE: { actions: 'requestClose' },
        // The device is leaving anyway; the container's failure is recorded, not acted on.
        CONTAINER_FAILED: { actions: 'latchContainerFailure' },
      },
    },
    failed: {
      entry: 'emitFailed',
      always: { guard: 'closeRequested', target: 'closing' },
      on: {
        CLOSE: 'closing',
        // Already failed: the container's failure changes nothing.
        CONTAINER_FAILED: { actions: { type: 'reject', params: { reason: 'already failed' } } },
      },
    },
    closing: {
      invoke: {
        id: 'closeDevice',
        src: 'closeDevice',
        input: opInput,
        onDone: { target: 'closed', actions: assign({ containerId: null }) },
        // Nothing more can be done for the device: record and finish.
        onError: {
          target: 'closed',
          actions: [
            assign({ error: ({ event }) => toMachineError('closeDevice', event.error), containerId: null }),
            emit(({ context, event }) => ({
              type: 'device.closeFailed' as const,
              deviceId: context.id,
              error: toMachineError('closeDevice', event.error),
            })),
          ],
        },
      },
    },
    closed: { type: 'final' },
  },
  output: ({ context }) => ({ id: context.id, error: context.error }),
});
