"""Step 6: traces. Run the agent on each verified task in a real kernel holding the notebook's
linked files, score its answer against the task's with the evaluation scorer, keep both.

Notebooks whose files are not all here (`metadata["executable"]` false) are skipped
(`skipped_no_data`), unless `llm_interpreter` is on: then a model plays the kernel
(`data.llm_interpreter.LLMInterpreterSession`), grounded in the notebook's own cells and real
outputs, and the trace is marked `executor_type: "llm"` (counters with an `_llm` suffix:
`traced_llm`, `correct_llm`, ...). Its outputs are guesses; export can drop such rows
(`export.executor_types`). A crashing run is logged with the task id and skipped; the other
tasks of the shard go on.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched
from loguru import logger

from ..agent.config import AgentConfig, SessionConfig
from ..agent.loop import run_agent
from ..agent.session import task_session
from ..kernel import SandboxMode
from ..models.base import ChatModel
from ..tasks.scoring import get_scorer
from ..tasks.task import Task
from .llm.prompts import render_notebook
from .llm_interpreter import LLMInterpreterSession
from .notebook import notebook_of


@dataclass
class TraceConfig:
    model: str | None = None              # default: the LLM steps' model
    model_options: dict[str, Any] | None = None
    kernel: str = "local"
    sandbox: SandboxMode = "auto"         # kernel isolation: auto, require or off (data build --sandbox)
    concurrency: int = 1                  # agent runs at once
    batch_size: int = 4
    scorer: str = "dabench"
    agent: dict[str, Any] = field(default_factory=lambda: {"max_turns": 8, "max_wall_s": 300.0})
    # "LLM plays the interpreter" for notebooks whose data is missing (executor_type "llm")
    llm_interpreter: bool = False
    interpreter_model: str | None = None              # default: the trace model (same instance)
    interpreter_model_options: dict[str, Any] | None = None
    interpreter_context_chars: int = 8000             # the notebook's cells and outputs in each prompt
    interpreter_output_chars: int = 1000              # per source cell's output in that text
    interpreter_history_chars: int = 6000             # cells already run in the session
    interpreter_max_tokens: int = 512                 # longest simulated cell output


def task_of(doc: Document, rec: dict[str, Any], missing_too: bool = False) -> Task:
    """The task of `rec`. `missing_too` (for the LLM interpreter) also lists the files that are not
    here, by base name beside the notebook (never a path the code built, never the current
    directory), so the agent is told which files the notebook reads; they are shown by name only."""
    files = []
    source = doc.metadata.get("source")
    near = Path(os.path.abspath(source)).parent if source and "://" not in str(source) else None
    for f in doc.metadata.get("files") or []:
        if f.get("path"):
            files.append(Path(f["path"]))
        elif missing_too and near is not None and f.get("ref") and Path(f["ref"]).name:
            files.append(near / Path(f["ref"]).name)
    return Task(id=rec["id"], question=rec["question"], files=files, constraints=rec.get("constraints", ""),
                format=rec.get("format", ""), answer=rec.get("answer_pairs"), benchmark="nbqa",
                meta={"source": doc.metadata.get("source"), "source_cells": rec.get("source_cells", [])})


async def _gather(jobs: list[Any]) -> None:
    await asyncio.gather(*jobs)


class TraceStep(PipelineStep):
    type = "🏃 - TRACES"
    name = "agent traces"

    def __init__(self, config: TraceConfig | None = None, model: ChatModel | None = None):
        super().__init__()
        self.config = config or TraceConfig()
        self._model = model
        self._interpreter: ChatModel | None = None

    def model(self) -> ChatModel:
        if self._model is None:
            from ..models.resolve import load_model

            # the traces in flight decode together in an in-process model
            self._model = load_model(self.config.model, **{"parallel": max(1, self.config.concurrency),
                                                           **(self.config.model_options or {})})
        return self._model

    def interpreter_model(self) -> ChatModel:
        if self.config.interpreter_model is None:
            return self.model()
        if self._interpreter is None:
            from ..models.resolve import load_model

            self._interpreter = load_model(self.config.interpreter_model,
                                           **(self.config.interpreter_model_options or {}))
        return self._interpreter

    def interpreter_session(self, doc: Document) -> LLMInterpreterSession:
        """A model playing the kernel, shown the notebook's cells and real outputs."""
        c = self.config
        names = [Path(ref).name for f in doc.metadata.get("files") or [] if (ref := f.get("ref") or f.get("path"))]
        head = f"Data files the notebook reads: {', '.join(names)}\n\n" if names else ""
        context = head + render_notebook(notebook_of(doc), max_chars=c.interpreter_context_chars,
                                         max_output_chars=c.interpreter_output_chars)
        return LLMInterpreterSession(self.interpreter_model(), context, max_tokens=c.interpreter_max_tokens,
                                     max_context_chars=c.interpreter_context_chars + len(head),
                                     max_history_chars=c.interpreter_history_chars)

    async def trace(self, doc: Document, rec: dict[str, Any], sem: asyncio.Semaphore, executor: str = "jupyter") -> None:
        task = task_of(doc, rec, missing_too=executor == "llm")
        async with sem:
            custom = self.interpreter_session(doc) if executor == "llm" else None
            session_config = SessionConfig(backend=self.config.kernel, sandbox=self.config.sandbox)
            async with task_session(task, session_config, session=custom) as session:
                traj = await run_agent(task, self.model(), session, AgentConfig(**self.config.agent))
        score = get_scorer(self.config.scorer).score(task, traj.answer)
        rec["trace"] = {"trajectory": traj.to_dict(), "executor_type": executor, "predicted": traj.answer,
                        "correct": score.correct, "fraction": score.fraction, "isolation": traj.isolation}
        if executor == "llm":
            model = self.interpreter_model()
            rec["trace"]["interpreter_model"] = getattr(model, "name", type(model).__name__)
        suffix = "_llm" if executor == "llm" else ""
        self.stat_update("traced" + suffix)
        self.stat_update(("correct" if score.correct else "incorrect") + suffix)

    async def _guarded(self, doc: Document, rec: dict[str, Any], sem: asyncio.Semaphore, executor: str) -> None:
        try:
            await self.trace(doc, rec, sem, executor)
        except Exception as e:  # noqa: BLE001 - one crashing run never ends the shard
            logger.warning(f"trace failed for task {rec.get('id')}: {type(e).__name__}: {e}")
            self.stat_update("trace_errors" + ("_llm" if executor == "llm" else ""))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        loop = asyncio.new_event_loop()
        try:
            for batch in batched(data or [], self.config.batch_size):
                sem = asyncio.Semaphore(max(1, self.config.concurrency))
                jobs = []
                for doc in batch:
                    self.stat_update("total")
                    executor = "jupyter"
                    if not doc.metadata.get("executable"):
                        if not self.config.llm_interpreter:
                            self.stat_update("skipped_no_data")
                            continue
                        executor = "llm"
                    jobs.extend(self._guarded(doc, rec, sem, executor) for rec in doc.metadata.get("tasks") or [])
                with self.track_time("batch"):
                    loop.run_until_complete(_gather(jobs))
                for doc in batch:
                    if any("trace" in rec for rec in doc.metadata.get("tasks") or []):
                        self.stat_update("forwarded")
                        yield doc
                    else:
                        self.stat_update("dropped", "dropped_no_trace")
        finally:
            loop.close()


def check_trace_config(config: TraceConfig) -> None:
    """A ValueError naming the key when the kernel settings are not ones a session takes."""
    try:
        SessionConfig(backend=config.kernel, sandbox=config.sandbox)
    except ValueError as e:
        raise ValueError(f"traces: {e}") from None
