"""Load a base model and tokenizer for training from any local form people have.

Accepted: a model registry name (`smollm2-135m`), a `.gguf` file, a transformers model
directory, or a Hugging Face repo id (downloaded where there is network). A model loaded from
GGUF is dequantized and rebuilt as a plain model: transformers marks it quantized otherwise,
and the Trainer refuses to train or save it (see ../shared/GPU.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_source(spec: str) -> tuple[str, str | None]:
    """(directory or repo id, gguf file name or None)."""
    from ..models import registry

    known = registry.known_models()
    if spec in known:
        path = registry.pull(known[spec], progress=False)
        return str(path.parent), path.name
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return str(path.parent), path.name
    if path.is_dir():
        if (path / "config.json").exists():
            return str(path), None
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(path), ggufs[0].name
        raise ValueError(f"{path} has no config.json and not exactly one .gguf file")
    if path.exists():
        raise ValueError(f"{path} is neither a .gguf file nor a model directory")
    return spec, None  # a hub repo id


def load_tokenizer(spec: str) -> Any:
    from transformers import AutoTokenizer

    src, gguf = resolve_source(spec)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"{spec}: assistant masks need a fast tokenizer (offset mapping); got {type(tok).__name__}")
    return tok


def load_model(spec: str, dtype: Any = None, attn_implementation: str | None = None) -> Any:
    """A plain, trainable causal LM (dtype: a torch dtype, default float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    src, gguf = resolve_source(spec)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if gguf is None:
        return AutoModelForCausalLM.from_pretrained(src, **kwargs)
    # dequantized in float32 (what the GGUF kernels compute in), then cast into the plain model
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, **{**kwargs, "dtype": torch.float32})
    config = model.config
    config.__dict__.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype, **({"attn_implementation": attn_implementation}
                                                                      if attn_implementation else {}))
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    # tied output embeddings are absent from a GGUF state dict; anything else is a real mismatch
    if unexpected or any(not k.endswith("lm_head.weight") for k in missing):
        raise ValueError(f"rebuilding {spec} from GGUF failed: missing {missing}, unexpected {unexpected}")
    if missing:
        plain.tie_weights()
    del model
    return plain
