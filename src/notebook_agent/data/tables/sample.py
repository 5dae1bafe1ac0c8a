"""A subset of a generated split, for runs that cannot take all of it (a teacher job, a held-out
evaluation): `notebook-agent data sample OUT/train --out train300 --n 300`.

Tasks are drawn at random (seeded), at most `per_table` from one table (so a subset spreads
over as many tables as it can), and written in level order easy, medium, hard, easy, ... so
that a run stopped part-way has seen every level about equally. `exclude` names other subsets
whose tasks may not be drawn again: two disjoint halves for two cores, or a held-out subset
kept apart from a training one. The subset is a dabench folder of its own (questions,
labels, and copies of its tables, never links out of the folder), so `eval run dabench:DIR`
runs it.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...tasks.formats.common import read_jsonl

LEVELS = ("easy", "medium", "hard")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a dabench file; a bad line stops the sample (a subset must be whole)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected a dabench folder: questions.jsonl, labels.jsonl)")
    lines = list(read_jsonl(path))
    if bad := next((line.error for line in lines if line.record is None), None):
        raise ValueError(bad)
    return [line.record for line in lines if line.record is not None]


def _table(q: dict[str, Any]) -> str:
    return str(q.get("table") or q.get("file_name") or q["id"])


def draw(questions: list[dict[str, Any]], n: int, per_table: int = 1, seed: int = 0,
         excluded: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Up to `n` questions, round-robin over levels, each level's order shuffled by `seed`."""
    rng = random.Random(seed)
    by_level: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for q in questions:
        if str(q["id"]) not in excluded:
            by_level[str(q.get("level") or "")].append(q)
    levels = [lv for lv in LEVELS if lv in by_level] + sorted(set(by_level) - set(LEVELS))
    for lv in levels:
        rng.shuffle(by_level[lv])
    used: Counter[str] = Counter()
    out: list[dict[str, Any]] = []
    while len(out) < n:
        took = False
        for lv in levels:
            pool = by_level[lv]
            i = next((i for i, q in enumerate(pool) if used[_table(q)] < per_table), None)
            if i is None or len(out) >= n:
                continue
            q = pool.pop(i)
            used[_table(q)] += 1
            out.append(q)
            took = True
        if not took:
            break  # every level is out of tasks (or of tables with room)
    return out


def sample_tasks(src: str | Path, out: str | Path, n: int, per_table: int = 1, seed: int = 0,
                 exclude: Iterable[str | Path] = ()) -> dict[str, Any]:
    """Write the subset to `out` (which must not hold a benchmark yet) and say what it holds."""
    src, out = Path(src), Path(out)
    if n < 1 or per_table < 1:
        raise ValueError("n and per_table must be at least 1")
    questions = _read_jsonl(src / "questions.jsonl")
    labels = {str(r["id"]): r for r in _read_jsonl(src / "labels.jsonl")}
    excluded = {str(q["id"]) for d in exclude for q in _read_jsonl(Path(d) / "questions.jsonl")}
    if (out / "questions.jsonl").exists():
        raise FileExistsError(f"{out} already holds a benchmark; choose another --out")
    picked = [q for q in draw(questions, n, per_table, seed, excluded) if str(q["id"]) in labels]
    if not picked:
        raise ValueError(f"{src}: no task left to draw (all excluded or unlabelled)")
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for q in picked:
        name = Path(str(q["file_name"])).name  # a bare name: nothing is written outside OUT/tables
        if not (out / "tables" / name).exists():
            shutil.copyfile(src / "tables" / name, out / "tables" / name)
    with open(out / "questions.jsonl", "w") as fq, open(out / "labels.jsonl", "w") as fl:
        for q in picked:
            fq.write(json.dumps(q) + "\n")
            fl.write(json.dumps(labels[str(q["id"])]) + "\n")
    return {"out": str(out), "tasks": len(picked), "tables": len({_table(q) for q in picked}),
            "by_level": dict(Counter(str(q.get("level")) for q in picked)), "excluded": len(excluded),
            "source_tasks": len(questions), "seed": seed, "per_table": per_table}
