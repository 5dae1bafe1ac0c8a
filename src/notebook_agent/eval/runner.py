"""Run an agent over a task set: N workers, one kernel each, one durable record per task.

`run_eval` is resumable: it reads `out_dir/results.jsonl`, skips every id that already has a
final record, and appends one record per task it finishes (flushed and fsynced before the
next task is counted). Interrupting it (Ctrl-C, a cancelled task) writes a `cancelled` record
for the tasks in flight, closes their kernels, and loses nothing finished; rerunning the same
command continues. A task whose kernel or agent raises gets a `crashed` record and never
stops the others; `crashed`, `cancelled`, `model_error` and `kernel_error` records are
retried by the next run (see results.py). A task that runs past `task_timeout_s` gets a
`timeout` record (final: it counts as wrong).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as _dt
import fcntl
import os
import platform
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from ..agent.trajectory import Trajectory
    from .search_fn import SearchRunConfig

from ..agent.config import AgentConfig, SessionConfig
from ..agent.save import save_run
from ..agent.session import task_session
from ..kernel.base import KernelSession
from ..tasks.formats.common import LoadIssue
from ..tasks.records import RESULTS_FILE, RETRY_STATUSES, ResultsWriter, is_final, latest_by_id, read_records
from ..tasks.scoring import Metrics, Scorer, summarize
from ..tasks.task import Task
from .results import (
    NOTEBOOK_DIR,
    RUN_FILE,
    RecordStatus,
    rescore,
    safe_name,
    safe_score,
    scored_item,
    verdict,
)

SessionFactory = Callable[[Task], KernelSession]
# What a task runs with: the agent's config, or a search's (eval/search_fn.py).
RunConfig = Union[AgentConfig, "SearchRunConfig"]
AgentFn = Callable[..., Awaitable["Trajectory"]]  # (task, model, session, config: RunConfig, on_event=None)

# run.json keys that must not change between the sessions of one run (else results mix).
# The scorer is not one: a rerun with another scorer re-scores the stored answers (`rescore`).
IDENTITY_KEYS = ("benchmark", "model", "agent_config", "withhold_files")


class SettingsMismatch(RuntimeError):
    """The output directory holds a run made with other settings."""


class RunLocked(RuntimeError):
    """Another process is running an eval in the same output directory."""


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold `out_dir/.lock` for the whole run: two evals appending to one results file would
    run the same tasks twice."""
    with open(out_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"another eval is running in {out_dir}; wait for it or use another --out") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class EvalSummary:
    out_dir: Path
    metrics: Metrics
    n_tasks: int
    n_resumed: int                 # already finished before this call
    n_run: int                     # finished by this call
    status_counts: dict[str, int] = field(default_factory=dict)
    n_rescored: int = 0            # stored records whose scorer or verdict changed, re-scored now

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "n_tasks": self.n_tasks, "n_resumed": self.n_resumed,
                "n_run": self.n_run, "status_counts": self.status_counts,
                **self.metrics.to_dict()}


def scaffold_of(config: RunConfig) -> str | None:
    """The scaffold a run config works with (a search's is its agent's)."""
    if isinstance(config, AgentConfig):
        return config.scaffold
    search = getattr(config, "search", None)
    return search.agent.scaffold if search is not None else None


def git_commit() -> str | None:
    """The commit of the code doing the run (with `-dirty` when the tree has changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _config_dict(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return config


def write_json_atomic(path: Path, data: Any) -> None:
    import json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, path)


def setting_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for each identity setting that changed (sub-keys for dicts)."""
    import json

    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

    out = []
    for key in IDENTITY_KEYS:
        if key not in old or key not in new or same(old[key], new[key]):
            continue
        a, b = old[key], new[key]
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if not same(a.get(sub, "<unset>"), b.get(sub, "<unset>")):
                    out.append(f"{key}.{sub}: {a.get(sub, '<unset>')!r} -> {b.get(sub, '<unset>')!r}")
        else:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def _old_setting(out_dir: Path, key: str) -> Any:
    import json

    path = out_dir / RUN_FILE
    return json.loads(path.read_text()).get(key) if path.exists() else None


