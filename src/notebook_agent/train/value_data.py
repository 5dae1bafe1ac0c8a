"""Value-model examples: from search trees, as JUPITER builds them, and from agent attempts.

Trees. From each tree: sample terminal paths that ended correct (reward > 0) and incorrect
(reward <= 0), take every node on those paths (the terminal node and its ancestors), and use
the node's Q (mean backed-up value, in [-1, 1]) as its target. An unvisited terminal node
uses its own reward.

`read_tree` is the only function that knows the tree JSON (search/tree.py's export:
`{"format": "notebook-agent-tree", "nodes": [{id, parent, depth, messages, visits,
value_sum, q, value, terminal, answer, ...}]}`); align it there if the export changes.

Attempts. An eval run's records (`eval run TASKS --out RUN`, e.g. the teacher's job on
generated training tasks) hold whole trajectories and verdicts: every prefix state of an
attempt (after each tool result, and the final reply) is an example whose target is the
attempt's outcome, JUPITER's reward (fraction of sub-answers right, else -1). Train on runs
over training tasks only: a benchmark's states would leak it into the search that uses them.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tasks.records import RESULTS_FILE, is_final, load_run_records

logger = logging.getLogger(__name__)


@dataclass
class TreeNode:
    id: int
    parent: int | None
    depth: int
    messages: list[dict[str, Any]]
    visits: int
    q: float | None          # mean backed-up value; None when never visited
    terminal: bool
    answer: str | None
    reward: float | None     # its own evaluation (the scorer's reward for terminal nodes)


@dataclass
class ValueExample:
    messages: list[dict[str, Any]]
    target: float
    tree: str = ""           # where it came from: a tree file, or RUN#task for an attempt
    node: int = -1
    depth: int = -1          # model turns in the state


def _tree_json(path: str | Path) -> dict[str, Any]:
    try:
        d = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if d.get("format") != "notebook-agent-tree" or not isinstance(d.get("nodes"), list):
        raise ValueError(f"{path} is not a notebook-agent search tree (format: notebook-agent-tree, nodes: [...])")
    return d


def grown_without_rewards(tree: dict[str, Any]) -> bool:
    """An inference tree: its search recorded no reward scorer, so its answered nodes hold a
    value model's guess or the ablation's 0, not whether the answer was right."""
    config = tree.get("config") or {}
    return "reward_scorer" in config and config["reward_scorer"] is None


def read_tree(path: str | Path) -> list[TreeNode]:
    """The nodes of one exported search tree."""
    return _nodes(_tree_json(path))


def _nodes(d: dict[str, Any]) -> list[TreeNode]:
    out = []
    for n in d["nodes"]:
        visits = int(n.get("visits", 0))
        q = None
        if visits:
            q = float(n["q"]) if n.get("q") is not None else float(n.get("value_sum", 0.0)) / visits
        out.append(TreeNode(id=int(n["id"]), parent=n.get("parent"), depth=int(n.get("depth", 0)),
                            messages=n.get("messages") or [], visits=visits, q=q,
                            terminal=bool(n.get("terminal")), answer=n.get("answer"),
                            reward=None if n.get("value") is None else float(n["value"])))
    return out


def tree_examples(nodes: list[TreeNode], paths_per_class: int = 4, include_root: bool = False,
                  rng: random.Random | None = None, name: str = "") -> list[ValueExample]:
    """Examples from one tree: up to `paths_per_class` correct and incorrect terminal paths."""
    rng = rng or random.Random(0)
    by_id = {n.id: n for n in nodes}
    terminals = [n for n in nodes if n.terminal and n.reward is not None]
    correct = [n for n in terminals if n.reward > 0]
    wrong = [n for n in terminals if n.reward <= 0]
    picked = rng.sample(correct, min(paths_per_class, len(correct))) + rng.sample(wrong, min(paths_per_class, len(wrong)))
    seen: set[int] = set()
    out = []
    for leaf in picked:
        cur: TreeNode | None = leaf
        while cur is not None:
            if cur.id not in seen and (include_root or cur.parent is not None):
                seen.add(cur.id)
                target = cur.q if cur.q is not None else cur.reward
                if target is not None and cur.messages:
                    out.append(ValueExample(cur.messages, max(-1.0, min(1.0, float(target))), name, cur.id, cur.depth))
            cur = by_id.get(cur.parent) if cur.parent is not None else None
    return out


def _tree_files(trees: str | Path) -> tuple[Path, list[Path]]:
    """A tree JSON file, or every one under a directory."""
    path = Path(trees).expanduser()
    files = sorted(path.glob("**/*.json")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise ValueError(f"no tree JSON files at {path}")
    return path, files


def load_value_examples(trees: str | Path, paths_per_class: int = 4, include_root: bool = False,
                        seed: int = 0) -> list[ValueExample]:
    """Examples from a tree JSON file or a directory of them."""
    path, files = _tree_files(trees)
    rng = random.Random(seed)
    out: list[ValueExample] = []
    unrewarded = 0
    for f in files:
        d = _tree_json(f)
        if grown_without_rewards(d):
            unrewarded += 1
            continue
        out.extend(tree_examples(_nodes(d), paths_per_class, include_root, rng, f.name))
    if unrewarded:
        logger.warning(f"{unrewarded} of {len(files)} trees were grown without rewards (inference trees): skipped")
    if not out:
        hint = (" (they were grown without rewards: collect training trees with "
                "`notebook-agent eval run TASKS --search mcts --collect`)" if unrewarded == len(files) else "")
        raise ValueError(f"{path}: the trees hold no scored terminal paths to learn from{hint}")
    return out


def candidate_examples(nodes: list[TreeNode], name: str = "") -> list[ValueExample]:
    """Every answered terminal node of one tree, with the scorer's reward as its target: the
    candidates among which a value-guided search must pick, so the measurement that matters."""
    return [ValueExample(n.messages, max(-1.0, min(1.0, n.reward)), name, n.id, n.depth)
            for n in nodes if n.terminal and n.answer is not None and n.reward is not None and n.messages]


def load_tree_candidates(trees: str | Path) -> list[ValueExample]:
    """The answered candidates of collected trees (a JSON file or a directory of them); trees
    grown without rewards are skipped, as in training."""
    path, files = _tree_files(trees)
    out: list[ValueExample] = []
    for f in files:
        d = _tree_json(f)
        if not grown_without_rewards(d):
            out.extend(candidate_examples(_nodes(d), f.name))
    if not out:
        raise ValueError(f"{path}: no answered candidates with rewards (collect with `eval run ... --collect`)")
    return out


def outcome_reward(record: dict[str, Any]) -> float:
    """An attempt's reward as JUPITER's collection defines it: fraction right, else -1."""
    return float(record.get("fraction") or 0.0) if record.get("n_right") else -1.0


def attempt_examples(messages: list[dict[str, Any]], target: float, include_root: bool = False,
                     name: str = "") -> list[ValueExample]:
    """Every prefix state of one attempt, each with `target`: after each tool result once the
    model has replied, and the whole attempt (the root, before any reply, with `include_root`)."""
    first = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
    cuts = [first] if include_root and first else []
    cuts += [i + 1 for i, m in enumerate(messages) if i >= first and m.get("role") == "tool"]
    cuts.append(len(messages))
    out: list[ValueExample] = []
    for end in sorted(set(c for c in cuts if c)):
        depth = sum(m.get("role") == "assistant" for m in messages[:end])
        if depth or include_root:
            out.append(ValueExample(messages[:end], target, name, node=end, depth=depth))
    return out


def load_run_examples(runs: list[str | Path], include_root: bool = False) -> list[ValueExample]:
    """Examples from the attempts in eval run folders (RUN/results.jsonl); runs with a
    resumed scorer keep their latest verdicts."""
    out: list[ValueExample] = []
    for run in map(Path, runs):
        if not (run / RESULTS_FILE).is_file():
            raise ValueError(f"{run}: no {RESULTS_FILE} (not an eval run folder)")
        for tid, rec in load_run_records(run).items():
            messages = (rec.get("trajectory") or {}).get("messages") or []
            if rec.get("correct") is None or not messages or not is_final(rec):
                continue  # unscored (no gold answer), no trajectory kept, or not an attempt (interrupted)
            out.extend(attempt_examples(messages, outcome_reward(rec), include_root, f"{run.name}#{tid}"))
    if not out:
        raise ValueError(f"{', '.join(map(str, runs))}: no scored attempts with trajectories")
    return out
