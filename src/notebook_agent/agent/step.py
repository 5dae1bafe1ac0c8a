"""One agent step as a reusable function, for callers that branch (tree search).

The loop (`loop.run_agent`) is: render the prompt -> complete -> parse -> execute or answer ->
new messages, repeated. Here that single step is exposed over an `AgentState` (the loop's own
run state: trajectory, counters, consecutive errors, ...), so that a search can sample k next
steps from one state and apply each in its own fork of the kernel:

    state = initial_state(task, model, session, config)
    completions = await sample_steps(state, n=3, logprobs=True)
    child, end = await apply_step(state, completions[0], await session.fork(), turn=1)

`run_agent` uses exactly these pieces, so a search step behaves like a loop turn.
"""

from __future__ import annotations

import asyncio
import copy
import time

from ..kernel.base import KernelSession
from ..models.base import ChatModel, Completion
from ..tasks.task import Task
from .loop import AgentConfig, EventHandler, _Run

AgentState = _Run
StepEnd = tuple[str, str]  # (status, detail) when the step ends the run


def initial_state(task: Task, model: ChatModel, session: KernelSession, config: AgentConfig | None = None,
                  on_event: EventHandler | None = None) -> AgentState:
    """The state before the first step: system prompt and the task's first message."""
    return _Run(task, model, session, config or AgentConfig(), on_event, None)


async def sample_steps(state: AgentState, n: int = 1, logprobs: bool = False) -> list[Completion]:
    """`n` candidate next steps (decoded replies) for `state`; the state is not changed.

    One model call with `n` samples; a backend that returns fewer gets the rest asked
    concurrently. Tokens are counted in a state only when a completion is applied to it.
    """
    out = list(await state.sample(n, logprobs))
    if 0 < len(out) < n:
        more = await asyncio.gather(*(state.sample(1, logprobs) for _ in range(n - len(out))))
        out += [c for batch in more for c in batch]
    # Backends may hand back one object n times (the scripted model does): make them independent.
    return [copy.deepcopy(c) for c in out[:n]]


async def apply_step(state: AgentState, completion: Completion, session: KernelSession, turn: int,
                     model_s: float = 0.0) -> tuple[AgentState, StepEnd | None]:
    """A new state: `state` copied into `session` (a fork of its kernel) with `completion` acted on.

    `state` itself is left as it was. Returns the new state and (status, detail) when the step
    ends the run (an answer, too many errors, too many replies without a tool call).
    """
    child = state.clone(session)
    child.account(completion, model_s)
    child.traj.turns = turn
    t0 = time.monotonic()
    end = await child.take_step(turn, completion)
    child.traj.wall_s += time.monotonic() - t0
    return child, end
