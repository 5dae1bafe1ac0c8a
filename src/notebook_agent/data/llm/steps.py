"""Step 5: LLM steps over notebooks. Each gathers a batch of documents, asks the model about
all of them concurrently (bounded by the client), and yields them in order.

- `EduScoreStep`: score 1-5 + justification; keeps scores >= threshold.
- `RelevanceStep`: keeps "data analysis on real data" notebooks.
- `QAGenerationStep`: NbQA-style tasks grounded in the notebook's outputs (`metadata["tasks"]`).
- `QAVerifyStep`: an independent call per task; unconfirmed tasks are dropped.

A failing call (after retries) drops that notebook with reason `model_error`, logged with
its id; an unreadable reply is counted (`unparsed`) and drops only what it concerns.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched
from loguru import logger

from ...models.base import ChatModel
from ..notebook import NotebookError, cell_output_text, notebook_of
from .client import CachedClient, LLMCallFailed, LLMConfig
from .parse import normalize_qa, parse_qa, parse_score, parse_verdict
from .prompts import edu_prompt, qa_prompt, relevance_prompt, render_notebook, verify_prompt

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


class LLMStep(PipelineStep):
    """Base: model resolution (lazy, so the step pickles and deep-copies), batching, errors."""

    type = "🤖 - LLM"

    def __init__(self, config: LLMConfig, model: ChatModel | None = None, cache_dir: str | None = None):
        super().__init__()
        self.config = config
        self._model = model
        self.cache_dir = config.cache_dir or cache_dir

    def client(self) -> CachedClient:
        if self._model is None:
            from ...models.resolve import load_model

            self._model = load_model(self.config.model, **(self.config.model_options or {}))
        return CachedClient(self._model, self.config, self.cache_dir)

    async def process(self, client: CachedClient, doc: Document) -> bool | str:
        """True to keep, or the drop reason."""
        raise NotImplementedError

    async def _guarded(self, client: CachedClient, doc: Document) -> bool | str:
        try:
            return await self.process(client, doc)
        except NotebookError as e:
            return e.reason
        except LLMCallFailed as e:
            logger.warning(f"{self.name}: model call failed for {doc.id}: {e}")
            return "model_error"
        except Exception as e:  # noqa: BLE001
            logger.warning(f"{self.name}: skipping {doc.id}: {type(e).__name__}: {e}")
            return "step_error"

    async def _batch(self, client: CachedClient, batch: list[Document]) -> list[bool | str]:
        return list(await asyncio.gather(*(self._guarded(client, d) for d in batch)))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        client: CachedClient | None = None
        loop = asyncio.new_event_loop()
        try:
            for batch in batched(data or [], self.config.batch_size):
                client = client or self.client()  # no model is loaded for an empty input
                with self.track_time("batch"):
                    verdicts = loop.run_until_complete(self._batch(client, batch))
                yield from self._emit(batch, verdicts)
        finally:
            loop.close()
            if client is not None:
                self.stat_update("model_calls", value=client.calls)
                self.stat_update("cache_hits", value=client.cache_hits)

    def _emit(self, batch: list[Document], verdicts: list[bool | str]) -> Iterator[Document]:
        for doc, verdict in zip(batch, verdicts):
            self.stat_update("total")
            if verdict is True:
                self.stat_update("forwarded")
                yield doc
            else:
                self.stat_update("dropped", f"dropped_{verdict}")

    def notebook_text(self, doc: Document) -> str:
        return render_notebook(notebook_of(doc), self.config.max_notebook_chars)


class EduScoreStep(LLMStep):
    name = "edu score"

    async def process(self, client: CachedClient, doc: Document) -> bool | str:
        reply = await client.ask(edu_prompt(self.notebook_text(doc)))
        parsed = parse_score(reply)
        if parsed is None:
            doc.metadata["edu_raw"] = reply[:500]
            return "unparsed"
        doc.metadata["edu_score"], doc.metadata["edu_justification"] = parsed
        self.stat_update(f"score_{parsed[0]}")
        return True if parsed[0] >= self.config.edu_threshold else "low_edu_score"


class RelevanceStep(LLMStep):
    name = "relevance"

    async def process(self, client: CachedClient, doc: Document) -> bool | str:
        reply = await client.ask(relevance_prompt(self.notebook_text(doc)))
        verdict = parse_verdict(reply, "YES", "NO")
        if verdict is None:
            return "unparsed"
        doc.metadata["relevant"] = verdict
        return True if verdict else "not_relevant"


def grounded(pairs: list[list[Any]], nb: dict[str, Any], cells: list[int]) -> bool:
    """Every answer value appears in the outputs (of the cited cells, else of any cell)."""
    chosen = [nb["cells"][i] for i in cells] if cells else nb["cells"]
    text = "\n".join(cell_output_text(c) for c in chosen if c.get("cell_type") == "code")
    numbers = [float(x) for x in _NUMBER.findall(text)]
    for _, value in pairs:
        v = str(value).strip()
        if not v:
            return False
        if v in text:
            continue
        try:
            f = float(v)
        except ValueError:
            return False
        if not any(abs(f - x) <= 1e-6 * max(1.0, abs(f)) for x in numbers):
            return False
    return True


class QAGenerationStep(LLMStep):
    name = "qa generation"

    async def process(self, client: CachedClient, doc: Document) -> bool | str:
        nb = notebook_of(doc)
        reply = await client.ask(qa_prompt(self.notebook_text(doc), self.config.max_questions))
        items = parse_qa(reply)
        if not items:
            self.stat_update("qa_unparsed")
            return "no_questions"
        tasks = []
        digest = hashlib.md5(doc.id.encode()).hexdigest()[:10]
        for item in items[: self.config.max_questions]:
            rec = normalize_qa(item, len(nb["cells"]))
            if isinstance(rec, str):
                self.stat_update(f"qa_rejected_{rec}")
                continue
            if not grounded(rec["answer_pairs"], nb, rec["source_cells"]):
                self.stat_update("qa_rejected_ungrounded")
                continue
            rec["id"] = f"nb-{digest}-q{len(tasks)}"
            tasks.append(rec)
        self.stat_update("questions", value=len(tasks))
        if not tasks:
            return "no_questions"
        doc.metadata["tasks"] = tasks
        return True


class QAVerifyStep(LLMStep):
    name = "qa verification"

    async def process(self, client: CachedClient, doc: Document) -> bool | str:
        text = self.notebook_text(doc)
        tasks = doc.metadata.get("tasks") or []
        replies = await asyncio.gather(*(client.ask(verify_prompt(text, t["question"], t["answer"])) for t in tasks))
        kept = []
        for task, reply in zip(tasks, replies):
            verdict = parse_verdict(reply, "CONFIRMED", "REJECTED")
            self.stat_update("confirmed" if verdict else ("rejected" if verdict is False else "verify_unparsed"))
            if verdict:
                task["verified"] = True
                kept.append(task)
        doc.metadata["tasks"] = kept
        return True if kept else "no_verified_questions"
