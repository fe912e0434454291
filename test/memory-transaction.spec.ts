import { expect } from 'chai';
import { TestScheduler } from 'rxjs/testing';
import {
  ListenerTransactions,
  transactions,
  type ListenerEvent,
  type TransactionEvent,
} from '../src/memory/transaction.js';

type R = string;
const ev: Record<string, ListenerEvent<R>> = {
  b: { type: 'begin' },
  c: { type: 'commit' },
  x: { type: 'add', region: 'x' },
  y: { type: 'add', region: 'y' },
  z: { type: 'del', region: 'z' },
};
const txn = (seq: number, ops: ['add' | 'del', R][], implicit = false): TransactionEvent<R> => ({
  type: 'transaction',
  transaction: { seq, ops: ops.map(([type, region]) => ({ type, region })), implicit },
});
const err = (
  reason: 'nested-begin' | 'commit-without-begin' | 'unterminated',
  at: number,
): TransactionEvent<R> => ({
  type: 'error',
  error: { reason, at },
});

describe('memory/transaction: listener events → committed transactions (marbles)', function () {
  let ts: TestScheduler;
  beforeEach(function () {
    ts = new TestScheduler((a, b) => {
      expect(a).to.deep.equal(b);
    });
  });

  it('batches begin/add/del/commit into one transaction, emitted at commit', function () {
    ts.run(({ cold, expectObservable }) => {
      const src = cold('b-x-z-c-|', ev);
      expectObservable(src.pipe(transactions<R>())).toBe('------t-|', {
        t: txn(0, [
          ['add', 'x'],
          ['del', 'z'],
        ]),
      });
    });
  });

  it('makes a stray op its own one-op transaction, without leaking into the next', function () {
    ts.run(({ cold, expectObservable }) => {
      const src = cold('b-x-c-z-b-y-c|', ev);
      expectObservable(src.pipe(transactions<R>())).toBe('----t-u-----v|', {
        t: txn(0, [['add', 'x']]),
        u: txn(1, [['del', 'z']], true),
        v: txn(2, [['add', 'y']]),
      });
    });
  });

  it('emits nothing for an empty transaction', function () {
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold('b-c-b-x-c|', ev).pipe(transactions<R>())).toBe('--------t|', {
        t: txn(0, [['add', 'x']]),
      });
    });
  });

  it('reports a nested begin as an error event and keeps the open transaction', function () {
    ts.run(({ cold, expectObservable }) => {
      const src = cold('b-x-b-y-c|', ev);
      expectObservable(src.pipe(transactions<R>())).toBe('----e---t|', {
        e: err('nested-begin', 2),
        t: txn(0, [
          ['add', 'x'],
          ['add', 'y'],
        ]),
      });
    });
  });

  it('reports a commit without begin, and an unterminated transaction at completion', function () {
    ts.run(({ cold, expectObservable }) => {
      const src = cold('c-b-x|', ev);
      expectObservable(src.pipe(transactions<R>())).toBe('e----(u|)', {
        e: err('commit-without-begin', 0),
        u: err('unterminated', 3),
      });
    });
  });

  it('keeps state per subscription', function () {
    ts.run(({ cold, expectObservable }) => {
      const t$ = cold('b-x-c|', ev).pipe(transactions<R>());
      expectObservable(t$).toBe('----t|', { t: txn(0, [['add', 'x']]) });
      expectObservable(t$).toBe('----t|', { t: txn(0, [['add', 'x']]) });
    });
  });

  it('passes errors of the source through', function () {
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold('b-x-#', ev).pipe(transactions<R>())).toBe('----#');
    });
  });
});

describe('memory/transaction: ListenerTransactions (push API)', function () {
  it('delivers committed transactions and errors to callbacks', function () {
    const l = new ListenerTransactions<R>();
    const got: unknown[] = [];
    const off = l.subscribe(
      (t) => got.push(t),
      (e) => got.push(e),
    );
    l.begin();
    l.regionAdd('a');
    l.regionDel('b');
    l.commit();
    l.regionAdd('c');
    l.commit();
    off();
    l.begin();
    l.regionAdd('ignored');
    l.commit();
    expect(got).to.deep.equal([
      {
        seq: 0,
        ops: [
          { type: 'add', region: 'a' },
          { type: 'del', region: 'b' },
        ],
        implicit: false,
      },
      { seq: 1, ops: [{ type: 'add', region: 'c' }], implicit: true },
      { reason: 'commit-without-begin', at: 5 },
    ]);
  });
});
