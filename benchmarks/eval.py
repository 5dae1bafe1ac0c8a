"""Benchmark the evaluation harness: accuracy of a model on dabench-dev, and throughput vs workers.

    # accuracy (resumable: rerun the same command to continue)
    python benchmarks/eval.py accuracy --model qwen2.5-coder-1.5b \
        --bench dabench:../shared/benchmarks/dabench-dev --out runs/bench-eval-qwen [--per-level 4]
    # throughput: the same K tasks with 1, 2, 4 workers (fresh run directories)
    python benchmarks/eval.py scaling --model smollm2-135m \
        --bench dabench:../shared/benchmarks/dabench-dev --tasks 6 --workers 1,2,4 --out runs/bench-eval-scaling

Both run the real agent loop (`run_agent`) in real local kernels through `run_eval`, with the
benchmark's official scorer. They print a table, then (last line) one JSON object:
  accuracy: abq, psaq, uasq, n, by_level {level: {abq, psaq, uasq, n}}, mean_tokens,
            mean_task_s, minutes (wall time of this invocation), status_counts
  scaling:  tasks, by_workers {w: {minutes, tasks_per_min, mean_task_s, abq}}, speedup_max
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from notebook_agent.agent.loop import AgentConfig
from notebook_agent.eval.cli import run_interruptible
from notebook_agent.agent.config import SessionConfig
from notebook_agent.eval.runner import run_eval
from notebook_agent.models.base import ChatModel, Completion, SamplingParams
from notebook_agent.models.resolve import load_model
from notebook_agent.models.scripted import call
from notebook_agent.tasks.loaders import benchmark_kind, load_benchmark
from notebook_agent.tasks.scoring import level_key, scorer_for
from notebook_agent.tasks.task import Task


class HarnessModel(ChatModel):
    """`--model scripted`: no LLM, to measure the harness and the kernels alone. It loads the
    task's first file and describes it, then answers: two turns, two real cells per task."""

    name = "scripted-harness"

    async def _complete(self, messages: list[dict], tools: Any, params: SamplingParams) -> list[Completion]:
        if not any(m["role"] == "tool" for m in messages):
            m = re.search(r"^- (.+?) \(", messages[1]["content"], re.MULTILINE)  # "- name.csv (12 KB)"
            name = m.group(1) if m else "data.csv"
            code = f"import pandas as pd\ndf = pd.read_csv({name!r})\nprint(df.describe())"
            return [call("execute_code", comment="Load and describe the data.", code=code)]
        return [call("final_answer", answer="@answer[0]")]


def get_model(spec: str, parallel: int = 1) -> ChatModel:
    """The model, decoding `parallel` sequences at once (one per eval worker)."""
    return HarnessModel() if spec == "scripted" else load_model(spec, parallel=parallel)


def pick(tasks: list[Task], per_level: int | None, limit: int | None) -> list[Task]:
    """The first `per_level` tasks of each level (file order), or the first `limit` tasks."""
    if per_level:
        out, seen = [], {}
        for t in tasks:
            if seen.get(t.level, 0) < per_level:
                seen[t.level] = seen.get(t.level, 0) + 1
                out.append(t)
        return out
    return tasks[:limit] if limit else tasks


def config(args: argparse.Namespace) -> AgentConfig:
    return AgentConfig(scaffold=args.scaffold, max_turns=args.max_turns, max_wall_s=args.task_timeout,
                       max_tokens_per_turn=args.max_tokens_per_turn, file_preview=not args.no_preview,
                       constrain=not args.no_constrain, refuse_repeats=args.refuse_repeats,
                       code_after_refusal=args.code_after_refusal)


async def one_run(tasks: list[Task], model: Any, out: Path, workers: int, args: argparse.Namespace) -> tuple[Any, float]:
    t0 = time.monotonic()
    summary = await run_eval(
        tasks, model, out, scorer=scorer_for(benchmark_kind(args.bench)), agent_config=config(args),
        workers=workers, task_timeout_s=args.task_timeout + 60, session_config=SessionConfig(),
        progress=sys.stderr.isatty(),
        settings={"benchmark": args.bench, "model": args.model, "scaffold": args.scaffold, "benchmark_tool": "eval.py",
                  "file_preview": not args.no_preview, "constrain": not args.no_constrain,
                  "refuse_repeats": args.refuse_repeats, "code_after_refusal": args.code_after_refusal})
    return summary, time.monotonic() - t0


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*r)
    Console().print(t)


async def accuracy(args: argparse.Namespace, tasks: list[Task]) -> dict[str, Any]:
    model = get_model(args.model, args.workers)
    try:
        summary, wall = await one_run(tasks, model, Path(args.out), args.workers, args)
    finally:
        await model.aclose()
    from notebook_agent.eval.report import load_run

    run = load_run(args.out)
    m = run.metrics
    rows = [["overall", str(m.n), *(f"{100 * x:.1f}" for x in (m.abq, m.psaq, m.uasq))]]
    rows += [[lv, str(g.n), *(f"{100 * x:.1f}" for x in (g.abq, g.psaq, g.uasq))]
             for lv, g in sorted(m.by_level.items(), key=lambda kv: level_key(kv[0]))]
    preview = ("" if not args.no_preview else ", no file preview") + ("" if not args.no_constrain else ", unconstrained")
    print_table(f"{args.bench} with {args.model} ({args.scaffold}{preview}, {args.workers} worker(s))",
                ["level", "n", "ABQ %", "PSAQ %", "UASQ %"], rows)
    print(f"mean tokens/task {run.mean_tokens:.0f}, mean time/task {run.mean_wall_s:.1f} s, "
          f"task-minutes {run.total_wall_min:.1f}, wall minutes (this call) {wall / 60:.1f}, "
          f"statuses {run.status_counts}")
    return {"abq": m.abq, "psaq": m.psaq, "uasq": m.uasq, "n": m.n,
            "by_level": {k: {"abq": g.abq, "psaq": g.psaq, "uasq": g.uasq, "n": g.n} for k, g in m.by_level.items()},
            "mean_tokens": run.mean_tokens, "mean_task_s": run.mean_wall_s, "task_minutes": run.total_wall_min,
            "minutes": wall / 60, "resumed": summary.n_resumed, "status_counts": run.status_counts,
            "model": args.model, "machine": platform.platform()}


