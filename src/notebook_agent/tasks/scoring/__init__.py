"""Scorers by name. Official rules are the defaults; lenient variants only when asked for.

| name              | rules                                                        |
|-------------------|--------------------------------------------------------------|
| `dabench`         | InfiAgent-DABench official (`@name[value]`, floats 1e-6)     |
| `dabstep`         | DABStep official (`question_scorer`)                         |
| `dabench_jupiter` | JUPITER's InfiAgent evaluation (empty/list tolerant)         |
| `dabench_lenient` | JUPITER's MCTS reward check (1e-3 relative, unordered lists) |
| `auto`            | per task: `@name[value]` gold -> dabench, other text -> dabstep |
"""

from __future__ import annotations

from ..task import Task
from .base import GroupMetrics, Metrics, Score, ScoredItem, Scorer, level_key, summarize
from .dabench import DABenchScorer, extract_answers
from .dabstep import DABStepScorer
from .lenient import JupiterDABenchScorer, LenientDABenchScorer


class AutoScorer:
    """For plain JSONL sets that mix answer shapes: structured gold answers get the DABench
    rules, free-text gold answers get DABStep's."""

    name = "auto"

    def __init__(self) -> None:
        self._dabench, self._dabstep = DABenchScorer(), DABStepScorer()

    def score(self, task: Task, response: str | None) -> Score:
        if isinstance(task.answer, (list, dict)) or (isinstance(task.answer, str) and extract_answers(task.answer)):
            return self._dabench.score(task, response)
        return self._dabstep.score(task, response)


SCORERS: dict[str, type] = {
    "dabench": DABenchScorer,
    "dabstep": DABStepScorer,
    "dabench_jupiter": JupiterDABenchScorer,
    "dabench_lenient": LenientDABenchScorer,
    "auto": AutoScorer,
}

# The official scorer of each benchmark kind (see tasks/loaders.py).
DEFAULT_SCORER = {"dabench": "dabench", "nbqa": "dabench", "dabstep": "dabstep", "jsonl": "auto"}


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]()
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; choose one of: {', '.join(SCORERS)}") from None


def scorer_for(kind: str) -> Scorer:
    """The official scorer for a benchmark kind (`dabench`, `dabstep`, `nbqa`, `jsonl`)."""
    return get_scorer(DEFAULT_SCORER.get(kind, "auto"))


__all__ = [
    "AutoScorer", "DABenchScorer", "DABStepScorer", "DEFAULT_SCORER", "GroupMetrics",
    "JupiterDABenchScorer", "LenientDABenchScorer", "Metrics", "SCORERS", "Score", "ScoredItem",
    "Scorer", "get_scorer", "level_key", "scorer_for", "summarize",
]
