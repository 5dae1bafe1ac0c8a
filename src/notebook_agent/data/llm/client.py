"""Model calls for the LLM steps: bounded concurrency, retries with backoff, and an on-disk cache
keyed by (model, messages, sampling) so that a rerun does not pay twice.

The cache is one small JSON file per call under `cache_dir/ab/<sha256>.json`, written
atomically (rename), so parallel tasks can share it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from ...models.base import ChatModel, Message, SamplingParams


class LLMCallFailed(RuntimeError):
    pass


@dataclass
class LLMConfig:
    model: str | None = None             # a name/path/URL for models.resolve.load_model
    model_options: dict[str, Any] | None = None
    concurrency: int = 2
    retries: int = 2
    retry_backoff_s: float = 1.0
    max_tokens: int = 512
    temperature: float = 0.0
    cache_dir: str | None = None         # default: OUT/llm_cache
    batch_size: int = 16                 # documents gathered per async batch
    max_notebook_chars: int = 6000       # notebook text shown to the model
    edu_threshold: int = 4
    max_questions: int = 3


class CachedClient:
    def __init__(self, model: ChatModel, config: LLMConfig, cache_dir: str | Path | None):
        self.model = model
        self.config = config
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.sem = asyncio.Semaphore(max(1, config.concurrency))
        self.calls = 0
        self.cache_hits = 0

    def _key(self, messages: list[Message], params: SamplingParams) -> str:
        blob = json.dumps({"model": getattr(self.model, "name", type(self.model).__name__), "messages": messages,
                           "max_tokens": params.max_tokens, "temperature": params.temperature}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir else None

    async def ask(self, messages: list[Message]) -> str:
        """The model's text for `messages` (cached); LLMCallFailed after the retries."""
        params = SamplingParams(max_tokens=self.config.max_tokens, temperature=self.config.temperature)
        key = self._key(messages, params)
        path = self._path(key)
        if path is not None and path.is_file():
            try:
                self.cache_hits += 1
                return json.loads(path.read_text())["text"]
            except (OSError, ValueError, KeyError):
                self.cache_hits -= 1  # a torn entry: call again
        last: Exception | None = None
        for attempt in range(self.config.retries + 1):
            try:
                async with self.sem:
                    self.calls += 1
                    completions = await self.model.complete(messages, None, params)
                text = completions[0].raw_text or completions[0].content
                break
            except Exception as e:  # noqa: BLE001 - any backend failure is retried, then reported
                last = e
                logger.warning(f"model call failed (attempt {attempt + 1}): {type(e).__name__}: {e}")
                await asyncio.sleep(self.config.retry_backoff_s * (2 ** attempt))
        else:
            raise LLMCallFailed(f"{type(last).__name__}: {last}")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"key": key, "text": text}))
            tmp.replace(path)
        return text
