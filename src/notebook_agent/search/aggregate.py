"""Candidate answers and the ways to pick one: majority vote, value-weighted vote, best value."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..tasks.scoring.dabench import extract_answers_whole

AGGREGATIONS = ("majority", "value_weighted", "best_value")


@dataclass
class Candidate:
    """A final answer found by the search: where (node), when (round) and its value."""

    answer: str
    node: int
    round: int
    value: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize_answer(answer: str) -> str:
    """The key answers are grouped by: their `@name[value]` items when they have some (so the
    same items repeated, reordered or wrapped in prose are one answer, as the scorer sees them),
    else the text; whitespace collapsed, case folded."""
    items = extract_answers_whole(answer)
    if items:
        answer = " ".join(f"@{name}[{value.strip()}]" for name, value in sorted(items.items()))
    return re.sub(r"\s+", " ", answer.strip()).casefold()


def _groups(cands: list[Candidate]) -> dict[str, list[Candidate]]:
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in cands:
        groups[normalize_answer(c.answer)].append(c)
    return groups


def _pick(cands: list[Candidate], weight: Callable[[list[Candidate]], float]) -> Candidate | None:
    """The earliest candidate of the group with the highest weight (ties: the earlier group)."""
    if not cands:
        return None
    groups = _groups(cands)
    best = max(groups.values(), key=lambda g: (weight(g), -min(c.round for c in g), -min(c.node for c in g)))
    return min(best, key=lambda c: (c.round, c.node))


def majority(cands: list[Candidate]) -> Candidate | None:
    return _pick(cands, len)


def value_weighted(cands: list[Candidate]) -> Candidate | None:
    """Votes weighted by (value + 1) / 2, i.e. a value in [-1, 1] mapped to [0, 1]."""
    return _pick(cands, lambda g: sum((c.value + 1) / 2 for c in g))


def best_value(cands: list[Candidate]) -> Candidate | None:
    if not cands:
        return None
    return max(cands, key=lambda c: (c.value, -c.round, -c.node))


def aggregate(cands: list[Candidate], method: str = "majority") -> Candidate | None:
    try:
        fn = {"majority": majority, "value_weighted": value_weighted, "best_value": best_value}[method]
    except KeyError:
        raise ValueError(f"unknown aggregation {method!r}: {', '.join(AGGREGATIONS)}") from None
    return fn(cands)
