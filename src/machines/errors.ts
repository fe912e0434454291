/**
 * Errors as the machines keep them: plain data, so a snapshot stays serializable
 * (getPersistedSnapshot, the inspector, structured clone to a worker) and two
 * snapshots compare with deep equality.
 */

/** An error recorded in a machine's context. */
export interface MachineError {
  /** The machine operation that failed: the invoked actor's name (openDevice, applyBatch, ...). */
  readonly op: string;
  readonly message: string;
  /** The errno name (EEXIST, ENOMEM, ...) when the cause was a failed syscall. */
  readonly code?: string;
  /** The errno number when the cause was a failed syscall. */
  readonly errno?: number;
  /** The syscall or ioctl that failed (IOMMU_IOAS_MAP, ...), when known. */
  readonly syscall?: string;
}

/**
 * Turns whatever an actor rejected with into a {@link MachineError}. Reads the fields of a
 * `SyscallError` (op, code, errno) by shape, so errors rebuilt from JSON work too.
 */
export function toMachineError(op: string, err: unknown): MachineError {
  if (typeof err !== 'object' || err === null) return { op, message: String(err) };
  const e = err as { message?: unknown; code?: unknown; errno?: unknown; op?: unknown };
  const out: { -readonly [K in keyof MachineError]: MachineError[K] } = {
    op,
    message: typeof e.message === 'string' ? e.message : String(err),
  };
  if (typeof e.code === 'string') out.code = e.code;
  if (typeof e.errno === 'number') out.errno = e.errno;
  if (typeof e.op === 'string') out.syscall = e.op;
  return out;
}

/** An event a machine could not take in its current state, as reported in a `*.rejected` emit. */
export interface Rejection {
  /** The event type (ATTACH, APPLY, ...). */
  readonly event: string;
  /** The state value when the event arrived. */
  readonly state: string;
  readonly reason: string;
}

/**
 * The placeholder behind every effect: machines are pure, the actor layer supplies the real
 * implementation with `machine.provide({ actors: { name: fromPromise(...) } })`.
 */
export function notProvided(name: string): never {
  throw new Error(`${name}: not provided (supply it with machine.provide({ actors }))`);
}

/**
 * The state value of the actor taking an event, for rejection reports. During a transition
 * `self.getSnapshot()` is still the state the event arrived in. The graph helpers run
 * transitions with a stub actor that has no value: '?' then.
 */
export function stateOf(self: { getSnapshot(): unknown }): string {
  const value = (self.getSnapshot() as { value?: unknown } | undefined)?.value;
  if (value === undefined) return '?';
  return typeof value === 'string' ? value : JSON.stringify(value);
}
