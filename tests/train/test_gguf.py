"""GGUF export of a trained model (train/gguf.py): llama.cpp computes the same function as the
transformers model it came from."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TEXT = "The capital of France is Paris. The capital of Germany is"


def last_logits_llama(path) -> tuple[list[int], np.ndarray]:
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=128, n_threads=1, logits_all=True, verbose=False)
    toks = llm.tokenize(TEXT.encode())
    llm.eval(toks)
    out = np.array(llm.scores[len(toks) - 1])
    llm.close()
    return toks, out


@pytest.fixture(scope="module")
def base(smollm2_path):
    from notebook_agent.train.base_model import load_model

    return load_model(str(smollm2_path))


def reference(model, toks) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([toks])).logits[0, -1].numpy()


def test_exported_gguf_gives_the_transformers_logits(base, smollm2_path, tmp_path):
    from notebook_agent.train.gguf import export_gguf

    path = export_gguf(base.state_dict(), smollm2_path, tmp_path / "m.gguf")
    toks, got = last_logits_llama(path)
    want = reference(base, toks)
    assert got.argmax() == want.argmax()
    assert np.corrcoef(got, want)[0, 1] > 0.9999
    assert np.abs(got - want).max() < 0.1  # F16 weights; the Q4_1 original is ~0.65 off


def test_without_the_qk_permutation_the_check_fails(base, smollm2_path, tmp_path, monkeypatch):
    """The row order of Q and K is what makes the export right: skipping it must show."""
    from notebook_agent.train import gguf

    monkeypatch.setitem(gguf.ARCHS, "llama", gguf.Arch(permute_qk=False))
    path = gguf.export_gguf(base.state_dict(), smollm2_path, tmp_path / "bad.gguf")
    toks, got = last_logits_llama(path)
    assert np.abs(got - reference(base, toks)).max() > 1.0


def test_gemma3_export_gives_the_transformers_logits(tmp_path, monkeypatch):
    """Gemma 3 270M: its own tensor names, and norms stored as (1 + w) the way llama.cpp
    applies them; without the offset the logits are far off."""
    from notebook_agent.models import registry
    from notebook_agent.train import gguf
    from notebook_agent.train.base_model import load_model

    src = registry.pull("gemma3-270m", progress=False)
    model = load_model(str(src))
    path = gguf.export_gguf(model.state_dict(), src, tmp_path / "g.gguf")
    toks, got = last_logits_llama(path)
    want = reference(model, toks)
    assert got.argmax() == want.argmax()
    assert np.corrcoef(got, want)[0, 1] > 0.999
    monkeypatch.setitem(gguf.ARCHS, "gemma3", gguf.Arch(names=gguf.GEMMA3_NAMES))
    bad = gguf.export_gguf(model.state_dict(), src, tmp_path / "bad.gguf")
    assert np.corrcoef(last_logits_llama(bad)[1], want)[0, 1] < 0.99


def test_an_architecture_without_known_names_is_refused(tmp_path):
    import gguf as g

    from notebook_agent.train.gguf import GGUFExportError, export_gguf

    w = g.GGUFWriter(str(tmp_path / "other.gguf"), arch="phi3")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFExportError, match="phi3"):
        export_gguf({}, tmp_path / "other.gguf", tmp_path / "out.gguf")
