"""What every scorer returns, and how per-task scores add up to benchmark metrics.

A `Score` is one task's verdict. `summarize` turns many of them into the three InfiAgent
metrics, which also cover single-answer benchmarks (there ABQ = PSAQ = UASQ = accuracy):

- ABQ: share of questions whose sub-answers are all right;
- PSAQ: mean over questions of the fraction of right sub-answers;
- UASQ: right sub-answers over all sub-answers.

Breakdowns by level and by concept use the same three numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from ..task import Task

LEVEL_ORDER = ["easy", "medium", "hard"]


@dataclass
class Score:
    """One task's verdict.

    `n_sub` is the number of gold sub-answers (1 for single-answer benchmarks, 0 when the task
    has no gold answer: such a task is not scored). `answered` is False when there was no
    response at all (it still counts as wrong unless summarized with missing="skip").
    """

    correct: bool
    fraction: float
    n_sub: int
    n_right: int
    answered: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def scored(self) -> bool:
        return self.n_sub > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Score":
        return cls(**{k: d[k] for k in ("correct", "fraction", "n_sub", "n_right", "answered", "details") if k in d})

    @classmethod
    def unscored(cls, reason: str = "no gold answer") -> "Score":
        return cls(correct=False, fraction=0.0, n_sub=0, n_right=0, answered=False, details={"error": reason})


class Scorer(Protocol):
    """Scores one response against one task's gold answer."""

    name: str

    def score(self, task: Task, response: str | None) -> Score: ...


@dataclass
class GroupMetrics:
    n: int = 0
    abq: float = 0.0
    psaq: float = 0.0
    uasq: float = 0.0
    n_correct: int = 0
    n_sub: int = 0
    n_sub_right: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScoredItem:
    """A score with what breakdowns need to know about its task."""

    id: str
    score: Score
    level: str = ""
    concepts: Sequence[str] = ()


@dataclass
class Metrics:
    """Aggregate metrics of a set of scored tasks (fractions in [0, 1])."""

    overall: GroupMetrics
    by_level: dict[str, GroupMetrics]
    by_concept: dict[str, GroupMetrics]
    n_answered: int = 0
    n_unscored: int = 0     # tasks without a gold answer (left out of every figure)
    missing: str = "wrong"

    @property
    def abq(self) -> float:
        return self.overall.abq

    @property
    def psaq(self) -> float:
        return self.overall.psaq

    @property
    def uasq(self) -> float:
        return self.overall.uasq

    @property
    def n(self) -> int:
        return self.overall.n

    def to_dict(self) -> dict[str, Any]:
        return {
            "abq": self.abq,
            "psaq": self.psaq,
            "uasq": self.uasq,
            "n": self.n,
            "n_answered": self.n_answered,
            "n_unscored": self.n_unscored,
            "missing": self.missing,
            "by_level": {k: v.to_dict() for k, v in self.by_level.items()},
            "by_concept": {k: v.to_dict() for k, v in self.by_concept.items()},
        }


def _group(scores: Sequence[Score]) -> GroupMetrics:
    n = len(scores)
    if n == 0:
        return GroupMetrics()
    n_correct = sum(s.correct for s in scores)
    n_sub = sum(s.n_sub for s in scores)
    n_sub_right = sum(s.n_right for s in scores)
    return GroupMetrics(
        n=n,
        abq=n_correct / n,
        psaq=sum(s.fraction for s in scores) / n,
        uasq=n_sub_right / n_sub if n_sub else 0.0,
        n_correct=n_correct,
        n_sub=n_sub,
        n_sub_right=n_sub_right,
    )


def level_key(level: str) -> tuple[int, str]:
    """Sort levels easy < medium < hard, then the rest alphabetically."""
    return (LEVEL_ORDER.index(level), level) if level in LEVEL_ORDER else (len(LEVEL_ORDER), level)


def summarize(items: Iterable[ScoredItem], missing: Literal["wrong", "skip"] = "wrong") -> Metrics:
    """Aggregate per-task scores.

    missing="wrong" (the default, as the benchmark README asks) keeps unanswered questions in
    every denominator as wrong. missing="skip" drops them, which is what InfiAgent's
    `eval_closed_form.py` does (it only builds results for ids with a non-empty response).
    """
    items = list(items)
    scored = [it for it in items if it.score.scored]
    n_unscored = len(items) - len(scored)
    n_answered = sum(it.score.answered for it in scored)
    if missing == "skip":
        scored = [it for it in scored if it.score.answered]
    elif missing != "wrong":
        raise ValueError(f"missing must be 'wrong' or 'skip', not {missing!r}")
    by_level: dict[str, list[Score]] = {}
    by_concept: dict[str, list[Score]] = {}
    for it in scored:
        by_level.setdefault(it.level or "(none)", []).append(it.score)
        for c in it.concepts:
            by_concept.setdefault(c, []).append(it.score)
    return Metrics(
        overall=_group([it.score for it in scored]),
        by_level={k: _group(by_level[k]) for k in sorted(by_level, key=level_key)},
        by_concept={k: _group(by_concept[k]) for k in sorted(by_concept)},
        n_answered=n_answered,
        n_unscored=n_unscored,
        missing=missing,
    )
