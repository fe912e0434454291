import { expect } from 'chai';
import { createActor, type AnyEventObject } from 'xstate';
import {
  containerMachine,
  type ContainerContext,
  type ContainerEmitted,
  type ContainerInput,
} from '../src/machines/index.js';
import { controlledActors, graphSuite } from './machines-kit.js';

const ACTORS = [
  'setupContainer',
  'attachToContainer',
  'detachFromContainer',
  'applyBatch',
  'teardownContainer',
] as const;
const input: ContainerInput = { id: 'c1', addressSpaceId: 'as0', backend: 'iommufd' };
const efault = { message: 'IOMMU_IOAS_MAP failed: EFAULT', code: 'EFAULT', errno: 14, op: 'IOMMU_IOAS_MAP' };
const ebadf = { message: 'dma_map: EBADF', code: 'EBADF', errno: 9, op: 'dma_map' };
const applied = { applied: 3, mapped: 3, unmapped: 0 };

const events: AnyEventObject[] = [
  { type: 'ATTACH', deviceId: 'd1' },
  { type: 'ATTACH', deviceId: 'd2' },
  { type: 'DETACH', deviceId: 'd1' },
  { type: 'DETACH', deviceId: 'd2' },
  { type: 'APPLY', batchId: 'b1', ops: 3 },
  { type: 'TEARDOWN' },
  ...ACTORS.flatMap((name) => [
    { type: `xstate.done.actor.${name}`, output: name === 'applyBatch' ? applied : undefined },
    { type: `xstate.error.actor.${name}`, error: efault },
  ]),
  { type: 'xstate.error.actor.applyBatch', error: ebadf },
];

/** How many of `list` have type `type`. */
const count = (list: readonly AnyEventObject[], type: string) => list.filter((e) => e.type === type).length;

describe('containerMachine: generated paths', function () {
  graphSuite(
    containerMachine,
    ACTORS,
    input,
    events,
    (c: ContainerContext) => ({
      initialized: c.initialized,
      error: c.error !== null,
      devices: c.devices,
      pendingDevice: c.pendingDevice,
      failed: c.failed,
    }),
    // Every settled attach and detach is told, once, as the actor layer waits on it.
    (steps, emitted) => {
      for (const [op, ok, failed] of [
        ['attachToContainer', 'container.deviceAttached', 'container.deviceAttachFailed'],
        ['detachFromContainer', 'container.deviceDetached', 'container.deviceDetachFailed'],
      ] as const) {
        const path = steps.map((e) => e.type).join(' → ');
        expect(count(emitted, ok), `${ok} on ${path}`).to.equal(count(steps, `xstate.done.actor.${op}`));
        expect(count(emitted, failed), `${failed} on ${path}`).to.equal(
          count(steps, `xstate.error.actor.${op}`),
        );
      }
    },
  );
});

/** A live container actor whose effects the test settles one by one. */
function harness() {
  const fakes = controlledActors(ACTORS);
  const actor = createActor(containerMachine.provide({ actors: fakes.actors }), { input });
  const emitted: ContainerEmitted[] = [];
  actor.on('*', (e) => emitted.push(e));
  actor.start();
  const ok = (name: (typeof ACTORS)[number], output?: unknown) =>
    fakes.deliver({ type: `xstate.done.actor.${name}`, output });
  const fail = (name: (typeof ACTORS)[number], message: string) =>
    fakes.deliver({ type: `xstate.error.actor.${name}`, error: new Error(message) });
  const state = () => actor.getSnapshot().value;
  const ctx = () => actor.getSnapshot().context;
  const types = () => emitted.map((e) => e.type);
  return { actor, emitted, ok, fail, state, ctx, types, fakes };
}

/** setup, then the first device attached: ready, not yet initialized. */
async function attachedUninitialized() {
  const h = harness();
  await h.ok('setupContainer');
  h.actor.send({ type: 'ATTACH', deviceId: 'd1' });
  await h.ok('attachToContainer');
  return h;
}

