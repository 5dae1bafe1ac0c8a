"""The tree growing in the terminal: a live view redrawn after each expansion."""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text
from rich.tree import Tree as RichTree

from .mcts import SearchEvent
from .tree import Node, Tree

MAX_LINES = 40


def _label(node: Node, chosen: bool = False) -> Text:
    t = Text(f"#{node.id} ", style="bold" if chosen else "")
    t.append(f"N={node.visits} Q={node.q:+.2f} p={node.prior:.2f}", style="dim")
    if node.cells:
        code = node.cells[-1]["result"]["code"].strip().splitlines()
        status = node.cells[-1]["result"]["status"]
        t.append(f"  {(code[0] if code else '')[:50]}", style="cyan" if status == "ok" else "red")
    if node.terminal:
        style = {"answered": "bold green", "pruned": "dim"}.get(node.reason, "yellow")
        t.append(f"  [{node.reason}]", style=style)
    if node.answer is not None:
        t.append(f" {node.answer[:60]}", style="green")
    return t


def render(tree: Tree, header: str = "", max_lines: int = MAX_LINES) -> Group:
    """The tree, best children first, at most `max_lines` nodes (the rest counted)."""
    shown = 0
    root = RichTree(_label(tree.root))
    stack = [(tree.root, root)]
    while stack and shown < max_lines:
        node, branch = stack.pop(0)
        for child in sorted(tree.children(node), key=lambda c: (-c.visits, -c.q, c.id)):
            if shown >= max_lines:
                break
            stack.append((child, branch.add(_label(child, child.id == tree.chosen))))
            shown += 1
    hidden = len(tree.nodes) - 1 - shown
    parts = [Text(header, style="bold")] if header else []
    parts.append(root)
    if hidden > 0:
        parts.append(Text(f"... {hidden} more node(s)", style="dim"))
    return Group(*parts)


class LiveTreeView:
    """An `on_event` handler for `run_search`: use as a context manager around the search."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.live = Live(Text("starting..."), console=self.console, refresh_per_second=4, transient=False)
        self.iteration = 0
        self.candidates = 0

    def __enter__(self) -> LiveTreeView:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def __call__(self, event: SearchEvent) -> None:
        if event.kind == "iteration":
            self.iteration = int(event.data.get("iteration", self.iteration))
        elif event.kind == "candidate":
            self.candidates += 1
        header = (f"iteration {self.iteration}  nodes {len(event.tree.nodes)}  "
                  f"candidates {self.candidates}")
        if event.kind == "end":
            header += f"  done: {event.data.get('status')}"
        self.live.update(render(event.tree, header), refresh=True)
