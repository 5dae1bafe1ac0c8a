"""A kernel session played by a language model: it reads each cell and writes what it would print.

Why: many real notebooks are shipped without their data files, so they cannot run. Rather than
drop them, the data pipeline can let a model play the Python kernel, grounded in the source
notebook's own cells and real outputs (the `context`), so those notebooks still yield agent
traces. The Jupyter Agent dataset does the same and marks such traces (`executor_type: "llm"`).
Limits: the outputs are the model's guesses, not computation; numbers can be wrong or made up,
and nothing runs (no files, no variables: the "state" is the history of cells and outputs shown
to the model). Keep such traces apart, or drop them, by filtering on `executor_type`.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from ..models.base import ChatModel, SamplingParams
from ..kernel.base import ExecutionResult, KernelError, KernelSession, TextViewConfig
from ..kernel.outputs import error_output
from ..kernel.textview import text_view

SYSTEM = (
    "You are a Python 3 Jupyter kernel. The user sends one code cell; you reply with exactly what "
    "running it would show: printed text and the repr of the cell's last expression, nothing else. "
    "No explanations, no markdown, no code fences. If the cell would raise, reply with the Python "
    "traceback, ending with a line such as `NameError: name 'x' is not defined`. If it shows nothing, reply with an "
    "empty message. Keep every value consistent with the reference notebook and the cells already run."
)

TRACEBACK_HEADER = re.compile(r"Traceback \(most recent call last\)")
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")
ERROR_NAME = re.compile(r"(Error|Exception|Warning|Interrupt|Exit|StopIteration)$")
FENCE = re.compile(r"^\s*```[\w+-]*[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)
OUT_LABEL = re.compile(r"^\s*\[?(?:Out|Output)(?:\s*\[?\d*\]?)?\]?\s*:?\s*\n", re.IGNORECASE)


def clip_middle(text: str, limit: int, what: str = "characters") -> str:
    """`text` within `limit` characters, keeping head and tail around a marker."""
    if limit <= 0 or len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} {what} cut ...]\n{text[len(text) - half:]}"


def parse_reply(code: str, reply: str, execution_count: int, view: TextViewConfig,
                truncated: bool = False) -> ExecutionResult:
    """The ExecutionResult for the model's reply: a stdout stream, plus an error output when the
    reply looks like a Python traceback (header, or a last line like `NameError: ...`)."""
    text = reply.strip("\n")
    fenced = FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    text = OUT_LABEL.sub("", text, count=1)
    lines = text.rstrip().splitlines()
    last = lines[-1].strip() if lines else ""
    m = EXCEPTION_LINE.match(last)
    if m is not None and m.group(2) is None and not ERROR_NAME.search(m.group(1)):
        m = None  # a bare word is not an exception line
    header = TRACEBACK_HEADER.search(text)
    is_error = header is not None or (m is not None and m.group(2) is not None and bool(ERROR_NAME.search(m.group(1))))
    outputs: list[dict[str, Any]] = []
    if is_error:
        if header is not None:  # the traceback starts on the header's line (or IPython's dashes above it)
            start = text.rfind("\n", 0, header.start()) + 1
            above = text.rfind("\n", 0, max(start - 1, 0)) + 1
            if start and set(text[above:start].strip()) == {"-"}:
                start = above
        else:
            start = text.rstrip().rfind("\n") + 1
        printed = text[:start]
        if printed.strip():
            outputs.append({"output_type": "stream", "name": "stdout", "text": printed})
        ename, evalue = (m.group(1).rsplit(".", 1)[-1], m.group(2) or "") if m else ("Error", last)
        tb = text[start:].rstrip().splitlines()
        if m is not None:
            tb[-1] = f"{ename}: {evalue}" if evalue else ename
        outputs.append(error_output(ename, evalue, tb))
    elif text.strip():
        outputs.append({"output_type": "stream", "name": "stdout", "text": text if text.endswith("\n") else text + "\n"})
    return ExecutionResult(code=code, outputs=outputs, status="error" if is_error else "ok",
                           execution_count=execution_count, text=text_view(outputs, view), truncated=truncated)


class LLMInterpreterSession(KernelSession):
    """A `KernelSession` whose cells are "run" by `model` (temperature 0), see the module docstring.

    context: the source notebook as text (cells and their real outputs), shown in every prompt,
        cut to `max_context_chars`.
    max_tokens: the longest reply (a cell's output).
    max_history_chars: the cells already run (with their outputs) shown in the prompt; the oldest
        are left out first. The prompt is also fitted to the model's context window.
    timeout_s: a limit on one model call (None = none). The `timeout` given to `execute` is a
        limit for running code and is not applied to the model.

    History is the state: `fork()` copies it (no model call), `restart()` clears it. A failing
    model call comes back as an error result (ename "InterpreterError"), never as an exception.
    """

    def __init__(self, model: ChatModel, context: str, *, max_tokens: int = 512, max_context_chars: int = 8000,
                 max_history_chars: int = 6000, max_output_chars: int = 2000, timeout_s: float | None = None,
                 text_view: TextViewConfig | None = None, cwd: Path | None = None) -> None:
        self.model = model
        self.context = context
        self.max_tokens = max_tokens
        self.max_context_chars = max_context_chars
        self.max_history_chars = max_history_chars
        self.max_output_chars = max_output_chars
        self.timeout_s = timeout_s
        self.text_view = text_view or TextViewConfig()
        self.cwd = cwd or Path(".")  # nothing is written there: no code runs
        self.history: list[tuple[str, str]] = []  # (code, the output the model gave), in order
        self.execution_count = 0
        self.model_calls = 0
        self._started = False
        self._closed = False
        self._lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._closed:
            raise KernelError("session is closed")
        self._started = True

    async def restart(self) -> None:
        if self._closed:
            raise KernelError("session is closed")
        self.history.clear()
        self.execution_count = 0

    async def close(self) -> None:
        self._closed = True

    @property
    def isolation(self) -> dict[str, Any]:
        """Nothing runs: a model writes the outputs (no kernel to confine)."""
        return {"isolated": False, "mode": "off", "backend": "llm"}

    @property
    def is_alive(self) -> bool:
        return self._started and not self._closed

    async def fork(self) -> LLMInterpreterSession:
        if self._closed or not self._started:
            raise KernelError("cannot fork a session that is not running")
        child = LLMInterpreterSession(self.model, self.context, max_tokens=self.max_tokens,
                                      max_context_chars=self.max_context_chars,
                                      max_history_chars=self.max_history_chars,
                                      max_output_chars=self.max_output_chars, timeout_s=self.timeout_s,
                                      text_view=self.text_view, cwd=self.cwd)
        child.history = list(self.history)
        child.execution_count = self.execution_count
        await child.start()
        return child

    # -- the prompt ----------------------------------------------------------------------------
    def _history_blocks(self) -> list[str]:
        blocks = []
        for i, (code, out) in enumerate(self.history, 1):
            shown = clip_middle(out, self.max_output_chars) if out.strip() else "(no output)"
            blocks.append(f"[In {i}]\n{code.strip()}\n[Out {i}]\n{shown.rstrip()}")
        return blocks

    def _keep_within_chars(self, blocks: list[str]) -> int:
        """How many of the newest history blocks fit in `max_history_chars`."""
        keep, used = 0, 0
        for b in reversed(blocks):
            used += len(b) + 2
            if used > self.max_history_chars:
                break
            keep += 1
        return keep

    def prompt(self, code: str, keep_history: int | None = None,
               context_chars: int | None = None) -> list[dict[str, str]]:
        """The messages for running `code`: context, the newest cells that fit, the new cell."""
        blocks = self._history_blocks()
        keep = self._keep_within_chars(blocks) if keep_history is None else min(keep_history, len(blocks))
        shown = blocks[len(blocks) - keep:] if keep else []
        limit = self.max_context_chars if context_chars is None else context_chars
        context = clip_middle(self.context.strip(), limit)
        parts = ["Reference notebook (the real notebook on the same data, with its real outputs):\n"
                 + (context or "(none)")]
        if blocks:
            note = f"[{len(blocks) - keep} earlier cells not shown]\n\n" if keep < len(blocks) else ""
            parts.append("Cells already run in this session, with their outputs:\n" + note + "\n\n".join(shown))
        else:
            parts.append("No cells have run in this session yet.")
        n = len(self.history) + 1
        parts.append(f"Run this cell and reply with its output only:\n[In {n}]\n{code.strip()}\n[Out {n}]")
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]

    def _fitted_prompt(self, code: str) -> list[dict[str, str]]:
        """`prompt(code)` shortened to fit the model's window: the oldest cells go first (the newest
        one stays), then the context is halved down to a floor, then the last cell goes."""
        budget = self.model.context_window - self.max_tokens - 64  # room for the chat template
        keep = self._keep_within_chars(self._history_blocks())
        context_chars = self.max_context_chars
        while True:
            msgs = self.prompt(code, keep_history=keep, context_chars=context_chars)
            if sum(self.model.count_tokens(m["content"]) for m in msgs) <= budget:
                return msgs
            if keep > 1:
                keep -= 1
            elif context_chars > 200:
                context_chars //= 2
            elif keep:
                keep = 0
            else:
                return msgs  # the cell alone is too long: the backend says so, as an error result

    # -- execution -----------------------------------------------------------------------------
    async def execute(self, code: str, timeout: float | None = None) -> ExecutionResult:
        if self._closed or not self._started:
            raise KernelError("session is closed" if self._closed else "session not started: await start() first")
        async with self._lock:
            t0 = time.monotonic()
            self.execution_count += 1
            try:
                msgs = self._fitted_prompt(code)
                params = SamplingParams(temperature=0.0, max_tokens=self.max_tokens)
                self.model_calls += 1
                call = self.model.complete(msgs, None, params)
                completions = await (asyncio.wait_for(call, self.timeout_s) if self.timeout_s else call)
                reply = completions[0].raw_text or completions[0].content or ""
                cut = completions[0].finish_reason == "length"
            except Exception as e:  # noqa: BLE001 - a failing model is a failing cell, not a crash
                outs = [error_output("InterpreterError", f"the LLM interpreter could not run this cell: "
                                                         f"{type(e).__name__}: {e}")]
                return ExecutionResult(code=code, outputs=outs, status="error", execution_count=self.execution_count,
                                       duration_s=time.monotonic() - t0, text=text_view(outs, self.text_view))
            result = parse_reply(code, reply, self.execution_count, self.text_view, truncated=cut)
            result.duration_s = time.monotonic() - t0
            self.history.append((code, text_view(result.outputs, TextViewConfig(max_chars=10**9))))
            return result
