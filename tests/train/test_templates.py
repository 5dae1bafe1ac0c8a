"""Assistant masks: exactly the tokens the model writes (text, tool calls, end of turn), per family.

The expected spans are computed independently of the generation markers: render the
conversation with the family's own (marker-free) template up to each assistant turn with the
generation prompt, and up to the end of that turn; the characters in between, minus the
newline that follows the end-of-turn token, are what the model writes at inference.
"""

from __future__ import annotations

import json

import pytest

from notebook_agent.models import chat_template as builtin
from notebook_agent.train.encode import codec_for, render_messages, tokenize_conversation
from notebook_agent.train.templates import FAMILIES, detect_family, has_generation_markers, inference_template, load_template

TOOLS = [
    {"type": "function", "function": {"name": "execute_code", "description": "Run Python code in the notebook.",
     "parameters": {"type": "object", "properties": {"comment": {"type": "string"}, "code": {"type": "string"}},
                    "required": ["comment", "code"]}}},
    {"type": "function", "function": {"name": "final_answer", "description": "Give the final answer.",
     "parameters": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}},
]
CODE = "import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.units.sum())"
CONVERSATION = [
    {"role": "system", "content": "You are a data analyst working in a Jupyter notebook."},
    {"role": "user", "content": "What is the total number of units sold? Answer as @total_units[value]."},
    {"role": "assistant", "content": "I will load the table first.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "execute_code",
                                                       "arguments": json.dumps({"comment": "Sum the units.", "code": CODE})}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "1234"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c2", "type": "function", "function": {"name": "final_answer", "arguments": {"answer": "@total_units[1234]"}}}]},
    {"role": "tool", "tool_call_id": "c2", "content": "Answer recorded."},
    {"role": "assistant", "content": "The total is 1234 units."},
]
END = {"qwen2_5": "<|im_end|>", "qwen3": "<|im_end|>", "smollm2": "<|im_end|>", "gemma3": "<end_of_turn>"}


def expected_char_spans(tokenizer, template: str, msgs: list[dict], tls) -> list[tuple[int, int]]:
    """Character spans of each assistant turn's generated text, from the marker-free template."""
    plain = inference_template(template)

    def render(ms, gen):
        return tokenizer.apply_chat_template(ms, tools=tls, chat_template=plain, tokenize=False, add_generation_prompt=gen)

    full = render(msgs, False)
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        start = len(render(msgs[:i], True))
        end = len(render(msgs[: i + 1], False))
        assert full.startswith(render(msgs[: i + 1], False))  # prefix-preserving
        if full[:end].endswith("\n"):
            end -= 1
        spans.append((start, end))
    return spans


# The qwen3 template is tested with Qwen2.5's tokenizer, not a Qwen3 one: no Qwen3 tokenizer
# installs here (no model hub; the registry's model packages are SmolLM2, Qwen2.5-Coder and
# Gemma 3). The two share the byte-level BPE vocabulary and the <|im_start|>/<|im_end|>
# specials the mask depends on, so the spans checked here are the same. Not covered: Qwen3's
# added <think>/</think> tokens being single tokens (in Qwen2.5's vocabulary they split).
@pytest.fixture(scope="module")
def tokenizers(smollm2_tokenizer, qwen_tokenizer, gemma_tokenizer):
    return {"smollm2": smollm2_tokenizer, "qwen2_5": qwen_tokenizer, "qwen3": qwen_tokenizer, "gemma3": gemma_tokenizer}


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("codec_name", ["family", "hermes", "react"])
def test_mask_covers_exactly_the_assistant_tokens(tokenizers, family, codec_name):
    tok = tokenizers[family]
    template = load_template(family)
    codec = codec_for(FAMILIES[family].codec if codec_name == "family" else codec_name, template)
    enc = tokenize_conversation(tok, template, codec, CONVERSATION, TOOLS)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    msgs, tls = render_messages(codec, CONVERSATION, TOOLS)
    text = tok.apply_chat_template(msgs, tools=tls, chat_template=inference_template(template), tokenize=False)
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert offsets["input_ids"] == ids  # the masked ids are the ids of the inference text
    spans = expected_char_spans(tok, template, msgs, tls)
    assert len(spans) == 3
    expected = [int(any(s <= a and b <= e for s, e in spans) and b > a) for a, b in offsets["offset_mapping"]]
    assert mask == expected
    # every span is fully covered: its first and last characters belong to masked tokens
    for s, e in spans:
        covered = [k for (a, b), k in zip(offsets["offset_mapping"], mask) if a < e and b > s]
        assert covered and all(covered)
    trained = tok.decode([i for i, k in zip(ids, mask) if k])
    assert trained.count(END[family]) == 3  # each turn learns to stop
    assert "The total is 1234 units." in trained and "print(df.units.sum())" in trained  # tool-call code included
    assert "@total_units[1234]" in trained  # the final_answer call included
    for other in ("1234\n", "What is the total", "Answer recorded", "data analyst"):
        assert other not in trained.replace("@total_units[1234]", "")
    if codec.name == "hermes":
        assert trained.count("<tool_call>") == 2 and '"name": "execute_code"' in trained


@pytest.mark.parametrize("family", list(FAMILIES))
def test_templates_ship_markers_and_strip_cleanly(family):
    t = load_template(family)
    assert has_generation_markers(t) and not has_generation_markers(inference_template(t))


def test_stripped_templates_render_like_the_originals(smollm2_tokenizer, qwen_tokenizer):
    """Train/inference agreement: without markers, our templates render what the models' own do."""
    from pathlib import Path

    trl_templates = Path(pytest.importorskip("trl").__path__[0]) / "chat_templates"
    for tok, family, original in [
        (smollm2_tokenizer, "smollm2", smollm2_tokenizer.chat_template),  # from the GGUF
        (qwen_tokenizer, "qwen2_5", (trl_templates / "qwen2_5.jinja").read_text()),  # official Qwen2.5
        (smollm2_tokenizer, "gemma3", builtin.GEMMA),  # the backends' Gemma template
    ]:
        ours = inference_template(load_template(family))
        codec = codec_for(FAMILIES[family].codec, load_template(family))
        msgs, tls = render_messages(codec, CONVERSATION, TOOLS)
        for n in (2, 3, 5, len(msgs)):
            for gen in (False, True):
                a = tok.apply_chat_template(msgs[:n], tools=tls, chat_template=ours, tokenize=False, add_generation_prompt=gen)
                b = tok.apply_chat_template(msgs[:n], tools=tls, chat_template=original, tokenize=False, add_generation_prompt=gen)
                assert a == b, (family, n, gen)


def test_family_detection(tokenizers):
    assert detect_family(tokenizers["smollm2"], "llama") == "smollm2"
    assert detect_family(tokenizers["qwen2_5"], "qwen2") == "qwen2_5"
    assert detect_family(tokenizers["qwen3"], "qwen3") == "qwen3"
    assert detect_family(tokenizers["gemma3"], "gemma3_text") == "gemma3"


def test_unknown_template_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown chat template"):
        load_template("llama9")
    f = tmp_path / "plain.jinja"
    f.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    with pytest.raises(ValueError, match="generation"):
        load_template(str(f))
