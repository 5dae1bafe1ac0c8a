"""Conversation -> token ids + assistant mask, the one path both training and tests use.

The canonical conversation first goes through the family's tool-call codec (exactly what the
inference backends do before applying the chat template), then through the training template,
whose `{% generation %}` markers give the mask.
"""

from __future__ import annotations

from typing import Any

from ..models.chat_template import codec_for, render_messages, render_text
from ..models.codecs import ToolCodec

__all__ = ["codec_for", "render_messages", "render_text", "tokenize_conversation"]


def tokenize_conversation(tokenizer: Any, template: str, codec: ToolCodec, messages: list[dict[str, Any]],
                          tools: list[dict[str, Any]] | None = None) -> dict[str, list[int]]:
    """`input_ids` and `assistant_masks` (1 on tokens the model must learn to write)."""
    msgs, tls = render_messages(codec, messages, tools)
    out = tokenizer.apply_chat_template(msgs, tools=tls, chat_template=template, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    if len(ids) != len(mask):
        raise ValueError("tokenizer returned a mask of the wrong length")
    return {"input_ids": ids, "assistant_masks": mask}
