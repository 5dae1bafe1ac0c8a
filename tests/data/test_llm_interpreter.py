"""The "LLM plays the interpreter" kernel session and the trace step's `llm_interpreter` variant.

Bookkeeping (prompt contents, traceback parsing, fork isolation, failures) with a scripted model;
then the trace step end to end with SmolLM2 playing the kernel on a notebook whose data is gone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from data_notebooks import SALES
from datatrove.data import Document

from notebook_agent.data import load_config, run_pipeline
from notebook_agent.data.linking import DataFileLinker, LinkConfig
from notebook_agent.data.llm.prompts import SYSTEM as REVIEW_SYSTEM
from notebook_agent.data.traces import TraceConfig, TraceStep
from notebook_agent.kernel.base import KernelError
from notebook_agent.data.llm_interpreter import SYSTEM as INTERPRETER_SYSTEM
from notebook_agent.data.llm_interpreter import LLMInterpreterSession
from notebook_agent.models.base import ModelError
from notebook_agent.models.scripted import ScriptedModel, call

CONTEXT = "[cell 1] code\ndf = pd.read_csv('sales.csv')\nprint(df.shape)\n\n[output of cell 1]\n(48, 4)"


def user_text(messages) -> str:
    return messages[-1]["content"]


async def test_prompt_holds_context_history_and_code():
    model = ScriptedModel(["(48, 4)", "```\nbest region: east\n```", ""])
    s = LLMInterpreterSession(model, CONTEXT)
    await s.start()
    r1 = await s.execute("import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.shape)")
    assert r1.ok and r1.text == "(48, 4)\n" and r1.execution_count == 1
    assert r1.outputs == [{"output_type": "stream", "name": "stdout", "text": "(48, 4)\n"}]
    r2 = await s.execute("print('best region:', totals.idxmax())")
    assert r2.ok and r2.text == "best region: east\n" and r2.execution_count == 2  # code fence removed
    r3 = await s.execute("x = 1")
    assert r3.ok and r3.outputs == [] and r3.text == ""
    first, third = model.calls[0], model.calls[2]
    assert first[0] == {"role": "system", "content": INTERPRETER_SYSTEM}
    assert CONTEXT in user_text(first) and "No cells have run" in user_text(first)
    prompt = user_text(third)
    assert CONTEXT in prompt
    assert "print(df.shape)\n[Out 1]\n(48, 4)" in prompt  # history: code and the output it was given
    assert "totals.idxmax())\n[Out 2]\nbest region: east" in prompt
    assert prompt.rstrip().endswith("[In 3]\nx = 1\n[Out 3]")  # the new cell, last
    assert s.history[-1] == ("x = 1", "")
    await s.close()
    assert not s.is_alive
    with pytest.raises(KernelError):
        await s.execute("1")


async def test_traceback_reply_is_an_error_result():
    tb = ("partial line\nTraceback (most recent call last):\n  File \"<cell>\", line 1, in <module>\n"
          "KeyError: 'no_such_column'")
    s = LLMInterpreterSession(ScriptedModel([tb, "ZeroDivisionError: division by zero", "mean: 3.5"]), CONTEXT)
    await s.start()
    r = await s.execute("print('partial line'); df['no_such_column']")
    assert r.status == "error" and not r.ok
    assert r.error["ename"] == "KeyError" and r.error["evalue"] == "'no_such_column'"
    assert r.outputs[0] == {"output_type": "stream", "name": "stdout", "text": "partial line\n"}
    assert "Traceback (most recent call last)" in r.text and r.text.rstrip().endswith("KeyError: 'no_such_column'")
    r = await s.execute("1 / 0")  # an exception line alone is a traceback too
    assert r.status == "error" and (r.error["ename"], r.error["evalue"]) == ("ZeroDivisionError", "division by zero")
    r = await s.execute("print('mean:', 3.5)")  # "name: value" is not an exception
    assert r.ok and r.error is None
    assert len(s.history) == 3  # simulated errors are part of the session's story


async def test_fork_copies_history_and_is_isolated_restart_clears_it():
    model = ScriptedModel(["1", "child says 2", "parent says 3", "after restart"])
    parent = LLMInterpreterSession(model, CONTEXT, max_tokens=32)
    await parent.start()
    await parent.execute("a = 1\nprint(a)")
    child = await parent.fork()
    assert child.is_alive and child.history == parent.history and child.history is not parent.history
    assert len(model.calls) == 1  # forking asks the model nothing
    rc = await child.execute("print('child')")
    assert rc.text == "child says 2\n" and rc.execution_count == 2
    assert len(child.history) == 2 and len(parent.history) == 1
    rp = await parent.execute("print('parent')")
    assert rp.execution_count == 2
    assert "print('child')" in user_text(model.calls[1]) and "print('child')" not in user_text(model.calls[2])
    assert len(child.history) == 2 and len(parent.history) == 2 and child.history[1] != parent.history[1]
    await parent.restart()
    assert parent.history == [] and len(child.history) == 2
    r = await parent.execute("print(a)")
    assert r.execution_count == 1 and "No cells have run" in user_text(model.calls[3])
    await child.close()
    await parent.close()


async def test_a_failing_model_is_an_error_result_and_the_session_goes_on():
    def boom(messages):
        raise ModelError("backend down")

    s = LLMInterpreterSession(ScriptedModel([boom, "42"]), CONTEXT)
    await s.start()
    r = await s.execute("print(6 * 7)")
    assert r.status == "error" and r.error["ename"] == "InterpreterError"
    assert "ModelError: backend down" in r.error["evalue"] and "backend down" in r.text
    assert s.history == []  # no made-up output enters the story
    r = await s.execute("print(6 * 7)")
    assert r.ok and r.text == "42\n"


async def test_history_and_context_are_cut_to_fit():
    cells = [f"print({i})  # " + "x" * 40 for i in range(8)]
    model = ScriptedModel(["out"] * 8)
    s = LLMInterpreterSession(model, "C" * 1000, max_history_chars=300)  # ~4 cells of history
    await s.start()
    for c in cells:
        await s.execute(c)
    prompt = user_text(model.calls[-1])
    assert "[3 earlier cells not shown]" in prompt and "print(3)" in prompt and "print(2)" not in prompt
    assert "C" * 1000 in prompt

    class Small(ScriptedModel):
        context_window = 600  # tokens, counted as len // 4 by the base class

    model = Small(["out"] * 8)
    s = LLMInterpreterSession(model, "C" * 1000, max_tokens=100, max_history_chars=300)
    await s.start()
    for c in cells:
        await s.execute(c)
    msgs = model.calls[-1]
    prompt = user_text(msgs)
    assert "[6 earlier cells not shown]" in prompt and "print(6)" in prompt  # the newest cell stays
    assert "characters cut" in prompt  # the context keeps its head and its tail
    assert sum(len(m["content"]) // 4 for m in msgs) <= 600 - 100 - 64


# -- the trace step -----------------------------------------------------------------------------

def _sales_doc(corpus, tasks) -> Document:
    """good_sales.ipynb (real outputs) linked without its data folder: not executable."""
    _, _, paths = corpus
    path = paths["good_sales"]
    doc = Document(text=path.read_text(), id=path.name, metadata={"source": str(path)})
    linker = DataFileLinker(LinkConfig())
    list(linker(iter([doc])))
    assert doc.metadata["executable"] is False and doc.metadata["files"] == [{"ref": "sales.csv", "path": None}]
    doc.metadata["tasks"] = tasks
    doc.metadata.pop("_nb", None)
    return doc


TASK = {"id": "t0", "question": "How many rows does the sales table have?", "format": "@rows[value]",
        "answer": "@rows[48]", "answer_pairs": [["rows", "48"]]}


def agent_and_interpreter(messages):
    """Plays the agent (two turns) and, when asked by the interpreter's prompt, the kernel."""
    if messages[0]["content"] == INTERPRETER_SYSTEM:
        return "(48, 4)"
    if not any(m["role"] == "assistant" for m in messages):
        return call("execute_code", comment="load", code="import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.shape)")
    return call("final_answer", answer="@rows[48]")


