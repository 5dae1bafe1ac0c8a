"""Assemble and run the pipeline: which steps, in which datatrove executor, and the stats.

The steps, in order: read, filter, dedup, link, tables, score, qa, traces, export. `tables`
(tasks from the linked data files, data/tables/) runs only when named; a run takes any
subset; consecutive steps run fused in one datatrove pipeline, and the output of the last one
(and of every step in CHECKPOINTS) is written to `OUT/stages/<step>/`. The first step of a run reads the output
of the nearest earlier step that has one on disk, so `--steps link` after
`--steps read,filter,dedup` just works. Stats of every step go to `OUT/stats.json` (merged
across runs, keyed by step).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datatrove.pipeline.base import PipelineStep

from ..models.base import ChatModel
from .config import PipelineConfig
from .dedup import MinhashNotebookDedup
from .export import ExportStep, finalize
from .filters import default_filters
from .io import stage_reader, stage_writer
from .linking import DataFileLinker
from .llm.steps import EduScoreStep, QAGenerationStep, QAVerifyStep, RelevanceStep
from .readers import IpynbFolderReader, NotebookRecordsReader
from .tables.step import TableTasksStep
from .traces import TraceStep

STEPS = ["read", "filter", "dedup", "link", "tables", "score", "qa", "traces", "export"]
# Steps a run without `--steps` leaves out (they need settings of their own).
OPTIONAL = {"tables"}
# Outputs always written, even inside a fused run: those before a costly step, so that the
# costly steps can be rerun alone.
CHECKPOINTS = {"link", "score", "qa", "traces"}


def parse_steps(spec: str | list[str] | None) -> list[str]:
    names = [s for s in STEPS if s not in OPTIONAL] if not spec else ([s.strip() for s in spec.split(",") if s.strip()] if isinstance(spec, str) else spec)
    unknown = [s for s in names if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown steps {unknown}; choose from {','.join(STEPS)}")
    return sorted(set(names), key=STEPS.index)


def step_blocks(name: str, cfg: PipelineConfig, model: ChatModel | None = None) -> list[PipelineStep]:
    """The datatrove steps implementing one named pipeline step."""
    out = Path(cfg.output)
    cache = str(out / "llm_cache")
    if name == "read":
        i = cfg.input
        if not i.path:
            raise ValueError("input.path is not set")
        if i.format == "ipynb":
            return [IpynbFolderReader(i.path, glob_pattern=i.glob or "**/*.ipynb", limit=i.limit)]
        if i.format == "records":
            return [NotebookRecordsReader(i.path, glob_pattern=i.glob, notebook_key=i.notebook_key,
                                          id_key=i.id_key, limit=i.limit)]
        raise ValueError(f"input.format must be 'ipynb' or 'records', not {i.format!r}")
    if name == "filter":
        return list(default_filters(cfg.filters))
    if name == "dedup":
        return [MinhashNotebookDedup(cfg.dedup)]
    if name == "link":
        return [DataFileLinker(cfg.link)]
    if name == "tables":
        return [TableTasksStep(cfg.output, cfg.tables)]
    if name == "score":
        return [EduScoreStep(cfg.llm, model, cache), RelevanceStep(cfg.llm, model, cache)]
    if name == "qa":
        return [QAGenerationStep(cfg.llm, model, cache), QAVerifyStep(cfg.llm, model, cache)]
    if name == "traces":
        if cfg.traces.model is None:
            cfg.traces.model, cfg.traces.model_options = cfg.llm.model, cfg.llm.model_options
        return [TraceStep(cfg.traces, model)]
    if name == "export":
        return [ExportStep(cfg.output, cfg.export)]
    raise ValueError(name)


def runs(steps: list[str]) -> list[list[str]]:
    """Split the chosen steps into maximal runs of consecutive steps."""
    groups: list[list[str]] = []
    for s in steps:
        between = STEPS[STEPS.index(groups[-1][-1]) + 1:STEPS.index(s)] if groups else ["-"]
        if all(b in OPTIONAL for b in between):
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def make_executor(pipeline: list[PipelineStep], cfg: PipelineConfig, logging_dir: str) -> Any:
    e = cfg.executor
    if e.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, tasks=e.tasks, workers=e.workers, logging_dir=logging_dir,
                                     skip_completed=False, **e.options)
    if e.kind == "slurm":  # wired, not tested here (no cluster)
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(pipeline, tasks=e.tasks, logging_dir=logging_dir, skip_completed=False,
                                     **e.options)
    if e.kind == "ray":  # wired, not tested here
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor(pipeline, tasks=e.tasks, logging_dir=logging_dir, skip_completed=False,
                                   **e.options)
    raise ValueError(f"executor.kind must be local, slurm or ray, not {e.kind!r}")


def _step_stats(stats_file: Path, blocks: dict[str, list[str]]) -> dict[str, Any]:
    """Per named step: each block's counters ({label: total}) and time."""
    if not stats_file.is_file():
        return {}
    by_block = {s["name"]: s for s in json.loads(stats_file.read_text())}
    out: dict[str, Any] = {}
    for step, names in blocks.items():
        entry = {}
        for n in names:
            data = by_block.get(n, {})
            counters = {k: (v.get("total", v) if isinstance(v, dict) else v) for k, v in (data.get("stats") or {}).items()}
            entry[n] = {"counters": counters, "time_s": (data.get("time_stats") or {}).get("total", 0.0)}
        out[step] = entry
    return out


def run_pipeline(cfg: PipelineConfig, steps: str | list[str] | None = None, model: ChatModel | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the chosen steps (all by default); returns the merged stats (also in OUT/stats.json)."""
    chosen = parse_steps(steps)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    stats_path = out / "stats.json"
    all_stats: dict[str, Any] = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    for group in runs(chosen):
        first = STEPS.index(group[0])
        pipeline: list[PipelineStep] = []
        if group[0] != "read":
            prev = next((s for s in reversed(STEPS[:first]) if (out / "stages" / s).is_dir()), None)
            if prev is None:
                raise ValueError(f"step {group[0]!r} needs an earlier step's output in {out / 'stages'}; run it first")
            pipeline.append(stage_reader(str(out / "stages" / prev)))
        blocks: dict[str, list[str]] = {}
        for name in group:
            bl = step_blocks(name, cfg, model)
            blocks[name] = [str(b) for b in bl]
            pipeline.extend(bl)
            if name != "export" and (name in CHECKPOINTS or name == group[-1]):
                stage_dir = out / "stages" / name
                if stage_dir.exists():
                    shutil.rmtree(stage_dir)
                pipeline.append(stage_writer(str(stage_dir)))
        logging_dir = out / "logs" / "-".join(group)
        if logging_dir.exists():
            shutil.rmtree(logging_dir)
        log(f"running {' -> '.join(group)} ({cfg.executor.kind} executor, {cfg.executor.tasks} task(s))")
        t0 = time.monotonic()
        make_executor(pipeline, cfg, str(logging_dir)).run()
        wall = time.monotonic() - t0
        step_stats = _step_stats(logging_dir / "stats.json", blocks)
        for name in group:
            all_stats[name] = {"blocks": step_stats.get(name, {}), "run_wall_s": round(wall, 3)}
        if "export" in group:
            all_stats["export"]["dataset"] = finalize(out)
        stats_path.write_text(json.dumps(all_stats, indent=1))
        log(f"done {'-'.join(group)} in {wall:.1f}s; stats in {stats_path}")
    return all_stats
