// The port of Linux's lib/rbtree.c (src/kernel/rbtree.ts): red-black invariants, parent
// links and in-order walks after random insert and erase sequences. (Checked once node for
// node against the kernel's tools/lib/rbtree.c compiled natively: the same shapes and
// colours on random sequences with duplicate keys.)
import { expect } from 'chai';
import fc from 'fast-check';
import { RbNode, RbRoot } from '../src/kernel/rbtree.js';

class Item extends RbNode {
  constructor(readonly key: number) {
    super();
  }
}

// The kernel's insertion walk: equal keys go left, as vfio_link_dma's `<=` does.
function insert(root: RbRoot<Item>, item: Item): void {
  let parent: Item | null = null;
  let left = false;
  let node = root.node;
  while (node) {
    parent = node;
    left = item.key <= node.key;
    node = (left ? node.left : node.right) as Item | null;
  }
  root.link(item, parent, left);
}

/** Checks the red-black properties and parent links; returns the black height. */
function check(n: RbNode | null, parent: RbNode | null): number {
  if (!n) return 1;
  expect(n.parent, 'parent link').to.equal(parent);
  if (!n.black) {
    expect(n.left?.black ?? true, 'red node with a red child').to.equal(true);
    expect(n.right?.black ?? true, 'red node with a red child').to.equal(true);
  }
  const l = check(n.left, n);
  expect(check(n.right, n), 'equal black heights').to.equal(l);
  return l + (n.black ? 1 : 0);
}

describe('rbtree: a port of lib/rbtree.c', function () {
  it('keeps the red-black properties, the parent links and the key order through random inserts and erases', function () {
    const ops = fc.array(fc.record({ erase: fc.boolean(), key: fc.nat(40), pick: fc.nat() }), {
      maxLength: 200,
    });
    fc.assert(
      fc.property(ops, (prog) => {
        const root = new RbRoot<Item>();
        const live: Item[] = [];
        for (const op of prog) {
          if (op.erase && live.length) root.erase(live.splice(op.pick % live.length, 1)[0]!);
          else {
            const item = new Item(op.key);
            insert(root, item);
            live.push(item);
          }
          if (root.node) expect(root.node.black, 'black root').to.equal(true);
          check(root.node, null);
        }
        const walked = [...root].map((i) => i.key);
        expect(walked).to.deep.equal(live.map((i) => i.key).sort((a, b) => a - b));
        const back: number[] = [];
        let last = root.first();
        while (last && RbRoot.next(last)) last = RbRoot.next(last);
        for (let n = last; n; n = RbRoot.prev(n)) back.push(n.key);
        expect(back.reverse()).to.deep.equal(walked);
      }),
      { numRuns: 300 },
    );
  });
});
