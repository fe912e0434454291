/**
 * MemoryListener transactions as RxJS: begin, region_add/region_del, commit become one
 * committed transaction (the ordered op list the planner consumes). A scan-based state
 * machine, because buffer(commit$) leaks stray ops into the next transaction and
 * bufferToggle drops them silently (ecosystem notes §4).
 */
import { Observable, Subject, defer, endWith, filter, map, scan, type OperatorFunction } from 'rxjs';

/** A MemoryListener callback as an event. */
export type ListenerEvent<R> =
  | { readonly type: 'begin' }
  | { readonly type: 'add'; readonly region: R }
  | { readonly type: 'del'; readonly region: R }
  | { readonly type: 'commit' };

/** One region_add or region_del of a transaction. */
export interface TransactionOp<R> {
  readonly type: 'add' | 'del';
  readonly region: R;
}

/** A committed transaction: its ops in listener order. */
export interface Transaction<R> {
  /** 0, 1, 2, … over the stream's transactions. */
  readonly seq: number;
  readonly ops: readonly TransactionOp<R>[];
  /** A stray op outside begin/commit, made a one-op transaction of its own. */
  readonly implicit: boolean;
}

/** A protocol violation in the listener stream; the stream goes on. */
export interface TransactionError {
  /**
   * nested-begin: begin while a transaction is open (the open one continues);
   * commit-without-begin: a commit with nothing open (ignored);
   * unterminated: the stream completed inside a transaction (its ops are not committed).
   */
  readonly reason: 'nested-begin' | 'commit-without-begin' | 'unterminated';
  /** Index of the offending event in the stream (the completion counts as one past the last). */
  readonly at: number;
}

/** What transactions() emits: a committed transaction, or a protocol error. */
export type TransactionEvent<R> =
  | { readonly type: 'transaction'; readonly transaction: Transaction<R> }
  | { readonly type: 'error'; readonly error: TransactionError };

interface State<R> {
  open: boolean;
  ops: TransactionOp<R>[];
  seq: number;
  index: number;
  out: TransactionEvent<R> | null;
}

const END = { type: 'end' } as const;

/**
 * Turns listener events into committed transactions. Empty begin/commit pairs emit
 * nothing; protocol errors are emitted as events, never dropped silently or thrown (a
 * broken producer must not tear the engine's stream down).
 */
export function transactions<R>(): OperatorFunction<ListenerEvent<R>, TransactionEvent<R>> {
  // defer: each subscription gets its own (mutable) state.
  return (source) =>
    defer(() =>
      source.pipe(
        endWith(END),
        scan(
          (s: State<R>, e: ListenerEvent<R> | typeof END): State<R> => {
            const at = s.index;
            s.index++;
            s.out = null;
            switch (e.type) {
              case 'begin':
                if (s.open) s.out = { type: 'error', error: { reason: 'nested-begin', at } };
                s.open = true;
                break;
              case 'add':
              case 'del':
                if (s.open) {
                  s.ops.push({ type: e.type, region: e.region });
                } else {
                  const transaction = {
                    seq: s.seq++,
                    ops: [{ type: e.type, region: e.region }],
                    implicit: true,
                  };
                  s.out = { type: 'transaction', transaction };
                }
                break;
              case 'commit':
                if (!s.open) {
                  s.out = { type: 'error', error: { reason: 'commit-without-begin', at } };
                } else {
                  if (s.ops.length) {
                    s.out = {
                      type: 'transaction',
                      transaction: { seq: s.seq++, ops: s.ops, implicit: false },
                    };
                  }
                  s.open = false;
                  s.ops = [];
                }
                break;
              case 'end':
                if (s.open) s.out = { type: 'error', error: { reason: 'unterminated', at } };
                break;
            }
            return s;
          },
          { open: false, ops: [], seq: 0, index: 0, out: null } as State<R>,
        ),
        filter((s) => s.out !== null),
        map((s) => s.out!),
      ),
    );
}

/**
 * The push side of the listener for callers without RxJS: call begin(), regionAdd(),
 * regionDel(), commit() as QEMU's memory core calls a MemoryListener, and receive
 * committed transactions through subscribe() or the `transactions$` observable.
 */
export class ListenerTransactions<R> {
  private readonly events = new Subject<ListenerEvent<R>>();
  /** Committed transactions and protocol errors, in order (hot: subscribe before pushing). */
  readonly transactions$: Observable<TransactionEvent<R>>;
  private readonly sink = new Subject<TransactionEvent<R>>();

  constructor() {
    this.transactions$ = this.sink.asObservable();
    // One state machine for all subscribers: the scan state lives in this subscription.
    this.events.pipe(transactions<R>()).subscribe(this.sink);
  }

  /** MemoryListener.begin */
  begin(): void {
    this.events.next({ type: 'begin' });
  }
  /** MemoryListener.region_add */
  regionAdd(region: R): void {
    this.events.next({ type: 'add', region });
  }
  /** MemoryListener.region_del */
  regionDel(region: R): void {
    this.events.next({ type: 'del', region });
  }
  /** MemoryListener.commit */
  commit(): void {
    this.events.next({ type: 'commit' });
  }
  /** Ends the stream (an open transaction is reported as unterminated). */
  complete(): void {
    this.events.complete();
  }

  /** Calls `onTransaction` for each committed transaction and `onError` for protocol errors; returns an unsubscribe function. */
  subscribe(
    onTransaction: (t: Transaction<R>) => void,
    onError: (e: TransactionError) => void = () => {},
  ): () => void {
    const sub = this.transactions$.subscribe((ev) =>
      ev.type === 'transaction' ? onTransaction(ev.transaction) : onError(ev.error),
    );
    return () => sub.unsubscribe();
  }
}
