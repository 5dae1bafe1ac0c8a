"""DABStep's published scorer, rule for rule.

Followed: `dabstep_benchmark/evaluation/scorer.py` of the DABStep leaderboard Space
(huggingface.co/spaces/adyen/DABstep), current version (rel/abs tolerance 1e-4 and the
two-branch "numeric with commas" pattern; an earlier version used 1e-2 and a narrower
pattern). `question_scorer(agent_answer, gold)` decides in this order:

1. both strings are stripped and lower-cased (so comparison is case-insensitive);
2. if either looks like a number with thousands commas or a plain decimal (`1,234.5`,
   `0.99`, `0,99`, optional `$`), the first number in each is compared numerically;
3. else if either holds `,` or `;`, both are lists: brackets dropped, items split on `,`/`;`,
   stripped and sorted (so order does not matter); equal lists match, otherwise lists of the
   same length match when every pair (in sorted order) matches by these same rules;
4. else if both contain a number, the first numbers are compared numerically;
5. else strings: equal once non-word characters are removed; or, when either side is a
   single word, one side's words are a subset of the other's; or a difflib
   `SequenceMatcher` ratio above 0.95.

Numeric comparison: equal; or both below 1 and `math.isclose(rel_tol=1e-4, abs_tol=1e-4)`;
or equal after rounding both to the smaller number of decimals shown (as Python prints the
floats); or `math.isclose(rel_tol=1e-4, abs_tol=1e-4)`. The first number is taken without
its sign (the official pattern has no `-`), and a missing answer is wrong.
"""

from __future__ import annotations

import math
import re
from difflib import SequenceMatcher
from typing import Any

from ..task import Task
from .base import Score

_NUMERIC_WITH_COMMAS = re.compile(r"^\$?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+[.,]\d+)$")
_FIRST_NUMBER = re.compile(r"(\d*\.\d+|\d+\.?\d*)%?")
_LIST_BRACKETS = re.compile(r"^\[|\]$")
_LIST_SEPARATORS = re.compile(r"[,;]")
TOLERANCE = 1e-4
SIMILARITY = 0.95


def is_numeric_with_commas(value: str) -> bool:
    return bool(_NUMERIC_WITH_COMMAS.match(value.strip()))


def extract_numeric(value: str) -> float | None:
    """The first unsigned number in `value`, after dropping `,` and `$`."""
    m = _FIRST_NUMBER.search(value.replace(",", "").replace("$", ""))
    if not m:
        return None
    try:
        return float(m.group(1))
    except ValueError:
        return None


def _decimals_shown(x: float) -> int:
    s = str(x)
    return len(s.split(".")[-1]) if "." in s else 0


def compare_numeric(a: float, b: float) -> bool:
    if a == b:
        return True
    if a < 1 and b < 1:
        return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
    places = min(_decimals_shown(a), _decimals_shown(b))
    if round(a, places) == round(b, places):
        return True
    return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def compare_strings(a: str, b: str) -> bool:
    if re.sub(r"[^\w]", "", a) == re.sub(r"[^\w]", "", b):
        return True
    words_a = re.findall(r"\b\w+\b", a.lower())
    words_b = re.findall(r"\b\w+\b", b.lower())
    if words_a and words_b and (len(words_a) == 1 or len(words_b) == 1):
        return set(words_a) <= set(words_b) or set(words_b) <= set(words_a)
    return SequenceMatcher(None, a, b).ratio() > SIMILARITY


def _list_items(value: str) -> list[str]:
    value = _LIST_BRACKETS.sub("", value.strip())
    return sorted(item.strip() for item in _LIST_SEPARATORS.split(value) if item.strip())


def compare_lists(a: str, b: str) -> bool:
    items_a, items_b = _list_items(a), _list_items(b)
    if items_a == items_b:
        return True
    if len(items_a) != len(items_b):
        return False
    return all(question_scorer(x, y) for x, y in zip(items_a, items_b))


def question_scorer(agent_answer: Any, gold: Any) -> bool:
    """True when `agent_answer` matches `gold` under DABStep's rules."""
    if agent_answer is None or gold is None:
        return False
    a = str(agent_answer).strip().lower()
    b = str(gold).strip().lower()
    if is_numeric_with_commas(a) or is_numeric_with_commas(b):
        x, y = extract_numeric(a), extract_numeric(b)
        return x is not None and y is not None and compare_numeric(x, y)
    if any(sep in s for sep in (",", ";") for s in (a, b)):
        return compare_lists(a, b)
    x, y = extract_numeric(a), extract_numeric(b)
    if x is not None and y is not None:
        return compare_numeric(x, y)
    return compare_strings(a, b)


class DABStepScorer:
    """One answer per task; levels ("easy", "hard") come out of `summarize` apart."""

    name = "dabstep"

    def score(self, task: Task, response: str | None) -> Score:
        gold = task.answer
        if gold is None or (isinstance(gold, str) and not gold.strip()):
            return Score.unscored()
        answered = response is not None and str(response).strip() != ""
        ok = answered and question_scorer(response, gold)
        return Score(
            correct=ok,
            fraction=1.0 if ok else 0.0,
            n_sub=1,
            n_right=int(ok),
            answered=answered,
            details={"expected": gold, "predicted": response},
        )
