"""The run manager: one asyncio task per agent run, its events fanned out to any number of readers.

Each run owns a directory `<runs_dir>/ui/<id>/` holding its uploaded files, `run.json` (the
record the list of past runs shows), `events.jsonl` (every event as it happened) and, at the
end, `trajectory.json` and `notebook.ipynb`. The kernel works in its own directory on copies
of the files. Readers follow a run's event list from any position (late readers get the
backlog first); the list ends with a "done" event once the files are written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..agent.config import AgentConfig, AgentEvent, SessionConfig
from ..agent.loop import run_agent
from ..agent.save import save_run
from ..agent.session import SessionStartError, task_session
from ..agent.trajectory import RunStatus
from ..kernel.base import KernelSession, SandboxMode
from ..models.base import ChatModel
from ..tasks.task import Task

RUN_ID = re.compile(r"[0-9a-f]{32}")
# A page run's status: before the agent works ("starting", "running"), how the agent's run
# ended (a RunStatus), or what happened around it ("failed": the harness; "interrupted": the
# server stopped during the run).
UIRunStatus = RunStatus | Literal["starting", "running", "failed", "interrupted"]


@dataclass
class RunsConfig:
    runs_dir: Path = Path("runs")
    default_model: str | None = None         # None: the models package's default
    kernel_backend: str = "local"
    sandbox: SandboxMode = "auto"            # kernel isolation: auto, require or off
    max_models: int = 2                      # models kept loaded (least recently used closed first)
    max_active_runs: int = 2                 # runs working at once; more are refused (429)
    max_turns_limit: int = 50                # the most a request may ask for
    agent: AgentConfig = field(default_factory=AgentConfig)

    @property
    def root(self) -> Path:
        return Path(self.runs_dir) / "ui"


@dataclass
class RunRecord:
    """What the list of past runs shows; saved as run.json."""

    id: str
    question: str
    model: str
    files: list[str]
    max_turns: int
    status: UIRunStatus = "starting"
    detail: str = ""
    answer: str | None = None
    created: float = field(default_factory=time.time)
    ended: float | None = None
    cells: int = 0
    turns: int = 0
    isolation: dict[str, Any] | None = None   # how the kernel was confined (session.isolation)

    @property
    def finished(self) -> bool:
        return self.ended is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def event_to_json(event: AgentEvent) -> dict[str, Any]:
    """An AgentEvent as plain JSON (ExecutionResults become their dicts)."""
    data = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in event.data.items()}
    return {"kind": event.kind, "turn": event.turn, "data": data}


class Run:
    """One run: its record, its event list and the signal that stops it."""

    def __init__(self, record: RunRecord, directory: Path):
        self.record = record
        self.dir = directory
        self.events: list[dict[str, Any]] = []
        self.stop = asyncio.Event()
        self.phase = "starting"       # what it is doing now: told to a user who presses Stop
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._t0 = time.monotonic()
        self._log = None

    # -- writing ---------------------------------------------------------------------------
    def publish(self, kind: str, turn: int = 0, **data: Any) -> None:
        self.publish_json({"kind": kind, "turn": turn, "data": data})

    def publish_json(self, event: dict[str, Any]) -> None:
        event = {"seq": len(self.events), "t": round(time.monotonic() - self._t0, 3), **event}
        self.events.append(event)
        if self._log is None:
            self._log = (self.dir / "events.jsonl").open("a", encoding="utf-8")
        self._log.write(json.dumps(event, ensure_ascii=False) + "\n")
        self._log.flush()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def on_agent_event(self, event: AgentEvent) -> None:
        self.phase = {"turn": "model", "cell": "cell", "result": "between"}.get(event.kind, self.phase)
        if event.kind == "result":
            self.record.cells += 1
        self.record.turns = max(self.record.turns, event.turn)
        self.publish_json(event_to_json(event))

    def save_record(self) -> None:
        tmp = self.dir / "run.json.tmp"
        tmp.write_text(json.dumps(self.record.to_dict(), ensure_ascii=False, indent=1))
        tmp.replace(self.dir / "run.json")

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- reading ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1]["kind"] == "done"

    async def follow(self, after: int = -1, idle_s: float | None = None,
                     until: asyncio.Event | None = None) -> AsyncIterator[dict[str, Any] | None]:
        """Events with seq > after, then each new one as it comes, until "done" (or `until` is set).

        With `idle_s`, yields None after that many seconds without an event (for keep-alives).
        """
        i = after + 1
        while True:
            waiter = self._changed
            while i < len(self.events):
                yield self.events[i]
                i += 1
            if self.done or (until is not None and until.is_set()):
                return
            waits = [asyncio.ensure_future(waiter.wait())]
            if until is not None:
                waits.append(asyncio.ensure_future(until.wait()))
            try:
                finished, _ = await asyncio.wait(waits, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if not finished:
                yield None


def _read_events(directory: Path) -> list[dict[str, Any]]:
    path = directory / "events.jsonl"
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a crash: keep what came before
    return events


ModelLoader = Callable[[str], ChatModel]
SessionMaker = Callable[..., KernelSession]


class ModelCache:
    """Loaded models by spec, at most `max_models` of them, least recently used closed first.

    Loading a GGUF takes seconds, so each spec loads once and is kept while it is among the
    `max_models` most recently asked for. A model is in use while a task that asked for it
    (a run) has not finished: it is never closed under that task. When more distinct models
    are in use than the bound, the cache holds them all and closes the extra ones as their
    runs end.
    """

    def __init__(self, load: ModelLoader, max_models: int = 2):
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self._load = load
        self.max_models = max_models
        self._models: dict[str, ChatModel] = {}          # least recently used first
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, set[asyncio.Task[Any]]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def in_use(self, spec: str) -> bool:
        users = self._users.get(spec)
        if users:
            users.difference_update([t for t in users if t.done()])
        return bool(users)

    @property
    def loaded(self) -> list[str]:
        """Specs loaded now, least recently used first."""
        return list(self._models)

    async def get(self, spec: str) -> ChatModel:
        """The model for `spec`, loaded if needed; it counts as in use until the calling task ends."""
        task = asyncio.current_task()
        async with self._locks.setdefault(spec, asyncio.Lock()):
            if task is not None:  # claimed before evicting, so that nobody closes it under us
                if task not in self._users.setdefault(spec, set()):
                    self._users[spec].add(task)
                    task.add_done_callback(lambda _t: self._schedule_trim())
            if spec in self._models:
                self._models[spec] = self._models.pop(spec)   # most recently used now
                return self._models[spec]
            await self._trim(room=1)                          # free memory before loading
            model = await asyncio.to_thread(self._load, spec)
            self._models[spec] = model
            return model

    async def _trim(self, room: int = 0) -> None:
        """Close least recently used models not in use until `room` more fit under the bound."""
        for spec in list(self._models):
            if len(self._models) + room <= self.max_models:
                return
            if self.in_use(spec):
                continue
            model = self._models.pop(spec, None)
            if model is not None:  # (another trim may have closed it meanwhile)
                await model.aclose()

    def _schedule_trim(self) -> None:
        try:
            task = asyncio.get_running_loop().create_task(self._trim())
        except RuntimeError:  # the loop is gone: aclose() is the last word
            return
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        models, self._models = list(self._models.values()), {}
        self._users.clear()
        for model in models:
            await model.aclose()


def _default_loader(spec: str) -> ChatModel:
    from ..models.resolve import load_model

    return load_model(spec)


class TooManyRuns(RuntimeError):
    pass


class RunManager:
    """Starts runs, keeps the live ones in memory, reads past ones from disk."""

    def __init__(self, config: RunsConfig, load_model: ModelLoader | None = None,
                 make_session: SessionMaker | None = None):
        self.config = config
        self.models = ModelCache(load_model or _default_loader, max_models=config.max_models)
        self.make_session = make_session  # None: agent.session.task_session's own sessions
        self.live: dict[str, Run] = {}

    def default_model(self) -> str:
        if self.config.default_model:
            return self.config.default_model
        from ..models.resolve import default_model_name

        return default_model_name()

    # -- starting ----------------------------------------------------------------------------
    def active(self) -> list[Run]:
        return [r for r in self.live.values() if not r.record.finished]

    async def start(self, question: str, files: list[Path], model: str | None = None,
                    max_turns: int | None = None) -> Run:
        """Create the run directory, copy `files` into it and start the run's task."""
        if len(self.active()) >= self.config.max_active_runs:
            raise TooManyRuns(f"{self.config.max_active_runs} runs are already working; stop one or wait")
        turns = max(1, min(int(max_turns or self.config.agent.max_turns), self.config.max_turns_limit))
        spec = (model or "").strip() or self.default_model()
        run_id = uuid.uuid4().hex
        directory = self.config.root / run_id
        directory.mkdir(parents=True)
        for f in files:
            shutil.copy2(f, directory / f.name)
        record = RunRecord(id=run_id, question=question, model=spec, files=[f.name for f in files], max_turns=turns)
        run = Run(record, directory)
        run.save_record()
        self.live[run_id] = run
        run.task = asyncio.create_task(self._work(run), name=f"ui-run-{run_id}")
        return run

    async def _work(self, run: Run) -> None:
        rec = run.record
        files = [run.dir / name for name in rec.files]
        task = Task(id=rec.id, question=rec.question, files=files)
        try:
            run.phase = "loading"
            run.publish("status", text=f"loading model {rec.model}...")
            try:
                model = await self.models.get(rec.model)
            except Exception as e:  # ModelError, or a bad spec the loader did not expect
                return self._end(run, "model_error", f"could not load model {rec.model!r}: {e}")
            if run.stop.is_set():
                return self._end(run, "cancelled", "stopped by the user")
            run.publish("status", text="starting a kernel...")
            session_config = SessionConfig(backend=self.config.kernel_backend, sandbox=self.config.sandbox)
            custom = self.make_session(self.config.kernel_backend, files=files) if self.make_session else None
            try:
                async with task_session(task, session_config, session=custom) as session:
                    rec.status, rec.isolation = "running", dict(session.isolation)
                    run.save_record()
                    config = dataclasses.replace(self.config.agent, max_turns=rec.max_turns)
                    traj = await run_agent(task, model, session, config, on_event=run.on_agent_event, stop=run.stop)
            except SessionStartError as e:
                return self._end(run, "kernel_error", str(e))
            save_run(traj, run.dir, task=task, metadata=None)
            self._end(run, traj.status, traj.status_detail, traj.answer)
        except asyncio.CancelledError:
            self._end(run, "cancelled", "the server shut down during the run")
            raise
        except Exception as e:  # never leave a run without its "done"
            self._end(run, "failed", f"{type(e).__name__}: {e}")
        finally:
            self.live.pop(rec.id, None)  # finished runs are read back from disk; readers keep their Run

    def _end(self, run: Run, status: UIRunStatus, detail: str = "", answer: str | None = None) -> None:
        rec = run.record
        rec.status, rec.detail, rec.answer, rec.ended = status, detail, answer, time.time()
        run.phase = "done"
        run.save_record()
        run.publish("done", rec.turns, status=status, detail=detail, answer=answer,
                    notebook=(run.dir / "notebook.ipynb").exists(),
                    trajectory=(run.dir / "trajectory.json").exists())
        run.close_log()

    # -- stopping ----------------------------------------------------------------------------
    def stop(self, run_id: str) -> str:
        """Ask a run to stop; returns what will happen, in words."""
        run = self.live.get(run_id)
        if run is None or run.record.finished:
            return "the run has already finished"
        already = run.stop.is_set()
        run.stop.set()
        when = {
            "cell": "a cell is running: the run ends when it finishes",
            "model": "the model is writing its step: the run ends when it finishes (a cell it writes still runs)",
            "loading": "the model is loading: the run ends when it is loaded",
        }.get(run.phase, "the run ends before its next step")
        if not already:
            run.publish("notice", run.record.turns, text=f"Stop requested; {when}.")
        return f"stopping; {when}"

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop every run (waiting up to grace_s for them to write their notebooks), free models."""
        runs = self.active()
        for run in runs:
            if not run.stop.is_set():
                run.publish("notice", run.record.turns, text="The server is shutting down: the run stops "
                            "after its current step.")
            run.stop.set()
        tasks = [r.task for r in runs if r.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace_s)
        await self.models.aclose()

    # -- reading -------------------------------------------------------------------------------
    def get(self, run_id: str) -> Run | None:
        """A live run, or a past one read back from its directory (None if unknown)."""
        if not RUN_ID.fullmatch(run_id):
            return None
        if run_id in self.live:
            return self.live[run_id]
        directory = self.config.root / run_id
        try:
            record = RunRecord.from_dict(json.loads((directory / "run.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None
        run = Run(record, directory)
        run.events = _read_events(directory)
        if not run.done:  # the server stopped while it worked: its story ends here
            record.status = "interrupted" if not record.finished else record.status
            run.events.append({"seq": len(run.events), "t": 0, "kind": "done", "turn": record.turns,
                               "data": {"status": record.status, "detail": "the server stopped during this run",
                                        "answer": record.answer,
                                        "notebook": (directory / "notebook.ipynb").exists(),
                                        "trajectory": (directory / "trajectory.json").exists()}})
        return run

    def list(self, limit: int = 200) -> list[dict[str, Any]]:
        """Past and live runs, newest first."""
        records: dict[str, RunRecord] = {}
        root = self.config.root
        if root.is_dir():
            for path in root.glob("*/run.json"):
                if not RUN_ID.fullmatch(path.parent.name):
                    continue
                try:
                    rec = RunRecord.from_dict(json.loads(path.read_text()))
                except (OSError, ValueError, TypeError):
                    continue
                if not rec.finished:
                    rec.status = "interrupted"
                records[rec.id] = rec
        for run_id, run in self.live.items():
            records[run_id] = run.record
        return [r.to_dict() for r in sorted(records.values(), key=lambda r: r.created, reverse=True)[:limit]]
