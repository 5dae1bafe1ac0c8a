"""The runtime's contract: what a kernel session is and what executing a cell returns.

Every backend (a local ipykernel through jupyter_client, our forking kernel, a remote
Jupyter Server) implements `KernelSession`. The agent, search and evaluation only see this.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ExecStatus = Literal["ok", "error", "timeout", "dead"]
# How strictly a kernel is confined: "auto" isolates where the OS allows it and warns once
# where it cannot; "require" refuses to start without isolation; "off" never isolates.
SandboxMode = Literal["auto", "require", "off"]
SANDBOX_MODES: tuple[SandboxMode, ...] = ("auto", "require", "off")


class KernelError(RuntimeError):
    """The session cannot do what was asked (not started, closed, failed to start)."""


class KernelDiedError(KernelError):
    """The kernel process is gone. `restart()` gives a fresh one (state is lost)."""


@dataclass
class Limits:
    """Resource limits applied to the kernel process (and its children).

    None means "no limit". Defaults are meant for one agent working on one small task.
    """

    memory_mb: int | None = 4096          # per process (RLIMIT_AS: MemoryError) and, where a cgroup
                                           # or the watchdog can, for the whole process tree
    max_processes: int | None = 256        # processes (and threads) of the whole tree: fork bombs
    max_file_mb: int | None = 1024         # largest file the kernel may write
    cpu_threads: int = 1                   # BLAS / OpenMP / numexpr threads
    max_output_mb: float = 64.0            # outputs kept per cell; the rest is dropped with a note
    network: bool = False                  # only enforced where the sandbox (bubblewrap) allows
    max_workdir_mb: int | None = 4096      # total size of the working directory (watchdog)
    tmp_mb: int = 512                      # the sandbox's private /tmp and /dev/shm (host RAM), each
    interrupt_grace_s: float = 3.0         # after a timeout: wait this long for the interrupt, then kill


@dataclass
class TextViewConfig:
    """How a cell's outputs are shown to a model: head and tail kept, middle elided."""

    max_chars: int = 4000
    head_fraction: float = 0.5


@dataclass
class ExecutionResult:
    """What one cell produced.

    `outputs` are nbformat v4 output dicts (stream / execute_result / display_data / error),
    exactly what goes into the notebook. `text` is the model-facing view of those outputs.
    """

    code: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    status: ExecStatus = "ok"
    execution_count: int | None = None
    duration_s: float = 0.0
    text: str = ""
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def error(self) -> dict[str, Any] | None:
        """The nbformat `error` output, if the cell raised."""
        for out in self.outputs:
            if out.get("output_type") == "error":
                return out
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "outputs": self.outputs,
            "status": self.status,
            "execution_count": self.execution_count,
            "duration_s": self.duration_s,
            "text": self.text,
            "truncated": self.truncated,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExecutionResult":
        return cls(**d)


class KernelSession(abc.ABC):
    """One live kernel working for one agent on one task, in its own working directory.

    Lifecycle is explicit: `await start()`, any number of `execute()`, `await close()`.
    It is also an async context manager.
    """

    cwd: Path

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def execute(self, code: str, timeout: float | None = None) -> ExecutionResult:
        """Run one cell. Never raises for user-code errors, timeouts or a dead kernel:
        those come back as `status` ("error", "timeout", "dead") with a clear message in the
        outputs. Raises `KernelError` only when the session itself is unusable (closed)."""

    @abc.abstractmethod
    async def fork(self) -> "KernelSession":
        """An independent, started session with the same variables and files."""

    @abc.abstractmethod
    async def restart(self) -> None:
        """A fresh kernel in the same working directory (variables are lost)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the kernel; no process is left behind. Idempotent."""

    @property
    @abc.abstractmethod
    def is_alive(self) -> bool: ...

    @property
    def isolation(self) -> dict[str, Any]:
        """How this session's kernel is confined, JSON-safe, for run records: always has
        "isolated" (bool) and "mode" (the `SandboxMode` asked for). Backends add detail."""
        return {"isolated": False, "mode": "off"}

    async def __aenter__(self) -> "KernelSession":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