def counts(step) -> dict[str, int]:
    return {k: v.total for k, v in step.stats.stats.items()}


def test_trace_step_uses_the_interpreter_only_when_asked(corpus):
    off = TraceStep(TraceConfig(agent={"max_turns": 3}), model=ScriptedModel([agent_and_interpreter] * 10))
    assert list(off(iter([_sales_doc(corpus, [dict(TASK)])]))) == []
    c = counts(off)
    assert c["skipped_no_data"] == 1 and "traced_llm" not in c and c["dropped_no_trace"] == 1

    model = ScriptedModel([agent_and_interpreter] * 10)
    on = TraceStep(TraceConfig(llm_interpreter=True, agent={"max_turns": 3}), model=model)
    (doc,) = list(on(iter([_sales_doc(corpus, [dict(TASK)])])))
    c = counts(on)
    assert c["traced_llm"] == 1 and c["correct_llm"] == 1 and "traced" not in c and "skipped_no_data" not in c
    trace = doc.metadata["tasks"][0]["trace"]
    assert trace["executor_type"] == "llm" and trace["correct"] and trace["interpreter_model"] == "scripted"
    (step,) = trace["trajectory"]["steps"]
    assert step["result"]["text"] == "(48, 4)\n" and step["result"]["status"] == "ok"
    assert trace["trajectory"]["files"] == ["sales.csv"]  # the agent is told which file the notebook reads
    agent_first = next(m for m in model.calls if m[0]["content"] != INTERPRETER_SYSTEM)
    assert "- sales.csv" in agent_first[1]["content"] and "No data files" not in agent_first[1]["content"]
    interp = next(m for m in model.calls if m[0]["content"] == INTERPRETER_SYSTEM)
    assert "Data files the notebook reads: sales.csv" in interp[1]["content"]
    assert "best region: south" in interp[1]["content"]  # the notebook's real outputs ground it


