"""The transformers backend on CPU with the real SmolLM2 (loaded from its GGUF)."""

from __future__ import annotations

import pytest

from notebook_agent.models.base import SamplingParams

torch = pytest.importorskip("torch", reason="the transformers backend is optional: pip install torch==2.13.0 transformers")
pytest.importorskip("transformers", reason="the transformers backend is optional: pip install transformers")
pytest.importorskip("gguf", reason="loading a GGUF with transformers needs the gguf package")

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Write Python code that prints the sum of 2 and 3."}]
TOOLS = [
    {"type": "function", "function": {"name": "execute_code", "description": "Run Python code.", "parameters": {
        "type": "object", "properties": {"comment": {"type": "string"}, "code": {"type": "string"}},
        "required": ["comment", "code"]}}},
    {"type": "function", "function": {"name": "final_answer", "description": "Answer.", "parameters": {
        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}},
]


@pytest.fixture(scope="module")
def model(smollm2_path):
    from notebook_agent.models.transformers_backend import TransformersModel

    torch.set_num_threads(2)
    return TransformersModel(smollm2_path.parent, gguf_file=smollm2_path.name, device="cpu", codec="react")


def test_n_samples_in_one_batched_generate_with_logprobs(model, monkeypatch):
    calls = []
    real = model.model.generate
    monkeypatch.setattr(model.model, "generate", lambda **kw: (calls.append(kw["num_return_sequences"]), real(**kw))[1])
    out = model.complete_sync(MESSAGES, TOOLS, SamplingParams(n=3, temperature=1.0, max_tokens=24, seed=3, logprobs=True))
    assert calls == [3]  # one generate call for all three
    assert len(out) == 3 and len({c.raw_text for c in out}) >= 2
    prompt_tokens = model.count_tokens(model.render_prompt(MESSAGES, TOOLS))
    for c in out:
        assert c.usage.prompt_tokens == prompt_tokens
        assert 0 < c.usage.completion_tokens <= 24
        assert len(c.token_logprobs) == c.usage.completion_tokens and all(lp <= 1e-5 for lp in c.token_logprobs)
        assert c.tool_calls or c.parse_error is not None  # react codec decoded it
    # the react codec's stop string ends generation before an invented "Observation:"
    assert all("Observation:" not in c.raw_text for c in out)


def test_greedy_is_deterministic_and_stops_on_strings(model):
    p = SamplingParams(n=2, temperature=0.0, max_tokens=16, stop=["\n"])
    a, b = model.complete_sync(MESSAGES, None, p)
    assert a.raw_text == b.raw_text and "\n" not in a.raw_text
    assert model.context_window >= 2048


@pytest.mark.parametrize("codec", ["hermes", "qwen3_coder", "react"])
def test_constrained_replies_are_valid_calls(model, codec):
    """With llguidance's logits processor every sampled reply of SmolLM2 (which on its own
    never writes a Hermes or XML call) is a valid call of an offered tool."""
    pytest.importorskip("llguidance", reason="constrained decoding with transformers needs llguidance")
    out = model.complete_sync(MESSAGES, TOOLS, SamplingParams(n=2, temperature=0.8, max_tokens=160, seed=7,
                                                              codec=codec, constrain=True))
    for c in out:
        assert c.constraint == "llguidance"
        if c.finish_reason == "length":  # cut inside the call: an error, never half a call
            assert not c.tool_calls and "cut off" in c.parse_error.message
            continue
        assert c.parse_error is None, c.raw_text
        assert len(c.tool_calls) == 1 and c.tool_calls[0].name in ("execute_code", "final_answer"), c.raw_text
        args = c.tool_calls[0].arguments
        if c.tool_calls[0].name == "execute_code":
            assert args["comment"].strip() and args["code"].strip()
        else:
            assert args["answer"].strip()
    assert any(c.tool_calls for c in out)
    unconstrained = model.complete_sync(MESSAGES, TOOLS, SamplingParams(max_tokens=16, codec=codec, constrain=False))
    assert unconstrained[0].constraint == "none"
