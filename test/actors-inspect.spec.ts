import { expect } from 'chai';
import { createActor, createMachine, fromPromise } from 'xstate';
import { fanOutInspector, stateValueText, traceInspector } from '../src/actors/inspect.js';

const machine = createMachine({
  id: 'door',
  initial: 'closed',
  states: {
    closed: { on: { OPEN: 'opening', NOOP: {} } },
    opening: { invoke: { src: fromPromise(async () => 1), onDone: 'open' } },
    open: { on: { LOCK: 'locked' } },
    locked: { type: 'final' },
  },
});

describe('actor inspector', function () {
  it('traceInspector: one line per state change, with the event; invoked actors and no-op events left out', async function () {
    const lines: string[] = [];
    const a = createActor(machine, { id: 'door0', inspect: traceInspector((l) => lines.push(l)) });
    a.start();
    a.send({ type: 'NOOP' });
    a.send({ type: 'OPEN' });
    await new Promise((r) => setTimeout(r, 10));
    a.send({ type: 'LOCK' });
    const plain = lines.map((l) => l.replace(/^\+ *[\d.]+ ms {2}/, ''));
    expect(plain).to.deep.equal([
      'door0  closed  (xstate.init)',
      'door0  closed -> opening  (OPEN)',
      'door0  opening -> open  (xstate.done.actor.0.door.opening)',
      'door0  open -> locked [done]  (LOCK)',
    ]);
    for (const l of lines) expect(l).to.match(/^\+ *\d+\.\d{3} ms {2}/);
  });

  it('stateValueText: nested and parallel values', function () {
    expect(stateValueText('idle')).to.equal('idle');
    expect(stateValueText({ active: 'ready' })).to.equal('active.ready');
    expect(stateValueText({ a: 'x', b: { c: 'y' } })).to.equal('(a.x|b.c.y)');
  });

  it('fanOutInspector: every inspector sees every event; a throwing one does not stop the others', function () {
    const seen: string[] = [];
    const f = fanOutInspector([
      undefined,
      () => {
        throw new Error('broken inspector');
      },
      { next: (e) => seen.push(e.type) },
    ])!;
    const a = createActor(machine, { inspect: f });
    a.start();
    a.stop();
    expect(seen).to.include('@xstate.actor');
    expect(seen).to.include('@xstate.snapshot');
    expect(fanOutInspector([undefined])).to.equal(undefined);
  });
});
