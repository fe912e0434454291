import { expect } from 'chai';
import { createActor, fromPromise, setup, type AnyEventObject } from 'xstate';
import {
  deviceMachine,
  type DeviceContext,
  type DeviceEmitted,
  type DeviceInput,
} from '../src/machines/index.js';
import { graphSuite, settle, unreachedStates } from './machines-kit.js';

const ACTORS = ['openDevice', 'attachDevice', 'resetDevice', 'detachDevice', 'closeDevice'] as const;
const input: DeviceInput = { id: 'dev0', host: '0000:00:04.0', iommufd: 'auto' };
const boom = { message: 'boom', code: 'EIO', errno: 5, op: 'VFIO_DEVICE_BIND_IOMMUFD' };

const events: AnyEventObject[] = [
  { type: 'OPEN' },
  { type: 'ATTACH', containerId: 'c1' },
  { type: 'RESET' },
  { type: 'DETACH' },
  { type: 'CLOSE' },
  { type: 'CONTAINER_FAILED', containerId: 'c1', error: { op: 'applyBatch', message: 'EFAULT' } },
  ...ACTORS.flatMap((name) => [
    {
      type: `xstate.done.actor.${name}`,
      output:
        name === 'openDevice'
          ? { backend: 'iommufd', reason: 'iommufd=auto: /dev/iommu usable' }
          : name === 'attachDevice'
            ? { containerId: 'c1' }
            : undefined,
    },
    { type: `xstate.error.actor.${name}`, error: boom },
  ]),
];

describe('deviceMachine: generated paths', function () {
  graphSuite(deviceMachine, ACTORS, input, events, (c: DeviceContext) => c);
});

/** A device actor whose effects the test settles by hand. */
function harness(over: Partial<Record<(typeof ACTORS)[number], (i: unknown) => Promise<unknown>>> = {}) {
  const ok = async () => undefined;
  const actors = {
    openDevice: fromPromise(over.openDevice ?? (async () => ({ backend: 'legacy', reason: 'iommufd=off' }))),
    attachDevice: fromPromise(over.attachDevice ?? (async () => ({ containerId: 'c1' }))),
    resetDevice: fromPromise(over.resetDevice ?? ok),
    detachDevice: fromPromise(over.detachDevice ?? ok),
    closeDevice: fromPromise(over.closeDevice ?? ok),
  };
  const actor = createActor(deviceMachine.provide({ actors: actors as never }), { input });
  const emitted: DeviceEmitted[] = [];
  actor.on('*', (e) => emitted.push(e));
  actor.start();
  return { actor, emitted };
}

