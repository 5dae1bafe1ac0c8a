"""Tables in, verified tasks and canonical traces out, in the dabench layout.

For each table: read it, skip it when it is too small or large, unreadable, a copy of an
earlier one, or a benchmark table; write it as CSV into its split's `tables/` (the split is
drawn from the table's name, so a table and all its tasks land in one split); let templates
plan tasks on the CSV as read back; run each plan's cells through the agent loop in a real
kernel (`SolutionModel`); keep the task when the kernel printed every answer item.

    OUT/work/<table>.json           one record per table (resumable: done tables are skipped)
    OUT/<split>/questions.jsonl     dabench layout: `eval run dabench:OUT/train` runs them
    OUT/<split>/labels.jsonl
    OUT/<split>/tables/
    OUT/<split>/nbqa.jsonl          the same tasks as NbQA records (`nbqa:OUT/train`)
    OUT/canonical/<split>.jsonl     canonical traces: messages + tools, `trace_source` canonical
    OUT/dataset/                    those traces as a datasets.DatasetDict (train, heldout)
    OUT/stats.json                  tables by fate, tasks by template and level, rejections, speed
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ...agent.config import AgentConfig, SessionConfig
from ...agent.loop import run_agent
from ...agent.session import close_session, task_session
from ...kernel import KernelSession
from ...tasks.scoring.dabench import extract_answers
from ...tasks.task import Task
from ..export import normalize_message
from .canonical import SolutionModel
from .exclude import Exclusions
from .profile import Profile
from .sources import Table
from .templates import TEMPLATES, Plan, Template

SPLITS = ("train", "heldout")


@dataclass
class GenerateConfig:
    per_table: int = 6                  # tasks planned per table at most (one per template)
    seed: int = 0
    heldout: float = 0.2                # share of tables (not tasks) in the held-out split
    min_rows: int = 20
    max_rows: int = 20_000
    max_cols: int = 60
    max_tables: int | None = None       # stop after this many tables gave tasks
    templates: list[str] | None = None  # names from TEMPLATES; None: all
    concurrency: int = 2                # solutions running at once (one kernel each)
    max_output_chars: int = 2000        # tool outputs in exported traces keep head and tail
    session: SessionConfig = field(default_factory=SessionConfig)
    agent: AgentConfig = field(default_factory=lambda: AgentConfig(max_turns=8, max_wall_s=180.0))

    def chosen_templates(self) -> list[Template]:
        if not self.templates:
            return list(TEMPLATES)
        known = {t.name: t for t in TEMPLATES}
        unknown = [n for n in self.templates if n not in known]
        if unknown:
            raise ValueError(f"unknown templates {unknown}; known: {', '.join(known)}")
        return [known[n] for n in self.templates]


def split_of(table: str, heldout: float) -> str:
    """Stable across runs and orderings: drawn from the table's name."""
    h = int(hashlib.md5(table.encode()).hexdigest()[:8], 16) / 2 ** 32
    return "heldout" if h < heldout else "train"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False))
    os.replace(tmp, path)


def plan_table(profile: Profile, table: str, templates: list[Template], config: GenerateConfig) -> list[Plan]:
    rng = random.Random(f"{config.seed}:{table}")
    order = list(templates)
    rng.shuffle(order)
    plans: list[Plan] = []
    for t in order:
        if len(plans) >= config.per_table:
            break
        try:
            plan = t.plan(profile, rng)
        except Exception:  # noqa: BLE001 - a template's check that this table breaks: no task
            plan = None
        if plan is not None:
            plans.append(plan)
    return plans


# Imported once in a table's root kernel when the forking backend is used, so that its forks
# (one per task) start with them loaded; the names are deleted, the modules stay cached.
WARM_IMPORTS = ("import pandas, numpy, scipy.stats, sklearn.linear_model, sklearn.model_selection, sklearn.metrics\n"
                "del pandas, numpy, scipy, sklearn")


