"""The llama.cpp in-process backend against the real SmolLM2-135M."""

from __future__ import annotations

import asyncio
import math

import pytest

from notebook_agent.models.base import ModelError, SamplingParams
from notebook_agent.models.llamacpp import LlamaCppModel

pytestmark = pytest.mark.slow

TOOLS = [
    {"type": "function", "function": {"name": "execute_code", "description": "Run Python code.", "parameters": {
        "type": "object", "properties": {"comment": {"type": "string"}, "code": {"type": "string"}},
        "required": ["comment", "code"]}}},
    {"type": "function", "function": {"name": "final_answer", "description": "Answer.", "parameters": {
        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}},
]
MESSAGES = [
    {"role": "system", "content": "You are a data analyst working in a Jupyter notebook."},
    {"role": "user", "content": "Write Python code that prints the sum of 2 and 3."},
]


@pytest.fixture(scope="module")
def model(smollm2_path):
    m = LlamaCppModel(smollm2_path, n_ctx=2048, codec="react")
    yield m
    asyncio.run(m.aclose())


async def test_n_completions_with_logprobs_and_usage(model):
    params = SamplingParams(n=2, temperature=1.0, max_tokens=40, seed=11, logprobs=True)
    out = await model.complete(MESSAGES, TOOLS, params)
    assert len(out) == 2
    prompt_tokens = len(model.tokenize_prompt(model.render_prompt(MESSAGES, TOOLS)))
    for c in out:
        assert c.usage.prompt_tokens == prompt_tokens > 50
        assert 0 < c.usage.completion_tokens <= 40
        assert len(c.token_logprobs) == c.usage.completion_tokens
        assert all(lp <= 1e-6 and math.isfinite(lp) for lp in c.token_logprobs)
        assert 0 < c.prior <= 1
        assert c.raw_text and c.finish_reason in ("stop", "length")
    assert out[0].raw_text != out[1].raw_text  # different seeds per sample


async def test_same_seed_same_text_and_greedy_is_deterministic(model):
    p = SamplingParams(temperature=0.9, max_tokens=24, seed=5)
    a = (await model.complete(MESSAGES, None, p))[0].raw_text
    b = (await model.complete(MESSAGES, None, p))[0].raw_text
    assert a == b
    g = SamplingParams(temperature=0.0, max_tokens=24)
    assert (await model.complete(MESSAGES, None, g))[0].raw_text == (await model.complete(MESSAGES, None, g))[0].raw_text


async def test_logprobs_match_llama_cpp_own_logprobs(model, smollm2_path):
    """Our logprobs (read from the last logits, no logits_all) equal llama-cpp-python's."""
    from llama_cpp import Llama

    prompt = model.render_prompt(MESSAGES)
    ours = (await asyncio.to_thread(model.complete_prompt, prompt, None,
                                    SamplingParams(temperature=0.0, max_tokens=12, logprobs=True)))[0]
    ref_llm = Llama(model_path=str(smollm2_path), n_ctx=1024, logits_all=True, verbose=False, n_threads=model._llm.n_threads)
    try:
        ref = await asyncio.to_thread(ref_llm.create_completion, model.tokenize_prompt(prompt), max_tokens=12,
                                      temperature=0.0, logprobs=1)
    finally:
        ref_llm.close()
    ref_lp = ref["choices"][0]["logprobs"]["token_logprobs"]
    assert ref["choices"][0]["text"].startswith(ours.raw_text[:20])
    assert len(ours.token_logprobs) == len(ref_lp)
    for a, b in zip(ours.token_logprobs, ref_lp):
        assert abs(a - b) < 1e-2


async def test_stop_strings_and_length(model):
    c = (await model.complete(MESSAGES, None, SamplingParams(max_tokens=60, stop=["\n"])))[0]
    assert "\n" not in c.raw_text and c.finish_reason == "stop"
    c = (await model.complete(MESSAGES, None, SamplingParams(max_tokens=5)))[0]
    assert c.finish_reason == "length" and c.usage.completion_tokens == 5


async def test_react_codec_decodes_a_real_completion(model):
    """SmolLM2 writes a python block for this prompt; the codec turns it into execute_code."""
    out = await model.complete(MESSAGES, TOOLS, SamplingParams(n=3, temperature=0.7, max_tokens=80, seed=1))
    assert any(c.tool_calls and c.tool_calls[0].name == "execute_code" and c.tool_calls[0].arguments["code"] for c in out)
    for c in out:  # every completion is either calls or a structured error, never an exception
        assert c.tool_calls or c.parse_error is not None


async def test_kv_cache_prefix_is_reused_between_turns(model):
    params = SamplingParams(temperature=0.0, max_tokens=8)
    first = (await model.complete(MESSAGES, None, params))[0]
    prompt_len = first.usage.prompt_tokens
    before = model.engine.stats.prompt_tokens
    turn2 = MESSAGES + [{"role": "assistant", "content": first.raw_text}, {"role": "user", "content": "Thanks. Now 4 and 5?"}]
    second = (await model.complete(turn2, None, params))[0]
    # The shared prefix was not evaluated again: only the new tokens were.
    assert model.engine.stats.prompt_tokens - before < second.usage.prompt_tokens - prompt_len + 20
    assert second.usage.prompt_tokens > prompt_len


async def test_concurrent_calls_are_serialised_safely(model):
    p = SamplingParams(temperature=0.0, max_tokens=10)
    a, b = await asyncio.gather(model.complete(MESSAGES, None, p), model.complete(MESSAGES, None, p))
    assert a[0].raw_text == b[0].raw_text


def test_context_overflow_is_a_clear_error(model):
    long = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(ModelError, match="context window"):
        model.complete_sync(long, None, SamplingParams(max_tokens=4))


def test_tokens_and_window(model):
    assert model.context_window == 2048
    assert 0 < model.count_tokens("hello world, how are you?") < 12
    assert model.template.startswith("{% for message in messages %}")  # the GGUF's own template


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        LlamaCppModel(tmp_path / "nope.gguf")
