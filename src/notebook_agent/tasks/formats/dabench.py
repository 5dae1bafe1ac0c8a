"""InfiAgent-DABench: a questions JSONL, a labels JSONL and a directory of CSV tables.

Layouts accepted for `dabench:PATH`: a directory holding `questions.jsonl`, `labels.jsonl`
and `tables/` (as in dabench-dev), or the official names `da-dev-questions.jsonl`,
`da-dev-labels.jsonl`, `da-dev-tables/`; or PATH is the questions file itself, with the
labels and tables beside it. Without a labels file the tasks load unlabelled (the public
test set has none) and cannot be scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..task import Task
from .common import BenchmarkError, LoadIssue, LoadResult, as_text, pick_dir, pick_file, read_jsonl, record_id

QUESTION_FILES = ["questions.jsonl", "da-dev-questions.jsonl", "da-test-questions.jsonl"]
LABEL_FILES = ["labels.jsonl", "da-dev-labels.jsonl", "da-test-labels.jsonl"]
TABLE_DIRS = ["tables", "da-dev-tables", "da-test-tables"]


def _labels_beside(questions: Path) -> Path | None:
    base = questions.parent
    candidates = [questions.name.replace("questions", "labels")] + LABEL_FILES
    for name in candidates:
        if name != questions.name and (base / name).is_file():
            return base / name
    return None


def parse_label(record: dict[str, Any]) -> list[list[Any]]:
    """`common_answers` as [[name, value], ...]; ValueError says what is wrong."""
    answers = record.get("common_answers")
    if not isinstance(answers, list) or not answers:
        raise ValueError("label has no `common_answers` list")
    out = []
    for pair in answers:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], str) or not pair[0]:
            raise ValueError(f"unparsable label item {pair!r}: expected [answer_name, value]")
        out.append([pair[0], pair[1]])
    return out


def load_dabench(path: str | Path, labels: str | Path | None = None, tables: str | Path | None = None) -> LoadResult:
    path = Path(path).expanduser()
    questions_file = pick_file(path, QUESTION_FILES, "questions file")
    base = questions_file.parent
    labels_file = Path(labels) if labels else _labels_beside(questions_file)
    tables_dir = Path(tables) if tables else (pick_dir(base, TABLE_DIRS) or base)
    if labels and not labels_file.is_file():  # type: ignore[union-attr]
        raise BenchmarkError(f"labels file {labels_file} does not exist")

    result = LoadResult()
    gold: dict[str, list[list[Any]]] | None = None
    if labels_file is not None:
        gold = {}
        for line in read_jsonl(labels_file):
            if line.record is None:
                result.errors.append(LoadIssue(f"labels line {line.line_no}", line.error))
                continue
            lid = record_id(line.record, line.line_no, "id")
            try:
                gold[lid] = parse_label(line.record)
            except ValueError as e:
                gold[lid] = []
                result.errors.append(LoadIssue(lid, str(e)))

    seen: set[str] = set()
    for line in read_jsonl(questions_file):
        if line.record is None:
            result.errors.append(LoadIssue(f"line {line.line_no}", line.error))
            continue
        rec = line.record
        tid = record_id(rec, line.line_no, "id")
        if tid in seen:
            result.errors.append(LoadIssue(tid, "duplicate id"))
            continue
        seen.add(tid)
        question = as_text(rec.get("question")).strip()
        if not question:
            result.errors.append(LoadIssue(tid, "no question"))
            continue
        answer = None
        if gold is not None:
            if tid not in gold:
                result.errors.append(LoadIssue(tid, f"no label in {labels_file.name}"))  # type: ignore[union-attr]
                continue
            if not gold[tid]:
                continue  # already reported as an unparsable label
            answer = gold[tid]
        file_name = as_text(rec.get("file_name")).strip()
        if not file_name:
            result.errors.append(LoadIssue(tid, "no file_name"))
            continue
        file_path = tables_dir / file_name
        if not file_path.is_file():
            result.errors.append(LoadIssue(tid, f"file not found: {file_path}"))
            continue
        concepts = rec.get("concepts") or []
        result.tasks.append(Task(
            id=tid,
            question=question,
            files=[file_path],
            constraints=as_text(rec.get("constraints")),
            format=as_text(rec.get("format")),
            answer=answer,
            level=as_text(rec.get("level")),
            concepts=[str(c) for c in concepts] if isinstance(concepts, list) else [str(concepts)],
            benchmark="dabench",
        ))
    if not result.tasks and not result.errors:
        raise BenchmarkError(f"{questions_file} holds no questions")
    return result