def _prepare_run_file(out_dir: Path, settings: dict[str, Any], n_tasks: int, n_todo: int,
                      load_issues: Sequence[LoadIssue], check_settings: bool) -> None:
    import json

    path = out_dir / RUN_FILE
    session = {"started_at": _now(), "git_commit": settings.get("git_commit"), "n_tasks": n_tasks,
               "n_todo": n_todo, "workers": settings.get("workers"), "task_timeout_s": settings.get("task_timeout_s")}
    if path.exists():
        old = json.loads(path.read_text())
        if check_settings:
            changed = setting_differences(old, settings)
            if changed:
                raise SettingsMismatch(
                    f"{out_dir} holds a run made with other settings ({'; '.join(changed)}). Use another --out "
                    "directory, or allow it explicitly (--allow-changed-settings) if mixing is intended.")
        data = {**old, **settings, "sessions": old.get("sessions", []) + [session]}
    else:
        data = {**settings, "created_at": _now(), "sessions": [session]}
    data["load_issues"] = [dataclasses.asdict(i) for i in load_issues]
    write_json_atomic(path, data)


class _Progress:
    """A rich progress bar with running accuracy, or nothing."""

    def __init__(self, enabled: bool, total: int, done: int, abq: float | None):
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(),
            TextColumn("ABQ {task.fields[abq]}"), TextColumn("{task.fields[running]} running"),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        self.task = self.progress.add_task("eval", total=total, completed=done, abq=self._fmt(abq), running=0)

    @staticmethod
    def _fmt(abq: float | None) -> str:
        return "-" if abq is None else f"{abq:.1%}"

    def __enter__(self) -> "_Progress":
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def log(self, record: dict[str, Any]) -> None:
        """One line per finished task (above the bar on a terminal; the only output in logs)."""
        if not self.enabled:
            return
        verdict = "unscored" if not record.get("n_sub") else ("right" if record.get("correct") else "wrong")
        self.progress.console.print(f"{record['id']}: {record['status']}, {verdict} "
                                    f"({record['n_right']}/{record['n_sub']}), {record['wall_s']:.0f} s, "
                                    f"{record['total_tokens']} tokens", markup=False, highlight=False)

    def update(self, advance: int = 0, abq: float | None = None, running: int | None = None) -> None:
        if not self.enabled:
            return
        fields: dict[str, Any] = {}
        if abq is not None:
            fields["abq"] = self._fmt(abq)
        if running is not None:
            fields["running"] = running
        self.progress.update(self.task, advance=advance, **fields)


