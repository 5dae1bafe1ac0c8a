"""The loop end to end with a real small model (SmolLM2-135M through llama.cpp) on a CSV."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from notebook_agent.agent.loop import AgentConfig, run_agent
from notebook_agent.agent.notebook import trajectory_to_notebook
from notebook_agent.kernel import make_session
from notebook_agent.tasks.task import Task

SALES = Path(__file__).resolve().parents[2] / "examples" / "sales.csv"


@pytest.mark.slow
@pytest.mark.parametrize("scaffold", ["tools", "react"])
async def test_smollm2_runs_the_loop_and_leaves_a_valid_notebook(scaffold, smollm2_path):
    from notebook_agent.models.resolve import load_model

    model = load_model(str(smollm2_path))
    task = Task(id="sales", question="How many rows does sales.csv have?", files=[SALES])
    events = []
    session = make_session("local", files=task.files)
    await session.start()
    try:
        traj = await run_agent(task, model, session, AgentConfig(scaffold=scaffold, max_turns=4, max_wall_s=240,
                                                                max_tokens_per_turn=256),
                               on_event=events.append)
    finally:
        await session.close()
        await model.aclose()
    assert traj.turns >= 1 and traj.completion_tokens > 0
    assert traj.status in ("answered", "max_turns", "max_errors", "no_tool_call")
    assert events[0].kind == "turn" and events[-1].kind == "end"
    nb = trajectory_to_notebook(traj)
    nbformat.validate(nb)
    assert sum(c.cell_type == "code" for c in nb.cells) == len(traj.steps)
    # every executed step really ran in the kernel
    for step in traj.steps:
        assert step.result.execution_count is not None or step.result.status != "ok"