describe('containerMachine: rules', function () {
  it('becomes initialized when the replay after the first attach is applied', async function () {
    const h = await attachedUninitialized();
    expect(h.ctx().initialized).to.equal(false);
    h.actor.send({ type: 'APPLY', batchId: 'replay', ops: 3 });
    await h.ok('applyBatch', applied);
    expect(h.state()).to.equal('ready');
    expect(h.ctx()).to.deep.include({ initialized: true, mappings: 3, batches: 1, devices: ['d1'] });
    expect(h.types()).to.deep.equal(['container.deviceAttached', 'batch.applied', 'container.initialized']);
  });

  it('keeps the first error while not initialized and fails the attach with it', async function () {
    const h = harness();
    await h.ok('setupContainer');
    // A transaction before any device (iommufd: a domain-less IOAS) fails: kept, not fatal.
    h.actor.send({ type: 'APPLY', batchId: 'early', ops: 1 });
    await h.fail('applyBatch', 'first');
    expect(h.state()).to.equal('ready');
    expect(h.ctx().error).to.deep.equal({ op: 'applyBatch', message: 'first' });
    h.actor.send({ type: 'ATTACH', deviceId: 'd1' });
    await h.ok('attachToContainer');
    h.actor.send({ type: 'APPLY', batchId: 'replay', ops: 3 });
    await h.fail('applyBatch', 'second');
    expect(h.state()).to.equal('failed');
    expect(h.ctx()).to.deep.include({
      initialized: false,
      error: { op: 'applyBatch', message: 'first' },
      lastError: { op: 'applyBatch', message: 'second' },
    });
    expect(h.emitted.at(-1)).to.deep.equal({
      type: 'container.failed',
      containerId: 'c1',
      phase: 'init',
      error: { op: 'applyBatch', message: 'first' },
    });
  });

  it('fails at init when the replay succeeds but an earlier error was kept', async function () {
    const h = harness();
    await h.ok('setupContainer');
    h.actor.send({ type: 'APPLY', batchId: 'early', ops: 1 });
    await h.fail('applyBatch', 'first');
    h.actor.send({ type: 'ATTACH', deviceId: 'd1' });
    await h.ok('attachToContainer');
    h.actor.send({ type: 'APPLY', batchId: 'replay', ops: 3 });
    await h.ok('applyBatch', applied);
    expect(h.state()).to.equal('failed');
    expect(h.emitted.at(-1)).to.deep.include({ type: 'container.failed', phase: 'init' });
  });

  it('tears itself down when the first attach fails (nothing attached)', async function () {
    const h = harness();
    await h.ok('setupContainer');
    h.actor.send({ type: 'ATTACH', deviceId: 'd1' });
    await h.fail('attachToContainer', 'EINVAL');
    expect(h.state()).to.equal('tearingDown');
    expect(h.types()).to.deep.equal(['container.deviceAttachFailed', 'container.failed']);
    await h.ok('teardownContainer');
    expect(h.actor.getSnapshot().status).to.equal('done');
    expect(h.actor.getSnapshot().output).to.deep.include({
      error: { op: 'attachToContainer', message: 'EINVAL' },
    });
  });

  it('keeps an initialized container ready when another device fails to attach', async function () {
    const h = await attachedUninitialized();
    h.actor.send({ type: 'APPLY', batchId: 'replay', ops: 0 });
    await h.ok('applyBatch', { applied: 0, mapped: 0, unmapped: 0 });
    h.actor.send({ type: 'ATTACH', deviceId: 'd2' });
    await h.fail('attachToContainer', 'EINVAL');
    expect(h.state()).to.equal('ready');
    expect(h.ctx()).to.deep.include({ devices: ['d1'], error: null });
    expect(h.emitted.at(-1)).to.deep.include({ type: 'container.deviceAttachFailed', deviceId: 'd2' });
  });

  it('fails on a runtime map failure, surfaces it, and rejects further batches', async function () {
    const h = await attachedUninitialized();
    h.actor.send({ type: 'APPLY', batchId: 'replay', ops: 3 });
    await h.ok('applyBatch', applied);
    h.actor.send({ type: 'APPLY', batchId: 't2', ops: 1 });
    await h.fail('applyBatch', 'ENOMEM');
    expect(h.state()).to.equal('failed');
    const error = { op: 'applyBatch', message: 'ENOMEM' };
    expect(h.emitted.slice(-2)).to.deep.equal([
      { type: 'batch.failed', containerId: 'c1', batchId: 't2', error },
      { type: 'container.failed', containerId: 'c1', phase: 'runtime', error },
    ]);
    h.actor.send({ type: 'APPLY', batchId: 't3', ops: 1 });
    expect(h.emitted.at(-1)).to.deep.include({
      type: 'container.rejected',
      event: 'APPLY',
      batchId: 't3',
      state: 'failed',
      reason: 'container failed',
    });
    // The devices leave; the last one takes the container down.
    h.actor.send({ type: 'DETACH', deviceId: 'd1' });
    await h.ok('detachFromContainer');
    expect(h.emitted.at(-1)).to.deep.equal({
      type: 'container.deviceDetached',
      containerId: 'c1',
      deviceId: 'd1',
    });
    expect(h.state()).to.equal('tearingDown');
    await h.ok('teardownContainer');
    expect(h.state()).to.equal('destroyed');
  });

  it('fails as lost when a batch finds its fd closed (EBADF) after initialization; an attach-time EBADF fails the attach', async function () {
    const h = await attachedUninitialized();
    h.actor.send({ type: 'APPLY', batchId: 'replay', ops: 3 });
    await h.ok('applyBatch', applied);
    h.actor.send({ type: 'APPLY', batchId: 't2', ops: 1 });
    await h.fakes.deliver({ type: 'xstate.error.actor.applyBatch', error: ebadf });
    expect(h.state()).to.equal('failed');
    const error = {
      op: 'applyBatch',
      message: 'dma_map: EBADF',
      code: 'EBADF',
      errno: 9,
      syscall: 'dma_map',
    };
    expect(h.emitted.slice(-2)).to.deep.equal([
      { type: 'batch.failed', containerId: 'c1', batchId: 't2', error },
      { type: 'container.failed', containerId: 'c1', phase: 'lost', error },
    ]);

    const early = await attachedUninitialized();
    early.actor.send({ type: 'APPLY', batchId: 'replay', ops: 3 });
    await early.fakes.deliver({ type: 'xstate.error.actor.applyBatch', error: ebadf });
    expect(early.emitted.at(-1)).to.deep.include({ type: 'container.failed', phase: 'init' });
  });

  it('tears down when the last device detaches, not before', async function () {
    const h = await attachedUninitialized();
    h.actor.send({ type: 'ATTACH', deviceId: 'd2' });
    await h.ok('attachToContainer');
    h.actor.send({ type: 'TEARDOWN' });
    expect(h.emitted.at(-1)).to.deep.include({ type: 'container.rejected', reason: 'devices attached' });
    h.actor.send({ type: 'DETACH', deviceId: 'd1' });
    await h.ok('detachFromContainer');
    expect(h.state()).to.equal('ready');
    h.actor.send({ type: 'DETACH', deviceId: 'd2' });
    await h.ok('detachFromContainer');
    expect(h.state()).to.equal('tearingDown');
    await h.fail('teardownContainer', 'EBUSY');
    expect(h.state()).to.equal('destroyed');
    expect(h.actor.getSnapshot().output).to.deep.include({
      lastError: { op: 'teardownContainer', message: 'EBUSY' },
    });
    expect(
      h.emitted.flatMap((e) =>
        e.type === 'container.deviceDetached' || e.type === 'container.deviceAttached'
          ? [[e.type, e.deviceId]]
          : [],
      ),
    ).to.deep.equal([
      ['container.deviceAttached', 'd1'],
      ['container.deviceAttached', 'd2'],
      ['container.deviceDetached', 'd1'],
      ['container.deviceDetached', 'd2'],
    ]);
  });

  it('defers events that arrive during an operation and runs them in order', async function () {
    const h = harness();
    h.actor.send({ type: 'ATTACH', deviceId: 'd1' }); // during settingUp
    h.actor.send({ type: 'APPLY', batchId: 'replay', ops: 2 });
    h.actor.send({ type: 'ATTACH', deviceId: 'd2' });
    expect(h.ctx().queue.map((e) => e.type)).to.deep.equal(['ATTACH', 'APPLY', 'ATTACH']);
    await h.ok('setupContainer');
    expect(h.state()).to.equal('attaching');
    expect(h.ctx().pendingDevice).to.equal('d1');
    await h.ok('attachToContainer');
    expect(h.state()).to.equal('applying');
    await h.ok('applyBatch', { applied: 2, mapped: 2, unmapped: 0 });
    expect(h.ctx().initialized).to.equal(true);
    expect(h.ctx().pendingDevice).to.equal('d2');
    await h.ok('attachToContainer');
    expect(h.state()).to.equal('ready');
    expect(h.ctx()).to.deep.include({ devices: ['d1', 'd2'], queue: [], mappings: 2 });
  });

  it('rejects, never drops: ATTACH of an attached device, DETACH of an unknown one, anything while tearing down', async function () {
    const h = await attachedUninitialized();
    h.actor.send({ type: 'ATTACH', deviceId: 'd1' });
    h.actor.send({ type: 'DETACH', deviceId: 'zz' });
    expect(
      h.emitted.slice(-2).map((e) => e.type === 'container.rejected' && [e.event, e.reason]),
    ).to.deep.equal([
      ['ATTACH', 'already attached'],
      ['DETACH', 'not attached'],
    ]);
    h.actor.send({ type: 'DETACH', deviceId: 'd1' });
    await h.ok('detachFromContainer');
    h.actor.send({ type: 'APPLY', batchId: 'late', ops: 1 });
    expect(h.emitted.at(-1)).to.deep.include({
      type: 'container.rejected',
      state: 'tearingDown',
      reason: 'tearing down',
    });
  });

  it('fails when a detach fails (the kernel and our view may differ)', async function () {
    const h = await attachedUninitialized();
    h.actor.send({ type: 'DETACH', deviceId: 'd1' });
    await h.fail('detachFromContainer', 'EIO');
    expect(h.state()).to.equal('failed');
    expect(h.ctx().devices).to.deep.equal(['d1']);
    const error = { op: 'detachFromContainer', message: 'EIO' };
    expect(h.emitted.slice(-2)).to.deep.equal([
      { type: 'container.deviceDetachFailed', containerId: 'c1', deviceId: 'd1', error },
      { type: 'container.failed', containerId: 'c1', phase: 'detach', error },
    ]);
    h.actor.send({ type: 'TEARDOWN' });
    expect(h.state()).to.equal('tearingDown');
  });
});
