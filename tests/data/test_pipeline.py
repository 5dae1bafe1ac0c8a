"""The pipeline end to end: CLI, steps alone, LLM steps (scripted model for exact bookkeeping),
traces in a real kernel, export to `datasets` and NbQA tasks the harness loads."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import yaml
from data_notebooks import SALES_CSV
from typer.testing import CliRunner

from notebook_agent.cli import app
from notebook_agent.data import load_config, run_pipeline
from notebook_agent.data.llm.prompts import SYSTEM as REVIEW_SYSTEM
from notebook_agent.models.base import ModelError
from notebook_agent.models.scripted import ScriptedModel, call
from notebook_agent.tasks import load_benchmark

MEAN_UNITS = round(pd.read_csv(io.StringIO(SALES_CSV))["units"].mean(), 3)


def write_config(tmp: Path, nbdir: Path, data: Path, **extra) -> Path:
    cfg = {"output": str(tmp / "out"), "input": {"path": str(nbdir)}, "link": {"data_root": str(data)}, **extra}
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def counters(stats, step, block_part):
    return next(v["counters"] for k, v in stats[step]["blocks"].items() if block_part in k)


def test_cli_steps_1_to_4_then_one_step_alone(corpus, tmp_path):
    nbdir, data, _ = corpus
    cfg = write_config(tmp_path, nbdir, data)
    runner = CliRunner()
    r = runner.invoke(app, ["data", "build", str(cfg), "--steps", "read,filter,dedup"])
    assert r.exit_code == 0, r.output
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert counters(stats, "read", "ipynb")["notebooks"] == 12
    assert counters(stats, "filter", "valid notebook")["dropped_invalid_json"] == 1
    assert counters(stats, "filter", "execution order")["dropped_out_of_order"] == 1
    assert counters(stats, "filter", "teaching")["dropped_teaching_titanic"] == 1
    assert counters(stats, "dedup", "minhash")["dropped_near_duplicate"] == 1
    assert counters(stats, "dedup", "minhash")["forwarded"] == 2
    # link alone reads dedup's output
    r = runner.invoke(app, ["data", "build", str(cfg), "--steps", "link"])
    assert r.exit_code == 0, r.output
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert counters(stats, "link", "data files")["executable"] == 2
    assert "dedup" in stats  # earlier steps' stats are kept
    rows = [json.loads(line) for p in (tmp_path / "out" / "stages" / "link").glob("*.jsonl.gz")
            for line in __import__("gzip").open(p, "rt")]
    assert sorted(r["id"] for r in rows) == ["good_sales.ipynb", "good_weather.ipynb"]
    assert all("_nb" not in r["metadata"] for r in rows)


def test_cli_rejects_bad_config_and_missing_stage(corpus, tmp_path):
    nbdir, data, _ = corpus
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"filters": {"no_such_threshold": 1}}))
    r = runner.invoke(app, ["data", "build", str(bad)])
    assert r.exit_code == 2 and "no_such_threshold" in r.output
    cfg = write_config(tmp_path, nbdir, data)
    r = runner.invoke(app, ["data", "build", str(cfg), "--steps", "qa"])
    assert r.exit_code == 2 and "run it first" in " ".join(r.output.split())


def responder(messages):
    """Plays reviewer and agent: answers by prompt kind; fails for the weather notebook's edu score."""
    user = messages[-1]["content"] if messages else ""
    if messages[0]["content"] != REVIEW_SYSTEM:  # the agent
        if not any(m["role"] == "assistant" for m in messages):
            return call("execute_code", comment="mean units",
                        code="import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(round(df['units'].mean(), 3))")
        return call("final_answer", answer=f"@mean_units[{MEAN_UNITS}]")
    if "Rate how useful" in user:
        if "weather.csv" in user:
            raise ModelError("backend down", retryable=True)
        return "Score: 5\nJustification: a clear analysis of real sales data."
    if "Is this notebook a data analysis" in user:
        return "YES"
    if "Write up to" in user:
        return "Here you go:\n```json\n" + json.dumps([
            {"question": "What is the mean of units?", "constraints": "round to 3 decimals",
             "format": "@mean_units[value]", "answer": f"@mean_units[{MEAN_UNITS}]", "source_cells": [3]},
            {"question": "What is the median price?", "format": "@median_price[value]",
             "answer": "@median_price[987.654]", "source_cells": [2]},
            {"question": "no format here", "answer": "4"},
        ]) + "\n```"
    if "Proposed answer" in user:
        return "CONFIRMED"
    return "?"


