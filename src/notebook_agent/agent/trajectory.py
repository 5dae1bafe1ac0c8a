"""What an agent run leaves behind: a `Trajectory` that round-trips through JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ..kernel.base import ExecutionResult

# Why a run ended. "answered" is the only success; every limit has its own status. This is the
# one list: search, eval and the web page extend it explicitly (search.tree.NodeReason,
# eval.results.RecordStatus, ui.runs.UIRunStatus) rather than adding strings of their own.
RunStatus = Literal[
    "answered",
    "max_turns",
    "max_errors",
    "max_tokens",
    "timeout",
    "no_tool_call",
    "model_error",
    "kernel_error",
    "cancelled",
]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)


@dataclass
class Step:
    """One executed cell: the model's comment, the code, and what the kernel returned."""

    comment: str
    result: ExecutionResult
    turn: int

    def to_dict(self) -> dict[str, Any]:
        return {"comment": self.comment, "turn": self.turn, "result": self.result.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Step":
        return cls(comment=d["comment"], turn=d["turn"], result=ExecutionResult.from_dict(d["result"]))


@dataclass
class Trajectory:
    """A whole run.

    `messages` are the canonical OpenAI-format conversation (system, user, assistant with
    `tool_calls`, `tool` results): the shape SFT data uses. `steps` are the cells with their
    full nbformat outputs (images included), which the notebook is rendered from.
    """

    question: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    status: RunStatus = "answered"
    status_detail: str = ""
    task_id: str = ""
    files: list[str] = field(default_factory=list)
    model: str = ""
    settings: dict[str, Any] = field(default_factory=dict)     # the AgentConfig (settings only)
    counters: dict[str, int] = field(default_factory=dict)     # agent.state.Counters of the run
    search: dict[str, Any] = field(default_factory=dict)       # search settings and statistics, if any
    isolation: dict[str, Any] = field(default_factory=dict)    # how the kernel was confined (session.isolation)
    constraint: dict[str, int] = field(default_factory=dict)   # replies per constraint mode ("gbnf", "none", ...)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    turns: int = 0
    wall_s: float = 0.0
    model_s: float = 0.0
    kernel_s: float = 0.0

    @property
    def answered(self) -> bool:
        return self.status == "answered" and self.answer is not None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps"] = [s.to_dict() for s in self.steps]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trajectory":
        d = dict(d)
        d["steps"] = [Step.from_dict(s) for s in d.get("steps", [])]
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Trajectory":
        return cls.from_dict(json.loads(Path(path).read_text()))