def reviewer(messages):
    """The LLM steps' answers (see test_pipeline.py), then agent and interpreter."""
    if messages[0]["content"] != REVIEW_SYSTEM:
        return agent_and_interpreter(messages)
    user = user_text(messages)
    if "Rate how useful" in user:
        return "Score: 5\nJustification: real sales data."
    if "Is this notebook a data analysis" in user:
        return "YES"
    if "Write up to" in user:
        if "weather.csv" in user:
            return json.dumps([{"question": "Which city comes first?", "answer": "@city[lima]"}])
        return json.dumps([{"question": "How many rows and columns?", "format": "@shape[value]",
                            "answer": "@shape[(48, 4)]", "source_cells": [1]}])
    if "Proposed answer" in user:
        return "CONFIRMED"
    return "?"


def test_pipeline_exports_llm_rows_and_can_drop_them(corpus, tmp_path):
    nbdir, _, _ = corpus  # no data_root: every notebook's data is missing
    base = {"input": {"path": str(nbdir)}, "llm": {"retries": 0},
            "traces": {"llm_interpreter": True, "agent": {"max_turns": 3}}}
    for name, export, rows in (("keep", {}, 2), ("drop", {"executor_types": ["jupyter"]}, 0)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**base, "output": str(tmp_path / name), "export": export}))
        stats = run_pipeline(load_config(path), model=ScriptedModel([reviewer] * 100), log=lambda m: None)
        tr = next(v["counters"] for k, v in stats["traces"]["blocks"].items() if "traces" in k)
        assert tr["traced_llm"] == 2 and "skipped_no_data" not in tr  # good_sales and good_weather
        ex = next(v["counters"] for v in stats["export"]["blocks"].values())
        assert ex["tasks_skipped_no_data"] == 2 and "tasks" not in ex  # no NbQA task without its files
        assert stats["export"]["dataset"].get("non_thinking", 0) == rows
        if rows:
            import datasets

            ds = datasets.load_from_disk(str(tmp_path / name / "dataset" / "non_thinking"))
            assert set(ds["executor_type"]) == {"llm"}
        else:
            assert ex["dropped_executor_llm"] == 2


