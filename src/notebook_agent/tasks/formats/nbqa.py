"""NbQA (JUPITER's task format): `task` or `question`, `constraints`, `format`,
`file_names`, `answer`, `label`, `solution`, plus a directory of data files.

- `file_names` may be a list, the string form of a list (`"['a.csv', 'b.csv']"`, as JUPITER
  writes it), or a comma-separated string; `data_files` is read when it is absent.
- the gold answer is `answer` when present, else `label`: a list of [name, value] pairs or a
  string of `@name[value]` items; a string with no such item is an unparsable label.
- the id is `id` (or `task_id`); records without one get `nbqa-` + the first 12 hex digits of
  the question's md5, stable across reorderings.
- `solution` (the step-wise reference) and any other field are kept in `meta`.

Layouts accepted for `nbqa:PATH`: the JSONL file, with the data files in `files/`,
`data_files/`, `tables/` or `data/` beside it (else beside the JSONL itself); or a directory
holding `nbqa.jsonl`, `tasks.jsonl`, `test.jsonl` or `train.jsonl`.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Any

from ..scoring.dabench import extract_answers_whole
from ..task import Task
from .common import BenchmarkError, LoadIssue, LoadResult, as_text, pick_dir, pick_file, read_jsonl, resolve_file

RECORD_FILES = ["nbqa.jsonl", "tasks.jsonl", "test.jsonl", "train.jsonl"]
FILE_DIRS = ["files", "data_files", "tables", "data"]
KNOWN = {"id", "task_id", "task", "question", "constraints", "format", "file_names", "data_files",
         "answer", "label", "level", "concepts"}


def parse_file_names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError) as e:
                raise ValueError(f"unparsable file_names {text!r}") from e
        else:
            return [p.strip() for p in text.split(",") if p.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"unparsable file_names {value!r}")
    return [v.strip() for v in value if v.strip()]


def parse_answer(value: Any) -> list[list[Any]]:
    """A gold answer as [[name, value], ...]; ValueError when there is none to be had."""
    if isinstance(value, str):
        pairs = [[k, v] for k, v in extract_answers_whole(value).items()]
        if not pairs:
            raise ValueError(f"unparsable label {value[:80]!r}: no @name[value] item")
        return pairs
    if isinstance(value, dict) and value:
        return [[str(k), v] for k, v in value.items()]
    if isinstance(value, (list, tuple)) and value:
        out = []
        for pair in value:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], str) or not pair[0]:
                raise ValueError(f"unparsable answer item {pair!r}: expected [answer_name, value]")
            out.append([pair[0], pair[1]])
        return out
    raise ValueError(f"unparsable label {value!r}")


def load_nbqa(path: str | Path, files_dir: str | Path | None = None) -> LoadResult:
    path = Path(path).expanduser()
    records_file = pick_file(path, RECORD_FILES, "NbQA JSONL file")
    base = records_file.parent
    if files_dir is not None:
        fdir = Path(files_dir)
        if not fdir.is_dir():
            raise BenchmarkError(f"files directory {fdir} does not exist")
    else:
        fdir = pick_dir(base, FILE_DIRS) or base

    result = LoadResult()
    seen: set[str] = set()
    for line in read_jsonl(records_file):
        if line.record is None:
            result.errors.append(LoadIssue(f"line {line.line_no}", line.error))
            continue
        rec = line.record
        question = as_text(rec.get("question") or rec.get("task")).strip()
        tid = as_text(rec.get("id") if rec.get("id") is not None else rec.get("task_id")).strip()
        if not tid:
            tid = ("nbqa-" + hashlib.md5(question.encode()).hexdigest()[:12]) if question else f"line {line.line_no}"
        if tid in seen:
            result.errors.append(LoadIssue(tid, "duplicate id"))
            continue
        seen.add(tid)
        if not question:
            result.errors.append(LoadIssue(tid, "no question (neither `task` nor `question`)"))
            continue
        gold = rec.get("answer") if rec.get("answer") not in (None, "", []) else rec.get("label")
        answer = None
        if gold not in (None, "", []):
            try:
                answer = parse_answer(gold)
            except ValueError as e:
                result.errors.append(LoadIssue(tid, str(e)))
                continue
        try:
            names = parse_file_names(rec.get("file_names", rec.get("data_files")))
        except ValueError as e:
            result.errors.append(LoadIssue(tid, str(e)))
            continue
        files = [resolve_file(n, fdir) for n in names]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            result.errors.append(LoadIssue(tid, "file not found: " + ", ".join(missing)))
            continue
        concepts = rec.get("concepts") or []
        result.tasks.append(Task(
            id=tid,
            question=question,
            files=files,
            constraints=as_text(rec.get("constraints")),
            format=as_text(rec.get("format")),
            answer=answer,
            level=as_text(rec.get("level")),
            concepts=[str(c) for c in concepts] if isinstance(concepts, list) else [str(concepts)],
            benchmark="nbqa",
            meta={k: v for k, v in rec.items() if k not in KNOWN},
        ))
    if not result.tasks and not result.errors:
        raise BenchmarkError(f"{records_file} holds no records")
    return result
