"""The models' contract: one `ChatModel` interface for every backend.

Messages are OpenAI chat format (dicts with role/content, assistant `tool_calls`, `tool`
results with `tool_call_id`). Tools are OpenAI function-tool definitions. A backend returns
`n` completions with text, parsed tool calls (through a codec when the backend does not parse
them itself), usage and, where it can, per-token log-probabilities.
"""

from __future__ import annotations

import abc
import asyncio
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

Message = dict[str, Any]
ToolSpec = dict[str, Any]


class ModelError(RuntimeError):
    """The backend could not produce a completion (server down, model missing, bad request).

    The message says what to fix; `retryable` tells callers whether trying again may help.
    """

    def __init__(self, message: str, retryable: bool = False, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status  # the HTTP status, when a server answered


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    stop: list[str] | None = None
    seed: int | None = None
    logprobs: bool = False
    #: Constrained decoding of tool calls (see models/constrain.py): True/False, or None for
    #: the model's own default (`constrain=` when it was built; on unless turned off).
    constrain: bool | None = None
    #: With a constraint: "required" (a call of an offered tool), "auto" (text, or a call),
    #: or a tool's name (a call of that tool).
    tool_choice: str = "required"
    #: The tool-call codec (wire format) for this call, instead of the model's own: a name
    #: ("react", "hermes", "qwen3_coder") or a codec instance.
    codec: Any = None


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = ""

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }


@dataclass
class ParseError:
    """Why a completion's text could not be turned into tool calls. Shown to the model."""

    message: str
    raw: str = ""


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)


@dataclass
class Completion:
    """One sampled reply.

    `content` is the free text the model wrote outside tool calls (its narration);
    `raw_text` is everything it generated. `parse_error` is set when the text looked like a
    tool call but could not be parsed (or no call was found where the codec requires one).
    """

    raw_text: str
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    parse_error: ParseError | None = None
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    token_logprobs: list[float] | None = None
    #: How the reply was constrained: "none", "gbnf" (llama.cpp grammar in-process),
    #: "llguidance" (transformers logits processor), "server:grammar" / "server:ebnf" /
    #: "server:structured_outputs" / "server:guided_grammar" (a server's guided decoding),
    #: "server:tool_choice" (native tool calls with tool_choice).
    constraint: str = "none"

    @property
    def mean_logprob(self) -> float | None:
        if not self.token_logprobs:
            return None
        return sum(self.token_logprobs) / len(self.token_logprobs)

    @property
    def prior(self) -> float | None:
        """Geometric mean of token probabilities (JUPITER's prior for a step)."""
        m = self.mean_logprob
        return None if m is None else math.exp(m)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChatModel(abc.ABC):
    """A chat model behind any backend.

    Implementations override `_complete`. Callers use `complete` (async) or
    `complete_sync`; many concurrent `complete` calls are allowed: backends bound their own
    concurrency.
    """

    name: str = "model"
    #: whether `_complete` applies `SamplingParams.codec` itself (encodes, constrains and decodes
    #: in that format); models that do not get the scaffold's codec applied around them
    applies_call_codec: bool = False

    async def complete(
        self,
        messages: list[Message],
        tools: list[ToolSpec] | None = None,
        params: SamplingParams | None = None,
    ) -> list[Completion]:
        return await self._complete(messages, tools, params or SamplingParams())

    def complete_sync(
        self,
        messages: list[Message],
        tools: list[ToolSpec] | None = None,
        params: SamplingParams | None = None,
    ) -> list[Completion]:
        return asyncio.run(self.complete(messages, tools, params))

    @abc.abstractmethod
    async def _complete(
        self, messages: list[Message], tools: list[ToolSpec] | None, params: SamplingParams
    ) -> list[Completion]: ...

    def count_tokens(self, text: str) -> int:
        """Token count for context budgeting; backends with a tokenizer override this."""
        return max(1, len(text) // 4)

    @property
    def context_window(self) -> int:
        return 8192

    async def aclose(self) -> None:
        """Release resources (HTTP clients, loaded weights)."""
