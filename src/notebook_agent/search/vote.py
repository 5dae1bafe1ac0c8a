"""The majority-vote baseline: k independent agent runs at a temperature, the answers voted on.

Each run works in its own fork of the caller's (fresh) session, so runs never see each
other's variables or files. Runs go concurrently; the model bounds its own concurrency.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from ..agent.loop import run_agent
from ..agent.session import close_session
from ..agent.trajectory import Trajectory
from ..kernel.base import KernelError, KernelSession
from ..models.base import ChatModel
from ..tasks.task import Task
from .aggregate import AGGREGATIONS, Candidate, aggregate
from .config import SearchConfig


@dataclasses.dataclass
class VoteResult:
    answer: str | None
    runs: list[Trajectory]
    candidates: list[Candidate]
    aggregates: dict[str, str | None]
    trajectory: Trajectory  # the first run that gave the winning answer (else the first run, with its
                            # best-effort answer, as run_agent gives), with every run's tokens


async def _one(task: Task, model: ChatModel, session: KernelSession, config: AgentConfig) -> Trajectory:
    fork = await session.fork()
    try:
        return await run_agent(task, model, fork, config)
    finally:
        await close_session(fork)


async def run_vote(task: Task, model: ChatModel, session: KernelSession, config: SearchConfig | None = None) -> VoteResult:
    """`config.k` runs of the agent loop with `config.agent` (at its temperature, 0.8 by default;
    seeds seed, seed+1, ... when a seed is set)."""
    config = config or SearchConfig()
    k, base = config.k, config.agent
    configs = [dataclasses.replace(base, seed=None if base.seed is None else base.seed + i) for i in range(k)]
    t0 = time.monotonic()
    outcomes = await asyncio.gather(*(_one(task, model, session, c) for c in configs),
                                    return_exceptions=True)
    runs: list[Trajectory] = []
    for o in outcomes:
        if isinstance(o, BaseException):
            if isinstance(o, (KernelError, OSError)):
                continue  # a run whose kernel could not fork counts as no answer
            raise o
        runs.append(o)
    if not runs:
        raise KernelError("no vote run could start: forking the session failed every time")
    cands = [Candidate(r.answer, i, i, 0.0) for i, r in enumerate(runs) if r.answered and r.answer is not None]
    picks = {m: aggregate(cands, m) for m in AGGREGATIONS}
    win = picks["majority"]
    chosen = runs[win.node] if win else runs[0]
    traj = Trajectory.from_dict(chosen.to_dict())
    traj.prompt_tokens = sum(r.prompt_tokens for r in runs)
    traj.completion_tokens = sum(r.completion_tokens for r in runs)
    traj.model_s = sum(r.model_s for r in runs)
    traj.kernel_s = sum(r.kernel_s for r in runs)
    traj.wall_s = time.monotonic() - t0
    aggregates = {m: (c.answer if c else None) for m, c in picks.items()}
    traj.search = {"method": "vote", "k": k, "temperature": base.temperature, "aggregates": aggregates,
                   "answers": [r.answer for r in runs], "statuses": [r.status for r in runs]}
    return VoteResult(win.answer if win else None, runs, cands, aggregates, traj)
