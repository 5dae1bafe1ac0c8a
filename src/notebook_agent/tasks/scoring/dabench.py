"""InfiAgent-DABench's official closed-form scoring, rule for rule.

Followed: `examples/DA-Agent/eval_closed_form.py` of github.com/InfiAgent/InfiAgent (the
script the benchmark README tells people to run; `examples/ADA-Agent/` holds the same rules):

- `extract_format`: `re.findall(r"@(\\w+)\\[(.*?)\\]", response)`, then
  `dict(zip(names, answers))`, so a name given twice keeps its LAST value. `.*?` is lazy and
  `.` does not cross newlines: `@a[[1, 2]]` yields `[1, 2` and `@a[x\\ny]` yields nothing.
- `is_equal(response, label)`: `response == label`, else `abs(float(response) - float(label))
  < 1e-6` (strictly less), and any exception (no answer, not a number) means wrong. The
  strings are NOT stripped: `" yes"` is not `"yes"`; numbers tolerate spaces only because
  `float()` does.
- A question is right (ABQ) when every gold sub-answer is; PSAQ averages the per-question
  fraction; UASQ pools the sub-answers. A label given twice in the gold list keeps its last
  value (the official code builds a dict of the labels too).
- A response that is missing or empty is all wrong here. The official script instead leaves
  such questions out of every denominator; `summarize(..., missing="skip")` reproduces that.
"""

from __future__ import annotations

import re
from typing import Any

from ..task import Task
from .base import Score

ANSWER_PATTERN = re.compile(r"@(\w+)\[(.*?)\]")
TOLERANCE = 1e-6


def extract_answers(text: str) -> dict[str, str]:
    """`{name: value}` of the `@name[value]` items in `text` (last occurrence wins)."""
    return dict(ANSWER_PATTERN.findall(text or ""))


def is_equal(response: Any, label: Any) -> bool:
    """The official sub-answer comparison: equal, or both floats within 1e-6."""
    if response == label:
        return True
    try:
        return abs(float(response) - float(label)) < TOLERANCE
    except Exception:  # the official code uses a bare except: None, text, overflow all mean wrong
        return False


def gold_answers(answer: Any) -> dict[str, Any]:
    """The gold `{name: value}` from a task's answer: a list of [name, value] pairs (the
    labels file's `common_answers`), a dict, or an `@name[value]` string."""
    if answer is None:
        return {}
    if isinstance(answer, str):
        return extract_answers(answer)
    if isinstance(answer, dict):
        return dict(answer)
    return {pair[0]: pair[1] for pair in answer}


def score_response(gold: dict[str, Any], response: str | None) -> Score:
    if not gold:
        return Score.unscored()
    if not response:
        correctness = {name: False for name in gold}
        predicted: dict[str, str] = {}
        answered = False
    else:
        predicted = extract_answers(response)
        correctness = {name: is_equal(predicted.get(name), value) for name, value in gold.items()}
        answered = True
    n_right = sum(correctness.values())
    return Score(
        correct=all(correctness.values()),
        fraction=n_right / len(gold),
        n_sub=len(gold),
        n_right=n_right,
        answered=answered,
        details={"expected": gold, "predicted": predicted, "correctness": correctness},
    )


class DABenchScorer:
    """Official InfiAgent-DABench rules (also the default for NbQA, which uses the same format)."""

    name = "dabench"

    def score(self, task: Task, response: str | None) -> Score:
        return score_response(gold_answers(task.answer), response)