def engine_counters(model: Any) -> dict[str, int] | None:
    """The batching engine's counters (in-process llama.cpp models), or None."""
    engine = getattr(model, "engine", None)
    return dataclasses.asdict(engine.stats) if engine is not None else None


def engine_delta(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, float] | None:
    """What one run cost the engine: prompt tokens evaluated and taken from cache, tokens
    generated, steps, and tokens per step (how much each llama_decode batched)."""
    if before is None or after is None:
        return None
    d = {k: after[k] - before[k] for k in ("steps", "batch_tokens", "prompt_tokens", "cached_tokens", "generated")}
    d["tokens_per_step"] = d["batch_tokens"] / max(1, d["steps"])
    return d


async def scaling(args: argparse.Namespace, tasks: list[Task]) -> dict[str, Any]:
    model = get_model(args.model, max(args.workers_list))
    by: dict[str, Any] = {}
    try:
        # one untimed warm-up task: model weights and imports in memory for every measured run
        warm = Path(args.out) / "warmup"
        shutil.rmtree(warm, ignore_errors=True)
        await one_run(tasks[:1], model, warm, 1, args)
        for w in args.workers_list:
            out = Path(args.out) / f"w{w}"
            shutil.rmtree(out, ignore_errors=True)  # a resumed run would fake the throughput
            before = engine_counters(model)
            summary, wall = await one_run(tasks, model, out, w, args)
            recs = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
            by[str(w)] = {"minutes": wall / 60, "tasks_per_min": len(tasks) / (wall / 60),
                          "mean_task_s": sum(r["wall_s"] for r in recs) / len(recs), "abq": summary.metrics.abq,
                          "statuses": summary.status_counts, "engine": engine_delta(before, engine_counters(model))}
    finally:
        await model.aclose()
    base = by[str(args.workers_list[0])]["tasks_per_min"]
    def eng(d: dict[str, Any], key: str, fmt: str = "{:.0f}") -> str:
        return fmt.format(d["engine"][key]) if d.get("engine") else "-"

    print_table(f"throughput on {len(tasks)} tasks with {args.model}", ["workers", "minutes", "tasks/min",
                "speedup", "mean task s", "ABQ %", "prompt tok evaluated", "prompt tok cached", "generated",
                "tokens/step"],
                [[w, f"{d['minutes']:.2f}", f"{d['tasks_per_min']:.2f}", f"{d['tasks_per_min'] / base:.2f}",
                  f"{d['mean_task_s']:.1f}", f"{100 * d['abq']:.0f}", eng(d, "prompt_tokens"), eng(d, "cached_tokens"),
                  eng(d, "generated"), eng(d, "tokens_per_step", "{:.2f}")] for w, d in by.items()])
    return {"tasks": len(tasks), "by_workers": by, "speedup_max": max(d["tasks_per_min"] for d in by.values()) / base,
            "model": args.model, "machine": platform.platform()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["accuracy", "scaling"])
    p.add_argument("--model", default="qwen2.5-coder-1.5b")
    p.add_argument("--bench", default="dabench:../shared/benchmarks/dabench-dev")
    p.add_argument("--out", required=True)
    p.add_argument("--per-level", type=int, default=None, help="first K tasks of each level")
    p.add_argument("--limit", "--tasks", dest="limit", type=int, default=None, help="first K tasks")
    p.add_argument("--workers", default="1", help="accuracy: N; scaling: a list like 1,2,4")
    p.add_argument("--scaffold", default="tools", choices=["tools", "react"])
    p.add_argument("--no-constrain", action="store_true", help="replies not constrained to the tool protocol")
    p.add_argument("--refuse-repeats", action="store_true", help="a cell identical to the one just run is not run again")
    p.add_argument("--code-after-refusal", action="store_true",
                   help="after an answer refused for want of computed values, the next reply must run code")
    p.add_argument("--max-turns", type=int, default=8)
    p.add_argument("--max-tokens-per-turn", type=int, default=512)
    p.add_argument("--task-timeout", type=float, default=900.0)
    p.add_argument("--no-preview", action="store_true", help="no columns/rows preview of tables in the first message")
    args = p.parse_args()
    args.workers_list = [int(w) for w in args.workers.split(",")]
    args.workers = args.workers_list[0]
    loaded = load_benchmark(args.bench)
    if loaded.errors:
        print(f"skipped {len(loaded.errors)} record(s): {[str(e) for e in loaded.errors[:5]]}", file=sys.stderr)
    tasks = pick(loaded.tasks, args.per_level, args.limit)
    result = run_interruptible(accuracy(args, tasks) if args.mode == "accuracy" else scaling(args, tasks))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
