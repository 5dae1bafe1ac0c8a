"""Stand-ins for the runner's bookkeeping tests: a scripted agent and a session that only
records its lifecycle. Features that need a real kernel or model are tested with real ones."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from notebook_agent.agent.trajectory import Trajectory
from notebook_agent.kernel.base import ExecutionResult, KernelSession
from notebook_agent.tasks.task import Task


class FakeSession(KernelSession):
    """Records start/close in `log` (a list, or a file path for subprocess tests)."""

    def __init__(self, task: Task, log: list[str] | Path):
        self.task, self.log, self.started, self.closed = task, log, False, False
        self.cwd = Path(".")

    def _note(self, what: str) -> None:
        if isinstance(self.log, list):
            self.log.append(f"{what}:{self.task.id}")
        else:
            with open(self.log, "a") as f:
                f.write(f"{what}:{self.task.id}\n")

    async def start(self) -> None:
        self.started = True
        self._note("start")

    async def execute(self, code: str, timeout: float | None = None) -> ExecutionResult:
        return ExecutionResult(code=code, text="")

    async def fork(self) -> "KernelSession":
        raise NotImplementedError

    async def restart(self) -> None:
        pass

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._note("close")

    @property
    def is_alive(self) -> bool:
        return self.started and not self.closed


def fake_factory(log: list[str] | Path) -> Callable[[Task], KernelSession]:
    return lambda task: FakeSession(task, log)


def scripted_agent(answers: dict[str, str], calls: list[str] | None = None,
                   hold: dict[str, Awaitable[Any] | Callable[[], Awaitable[Any]]] | None = None,
                   fail: set[str] = frozenset()) -> Callable[..., Awaitable[Trajectory]]:
    """An agent_fn that answers from `answers` (after awaiting `hold[id]()` if given)."""

    async def agent_fn(task: Task, model: Any, session: KernelSession, config: Any, on_event: Any = None) -> Trajectory:
        if calls is not None:
            calls.append(task.id)
        if hold and task.id in hold:
            await hold[task.id]()  # type: ignore[operator]
        if task.id in fail:
            raise RuntimeError(f"agent blew up on {task.id}")
        return Trajectory(question=task.question, task_id=task.id, answer=answers.get(task.id),
                          status="answered" if task.id in answers else "max_turns",
                          prompt_tokens=100, completion_tokens=20, turns=2, model_s=0.5, kernel_s=0.1)

    return agent_fn


def make_tasks(n: int, files: list[Path] | None = None) -> list[Task]:
    return [Task(id=str(i), question=f"question {i}?", files=list(files or []), answer=[["v", str(i)]],
                 level=["easy", "medium", "hard"][i % 3], concepts=["Summary Statistics"] if i % 2 else ["Other"],
                 format="@v[value]") for i in range(n)]


def read_results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines() if l.strip()]


async def wait_for_lines(path: Path, n: int, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if path.exists() and sum(1 for l in path.read_text().splitlines() if l.strip()) >= n:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{path} did not reach {n} lines")
