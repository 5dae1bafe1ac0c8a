"""Loaders for every format: good records load, bad ones are reported with their ids and skipped."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from notebook_agent.tasks.formats import BenchmarkError
from notebook_agent.tasks.loaders import load_benchmark, parse_spec


def write_jsonl(path: Path, rows: list) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def issues(result) -> dict[str, str]:
    return {e.id: e.reason for e in result.errors}


# --- InfiAgent-DABench -------------------------------------------------------------------------
@pytest.fixture
def dabench_dir(tmp_path: Path) -> Path:
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "a.csv").write_text("x,y\n1,2\n")
    q = {"question": "Mean of x?", "concepts": ["Summary Statistics"], "constraints": "Round to 2.",
         "format": "@mean_x[value]", "file_name": "a.csv", "level": "easy"}
    write_jsonl(tmp_path / "questions.jsonl", [
        {**q, "id": 1},
        {**q, "id": 2, "file_name": "missing.csv"},
        {**q, "id": 3, "question": "  "},
        '{"id": 4, "question": "broken',
        {**q, "id": 5},
        {**q, "id": 6},
        {**q, "id": 1, "question": "dup"},
        {**q, "id": 7, "level": "hard", "concepts": ["Machine Learning", "Correlation Analysis"]},
    ])
    write_jsonl(tmp_path / "labels.jsonl", [
        {"id": 1, "common_answers": [["mean_x", "1.00"]]},
        {"id": 2, "common_answers": [["mean_x", "1.00"]]},
        {"id": 3, "common_answers": [["mean_x", "1.00"]]},
        {"id": 5, "common_answers": "1.00"},
        {"id": 7, "common_answers": [["a", "1"], ["b", "x"]]},
        "not json",
    ])
    return tmp_path


def test_dabench_good_and_bad_records(dabench_dir: Path):
    r = load_benchmark(f"dabench:{dabench_dir}")
    assert [t.id for t in r.tasks] == ["1", "7"]
    t = r.tasks[0]
    assert t.question == "Mean of x?" and t.answer == [["mean_x", "1.00"]] and t.level == "easy"
    assert t.files == [dabench_dir / "tables" / "a.csv"] and t.format == "@mean_x[value]"
    assert t.concepts == ["Summary Statistics"] and t.constraints == "Round to 2." and t.benchmark == "dabench"
    assert r.tasks[1].concepts == ["Machine Learning", "Correlation Analysis"]
    got = issues(r)
    assert "file not found" in got["2"]
    assert got["3"] == "no question"
    assert "bad JSON" in got["line 4"]
    assert "common_answers" in got["5"]          # unparsable label
    assert "no label" in got["6"]
    assert "bad JSON" in got["labels line 6"]
    assert len([e for e in r.errors if e.id == "1"]) == 1 and "duplicate" in issues(r)["1"]


def test_dabench_questions_file_path_and_filters(dabench_dir: Path):
    r = load_benchmark(f"dabench:{dabench_dir / 'questions.jsonl'}", ids=["7", "1", "99"])
    assert [t.id for t in r.tasks] == ["1", "7"]          # file order
    assert issues(r)["99"] == "not in the benchmark"
    assert "duplicate" in issues(r)["1"] and "6" not in issues(r)
    assert [t.id for t in load_benchmark(f"dabench:{dabench_dir}", limit=1).tasks] == ["1"]


def test_dabench_without_labels_loads_unlabelled(tmp_path: Path, dabench_dir: Path):
    (dabench_dir / "labels.jsonl").unlink()
    r = load_benchmark(f"dabench:{dabench_dir}")
    assert {t.id for t in r.tasks} == {"1", "5", "6", "7"} and all(t.answer is None for t in r.tasks)


def test_dabench_official_file_names(tmp_path: Path):
    (tmp_path / "da-dev-tables").mkdir()
    (tmp_path / "da-dev-tables" / "t.csv").write_text("a\n1\n")
    write_jsonl(tmp_path / "da-dev-questions.jsonl", [{"id": 0, "question": "q", "file_name": "t.csv"}])
    write_jsonl(tmp_path / "da-dev-labels.jsonl", [{"id": 0, "common_answers": [["n", "1"]]}])
    r = load_benchmark(f"dabench:{tmp_path}")
    assert r.tasks[0].files == [tmp_path / "da-dev-tables" / "t.csv"] and r.tasks[0].answer == [["n", "1"]]


# --- DABStep -----------------------------------------------------------------------------------
@pytest.fixture
def dabstep_dir(tmp_path: Path) -> Path:
    ctx = tmp_path / "context"
    ctx.mkdir()
    for name in ("payments.csv", "fees.json", "manual.md"):
        (ctx / name).write_text("x\n")
    (ctx / ".hidden").write_text("")
    write_jsonl(tmp_path / "tasks.jsonl", [
        {"task_id": "1", "question": "How many rows?", "guidelines": "Answer with an integer.", "level": "easy",
         "answer": "138236"},
        {"task_id": 2, "question": "Which card?", "guidelines": "", "level": "Hard", "answer": ""},
        {"task_id": "3", "question": "", "level": "easy", "answer": "x"},
        {"task_id": "4", "question": "q", "level": "easy", "answer": ["a"]},
        "[1, 2]",
    ])
    return tmp_path


def test_dabstep_tasks_share_every_context_file(dabstep_dir: Path):
    r = load_benchmark(f"dabstep:{dabstep_dir}")
    assert [t.id for t in r.tasks] == ["1", "2"]
    names = [p.name for p in r.tasks[0].files]
    assert names == ["fees.json", "manual.md", "payments.csv"]
    assert r.tasks[1].files == r.tasks[0].files
    assert r.tasks[0].guidelines == "Answer with an integer." and r.tasks[0].answer == "138236"
    assert r.tasks[1].answer is None and r.tasks[1].level == "hard"
    got = issues(r)
    assert got["3"] == "no question" and "unparsable answer" in got["4"] and "not an object" in got["line 5"]


def test_dabstep_needs_a_context_dir(tmp_path: Path):
    write_jsonl(tmp_path / "tasks.jsonl", [{"task_id": "1", "question": "q", "answer": "1"}])
    with pytest.raises(BenchmarkError, match="no context directory"):
        load_benchmark(f"dabstep:{tmp_path}")


# --- NbQA --------------------------------------------------------------------------------------
@pytest.fixture
def nbqa_file(tmp_path: Path) -> Path:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.csv").write_text("x\n1\n")
    (files / "b.csv").write_text("x\n2\n")
    solution = [{"thought": "load", "python_code": "import pandas", "code_output": ""}]
    write_jsonl(tmp_path / "nbqa.jsonl", [
        {"task": "Sum x in a and b.", "constraints": "c", "format": "@total[v]", "file_names": "['a.csv', 'b.csv']",
         "answer": [["total", "3"]], "label": "@total[3]", "solution": solution},
        {"id": "q2", "question": "Mean?", "file_names": ["a.csv"], "label": "@mean[1.0] @n[1]"},
        {"id": "q3", "question": "Max?", "file_names": "a.csv, b.csv", "answer": "@max[2]"},
        {"id": "q4", "question": "Bad label", "file_names": ["a.csv"], "label": "the answer is 3"},
        {"id": "q5", "question": "Missing file", "file_names": ["nope.csv"], "label": "@a[1]"},
        {"id": "q6", "constraints": "no question", "file_names": ["a.csv"], "label": "@a[1]"},
        {"id": "q7", "question": "Bad names", "file_names": "['a.csv'", "label": "@a[1]"},
    ])
    return tmp_path / "nbqa.jsonl"


def test_nbqa_records(nbqa_file: Path):
    r = load_benchmark(f"nbqa:{nbqa_file}")
    assert [t.id for t in r.tasks][1:] == ["q2", "q3"]
    first = r.tasks[0]
    assert first.id == "nbqa-" + hashlib.md5(b"Sum x in a and b.").hexdigest()[:12]
    assert first.question == "Sum x in a and b." and [p.name for p in first.files] == ["a.csv", "b.csv"]
    assert first.answer == [["total", "3"]] and first.meta["solution"][0]["thought"] == "load"
    assert r.tasks[1].answer == [["mean", "1.0"], ["n", "1"]]       # from `label`
    assert r.tasks[2].answer == [["max", "2"]] and len(r.tasks[2].files) == 2
    got = issues(r)
    assert "unparsable label" in got["q4"] and "file not found" in got["q5"]
    assert "no question" in got["q6"] and "unparsable file_names" in got["q7"]
    # a directory holding the file works too
    assert len(load_benchmark(f"nbqa:{nbqa_file.parent}").tasks) == 3


# --- plain JSONL -------------------------------------------------------------------------------
def test_plain_jsonl(tmp_path: Path):
    (tmp_path / "d.csv").write_text("x\n1\n")
    write_jsonl(tmp_path / "set.jsonl", [
        {"id": "a", "question": "q?", "files": ["d.csv"], "answer": "@n[1]", "level": "easy", "source": "me"},
        {"id": "b", "question": "free?", "answer": "Visa"},
        {"id": "c", "question": "pairs?", "answer": [["n", 1]]},
        {"id": "d", "question": "no answer"},
        {"question": "no id"},
        {"id": "e", "question": "missing", "files": ["zz.csv"]},
        {"id": "f", "question": "bad pairs", "answer": [["n"]]},
    ])
    r = load_benchmark(f"jsonl:{tmp_path / 'set.jsonl'}")
    by = {t.id: t for t in r.tasks}
    assert list(by) == ["a", "b", "c", "d"]
    assert by["a"].answer == [["n", "1"]] and by["a"].files == [tmp_path / "d.csv"] and by["a"].meta == {"source": "me"}
    assert by["b"].answer == "Visa" and by["c"].answer == [["n", 1]] and by["d"].answer is None
    got = issues(r)
    assert got["line 5"] == "no id" and "file not found" in got["e"] and "unparsable" in got["f"]
    assert parse_spec(str(tmp_path / "set.jsonl"))[0] == "jsonl"


def test_bad_specs(tmp_path: Path):
    with pytest.raises(BenchmarkError, match="KIND:PATH"):
        load_benchmark("csv:/x")
    with pytest.raises(BenchmarkError, match="does not exist"):
        load_benchmark(f"dabench:{tmp_path / 'nope'}")
    with pytest.raises(BenchmarkError, match="no questions file"):
        load_benchmark(f"dabench:{tmp_path}")
