/**
 * The actor inspector: every actor the engine creates (address spaces, containers, devices)
 * is started with createEngine's `inspector`, xstate's own inspection API, so any xstate
 * inspector works (Stately's @statelyai/inspect, or an Observer of your own).
 * {@link traceInspector} is the built-in front end: one line per state change
 * (`vfio-engine run --inspect`).
 */
import type { InspectionEvent, Observer } from 'xstate';

/** What createActor's `inspect` takes: an observer of xstate inspection events, or a function. */
export type ActorInspector = Observer<InspectionEvent> | ((e: InspectionEvent) => void);

/**
 * One inspector that calls every inspector in `list` (undefined ones skipped); a throwing
 * inspector is ignored, so it can neither stop the others nor break an actor.
 */
export function fanOutInspector(list: (ActorInspector | undefined)[]): ActorInspector | undefined {
  const fns = list
    .filter((x): x is ActorInspector => x !== undefined)
    .map((x) => (typeof x === 'function' ? x : (e: InspectionEvent) => x.next?.(e)));
  if (fns.length === 0) return undefined;
  return (e) => {
    for (const f of fns) {
      try {
        f(e);
      } catch {
        // an inspector must never break the engine
      }
    }
  };
}

/** A state value as one string: 'idle', 'active.ready', 'a.(b|c)' for parallel states. */
export function stateValueText(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object') {
    const parts = Object.entries(v).map(([k, sub]) => {
      const s = stateValueText(sub);
      return s ? `${k}.${s}` : k;
    });
    return parts.length === 1 ? parts[0]! : `(${parts.join('|')})`;
  }
  return '';
}

/**
 * An inspector that writes one line per state change of a machine actor:
 * `+12.345 ms  container0  initializing -> ready  (REPLAYED)`. Invoked promise actors and
 * snapshots that do not change the state value are left out; an actor that stops says so.
 */
export function traceInspector(
  out: (line: string) => void,
  t0 = performance.now(),
): (e: InspectionEvent) => void {
  const last = new Map<string, string>();
  return (e) => {
    if (e.type !== '@xstate.snapshot') return;
    const snap = e.snapshot as { value?: unknown; status?: string };
    if (!('value' in snap)) return; // a promise or callback actor: its machine reports the outcome
    const ref = e.actorRef as { id?: string; sessionId: string };
    const id = ref.id ?? ref.sessionId;
    const value =
      stateValueText(snap.value) + (snap.status && snap.status !== 'active' ? ` [${snap.status}]` : '');
    const before = last.get(ref.sessionId);
    if (before === value) return;
    last.set(ref.sessionId, value);
    const ms = (performance.now() - t0).toFixed(3).padStart(9);
    out(`+${ms} ms  ${id}  ${before === undefined ? '' : `${before} -> `}${value}  (${e.event.type})`);
  };
}