def test_llm_traces_export_with_scripted_model(corpus, tmp_path):
    nbdir, data, _ = corpus
    cfg = load_config(write_config(tmp_path, nbdir, data, llm={"retries": 1, "retry_backoff_s": 0.01},
                                   traces={"agent": {"max_turns": 4}}))
    model = ScriptedModel([responder] * 200)
    stats = run_pipeline(cfg, model=model, log=lambda m: None)
    score = counters(stats, "score", "edu score")
    assert score["dropped_model_error"] == 1 and score["forwarded"] == 1 and score["score_5"] == 1
    assert score["model_calls"] == 3  # 1 ok + 2 tries of the failing one
    qa = counters(stats, "qa", "qa generation")
    assert qa["questions"] == 1 and qa["qa_rejected_ungrounded"] == 1 and qa["qa_rejected_answer_not_in_format"] == 1
    assert counters(stats, "qa", "verification")["confirmed"] == 1
    tr = counters(stats, "traces", "traces")
    assert tr["traced"] == 1 and tr["correct"] == 1
    assert stats["export"]["dataset"] == {"rows": 2, "tasks": 1, "non_thinking": 1, "thinking": 1}

    import datasets

    ds = datasets.load_from_disk(str(tmp_path / "out" / "dataset" / "non_thinking"))
    row = ds[0]
    assert row["correct"] is True and row["executor_type"] == "jupyter" and row["edu_score"] == 5
    assert row["files_used"] == ["sales.csv"] and row["packages_used"] == ["pandas"]
    assert row["answer"] == f"@mean_units[{MEAN_UNITS}]" == row["predicted_answer"]
    roles = [m["role"] for m in row["messages"]]
    assert roles[:3] == ["system", "user", "assistant"] and "tool" in roles
    assert json.loads(row["tools"])[0]["function"]["name"] == "execute_code"
    assert row["source"].endswith("good_sales.ipynb")

    loaded = load_benchmark(f"nbqa:{tmp_path / 'out' / 'tasks' / 'nbqa.jsonl'}")
    assert not loaded.errors
    (task,) = loaded.tasks
    assert task.answer == [["mean_units", str(MEAN_UNITS)]] and task.files[0].name == "sales.csv"
    assert task.files[0].read_text() == (data / "sales.csv").read_text()

    # a rerun pays nothing: every reviewer call comes from the cache
    again = run_pipeline(cfg, steps="score,qa", model=ScriptedModel([responder] * 200), log=lambda m: None)
    assert counters(again, "score", "edu score")["cache_hits"] == 1
    assert counters(again, "score", "edu score")["model_calls"] == 2  # only the failing call is retried
    assert counters(again, "qa", "qa generation").get("model_calls", 0) == 0


def test_two_tasks_shard_the_input(corpus, tmp_path):
    nbdir, data, _ = corpus
    cfg = load_config(write_config(tmp_path, nbdir, data, executor={"tasks": 2, "workers": 1}))
    stats = run_pipeline(cfg, steps="read,filter", log=lambda m: None)
    assert counters(stats, "read", "ipynb")["notebooks"] == 12  # merged over both ranks
    shards = sorted(p.name for p in (tmp_path / "out" / "stages" / "filter").glob("*.jsonl.gz"))
    assert shards == ["00000.jsonl.gz", "00001.jsonl.gz"]


def test_tables_step_makes_tasks_from_linked_files_and_needs_an_exclusion_list(corpus, tmp_path):
    """`--steps tables` after link: the linked CSVs become generated tasks the harness loads;
    a benchmark table among them is kept out; without an exclusion list the step refuses."""
    nbdir, data, _ = corpus
    runner = CliRunner()
    cfg = write_config(tmp_path, nbdir, data)
    r = runner.invoke(app, ["data", "build", str(cfg), "--steps", "read,filter,dedup,link"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["data", "build", str(cfg), "--steps", "tables"])
    assert r.exit_code == 2 and "no_exclude" in " ".join(r.output.split())
    linked = sorted({Path(f["path"]).name for p in (tmp_path / "out" / "stages" / "link").glob("*.jsonl.gz")
                     for line in __import__("gzip").open(p, "rt") for f in json.loads(line)["metadata"].get("files", [])
                     if f.get("path")})
    assert linked == ["sales.csv", "weather.csv"]
    header = pd.read_csv(data / "sales.csv").columns
    (tmp_path / "bench.tsv").write_text("weather_bench.csv\t" + ",".join(header) + "\n")  # sales' columns
    cfg = write_config(tmp_path, nbdir, data, tables={"exclude": [str(tmp_path / "bench.tsv")], "heldout": 0.0})
    r = runner.invoke(app, ["data", "build", str(cfg), "--steps", "tables"])
    assert r.exit_code == 0, r.output
    stats = json.loads((tmp_path / "out" / "table_tasks" / "stats.json").read_text())
    assert stats["benchmark_tables_excluded"] == ["weather_bench.csv"]
    tasks = load_benchmark(f"dabench:{tmp_path / 'out' / 'table_tasks' / 'train'}").tasks
    assert tasks and {t.files[0].name.split("_")[0] for t in tasks} == {"weather"}  # only the other table
