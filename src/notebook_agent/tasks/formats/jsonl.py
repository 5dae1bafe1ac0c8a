"""Plain JSONL: one task a line, the `Task` fields by name.

Required: `id` and `question`. Optional: `files` (paths, relative ones to the JSONL's
directory), `answer` (a list of [name, value] pairs or an `@name[value]` string, scored with
the DABench rules; any other text, scored with DABStep's rules; absent = unlabelled),
`constraints`, `format`, `guidelines`, `level`, `concepts`, `meta`. Other fields go to `meta`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..task import Task
from .common import BenchmarkError, LoadIssue, LoadResult, as_text, read_jsonl, record_id, resolve_file
from .nbqa import parse_answer, parse_file_names

KNOWN = {"id", "question", "files", "answer", "constraints", "format", "guidelines", "level", "concepts", "meta",
         "benchmark"}


def _answer(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (list, dict)):
        return parse_answer(value)
    if isinstance(value, str) and "@" in value:
        try:
            return parse_answer(value)
        except ValueError:
            return value  # free text that happens to hold an '@'
    return str(value)


def load_jsonl(path: str | Path) -> LoadResult:
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchmarkError(f"{path} is not a file")
    base = path.parent
    result = LoadResult()
    seen: set[str] = set()
    for line in read_jsonl(path):
        if line.record is None:
            result.errors.append(LoadIssue(f"line {line.line_no}", line.error))
            continue
        rec = line.record
        tid = record_id(rec, line.line_no, "id")
        if tid.startswith("line "):
            result.errors.append(LoadIssue(tid, "no id"))
            continue
        if tid in seen:
            result.errors.append(LoadIssue(tid, "duplicate id"))
            continue
        seen.add(tid)
        question = as_text(rec.get("question")).strip()
        if not question:
            result.errors.append(LoadIssue(tid, "no question"))
            continue
        try:
            answer = _answer(rec.get("answer"))
            files = [resolve_file(n, base) for n in parse_file_names(rec.get("files"))]
        except ValueError as e:
            result.errors.append(LoadIssue(tid, str(e)))
            continue
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            result.errors.append(LoadIssue(tid, "file not found: " + ", ".join(missing)))
            continue
        concepts = rec.get("concepts") or []
        meta = dict(rec.get("meta") or {}) if isinstance(rec.get("meta"), dict) else {}
        meta.update({k: v for k, v in rec.items() if k not in KNOWN})
        result.tasks.append(Task(
            id=tid,
            question=question,
            files=files,
            constraints=as_text(rec.get("constraints")),
            format=as_text(rec.get("format")),
            answer=answer,
            level=as_text(rec.get("level")),
            concepts=[str(c) for c in concepts] if isinstance(concepts, list) else [str(concepts)],
            guidelines=as_text(rec.get("guidelines")),
            benchmark=as_text(rec.get("benchmark")) or "jsonl",
            meta=meta,
        ))
    if not result.tasks and not result.errors:
        raise BenchmarkError(f"{path} holds no tasks")
    return result
