"""The agent's settings, in one place: how it works (`AgentConfig`) and where its cells run
(`SessionConfig`). Every CLI builds these from its options; an option left unset (None) keeps
the default written here, so no default is repeated in a command."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

from ..kernel.base import SANDBOX_MODES, Limits, SandboxMode

Scaffold = Literal["tools", "react"]
SCAFFOLDS: tuple[Scaffold, ...] = ("tools", "react")
KERNEL_BACKENDS = ("local", "forking", "remote")


@dataclass
class AgentConfig:
    """Scaffold and limits of one run. Every field is recorded in the trajectory."""

    scaffold: Scaffold = "tools"
    max_turns: int = 12
    max_consecutive_errors: int = 3     # failing cells / unusable replies in a row
    max_nudges: int = 3                 # replies with no tool call in a row
    max_context_tokens: int = 8192      # prompt + reply; older observations are shortened to fit
    max_total_tokens: int | None = None  # across the whole run
    max_wall_s: float = 900.0
    cell_timeout_s: float = 60.0
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens_per_turn: int = 1024
    seed: int | None = None
    constrain: bool = True              # replies constrained to the scaffold's protocol where the
                                        # backend can (llama.cpp grammar, a server's tool_choice or
                                        # grammar field, llguidance); see docs/models.md
    file_preview: bool = True           # columns and a few rows of each table in the first message
    require_execution: bool = True      # refuse a final answer before any cell ran successfully
    check_format: bool = True           # remind once when the answer misses the `@name[value]` format
    recover_code_blocks: bool = True    # a python block written as plain text runs as execute_code
    recover_text_answers: bool = True   # after a successful cell, an answer written as text (in the
                                        # task's @name[value] format, or after "Final answer:") is final
    refuse_repeats: bool = False        # a cell identical to the one just run is not run again: the
                                        # model is told to use its output (small models loop on it)
    code_after_refusal: bool = False    # after an answer refused for want of computed values (no cell
                                        # ran yet, the format's placeholders copied), the next reply must
                                        # call execute_code (constrained decoding: small models resend
                                        # the refused answer until the turns run out)

    def __post_init__(self) -> None:
        if self.scaffold not in SCAFFOLDS:
            raise ValueError(f"unknown scaffold {self.scaffold!r}: use tools or react")


@dataclass
class SessionConfig:
    """Where a task's cells run: the kernel backend, how strictly it is confined, its limits.

    `sandbox`: "auto" isolates where the OS allows it, "require" refuses to run without
    isolation, "off" never isolates (see docs/kernel.md). `limits` None: the backend's defaults.
    """

    backend: str = "local"
    sandbox: SandboxMode = "auto"
    limits: Limits | None = None
    options: dict[str, Any] = field(default_factory=dict)  # more backend arguments (remote: base_url, token)

    def __post_init__(self) -> None:
        if self.backend not in KERNEL_BACKENDS:
            raise ValueError(f"unknown kernel backend {self.backend!r}: use {', '.join(KERNEL_BACKENDS)}")
        if self.sandbox not in SANDBOX_MODES:
            raise ValueError(f"unknown sandbox mode {self.sandbox!r}: use {', '.join(SANDBOX_MODES)}")


@dataclass
class AgentEvent:
    """What the loop reports while it works (for the terminal, the web page, logs).

    kinds: "turn" (a model call starts), "assistant" (its narration), "cell" (code about to
    run), "result" (a cell's ExecutionResult), "notice" (something the model is told: a parse
    error, a rejected answer, a restart), "answer", "end" (the final status).
    """

    kind: str
    turn: int
    data: dict[str, Any] = field(default_factory=dict)


EventHandler = Callable[[AgentEvent], None]

C = TypeVar("C")


def from_options(cls: Callable[..., C], **options: Any) -> C:
    """`cls(**options)` without the options left unset (None): those keep the config's default.
    A CLI passes every option it has; a default lives only in the dataclass."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(options) - names
    if unknown:
        raise TypeError(f"{getattr(cls, '__name__', cls)} has no field(s) {sorted(unknown)}")
    return cls(**{k: v for k, v in options.items() if v is not None})
