"""The state of one agent run, public, so that the loop and a tree search drive the same thing.

`AgentState` holds everything a run has accumulated: the trajectory (conversation, cells,
tokens), typed `Counters`, the consecutive-error and nudge streaks, the best-effort answer,
and the wall-clock deadline. `copy(session)` gives an independent state for a search branch:
every field is deep-copied except those marked shared (the task, the model, the config, the
event handler and the stop signal), so a mutable field added later is never silently shared
between branches.
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..kernel.base import KernelSession
from ..models.base import ChatModel
from ..tasks.task import Task
from .config import AgentConfig, AgentEvent, EventHandler
from .prompts import SYSTEM_REACT, SYSTEM_TOOLS, first_message
from .tools import TOOLS
from .trajectory import RunStatus, Trajectory

SHARED = {"shared": True}  # field metadata: the same object in every copy of a state


@dataclass
class Counters:
    """What happened during a run, counted (recorded as `Trajectory.counters`)."""

    parse_errors: int = 0            # replies that could not be decoded
    nudges: int = 0                  # replies with no tool call
    recovered_code_blocks: int = 0   # python blocks written as text, run as execute_code
    recovered_text_answers: int = 0  # answers written as text, taken as final
    rejected_answers: int = 0        # final answers refused (no code ran, next to code, format, placeholder)
    kernel_restarts: int = 0
    cell_errors: int = 0
    refused_repeats: int = 0         # cells identical to the one just run, not run again (refuse_repeats)
    forced_code: int = 0             # replies constrained to execute_code after a refusal (code_after_refusal)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class StepOutcome:
    """What one step did to the run: `status` is set when the run ends with it."""

    status: RunStatus | None = None
    detail: str = ""

    @property
    def ended(self) -> bool:
        return self.status is not None


CONTINUE = StepOutcome()


@dataclass
class AgentState:
    task: Task = field(metadata=SHARED)
    model: ChatModel = field(metadata=SHARED)
    session: KernelSession = field(metadata=SHARED)   # replaced (not copied) by `copy(session)`
    config: AgentConfig = field(metadata=SHARED)
    traj: Trajectory
    deadline: float                   # time.monotonic() after which the run stops
    counters: Counters = field(default_factory=Counters)
    consecutive_errors: int = 0       # failing cells / unusable replies in a row
    nudges: int = 0                   # replies without a tool call in a row
    format_reminded: bool = False     # the answer format was recalled once already
    successful_cells: int = 0
    code_next: bool = False           # the next reply must call execute_code (code_after_refusal)
    best_effort: str | None = None    # the latest answer-like text written after code ran successfully,
                                      # scored for a run without an answer (a guess never is)
    on_event: EventHandler | None = field(default=None, metadata=SHARED)
    stop: asyncio.Event | None = field(default=None, metadata=SHARED)

    def emit(self, kind: str, turn: int, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(AgentEvent(kind, turn, data))

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def copy(self, session: KernelSession) -> AgentState:
        """An independent copy working in `session` (a fork of this state's kernel)."""
        values = {f.name: getattr(self, f.name) if f.metadata.get("shared") else copy.deepcopy(getattr(self, f.name))
                  for f in fields(self)}
        values["session"] = session
        return AgentState(**values)

    def finish(self, outcome: StepOutcome) -> None:
        """Record how the run ended (a run without an answer keeps its best-effort one)."""
        assert outcome.status is not None
        self.traj.status = outcome.status
        self.traj.status_detail = outcome.detail
        if outcome.status != "answered" and self.traj.answer is None:
            self.traj.answer = self.best_effort
        self.traj.counters = self.counters.to_dict()


def initial_state(task: Task, model: ChatModel, session: KernelSession, config: AgentConfig | None = None,
                  on_event: EventHandler | None = None, stop: asyncio.Event | None = None) -> AgentState:
    """The state before the first step: system prompt and the task's first message, in a
    started `session` (its isolation is recorded in the trajectory)."""
    config = config or AgentConfig()
    system = SYSTEM_REACT if config.scaffold == "react" else SYSTEM_TOOLS
    traj = Trajectory(
        question=task.question,
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": first_message(task, config.file_preview)},
        ],
        tools=TOOLS,
        task_id=task.id,
        files=[p.name for p in task.files],
        model=getattr(model, "name", type(model).__name__),
        settings=asdict(config),
        isolation=dict(getattr(session, "isolation", None) or {}),
    )
    return AgentState(task=task, model=model, session=session, config=config, traj=traj,
                      deadline=time.monotonic() + config.max_wall_s, on_event=on_event, stop=stop)
