"""The results file of a run: one JSON record per attempted task, appended and fsynced.

Written by the eval harness (`eval/runner.py`); read back by a rerun, by reports, and by the
steps that learn from runs (`data export-runs`, the value model's attempt data), which is why
it lives in this bottom layer. A rerun keeps the last record of each id. Records whose status
is in `RETRY_STATUSES` are not results and are run again: the run was interrupted
(`cancelled`), the harness failed on that task (`crashed`), or the infrastructure did
(`model_error`: the model server was down or refused the request; `kernel_error`: the kernel
died and could not be restarted). Every other status is final (a wrong answer, a timeout, a
model that never answered are results, not accidents). A line cut short by a crash is
skipped on reading, and the next append starts on a fresh line, so nothing finished is lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.jsonl"
RETRY_STATUSES: frozenset[str] = frozenset({"cancelled", "crashed", "model_error", "kernel_error"})


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
