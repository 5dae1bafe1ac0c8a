"""Turn a backend's raw text into a `Completion` through a codec (shared by backends)."""

from __future__ import annotations

from .base import Completion, ToolSpec, Usage
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
