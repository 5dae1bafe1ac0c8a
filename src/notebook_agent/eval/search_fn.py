"""Search as an `agent_fn` for the evaluation runner, so every search setting is measured with
the same harness and scorer as the plain agent (`notebook-agent eval run --search mcts|vote`).

The adapter lives in eval/ (which runs agent/ or search/); search/ knows nothing of eval/."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..agent.trajectory import Trajectory
from ..kernel.base import KernelSession
from ..models.base import ChatModel
from ..search.config import SearchConfig
from ..search.value import ValueScorer
from ..tasks.scoring import Scorer
from ..tasks.task import Task
from .results import safe_name


@dataclass
class SearchRunConfig:
    """The runner's config for a search run (recorded in run.json; a rerun with other settings
    is refused by the runner like any other change of config). The agent's settings are
    `search.agent`."""

    method: Literal["mcts", "vote"] = "mcts"
    search: SearchConfig = field(default_factory=SearchConfig)
    value_model: str | None = None   # the value model's dir, recorded so a rerun with another is refused
    collect: bool = False            # reward answered nodes with the task's scorer (training trees)


def search_agent_fn(tree_dir: str | Path | None = None, value_scorer: ValueScorer | None = None,
                    reward_scorer: Scorer | None = None):  # -> AgentFn (runner.py)
    """An `agent_fn(task, model, session, config: SearchRunConfig)` returning the chosen path's
    `Trajectory` (tokens and time of the whole search); MCTS trees go to `tree_dir/<id>.json`.

    `reward_scorer` is for collecting training trees only (`config.collect`): it reads the gold
    answer, so the scores of such a run are not evaluation figures."""

    async def agent_fn(task: Task, model: ChatModel, session: KernelSession, config: SearchRunConfig,
                       on_event: object = None) -> Trajectory:
        from ..search.mcts import run_search
        from ..search.vote import run_vote

        if config.method == "vote":
            return (await run_vote(task, model, session, config.search)).trajectory
        if config.method != "mcts":
            raise ValueError(f"unknown search method {config.method!r}: mcts or vote")
        if config.collect and reward_scorer is None:
            raise ValueError("collecting trees needs the task's scorer (reward_scorer)")
        result = await run_search(task, model, session, config.search, value_scorer=value_scorer,
                                  reward_scorer=reward_scorer if config.collect else None)
        if tree_dir is not None:
            result.tree.save(Path(tree_dir) / f"{safe_name(task.id)}.json")
        return result.trajectory

    return agent_fn
