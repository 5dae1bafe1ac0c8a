"""The batching engine (models/engine.py) with the real SmolLM2-135M: many sequences in one
`llama_decode`, each with its own sampler, grammar, stops and fate."""

from __future__ import annotations

import asyncio

import pytest

from notebook_agent.models.base import ModelError, SamplingParams
from notebook_agent.models.llamacpp import LlamaCppModel

pytestmark = pytest.mark.slow

TOOLS = [
    {"type": "function", "function": {"name": "execute_code", "description": "Run Python code in the notebook.",
                                      "parameters": {"type": "object", "properties": {
                                          "comment": {"type": "string", "maxLength": 120},
                                          "code": {"type": "string", "maxLength": 400}},
                                          "required": ["comment", "code"]}}},
    {"type": "function", "function": {"name": "final_answer", "description": "The answer.", "parameters": {
        "type": "object", "properties": {"answer": {"type": "string", "maxLength": 120}}, "required": ["answer"]}}},
]
QUESTIONS = [
    "Write Python code that prints the sum of 2 and 3.",
    "What is the capital of France?",
    "List three colors.",
    "Explain pandas groupby in one sentence.",
]


def user(q: str) -> list[dict]:
    return [{"role": "user", "content": q}]


@pytest.fixture(scope="module")
def model(smollm2_path):
    m = LlamaCppModel(smollm2_path, n_ctx=1024, n_threads=1, n_seq=4)
    yield m
    asyncio.run(m.aclose())


def forget_caches(model: LlamaCppModel) -> None:
    """Empty every slot's cache (so a comparison cannot be a cached replay)."""
    model.engine.clear()
    assert all(not slot.cached for slot in model.engine.slots)


async def test_batched_greedy_equals_one_by_one(model):
    g = SamplingParams(temperature=0.0, max_tokens=32, logprobs=True)
    alone = [(await model.complete(user(q), None, g))[0] for q in QUESTIONS]
    forget_caches(model)
    steps, peak = model.engine.stats.steps, model.engine.stats.max_sequences
    # Decoding goes first by default: a prompt that arrives a moment after the others were
    # started can wait until they finish. Here every prompt joins at the next step, so the
    # four calls must share batches (the comparison is about batching, not the policy).
    every, model.engine.prefill_every = model.engine.prefill_every, 0
    try:
        together = [c[0] for c in await asyncio.gather(*[model.complete(user(q), None, g) for q in QUESTIONS])]
    finally:
        model.engine.prefill_every = every
    assert model.engine.stats.max_sequences == 4 >= peak  # all four were in one batch
    # fewer steps than one sequence after another would take
    assert model.engine.stats.steps - steps < sum(c.usage.completion_tokens for c in together)
    for a, b in zip(alone, together):
        assert a.raw_text == b.raw_text and a.usage == b.usage
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)


async def test_n_samples_share_the_prompt_differ_and_each_is_a_valid_call(model):
    forget_caches(model)
    before = model.engine.stats.prompt_tokens
    out = await model.complete(user(QUESTIONS[0]), TOOLS, SamplingParams(n=3, temperature=1.0, max_tokens=200, seed=7))
    prompt = out[0].usage.prompt_tokens
    # the prompt was evaluated once; each further sample evaluated its last token only
    assert model.engine.stats.prompt_tokens - before == prompt + 2
    assert len({c.raw_text for c in out}) >= 2
    for c in out:
        assert c.parse_error is None and len(c.tool_calls) == 1, c.raw_text
        call = c.tool_calls[0]
        assert call.name in ("execute_code", "final_answer")
        assert all(call.arguments.get(k) for k in (("comment", "code") if call.name == "execute_code" else ("answer",)))


async def test_more_samples_than_slots_run_in_waves(model):
    out = await model.complete(user(QUESTIONS[2]), None, SamplingParams(n=6, temperature=1.0, max_tokens=12, seed=3))
    assert len(out) == 6 and all(0 < c.usage.completion_tokens <= 12 for c in out)
    assert len({c.raw_text for c in out}) >= 3


