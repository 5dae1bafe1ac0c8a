"""The loop's bookkeeping, with a scripted model and a real kernel."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from notebook_agent.agent.loop import AgentConfig, run_agent
from notebook_agent.agent.notebook import trajectory_to_notebook
from notebook_agent.agent.trajectory import Trajectory
from notebook_agent.kernel import make_session
from notebook_agent.models.base import Completion, ParseError, Usage
from notebook_agent.models.scripted import ScriptedModel, call
from notebook_agent.tasks.task import Task

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def task() -> Task:
    return Task(id="t1", question="What is the total number of units sold?", files=[EXAMPLES / "sales.csv"],
                format="@total_units[value] where value is an integer.")


@pytest.fixture
async def session(task):
    s = make_session("local", files=task.files)
    await s.start()
    yield s
    await s.close()


def roles(traj: Trajectory) -> list[str]:
    return [m["role"] for m in traj.messages]


async def test_answer_from_computed_output(task, session):
    model = ScriptedModel([
        call("execute_code", comment="Load the data and sum the units.",
             code="import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.units.sum())"),
        lambda msgs: call("final_answer", answer=f"@total_units[{msgs[-1]['content'].strip()}]"),
    ])
    traj = await run_agent(task, model, session, AgentConfig())
    import pandas as pd
    expected = int(pd.read_csv(task.files[0]).units.sum())
    assert traj.status == "answered"
    assert traj.answer == f"@total_units[{expected}]"
    assert roles(traj) == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert traj.messages[2]["tool_calls"][0]["function"]["name"] == "execute_code"
    assert traj.messages[3]["tool_call_id"] == traj.messages[2]["tool_calls"][0]["id"]
    assert len(traj.steps) == 1 and traj.steps[0].result.ok
    # the first message carries the question, the format and a preview of the table
    first = traj.messages[1]["content"]
    assert task.question in first and "@total_units" in first and "unit_price" in first
    assert traj.prompt_tokens == 20 and traj.completion_tokens == 20


async def test_turn_limit_ends_with_status_and_best_effort(task, session):
    model = ScriptedModel([call("execute_code", comment="c", code=f"x = {i}\nprint('@x[{i}]')") for i in range(10)])
    traj = await run_agent(task, model, session, AgentConfig(max_turns=3))
    assert traj.status == "max_turns" and traj.turns == 3
    assert len(traj.steps) == 3
    assert traj.answer is None  # no answer-like text was written by the model itself


async def test_consecutive_errors_limit(task, session):
    model = ScriptedModel([call("execute_code", comment="c", code="1/0")] * 5)
    traj = await run_agent(task, model, session, AgentConfig(max_consecutive_errors=2))
    assert traj.status == "max_errors" and len(traj.steps) == 2
    assert "ZeroDivisionError" in traj.messages[3]["content"]


async def test_error_counter_resets_after_success(task, session):
    script = [call("execute_code", comment="c", code="1/0"), call("execute_code", comment="c", code="print(1)"),
              call("execute_code", comment="c", code="1/0"), call("execute_code", comment="c", code="print(2)"),
              call("final_answer", answer="@total_units[1]")]
    traj = await run_agent(task, ScriptedModel(script), session, AgentConfig(max_consecutive_errors=2))
    assert traj.status == "answered"


async def test_parse_error_is_shown_to_the_model(task, session):
    bad = Completion(raw_text='<tool_call>{"name": "execute_code", "arguments": {', usage=Usage(5, 5),
                     parse_error=ParseError("invalid JSON in <tool_call>: unexpected end"))
    model = ScriptedModel([bad, call("execute_code", comment="c", code="print(3)"),
                           call("final_answer", answer="@total_units[3]")])
    traj = await run_agent(task, model, session, AgentConfig())
    assert traj.status == "answered"
    seen_by_model = model.calls[1][-1]
    assert seen_by_model["role"] == "user" and "invalid JSON" in seen_by_model["content"]
    assert traj.counters["parse_errors"] == 1


async def test_answer_stated_in_text_after_running_code_is_final(task, session):
    model = ScriptedModel([call("execute_code", comment="c", code="print(12)"),
                           "The output shows 12.\n\nThe final answer is: @total_units[12]"])
    traj = await run_agent(task, model, session, AgentConfig())
    assert traj.status == "answered" and traj.answer == "@total_units[12]"
    assert traj.counters["recovered_text_answers"] == 1


async def test_no_tool_call_nudges_then_stops(task, session):
    model = ScriptedModel(["I think the answer is @total_units[12]."] * 5)
    traj = await run_agent(task, model, session, AgentConfig(max_nudges=3))
    assert traj.status == "no_tool_call"
    # an answer written before any code ran is a guess: named as one to the model, never scored
    assert traj.answer is None and not traj.answered
    assert "no code has run yet" in model.calls[1][-1]["content"]


async def test_an_answer_stated_after_code_ran_is_kept_as_the_best_effort(task, session):
    model = ScriptedModel([call("execute_code", comment="Sum the units.", code="print(12)"),
                           *["The total is 12 units, I think."] * 3])
    traj = await run_agent(task, model, session, AgentConfig(max_nudges=3, recover_text_answers=False))
    assert traj.status == "no_tool_call" and traj.answer is None  # no answer-like text: nothing to score
    model = ScriptedModel([call("execute_code", comment="Sum the units.", code="print(12)"),
                           *["So @total_units[12] it is."] * 3])
    traj = await run_agent(task, model, session, AgentConfig(max_nudges=3, recover_text_answers=False))
    assert traj.status == "no_tool_call" and traj.answer == "So @total_units[12] it is." and not traj.answered


async def test_after_code_ran_the_nudge_asks_for_a_tool_call(task, session):
    model = ScriptedModel([call("execute_code", comment="c", code="print(1)"), "Hmm.", "Hmm.", "Hmm."])
    traj = await run_agent(task, model, session, AgentConfig(max_nudges=2))
    assert traj.status == "no_tool_call"
    nudge = model.calls[2][-1]["content"]
    assert "did not call a tool" in nudge and "final_answer" in nudge and task.format in nudge


async def test_code_block_in_plain_text_is_run(task, session):
    model = ScriptedModel(["Let me count.\n```python\nprint(40 + 2)\n```", call("final_answer", answer="@total_units[42]")])
    traj = await run_agent(task, model, session, AgentConfig())
    assert traj.status == "answered"
    assert traj.steps[0].result.text.strip() == "42"
    assert traj.steps[0].comment == "Let me count."
    assert traj.counters["recovered_code_blocks"] == 1


async def test_answer_before_any_code_is_refused(task, session):
    model = ScriptedModel([call("final_answer", answer="@total_units[999]"),
                           call("execute_code", comment="c", code="print(5)"),
                           call("final_answer", answer="@total_units[5]")])
    traj = await run_agent(task, model, session, AgentConfig())
    assert traj.answer == "@total_units[5]" and traj.counters["rejected_answers"] == 1
    assert "not run any code" in traj.messages[3]["content"]


async def test_answer_next_to_code_is_refused(task, session):
    both = Completion(raw_text="", usage=Usage(1, 1), tool_calls=[
        call("execute_code", comment="c", code="print(7)").tool_calls[0],
        call("final_answer", answer="@total_units[7]").tool_calls[0]])
    model = ScriptedModel([both, call("final_answer", answer="@total_units[7]")])
    traj = await run_agent(task, model, session, AgentConfig())
    assert traj.status == "answered" and traj.turns == 2
    assert "call final_answer alone" in traj.messages[4]["content"]


async def test_format_reminder_once(task, session):
    model = ScriptedModel([call("execute_code", comment="c", code="print(5)"), call("final_answer", answer="5"),
                           call("final_answer", answer="5")])
    traj = await run_agent(task, model, session, AgentConfig())
    assert traj.status == "answered" and traj.answer == "5" and traj.turns == 3
    assert "format" in traj.messages[5]["content"]


async def test_an_answer_copying_the_formats_placeholder_is_refused(session):
    task = Task(id="t2", question="Mean units?", files=[EXAMPLES / "sales.csv"],
                format='@mean_units[mean_value] where "mean_value" is a number.')
    model = ScriptedModel([call("execute_code", comment="c", code="x = 5"),
                           call("final_answer", answer="@mean_units[mean_value]"),
                           call("execute_code", comment="c", code="print(x)"),
                           call("final_answer", answer="@mean_units[5]")])
    traj = await run_agent(task, model, session, AgentConfig())
    assert traj.status == "answered" and traj.answer == "@mean_units[5]" and traj.turns == 4
    assert "placeholder" in traj.messages[5]["content"] and traj.counters["rejected_answers"] == 1


def test_placeholders_copied_reads_names_not_values():
    from notebook_agent.agent.step import placeholders_copied

    fmt = "@mean_fare[mean_fare_value] @normal[True] @n[value]"
    assert placeholders_copied("@mean_fare[mean_fare_value]", fmt) == ["mean_fare_value"]
    assert placeholders_copied("@n[value] @normal[True]", fmt) == ["value"]  # True is an allowed value
    assert placeholders_copied("@mean_fare[34.65] @normal[True]", fmt) == []
    assert placeholders_copied("@other[mean_fare_value]", fmt) == []


async def test_old_observations_are_shortened_for_the_model_only(task, session):
    long_cell = call("execute_code", comment="c", code="print('x' * 3000)")
    model = ScriptedModel([long_cell, long_cell, long_cell, long_cell, call("final_answer", answer="@total_units[1]")])
    traj = await run_agent(task, model, session, AgentConfig(max_context_tokens=1024 + 900, max_tokens_per_turn=1024))
    assert traj.status == "answered"
    last_view = model.calls[-1]
    tool_msgs = [m for m in last_view if m["role"] == "tool"]
    assert "shortened" in tool_msgs[0]["content"]          # oldest shortened in what the model saw
    assert "shortened" not in tool_msgs[-1]["content"]     # the newest kept whole
    assert all("shortened" not in m.get("content", "") for m in traj.messages if m["role"] == "tool")


async def test_wall_time_limit(task, session):
    model = ScriptedModel([call("execute_code", comment="c", code="import time; time.sleep(30)")] * 3)
    traj = await run_agent(task, model, session, AgentConfig(max_wall_s=3))
    assert traj.status == "timeout"
    assert traj.steps[0].result.status == "timeout"
    assert traj.wall_s < 20


async def test_kernel_death_restarts_and_continues(task, session):
    model = ScriptedModel([call("execute_code", comment="c", code="import os; os._exit(1)"),
                           call("execute_code", comment="c", code="print('alive')"),
                           call("final_answer", answer="@total_units[1]")])
    traj = await run_agent(task, model, session, AgentConfig())
    assert traj.steps[0].result.status == "dead"
    assert "restarted" in traj.messages[3]["content"]
    assert traj.steps[1].result.text.strip() == "alive"
    assert traj.status == "answered" and traj.counters["kernel_restarts"] == 1


async def test_trajectory_round_trips_and_renders_a_valid_notebook(task, session, tmp_path):
    model = ScriptedModel([
        call("execute_code", comment="Plot units per region.",
             code="import pandas as pd, matplotlib.pyplot as plt\ndf = pd.read_csv('sales.csv')\n"
                  "df.groupby('region').units.sum().plot.bar()\nplt.show()\ndf.head(2)"),
        call("final_answer", answer="@total_units[1]"),
    ])
    traj = await run_agent(task, model, session, AgentConfig())
    path = traj.save(tmp_path / "t.json")
    again = Trajectory.load(path)
    assert again.to_dict() == json.loads(json.dumps(traj.to_dict()))
    nb = trajectory_to_notebook(again, task_format=task.format)
    nbformat.validate(nb)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds == ["markdown", "markdown", "code", "markdown"]
    outputs = nb.cells[2].outputs
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any(o.output_type == "execute_result" and "text/html" in o.data for o in outputs)
    assert "[image" in traj.steps[0].result.text  # a placeholder in the model's view, not base64
    assert "iVBOR" not in traj.messages[3]["content"]


async def test_a_nested_answer_stated_in_text_is_recovered_whole(task, session):
    """`@pairs[[1,2],[3,4]]`: a lazy match would recover `@pairs[[1,2]`."""
    model = ScriptedModel([call("execute_code", comment="Pairs.", code="print([[1, 2], [3, 4]])"),
                           "The final answer is @pairs[[1,2],[3,4]]."])
    traj = await run_agent(task, model, session, AgentConfig())
    assert traj.status == "answered" and traj.answer == "@pairs[[1,2],[3,4]]"


class ChoiceRecorder(ScriptedModel):
    """A scripted model that also records each call's `tool_choice`."""

    def __init__(self, script):
        super().__init__(script)
        self.choices: list[str] = []

    async def _complete(self, messages, tools, params):
        self.choices.append(params.tool_choice)
        return await super()._complete(messages, tools, params)


