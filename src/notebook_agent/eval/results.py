"""The results file of a run: one JSON record per finished task, appended and fsynced.

A rerun reads it back and keeps the last record of each id. Records whose status is in
`RETRY_STATUSES` are run again: the run was interrupted (`cancelled`), the harness failed on
that task (`crashed`), or the infrastructure did (`model_error`: the model server was down or
refused the request; `kernel_error`: the kernel died and could not be restarted). Every other
status is final (a wrong answer, a timeout, a model that never answered are results, not
accidents). A line cut short by a crash is skipped on reading, and
the next append starts on a fresh line, so nothing finished is lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

from ..agent.trajectory import RunStatus
from ..tasks.scoring import Score, ScoredItem

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
NOTEBOOK_DIR = "notebooks"
# A record's status: how the agent's run ended, or "crashed" (the harness failed on the task).
RecordStatus = RunStatus | Literal["crashed"]
RETRY_STATUSES: frozenset[RecordStatus] = frozenset({"cancelled", "crashed", "model_error", "kernel_error"})


class ResultsWriter:
    """Appends records durably: each `append` returns once the line is on disk."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
        self._f = open(path, "a", encoding="utf-8")
        if needs_newline:
            self._f.write("\n")
            self._sync()

    def append(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._sync()

    def _sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """All well-formed records in file order, and how many lines were not."""
    if not path.exists():
        return [], 0
    records, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(rec, dict) and "id" in rec:
                records.append(rec)
            else:
                bad += 1
    return records, bad


def latest_by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        out[str(rec["id"])] = rec
    return out


def load_run_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    records, _ = read_records(run_dir / RESULTS_FILE)
    return latest_by_id(records)


def is_final(record: dict[str, Any], retry: frozenset[str] = RETRY_STATUSES) -> bool:
    return record.get("status") not in retry


def scored_item(record: dict[str, Any]) -> ScoredItem:
    score = Score(
        correct=bool(record.get("correct", False)),
        fraction=float(record.get("fraction", 0.0)),
        n_sub=int(record.get("n_sub", 0)),
        n_right=int(record.get("n_right", 0)),
        answered=bool(record.get("answered", False)),
    )
    return ScoredItem(id=str(record["id"]), score=score, level=record.get("level") or "",
                      concepts=record.get("concepts") or [])


VERDICT_KEYS = ("correct", "fraction", "n_sub", "n_right", "answered", "score_details")


def safe_score(scorer: Any, task: Any, answer: str | None) -> Score:
    """`scorer`'s verdict on `answer`; a scorer bug counts the task wrong (with a warning)
    rather than losing the run's work."""
    try:
        return scorer.score(task, answer)
    except Exception as e:
        print(f"warning: scoring task {getattr(task, 'id', '?')} failed: {e!r}", file=sys.stderr)
        return Score(False, 0.0, 1, 0, answer is not None, {"error": f"scorer failed: {e!r}"})


def verdict(score: Score) -> dict[str, Any]:
    """A score's fields as a record stores them."""
    return {"correct": score.correct, "fraction": score.fraction, "n_sub": score.n_sub, "n_right": score.n_right,
            "answered": score.answered, "score_details": score.details}


def rescore(record: dict[str, Any], task: Any, scorer: Any, old_scorer: str | None) -> dict[str, Any] | None:
    """`record` scored again with `scorer` from its stored answer, or None when neither the
    scorer's name nor the verdict changed. A resumed run re-scores every stored record, so a
    changed scorer (or a changed rule under the same name) never mixes old and new verdicts."""
    was = record.get("scorer") or old_scorer
    new = verdict(safe_score(scorer, task, record.get("answer")))
    same = json.dumps({k: record.get(k) for k in VERDICT_KEYS}, sort_keys=True, default=str) == \
        json.dumps(new, sort_keys=True, default=str)
    if same and was == scorer.name:
        return None
    return {**record, **new, "scorer": scorer.name, "rescored": {"from": was, "verdict_changed": not same}}


def safe_name(task_id: str) -> str:
    """A file name for a task id (ids may hold '/', spaces...)."""
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in task_id).strip(".")[:100]
    if keep != task_id:  # two ids must not share a file: add a short digest of the real id
        keep = f"{keep or 'task'}-{hashlib.md5(task_id.encode()).hexdigest()[:8]}"
    return keep
