"""A model that replays a script: for testing loops' bookkeeping, never a feature's evidence.

Each entry is either a `Completion`, a raw text (decoded with the given codec when one is
set), or a callable taking the messages and returning either of those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .base import ChatModel, Completion, Message, SamplingParams, ToolCall, ToolSpec, Usage

ScriptEntry = Completion | str | Callable[[list[Message]], "Completion | str"]


def call(name: str, **arguments: Any) -> Completion:
    """A completion holding one parsed tool call."""
    return Completion(raw_text="", tool_calls=[ToolCall(name, arguments)], usage=Usage(10, 10))


class ScriptedModel(ChatModel):
    def __init__(self, script: Sequence[ScriptEntry], codec: str | None = None, name: str = "scripted"):
        self.script = list(script)
        self.calls: list[list[Message]] = []
        self.name = name
        self.codec = None
        if codec:
            from .codecs import get_codec

            self.codec = get_codec(codec)

    async def _complete(self, messages: list[Message], tools: list[ToolSpec] | None,
                        params: SamplingParams) -> list[Completion]:
        self.calls.append(messages)
        if not self.script:
            return [Completion(raw_text="I have nothing more to say.", content="I have nothing more to say.",
                               usage=Usage(10, 5))] * params.n
        entry = self.script.pop(0)
        if callable(entry):
            entry = entry(messages)
        if isinstance(entry, str):
            text = entry
            entry = Completion(raw_text=text, content=text, usage=Usage(10, 10))
            if self.codec is not None and tools:
                decoded = self.codec.decode(text, tools)
                entry.content, entry.tool_calls, entry.parse_error = decoded.content, decoded.tool_calls, decoded.error
        return [entry] * params.n
