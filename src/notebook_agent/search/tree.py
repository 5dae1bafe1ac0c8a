"""The search tree: nodes are agent states; it exports to JSON and loads back.

A node holds the conversation so far (`messages`), the step that made it (the model's reply
and the cells it ran), its statistics (visits N, value sum W, Q = W / N), its prior, and
whether it is terminal and why. While the search runs, an open node also holds its
`AgentState` (and so a live kernel session); that is never exported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..agent.trajectory import RunStatus, Step, Trajectory

FORMAT_VERSION = 1
# Why a node is terminal: how its agent step ended the run (a RunStatus), or a search's own reason.
NodeReason = RunStatus | Literal["parse_error", "max_depth", "pruned", "no_children", ""]


@dataclass
class Node:
    id: int
    parent: int | None
    depth: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    step: dict[str, Any] | None = None        # the reply that made this node: raw_text, tool_calls, usage
    cells: list[dict[str, Any]] = field(default_factory=list)  # Step.to_dict() of the cells it ran
    prior: float = 1.0
    visits: int = 0
    value_sum: float = 0.0
    value: float | None = None                 # its own evaluation: reward or value-model score
    terminal: bool = False
    reason: NodeReason = ""                    # why terminal: answered, max_errors, max_depth, ...
    answer: str | None = None
    best_effort: str | None = None             # answer-like text seen on the path (as run_agent keeps)
    consecutive_errors: int = 0
    round: int = 0                             # the iteration that created it (root: 0)
    children: list[int] = field(default_factory=list)
    closed: bool = False                       # nothing left to expand below it
    state: Any = field(default=None, repr=False, compare=False)  # AgentState while open (not exported)

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def expanded(self) -> bool:
        return bool(self.children)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "parent": self.parent, "depth": self.depth, "messages": self.messages,
                "step": self.step, "cells": self.cells, "prior": self.prior, "visits": self.visits,
                "value_sum": self.value_sum, "q": self.q, "value": self.value, "terminal": self.terminal,
                "reason": self.reason, "answer": self.answer, "best_effort": self.best_effort,
                "consecutive_errors": self.consecutive_errors,
                "round": self.round, "children": list(self.children), "closed": self.closed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        d = {k: v for k, v in d.items() if k != "q"}
        return cls(**d)


@dataclass
class Tree:
    """Nodes by id (the root is id 0), plus what the search decided."""

    nodes: dict[int, Node] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    aggregates: dict[str, Any] = field(default_factory=dict)
    chosen: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add(self, node: Node) -> Node:
        if node.id in self.nodes:
            raise ValueError(f"node {node.id} already exists")
        self.nodes[node.id] = node
        if node.parent is not None:
            self.nodes[node.parent].children.append(node.id)
        return node

    def next_id(self) -> int:
        return max(self.nodes, default=-1) + 1

    def path(self, node_id: int) -> list[Node]:
        """Root ... node."""
        out = []
        cur: int | None = node_id
        while cur is not None:
            out.append(self.nodes[cur])
            cur = self.nodes[cur].parent
        return out[::-1]

    def children(self, node: Node) -> list[Node]:
        return [self.nodes[i] for i in node.children]

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.children]

    def max_depth(self) -> int:
        return max((n.depth for n in self.nodes.values()), default=0)

    def path_trajectory(self, node_id: int, status: RunStatus | None = None, detail: str = "") -> Trajectory:
        """The path to `node_id` as a `Trajectory` (renders to the chosen notebook); works on
        loaded trees too: the cells with their outputs are stored on each node."""
        path = self.path(node_id)
        node = path[-1]
        steps = [Step.from_dict(c) for n in path for c in n.cells]
        question = str(self.task.get("question", ""))
        return Trajectory(question=question, messages=list(node.messages), steps=steps, answer=node.answer,
                          status=status or ("answered" if node.reason == "answered" else "max_turns"),
                          status_detail=detail, task_id=str(self.task.get("id", "")),
                          files=[Path(f).name for f in self.task.get("files", [])], turns=node.depth)

    # -- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": "notebook-agent-tree", "version": FORMAT_VERSION, "task": self.task,
                "config": self.config, "root": 0, "chosen": self.chosen, "candidates": self.candidates,
                "aggregates": self.aggregates, "stats": self.stats,
                "nodes": [self.nodes[i].to_dict() for i in sorted(self.nodes)]}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent, default=str)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tree:
        if d.get("format") != "notebook-agent-tree":
            raise ValueError("not a notebook-agent tree (missing format: notebook-agent-tree)")
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"tree format version {d.get('version')!r} is not supported (expected {FORMAT_VERSION})")
        nodes = {int(n["id"]): Node.from_dict(n) for n in d.get("nodes", [])}
        if 0 not in nodes:
            raise ValueError("the tree has no root node (id 0)")
        for n in nodes.values():
            if n.parent is not None and n.parent not in nodes:
                raise ValueError(f"node {n.id} names a missing parent {n.parent}")
        return cls(nodes=nodes, task=d.get("task", {}), config=d.get("config", {}),
                   candidates=d.get("candidates", []), aggregates=d.get("aggregates", {}),
                   chosen=d.get("chosen"), stats=d.get("stats", {}))

    @classmethod
    def load(cls, path: str | Path) -> Tree:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(data)
