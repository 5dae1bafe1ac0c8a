"""Training chat templates: each family's template with `{% generation %}` markers.

The markers tell `apply_chat_template(..., return_assistant_tokens_mask=True)` which tokens
the model wrote, so the loss covers exactly the assistant turns (text, tool calls and the
end-of-turn token) and nothing else. With the markers removed, a template renders the same
text as the family's own template: that stripped template is what a trained model is saved
with, so inference sees the format training saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..models.chat_template import GENERATION_TAG, strip_generation_markers


@dataclass(frozen=True)
class Family:
    name: str
    #: The tool-call codec the family is trained and served with (models/codecs). Qwen's
    #: template writes tools and <tool_call> itself (Hermes); the others have no tool syntax
    #: and get the ReAct text the model registry already uses for them.
    codec: str


FAMILIES: dict[str, Family] = {
    "qwen2_5": Family("qwen2_5", "hermes"),
    "qwen3": Family("qwen3", "hermes"),
    "smollm2": Family("smollm2", "react"),
    "gemma3": Family("gemma3", "react"),
}



def load_template(name_or_path: str) -> str:
    """A training template by family name (see FAMILIES) or from a .jinja file."""
    if name_or_path in FAMILIES:
        return (resources.files(__package__) / "templates" / f"{name_or_path}.jinja").read_text()
    path = Path(name_or_path)
    if path.is_file():
        text = path.read_text()
        if not has_generation_markers(text):
            raise ValueError(f"{path} has no {{% generation %}} markers: assistant-only loss needs them")
        return text
    raise ValueError(f"unknown chat template {name_or_path!r}: use one of {', '.join(FAMILIES)} or a .jinja file path")


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and bool(GENERATION_TAG.search(template or ""))


def inference_template(training_template: str) -> str:
    """The template without its generation markers (what the trained model is saved with)."""
    return strip_generation_markers(training_template)


def detect_family(tokenizer: Any, model_type: str = "") -> str:
    """The family of a tokenizer/model, from its config's model_type and its vocabulary."""
    model_type = (model_type or "").lower()
    vocab = tokenizer.get_vocab()
    own = tokenizer.chat_template or ""
    if model_type.startswith("gemma") or "<start_of_turn>" in vocab:
        return "gemma3"
    if model_type.startswith("qwen3"):
        return "qwen3"
    if model_type.startswith("qwen2") or "<tool_call>" in vocab:
        return "qwen2_5"
    if "<|im_start|>" in vocab or "SmolLM" in own:
        return "smollm2"
    raise ValueError(f"no training chat template for model type {model_type!r}; pass --template with a "
                     f".jinja file that has {{% generation %}} markers (families: {', '.join(FAMILIES)})")
