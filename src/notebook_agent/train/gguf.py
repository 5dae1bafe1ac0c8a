"""Write a trained model as GGUF for llama.cpp, which serves small models on CPU about four
times faster than transformers (BENCHMARKS.md) and batches, constrains and caches them.

No converter from the llama.cpp repository is needed: the model was trained from a GGUF file
(`train sft --model smollm2-135m`), so that file already holds the metadata and tokenizer. Its
key/values are copied, and each of its tensors is replaced by the trained weight of the same
role, in F16 (norms stay F32). Architectures whose GGUF tensor names and layout llama.cpp
fixes and that are listed in `ARCHS`: Llama (SmolLM2), Qwen2, Gemma 3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# transformers parameter name -> GGUF tensor name (`{i}`: the layer)
NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "model.layers.{i}.self_attn.q_proj.bias": "blk.{i}.attn_q.bias",
    "model.layers.{i}.self_attn.k_proj.bias": "blk.{i}.attn_k.bias",
    "model.layers.{i}.self_attn.v_proj.bias": "blk.{i}.attn_v.bias",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
}
# Gemma 3 has four norms per layer and norms on Q and K; its attention norm after the block is
# `post_attention_norm`, and the norm before the MLP is the one llama.cpp calls `ffn_norm`.
GEMMA3_NAMES = {
    **NAMES,
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.post_attention_norm.weight",
    "model.layers.{i}.pre_feedforward_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.post_feedforward_layernorm.weight": "blk.{i}.post_ffw_norm.weight",
    "model.layers.{i}.self_attn.q_norm.weight": "blk.{i}.attn_q_norm.weight",
    "model.layers.{i}.self_attn.k_norm.weight": "blk.{i}.attn_k_norm.weight",
}


@dataclass(frozen=True)
class Arch:
    """How one llama.cpp architecture stores a transformers model's weights."""

    names: dict[str, str] = field(default_factory=lambda: NAMES)
    #: Q and K rows interleaved per head: llama.cpp's converter permutes them for `llama`, and
    #: transformers un-permutes on load, so the export permutes back
    permute_qk: bool = False
    #: added to every norm weight: Gemma's RMSNorm scales by (1 + w), llama.cpp's by w
    norm_offset: float = 0.0


ARCHS = {"llama": Arch(permute_qk=True), "qwen2": Arch(), "gemma3": Arch(names=GEMMA3_NAMES, norm_offset=1.0)}


class GGUFExportError(ValueError):
    pass


def gguf_name(hf_name: str, names: dict[str, str] = NAMES) -> str | None:
    m = re.match(r"model\.layers\.(\d+)\.(.*)", hf_name)
    if m:
        return names.get(f"model.layers.{{i}}.{m.group(2)}", "").replace("{i}", m.group(1)) or None
    return names.get(hf_name)


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of each head from (first halves, second halves) to interleaved pairs, as llama.cpp's rope expects."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def field_value(field: Any) -> Any:
    return field.contents()


def export_gguf(state: dict[str, Any], base_gguf: str | Path, out: str | Path, name: str | None = None) -> Path:
    """Write `state` (a transformers state dict of the model trained from `base_gguf`) as `out`."""
    import gguf

    reader = gguf.GGUFReader(str(base_gguf))
    arch = field_value(reader.get_field(gguf.Keys.General.ARCHITECTURE))
    if arch not in ARCHS:
        raise GGUFExportError(f"GGUF export supports {sorted(ARCHS)} models, not {arch!r}")
    spec = ARCHS[arch]
    n_head = int(field_value(reader.get_field(f"{arch}.attention.head_count")))
    kv_field = reader.get_field(f"{arch}.attention.head_count_kv")
    n_head_kv = int(field_value(kv_field)) if kv_field else n_head
    weights: dict[str, np.ndarray] = {}
    for hf_name, tensor in state.items():
        target = gguf_name(hf_name, spec.names)
        if target is None:
            continue
        w = tensor.detach().float().cpu().numpy()
        if spec.permute_qk and target.endswith("attn_q.weight"):
            w = permute(w, n_head)
        elif spec.permute_qk and target.endswith("attn_k.weight"):
            w = permute(w, n_head_kv)
        elif spec.norm_offset and target.endswith("norm.weight"):
            w = w + spec.norm_offset
        weights[target] = w
    wanted = [t.name for t in reader.tensors]
    missing = [t for t in wanted if t not in weights]
    if missing:
        raise GGUFExportError(f"the trained model lacks {len(missing)} tensors of {base_gguf}: {missing[:4]}")

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), arch=arch, endianess=reader.endianess)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = int(field_value(alignment))
    skip = {gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE, gguf.Keys.General.NAME}
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in skip:
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field_value(field), kind, sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_name(name or out.stem)
    for t in wanted:
        w = weights[t]
        writer.add_tensor(t, w.astype(np.float16) if w.ndim == 2 else w.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