describe('deviceMachine: rules', function () {
  it('has placeholder effects that say they are not provided', async function () {
    const actor = createActor(deviceMachine, { input }).start();
    actor.send({ type: 'OPEN' });
    await settle();
    expect(actor.getSnapshot().value).to.equal('failed');
    expect(actor.getSnapshot().context.error?.message).to.match(/openDevice: not provided/);
  });

  it('reports the backend chosen, and the reason', async function () {
    const { actor, emitted } = harness();
    actor.send({ type: 'OPEN' });
    await settle();
    expect(actor.getSnapshot().context).to.include({ backend: 'legacy', reason: 'iommufd=off' });
    expect(emitted).to.deep.equal([
      { type: 'backend.selected', deviceId: 'dev0', backend: 'legacy', reason: 'iommufd=off' },
    ]);
  });

  it('fails on a failed attach with a plain, serializable error, then closes', async function () {
    const { actor, emitted } = harness({
      attachDevice: async () => {
        throw Object.assign(new Error('IOMMU_HWPT_ALLOC failed: EINVAL'), { code: 'EINVAL', errno: 22 });
      },
    });
    actor.send({ type: 'OPEN' });
    await settle();
    actor.send({ type: 'ATTACH' });
    await settle();
    const snap = actor.getSnapshot();
    expect(snap.value).to.equal('failed');
    const error = {
      op: 'attachDevice',
      message: 'IOMMU_HWPT_ALLOC failed: EINVAL',
      code: 'EINVAL',
      errno: 22,
    };
    expect(snap.context.error).to.deep.equal(error);
    expect(JSON.parse(JSON.stringify(snap.context.error))).to.deep.equal(error);
    expect(emitted.at(-1)).to.deep.equal({ type: 'device.failed', deviceId: 'dev0', error });
    actor.send({ type: 'CLOSE' });
    await settle();
    expect(actor.getSnapshot().status).to.equal('done');
    expect(actor.getSnapshot().output).to.deep.equal({ id: 'dev0', error });
  });

  it('ends closed even when closeDevice fails, recording the error', async function () {
    const { actor, emitted } = harness({ closeDevice: async () => Promise.reject(new Error('EBADF')) });
    actor.send({ type: 'OPEN' });
    await settle();
    actor.send({ type: 'CLOSE' });
    await settle();
    expect(actor.getSnapshot().value).to.equal('closed');
    expect(actor.getSnapshot().context.error).to.deep.equal({ op: 'closeDevice', message: 'EBADF' });
    expect(emitted.map((e) => e.type)).to.deep.equal(['backend.selected', 'device.closeFailed']);
  });

  it('latches CLOSE during an attach: attach completes, then detach, then close', async function () {
    const calls: string[] = [];
    const track = (name: string, out?: unknown) => async () => (calls.push(name), out);
    const { actor } = harness({
      attachDevice: track('attach', { containerId: 'c7' }),
      detachDevice: track('detach'),
      closeDevice: track('close'),
    });
    actor.send({ type: 'OPEN' });
    await settle();
    actor.send({ type: 'ATTACH', containerId: 'c7' });
    actor.send({ type: 'CLOSE' });
    expect(actor.getSnapshot().value).to.equal('attaching');
    await settle();
    await settle();
    expect(calls).to.deep.equal(['attach', 'detach', 'close']);
    expect(actor.getSnapshot().value).to.equal('closed');
  });

  it('fails when its own container fails, and ignores (with a report) another one', async function () {
    const { actor, emitted } = harness();
    actor.send({ type: 'OPEN' });
    await settle();
    actor.send({ type: 'ATTACH' });
    await settle();
    actor.send({ type: 'CONTAINER_FAILED', containerId: 'c9' });
    expect(actor.getSnapshot().value).to.equal('attached');
    expect(emitted.at(-1)).to.deep.include({
      type: 'device.rejected',
      event: 'CONTAINER_FAILED',
      state: 'attached',
    });
    actor.send({
      type: 'CONTAINER_FAILED',
      containerId: 'c1',
      error: { op: 'applyBatch', message: 'ENOMEM' },
    });
    expect(actor.getSnapshot().value).to.equal('failed');
    expect(actor.getSnapshot().context).to.deep.include({
      containerId: 'c1', // closeDevice still has to release it
      error: { op: 'applyBatch', message: 'ENOMEM' },
    });
  });

  it('keeps a device whose reset failed where it was, reporting the failure', async function () {
    const { actor, emitted } = harness({ resetDevice: async () => Promise.reject(new Error('no reset')) });
    actor.send({ type: 'OPEN' });
    await settle();
    actor.send({ type: 'ATTACH' });
    await settle();
    actor.send({ type: 'RESET' });
    await settle();
    expect(actor.getSnapshot().value).to.equal('attached');
    expect(emitted.at(-1)).to.deep.include({ type: 'device.resetFailed' });
  });

  it('never drops an event silently: a second ATTACH or an early DETACH is reported', async function () {
    const { actor, emitted } = harness();
    actor.send({ type: 'DETACH' });
    expect(emitted.at(-1)).to.deep.equal({
      type: 'device.rejected',
      deviceId: 'dev0',
      event: 'DETACH',
      state: 'created',
      reason: 'not accepted in this state',
    });
    actor.send({ type: 'OPEN' });
    await settle();
    actor.send({ type: 'ATTACH' });
    await settle();
    actor.send({ type: 'ATTACH' });
    expect(emitted.at(-1)).to.deep.include({
      event: 'ATTACH',
      state: 'attached',
      reason: 'already attached',
    });
    expect(actor.getSnapshot().value).to.equal('attached');
  });
});

describe('machines kit: the coverage check', function () {
  it('names a state no path reaches', function () {
    const orphan = setup({}).createMachine({
      initial: 'a',
      states: { a: { on: { GO: 'b' } }, b: {}, orphan: {} },
    });
    expect(unreachedStates(orphan, undefined, [{ type: 'GO' }], (c) => c)).to.deep.equal(['orphan']);
  });
});
