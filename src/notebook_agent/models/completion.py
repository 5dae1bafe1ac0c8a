"""Turn a backend's raw text into a `Completion` through a codec (shared by backends), and
complete in a scaffold's own text format (`complete_with_codec`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import ChatModel, Completion, SamplingParams, ToolSpec, Usage
from .codecs.base import ToolCodec


def decode_completion(
    text: str,
    codec: ToolCodec,
    tools: list[ToolSpec] | None,
    finish_reason: str = "stop",
    usage: Usage | None = None,
    token_logprobs: list[float] | None = None,
) -> Completion:
    decoded = codec.decode(text, tools) if tools else None
    return Completion(
        raw_text=text,
        content=decoded.content if decoded else text.strip(),
        tool_calls=decoded.tool_calls if decoded else [],
        parse_error=decoded.error if decoded else None,
        finish_reason=finish_reason,
        usage=usage or Usage(),
        token_logprobs=token_logprobs,
    )


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

    This is the one place a scaffold's codec is applied: the messages are encoded with it, the
    model sees no tool specs (so its own codec leaves the text alone), and every completion is
    decoded with it. With `codec` None the model's own codec does both.
    """
    if codec is None:
        return await model.complete(messages, tools, params)
    from .codecs import get_codec

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