class _Run:
    """The state of one `run_eval` call."""

    def __init__(self, model: Any, out_dir: Path, scorer: Scorer, agent_config: RunConfig, task_timeout_s: float | None,
                 session_config: SessionConfig, session_factory: SessionFactory | None, agent_fn: AgentFn):
        self.model, self.out_dir, self.scorer = model, out_dir, scorer
        self.agent_config, self.task_timeout_s = agent_config, task_timeout_s
        self.session_config, self.session_factory, self.agent_fn = session_config, session_factory, agent_fn
        self.records: dict[str, dict[str, Any]] = {}
        self.writer: ResultsWriter | None = None
        self.running = 0
        self.n_run = 0

    def running_abq(self) -> float | None:
        items = [scored_item(r) for r in self.records.values() if r.get("status") != "cancelled"]
        items = [i for i in items if i.score.scored]
        return sum(i.score.correct for i in items) / len(items) if items else None

    def save(self, record: dict[str, Any]) -> None:
        assert self.writer is not None
        self.writer.append(record)
        self.records[record["id"]] = record

    async def attempt(self, task: Task) -> dict[str, Any]:
        """Run one task in its own session; never raises except on cancellation."""
        t0 = time.monotonic()
        traj: Any = None
        status: RecordStatus | None = None
        detail, error = "", None
        try:
            async with asyncio.timeout(self.task_timeout_s) as deadline:
                custom = self.session_factory(task) if self.session_factory is not None else None
                async with task_session(task, self.session_config, session=custom) as session:
                    traj = await self.agent_fn(task, self.model, session, self.agent_config)
        except TimeoutError:
            if deadline.expired():
                status, detail = "timeout", f"task timeout of {self.task_timeout_s:g} s reached"
            else:
                status, detail, error = "crashed", "TimeoutError", traceback.format_exc()
        except asyncio.CancelledError:
            self.save(self.make_record(task, None, "cancelled", "interrupted", None, time.monotonic() - t0))
            raise
        except Exception as e:
            status, detail, error = "crashed", f"{type(e).__name__}: {e}", traceback.format_exc()
        if traj is not None and status is None:
            status, detail = traj.status, traj.status_detail
        return self.make_record(task, traj, status, detail, error, time.monotonic() - t0)

    def make_record(self, task: Task, traj: Any, status: RecordStatus, detail: str, error: str | None,
                    wall_s: float) -> dict[str, Any]:
        answer = traj.answer if traj is not None else None
        record: dict[str, Any] = {
            "id": task.id,
            "status": status,
            "status_detail": detail,
            "answer": answer,
            "scorer": self.scorer.name,
            **verdict(safe_score(self.scorer, task, answer)),
            "level": task.level,
            "concepts": list(task.concepts),
            "prompt_tokens": getattr(traj, "prompt_tokens", 0),
            "completion_tokens": getattr(traj, "completion_tokens", 0),
            "total_tokens": getattr(traj, "prompt_tokens", 0) + getattr(traj, "completion_tokens", 0),
            "turns": getattr(traj, "turns", 0),
            "wall_s": round(wall_s, 3),
            "model_s": round(getattr(traj, "model_s", 0.0), 3),
            "kernel_s": round(getattr(traj, "kernel_s", 0.0), 3),
            "error": error,
            "notebook": None,
            "finished_at": _now(),
            "isolation": traj.isolation if traj is not None else None,
            "trajectory": traj.to_dict() if traj is not None else None,
        }
        if traj is not None:
            try:
                rel = Path(NOTEBOOK_DIR) / f"{safe_name(task.id)}.ipynb"
                save_run(traj, self.out_dir, task=task, notebook=rel, trajectory=None, metadata=None)
                record["notebook"] = str(rel)
            except Exception as e:
                record["notebook_error"] = f"{type(e).__name__}: {e}"
        return record

    async def worker(self, queue: asyncio.Queue[Task], bar: _Progress) -> None:
        while True:
            try:
                task = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            self.running += 1
            bar.update(running=self.running)
            try:
                record = await self.attempt(task)
            finally:
                self.running -= 1
            self.save(record)
            self.n_run += 1
            bar.log(record)
            bar.update(advance=1, abq=self.running_abq(), running=self.running)


def _prewarm_notebooks() -> None:
    """Import nbformat's validator now: its first use costs seconds (jsonschema builds its
    format checkers), which would otherwise stall the event loop while kernels are running."""
    import nbformat
    from nbformat.v4 import new_notebook

    nbformat.validate(new_notebook())