async def test_after_a_refusal_for_want_of_values_only_code_may_follow_when_asked(task, session):
    """code_after_refusal: an answer before any cell ran, or one copying the format's placeholder,
    makes the next reply's tool_choice execute_code; the format reminder does not (the model
    only has to write the answer again)."""
    script = [call("final_answer", answer="@total_units[7]"),        # no cell ran yet
              call("execute_code", comment="Sum.", code="print(3)"),
              call("final_answer", answer="@total_units[value]"),    # the format's placeholder
              call("execute_code", comment="Again.", code="print(3)"),
              call("final_answer", answer="3"),                      # format reminder
              call("final_answer", answer="@total_units[3]")]
    model = ChoiceRecorder(list(script))
    traj = await run_agent(task, model, session, AgentConfig(code_after_refusal=True))
    assert traj.status == "answered" and traj.answer == "@total_units[3]"
    assert model.choices == ["required", "execute_code", "required", "execute_code", "required", "required"]
    assert traj.counters["forced_code"] == 2 and traj.counters["rejected_answers"] == 3

    await session.restart()
    model = ChoiceRecorder(list(script))
    traj = await run_agent(task, model, session, AgentConfig())  # off by default
    assert traj.status == "answered" and set(model.choices) == {"required"} and traj.counters["forced_code"] == 0