# -- a real model plays the kernel ---------------------------------------------------------------

SMOL = {"n_ctx": 2048, "n_threads": 1}


@pytest.mark.slow
def test_smollm2_plays_the_kernel_in_a_trace(corpus, smollm2_path):
    """The agent's cells are fixed (scripted), the interpreter is SmolLM2: its outputs reach the
    trajectory, and the step counts the trace as an LLM one."""
    cells = [SALES[0], "print(df['units'].sum())"]
    script = [call("execute_code", comment=f"cell {i}", code=c) for i, c in enumerate(cells)]
    script.append(call("final_answer", answer="@rows[48]"))
    step = TraceStep(TraceConfig(llm_interpreter=True, interpreter_model=str(smollm2_path),
                                 interpreter_model_options=SMOL, interpreter_context_chars=1200,
                                 interpreter_max_tokens=48, agent={"max_turns": 3, "max_wall_s": 120}),
                     model=ScriptedModel(script))
    (doc,) = list(step(iter([_sales_doc(corpus, [dict(TASK)])])))
    c = counts(step)
    assert c["traced_llm"] == 1 and c["correct_llm"] + c.get("incorrect_llm", 0) == 1
    trace = doc.metadata["tasks"][0]["trace"]
    assert trace["executor_type"] == "llm" and trace["interpreter_model"] == Path(smollm2_path).stem
    steps = trace["trajectory"]["steps"]
    assert [s["result"]["code"] for s in steps] == cells
    for s in steps:  # real text from the model (whatever it guessed), not an interpreter failure
        assert s["result"]["outputs"] and s["result"]["text"].strip()
        assert all(o.get("ename") != "InterpreterError" for o in s["result"]["outputs"])
    seen = [m["content"] for m in trace["trajectory"]["messages"] if m["role"] == "tool"]
    assert len(seen) == 3 and all(s["result"]["text"].strip()[:40] in o for s, o in zip(steps, seen))  # + the answer
    assert step._interpreter is not None and step._interpreter is not step._model


@pytest.mark.slow
def test_smollm2_as_agent_and_interpreter(corpus, smollm2_path):
    """The default wiring with a real model: the interpreter is the trace model itself (one
    instance, loaded from the config). SmolLM2-135M rarely calls a tool, so this checks the
    bookkeeping; the test above checks that a real model's outputs reach the cells."""
    step = TraceStep(TraceConfig(model=str(smollm2_path), model_options=SMOL, llm_interpreter=True,
                                 interpreter_context_chars=1200, interpreter_max_tokens=48,
                                 agent={"max_turns": 2, "max_wall_s": 120, "max_tokens_per_turn": 96,
                                        "max_context_tokens": 2048}))
    out = list(step(iter([_sales_doc(corpus, [dict(TASK)])])))
    c = counts(step)
    assert c.get("traced_llm", 0) == 1 and "traced" not in c and "trace_errors_llm" not in c
    trace = out[0].metadata["tasks"][0]["trace"]
    assert trace["executor_type"] == "llm" and isinstance(trace["correct"], bool)
    assert trace["trajectory"]["completion_tokens"] > 0
    assert trace["interpreter_model"] == trace["trajectory"]["model"] and step._interpreter is None
    for s in trace["trajectory"]["steps"]:
        assert all(o.get("ename") != "InterpreterError" for o in s["result"]["outputs"])
        assert s["result"]["execution_count"] is not None
