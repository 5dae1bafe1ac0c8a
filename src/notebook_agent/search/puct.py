"""PUCT selection and value backup."""

from __future__ import annotations

import math

from .tree import Node, Tree


def puct_score(child: Node, parent_visits: int, c_puct: float) -> float:
    """Q + c_puct * prior * sqrt(N_parent) / (1 + N_child); an unvisited child has Q = 0."""
    return child.q + c_puct * child.prior * math.sqrt(parent_visits) / (1 + child.visits)


def select_leaf(tree: Tree, c_puct: float) -> Node | None:
    """Walk from the root to an open leaf, each time to the child with the best PUCT score.

    Closed subtrees (terminal leaves, or every child closed) are never entered, so no
    iteration is spent re-visiting a finished path. Ties go to the higher prior, then to the
    older child. None when the whole tree is closed.
    """
    node = tree.root
    if node.closed:
        return None
    while node.children:
        options = [c for c in tree.children(node) if not c.closed]
        if not options:  # should not happen: `close_up` closes such a node
            return None
        node = max(options, key=lambda c: (puct_score(c, node.visits, c_puct), c.prior, -c.id))
    return node


def backup(tree: Tree, node: Node, value: float) -> None:
    """Add one visit with `value` to `node` and every ancestor."""
    for n in tree.path(node.id):
        n.visits += 1
        n.value_sum += value


def close_up(tree: Tree, node: Node) -> None:
    """Mark `node` closed and propagate: a parent whose children are all closed is closed."""
    node.closed = True
    cur = node
    while cur.parent is not None:
        parent = tree.nodes[cur.parent]
        if parent.closed or not all(c.closed for c in tree.children(parent)):
            return
        parent.closed = True
        cur = parent
