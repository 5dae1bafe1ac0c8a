"""End to end with a real small model (SmolLM2-135M through llama.cpp) on a CSV: the
`notebook-agent search` command and `eval run --search mcts`. Bookkeeping, not accuracy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from notebook_agent.search import Tree

SALES = Path(__file__).resolve().parents[2] / "examples" / "sales.csv"
CLI = [sys.executable, "-m", "notebook_agent.cli"]


def check_tree(tree: Tree, k: int) -> None:
    root = tree.root
    assert len(tree.nodes) >= 1 + k and len(root.children) == k
    assert root.visits == len(tree.nodes) - 1  # every child backed up once
    for node in tree.nodes.values():
        if node.parent is None:
            continue
        parent = tree.nodes[node.parent]
        assert node.depth == parent.depth + 1
        assert node.messages[: len(parent.messages)] == parent.messages  # a child extends its parent
        assert node.step is not None and node.step["usage"]["completion_tokens"] > 0
        assert 0 < node.prior <= 1 and node.step["mean_logprob"] is not None  # llama.cpp gives logprobs
        assert node.value is not None and -1 <= node.value <= 1
        if node.terminal:
            assert node.reason and node.closed
    assert tree.stats["forks"] == len(tree.nodes) - 1


def check_stop(tree: Tree, iterations: int, max_wall_s: float) -> None:
    """The search stopped for the reason it gives: all iterations done, every path ended, or
    the wall-time budget spent."""
    stats = tree.stats
    assert 1 <= stats["iterations"] <= iterations
    if stats["status"] == "iterations":
        assert stats["iterations"] == iterations
    elif stats["status"] == "exhausted":
        assert tree.root.closed and all(n.terminal for n in tree.leaves())
    else:
        assert stats["status"] == "timeout" and stats["wall_s"] >= max_wall_s, stats


@pytest.mark.slow
def test_search_command_with_smollm2(smollm2_path, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(CLI + ["search", str(SALES), "How many rows does sales.csv have?", "--model", str(smollm2_path),
                                 "--iterations", "3", "--k", "2", "--max-tokens-per-turn", "128", "--max-wall", "150",
                                 "--seed", "7", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 2 would be bad input or a crash
    assert "iteration" in proc.stderr and "#0 N=" in proc.stderr  # the tree was drawn
    tree = Tree.load(out / "tree.json")
    check_tree(tree, 2)
    check_stop(tree, iterations=3, max_wall_s=150)
    answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert (answer or None) == tree.aggregates["majority"]
    # the exit status says whether the search found an answer: 0 with one, 1 without
    assert proc.returncode == (0 if tree.aggregates["majority"] is not None else 1)
    if tree.aggregates["majority"] is not None:  # the chosen node is the one that gave it
        assert tree.nodes[tree.chosen].answer == tree.aggregates["majority"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["search"]["method"] == "mcts" and meta["isolation"]["backend"] == "forking"
    assert nbformat.read(str(out / "notebook.ipynb"), as_version=4).metadata["notebook_agent"]["isolation"] == meta["isolation"]
    nb = nbformat.read(str(out / "notebook.ipynb"), as_version=4)
    nbformat.validate(nb)
    path_cells = [c for n in tree.path(tree.chosen) for c in n.cells]
    assert [c.source for c in nb.cells if c.cell_type == "code"] == [c["result"]["code"] for c in path_cells]
    assert (out / "sales.csv").is_file()


@pytest.mark.slow
def test_eval_run_with_mcts_search(smollm2_path, tmp_path):
    rows = sum(1 for _ in SALES.open()) - 1
    bench = tmp_path / "tasks.jsonl"
    bench.write_text(json.dumps({"id": "rows", "question": "How many rows does sales.csv have?",
                                 "files": [str(SALES)], "format": "@rows[value] where value is an integer.",
                                 "answer": f"@rows[{rows}]"}) + "\n")
    out = tmp_path / "eval"
    proc = subprocess.run(CLI + ["eval", "run", f"jsonl:{bench}", "--model", str(smollm2_path), "--out", str(out),
                                 "--search", "mcts", "--iterations", "2", "--k", "2", "--max-tokens-per-turn", "128",
                                 "--task-timeout", "150", "--seed", "3", "--no-progress"],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["n"] == 1
    run = json.loads((out / "run.json").read_text())
    assert run["search"] == "mcts" and run["kernel_backend"] == "forking"
    assert run["agent_config"]["method"] == "mcts" and run["agent_config"]["search"]["k"] == 2
    record = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    tree = Tree.load(out / "trees" / "rows.json")
    check_tree(tree, 2)
    # the record counts the whole search's tokens, and holds the chosen path
    assert record["total_tokens"] == tree.stats["prompt_tokens"] + tree.stats["completion_tokens"] > 0
    assert record["trajectory"]["search"]["method"] == "mcts" and "search" not in record["trajectory"]["settings"]
    # eval requires isolation by default (CI has bubblewrap): the record says how the kernel was confined
    assert run["sandbox"] == "require" and record["isolation"]["mode"] == "require" and record["isolation"]["isolated"]
    assert (out / record["notebook"]).is_file()
