"""Value data from agent attempts (eval run records) and the value model's measurement.

The runs are real: the eval runner with a real kernel on examples/sales.csv; the policy is
scripted (bookkeeping), half of its answers right and half wrong after a failing cell."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from notebook_agent.train.value_data import attempt_examples, load_run_examples, outcome_reward
from notebook_agent.train.value_eval import (
    auc,
    calibration,
    cluster_bootstrap_auc,
    evaluate_scores,
    last_output_ok,
)

SALES = Path(__file__).resolve().parents[2] / "examples" / "sales.csv"


async def _run(out: Path, n: int) -> None:
    from notebook_agent.agent.loop import AgentConfig
    from notebook_agent.eval.runner import run_eval
    from notebook_agent.models.scripted import ScriptedModel, call
    from notebook_agent.tasks.scoring import get_scorer
    from notebook_agent.tasks.task import Task

    import pandas as pd

    rows = len(pd.read_csv(SALES))
    tasks = [Task(id=f"t{i}", question="How many orders are there?", files=[SALES], format="@orders[n]",
                  answer=f"@orders[{rows}]") for i in range(n)]
    script = []
    for i in range(n):
        script.append(call("execute_code", comment="Load the table.",
                           code="import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.shape)"))
        if i % 2:  # a wrong attempt: a failing cell, then a made-up answer
            script.append(call("execute_code", comment="Count the orders.", code="print(df.order_count.sum())"))
            script.append(call("final_answer", answer="@orders[7]"))
        else:
            script.append(call("execute_code", comment="Count the orders.", code="print(len(df))"))
            script.append(lambda msgs: call("final_answer", answer=f"@orders[{msgs[-1]['content'].strip()}]"))
    await run_eval(tasks, ScriptedModel(script), out, scorer=get_scorer("dabench"), agent_config=AgentConfig(max_turns=4),
                   workers=1, progress=False, settings={"benchmark": "test:sales", "model": "scripted"})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run") / "teacher"
    asyncio.run(_run(d, 4))
    return d


def test_every_state_of_an_attempt_carries_its_outcome(run_dir):
    recs = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in recs] == [True, False, True, False]
    assert [outcome_reward(r) for r in recs] == [1.0, -1.0, 1.0, -1.0]
    messages = recs[0]["trajectory"]["messages"]
    exs = attempt_examples(messages, 1.0, name="r#t0")
    # after each tool result, and the whole attempt; depth = model turns so far
    assert [e.depth for e in exs] == sorted(e.depth for e in exs) and exs[0].depth == 1
    assert exs[-1].messages == messages and all(e.target == 1.0 for e in exs)
    assert all(e.messages[-1]["role"] == "tool" for e in exs[:-1])
    assert [len(e.messages) for e in exs] == sorted({len(e.messages) for e in exs})  # no state twice
    with_root = attempt_examples(messages, 1.0, include_root=True)
    assert with_root[0].depth == 0 and [m["role"] for m in with_root[0].messages] == ["system", "user"]

    examples = load_run_examples([run_dir])
    assert {e.tree for e in examples} == {f"teacher#t{i}" for i in range(4)}
    assert {e.target for e in examples if e.tree.endswith(("t0", "t2"))} == {1.0}
    assert {e.target for e in examples if e.tree.endswith(("t1", "t3"))} == {-1.0}
    with pytest.raises(ValueError, match="not an eval run folder"):
        load_run_examples([run_dir.parent / "missing"])


def test_auc_and_calibration_against_hand_computed_cases():
    # pairs (pos, neg): (.9,.8) (.9,.1) (.3,.8) (.3,.1): 3 of 4 ordered right
    assert auc([0.9, 0.8, 0.3, 0.1], [True, False, True, False]) == 0.75
    assert auc([0.5, 0.5], [True, False]) == 0.5  # a tie counts one half
    assert auc([0.1, 0.9], [True, False]) == 0.0
    assert auc([0.1, 0.9], [True, True]) is None
    # perfectly separated clusters: every resample has AUC 1
    assert cluster_bootstrap_auc([0.9, 0.8, -0.5, -0.7], [True, True, False, False], ["a", "a", "b", "b"], n=200) \
        == (1.0, 1.0)
    bins = calibration([-0.9, -0.8, 0.7, 1.0], [-1.0, 1.0, 1.0, 1.0], bins=2)
    assert bins == [{"bin": [-1.0, 0.0], "n": 2, "mean_score": pytest.approx(-0.85), "mean_target": 0.0,
                     "positive_rate": 0.5},
                    {"bin": [0.0, 1.0], "n": 2, "mean_score": pytest.approx(0.85), "mean_target": 1.0,
                     "positive_rate": 1.0}]


def test_the_error_heuristic_reads_the_latest_output(run_dir):
    examples = load_run_examples([run_dir])
    wrong_after_error = [e for e in examples if e.target < 0 and e.depth == 2]
    assert wrong_after_error and all(last_output_ok(e.messages) == -1.0 for e in wrong_after_error)
    report = evaluate_scores([last_output_ok(e.messages) for e in examples], examples, bootstrap=100)
    assert report["states"] == len(examples) and report["attempts"] == 4
    assert report["by_depth"]["1"]["auc"] == 0.5  # at depth 1 every attempt has only loaded the table
    assert report["by_depth"]["3"]["states"] == 4


def test_value_eval_without_a_model_scores_the_heuristic(run_dir):
    from typer.testing import CliRunner

    from notebook_agent.cli import app

    r = CliRunner().invoke(app, ["train", "value-eval", "--runs", str(run_dir), "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    examples = load_run_examples([run_dir])
    assert summary["states"] == len(examples) and summary["auc"] == summary["heuristic_auc"]
    assert summary["auc"] == evaluate_scores([last_output_ok(e.messages) for e in examples], examples, bootstrap=0)["auc"]
    bad = CliRunner().invoke(app, ["train", "value-eval", "--runs", str(run_dir.parent / "nope")])
    assert bad.exit_code == 1 and "not an eval run folder" in bad.output


def test_value_model_trains_on_attempts_and_is_measured(tiny_model_dir, run_dir, tmp_path):
    """`train value --runs` (frozen backbone: the head learns on cached pooled states), then
    `train value-eval` on the same states: a report with the AUC by depth. In bfloat16: the
    dtype is recorded and the loaded model scores in it (the head learned on those states)."""
    from typer.testing import CliRunner

    from notebook_agent.cli import app

    r = CliRunner().invoke(app, ["train", "value", "--model", str(tiny_model_dir), "--runs", str(run_dir),
                                 "--out", str(tmp_path / "v"), "--epochs", "60", "--head-lr", "0.05",
                                 "--max-length", "96", "--freeze-backbone", "--bf16"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    import torch

    from notebook_agent.models.value_model import ValueModel

    assert json.loads((tmp_path / "v" / "value_config.json").read_text())["dtype"] == "bfloat16"
    loaded = ValueModel.load(tmp_path / "v", device="cpu")
    assert next(loaded.backbone.parameters()).dtype == torch.bfloat16 and loaded.head.weight.dtype == torch.float32
    assert res["examples"] == len(load_run_examples([run_dir])) and res["mse_after"] < res["mse_before"]
    r = CliRunner().invoke(app, ["train", "value-eval", "--model", str(tmp_path / "v"), "--runs", str(run_dir),
                                 "--out", str(tmp_path / "eval.json"), "--bootstrap", "50"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "eval.json").read_text())
    assert summary["states"] == res["examples"] and summary["positive"] == report["model"]["positive"] > 0
    assert summary["auc"] > 0.5  # it saw these states: it separates them better than chance
    assert len(report["scores"]) == summary["states"] and set(summary["auc_by_depth"]) == {"1", "3"}


def test_pooling_reads_the_final_token_whatever_the_padding(tiny_model_dir, run_dir):
    """"last" pooling takes each row's final real token (not a pad), so a state scores the same
    alone and in a batch beside a longer one; "mean_last" concatenates both poolings."""
    import torch

    from notebook_agent.models.value_model import ValueModel, ValueModelConfig
    from notebook_agent.train.value_train import ValueSettings, build_value_model

    torch.manual_seed(0)
    examples = load_run_examples([run_dir])
    model = build_value_model(ValueSettings(model=str(tiny_model_dir), out="unused", max_length=8192, pooling="last"))
    short, long = sorted((e.messages for e in examples), key=lambda m: len(model.token_ids(m)))[::len(examples) - 1]
    ids = model.token_ids(short)
    assert len(ids) < len(model.token_ids(long)) < 8192
    alone = model.features([short])[0]
    batched = model.features([short, long])[0]
    assert torch.allclose(alone, batched, atol=1e-4)
    hidden = model.backbone(**model.pad([ids]), output_hidden_states=True).hidden_states[-1][0]
    assert torch.allclose(alone, hidden[len(ids) - 1], atol=1e-4)
    assert not torch.allclose(alone, hidden[len(ids) - 2], atol=1e-4)

    both = ValueModel(model.backbone, model.tokenizer, ValueModelConfig(template=model.config.template,
                                                                          codec=model.config.codec, max_length=8192,
                                                                          pooling="mean_last"))
    f = both.features([short, long])
    assert f.shape[1] == 2 * alone.shape[0] and torch.allclose(f[0, alone.shape[0]:], alone, atol=1e-4)
    with pytest.raises(ValueError, match="pooling"):
        ValueModel(model.backbone, model.tokenizer, ValueModelConfig(template=model.config.template, pooling="max"))


def test_paired_auc_difference_resamples_attempts_together():
    """One bootstrap over attempts for both scorers: a scorer that ranks every pair right beats
    one that ranks half of them right, with an interval above 0; a scorer against itself is 0."""
    from notebook_agent.train.value_eval import paired_auc_difference

    positive = [True, False] * 10
    clusters = [f"a{i // 2}" for i in range(20)]  # ten attempts, one positive and one negative state each
    perfect = [1.0 if y else -1.0 for y in positive]
    half = [(1.0 if y else -1.0) if i % 4 < 2 else (-1.0 if y else 1.0) for i, y in enumerate(positive)]
    d = paired_auc_difference(perfect, half, positive, clusters, n=200)
    assert d["difference"] == pytest.approx(1.0 - auc(half, positive)) and d["difference"] > 0.3
    assert d["ci"][0] > 0 and d["p_not_better"] == 0.0
    same = paired_auc_difference(half, half, positive, clusters, n=200)
    assert same["difference"] == 0 and same["ci"] == [0, 0] and same["p_not_better"] == 1.0
    assert paired_auc_difference(perfect, half, [True] * 20, clusters, n=50) is None


def test_value_benchmark_chooses_by_cross_validation_and_reports_held_out_auc(tiny_model_dir, run_dir, tmp_path):
    """benchmarks/value.py end to end on real attempt records: every (truncation, pooling)
    setting is measured on the held-out states, the reported one is the best by CV on the
    training attempts, and the report, the JSON line and the ROC plot agree."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "value.json"
    p = subprocess.run([sys.executable, str(root / "benchmarks" / "value.py"), "--train-runs", str(run_dir),
                        "--eval-runs", str(run_dir), "--model", str(tiny_model_dir), "--max-length", "64,96",
                        "--epochs", "2,8", "--bootstrap", "20", "--no-bf16", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    report = json.loads(out.read_text())
    settings = report["settings"]
    assert set(settings) == {f"{pool}, last {n}" for pool in ("mean", "last", "mean_last") for n in (64, 96)}
    cv = {k: r["cv_auc"][str(r["epochs"])] for k, r in settings.items()}
    assert summary["chosen"] == max(cv, key=lambda k: cv[k])
    assert summary["auc_chosen"] == settings[summary["chosen"]]["auc"]
    examples = load_run_examples([run_dir])
    assert summary["held_states"] == summary["train_states"] == len(examples)
    assert summary["auc_heuristic"] == evaluate_scores([last_output_ok(e.messages) for e in examples], examples,
                                                       bootstrap=0)["auc"]
    assert "task id(s) in both sets" in p.stderr  # the same runs on both sides are flagged
    assert out.with_suffix(".png").stat().st_size > 1000
