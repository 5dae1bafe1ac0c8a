"""Step 6: traces. Run the agent on each verified task in a real kernel holding the notebook's
linked files, score its answer against the task's with the evaluation scorer, keep both.

Notebooks whose files are not all here are skipped (`no_data`): the "LLM plays the
interpreter" variant (executor_type "llm") is not implemented. A crashing run is logged with
the task id and skipped; the other tasks of the shard go on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched
from loguru import logger

from ..agent.loop import AgentConfig, run_agent
from ..kernel import make_session
from ..models.base import ChatModel
from ..tasks.scoring import get_scorer
from ..tasks.task import Task


@dataclass
class TraceConfig:
    model: str | None = None              # default: the LLM steps' model
    model_options: dict[str, Any] | None = None
    kernel: str = "local"
    concurrency: int = 1                  # agent runs at once
    batch_size: int = 4
    scorer: str = "dabench"
    agent: dict[str, Any] = field(default_factory=lambda: {"max_turns": 8, "max_wall_s": 300.0})


def task_of(doc: Document, rec: dict[str, Any]) -> Task:
    files = [Path(f["path"]) for f in doc.metadata.get("files") or [] if f.get("path")]
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

    def model(self) -> ChatModel:
        if self._model is None:
            from ..models.resolve import load_model

            self._model = load_model(self.config.model, **(self.config.model_options or {}))
        return self._model

    async def trace(self, doc: Document, rec: dict[str, Any], sem: asyncio.Semaphore) -> None:
        task = task_of(doc, rec)
        async with sem:
            session = make_session(self.config.kernel, files=task.files)
            try:
                await session.start()
                traj = await run_agent(task, self.model(), session, AgentConfig(**self.config.agent))
            finally:
                await session.close()
        score = get_scorer(self.config.scorer).score(task, traj.answer)
        rec["trace"] = {"trajectory": traj.to_dict(), "executor_type": "jupyter", "predicted": traj.answer,
                        "correct": score.correct, "fraction": score.fraction}
        self.stat_update("traced")
        self.stat_update("correct" if score.correct else "incorrect")

    async def _guarded(self, doc: Document, rec: dict[str, Any], sem: asyncio.Semaphore) -> None:
        try:
            await self.trace(doc, rec, sem)
        except Exception as e:  # noqa: BLE001 - one crashing run never ends the shard
            logger.warning(f"trace failed for task {rec.get('id')}: {type(e).__name__}: {e}")
            self.stat_update("trace_errors")

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        loop = asyncio.new_event_loop()
        try:
            for batch in batched(data or [], self.config.batch_size):
                sem = asyncio.Semaphore(max(1, self.config.concurrency))
                jobs = []
                for doc in batch:
                    self.stat_update("total")
                    if not doc.metadata.get("executable"):
                        self.stat_update("skipped_no_data")
                        continue
                    jobs.extend(self._guarded(doc, rec, sem) for rec in doc.metadata.get("tasks") or [])
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
