"""JUPITER's tolerant comparisons, each under its own name (never a default).

Both come from github.com/microsoft/Jupiter and are reproduced rule for rule, so figures
can be compared with the paper's; neither is InfiAgent-DABench's official rule.

`dabench_jupiter` (`infiagent_evaluation/eval.py`, how JUPITER scores InfiAgent-DABench):
the official `@(\\w+)\\[(.*?)\\]` parse (last occurrence wins), then a sub-answer is right when
- the strings are equal; or
- both are "empty" (None, or after strip one of '', '[]', '{}', 'None', 'none', 'nan', 'NaN',
  'null', 'Null'), so a missing answer matches an empty gold; or
- both parse as floats: right iff within 1e-6 (strict), and no further rule is tried; or
- both split on ',' (outer quotes and per-item quotes dropped) into lists of the same length
  whose items pairwise are floats within 1e-6 or equal strings (order matters).

`dabench_lenient` (`mcts_search/*/check_result.py`, JUPITER's MCTS reward): answers are cut
on '@'; an item with '[' and ']' gives key = text before the first '[', value = text between
it and the LAST ']' (so nested brackets survive), both stripped, empty ones skipped, values
through `ast.literal_eval` when they parse. Values match when both are None; two strings only
when equal; two numbers (ints and bools count) when |a-b| < 1e-3 or |a-b|/(|a|+|b|+1e-6) <
1e-3; two lists/tuples of equal length when each item finds a distinct match in any order;
two dicts with the same keys when every value matches. Anything else is wrong.
"""

from __future__ import annotations

import ast
from typing import Any

from ..task import Task
from .base import Score
from .dabench import extract_answers, gold_answers

_EMPTY = {"", "[]", "{}", "None", "none", "nan", "NaN", "null", "Null"}


# --- dabench_jupiter -------------------------------------------------------------------------
def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() in _EMPTY
    return isinstance(value, (list, dict)) and len(value) == 0


def _list_items(value: Any) -> list[str]:
    if not isinstance(value, str):
        return [str(value)]
    s = value.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        s = s[1:-1]
    return [x.strip().strip('"').strip("'") for x in s.split(",") if x.strip()]


def jupiter_is_equal(response: Any, label: Any) -> bool:
    if response == label:
        return True
    if _is_empty(response) and _is_empty(label):
        return True
    try:
        return abs(float(response) - float(label)) < 1e-6
    except Exception:
        pass
    items_r, items_l = _list_items(response), _list_items(label)
    if len(items_r) != len(items_l):
        return False
    for r, l in zip(items_r, items_l):
        try:
            if abs(float(r) - float(l)) > 1e-6:
                return False
        except Exception:
            if r != l:
                return False
    return True


class JupiterDABenchScorer:
    name = "dabench_jupiter"

    def score(self, task: Task, response: str | None) -> Score:
        gold = gold_answers(task.answer)
        if not gold:
            return Score.unscored()
        answered = bool(response)
        predicted = extract_answers(response) if answered else {}
        correctness = {k: answered and jupiter_is_equal(predicted.get(k), v) for k, v in gold.items()}
        return _score(gold, predicted, correctness, answered)


# --- dabench_lenient -------------------------------------------------------------------------
def _literal(value: str) -> Any:
    try:
        return ast.literal_eval(value)
    except Exception:
        return value


def parse_items(text: str) -> dict[str, Any]:
    """JUPITER's '@'-split parse (see the module docstring)."""
    out: dict[str, Any] = {}
    for item in (text or "").split("@")[1:]:
        item = item.strip()
        if "[" not in item or "]" not in item:
            continue
        first, last = item.index("["), item.rindex("]")
        key, value = item[:first].strip(), item[first + 1 : last].strip()
        if not key or not value:
            continue
        out[key] = _literal(value)
    return out


def compare_values(a: Any, b: Any) -> bool:
    if a is None and b is None:
        return True
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    try:
        if isinstance(a, int):
            a = float(a)
        if isinstance(b, int):
            b = float(b)
        if isinstance(a, float) and isinstance(b, float):
            return abs(a - b) < 1e-3 or abs(a - b) / (abs(a) + abs(b) + 1e-6) < 0.001
    except Exception:
        return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        unmatched = list(b)
        for x in a:
            for i, y in enumerate(unmatched):
                if compare_values(x, y):
                    unmatched.pop(i)
                    break
            else:
                return False
        return True
    if isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b):
        return all(compare_values(a[k], b[k]) for k in a)
    return False


class LenientDABenchScorer:
    name = "dabench_lenient"

    def score(self, task: Task, response: str | None) -> Score:
        if isinstance(task.answer, str):
            gold = parse_items(task.answer)
        else:
            gold = {}
            for k, v in gold_answers(task.answer).items():
                k, v = str(k).strip(), str(v).strip()
                if k and v:
                    gold[k] = _literal(v)
        if not gold:
            return Score.unscored()
        answered = bool(response)
        predicted = parse_items(response) if answered else {}
        correctness = {k: k in predicted and compare_values(predicted[k], v) for k, v in gold.items()}
        return _score(gold, predicted, correctness, answered)


def _score(gold: dict[str, Any], predicted: dict[str, Any], correctness: dict[str, bool], answered: bool) -> Score:
    n_right = sum(correctness.values())
    return Score(
        correct=all(correctness.values()),
        fraction=n_right / len(gold),
        n_sub=len(gold),
        n_right=n_right,
        answered=answered,
        details={"expected": {k: repr(v) if not isinstance(v, str) else v for k, v in gold.items()},
                 "predicted": {k: repr(v) if not isinstance(v, str) else v for k, v in predicted.items()},
                 "correctness": correctness},
    )
