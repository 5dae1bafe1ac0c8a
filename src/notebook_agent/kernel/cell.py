"""Running one cell, the same way on every backend.

A backend supplies a `CellChannel` (send the code, receive that cell's messages, check the
kernel is alive, interrupt, kill); `run_cell` does the rest: collect outputs under the output
cap, enforce the timeout (interrupt, wait `Limits.interrupt_grace_s`, then kill), notice a dead
kernel, and build the `ExecutionResult` with its text view.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

from .base import ExecutionResult, KernelDiedError, Limits, TextViewConfig
from .outputs import OutputCollector, error_output
from .textview import text_view

POLL_S = 0.5  # how often a silent cell checks that its kernel is still alive


class CellChannel(Protocol):
    async def send(self, code: str) -> str:
        """Submit the cell; returns an id for its messages."""

    async def receive(self, cell_id: str, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The cell's next message as (msg_type, content), ("done", {...}) once it finished,
        or None if nothing came within `timeout`. Raises KernelDiedError if the kernel is gone."""

    async def alive(self) -> bool: ...

    async def interrupt(self) -> None: ...

    async def kill(self) -> None: ...

    def exit_description(self) -> str:
        """Why the kernel is gone, for error messages (e.g. 'killed by signal 9')."""


def dead_result(code: str, why: str, text_view_config: TextViewConfig, outputs: list[dict[str, Any]] | None = None,
                duration_s: float = 0.0) -> ExecutionResult:
    outs = list(outputs or [])
    outs.append(error_output("KernelDied", f"The kernel died ({why}). Its variables are lost; "
                                           "call restart() to get a fresh kernel in the same working directory."))
    return ExecutionResult(code=code, outputs=outs, status="dead", duration_s=duration_s,
                           text=text_view(outs, text_view_config))


def _interrupted(outputs: list[dict[str, Any]]) -> bool:
    return any(o.get("output_type") == "error" and o.get("ename") == "KeyboardInterrupt" for o in outputs)


def _replace_interrupt(outputs: list[dict[str, Any]], truncated: bool, ename: str, msg: str) -> list[dict[str, Any]]:
    """`outputs` (from `OutputCollector.finish`) with the kernel's KeyboardInterrupt replaced
    by an error that says why we interrupted.

    The traceback is kept: it shows the model where the cell was stuck. When output was
    `truncated`, the collector's note (always last) stays last, after the error, so that the
    text view (which keeps the tail) shows it however long the traceback.
    """
    outputs = list(outputs)
    note = [outputs.pop()] if truncated else []
    tb: list[str] = []
    kept = []
    for out in outputs:
        if out.get("output_type") == "error" and out.get("ename") == "KeyboardInterrupt":
            tb = [line.replace("KeyboardInterrupt", ename, 1) if "most recent call last" in line else line
                  for line in list(out.get("traceback", []))[:-1]]
        else:
            kept.append(out)
    kept.append(error_output(ename, msg, tb + [f"{ename}: {msg}"]))
    return kept + note


def _why(reason: str, timeout: float | None, limits: Limits, killed: bool) -> tuple[str, str]:
    if reason == "timeout":
        first = f"The cell ran past its {timeout or 0:g} s time limit"
        ename = "TimeoutError"
    else:
        first = (f"The cell kept printing far past the {limits.max_output_mb:g} MB output limit")
        ename = "OutputLimitExceeded"
    if killed:
        return ename, (f"{first} and did not stop within {limits.interrupt_grace_s:g} s of being "
                       "interrupted, so the kernel was killed. Its variables are lost; call restart().")
    return ename, f"{first} and was interrupted."


async def run_cell(channel: CellChannel, code: str, timeout: float | None, limits: Limits,
                   view: TextViewConfig) -> ExecutionResult:
    """Run `code` through `channel` and return its result; never raises for kernel failures."""
    t0 = time.monotonic()
    collector = OutputCollector(int(limits.max_output_mb * 1e6))
    try:
        cell_id = await channel.send(code)
    except KernelDiedError:
        return dead_result(code, channel.exit_description(), view)
    deadline = t0 + timeout if timeout and timeout > 0 else math.inf
    phase = "running"          # -> "interrupted" (waiting for the interrupt to take) -> end
    reason = ""                # why we interrupted: "timeout" or "output"
    exec_count: int | None = None
    while True:
        now = time.monotonic()
        if now >= deadline:
            if phase == "running":
                phase, reason, deadline = "interrupted", "timeout", now + limits.interrupt_grace_s
                await channel.interrupt()
                continue
            await channel.kill()
            outs = _replace_interrupt(collector.finish(), collector.truncated,
                                      *_why(reason, timeout, limits, killed=True))
            return ExecutionResult(code=code, outputs=outs, status="timeout",
                                   execution_count=collector.execution_count,
                                   duration_s=time.monotonic() - t0, text=text_view(outs, view),
                                   truncated=collector.truncated)
        try:
            msg = await channel.receive(cell_id, min(deadline - now, POLL_S))
        except KernelDiedError:
            return dead_result(code, channel.exit_description(), view, collector.finish(), time.monotonic() - t0)
        if msg is None:
            if not await channel.alive():
                return dead_result(code, channel.exit_description(), view, collector.finish(), time.monotonic() - t0)
            continue
        msg_type, content = msg
        if msg_type == "done":
            exec_count = content.get("execution_count", collector.execution_count)
            break
        collector.add_message(msg_type, content)
        if collector.wants_interrupt and phase == "running":
            phase, reason, deadline = "interrupted", "output", time.monotonic() + limits.interrupt_grace_s
            await channel.interrupt()

    outs = collector.finish()
    status = "error" if any(o["output_type"] == "error" for o in outs) else "ok"
    if reason and _interrupted(outs):
        outs = _replace_interrupt(outs, collector.truncated, *_why(reason, timeout, limits, killed=False))
        status = "timeout" if reason == "timeout" else "error"
    return ExecutionResult(code=code, outputs=outs, status=status, execution_count=exec_count,
                           duration_s=time.monotonic() - t0, text=text_view(outs, view),
                           truncated=collector.truncated)
