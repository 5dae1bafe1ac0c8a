"""Render a model's own chat template (Jinja) the way Hugging Face transformers does.

GGUF files carry the template in `tokenizer.chat_template`; rendering it ourselves (rather
than through llama.cpp's chat handlers) gives the codecs full control over the text and
lets templates that understand `tools` render them.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .base import Message, ToolSpec

if TYPE_CHECKING:
    from .codecs import ToolCodec

#: Used when a model ships no template (ChatML, what SmolLM2 and Qwen use).
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: Gemma 3 turns (its GGUF from the registry has no template): system text joins the first user turn.
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set prefix = messages[0]['content'] + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

BUILTIN = {"chatml": CHATML, "gemma": GEMMA}


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False) -> str:
    # HF's tojson: no HTML escaping, key order kept (jinja's own sorts keys and escapes '<').
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise ValueError(f"chat template error: {message}")


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> Any:
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols], undefined=jinja2.Undefined)
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def resolve(template: str | None) -> str:
    """A template string from a name in BUILTIN, a template, or None (ChatML)."""
    if template is None:
        return CHATML
    return BUILTIN.get(template, template)


def render(
    template: str,
    messages: list[Message],
    tools: list[ToolSpec] | None = None,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    **extra: Any,
) -> str:
    msgs = [{**m, "content": m.get("content") if m.get("content") is not None else ""} for m in messages]
    return _compile(template).render(
        messages=msgs,
        tools=tools or None,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
        **extra,
    )


# -- training templates at inference, and conversations rendered through a codec -----------------
GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


def strip_generation_markers(template: str) -> str:
    """A training template (with `{% generation %}` markers) as inference renders it."""
    return GENERATION_TAG.sub("", template)


def codec_for(name: "str | ToolCodec", template: str) -> "ToolCodec":
    """The codec as a backend serving this (training or inference) template would configure it."""
    from .codecs import get_codec

    return get_codec(name).for_template(strip_generation_markers(template))


def render_messages(codec: "ToolCodec", messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The conversation as the codec writes it (what the chat template is applied to)."""
    msgs, tls = codec.encode(messages, tools or None)
    return [{**m, "content": m.get("content") or ""} for m in msgs], tls


def render_text(tokenizer: Any, template: str, codec: "ToolCodec", messages: list[dict[str, Any]],
                tools: list[dict[str, Any]] | None = None, add_generation_prompt: bool = False) -> str:
    """The conversation's text through the codec and the template, by the tokenizer's renderer."""
    msgs, tls = render_messages(codec, messages, tools)
    return tokenizer.apply_chat_template(msgs, tools=tls, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
