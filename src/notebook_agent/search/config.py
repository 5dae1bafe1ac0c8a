"""Settings of one search (recorded with every tree it grows). The agent's own settings are
nested (`SearchConfig.agent`), never copied: a search step is an agent step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..agent.config import AgentConfig

Aggregation = Literal["majority", "value_weighted", "best_value"]
ValueNodes = Literal["all", "terminal"]
SEARCH_TEMPERATURE = 0.8  # children must differ: sampling, not greedy


def search_agent_config() -> AgentConfig:
    """The agent settings a search samples with by default: the agent's, at temperature 0.8."""
    return AgentConfig(temperature=SEARCH_TEMPERATURE)


@dataclass
class SearchConfig:
    """MCTS over agent states. Defaults follow JUPITER (3 children, depth 10, 3 errors).

    `c_puct` is the exploration constant: about 1.25 to collect training trees, 0 at inference
    (JUPITER: exploration at inference hurts). Budgets end the search at whichever comes
    first: `iterations` selections, `max_wall_s` seconds, `max_tokens` model tokens.

    `agent` holds the step's settings: sampling (temperature, seed, tokens per step), the
    scaffold, the cell timeout, and `max_consecutive_errors` (failing steps in a row end a
    path). Its `max_turns` bounds a vote run; a tree path is bounded by `max_depth`. Its
    `max_wall_s` bounds the cells' time when the search has no `max_wall_s` of its own.
    """

    agent: AgentConfig = field(default_factory=search_agent_config)
    c_puct: float = 0.0
    k: int = 3                          # children per expansion (one model call with n=k); vote: runs
    max_depth: int = 10                 # steps from the root; a node at this depth is terminal
    parse_failure_terminal: bool = False  # a reply that cannot be parsed ends its path
    iterations: int = 40
    max_wall_s: float | None = None
    max_tokens: int | None = None
    logprobs: bool = True               # ask for token log-probabilities (the prior)
    max_live_sessions: int = 32         # open leaves holding a kernel; beyond, the worst are pruned
    aggregate: Aggregation = "majority"  # how the answer is chosen among candidates
    #: which new nodes a value model scores: "all" (inner and answered ones) or "terminal"
    #: (answered ones only, as JUPITER's released inference code does; inner nodes get 0)
    value_nodes: ValueNodes = "all"

    @classmethod
    def collection(cls, **overrides: object) -> SearchConfig:
        """JUPITER's settings for collecting training trees: exploration on (c_puct 1.25), 50 iterations."""
        return cls(**{"c_puct": 1.25, "iterations": 50, **overrides})  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k (children per expansion) must be >= 1")
        if self.max_depth < 1:
            raise ValueError("max_depth must be >= 1")
        if self.iterations < 1:
            raise ValueError("iterations must be >= 1")
        if self.c_puct < 0:
            raise ValueError("c_puct must be >= 0")
        if self.max_live_sessions < self.k:
            raise ValueError("max_live_sessions must be >= k")
        if self.aggregate not in ("majority", "value_weighted", "best_value"):
            raise ValueError(f"unknown aggregation {self.aggregate!r}: majority, value_weighted or best_value")
        if self.value_nodes not in ("all", "terminal"):
            raise ValueError(f"unknown value_nodes {self.value_nodes!r}: all or terminal")
