"""SFT of the real SmolLM2-135M (from its GGUF, rebuilt as a plain model) with LoRA and packing."""

from __future__ import annotations

import asyncio

import pytest

from notebook_agent.train.sft import LoraSettings, SFTSettings, read_meta, train_sft

pytestmark = pytest.mark.slow


def test_lora_sft_of_smollm2_from_gguf_loads_in_the_backend(smollm2_path, chat_jsonl, tmp_path):
    import torch
    from safetensors.torch import load_file

    from notebook_agent.models.base import SamplingParams
    from notebook_agent.models.transformers_backend import TransformersModel
    from notebook_agent.train.base_model import load_model

    torch.set_num_threads(1)
    out = tmp_path / "sft"
    result = train_sft(SFTSettings(model=str(smollm2_path), dataset=str(chat_jsonl), out=str(out), max_steps=2,
                                   learning_rate=1e-3, warmup=0.0, batch_size=1, max_length=1024, packing=True,
                                   lora=LoraSettings(r=4, alpha=8), logging_steps=1,
                                   bf16=False))  # fp32: the weight comparison below is exact
    assert result.family == "smollm2" and len(result.losses) == 2
    # a real instruct model already writes much of this: its loss starts far below log(vocab) = 10.8
    assert all(0 < x < 6 for x in result.losses), result.losses
    assert read_meta(out)["settings"]["lora"]["r"] == 4
    # LoRA was merged: a plain model whose weights differ from the base where adapters were
    base = load_model(str(smollm2_path)).state_dict()
    tuned = {k: v for f in out.glob("*.safetensors") for k, v in load_file(str(f)).items()}
    assert not any("lora" in k for k in tuned)
    changed = [k for k, v in tuned.items() if k in base and not torch.equal(v, base[k])]
    assert changed and all("proj" in k for k in changed)
    model = TransformersModel(out, device="cpu", codec="react")
    c = model.complete_sync([{"role": "user", "content": "Say hi."}], None, SamplingParams(max_tokens=6, temperature=0.0))
    assert c[0].usage.completion_tokens > 0
    # the GGUF written beside it serves in llama.cpp with the codec training recorded
    from notebook_agent.models.resolve import load_model as load_chat_model

    assert result.gguf == str(out / "model.gguf")
    served = load_chat_model(result.gguf, n_ctx=512, n_threads=1)
    try:
        assert served.codec.name == "react"
        g = served.complete_sync([{"role": "user", "content": "Say hi."}], None, SamplingParams(max_tokens=6, temperature=0.0))
        assert g[0].usage.completion_tokens > 0
    finally:
        asyncio.run(served.aclose())
