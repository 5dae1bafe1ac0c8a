"""Turn a backend's raw text into a `Completion` through a codec (shared by backends), and
complete in a scaffold's own text format (`complete_with_codec`)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .base import ChatModel, Completion, SamplingParams, ToolSpec, Usage
from .codecs import get_codec
from .codecs.base import ToolCodec

if TYPE_CHECKING:
    from .constrain import Constraint


def decode_completion(
    text: str,
    codec: ToolCodec,
    tools: list[ToolSpec] | None,
    finish_reason: str = "stop",
    usage: Usage | None = None,
    token_logprobs: list[float] | None = None,
    constraint: "Constraint | None" = None,
    mode: str = "none",
    max_tokens: int = 0,
) -> Completion:
    """Decode `text` with `codec`. A constrained reply that `max_tokens` cut before the
    grammar's end is a parse error with no calls (a half-written call is never returned as a
    call), except plain text where the constraint allowed text."""
    if constraint is not None and finish_reason == "length" and _call_started(text, constraint):
        from .constrain import truncated_error

        return Completion(raw_text=text, content="", parse_error=truncated_error(text, max_tokens),
                          finish_reason=finish_reason, usage=usage or Usage(), token_logprobs=token_logprobs,
                          constraint=mode)
    decoded = codec.decode(text, tools) if tools else None
    return Completion(
        raw_text=text,
        content=decoded.content if decoded else text.strip(),
        tool_calls=decoded.tool_calls if decoded else [],
        parse_error=decoded.error if decoded else None,
        finish_reason=finish_reason,
        usage=usage or Usage(),
        token_logprobs=token_logprobs,
        constraint=mode,
    )


def _call_started(text: str, constraint: "Constraint") -> bool:
    if constraint.tool_choice != "auto":
        return True
    return "<tool_call>" in text


def call_codec(model_codec: ToolCodec, params: SamplingParams, template: str | None = None) -> ToolCodec:
    """The codec of one call: `params.codec` when set (adapted to the chat template), else
    the model's own."""
    if params.codec is None:
        return model_codec
    codec = get_codec(params.codec)
    return codec.for_template(template) if template is not None else codec


def constraint_for(codec: ToolCodec, tools: list[ToolSpec] | None, params: SamplingParams,
                   default: bool) -> "Constraint | None":
    """The grammar for this call, or None when it is unconstrained (turned off, no tools,
    a native codec)."""
    on = default if params.constrain is None else params.constrain
    if not on or not tools:
        return None
    from .constrain import grammar_for

    return grammar_for(codec, tools, params.tool_choice)


def stops_for(params: SamplingParams, codec: ToolCodec, constrained: bool) -> list[str]:
    """Stop strings: the caller's and the codec's. A grammar ends the reply itself, and a
    codec stop string may occur inside a constrained value (code that prints
    "Observation:"), so under a constraint the codec's own stops are dropped."""
    if constrained:
        return merged_stops([s for s in params.stop or [] if s not in codec.stop])
    return merged_stops(params.stop, codec.stop)


def merged_stops(*lists: list[str] | None) -> list[str]:
    """Stop strings from the caller and the codec, de-duplicated, order kept."""
    out: list[str] = []
    for lst in lists:
        for s in lst or []:
            if s and s not in out:
                out.append(s)
    return out


async def complete_with_codec(model: ChatModel, messages: list[dict[str, Any]], tools: list[ToolSpec],
                              params: SamplingParams, codec: str | ToolCodec | None = None) -> list[Completion]:
    """`model.complete`, with the tool calls carried in the text format of `codec` when one is
    named (a scaffold's own format, e.g. ReAct), whatever codec the model was loaded with.

    This is the one place a scaffold's codec is applied. A backend that applies
    `SamplingParams.codec` itself (`ChatModel.applies_call_codec`: llama.cpp, OpenAI-compatible
    servers, transformers) gets the codec and the tools, so it can also constrain the reply to
    that format; any other model sees the encoded messages and no tool specs, and its
    completions are decoded here. With `codec` None the model's own codec does both.
    """
    if codec is None:
        return await model.complete(messages, tools, params)
    if model.applies_call_codec:
        return await model.complete(messages, tools, dataclasses.replace(params, codec=codec))
    text_codec = get_codec(codec)
    encoded, _ = text_codec.encode(messages, tools)
    params = dataclasses.replace(params, stop=merged_stops(params.stop, list(text_codec.stop)))
    completions = await model.complete(encoded, None, params)
    for completion in completions:
        decoded = text_codec.decode(completion.raw_text, tools)
        completion.content = decoded.content
        completion.tool_calls = decoded.tool_calls
        completion.parse_error = decoded.error
    return completions