async def test_a_cell_repeated_unchanged_is_refused_only_when_asked(task, session):
    """A side effect makes running it twice visible: the kernel's counter says how often it ran."""
    cell = call("execute_code", comment="Count and look.", code="n = globals().get('n', 0) + 1\nprint(n)")
    script = [cell, cell, call("execute_code", comment="Again, changed.", code="n += 1\nprint(n)"), cell,
              call("final_answer", answer="@total_units[3]")]
    model = ScriptedModel(list(script))
    traj = await run_agent(task, model, session, AgentConfig(refuse_repeats=True))
    assert traj.status == "answered"
    assert [s.result.text.strip() for s in traj.steps] == ["1", "2", "3"]  # the repeat right after did not run
    assert traj.counters["refused_repeats"] == 1 and traj.counters["cell_errors"] == 0
    refusal = model.calls[2][-1]
    assert refusal["role"] == "tool" and "same as the one you just ran" in refusal["content"]
    assert task.format not in refusal["content"] and "final_answer" in refusal["content"]

    await session.restart()
    traj = await run_agent(task, ScriptedModel(list(script)), session, AgentConfig())  # off by default
    assert [s.result.text.strip() for s in traj.steps] == ["1", "2", "3", "4"]
    assert traj.counters["refused_repeats"] == 0