async def solve(plan: Plan, task: Task, config: GenerateConfig,
                root: KernelSession | None = None) -> tuple[dict[str, Any] | None, str]:
    """Run the plan's cells in a kernel (a fork of `root`, else a session of its own); the task
    record (with its trace) or why it was dropped."""
    if root is not None:
        session = await root.fork()
        try:
            traj = await run_agent(task, SolutionModel(plan.cells), session, config.agent)
        finally:
            await close_session(session)
    else:
        async with task_session(task, config.session) as session:
            traj = await run_agent(task, SolutionModel(plan.cells), session, config.agent)
    failed = next((s for s in traj.steps if not s.result.ok), None)
    if failed is not None:
        err = failed.result.error or {}
        return None, f"cell failed: {err.get('ename', failed.result.status)}"
    if traj.status != "answered" or not traj.answer:
        return None, f"run ended {traj.status}"
    got = extract_answers(traj.answer)
    if set(got) != set(plan.names):
        return None, "answer items missing"
    if any(v.strip().lower() in ("", "nan", "inf", "-inf") or v.strip() == "None" for v in got.values()):
        return None, "answer not a value"
    record = {"id": task.id, "question": task.question, "concepts": task.concepts, "constraints": task.constraints,
              "format": task.format, "file_name": task.files[0].name, "level": task.level, "template": plan.template,
              "answer": [[n, got[n]] for n in plan.names], "trajectory": traj.to_dict()}
    return record, ""


def prepare(table: Table, out: Path, config: GenerateConfig, exclusions: Exclusions | None,
            seen_hashes: set[str]) -> tuple[Profile | None, str, dict[str, Any]]:
    """The table written to its split's tables/ and profiled, or (None, why it is skipped)."""
    info: dict[str, Any] = {"table": table.name, "origin": table.origin, "title": table.title}
    try:
        df = table.load()
    except Exception as e:  # noqa: BLE001 - an unreadable table is skipped, with the reason
        return None, f"unreadable: {type(e).__name__}", info
    if not isinstance(df, pd.DataFrame) or not config.min_rows <= len(df) <= config.max_rows \
            or not 2 <= df.shape[1] <= config.max_cols:
        return None, "size", info
    if exclusions is not None:
        item = table.origin.rsplit("/", 1)[-1]
        hit = exclusions.match(item, [str(c) for c in df.columns]) or exclusions.match(table.name, [])
        if hit:
            return None, "benchmark table", {**info, "benchmark_table": hit}
    data = df.to_csv(index=False).encode()
    digest = hashlib.md5(data).hexdigest()
    if digest in seen_hashes:
        return None, "duplicate table", info
    seen_hashes.add(digest)
    split = split_of(table.name, config.heldout)
    path = out / split / "tables" / f"{table.name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    info.update(split=split, hash=digest, file=str(path.relative_to(out)), rows=len(df), cols=df.shape[1])
    return Profile(pd.read_csv(path), path.name, min_rows=config.min_rows), "", info


async def generate_table(table: Table, out: Path, config: GenerateConfig, exclusions: Exclusions | None,
                         seen_hashes: set[str]) -> dict[str, Any]:
    profile, skip, info = prepare(table, out, config, exclusions, seen_hashes)
    if profile is None:
        return {**info, "skipped": skip, "tasks": [], "rejected": []}
    plans = plan_table(profile, table.name, config.chosen_templates(), config)
    sem = asyncio.Semaphore(max(1, config.concurrency))
    csv = out / info["file"]
    root: KernelSession | None = None

    async def one(plan: Plan) -> tuple[dict[str, Any] | None, str]:
        task = Task(id=f"{table.name}-{plan.template}", question=plan.question, files=[csv], constraints=plan.constraints,
                    format=plan.format, level=plan.level, concepts=plan.concepts, benchmark="dabench")
        async with sem:
            try:
                return await solve(plan, task, config, root)
            except Exception as e:  # noqa: BLE001 - a kernel that failed to start or died: this task only
                return None, f"error: {type(e).__name__}"

    if config.session.backend == "forking" and plans:  # one root kernel per table, a fork per task
        async with task_session(Task(id=table.name, question="", files=[csv]), config.session) as root_session:
            await root_session.execute(WARM_IMPORTS)
            root = root_session
            results = await asyncio.gather(*(one(p) for p in plans))
    else:
        results = await asyncio.gather(*(one(p) for p in plans))
    tasks = [r for r, _ in results if r is not None]
    rejected = [{"template": p.template, "reason": why} for p, (r, why) in zip(plans, results) if r is None]
    if not tasks:
        csv.unlink(missing_ok=True)
    return {**info, "skipped": "" if tasks else "no task", "tasks": tasks, "rejected": rejected}


