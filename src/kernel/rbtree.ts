/**
 * lib/rbtree.c: Linux's red-black tree, node for node. The kernel's users walk it with
 * their own comparisons (rb_link_node + rb_insert_color to insert, a loop over rb_left /
 * rb_right to search), so where those comparisons are not a consistent order (type1's
 * u64 arithmetic at the top of the address space) what a search finds depends on the
 * tree's shape. A model that must answer as the kernel does then needs the same shape:
 * this port keeps the kernel's rebalancing (rb_insert_color, rb_erase) step for step.
 * Colours and parents are fields here, not packed into __rb_parent_color.
 */

type Side = 'left' | 'right';
const OTHER = { left: 'right', right: 'left' } as const;

/** struct rb_node; embed it by extending the class. */
export class RbNode {
  parent: RbNode | null = null;
  left: RbNode | null = null;
  right: RbNode | null = null;
  black = false;
}

/** struct rb_root */
export class RbRoot<N extends RbNode> {
  node: N | null = null;

  /** rb_link_node(node, parent, link) + rb_insert_color(): `left` picks the parent's child slot. */
  link(node: N, parent: N | null, left: boolean): void {
    node.parent = parent;
    node.left = node.right = null;
    node.black = false;
    if (!parent) this.node = node;
    else if (left) parent.left = node;
    else parent.right = node;
    this.insertColor(node);
  }

  /** rb_first() */
  first(): N | null {
    let n: RbNode | null = this.node;
    if (!n) return null;
    while (n.left) n = n.left;
    return n as N;
  }

  /** rb_next() */
  static next<N extends RbNode>(node: N): N | null {
    return RbRoot.step(node, 'right');
  }

  /** rb_prev() */
  static prev<N extends RbNode>(node: N): N | null {
    return RbRoot.step(node, 'left');
  }

  // rb_next() (side 'right') and its mirror image rb_prev() (side 'left').
  private static step<N extends RbNode>(node: N, side: Side): N | null {
    const other = OTHER[side];
    let n: RbNode = node;
    if (n[side]) {
      n = n[side];
      while (n[other]) n = n[other];
      return n as N;
    }
    let parent: RbNode | null;
    while ((parent = n.parent) && n === parent[side]) n = parent;
    return parent as N | null;
  }

  /** In-order iteration (rb_first, rb_next). */
  *[Symbol.iterator](): Generator<N> {
    for (let n = this.first(); n; n = RbRoot.next(n)) yield n;
  }

  // __rb_change_child()
  private changeChild(old: RbNode, neu: RbNode | null, parent: RbNode | null): void {
    if (parent) {
      if (parent.left === old) parent.left = neu;
      else parent.right = neu;
    } else this.node = neu as N | null;
  }

  // __rb_rotate_set_parents(): `neu` takes `old`'s place, parent and colour; `old` goes below it.
  private rotateSetParents(old: RbNode, neu: RbNode, black: boolean): void {
    const parent = old.parent;
    neu.parent = old.parent;
    neu.black = old.black;
    old.parent = neu;
    old.black = black;
    this.changeChild(old, neu, parent);
  }

  // __rb_insert(). The kernel writes each case twice, mirrored; here `side` is the side of
  // gparent that parent hangs on and `other` the uncle's, so both mirror images are one text.
  private insertColor(inserted: RbNode): void {
    let node = inserted;
    let parent = node.parent;
    for (;;) {
      if (!parent) {
        node.parent = null;
        node.black = true;
        break;
      }
      if (parent.black) break;
      const gparent = parent.parent!;
      const side: Side = parent !== gparent.right ? 'left' : 'right';
      const other = OTHER[side];
      let tmp = gparent[other];
      if (tmp && !tmp.black) {
        // Case 1: the uncle is red: colour flips.
        tmp.parent = gparent;
        tmp.black = true;
        parent.parent = gparent;
        parent.black = true;
        node = gparent;
        parent = node.parent;
        node.black = false;
        continue;
      }
      tmp = parent[other];
      if (node === tmp) {
        // Case 2: rotate at parent, towards `side`.
        tmp = node[side];
        parent[other] = tmp;
        node[side] = parent;
        if (tmp) {
          tmp.parent = parent;
          tmp.black = true;
        }
        parent.parent = node;
        parent.black = false;
        parent = node;
        tmp = node[other];
      }
      // Case 3: rotate at gparent, towards `other`.
      gparent[side] = tmp;
      parent[other] = gparent;
      if (tmp) {
        tmp.parent = gparent;
        tmp.black = true;
      }
      this.rotateSetParents(gparent, parent, false);
      break;
    }
  }

