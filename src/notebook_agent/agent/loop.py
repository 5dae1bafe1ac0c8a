"""The agent loop: ask the model for a step, run it in the kernel, show it the output, repeat.

One turn = one model call. The model answers with tool calls (`execute_code`, `final_answer`)
through the model's codec (scaffold "tools") or with ReAct text (scaffold "react", JUPITER's
format, decoded with the ReAct codec so both scaffolds run on the same model). Each reply is
acted on by `step.step` over the run's `AgentState` (the same function tree search uses).
Nothing the model writes can crash the loop: unparsable output, missing tool calls and failing
cells all come back to the model as observations, and every limit ends the run with its own
status.
"""

from __future__ import annotations

import asyncio
import time

from ..kernel.base import KernelError, KernelSession
from ..models.base import ChatModel, Completion, ModelError
from ..tasks.task import Task
from .config import AgentConfig, AgentEvent, EventHandler
from .state import AgentState, StepOutcome, initial_state
from .step import account, extract_answer_items, sample, step
from .trajectory import Trajectory

__all__ = ["AgentConfig", "AgentEvent", "EventHandler", "extract_answer_items", "run_agent"]


async def _ask(state: AgentState) -> Completion:
    t0 = time.monotonic()
    try:
        completion = (await sample(state, 1))[0]
    except BaseException:
        state.traj.model_s += time.monotonic() - t0
        raise
    account(state, completion, time.monotonic() - t0)
    return completion


async def _loop(state: AgentState) -> StepOutcome:
    cfg, traj = state.config, state.traj
    for turn in range(1, cfg.max_turns + 1):
        traj.turns = turn
        if state.stop is not None and state.stop.is_set():
            return StepOutcome("cancelled", "stopped by the user")
        if state.remaining() <= 0:
            return StepOutcome("timeout", f"wall time limit of {cfg.max_wall_s:.0f} s reached")
        if cfg.max_total_tokens and traj.total_tokens >= cfg.max_total_tokens:
            return StepOutcome("max_tokens", f"token limit of {cfg.max_total_tokens} reached")
        state.emit("turn", turn)
        try:
            completion = await asyncio.wait_for(_ask(state), timeout=state.remaining())
        except asyncio.TimeoutError:
            return StepOutcome("timeout", f"wall time limit of {cfg.max_wall_s:.0f} s reached while the model was writing")
        outcome = await step(state, completion, turn)
        if outcome.ended:
            return outcome
    return StepOutcome("max_turns", f"no final answer after {cfg.max_turns} turns")


async def run_state(state: AgentState) -> Trajectory:
    """Run the loop from `state` until the run ends; the trajectory records how."""
    t_start = time.monotonic()
    try:
        outcome = await _loop(state)
    except ModelError as e:
        outcome = StepOutcome("model_error", str(e))
    except KernelError as e:
        outcome = StepOutcome("kernel_error", str(e))
    finally:
        state.traj.wall_s = time.monotonic() - t_start
        state.traj.counters = state.counters.to_dict()
    state.finish(outcome)
    state.emit("end", state.traj.turns, status=state.traj.status, answer=state.traj.answer,
               detail=state.traj.status_detail)
    return state.traj


async def run_agent(
    task: Task,
    model: ChatModel,
    session: KernelSession,
    config: AgentConfig | None = None,
    on_event: EventHandler | None = None,
    stop: asyncio.Event | None = None,
) -> Trajectory:
    """Run the agent on `task` in a started `session` (whose working dir holds the task's files).

    Returns the trajectory whatever happens to the model or the kernel; the status says how
    the run ended. Setting `stop` ends the run after the current step ("cancelled").
    """
    return await run_state(initial_state(task, model, session, config, on_event, stop))
