"""NbQA and JSONL answers with nested brackets are compared whole (InfiAgent's own tasks keep
the official lazy parse)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notebook_agent.tasks.loaders import load_benchmark
from notebook_agent.tasks.scoring import get_scorer, scorer_for
from notebook_agent.tasks.scoring.dabench import extract_answers_whole
from notebook_agent.tasks.task import Task


@pytest.mark.parametrize(("text", "expected"), [
    ("@a[[1,2],[3,4]]", {"a": "[1,2],[3,4]"}),
    ("@a[[[1, 2], [3, 4]]] and @b[5]", {"a": "[[1, 2], [3, 4]]", "b": "5"}),
    ("@a[x] @a[[y]]", {"a": "[y]"}),                       # last occurrence wins, as officially
    ("@a[[1, 2]\n@b[3]", {"a": "[1, 2", "b": "3"}),         # unbalanced on its line: the lazy value
    ("@a[no close", {}),
    ("@a[\n1]", {}),                                        # never across a newline
    ("@a[] @b[{'k': [1]}]", {"a": "", "b": "{'k': [1]}"}),
])
def test_extract_answers_whole(text: str, expected: dict[str, str]):
    assert extract_answers_whole(text) == expected


@pytest.mark.parametrize("benchmark", ["nbqa", "jsonl", ""])
def test_a_wrong_nested_answer_is_wrong_outside_dabench(benchmark: str):
    t = Task(id="t", question="q", answer="@a[[1,2],[3,4]]", benchmark=benchmark)
    sc = get_scorer("dabench")
    wrong = sc.score(t, "@a[[1,2],[9,9]]")
    assert not wrong.correct and wrong.details["predicted"] == {"a": "[1,2],[9,9]"}
    assert sc.score(t, "Done: @a[[1,2],[3,4]]").correct


def test_dabench_tasks_keep_the_official_lazy_parse():
    t = Task(id="t", question="q", answer=[["a", "[1,2"]], benchmark="dabench")
    s = get_scorer("dabench").score(t, "@a[[1,2],[9,9]]")
    assert s.correct and s.details["predicted"] == {"a": "[1,2"}   # the official script's verdict


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_loaded_nbqa_and_jsonl_gold_is_whole(tmp_path: Path):
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "d.csv").write_text("x\n1\n")
    nbqa = _write(tmp_path / "nbqa.jsonl", [{"question": "q", "file_names": ["d.csv"], "answer": "@m[[1,2],[3,4]]"}])
    jsonl = _write(tmp_path / "set.jsonl", [{"id": "j1", "question": "q", "files": ["files/d.csv"],
                                             "answer": "@m[[1,2],[3,4]]"}])
    for kind, path in [("nbqa", nbqa), ("jsonl", jsonl)]:
        result = load_benchmark(f"{kind}:{path}")
        assert not result.errors, result.errors
        [t] = result.tasks
        sc = scorer_for(kind)
        assert sc.score(t, "@m[[1,2],[3,4]]").correct, kind
        assert not sc.score(t, "@m[[1,2],[3,5]]").correct, kind
