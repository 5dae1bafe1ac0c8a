"""The `native` codec: the server takes OpenAI `tools` and returns parsed calls itself."""

from __future__ import annotations

from ..base import Message, ToolSpec
from .base import Decoded, ToolCodec


class NativeCodec(ToolCodec):
    name = "native"
    native = True
    stop: list[str] = []

    def encode(self, messages: list[Message], tools: list[ToolSpec] | None) -> tuple[list[Message], list[ToolSpec] | None]:
        return messages, tools

    def decode(self, text: str, tools: list[ToolSpec] | None) -> Decoded:
        # The server already returned structured calls; the text is narration only.
        return Decoded(content=(text or "").strip())
