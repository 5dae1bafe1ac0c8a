"""Tool-call codecs: how tool calls travel through a model that only reads and writes text.

The agent always keeps the conversation in the canonical OpenAI shape (assistant messages
with `tool_calls`, `tool` messages with results): that is what trajectories and SFT data
store. A codec translates that conversation into what one model family reads (`encode`) and
that family's text back into tool calls (`decode`). The `native` codec does neither: the
server takes `tools` and returns parsed calls.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from ..base import Message, ParseError, ToolCall, ToolSpec


@dataclass
class Decoded:
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    error: ParseError | None = None


class ToolCodec(abc.ABC):
    name: str = "codec"
    #: True when the backend's server parses tool calls itself (OpenAI `tools` parameter).
    native: bool = False
    #: Stop strings that end a turn for this codec (e.g. ReAct stops before "Observation:").
    stop: list[str] = []

    @abc.abstractmethod
    def encode(self, messages: list[Message], tools: list[ToolSpec] | None) -> tuple[list[Message], list[ToolSpec] | None]:
        """Canonical messages + tools -> what to send to the model.

        Text codecs return plain role/content messages (tool list rendered into the system
        prompt, earlier tool calls rendered as text, tool results as text) and no tools,
        unless the model's chat template renders them (Hermes with Qwen templates)."""

    @abc.abstractmethod
    def decode(self, text: str, tools: list[ToolSpec] | None) -> Decoded:
        """Model text -> narration + tool calls, or a structured error. Never raises."""

    def for_template(self, template: str) -> "ToolCodec":
        """This codec adapted to a model's chat template (Jinja source): a codec whose format
        the template already writes (tool list, assistant `tool_calls`, tool results) keeps
        `tools` and canonical messages and lets the template render them. Backends that
        apply the template themselves call this; the default changes nothing."""
        return self
