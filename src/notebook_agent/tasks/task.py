"""The `Task` record: one question about some data files, with its expected answer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Task:
    """A data question.

    `files` are paths on this machine that the kernel's working directory will hold (by
    their base name). `answer` is the gold answer in the benchmark's own form (for
    InfiAgent-DABench a list of [name, value] pairs; for DABStep a string), or None.
    """

    id: str
    question: str
    files: list[Path] = field(default_factory=list)
    constraints: str = ""
    format: str = ""
    answer: Any = None
    level: str = ""
    concepts: list[str] = field(default_factory=list)
    guidelines: str = ""
    benchmark: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = [str(p) for p in self.files]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Task":
        d = dict(d)
        d["files"] = [Path(p) for p in d.get("files", [])]
        return cls(**d)
