"""`eval merge`: one run folder from shards run apart over disjoint task ids."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..tasks.records import (
    RESULTS_FILE,
    ResultsWriter,
    is_final,
    latest_by_id,
    read_records,
)
from .results import RUN_FILE
from .runner import SettingsMismatch, setting_differences, write_json_atomic


def merge_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, allow_changed_settings: bool = False) -> dict[str, Any]:
    """One run folder from runs over disjoint task ids (shards run apart: two cores, two
    machines, or a subset first and the rest later), so reports and paired tests see one run.

    Each input's latest final record per id is kept; an id final in two inputs is an error
    (which verdict would count?), and so are differing identity settings unless allowed, as
    for a resumed run. `run.json` is the first input's, with `merged_from` (each input's path,
    commit and record count) and every input's sessions. Notebooks stay where they were."""
    out = Path(out_dir)
    if (out / RESULTS_FILE).exists():
        raise FileExistsError(f"{out} already holds a run: merge into a new folder")
    inputs = [Path(p) for p in run_dirs]
    if len(inputs) < 2:
        raise ValueError("give at least two run folders to merge")
    settings, differences, records, owner = [], [], {}, {}
    for path in inputs:
        if not (path / RESULTS_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a run directory: it has no {RESULTS_FILE}")
        s = json.loads((path / RUN_FILE).read_text()) if (path / RUN_FILE).exists() else {}
        changed = setting_differences(settings[0], s) if settings else []
        if changed and not allow_changed_settings:
            raise SettingsMismatch(f"{path} was run with other settings than {inputs[0]} ({'; '.join(changed)}); "
                                   "merge anyway with --allow-changed-settings if mixing is intended")
        settings.append(s)
        differences.append(changed)
        for tid, rec in latest_by_id(read_records(path / RESULTS_FILE)[0]).items():
            if not is_final(rec):
                continue
            if tid in records:
                raise ValueError(f"task {tid} has a result in both {owner[tid]} and {path}: the shards overlap")
            records[tid], owner[tid] = rec, path
    out.mkdir(parents=True, exist_ok=True)
    with ResultsWriter(out / RESULTS_FILE) as w:
        for rec in records.values():
            w.append(rec)
    merged = {**settings[0], "merged_from": [
        {"path": str(p), "git_commit": s.get("git_commit"), "records": sum(o == p for o in owner.values()),
         "differences": d} for p, s, d in zip(inputs, settings, differences)],
        "sessions": [x for s in settings for x in s.get("sessions", [])]}
    write_json_atomic(out / RUN_FILE, merged)
    return {"out": str(out), "records": len(records), "inputs": merged["merged_from"]}
