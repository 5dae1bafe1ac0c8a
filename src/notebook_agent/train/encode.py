"""Conversation -> token ids + assistant mask, the one path both training and tests use.

The canonical conversation first goes through the family's tool-call codec (exactly what the
inference backends do before applying the chat template), then through the training template,
whose `{% generation %}` markers give the mask.
"""

from __future__ import annotations

from typing import Any

from ..models.codecs import ToolCodec, get_codec
from .templates import inference_template


def codec_for(name: str | ToolCodec, training_template: str) -> ToolCodec:
    """The codec as a backend serving this template would configure it."""
    return get_codec(name).for_template(inference_template(training_template))


def render_messages(codec: ToolCodec, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    msgs, tls = codec.encode(messages, tools or None)
    return [{**m, "content": m.get("content") or ""} for m in msgs], tls


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


def render_text(tokenizer: Any, template: str, codec: ToolCodec, messages: list[dict[str, Any]],
                tools: list[dict[str, Any]] | None = None, add_generation_prompt: bool = False) -> str:
    msgs, tls = render_messages(codec, messages, tools)
    return tokenizer.apply_chat_template(msgs, tools=tls, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