async def run_eval(
    tasks: Sequence[Task],
    model: Any,
    out_dir: str | Path,
    *,
    scorer: Scorer,
    agent_config: RunConfig | None = None,
    workers: int = 1,
    task_timeout_s: float | None = None,
    session_config: SessionConfig | None = None,
    session_factory: SessionFactory | None = None,
    agent_fn: AgentFn | None = None,
    progress: bool = True,
    settings: dict[str, Any] | None = None,
    load_issues: Sequence[LoadIssue] = (),
    retry_statuses: frozenset[str] = RETRY_STATUSES,
    check_settings: bool = True,
) -> EvalSummary:
    """Run `agent_fn` on every task not already finished in `out_dir`, `workers` at a time.

    `model` is shared by all workers. Each task's session is opened by `agent.session.task_session`
    with `session_config` (default `SessionConfig()`: local backend, sandbox "auto"), or from
    `session_factory(task)` (a not-yet-started `KernelSession` holding the task's files). `agent_fn` defaults
    to `notebook_agent.agent.loop.run_agent` and `agent_config` to its `AgentConfig()`.
    `settings` (benchmark, model name, ...) go to `out_dir/run.json`; a rerun whose benchmark,
    model, scorer or agent config differ raises `SettingsMismatch` unless `check_settings` is
    False. Returns the metrics over every task of `tasks` that has a result.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate task ids: {', '.join(dup[:10])}")
    if agent_fn is None or agent_config is None:
        from ..agent.loop import AgentConfig, run_agent

        agent_fn = agent_fn or run_agent
        agent_config = agent_config if agent_config is not None else AgentConfig()
    session_config = session_config or SessionConfig()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        records, bad_lines = read_records(out_dir / RESULTS_FILE)
        if bad_lines:
            print(f"warning: {bad_lines} unreadable line(s) in {out_dir / RESULTS_FILE} were skipped", file=sys.stderr)
        previous = latest_by_id(records)
        wanted = set(ids)
        done = {i: r for i, r in previous.items() if i in wanted and is_final(r, retry_statuses)}
        todo = [t for t in tasks if t.id not in done]

        old_scorer = _old_setting(out_dir, "scorer")
        rescored = [r for t in tasks if t.id in done and (r := rescore(done[t.id], t, scorer, old_scorer))]
        if rescored:
            with ResultsWriter(out_dir / RESULTS_FILE) as writer:
                for r in rescored:
                    writer.append(r)
                    done[str(r["id"])] = r
            print(f"re-scored {len(rescored)} stored result(s) with scorer {scorer.name} "
                  f"({sum(r['rescored']['verdict_changed'] for r in rescored)} verdict(s) changed)", file=sys.stderr)
        run_settings = {
            **(settings or {}),
            "scorer": scorer.name,
            "agent_config": _config_dict(agent_config),
            "scaffold": scaffold_of(agent_config),
            "session": _config_dict(session_config) if session_factory is None else "custom",
            "workers": workers,
            "task_timeout_s": task_timeout_s,
            "git_commit": git_commit(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
        _prepare_run_file(out_dir, run_settings, len(tasks), len(todo), load_issues, check_settings)

        if todo:
            _prewarm_notebooks()
        run = _Run(model, out_dir, scorer, agent_config, task_timeout_s, session_config, session_factory, agent_fn)
        run.records = dict(done)
        queue: asyncio.Queue[Task] = asyncio.Queue()
        for t in todo:
            queue.put_nowait(t)
        with ResultsWriter(out_dir / RESULTS_FILE) as writer, _Progress(progress, len(tasks), len(done),
                                                                        run.running_abq()) as bar:
            run.writer = writer
            try:
                async with asyncio.TaskGroup() as tg:
                    for _ in range(min(workers, len(todo))):
                        tg.create_task(run.worker(queue, bar))
            except asyncio.CancelledError:
                n_final = sum(1 for r in run.records.values() if is_final(r, retry_statuses))
                print(f"\ninterrupted: {n_final} finished result(s) are saved in {out_dir / RESULTS_FILE}; "
                      "rerun the same command to continue.", file=sys.stderr)
                raise
    final = {i: r for i, r in run.records.items() if r.get("status") != "cancelled"}
    return EvalSummary(
        out_dir=out_dir,
        metrics=summarize(scored_item(r) for r in final.values()),
        n_tasks=len(tasks),
        n_resumed=len(done),
        n_run=run.n_run,
        status_counts=dict(Counter(r.get("status", "") for r in final.values())),
        n_rescored=len(rescored),
    )

