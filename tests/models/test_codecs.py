"""Codecs on adversarial text and round trips (real model outputs: test_codecs_real.py)."""

from __future__ import annotations

import json

import pytest

from notebook_agent.models.base import ModelError
from notebook_agent.models.codecs import get_codec
from notebook_agent.models.codecs.tools import loads_lenient

TOOLS = [
    {"type": "function", "function": {"name": "execute_code", "description": "Run Python code.", "parameters": {
        "type": "object", "properties": {"comment": {"type": "string"}, "code": {"type": "string"}},
        "required": ["comment", "code"]}}},
    {"type": "function", "function": {"name": "final_answer", "description": "Answer.", "parameters": {
        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}},
]

CONVERSATION = [
    {"role": "system", "content": "You are an analyst."},
    {"role": "user", "content": "How many rows?"},
    {"role": "assistant", "content": "Let me look.", "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "execute_code", "arguments": json.dumps({"comment": "Count rows.", "code": "print(len(df))"})}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "42"},
]


def calls(decoded):
    return [(c.name, c.arguments) for c in decoded.tool_calls]


# --- hermes ------------------------------------------------------------------------------------

HERMES_CASES = {
    "plain": ('Checking.\n<tool_call>\n{"name": "final_answer", "arguments": {"answer": "42"}}\n</tool_call>',
              [("final_answer", {"answer": "42"})], "Checking."),
    "unclosed final tag": ('<tool_call>\n{"name": "final_answer", "arguments": {"answer": "42"}}',
                           [("final_answer", {"answer": "42"})], ""),
    "trailing junk": ('<tool_call>{"name": "final_answer", "arguments": {"answer": "7"}}}} oops</tool_call>',
                      [("final_answer", {"answer": "7"})], ""),
    "arguments as a JSON string": ('<tool_call>{"name": "final_answer", "arguments": "{\\"answer\\": \\"x\\"}"}</tool_call>',
                                   [("final_answer", {"answer": "x"})], ""),
    "python dict style": ("<tool_call>{'name': 'final_answer', 'arguments': {'answer': 'yes', 'extra': None}}</tool_call>",
                          [("final_answer", {"answer": "yes", "extra": None})], ""),
    "code fence around the JSON": ('<tool_call>\n```json\n{"name": "final_answer", "arguments": {"answer": "1"}}\n```\n</tool_call>',
                                   [("final_answer", {"answer": "1"})], ""),
    "raw newlines inside the code string": (
        '<tool_call>\n{"name": "execute_code", "arguments": {"comment": "load", "code": "import pandas as pd\ndf = pd.read_csv(\'a.csv\')\n\tprint(df)"}}\n</tool_call>',
        [("execute_code", {"comment": "load", "code": "import pandas as pd\ndf = pd.read_csv('a.csv')\n\tprint(df)"})], ""),
    "code fence inside the code argument": (
        '<tool_call>{"name": "execute_code", "arguments": {"comment": "c", "code": "```python\\nprint(1)\\n```"}}</tool_call>',
        [("execute_code", {"comment": "c", "code": "```python\nprint(1)\n```"})], ""),
    "unescaped quotes inside code": (
        '<tool_call>{"name": "execute_code", "arguments": {"comment": "say hi", "code": "print("hi")\nx = "a""}}</tool_call>',
        [("execute_code", {"comment": "say hi", "code": 'print("hi")\nx = "a"'})], ""),
    "missing closing braces": ('<tool_call>{"name": "execute_code", "arguments": {"comment": "c", "code": "print(2)"</tool_call>',
                               [("execute_code", {"comment": "c", "code": "print(2)"})], ""),
    "bare JSON without tags": ('I will answer.\n{"name": "final_answer", "arguments": {"answer": "9"}}',
                               [("final_answer", {"answer": "9"})], "I will answer."),
    "bare JSON in a code fence": ('```json\n{"name": "final_answer", "arguments": {"answer": "9"}}\n```',
                                  [("final_answer", {"answer": "9"})], ""),
    "OpenAI-shaped call in text": ('<tool_call>{"function": {"name": "final_answer", "arguments": {"answer": "z"}}}</tool_call>',
                                   [("final_answer", {"answer": "z"})], ""),
    "code as a list of lines": ('<tool_call>{"name": "execute_code", "arguments": {"comment": "c", "code": ["a = 1", "print(a)"]}}</tool_call>',
                                [("execute_code", {"comment": "c", "code": "a = 1\nprint(a)"})], ""),
    "python triple-quoted code (Qwen2.5-Coder does this)": (
        '```json\n{"name": "execute_code", "arguments": {"comment": "c", "code": """\n    import pandas as pd\n    if True:\n        print(1)\n    """}}\n```',
        [("execute_code", {"comment": "c", "code": "import pandas as pd\nif True:\n    print(1)"})], ""),
    "bare JSON in a <tools> wrapper (Qwen2.5-Coder-1.5B copies the system prompt's tag)": (
        '<tools>\n{"name": "final_answer", "arguments": {"answer": "3"}}\n</tools>',
        [("final_answer", {"answer": "3"})], ""),
    "special end token": ('<tool_call>{"name": "final_answer", "arguments": {"answer": "1"}}</tool_call><|im_end|>',
                          [("final_answer", {"answer": "1"})], ""),
}


@pytest.mark.parametrize("case", list(HERMES_CASES))
def test_hermes_decodes_broken_but_recoverable_text(case):
    text, expected, content = HERMES_CASES[case]
    d = get_codec("hermes").decode(text, TOOLS)
    assert d.error is None, d.error
    assert calls(d) == expected
    assert d.content == content


def test_hermes_two_calls_in_one_message_returns_both_in_order():
    text = ('<tool_call>{"name": "execute_code", "arguments": {"comment": "a", "code": "x = 1"}}</tool_call>\n'
            '<tool_call>{"name": "final_answer", "arguments": {"answer": "1"}}</tool_call>')
    d = get_codec("hermes").decode(text, TOOLS)
    assert [c.name for c in d.tool_calls] == ["execute_code", "final_answer"]
    assert d.tool_calls[0].id != d.tool_calls[1].id


def test_hermes_two_calls_second_unclosed_opening_tag():
    text = ('<tool_call>{"name": "final_answer", "arguments": {"answer": "1"}}\n'
            '<tool_call>{"name": "final_answer", "arguments": {"answer": "2"}}')
    d = get_codec("hermes").decode(text, TOOLS)
    assert [c.arguments["answer"] for c in d.tool_calls] == ["1", "2"]


def test_hermes_unknown_tool_names_the_known_tools():
    d = get_codec("hermes").decode('<tool_call>{"name": "web_search", "arguments": {"q": "x"}}</tool_call>', TOOLS)
    assert d.tool_calls == []
    assert "unknown tool 'web_search'" in d.error.message
    assert "execute_code" in d.error.message and "final_answer" in d.error.message


def test_hermes_missing_required_argument():
    d = get_codec("hermes").decode('<tool_call>{"name": "execute_code", "arguments": {"comment": "c"}}</tool_call>', TOOLS)
    assert d.tool_calls == [] and "missing required argument(s): code" in d.error.message


def test_hermes_invalid_json_is_an_error_with_a_format_hint():
    text = "<tool_call>call execute_code with print(1)</tool_call>"
    d = get_codec("hermes").decode(text, TOOLS)
    assert d.tool_calls == [] and d.error is not None
    assert "<tool_call>" in d.error.message and d.error.raw == text


def test_hermes_one_good_one_bad_call_keeps_the_good_one_and_reports_the_bad():
    text = ('<tool_call>{"name": "final_answer", "arguments": {"answer": "1"}}</tool_call>'
            '<tool_call>{"name": "nope", "arguments": {}}</tool_call>')
    d = get_codec("hermes").decode(text, TOOLS)
    assert calls(d) == [("final_answer", {"answer": "1"})]
    assert "unknown tool 'nope'" in d.error.message


def test_hermes_plain_text_is_content_without_error():
    d = get_codec("hermes").decode("The answer is 42.", TOOLS)
    assert d.tool_calls == [] and d.error is None and d.content == "The answer is 42."


def test_hermes_echoed_tool_definition_is_not_a_call():
    text = ('```python\n# {"type": "function", "function": {"name": "execute_code", "description": "Run.", '
            '"parameters": {"type": "object", "properties": {"code": {"type": "string"}}}}}\n```')
    d = get_codec("hermes").decode(text, TOOLS)
    assert d.tool_calls == [] and d.error is None


def test_hermes_json_answer_without_name_is_not_a_call():
    d = get_codec("hermes").decode('Result: {"mean": 3.5}', TOOLS)
    assert d.tool_calls == [] and d.error is None


@pytest.mark.parametrize("text", ["", "<tool_call>", "<tool_call></tool_call>", "{", "<tool_call>{\"name\": ", "\x00\xff",
                                  "<tool_call>" * 50, '{"name": 5, "arguments": []}'])
def test_decoders_never_raise(text):
    for name in ("hermes", "qwen3_coder", "react", "native"):
        get_codec(name).decode(text, TOOLS)  # no exception is the assertion


def test_hermes_encode_text_mode_renders_tools_calls_and_results():
    msgs, tools = get_codec("hermes").encode(CONVERSATION, TOOLS)
    assert tools is None
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith("You are an analyst.\n\n# Tools")
    assert "<tools>" in msgs[0]["content"] and '"name": "execute_code"' in msgs[0]["content"]
    assert msgs[2] == {"role": "assistant", "content": 'Let me look.\n<tool_call>\n{"name": "execute_code", "arguments": '
                       '{"comment": "Count rows.", "code": "print(len(df))"}}\n</tool_call>'}
    assert msgs[3] == {"role": "user", "content": "<tool_response>\n42\n</tool_response>"}
    # what it writes, it reads back
    d = get_codec("hermes").decode(msgs[2]["content"], TOOLS)
    assert calls(d) == [("execute_code", {"comment": "Count rows.", "code": "print(len(df))"})]


QWEN25_TEMPLATE_PART = "{%- if tools %}...<tool_call>...{%- for tool in tools %}"
CHATML_TEMPLATE = "{% for message in messages %}{{'<|im_start|>' + message['role']}}{% endfor %}"


def test_for_template_picks_template_mode_only_for_templates_that_write_the_format():
    assert get_codec("hermes").for_template(QWEN25_TEMPLATE_PART).template_renders_tools
    assert not get_codec("hermes").for_template(CHATML_TEMPLATE).template_renders_tools
    assert not get_codec("qwen3_coder").for_template(QWEN25_TEMPLATE_PART).template_renders_tools
    assert get_codec("qwen3_coder").for_template("{% for tool in tools %}<function={{ tool.name }}>").template_renders_tools
    assert get_codec("react").for_template(QWEN25_TEMPLATE_PART).name == "react"


def test_hermes_encode_template_mode_keeps_tools_and_dict_arguments():
    msgs, tools = get_codec("hermes").for_template(QWEN25_TEMPLATE_PART).encode(CONVERSATION, TOOLS)
    assert tools == TOOLS
    assert msgs[2]["tool_calls"][0]["function"]["arguments"] == {"comment": "Count rows.", "code": "print(len(df))"}
    assert msgs[3]["role"] == "tool"


def test_hermes_consecutive_tool_results_share_one_user_turn():
    conv = CONVERSATION + [{"role": "tool", "tool_call_id": "c2", "content": "43"}]
    msgs, _ = get_codec("hermes").encode(conv, TOOLS)
    assert msgs[-1]["content"] == "<tool_response>\n42\n</tool_response>\n<tool_response>\n43\n</tool_response>"


# --- qwen3-coder -------------------------------------------------------------------------------


def test_qwen3_coder_roundtrip_and_multiline_values():
    codec = get_codec("qwen3_coder")
    msgs, tools = codec.encode(CONVERSATION, TOOLS)
    assert tools is None and "<function>\n<name>execute_code</name>" in msgs[0]["content"]
    d = codec.decode("Let me run it.\n" + msgs[2]["content"].split("\n", 1)[1], TOOLS)
    assert calls(d) == [("execute_code", {"comment": "Count rows.", "code": "print(len(df))"})]
    assert d.content == "Let me run it."


@pytest.mark.parametrize("text,expected", [
    ("<tool_call>\n<function=execute_code>\n<parameter=comment>\nc\n</parameter>\n<parameter=code>\nif x:\n    print('<b>')\n</parameter>\n</function>\n</tool_call>",
     [("execute_code", {"comment": "c", "code": "if x:\n    print('<b>')"})]),
    ("<function=final_answer>\n<parameter=answer>\n42\n</parameter>\n</function>",  # no <tool_call> wrapper
     [("final_answer", {"answer": "42"})]),
    ("<tool_call>\n<function=final_answer>\n<parameter=answer>\n42",  # everything unclosed
     [("final_answer", {"answer": "42"})]),
    ("<tool_call>\n<function=execute_code>\n<parameter=comment>\nc\n<parameter=code>\nprint(1)\n</function>\n</tool_call>",
     [("execute_code", {"comment": "c", "code": "print(1)"})]),  # missing </parameter>
    ("<tool_call>\n<function=execute_code>\n<parameter=comment>\na\n</parameter>\n<parameter=code>\nx=1\n</parameter>\n</function>\n"
     "<function=final_answer>\n<parameter=answer>\n1\n</parameter>\n</function>\n</tool_call>",
     [("execute_code", {"comment": "a", "code": "x=1"}), ("final_answer", {"answer": "1"})]),  # two calls
    ("<function=execute_code>\n<parameter=comment>c</parameter>\n<parameter>code>\nprint(1)\n</code>\n</function>",
     [("execute_code", {"comment": "c", "code": "print(1)"})]),  # <parameter>NAME> ... </NAME> (seen from Qwen2.5)
])
def test_qwen3_coder_tolerant_decoding(text, expected):
    d = get_codec("qwen3_coder").decode(text, TOOLS)
    assert d.error is None and calls(d) == expected


def test_qwen3_coder_errors():
    codec = get_codec("qwen3_coder")
    d = codec.decode("<tool_call>\n<function=shell>\n<parameter=cmd>\nls\n</parameter>\n</function>\n</tool_call>", TOOLS)
    assert "unknown tool 'shell'" in d.error.message
    d = codec.decode("<tool_call>\n<function=execute_code>\n<parameter=code>\nx\n</parameter>\n</function>\n</tool_call>", TOOLS)
    assert "missing required argument(s): comment" in d.error.message
    d = codec.decode("<tool_call>{\"name\": \"final_answer\"}</tool_call>", TOOLS)
    assert d.tool_calls == [] and "<function=NAME>" in d.error.message


# --- react -------------------------------------------------------------------------------------


def test_react_thought_and_code():
    text = "Thought: I should load the data.\n```python\nimport pandas as pd\nprint(1)\n```\n"
    d = get_codec("react").decode(text, TOOLS)
    assert calls(d) == [("execute_code", {"comment": "I should load the data.", "code": "import pandas as pd\nprint(1)"})]
    assert d.content == "I should load the data." and d.error is None


@pytest.mark.parametrize("marker", ["Formatted answer:", "Final Answer:", "formatted answer :"])
def test_react_final_answer(marker):
    d = get_codec("react").decode(f"Thought: I now know the final answer\n{marker} @mean_age[38.5]", TOOLS)
    assert calls(d) == [("final_answer", {"answer": "@mean_age[38.5]"})]


def test_react_drops_an_invented_observation_and_later_blocks():
    text = ("Thought: count\n```python\nprint(len(df))\n```\nObservation: 10\nThought: done\nFormatted answer: 10")
    d = get_codec("react").decode(text, TOOLS)
    assert calls(d) == [("execute_code", {"comment": "count", "code": "print(len(df))"})]


def test_react_picks_the_python_block_over_an_output_block():
    text = "Let me see.\n```\nMean age: 40\n```\n```python\nprint(df.age.mean())\n```\nOutput:\n```\n40\n```"
    d = get_codec("react").decode(text, TOOLS)
    assert calls(d)[0][1]["code"] == "print(df.age.mean())"


def test_react_unclosed_code_block_runs_to_the_end():
    d = get_codec("react").decode("Thought: x\n```python\nfor i in range(3):\n    print(i)", TOOLS)
    assert calls(d) == [("execute_code", {"comment": "x", "code": "for i in range(3):\n    print(i)"})]


def test_react_code_then_answer_returns_both_in_order():
    d = get_codec("react").decode("Thought: t\n```python\nprint(2)\n```\nFormatted answer: 2", TOOLS)
    assert [c.name for c in d.tool_calls] == ["execute_code", "final_answer"]


def test_react_nothing_usable_is_a_parse_error_with_instructions():
    d = get_codec("react").decode("I think the data is interesting.", TOOLS)
    assert d.tool_calls == [] and "Formatted answer:" in d.error.message and "```python" in d.error.message
    d = get_codec("react").decode("Thought: t\n```python\n\n```", TOOLS)
    assert d.tool_calls == [] and "empty" in d.error.message


def test_react_encode_renders_history_as_react_text():
    conv = CONVERSATION + [{"role": "assistant", "content": "", "tool_calls": [{"id": "c2", "type": "function", "function": {
        "name": "final_answer", "arguments": json.dumps({"answer": "@rows[42]"})}}]}]
    codec = get_codec("react")
    msgs, tools = codec.encode(conv, TOOLS)
    assert tools is None
    assert "Formatted answer:" in msgs[0]["content"] and msgs[0]["content"].startswith("You are an analyst.")
    assert msgs[2] == {"role": "assistant", "content": "Thought: Count rows.\n```python\nprint(len(df))\n```"}
    assert msgs[3] == {"role": "user", "content": "Observation:\n42"}
    assert msgs[4]["content"] == "Thought: I now know the final answer\nFormatted answer: @rows[42]"
    assert codec.stop == ["Observation:"]
    assert calls(codec.decode(msgs[2]["content"], TOOLS)) == [("execute_code", {"comment": "Count rows.", "code": "print(len(df))"})]


# --- native + registry -------------------------------------------------------------------------


def test_native_passes_through():
    codec = get_codec("native")
    assert codec.native and codec.encode(CONVERSATION, TOOLS) == (CONVERSATION, TOOLS)
    assert codec.decode("  hi ", TOOLS).content == "hi"


def test_get_codec_unknown_name_lists_codecs():
    with pytest.raises(ModelError, match="hermes.*qwen3_coder.*react"):
        get_codec("xml")
    assert get_codec("qwen3-coder").name == "qwen3_coder"


def test_loads_lenient_keeps_valid_json_exact():
    s = '{"a": "x\\ny", "b": [1, 2]}'
    assert loads_lenient(s) == (json.loads(s), None)
    value, err = loads_lenient("no json here")
    assert value is None and "no JSON" in err
