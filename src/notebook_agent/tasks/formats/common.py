"""What every loader shares: its result type, and reading JSONL without losing good lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..task import Task


class BenchmarkError(ValueError):
    """The benchmark as a whole cannot be read (no such path, no questions file...)."""


@dataclass
class LoadIssue:
    """A record that was skipped, with its id (or `line N` when it has none) and why."""

    id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.id}: {self.reason}"


@dataclass
class LoadResult:
    tasks: list[Task] = field(default_factory=list)
    errors: list[LoadIssue] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tasks)


@dataclass
class JsonLine:
    line_no: int
    record: dict[str, Any] | None = None
    error: str = ""


def read_jsonl(path: Path) -> Iterator[JsonLine]:
    """Each non-blank line as a dict, or the reason it is not one (the rest still load)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BenchmarkError(f"{path} is not UTF-8 text: {e}") from e
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield JsonLine(i, error=f"bad JSON on line {i} of {path.name}: {e.msg}")
            continue
        if not isinstance(obj, dict):
            yield JsonLine(i, error=f"line {i} of {path.name} is a JSON {type(obj).__name__}, not an object")
            continue
        yield JsonLine(i, record=obj)


def record_id(record: dict[str, Any], line_no: int, *keys: str) -> str:
    for key in keys:
        value = record.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return f"line {line_no}"


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


def pick_file(path: Path, names: list[str], what: str) -> Path:
    """`path` itself if it is a file, else the first of `names` inside it."""
    if not path.exists():
        raise BenchmarkError(f"{path} does not exist")
    if path.is_file():
        return path
    for name in names:
        if (path / name).is_file():
            return path / name
    raise BenchmarkError(f"no {what} in {path}: expected one of {', '.join(names)}")


def pick_dir(base: Path, names: list[str]) -> Path | None:
    for name in names:
        if (base / name).is_dir():
            return base / name
    return None


def resolve_file(name: str, base: Path | None) -> Path:
    p = Path(name).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return p
