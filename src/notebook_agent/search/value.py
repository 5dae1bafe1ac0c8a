"""How nodes are valued: terminal rewards from the task's scorer (collection) or a value model
(inference).

Collection (the task has a gold answer and a scorer is given): an answered terminal node gets
the fraction of sub-answers right, or -1 when none is right (JUPITER's reward). Any other
terminal node (too many errors, depth limit, unparsable reply, no tool call) gets -1.

Inference: a `ValueScorer` (the training issue's value model implements it) scores new nodes,
terminal answered ones included (`SearchConfig.value_nodes="terminal"`: only those, inner
nodes get 0, as in JUPITER's released inference code); failed terminal nodes still get -1. Without one (the
ablation), new open nodes and answered terminal nodes get 0: the search is guided only by
failures (-1) and the prior, with no rollouts.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..tasks.scoring import Scorer
from ..tasks.task import Task

FAILED = -1.0
NEUTRAL = 0.0


@runtime_checkable
class ValueScorer(Protocol):
    """Scores partial notebooks: one value in [-1, 1] per conversation (OpenAI-format messages)."""

    def score(self, batch: list[list[dict[str, Any]]]) -> list[float]: ...


def terminal_reward(task: Task, scorer: Scorer, answer: str | None) -> float:
    """JUPITER's collection reward: fraction of sub-answers right, else -1."""
    if answer is None:
        return FAILED
    s = scorer.score(task, answer)
    return s.fraction if s.n_right > 0 else FAILED


def clamp(v: float) -> float:
    return max(-1.0, min(1.0, float(v)))


def load_value_scorer(path: str | None) -> ValueScorer | None:
    """The value model saved by `notebook-agent train value` at `path` (None: no value model).
    Needs torch and transformers (the train extra); loading it is models/' business."""
    if not path:
        return None
    from ..models.value_model import load_value_scorer as load

    return load(path)