  /** rb_erase() */
  erase(node: N): void {
    const rebalance = this.eraseNode(node);
    if (rebalance) this.eraseColor(rebalance);
    node.parent = node.left = node.right = null;
  }

  // __rb_erase_augmented() without augmentation: unlinks `node`; returns where to rebalance.
  private eraseNode(node: RbNode): RbNode | null {
    const child = node.right;
    let tmp = node.left;
    let rebalance: RbNode | null;
    if (!tmp) {
      // Case 1: at most one child (the right one).
      const parent = node.parent;
      this.changeChild(node, child, parent);
      if (child) {
        child.parent = node.parent;
        child.black = node.black;
        rebalance = null;
      } else rebalance = node.black ? parent : null;
    } else if (!child) {
      // Still case 1, the child is the left one.
      tmp.parent = node.parent;
      tmp.black = node.black;
      this.changeChild(node, tmp, node.parent);
      rebalance = null;
    } else {
      let successor: RbNode = child;
      let parent: RbNode;
      let child2: RbNode | null;
      tmp = child.left;
      if (!tmp) {
        // Case 2: the successor is the right child.
        parent = successor;
        child2 = successor.right;
      } else {
        // Case 3: the successor is the leftmost node under the right child.
        do {
          parent = successor;
          successor = tmp;
          tmp = tmp.left;
        } while (tmp);
        child2 = successor.right;
        parent.left = child2;
        successor.right = child;
        child.parent = successor;
      }
      const left = node.left!; // non-null: this is the two-children case
      successor.left = left;
      left.parent = successor;
      const pcParent = node.parent;
      this.changeChild(node, successor, pcParent);
      if (child2) {
        child2.parent = parent;
        child2.black = true;
        rebalance = null;
      } else {
        rebalance = successor.black ? parent : null;
      }
      successor.parent = pcParent;
      successor.black = node.black;
    }
    return rebalance;
  }

  // ____rb_erase_color(), with `side` the side of parent that node is on and `other` the
  // sibling's (mirrored in the kernel as for insertion).
  private eraseColor(start: RbNode): void {
    let parent: RbNode = start;
    let node: RbNode | null = null;
    for (;;) {
      const side: Side = node !== parent.right ? 'left' : 'right';
      const other = OTHER[side];
      let sibling = parent[other]!;
      let tmp1: RbNode | null;
      let tmp2: RbNode | null;
      if (!sibling.black) {
        // Case 1: rotate at parent, towards `side`.
        tmp1 = sibling[side]!;
        parent[other] = tmp1;
        sibling[side] = parent;
        tmp1.parent = parent;
        tmp1.black = true;
        this.rotateSetParents(parent, sibling, false);
        sibling = tmp1;
      }
      tmp1 = sibling[other];
      if (!tmp1 || tmp1.black) {
        tmp2 = sibling[side];
        if (!tmp2 || tmp2.black) {
          // Case 2: sibling colour flip.
          sibling.parent = parent;
          sibling.black = false;
          if (!parent.black) parent.black = true;
          else {
            node = parent;
            const up: RbNode | null = node.parent;
            if (up) {
              parent = up;
              continue;
            }
          }
          break;
        }
        // Case 3: rotate at sibling, towards `other`.
        tmp1 = tmp2[other];
        sibling[side] = tmp1;
        tmp2[other] = sibling;
        parent[other] = tmp2;
        if (tmp1) {
          tmp1.parent = sibling;
          tmp1.black = true;
        }
        tmp1 = sibling;
        sibling = tmp2;
      }
      // Case 4: rotate at parent, towards `side`, and colour flips.
      tmp2 = sibling[side];
      parent[other] = tmp2;
      sibling[side] = parent;
      tmp1.parent = sibling;
      tmp1.black = true;
      if (tmp2) tmp2.parent = parent;
      this.rotateSetParents(parent, sibling, true);
      break;
    }
  }
}