async def test_a_cancelled_request_leaves_the_others_intact(model):
    g = SamplingParams(temperature=0.0, max_tokens=48)
    reference = (await model.complete(user(QUESTIONS[3]), None, g))[0].raw_text
    forget_caches(model)
    victim = asyncio.create_task(model.complete(user(QUESTIONS[1]), None, SamplingParams(temperature=0.0, max_tokens=200)))
    keeper = asyncio.create_task(model.complete(user(QUESTIONS[3]), None, g))
    while model.engine.stats.generated == 0 or len(model.engine._active) < 2:
        await asyncio.sleep(0.01)
    victim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert (await keeper)[0].raw_text == reference
    assert all(s.seq is None for s in model.engine.slots)  # the cancelled sequence left its slot


async def test_a_request_longer_than_the_context_fails_alone(model):
    g = SamplingParams(temperature=0.0, max_tokens=16)
    long = user("word " * 2000)
    results = await asyncio.gather(model.complete(long, None, g), model.complete(user(QUESTIONS[0]), None, g),
                                   return_exceptions=True)
    assert isinstance(results[0], ModelError) and "context window" in str(results[0])
    assert results[1][0].usage.completion_tokens > 0


async def test_prompt_lookup_speculation_is_exact_and_accepts_drafts(smollm2_path):
    """Drafts copied from the prompt are checked by the model itself: greedy text is the same
    with and without them, and on a reply that repeats the prompt most drafts are kept."""
    msg = user("Repeat this line exactly, three times:\nimport pandas as pd; df = pd.read_csv('data.csv'); print(df.head())")
    g = SamplingParams(temperature=0.0, max_tokens=64)
    plain = LlamaCppModel(smollm2_path, n_ctx=1024, n_threads=1)
    spec = LlamaCppModel(smollm2_path, n_ctx=1024, n_threads=1, speculate=6)
    try:
        a = (await plain.complete(msg, None, g))[0]
        b = (await spec.complete(msg, None, g))[0]
        assert a.raw_text == b.raw_text
        st = spec.engine.stats
        assert st.accepted > 10 and st.steps < plain.engine.stats.steps
    finally:
        await plain.aclose()
        await spec.aclose()


def test_a_shared_cache_admits_only_what_fits(smollm2_path):
    """With one KV cache shared by the slots (`unified`), samples whose prompt and
    `max_tokens` do not fit beside each other wait and run one after the other."""
    from notebook_agent.models.engine import BatchEngine, Request

    m = LlamaCppModel(smollm2_path, n_ctx=256, n_threads=1)
    eng = BatchEngine(m._llm._model, m._llm.detokenize, n_seq=2, n_ctx=256, unified=True, n_threads=1)
    try:
        tokens = m.tokenize_prompt(m.render_prompt(user(QUESTIONS[1])))
        assert len(tokens) + 2 * 150 > eng.n_ctx >= len(tokens) + 150
        out = eng.generate(Request(tokens=tokens, n=2, max_tokens=150, temperature=1.0, seed=1))
        assert len(out) == 2 and all(s.n_tokens > 0 for s in out)
        assert eng.stats.max_sequences == 1  # never both in the cache at once
        small = eng.generate(Request(tokens=tokens, n=2, max_tokens=40, temperature=1.0, seed=1))
        assert len(small) == 2 and eng.stats.max_sequences == 2  # these fit together
    finally:
        eng.close()
        asyncio.run(m.aclose())


async def test_an_unrelated_prompt_does_not_evict_a_shared_system_prompt(smollm2_path):
    """A long system prompt cached in one slot survives a short unrelated request (it takes the
    empty slot), so the next conversation with that system prompt evaluates only its own part."""
    m = LlamaCppModel(smollm2_path, n_ctx=1024, n_threads=1, n_seq=2)
    system = {"role": "system", "content": "You are a careful data analyst. " + "Follow these rules. " * 60}
    g = SamplingParams(temperature=0.0, max_tokens=4)
    try:
        await m.complete([system, *user(QUESTIONS[0])], None, g)
        shared = len(m.tokenize_prompt(m.render_prompt([system])))
        assert shared > 200
        await m.complete(user("hi"), None, g)  # unrelated: must not land on the cached prefix
        before = m.engine.stats.cached_tokens
        await m.complete([system, *user(QUESTIONS[2])], None, g)
        assert m.engine.stats.cached_tokens - before >= shared - 8  # the system prompt came from the cache
    finally:
        await m.aclose()
