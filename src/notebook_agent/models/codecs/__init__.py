"""Tool-call codecs by name: `get_codec("hermes")`."""

from __future__ import annotations

from typing import Any

from ..base import ModelError
from .base import Decoded, ToolCodec
from .hermes import HermesCodec
from .native import NativeCodec
from .qwen3_coder import Qwen3CoderCodec
from .react import ReActCodec

CODECS: dict[str, type[ToolCodec]] = {
    "native": NativeCodec,
    "hermes": HermesCodec,
    "qwen3_coder": Qwen3CoderCodec,
    "react": ReActCodec,
}


def get_codec(name: str | ToolCodec, **options: Any) -> ToolCodec:
    """A codec instance by name (an instance passes through unchanged)."""
    if isinstance(name, ToolCodec):
        return name
    key = name.strip().lower().replace("-", "_")
    if key not in CODECS:
        raise ModelError(f"unknown tool-call codec {name!r}; known codecs: {', '.join(CODECS)}")
    return CODECS[key](**options)


__all__ = ["CODECS", "Decoded", "HermesCodec", "NativeCodec", "Qwen3CoderCodec", "ReActCodec", "ToolCodec", "get_codec"]
