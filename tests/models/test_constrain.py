"""Constrained tool calls with llama.cpp in-process and the real SmolLM2-135M.

SmolLM2 on its own never writes a Hermes `<tool_call>` or a Qwen3-Coder XML call
(fixtures/smollm2-135m.json): under the grammar every reply must be a valid call anyway.
"""

from __future__ import annotations

import asyncio
import copy

import pytest

from notebook_agent.models.base import ModelError, SamplingParams
from notebook_agent.models.codecs import get_codec
from notebook_agent.models.constrain import Constraint, gbnf_literal, grammar_for
from notebook_agent.models.llamacpp import LlamaCppModel

TOOLS = [
    {"type": "function", "function": {"name": "execute_code", "description": "Run Python code in the notebook.",
                                      "parameters": {"type": "object", "properties": {
                                          "comment": {"type": "string", "description": "what this step does"},
                                          "code": {"type": "string"}}, "required": ["comment", "code"]}}},
    {"type": "function", "function": {"name": "final_answer", "description": "Give the final answer.", "parameters": {
        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}},
]


def capped(tools, comment=80, code=160, answer=40):
    """The same tools with `maxLength` on every string: with max_tokens above the sum, no
    reply can be cut, so every one must be a complete call."""
    t = copy.deepcopy(tools)
    t[0]["function"]["parameters"]["properties"]["comment"]["maxLength"] = comment
    t[0]["function"]["parameters"]["properties"]["code"]["maxLength"] = code
    t[1]["function"]["parameters"]["properties"]["answer"]["maxLength"] = answer
    return t


PROMPTS = [
    "What is the mean of column price in sales.csv?",
    "How many rows does data.csv have?",
    "Load iris.csv and tell me which species has the longest sepal.",
]


def messages(prompt):
    return [{"role": "system", "content": "You are a data analyst working in a Jupyter notebook."},
            {"role": "user", "content": prompt}]


def assert_valid_call(c, tools):
    assert c.parse_error is None, (c.raw_text, c.parse_error)
    assert len(c.tool_calls) == 1, c.raw_text
    call = c.tool_calls[0]
    spec = {t["function"]["name"]: t["function"] for t in tools}[call.name]
    for arg in spec["parameters"]["required"]:
        assert isinstance(call.arguments[arg], str) and call.arguments[arg].strip(), (arg, c.raw_text)
        cap = spec["parameters"]["properties"][arg].get("maxLength")
        if cap:
            # in Qwen3-Coder XML a "<" and the character after it count as one (see constrain.py)
            # in ReAct code a run of backticks and the character after it, likewise
            slack = call.arguments[arg].count("<") if "<function=" in c.raw_text else 0
            slack += call.arguments[arg].count("`") if c.raw_text.startswith("Thought:") else 0
            assert len(call.arguments[arg]) <= cap + slack


# --- grammars (no model) -----------------------------------------------------------------------


def test_no_constraint_without_tools_or_for_native():
    assert grammar_for(get_codec("hermes"), None) is None
    assert grammar_for(get_codec("hermes"), []) is None
    assert grammar_for(get_codec("native"), TOOLS) is None
    assert grammar_for(get_codec("hermes"), TOOLS, "none") is None
    assert grammar_for(get_codec("hermes"), TOOLS, "no_such_tool") is None


def test_grammars_name_only_the_offered_or_chosen_tools():
    for codec in ("hermes", "qwen3_coder", "react"):
        g = grammar_for(get_codec(codec), TOOLS)
        assert isinstance(g, Constraint) and g.tools == ("execute_code", "final_answer")
        one = grammar_for(get_codec(codec), TOOLS, "final_answer")
        assert one.tools == ("final_answer",)
        assert "execute_code" not in one.grammar and "python" not in one.grammar
    # ReAct without final_answer offered: only the code branch
    g = grammar_for(get_codec("react"), TOOLS[:1])
    assert "Formatted answer" not in g.grammar and "```python" in g.grammar


def test_hermes_grammar_has_no_free_whitespace():
    g = grammar_for(get_codec("hermes"), TOOLS).grammar
    # the only spaces the grammar writes are the fixed separators ", " and ": "
    assert "[ \\t\\n]" not in g and "ws" not in g.split()
    assert '"{\\"name\\": \\"execute_code\\", \\"arguments\\": "' in g


def test_gbnf_literal_escapes():
    assert gbnf_literal('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


# --- llama.cpp in-process with SmolLM2 -------------------------------------------------------------

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def model(smollm2_path):
    m = LlamaCppModel(smollm2_path, n_ctx=2048, n_threads=1, codec="react")
    yield m
    asyncio.run(m.aclose())


@slow
def test_every_grammar_and_schema_shape_is_accepted_by_llama_cpp(model):
    rich = copy.deepcopy(TOOLS) + [{"type": "function", "function": {"name": "plot", "parameters": {
        "type": "object", "properties": {
            "kind": {"enum": ["bar", "line"]}, "bins": {"type": "integer"}, "alpha": {"type": "number"},
            "columns": {"type": "array", "items": {"type": "string"}}, "log": {"type": "boolean"},
            "style": {"type": "object", "properties": {"color": {"type": "string"}}},
            "extra": {}, "title": {"type": "string", "maxLength": 30}},
        "required": ["kind"]}}}]
    for codec in ("hermes", "qwen3_coder", "react"):
        for choice in ("required", "auto", "final_answer", "plot"):
            c = grammar_for(get_codec(codec), rich, choice)
            if c is not None:
                model.check_grammar(c)  # llama.cpp's own parser; raises ModelError if it rejects it
    with pytest.raises(ModelError, match="rejected the tool-call grammar"):
        model.check_grammar(Constraint("root ::= nope", "hermes", "required", ()))


@slow
@pytest.mark.parametrize("codec", ["hermes", "qwen3_coder", "react"])
def test_every_constrained_reply_is_a_valid_call(model, codec):
    """Several prompts, greedy and sampled: with the string arguments bounded by maxLength
    and max_tokens above their sum, every single reply is a complete, valid call."""
    tools = capped(TOOLS)
    names = []
    for i, prompt in enumerate(PROMPTS):
        for temperature in (0.0, 0.8):
            params = SamplingParams(temperature=temperature, max_tokens=320, seed=100 + i, codec=codec)
            c = model.complete_sync(messages(prompt), tools, params)[0]
            assert c.constraint == "gbnf" and c.finish_reason == "stop", c.raw_text
            assert_valid_call(c, tools)
            names.append(c.tool_calls[0].name)
    assert set(names) <= {"execute_code", "final_answer"}


@slow
def test_unbounded_values_are_calls_or_a_clean_cut(model):
    """Without maxLength a value can run to max_tokens; then the reply is a parse error that
    says so, never half a call."""
    outcomes = []
    for codec in ("hermes", "qwen3_coder", "react"):
        out = model.complete_sync(messages(PROMPTS[0]), TOOLS,
                                  SamplingParams(n=2, temperature=0.8, max_tokens=120, seed=5, codec=codec))
        for c in out:
            assert c.constraint == "gbnf"
            if c.finish_reason == "length":
                assert c.tool_calls == [] and "cut off at the limit of 120 tokens" in c.parse_error.message
                outcomes.append("cut")
            else:
                assert_valid_call(c, TOOLS)
                outcomes.append("call")
    assert "call" in outcomes


@slow
def test_constraint_changes_what_smollm2_writes(model):
    """The control: unconstrained, SmolLM2 writes no Hermes call for this prompt;
    constrained, it does."""
    p = SamplingParams(temperature=0.0, max_tokens=60, codec="hermes")
    free = model.complete_sync(messages(PROMPTS[1]), TOOLS, SamplingParams(**{**p.__dict__, "constrain": False}))[0]
    assert free.constraint == "none" and free.tool_calls == []
    forced = model.complete_sync(messages(PROMPTS[1]), capped(TOOLS), SamplingParams(**{**p.__dict__, "max_tokens": 320}))[0]
    assert forced.constraint == "gbnf" and len(forced.tool_calls) == 1


@slow
def test_model_default_off_and_tool_choice_by_name(smollm2_path):
    m = LlamaCppModel(smollm2_path, n_ctx=2048, n_threads=1, codec="hermes", constrain=False)
    try:
        c = m.complete_sync(messages(PROMPTS[0]), TOOLS, SamplingParams(max_tokens=20))[0]
        assert c.constraint == "none"
        c = m.complete_sync(messages(PROMPTS[0]), capped(TOOLS),
                            SamplingParams(max_tokens=200, constrain=True, tool_choice="final_answer", temperature=0.5, seed=2))[0]
        assert c.constraint == "gbnf" and [t.name for t in c.tool_calls] == ["final_answer"]
        assert_valid_call(c, capped(TOOLS))
    finally:
        asyncio.run(m.aclose())


@slow
def test_auto_allows_text_but_never_a_malformed_call(model):
    for seed in range(3):
        c = model.complete_sync(messages("Say hello."), capped(TOOLS),
                                SamplingParams(temperature=0.9, max_tokens=60, seed=seed, codec="hermes", tool_choice="auto"))[0]
        assert c.constraint == "gbnf"
        if "<tool_call>" in c.raw_text and c.finish_reason == "stop":
            assert_valid_call(c, capped(TOOLS))
        elif c.finish_reason == "stop" or "<tool_call>" not in c.raw_text:
            assert c.parse_error is None and c.tool_calls == []


@slow
def test_cut_by_max_tokens_is_a_parse_error_not_half_a_call(model):
    c = model.complete_sync(messages(PROMPTS[0]), TOOLS, SamplingParams(max_tokens=8, codec="hermes"))[0]
    assert c.finish_reason == "length" and c.usage.completion_tokens == 8
    assert c.tool_calls == [] and c.parse_error is not None and "cut off" in c.parse_error.message
    assert c.raw_text.startswith("<tool_call>")


@slow
def test_react_constrained_code_may_print_observation(model):
    """Under a grammar the codec's stop strings are dropped (the grammar ends the reply):
    code that prints "Observation:" is not cut in the middle."""
    tools = capped(TOOLS, code=200)
    c = model.complete_sync(
        messages('Print the text "Observation: done" with Python.'), tools[:1],
        SamplingParams(temperature=0.0, max_tokens=320, codec="react"))[0]
    assert_valid_call(c, tools)


@slow
def test_constrained_path_reuses_the_kv_cache(model):
    """Constrained decoding keeps the prefix reuse: the next turn evaluates only new tokens."""
    p = SamplingParams(temperature=0.0, max_tokens=200, codec="react")
    tools = capped(TOOLS)
    first = model.complete_sync(messages(PROMPTS[1]), tools, p)[0]
    before = model.engine.stats.prompt_tokens
    turn2 = messages(PROMPTS[1]) + [{"role": "assistant", "content": first.raw_text},
                                    {"role": "user", "content": "Observation:\n42"}]
    second = model.complete_sync(turn2, tools, p)[0]
    assert model.engine.stats.prompt_tokens - before < second.usage.prompt_tokens - first.usage.prompt_tokens + 20
    assert_valid_call(second, tools)
