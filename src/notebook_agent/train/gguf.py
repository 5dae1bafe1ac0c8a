"""Write a trained model as GGUF for llama.cpp, which serves small models on CPU about four
times faster than transformers (BENCHMARKS.md) and batches, constrains and caches them.

No converter from the llama.cpp repository is needed: the model was trained from a GGUF file
(`train sft --model smollm2-135m`), so that file already holds the metadata and tokenizer. Its
key/values are copied, and each of its tensors is replaced by the trained weight of the same
role, in F16 (norms stay F32). Llama-family models only (SmolLM2, Qwen2, Llama), whose GGUF
tensor names and Q/K row order are fixed by llama.cpp.
"""

from __future__ import annotations

import re
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
ARCHS = {"llama", "qwen2"}
# llama.cpp's `llama` architecture stores Q and K rows interleaved per head (its converter
# permutes them); transformers un-permutes on load, so the export permutes back.
PERMUTED = {"llama"}


class GGUFExportError(ValueError):
    pass


def gguf_name(hf_name: str) -> str | None:
    m = re.match(r"model\.layers\.(\d+)\.(.*)", hf_name)
    if m:
        return NAMES.get(f"model.layers.{{i}}.{m.group(2)}", "").replace("{i}", m.group(1)) or None
    return NAMES.get(hf_name)


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
    n_head = int(field_value(reader.get_field(f"{arch}.attention.head_count")))
    kv_field = reader.get_field(f"{arch}.attention.head_count_kv")
    n_head_kv = int(field_value(kv_field)) if kv_field else n_head
    weights: dict[str, np.ndarray] = {}
    for hf_name, tensor in state.items():
        target = gguf_name(hf_name)
        if target is None:
            continue
        w = tensor.detach().float().cpu().numpy()
        if arch in PERMUTED and target.endswith("attn_q.weight"):
            w = permute(w, n_head)
        elif arch in PERMUTED and target.endswith("attn_k.weight"):
            w = permute(w, n_head_kv)
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
