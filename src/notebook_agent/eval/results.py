"""Scoring a run's records (rescoring, verdicts) and the names of a run folder's files. The
results file itself is read and written by `tasks/records.py`."""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any, Literal

from ..agent.trajectory import RunStatus
from ..tasks.scoring import Score, ScoredItem

RUN_FILE = "run.json"
NOTEBOOK_DIR = "notebooks"
# A record's status: how the agent's run ended, or "crashed" (the harness failed on the task).
RecordStatus = RunStatus | Literal["crashed"]


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
