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
- Only for InfiAgent-DABench's own tasks (`task.benchmark == "dabench"`). NbQA and JSONL
  tasks, whose answers often are lists (`@a[[1,2],[3,4]]`), have their `@name[value]` items
  read whole (`extract_answers_whole`: the value runs to the `]` that balances its `[`), for
  gold and response alike: with the lazy parse `@a[[1,2],[9,9]]` would match that gold.
- A response that is missing or empty is all wrong here. The official script instead leaves
  such questions out of every denominator; `summarize(..., missing="skip")` reproduces that.
"""

from __future__ import annotations

import re
from typing import Any

from ..task import Task
from .base import Score

ANSWER_PATTERN = re.compile(r"@(\w+)\[(.*?)\]")
ITEM_START = re.compile(r"@(\w+)\[")
TOLERANCE = 1e-6
OFFICIAL_BENCHMARK = "dabench"  # tasks scored with the official lazy parse; others read values whole


def extract_answers(text: str) -> dict[str, str]:
    """`{name: value}` of the `@name[value]` items in `text` (last occurrence wins)."""
    return dict(ANSWER_PATTERN.findall(text or ""))


def extract_answers_whole(text: str) -> dict[str, str]:
    """Like `extract_answers`, but a value runs to the `]` that balances its `[` (on the same
    line, as the official `.` does not cross newlines): `@a[[1,2],[3,4]]` gives `[1,2],[3,4]`.
    An item whose brackets do not balance on its line falls back to the official lazy value."""
    text = text or ""
    out: dict[str, str] = {}
    pos = 0
    while (m := ITEM_START.search(text, pos)) is not None:
        depth, i = 1, m.end()
        while i < len(text) and text[i] != "\n":
            depth += {"[": 1, "]": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        if depth == 0:
            out[m.group(1)] = text[m.end():i]
            pos = i + 1
            continue
        lazy = ANSWER_PATTERN.match(text, m.start())
        if lazy is not None:
            out[m.group(1)] = lazy.group(2)
            pos = lazy.end()
        else:
            pos = m.end()
    return out


def is_equal(response: Any, label: Any) -> bool:
    """The official sub-answer comparison: equal, or both floats within 1e-6."""
    if response == label:
        return True
    try:
        return abs(float(response) - float(label)) < TOLERANCE
    except Exception:  # the official code uses a bare except: None, text, overflow all mean wrong
        return False


def gold_answers(answer: Any, whole: bool = False) -> dict[str, Any]:
    """The gold `{name: value}` from a task's answer: a list of [name, value] pairs (the
    labels file's `common_answers`), a dict, or an `@name[value]` string (read whole when
    `whole`)."""
    if answer is None:
        return {}
    if isinstance(answer, str):
        return extract_answers_whole(answer) if whole else extract_answers(answer)
    if isinstance(answer, dict):
        return dict(answer)
    return {pair[0]: pair[1] for pair in answer}


def score_response(gold: dict[str, Any], response: str | None, whole: bool = False) -> Score:
    if not gold:
        return Score.unscored()
    if not response:
        correctness = {name: False for name in gold}
        predicted: dict[str, str] = {}
        answered = False
    else:
        predicted = extract_answers_whole(response) if whole else extract_answers(response)
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
    """Official InfiAgent-DABench rules (also the default for NbQA and JSONL tasks, which use
    the same format; theirs have values read whole)."""

    name = "dabench"

    def score(self, task: Task, response: str | None) -> Score:
        whole = task.benchmark != OFFICIAL_BENCHMARK
        return score_response(gold_answers(task.answer, whole), response, whole)
