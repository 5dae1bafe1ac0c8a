"""Reading model replies: robust, never raising."""

from __future__ import annotations

import asyncio

import pytest

from notebook_agent.data.llm.client import CachedClient, LLMCallFailed, LLMConfig
from notebook_agent.data.llm.parse import normalize_qa, parse_qa, parse_score, parse_verdict
from notebook_agent.data.llm.steps import grounded
from notebook_agent.models.base import ModelError
from notebook_agent.models.scripted import ScriptedModel


@pytest.mark.parametrize("text,expected", [
    ("Score: 4\nJustification: clear steps.", (4, "clear steps.")),
    ("**Score:** 5 - excellent", (5, "")),
    ("I would rate it\n3/5\n", (3, "")),
    ("This notebook is great.", None),
    ("Score: 9", None),
])
def test_parse_score(text, expected):
    assert parse_score(text) == expected


def test_parse_verdict():
    assert parse_verdict("YES", "YES", "NO") is True
    assert parse_verdict("no, it is a tutorial", "YES", "NO") is False
    assert parse_verdict("Yes. Not a no.", "YES", "NO") is True
    assert parse_verdict("maybe", "YES", "NO") is None
    assert parse_verdict("REJECTED: the output shows 3", "CONFIRMED", "REJECTED") is False


def test_parse_qa_shapes():
    item = '{"question": "q?", "answer": "@a[1]"}'
    assert parse_qa(f"```json\n[{item}]\n```") == [{"question": "q?", "answer": "@a[1]"}]
    assert parse_qa(f"Sure! [{item}] hope it helps") == [{"question": "q?", "answer": "@a[1]"}]
    assert parse_qa(f"first {item} then {item}") == [{"question": "q?", "answer": "@a[1]"}] * 2
    assert parse_qa("no json at all [oops") == []


def test_normalize_and_ground():
    rec = normalize_qa({"question": "mean?", "answer": "@mean_x[2.5]", "source_cells": ["1", 99]}, 3)
    assert rec["answer_pairs"] == [["mean_x", "2.5"]] and rec["source_cells"] == [1]
    assert rec["format"] == "@mean_x[value]"
    assert normalize_qa({"question": "q", "answer": "2.5"}, 3) == "answer_not_in_format"
    # a format the model left bare, or that names other answers, is rebuilt from the answer
    for fmt in ("@min_height", "@density[<value copied from an output>]", ""):
        rec = normalize_qa({"question": "q", "answer": "@min_height[163]", "format": fmt}, 3)
        assert rec["format"] == "@min_height[value]", fmt
    rec = normalize_qa({"question": "q", "answer": "@d[8.5]", "format": "@d[<value copied from an output>]"}, 3)
    assert rec["format"] == "@d[value]"
    kept = normalize_qa({"question": "q", "answer": "@h[163]", "format": "@h[value] where value is an integer"}, 3)
    assert kept["format"] == "@h[value] where value is an integer"
    assert normalize_qa({"answer": "@a[1]"}, 3) == "no_question"
    nb = {"cells": [{"cell_type": "markdown", "source": "x"},
                    {"cell_type": "code", "source": "", "outputs": [
                        {"output_type": "stream", "name": "stdout", "text": "mean: 2.500000\n"}]}]}
    assert grounded([["mean_x", "2.5"]], nb, [1])
    assert not grounded([["mean_x", "2.6"]], nb, [1])
    assert not grounded([["mean_x", "2.5"]], nb, [0])  # the cited cell does not show it


def test_client_retries_then_fails_and_caches(tmp_path):
    calls = []

    def flaky(messages):
        calls.append(1)
        if len(calls) == 1:
            raise ModelError("timeout", retryable=True)
        return "Score: 4"

    cfg = LLMConfig(retries=1, retry_backoff_s=0.0)
    client = CachedClient(ScriptedModel([flaky] * 5), cfg, tmp_path)
    msgs = [{"role": "user", "content": "rate"}]
    assert asyncio.run(client.ask(msgs)) == "Score: 4"
    assert client.calls == 2
    again = CachedClient(ScriptedModel([]), cfg, tmp_path)
    assert asyncio.run(again.ask(msgs)) == "Score: 4" and again.calls == 0 and again.cache_hits == 1

    def broken(messages):
        raise ModelError("down")

    failing = CachedClient(ScriptedModel([broken] * 5), cfg, tmp_path)
    with pytest.raises(LLMCallFailed):
        asyncio.run(failing.ask([{"role": "user", "content": "other"}]))
    assert failing.calls == 2
