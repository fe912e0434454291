// Shared by the machine suites: drive a pure machine along the paths xstate/graph generates,
// with fake actors that resolve or reject exactly as each path says.
import { expect } from 'chai';
import { createActor, fromPromise, type AnyEventObject, type AnyStateMachine, type StateValue } from 'xstate';
import { getShortestPaths, type StatePath } from 'xstate/graph';

/** 'active.idle' for { active: 'idle' }. The machines here have no parallel states. */
export function stateKey(value: StateValue): string {
  if (typeof value === 'string') return value;
  const [key, child] = Object.entries(value)[0]!;
  return child === undefined ? key : `${key}.${stateKey(child as StateValue)}`;
}

interface StateNodeLike {
  key: string;
  states: Record<string, StateNodeLike>;
}

/** Every atomic (leaf) state of a machine, as a dotted key. */
export function atomicStates(machine: AnyStateMachine): string[] {
  const out: string[] = [];
  const walk = (node: StateNodeLike, prefix: string) => {
    for (const child of Object.values(node.states)) {
      const key = prefix ? `${prefix}.${child.key}` : child.key;
      if (Object.keys(child.states).length === 0) out.push(key);
      else walk(child, key);
    }
  };
  walk(machine.root as unknown as StateNodeLike, '');
  return out;
}

const DONE = 'xstate.done.actor.';
const ERROR = 'xstate.error.actor.';

interface Pending {
  resolve(output: unknown): void;
  reject(error: unknown): void;
}

/**
 * Fake actors for `names` that stay pending until the test settles them, one invocation at a
 * time, as the path's done and error events say: chained effects cannot run ahead of the path.
 */
export function controlledActors(names: readonly string[]) {
  const pending = new Map<string, Pending[]>();
  const actors: Record<string, ReturnType<typeof fromPromise<unknown, unknown>>> = {};
  for (const name of names) {
    actors[name] = fromPromise<unknown, unknown>(
      () =>
        new Promise((resolve, reject) =>
          pending.set(name, [...(pending.get(name) ?? []), { resolve, reject }]),
        ),
    );
  }
  const take = (name: string): Pending => {
    const list = pending.get(name) ?? [];
    expect(list.length, `${name} is not in flight`).to.be.greaterThan(0);
    pending.set(name, list.slice(1));
    return list[0]!;
  };
  return {
    actors,
    /** Settles the oldest invocation of the actor a done or error event names. */
    async deliver(event: AnyEventObject): Promise<void> {
      if (event.type.startsWith(DONE)) take(event.type.slice(DONE.length)).resolve(event.output);
      else take(event.type.slice(ERROR.length)).reject(event.error);
      await settle();
    },
  };
}

/** Lets every settled fake deliver its done or error event. */
export const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** How a path reads in a test title: OPEN → xstate.done.actor.openDevice → ... */
export function describePath(path: StatePath<never, AnyEventObject>): string {
  return path.steps
    .slice(1)
    .map((s) => s.event.type.replace(DONE, 'done:').replace(ERROR, 'error:'))
    .join(' → ');
}

/**
 * Runs one generated path on a live actor of `machine` with controlled fakes, checking after
 * every step that the live actor is where the graph says (state and projected context).
 * Returns the events the actor emitted.
 */
export async function runPath(
  machine: AnyStateMachine,
  actorNames: readonly string[],
  input: unknown,
  path: StatePath<never, AnyEventObject>,
  project: (context: never) => unknown = (c) => c,
): Promise<AnyEventObject[]> {
  const fakes = controlledActors(actorNames);
  const actor = createActor(machine.provide({ actors: fakes.actors }), { input });
  const emitted: AnyEventObject[] = [];
  actor.on('*', (e: AnyEventObject) => emitted.push(e));
  actor.start();
  try {
    for (const [i, step] of path.steps.entries()) {
      const { event } = step;
      if (event.type.startsWith(DONE) || event.type.startsWith(ERROR)) await fakes.deliver(event);
      else if (i > 0) actor.send(event);
      const snap = actor.getSnapshot();
      const where = `step ${i} (${event.type})`;
      expect(stateKey(snap.value), where).to.equal(stateKey((step.state as { value: StateValue }).value));
      // Only the projected context: the graph keeps one snapshot per serialized state, so
      // unprojected bookkeeping (counters, queues) may come from another path to it.
      expect(project(snap.context as never), where).to.deep.equal(
        project((step.state as { context: never }).context),
      );
    }
  } finally {
    actor.stop();
  }
  return emitted;
}

/** Shortest paths with a state serialization that ignores unbounded bookkeeping. */
export function shortestPaths(
  machine: AnyStateMachine,
  input: unknown,
  events: readonly AnyEventObject[],
  project: (context: never) => unknown,
): StatePath<never, AnyEventObject>[] {
  return getShortestPaths(machine, {
    input,
    events: events as never,
    serializeState: (s) => {
      const snap = s as unknown as { value: StateValue; context: never };
      return JSON.stringify([stateKey(snap.value), project(snap.context)]);
    },
    limit: 100_000,
  }) as unknown as StatePath<never, AnyEventObject>[];
}

/** Atomic states no generated path ends in. */
export function unreachedStates(
  machine: AnyStateMachine,
  input: unknown,
  events: readonly AnyEventObject[],
  project: (context: never) => unknown,
): string[] {
  const reached = new Set(
    shortestPaths(machine, input, events, project).map((p) =>
      stateKey((p.state as { value: StateValue }).value),
    ),
  );
  return atomicStates(machine).filter((s) => !reached.has(s));
}

/** A rule every generated path must keep: the path's events and what the live actor emitted. */
export type PathInvariant = (steps: readonly AnyEventObject[], emitted: readonly AnyEventObject[]) => void;

/**
 * The generated-path suite every machine gets: one test per atomic state (its shortest path,
 * run live), a test that every state is reached, and a test running every generated path live
 * (checking `invariant` on each, when given).
 */
export function graphSuite(
  machine: AnyStateMachine,
  actorNames: readonly string[],
  input: unknown,
  events: readonly AnyEventObject[],
  project: (context: never) => unknown,
  invariant?: PathInvariant,
): void {
  const paths = shortestPaths(machine, input, events, project);
  const states = atomicStates(machine);
  const endOf = (p: StatePath<never, AnyEventObject>) => stateKey((p.state as { value: StateValue }).value);

  it('reaches every state on some generated path', function () {
    expect(unreachedStates(machine, input, events, project), 'unreachable states').to.deep.equal([]);
  });

  for (const state of states) {
    const best = paths.filter((p) => endOf(p) === state).sort((a, b) => a.steps.length - b.steps.length)[0];
    if (best === undefined) continue; // reported by the test above
    it(`reaches ${state}: ${describePath(best) || '(initial)'}`, async function () {
      await runPath(machine, actorNames, input, best, project);
    });
  }

  it(`follows all ${paths.length} generated paths on a live actor`, async function () {
    for (const p of paths) {
      const emitted = await runPath(machine, actorNames, input, p, project);
      invariant?.(
        p.steps.slice(1).map((s) => s.event),
        emitted,
      );
    }
  });
}