def generate_tasks(tables: Iterable[Table], out: str | Path, config: GenerateConfig | None = None,
                   exclusions: Exclusions | None = None,
                   progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Generate (resuming what OUT/work holds), then write the splits, traces and stats."""
    config = config or GenerateConfig()
    out = Path(out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    config.chosen_templates()  # unknown names fail before any work
    done = {p.stem: json.loads(p.read_text()) for p in work.glob("*.json")}
    seen_hashes = {r["hash"] for r in done.values() if r.get("hash") and r.get("skipped") != "duplicate table"}
    productive = sum(1 for r in done.values() if r["tasks"])
    t0, new_tasks = time.monotonic(), 0
    for table in tables:
        if config.max_tables is not None and productive >= config.max_tables:
            break
        if table.name in done:
            continue
        record = asyncio.run(generate_table(table, out, config, exclusions, seen_hashes))
        _write_json(work / f"{table.name}.json", record)
        done[table.name] = record
        productive += bool(record["tasks"])
        new_tasks += len(record["tasks"])
        if progress:
            progress(record)
    stats = finalize(out, list(done.values()), config)
    elapsed = time.monotonic() - t0
    stats["this_run"] = {"seconds": round(elapsed, 1), "tasks": new_tasks,
                         "tasks_per_s": round(new_tasks / elapsed, 3) if elapsed > 0 else None}
    _write_json(out / "stats.json", stats)
    return stats


def trace_row(task: dict[str, Any], split: str, table: str, limit: int) -> dict[str, Any]:
    traj = task["trajectory"]
    return {"id": task["id"], "split": split, "table": table, "template": task["template"], "level": task["level"],
            "question": task["question"], "answer": json.dumps(task["answer"]), "trace_source": "canonical",
            "tools": json.dumps(traj.get("tools") or []),
            "messages": [normalize_message(m, limit, False) for m in traj.get("messages", [])]}


def finalize(out: Path, records: list[dict[str, Any]], config: GenerateConfig) -> dict[str, Any]:
    """Write every split's dabench and NbQA files and the canonical traces from the work records."""
    records = sorted(records, key=lambda r: r["table"])
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    (out / "canonical").mkdir(exist_ok=True)
    for split in SPLITS:
        d = out / split
        d.mkdir(exist_ok=True)
        with open(d / "questions.jsonl", "w") as q, open(d / "labels.jsonl", "w") as lab, \
                open(d / "nbqa.jsonl", "w") as nb:
            for r in records:
                if r.get("split") != split:
                    continue
                for t in r["tasks"]:
                    q.write(json.dumps({k: t[k] for k in ("id", "question", "concepts", "constraints", "format",
                                                          "file_name", "level")} | {"template": t["template"],
                                                                                   "table": r["table"]}) + "\n")
                    lab.write(json.dumps({"id": t["id"], "common_answers": t["answer"]}) + "\n")
                    nb.write(json.dumps({"id": t["id"], "question": t["question"], "constraints": t["constraints"],
                                         "format": t["format"], "file_names": [t["file_name"]], "answer": t["answer"],
                                         "level": t["level"], "concepts": t["concepts"],
                                         "solution": [st["result"]["code"] for st in t["trajectory"].get("steps", [])]}) + "\n")
                    rows[split].append(trace_row(t, split, r["table"], config.max_output_chars))
        with open(out / "canonical" / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows[split])
    if any(rows.values()):
        import datasets

        datasets.DatasetDict({s: datasets.Dataset.from_list(v) for s, v in rows.items() if v}).save_to_disk(
            str(out / "dataset"))
    return summarize(records)


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    tasks = [(r, t) for r in records for t in r["tasks"]]
    fates = Counter(r["skipped"] or "used" for r in records)
    rejected = Counter(f"{x['template']}: {x['reason']}" for r in records for x in r["rejected"])
    return {
        "tables": dict(fates),
        "tables_by_split": dict(Counter(r["split"] for r in records if r["tasks"])),
        "tasks": len(tasks),
        "tasks_by_split": dict(Counter(r["split"] for r, _ in tasks)),
        "tasks_by_level": dict(Counter(t["level"] for _, t in tasks)),
        "tasks_by_template": dict(sorted(Counter(t["template"] for _, t in tasks).items())),
        "rejected": dict(rejected.most_common()),
        "benchmark_tables_excluded": sorted({r["benchmark_table"] for r in records if r.get("benchmark_table")}),
    }
