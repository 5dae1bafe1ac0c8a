"""Eval runs as training data: a model's attempts at generated tasks become teacher traces.

`eval run dabench:OUT/train --model qwen2.5-coder-1.5b --out RUN` is the teacher job (resumable,
with a progress bar, records with trajectories and verdicts). `export_runs` then keeps the
attempts the scorer verified as SFT rows (`trace_source: teacher`) and the failed ones apart
(`failed.jsonl`, whole trajectories: the value model's negatives), and reports the yield by
template and level (templates from the generated tasks' questions.jsonl, when there is one).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ..tasks.formats.common import read_jsonl
from ..tasks.records import RESULTS_FILE, is_final, load_run_records
from .export import normalize_message


def _template_of(run: Path) -> dict[str, str]:
    """Task id -> template, from the questions file of the run's benchmark (generated tasks)."""
    meta = run / "run.json"
    if not meta.is_file():
        return {}
    bench = str(json.loads(meta.read_text()).get("benchmark", ""))
    path = Path(bench.partition(":")[2] or bench)
    questions = path / "questions.jsonl" if path.is_dir() else path
    if not questions.is_file():
        return {}
    # the formats' own reader: a bad line is skipped (it only names a template), not fatal
    return {str(ln.record["id"]): ln.record["template"] for ln in read_jsonl(questions)
            if ln.record and ln.record.get("template") and "id" in ln.record}


def export_runs(runs: list[str | Path], out: str | Path, source: str = "teacher",
                max_output_chars: int = 2000) -> dict[str, Any]:
    """Write OUT/{source}.jsonl (verified rows), OUT/failed.jsonl, OUT/dataset and OUT/yield.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kept: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    tally: dict[str, Counter] = defaultdict(Counter)
    skipped = 0
    for run in map(Path, runs):
        if not (run / RESULTS_FILE).is_file():
            raise FileNotFoundError(f"{run}: no {RESULTS_FILE} (not an eval run folder)")
        templates = _template_of(run)
        for tid, rec in load_run_records(run).items():  # a resumed run appends: each task's last record counts
            traj = rec.get("trajectory") or {}
            if not is_final(rec) or not traj.get("messages"):
                skipped += 1  # interrupted, crashed, or no trajectory kept: not an attempt
                continue
            keys = [f"level:{rec.get('level') or '?'}", f"template:{templates.get(tid, '?')}", "all"]
            for k in keys:
                tally[k]["attempted"] += 1
            if rec.get("correct") and traj.get("messages"):
                for k in keys:
                    tally[k]["verified"] += 1
                kept.append({"id": tid, "run": str(run), "level": rec.get("level") or "",
                             "template": templates.get(tid, ""), "answer": rec.get("answer") or "",
                             "trace_source": source, "tools": json.dumps(traj.get("tools") or []),
                             "messages": [normalize_message(m, max_output_chars, False) for m in traj["messages"]]})
            else:
                failed.append({"id": tid, "run": str(run), "status": rec.get("status"), "answer": rec.get("answer"),
                               "trajectory": traj})
    with open(out / f"{source}.jsonl", "w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
    with open(out / "failed.jsonl", "w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in failed)
    if kept:
        import datasets

        datasets.DatasetDict({"train": datasets.Dataset.from_list(kept)}).save_to_disk(str(out / "dataset"))
    report: dict[str, Any] = {k: {**v, "yield": round(v["verified"] / v["attempted"], 3)}
                              for k, v in sorted(tally.items())}
    report["skipped_not_attempts"] = skipped
    (out / "yield.json").write_text(json.dumps(report, indent=1))
    return report
