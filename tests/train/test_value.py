"""The value model on CPU: trees in the search export format, built from real agent traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notebook_agent.train.value_data import (
    candidate_examples,
    load_tree_candidates,
    load_value_examples,
    read_tree,
    tree_examples,
)


def build_tree(trace, wrong_code: str):
    """A small search tree over a real trace: the real (correct) path, and a sibling branch
    that ran a failing cell and answered wrong. Visits and values as backup leaves them."""
    from notebook_agent.search.tree import Node, Tree

    m = trace.messages
    t = Tree(task={"id": trace.task_id, "question": trace.question})
    t.add(Node(id=0, parent=None, depth=0, messages=m[:2], visits=4, value_sum=-1.0))
    t.add(Node(id=1, parent=0, depth=1, messages=m[:4], visits=4, value_sum=-1.0))
    t.add(Node(id=2, parent=1, depth=2, messages=m[:6], visits=2, value_sum=2.0))
    t.add(Node(id=3, parent=2, depth=3, messages=m, visits=2, value_sum=2.0, value=1.0, terminal=True,
               reason="answered", answer=trace.answer))
    bad_call = {"role": "assistant", "content": "", "tool_calls": [{"id": "x1", "type": "function", "function": {
        "name": "execute_code", "arguments": json.dumps({"comment": "Compute it.", "code": wrong_code})}}]}
    bad_out = {"role": "tool", "tool_call_id": "x1",
               "content": "Traceback (most recent call last):\nKeyError: 'unit'\nError: the column does not exist"}
    wrong = {"role": "assistant", "content": "", "tool_calls": [{"id": "x2", "type": "function", "function": {
        "name": "final_answer", "arguments": json.dumps({"answer": "@x[unknown]"})}}]}
    t.add(Node(id=4, parent=1, depth=2, messages=m[:4] + [bad_call, bad_out], visits=2, value_sum=-2.0))
    t.add(Node(id=5, parent=4, depth=3, messages=m[:4] + [bad_call, bad_out, wrong], visits=1, value_sum=-1.0,
               value=-1.0, terminal=True, reason="answered", answer="@x[unknown]"))
    t.add(Node(id=6, parent=4, depth=3, messages=m[:4] + [bad_call, bad_out, bad_call], visits=0, value=-1.0,
               terminal=True, reason="max_errors"))
    return t


@pytest.fixture(scope="module")
def tree_dir(traces, tmp_path_factory):
    d = tmp_path_factory.mktemp("trees")
    for i, tr in enumerate(traces):
        build_tree(tr, "df.unit.sum()").save(d / f"tree-{i}.json")
    return d


def test_examples_are_sampled_paths_with_q_targets(tree_dir, traces):
    nodes = read_tree(tree_dir / "tree-0.json")
    assert [n.id for n in nodes] == list(range(7))
    assert nodes[1].q == -0.25 and nodes[6].q is None and nodes[6].reward == -1.0
    exs = tree_examples(nodes, paths_per_class=4, name="t0")
    by_node = {e.node: e.target for e in exs}
    # both correct and incorrect terminals with their ancestors, root excluded, each node once
    assert set(by_node) == {1, 2, 3, 4, 5, 6}
    assert by_node == {1: -0.25, 2: 1.0, 3: 1.0, 4: -1.0, 5: -1.0, 6: -1.0}  # Q, or the reward when unvisited
    one = tree_examples(nodes, paths_per_class=1, name="t0")
    assert {e.node for e in one} in ({1, 2, 3, 4, 5}, {1, 2, 3, 4, 6})
    assert len(load_value_examples(tree_dir)) == 6 * len(traces)


def test_held_out_trees_give_their_answered_candidates(tree_dir, traces):
    """`value-eval --trees`: every answered terminal node with its reward, clustered by tree;
    a failed terminal (max_errors, no answer) is not a candidate."""
    from typer.testing import CliRunner

    from notebook_agent.cli import app

    cands = candidate_examples(read_tree(tree_dir / "tree-0.json"), "t0")
    assert [(e.node, e.target, e.depth) for e in cands] == [(3, 1.0, 3), (5, -1.0, 3)]
    assert len(load_tree_candidates(tree_dir)) == 2 * len(traces)
    r = CliRunner().invoke(app, ["train", "value-eval", "--trees", str(tree_dir), "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    # the wrong candidate answered after a failing cell: the error heuristic ranks every pair right
    assert summary["states"] == 2 * len(traces) and summary["positive"] == len(traces)
    assert summary["attempts"] == len(traces) and summary["heuristic_auc"] == 1.0
    none = CliRunner().invoke(app, ["train", "value-eval"])
    assert none.exit_code == 1 and "--runs and/or --trees" in none.output


def test_inference_trees_are_not_training_data(tree_dir, traces, tmp_path):
    """A tree whose search had no reward scorer (eval without --collect) holds guesses, not
    rewards: it is skipped, and trees that are all like that are a clear error."""
    d = json.loads((tree_dir / "tree-0.json").read_text())
    d["config"] = {"reward_scorer": None, "value_scorer": None}
    (tmp_path / "inference.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="grown without rewards.*--collect"):
        load_value_examples(tmp_path)
    d["config"]["reward_scorer"] = "dabench"
    (tmp_path / "collected.json").write_text(json.dumps(d))
    assert {e.tree for e in load_value_examples(tmp_path)} == {"collected.json"}


def test_bad_tree_is_a_clear_error(tmp_path):
    (tmp_path / "t.json").write_text('{"nodes": []}')
    with pytest.raises(ValueError, match="not a notebook-agent search tree"):
        read_tree(tmp_path / "t.json")
    with pytest.raises(ValueError, match="no tree JSON"):
        load_value_examples(tmp_path / "missing")


def test_value_model_learns_truncates_and_round_trips(tiny_model_dir, tree_dir, tmp_path):
    import torch

    from notebook_agent.search.value import ValueScorer
    from notebook_agent.models.value_model import ValueModel
    from notebook_agent.train.value_train import (
        ValueSettings,
        build_value_model,
        fit,
        mse,
    )

    torch.set_num_threads(1)
    s = ValueSettings(model=str(tiny_model_dir), trees=str(tree_dir), out=str(tmp_path / "v"), epochs=10,
                      learning_rate=1e-3, head_learning_rate=1e-2, batch_size=8, max_length=128)
    # 128 most recent tokens: where a correct path (the answer) and a failed one (a traceback)
    # differ; a tiny random backbone cannot tell them apart through a long shared prompt
    examples = load_value_examples(s.trees)
    model = build_value_model(s)
    assert isinstance(model, ValueScorer)
    before = mse(model, examples)
    losses = fit(model, examples, s)
    after = mse(model, examples)
    assert after < 0.25 * before, (before, after, losses)
    scores = model.score([e.messages for e in examples])
    good = [p for p, e in zip(scores, examples) if e.target == 1.0]
    bad = [p for p, e in zip(scores, examples) if e.target == -1.0]
    assert sum(good) / len(good) > 0.3 and sum(bad) / len(bad) < -0.3
    assert all(-1.0 <= p <= 1.0 for p in scores)

    # the same truncation at training and inference: the most recent max_length tokens
    model.config.max_length = 64
    long = examples[0].messages
    ids = model.token_ids(long)
    full = model.tokenizer(model.tokenizer.apply_chat_template(
        __import__("notebook_agent.train.encode", fromlist=["x"]).render_messages(model._codec, long, None)[0],
        chat_template=model.config.template, tokenize=False), add_special_tokens=False)["input_ids"]
    assert len(ids) == 64 and len(full) > 64 and ids == full[-64:]
    model.config.max_length = 128

    out = model.save(tmp_path / "v")
    loaded = ValueModel.load(out, device="cpu")
    again = loaded.score([e.messages for e in examples])
    assert max(abs(a - b) for a, b in zip(scores, again)) < 1e-4
    assert loaded.config.max_length == 128 and loaded.config.codec == "react"


def test_cli_trains_a_value_model(tiny_model_dir, tree_dir, tmp_path):
    from typer.testing import CliRunner

    from notebook_agent.cli import app

    r = CliRunner().invoke(app, ["train", "value", "--model", str(tiny_model_dir), "--trees", str(tree_dir / "tree-0.json"),
                                 "--out", str(tmp_path / "v"), "--epochs", "1", "--max-length", "256", "--freeze-backbone"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["examples"] == 6 and (tmp_path / "v" / "value_head.pt").exists()
    bad = CliRunner().invoke(app, ["train", "sft", "--model", str(tiny_model_dir), "--dataset", str(tmp_path / "nope.jsonl"),
                                   "--out", str(tmp_path / "s")])
    assert bad.exit_code == 1 and "dataset not found" in bad.output


async def test_a_trained_value_model_values_the_nodes_of_a_search(tiny_model_dir, tree_dir, tmp_path):
    """The saved value model, loaded the way `eval --value-model` / `search --value-model` load
    it, scores the new nodes of a real MCTS search (forking kernel, scripted policy)."""
    from typer.testing import CliRunner

    from notebook_agent.cli import app
    from notebook_agent.kernel import make_session
    from notebook_agent.models.scripted import ScriptedModel, call
    from notebook_agent.search import SearchConfig, run_search
    from notebook_agent.search.value import ValueScorer, load_value_scorer
    from notebook_agent.tasks.task import Task

    r = CliRunner().invoke(app, ["train", "value", "--model", str(tiny_model_dir), "--trees", str(tree_dir / "tree-0.json"),
                                 "--out", str(tmp_path / "v"), "--epochs", "1", "--max-length", "128", "--freeze-backbone"])
    assert r.exit_code == 0, r.output
    scorer = load_value_scorer(str(tmp_path / "v"))
    assert isinstance(scorer, ValueScorer)

    sales = Path(__file__).resolve().parents[2] / "examples" / "sales.csv"
    task = Task(id="t", question="How many rows?", files=[sales], format="@rows[n]")
    model = ScriptedModel([call("execute_code", comment="count", code="import pandas as pd\nprint(len(pd.read_csv('sales.csv')))")])
    session = make_session("forking", files=task.files)
    await session.start()
    try:
        result = await run_search(task, model, session, SearchConfig(k=1, iterations=1, logprobs=False),
                                  value_scorer=scorer)
    finally:
        await session.close()
    child = result.tree.nodes[1]
    expected = scorer.score([child.messages])[0]
    assert child.visits == 1 and abs(child.q - expected) < 1e-4
    assert expected != 0.0  # a real score, not the no-value-model ablation's neutral 0


def test_value_benchmark_trains_on_trees_and_scores_held_out_candidates(tiny_model_dir, tree_dir, traces, tmp_path):
    """benchmarks/value.py with trees on both sides: training states are the trees' sampled
    paths, and the held-out candidates get their own AUC beside the heuristic's."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, str(root / "benchmarks" / "value.py"), "--train-trees", str(tree_dir),
                        "--eval-trees", str(tree_dir), "--model", str(tiny_model_dir), "--max-length", "64",
                        "--epochs", "2", "--bootstrap", "20", "--no-bf16"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["train_states"] == len(load_value_examples(tree_dir))
    assert summary["held_states"] == summary["held_candidates"] == 2 * len(traces)
    assert summary["auc_candidates_heuristic"] == 1.0  # the wrong answers came after a failing cell
    assert set(summary["auc_candidates_all"]) == {f"{pool}, last 64" for pool in ("mean", "last", "mean_last")}
    assert "task id(s) in both sets" in p.stderr
    missing = subprocess.run([sys.executable, str(root / "benchmarks" / "value.py"), "--train-trees", str(tree_dir)],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "held-out ones" in missing.stderr
