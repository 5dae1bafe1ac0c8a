"""DABStep: a tasks JSONL (`task_id`, `question`, `guidelines`, `level`, `answer`) and a
directory of context files (payments.csv, fees.json, manual.md, ...) shared by every task.

Layouts accepted for `dabstep:PATH`: a directory holding `tasks.jsonl` (or `dev.jsonl`,
`all.jsonl`) and `context/` (or `data/context/`), or PATH is the tasks file with the context
directory beside it. Every top-level, non-hidden file of the context directory is given to
every task. An empty `answer` (the public test set) loads unlabelled.
"""

from __future__ import annotations

from pathlib import Path

from ..task import Task
from .common import BenchmarkError, LoadIssue, LoadResult, as_text, pick_dir, pick_file, read_jsonl, record_id

TASK_FILES = ["tasks.jsonl", "dev.jsonl", "all.jsonl", "tasks/dev.jsonl", "tasks/all.jsonl"]
CONTEXT_DIRS = ["context", "data/context", "../context", "../data/context"]


def context_files(context_dir: Path) -> list[Path]:
    return sorted(p for p in context_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def load_dabstep(path: str | Path, context: str | Path | None = None) -> LoadResult:
    path = Path(path).expanduser()
    tasks_file = pick_file(path, TASK_FILES, "tasks file")
    if context is not None:
        context_dir = Path(context)
        if not context_dir.is_dir():
            raise BenchmarkError(f"context directory {context_dir} does not exist")
    else:
        found = pick_dir(path if path.is_dir() else tasks_file.parent, CONTEXT_DIRS)
        if found is None:
            raise BenchmarkError(f"no context directory beside {tasks_file}: expected one of {', '.join(CONTEXT_DIRS)}")
        context_dir = found
    files = context_files(context_dir)
    if not files:
        raise BenchmarkError(f"context directory {context_dir} holds no files")

    result = LoadResult()
    seen: set[str] = set()
    for line in read_jsonl(tasks_file):
        if line.record is None:
            result.errors.append(LoadIssue(f"line {line.line_no}", line.error))
            continue
        rec = line.record
        tid = record_id(rec, line.line_no, "task_id", "id")
        if tid in seen:
            result.errors.append(LoadIssue(tid, "duplicate task_id"))
            continue
        seen.add(tid)
        question = as_text(rec.get("question")).strip()
        if not question:
            result.errors.append(LoadIssue(tid, "no question"))
            continue
        answer = rec.get("answer")
        if isinstance(answer, (list, dict)):
            result.errors.append(LoadIssue(tid, f"unparsable answer {answer!r}: DABStep answers are strings"))
            continue
        answer = None if answer is None or not str(answer).strip() else str(answer)
        guidelines = as_text(rec.get("guidelines"))
        result.tasks.append(Task(
            id=tid,
            question=question,
            files=list(files),
            guidelines=guidelines,
            answer=answer,
            level=as_text(rec.get("level")).strip().lower(),
            benchmark="dabstep",
        ))
    if not result.tasks and not result.errors:
        raise BenchmarkError(f"{tasks_file} holds no tasks")
    return result
