import { expect } from 'chai';
import { createActor, type AnyEventObject } from 'xstate';
import {
  addressSpaceMachine,
  type AddressSpaceContext,
  type AddressSpaceEmitted,
  type AddressSpaceInput,
} from '../src/machines/index.js';
import { controlledActors, graphSuite } from './machines-kit.js';

const ACTORS = ['commitTransaction', 'shutdownAddressSpace'] as const;
const input: AddressSpaceInput = { id: 'as0', name: 'memory' };
const stats = { ms: 1.5, mapped: 4, unmapped: 1, containers: 1 };

const events: AnyEventObject[] = [
  { type: 'COMMIT', txnId: 't1', ops: 5 },
  { type: 'DEVICE_ADDED', deviceId: 'd1' },
  { type: 'DEVICE_REMOVED', deviceId: 'd1' },
  { type: 'CONTAINER_ADDED', containerId: 'c1' },
  { type: 'CONTAINER_REMOVED', containerId: 'c1' },
  { type: 'SHUTDOWN' },
  { type: 'xstate.done.actor.commitTransaction', output: stats },
  { type: 'xstate.error.actor.commitTransaction', error: { message: 'misaligned section' } },
  { type: 'xstate.done.actor.shutdownAddressSpace' },
  { type: 'xstate.error.actor.shutdownAddressSpace', error: { message: 'EBUSY' } },
];

describe('addressSpaceMachine: generated paths', function () {
  graphSuite(addressSpaceMachine, ACTORS, input, events, (c: AddressSpaceContext) => ({
    containers: c.containers,
    devices: c.devices,
    current: c.current,
    queue: c.queue.length > 0,
  }));
});

function harness() {
  const fakes = controlledActors(ACTORS);
  const actor = createActor(addressSpaceMachine.provide({ actors: fakes.actors }), { input });
  const emitted: AddressSpaceEmitted[] = [];
  actor.on('*', (e) => emitted.push(e));
  actor.start();
  const commit = (txnId: string) => actor.send({ type: 'COMMIT', txnId, ops: 2 });
  const ok = (name: (typeof ACTORS)[number], output?: unknown) =>
    fakes.deliver({ type: `xstate.done.actor.${name}`, output });
  const fail = (name: (typeof ACTORS)[number], message: string) =>
    fakes.deliver({ type: `xstate.error.actor.${name}`, error: new Error(message) });
  return { actor, emitted, commit, ok, fail, ctx: () => actor.getSnapshot().context };
}

describe('addressSpaceMachine: rules', function () {
  it('commits one transaction per COMMIT and reports its time', async function () {
    const h = harness();
    h.actor.send({ type: 'CONTAINER_ADDED', containerId: 'c1' });
    h.commit('t1');
    expect(h.actor.getSnapshot().value).to.deep.equal({ active: 'committing' });
    await h.ok('commitTransaction', stats);
    expect(h.actor.getSnapshot().value).to.deep.equal({ active: 'idle' });
    expect(h.emitted).to.deep.equal([
      { type: 'txn.committed', addressSpaceId: 'as0', txnId: 't1', ms: 1.5, result: stats },
    ]);
    expect(h.ctx()).to.deep.include({ lastTxnId: 't1', txns: { committed: 1, failed: 0, violations: 0 } });
  });

  it('reports a failed commit and stays active', async function () {
    const h = harness();
    h.commit('t1');
    await h.fail('commitTransaction', 'misaligned section');
    expect(h.actor.getSnapshot().value).to.deep.equal({ active: 'idle' });
    expect(h.emitted.at(-1)).to.deep.include({ type: 'txn.failed', txnId: 't1' });
    expect(h.ctx()).to.deep.include({
      txns: { committed: 0, failed: 1, violations: 0 },
      lastError: { op: 'commitTransaction', message: 'misaligned section' },
    });
  });

  it('counts a COMMIT during a commit as a protocol violation and still runs it, in order', async function () {
    const h = harness();
    h.commit('t1');
    h.commit('t2');
    h.commit('t3');
    expect(h.emitted.map((e) => e.type === 'protocol.violation' && [e.txnId, e.inFlight])).to.deep.equal([
      ['t2', 't1'],
      ['t3', 't1'],
    ]);
    expect(h.ctx().txns.violations).to.equal(2);
    await h.ok('commitTransaction', stats);
    expect(h.ctx().current?.txnId).to.equal('t2');
    await h.ok('commitTransaction', stats);
    await h.ok('commitTransaction', stats);
    expect(h.emitted.filter((e) => e.type === 'txn.committed').map((e) => e.txnId)).to.deep.equal([
      't1',
      't2',
      't3',
    ]);
    expect(h.ctx()).to.deep.include({ queue: [], txns: { committed: 3, failed: 0, violations: 2 } });
  });

  it('shuts down after the commit in flight; later COMMITs are rejected, not dropped', async function () {
    const h = harness();
    h.commit('t1');
    h.actor.send({ type: 'SHUTDOWN' });
    h.commit('t2');
    await h.ok('commitTransaction', stats);
    expect(h.actor.getSnapshot().value).to.equal('shuttingDown');
    expect(h.emitted.at(-1)).to.deep.include({
      type: 'addressSpace.rejected',
      event: 'COMMIT',
      reason: 'deferred behind SHUTDOWN',
    });
    h.commit('t3');
    expect(h.emitted.at(-1)).to.deep.include({
      type: 'addressSpace.rejected',
      event: 'COMMIT',
      state: 'shuttingDown',
    });
    await h.fail('shutdownAddressSpace', 'EBUSY');
    expect(h.actor.getSnapshot().status).to.equal('done');
    expect(h.actor.getSnapshot().output).to.deep.equal({
      id: 'as0',
      txns: { committed: 1, failed: 0, violations: 1 },
      lastError: { op: 'shutdownAddressSpace', message: 'EBUSY' },
    });
  });

  it('tracks devices and containers, reporting duplicates and unknowns', function () {
    const h = harness();
    h.actor.send({ type: 'DEVICE_ADDED', deviceId: 'd1' });
    h.actor.send({ type: 'DEVICE_ADDED', deviceId: 'd1' });
    h.actor.send({ type: 'CONTAINER_ADDED', containerId: 'c1' });
    h.actor.send({ type: 'CONTAINER_REMOVED', containerId: 'c9' });
    expect(h.ctx()).to.deep.include({ devices: ['d1'], containers: ['c1'] });
    expect(h.emitted.map((e) => e.type === 'addressSpace.rejected' && e.reason)).to.deep.equal([
      'device already added',
      'unknown container',
    ]);
  });
});
