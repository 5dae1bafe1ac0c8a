"""The catalogue of analyses. A template looks at a table's profile, picks columns that suit
it (or declines), and writes a DABench-style task: question, constraints, `@name[value]`
format, and the solution as notebook cells whose last cell prints the answer items.

Answers are never computed here: the generator runs the cells in a real kernel and takes what
the last cell printed. The checks here only keep away questions whose answer would depend on a
choice the task does not state (ties for a maximum, values on a threshold, p-values next to
0.05, rounding to zero).

One extension point: `Template.plan`, called by the generator once per table. The catalogue
is `TEMPLATES` (templates/__init__.py); the templates live by level in easy.py, medium.py, hard.py.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass, field
from typing import Any

from ..profile import Profile

Cell = tuple[str, str]  # (comment, code)

TWO_DP = "a number rounded to two decimal places"


@dataclass
class Plan:
    """A task before it is run: the generator fills in the answer from the kernel."""

    template: str
    level: str
    concepts: list[str]
    question: str
    constraints: str
    format: str
    names: list[str]
    cells: list[Cell]
    params: dict[str, Any] = field(default_factory=dict)


def load_cell(file: str) -> Cell:
    return ("Load the table and look at its size and first rows",
            f"import pandas as pd\n\ndf = pd.read_csv({file!r})\nprint(df.shape)\ndf.head()")


def fmt(items: list[tuple[str, str]]) -> str:
    """`@a[x], @b[y] where x is ..., y is ...`."""
    return ", ".join(f"@{n}[{n}_value]" for n, _ in items) + " where " + "; ".join(
        f"{n}_value is {what}" for n, what in items)


class Template(abc.ABC):
    name: str = ""
    level: str = "easy"
    concepts: tuple[str, ...] | list[str] = ()

    @abc.abstractmethod
    def plan(self, p: Profile, rng: random.Random) -> Plan | None:
        """A task on this table, or None when the template does not apply to it."""

    def make(self, p: Profile, question: str, constraints: str, items: list[tuple[str, str]],
             cells: list[Cell], **params: Any) -> Plan:
        return Plan(self.name, self.level, list(self.concepts), question, constraints, fmt(items),
                    [n for n, _ in items], [load_cell(p.file), *cells], params)


def say(rng: random.Random, *phrasings: str) -> str:
    return rng.choice(phrasings)


def printer(*pairs: tuple[str, str]) -> str:
    """Code printing `@name[value]` items; each value is a Python expression already formatted."""
    return "\n".join(f'print(f"@{n}[{{{expr}}}]")' for n, expr in pairs)


def distinct_after_rounding(values: list[float], dp: int = 2) -> bool:
    """The top two values differ clearly (a maximum that rounding or noise cannot flip)."""
    top = sorted(values, reverse=True)[:2]
    return len(top) < 2 or (round(top[0], dp) != round(top[1], dp) and top[0] - top[1] > 1e-6 * max(1, abs(top[0])))


