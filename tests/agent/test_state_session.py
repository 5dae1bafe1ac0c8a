"""The public agent state (copies that share nothing mutable), the one task session and the
one save function, with a scripted model and real kernels."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from notebook_agent.agent.config import AgentConfig, SessionConfig, from_options
from notebook_agent.agent.loop import run_agent
from notebook_agent.agent.save import save_run
from notebook_agent.agent.session import SessionStartError, check_sandbox, start_error_message, task_session
from notebook_agent.agent.state import AgentState, Counters, initial_state
from notebook_agent.agent.step import apply_step, step
from notebook_agent.models.scripted import ScriptedModel, call
from notebook_agent.tasks.task import Task

SALES = Path(__file__).resolve().parents[2] / "examples" / "sales.csv"


@pytest.fixture
def task() -> Task:
    return Task(id="t1", question="Total units?", files=[SALES], format="@total_units[value]")


async def test_a_copy_shares_nothing_mutable_with_its_parent(task):
    model = ScriptedModel([call("execute_code", comment="c", code="print(1)")])
    async with task_session(task, SessionConfig(backend="forking", sandbox="auto")) as session:
        parent = initial_state(task, model, session, AgentConfig())
        fork = await session.fork()
        child, outcome = await apply_step(parent, call("execute_code", comment="c", code="1/0"), fork, turn=1)
        await fork.close()
    assert not outcome.ended and outcome.status is None
    assert isinstance(child, AgentState) and child.session is fork and parent.session is session
    assert child.counters == Counters(cell_errors=1) and parent.counters == Counters()
    assert child.consecutive_errors == 1 and parent.consecutive_errors == 0
    assert len(child.traj.messages) == 4 and len(parent.traj.messages) == 2 and parent.traj.steps == []
    assert child.traj.counters["cell_errors"] == 1 and parent.traj.counters == {}
    assert child.task is parent.task and child.model is parent.model and child.config is parent.config


async def test_step_reports_how_the_run_ends(task):
    model = ScriptedModel([])
    async with task_session(task) as session:
        state = initial_state(task, model, session, AgentConfig(max_nudges=1))
        outcome = await step(state, call("final_answer", answer="@total_units[1]"), turn=1)
        assert not outcome.ended and state.counters.rejected_answers == 1  # no code ran yet
        outcome = await step(state, call("execute_code", comment="c", code="print(2)"), turn=2)
        assert not outcome.ended and state.successful_cells == 1
        outcome = await step(state, call("final_answer", answer="@total_units[2]"), turn=3)
    assert (outcome.status, outcome.ended, state.traj.answer) == ("answered", True, "@total_units[2]")


async def test_isolation_is_recorded_in_the_trajectory_notebook_and_run_json(task, tmp_path):
    model = ScriptedModel([call("execute_code", comment="c", code="print(5)"),
                           call("final_answer", answer="@total_units[5]")])
    async with task_session(task, SessionConfig(sandbox="off")) as session:
        isolation = dict(session.isolation)
        traj = await run_agent(task, model, session, AgentConfig())
    assert isolation["mode"] == "off" and isolation["isolated"] is False
    assert traj.isolation == isolation and "isolation" not in traj.settings
    saved = save_run(traj, tmp_path / "out", task=task, copy_files=True)
    nb = nbformat.read(str(saved.notebook), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["notebook_agent"]["isolation"] == isolation
    meta = json.loads(saved.metadata.read_text())
    assert meta["isolation"] == isolation and meta["status"] == "answered" and meta["counters"]["cell_errors"] == 0
    assert json.loads(saved.trajectory.read_text())["isolation"] == isolation
    assert (tmp_path / "out" / "sales.csv").is_file()


async def test_sessions_are_closed_whatever_happens(task):
    with pytest.raises(RuntimeError, match="boom"):
        async with task_session(task) as session:
            raise RuntimeError("boom")
    assert not session.is_alive


async def test_a_session_that_cannot_be_confined_as_asked_names_sandbox_off():
    with pytest.raises(SessionStartError) as info:
        await check_sandbox(SessionConfig(backend="remote", sandbox="require", options={"base_url": "http://127.0.0.1:9"}))
    assert "--sandbox off" in start_error_message(info.value)


def test_unset_options_keep_the_config_defaults():
    assert from_options(AgentConfig, max_turns=None, temperature=None, seed=3) == AgentConfig(seed=3)
    with pytest.raises(ValueError, match="unknown scaffold"):
        from_options(AgentConfig, scaffold="beam")
    with pytest.raises(ValueError, match="unknown sandbox mode"):
        SessionConfig(sandbox="maybe")  # type: ignore[arg-type]
