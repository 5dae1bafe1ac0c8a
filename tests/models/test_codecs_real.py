"""Codecs on real model outputs recorded with our llama.cpp backend (fixtures/record.py).

The expected outcome of each record was checked by reading the text; the tests make sure
the decoders keep getting them right (and never raise on them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notebook_agent.models.codecs import get_codec

FIXTURES = Path(__file__).parent / "fixtures"
QWEN_TEMPLATE = "{%- if tools %}<tool_call>{% endif %}"  # what matters of Qwen2.5's template to the codecs

E, F, NONE, ERR = "execute_code", "final_answer", "none", "error"
# per model and codec: the outcome of each record, in recording order
EXPECTED = {
    "smollm2-135m": {
        # SmolLM2 never writes <tool_call> tags or XML calls: plain text, no false positives
        "hermes": [NONE] * 6,
        "qwen3_coder": [NONE] * 6,
        # ... but it writes python blocks, so the ReAct format works for it
        "react": [E, E, E, ERR, E, E],
    },
    "qwen2.5-coder-1.5b": {
        # Qwen writes the JSON in ```json fences with python \"\"\"triple-quoted\"\"\" code
        "hermes": [NONE, E, NONE, F, NONE, E],
        "react": [E, E, F, F, E, E],
        # not its format: mostly broken XML, which must come back as structured errors
        "qwen3_coder": [ERR, E, NONE, ERR, ERR, ERR],
    },
}


def cases():
    for model, by_codec in EXPECTED.items():
        data = json.loads((FIXTURES / f"{model}.json").read_text())
        for codec, outcomes in by_codec.items():
            records = [r for r in data["records"] if r["codec"] == codec]
            assert len(records) == len(outcomes), (model, codec)
            for i, (record, outcome) in enumerate(zip(records, outcomes)):
                yield pytest.param(model, record, data["tools"], outcome, id=f"{model}-{codec}-{i}")


@pytest.mark.parametrize("model,record,tools,outcome", list(cases()))
def test_real_output(model, record, tools, outcome):
    codec = get_codec(record["codec"])
    if "qwen" in model:
        codec = codec.for_template(QWEN_TEMPLATE)
    d = codec.decode(record["raw_text"], tools)
    if outcome == NONE:
        assert d.tool_calls == [] and d.error is None
    elif outcome == ERR:
        assert d.error is not None and d.error.message and d.error.raw == record["raw_text"]
    else:
        assert d.error is None and [c.name for c in d.tool_calls][:1] == [outcome]
        call = d.tool_calls[0]
        if outcome == E:
            assert call.arguments["code"].strip() and isinstance(call.arguments["comment"], str)
            if "qwen" in model:  # Qwen's code is valid python once decoded (dedented, unescaped)
                compile(call.arguments["code"], "<cell>", "exec")
        else:
            assert call.arguments["answer"].strip()
            if "qwen" in model:
                assert "128" in call.arguments["answer"]  # the tool result it was shown


def test_real_hermes_triple_quoted_code_is_dedented():
    data = json.loads((FIXTURES / "qwen2.5-coder-1.5b.json").read_text())
    record = [r for r in data["records"] if r["codec"] == "hermes"][1]
    assert '"""' in record["raw_text"]
    code = get_codec("hermes").decode(record["raw_text"], data["tools"]).tool_calls[0].arguments["code"]
    assert code.startswith("import pandas as pd")
