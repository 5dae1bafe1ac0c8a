"""The agent loop: ask the model for a step, run it in the kernel, show it the output, repeat.

One turn = one model call. The model answers with tool calls (`execute_code`, `final_answer`)
through the model's codec (scaffold "tools") or with ReAct text (scaffold "react", JUPITER's
format, decoded here with the ReAct codec so both scaffolds run on the same model). Nothing
the model writes can crash the loop: unparsable output, missing tool calls and failing cells
all come back to the model as observations, and every limit ends the run with its own status.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..kernel.base import ExecutionResult, KernelError, KernelSession
from ..models.base import ChatModel, Completion, ModelError, SamplingParams, ToolCall
from ..tasks.task import Task
from .context import fit_context
from .prompts import SYSTEM_REACT, SYSTEM_TOOLS, first_message
from .tools import EXECUTE_CODE, FINAL_ANSWER, TOOLS
from .trajectory import Step, Trajectory

ANSWER_ITEM = re.compile(r"@(\w+)\[(.*?)\]")
CODE_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
FINAL_TEXT = re.compile(r"(?:final answer|formatted answer)(?: is)?\s*[:：]\s*(.+)", re.IGNORECASE | re.DOTALL)


@dataclass
class AgentConfig:
    """Scaffold and limits of one run. Every field is recorded in the trajectory."""

    scaffold: Literal["tools", "react"] = "tools"
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
    file_preview: bool = True           # columns and a few rows of each table in the first message
    require_execution: bool = True      # refuse a final answer before any cell ran successfully
    check_format: bool = True           # remind once when the answer misses the `@name[value]` format
    recover_code_blocks: bool = True    # a python block written as plain text runs as execute_code
    recover_text_answers: bool = True   # after a successful cell, an answer written as text (in the
                                        # task's @name[value] format, or after "Final answer:") is final


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


def extract_answer_items(text: str) -> list[tuple[str, str]]:
    return ANSWER_ITEM.findall(text or "")


class _Run:
    """The state of one run; `run_agent` is the public entry point."""

    def __init__(self, task: Task, model: ChatModel, session: KernelSession, config: AgentConfig,
                 on_event: EventHandler | None, stop: asyncio.Event | None):
        self.task, self.model, self.session, self.config = task, model, session, config
        self.on_event = on_event or (lambda e: None)
        self.stop = stop
        self.react = None
        if config.scaffold == "react":
            from ..models.codecs import get_codec

            self.react = get_codec("react")
        system = SYSTEM_REACT if self.react else SYSTEM_TOOLS
        self.traj = Trajectory(
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
        )
        self.counters = {"parse_errors": 0, "nudges": 0, "recovered_code_blocks": 0,
                         "rejected_answers": 0, "kernel_restarts": 0, "cell_errors": 0,
                         "recovered_text_answers": 0}
        self.consecutive_errors = 0
        self.nudges = 0
        self.format_reminded = False
        self.successful_cells = 0
        self.best_effort: str | None = None
        self.deadline = time.monotonic() + config.max_wall_s

    # -- helpers -------------------------------------------------------------------------
    def emit(self, kind: str, turn: int, **data: Any) -> None:
        self.on_event(AgentEvent(kind, turn, data))

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def finish(self, status: str, detail: str = "") -> None:
        self.traj.status = status  # type: ignore[assignment]
        self.traj.status_detail = detail
        if status != "answered" and self.traj.answer is None:
            self.traj.answer = self.best_effort

    def tell(self, turn: int, text: str) -> None:
        """A message from the scaffold to the model (not a tool result)."""
        self.traj.messages.append({"role": "user", "content": text})
        self.emit("notice", turn, text=text)

    def remember_answer_like(self, text: str) -> None:
        if text and extract_answer_items(text):
            self.best_effort = text.strip()

    # -- one model call ------------------------------------------------------------------
    async def sample(self, n: int = 1, logprobs: bool = False) -> list[Completion]:
        """`n` candidate next replies for the conversation so far, decoded into tool calls.

        Render the prompt (fitted to the context), call the model, decode (ReAct text or the
        backend's own tool calls). Nothing is recorded in the trajectory: see `account`.
        """
        cfg = self.config
        budget = min(cfg.max_context_tokens, self.model.context_window) - cfg.max_tokens_per_turn
        view, _ = fit_context(self.traj.messages, self.model.count_tokens, max(budget, 512))
        params = SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p,
                                max_tokens=cfg.max_tokens_per_turn, seed=cfg.seed, logprobs=logprobs)
        if self.react:
            encoded, _ = self.react.encode(view, TOOLS)
            params.stop = list(self.react.stop)
            completions = await self.model.complete(encoded, None, params)
            for completion in completions:
                decoded = self.react.decode(completion.raw_text, TOOLS)
                completion.content = decoded.content
                completion.tool_calls = decoded.tool_calls
                completion.parse_error = decoded.error
            return completions
        return await self.model.complete(view, TOOLS, params)

    def account(self, completion: Completion, model_s: float = 0.0) -> None:
        """Count one reply's tokens and model time in the trajectory."""
        self.traj.model_s += model_s
        self.traj.prompt_tokens += completion.usage.prompt_tokens
        self.traj.completion_tokens += completion.usage.completion_tokens

    async def ask(self) -> Completion:
        t0 = time.monotonic()
        try:
            completion = (await self.sample(1))[0]
        except BaseException:
            self.traj.model_s += time.monotonic() - t0
            raise
        self.account(completion, time.monotonic() - t0)
        return completion

    def clone(self, session: KernelSession) -> "_Run":
        """An independent copy of this state working in `session` (a fork of this one's kernel)."""
        other = copy.copy(self)
        other.session = session
        other.traj = copy.deepcopy(self.traj)
        other.counters = dict(self.counters)
        return other

    # -- handling a reply ----------------------------------------------------------------
    def recover_calls(self, completion: Completion) -> list[ToolCall]:
        """A reply with no tool call but a python block: run the block (small models do this)."""
        if not self.config.recover_code_blocks:
            return []
        text = completion.content or completion.raw_text
        m = CODE_FENCE.search(text)
        if not m or not m.group(1).strip():
            return []
        self.counters["recovered_code_blocks"] += 1
        comment = text[: m.start()].strip() or "Run the code."
        completion.content = comment
        return [ToolCall(EXECUTE_CODE, {"comment": comment, "code": m.group(1)})]

    def recover_answer(self, completion: Completion) -> str | None:
        """A reply with no tool call that states the answer in text (models do this after computing it)."""
        if not self.config.recover_text_answers or self.successful_cells == 0:
            return None
        text = completion.content or completion.raw_text or ""
        items = extract_answer_items(text)
        if items and "@" in (self.task.format or ""):
            answer = " ".join(f"@{name}[{value}]" for name, value in items)
        else:
            m = FINAL_TEXT.search(text)
            answer = m.group(1).strip() if m else ""
        if not answer or CODE_FENCE.search(text):
            return None
        self.counters["recovered_text_answers"] += 1
        return answer

    async def run_cell(self, turn: int, comment: str, code: str) -> str:
        self.emit("cell", turn, comment=comment, code=code)
        timeout = max(1.0, min(self.config.cell_timeout_s, self.remaining()))
        t0 = time.monotonic()
        result: ExecutionResult = await self.session.execute(code, timeout=timeout)
        self.traj.kernel_s += time.monotonic() - t0
        self.traj.steps.append(Step(comment=comment, result=result, turn=turn))
        self.emit("result", turn, result=result)
        observation = result.text or "(no output)"
        if result.ok:
            self.consecutive_errors = 0
            self.successful_cells += 1
            return observation
        self.consecutive_errors += 1
        self.counters["cell_errors"] += 1
        if result.status == "dead":
            try:
                await self.session.restart()
            except Exception as e:  # the caller gets a kernel_error status, not a crash
                raise KernelError(f"the kernel died and could not be restarted: {e}") from e
            self.counters["kernel_restarts"] += 1
            observation += "\nThe kernel died and was restarted: all variables are lost; re-load what you need."
        return observation

    def check_final(self, answer: str, with_code: bool) -> str | None:
        """Why a final answer is refused, or None to accept it."""
        if with_code:
            return ("Rejected: call final_answer alone, after you have seen the outputs of your code. "
                    "Your code in this message was run; read its output first.")
        if self.config.require_execution and self.successful_cells == 0:
            return ("Rejected: you have not run any code successfully yet. Compute the answer with "
                    "execute_code and answer only from outputs you have seen.")
        if (self.config.check_format and not self.format_reminded and "@" in (self.task.format or "")
                and not extract_answer_items(answer)):
            self.format_reminded = True
            return f"Rejected: the answer must follow this format: {self.task.format}"
        return None

    async def handle_calls(self, turn: int, completion: Completion, calls: list[ToolCall]) -> bool:
        """Run the calls in order; True when the run is answered."""
        ids = [c.id or f"call_{turn}_{i}" for i, c in enumerate(calls)]
        for c, cid in zip(calls, ids):
            c.id = cid
        self.traj.messages.append({
            "role": "assistant",
            "content": completion.content or None,
            "tool_calls": [c.to_openai() for c in calls],
        })
        if completion.content:
            self.emit("assistant", turn, text=completion.content)
        with_code = any(c.name == EXECUTE_CODE for c in calls)
        for call in calls:
            if call.name == EXECUTE_CODE:
                code = str(call.arguments.get("code") or "")
                comment = str(call.arguments.get("comment") or "")
                if not code.strip():
                    content = "Error: execute_code needs a non-empty `code` argument."
                    self.consecutive_errors += 1
                else:
                    content = await self.run_cell(turn, comment, code)
            elif call.name == FINAL_ANSWER:
                answer = str(call.arguments.get("answer", "")).strip()
                refusal = self.check_final(answer, with_code)
                if refusal:
                    self.counters["rejected_answers"] += 1
                    if answer:
                        self.best_effort = answer
                    content = refusal
                    self.emit("notice", turn, text=refusal)
                else:
                    self.traj.messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                                               "content": "Answer recorded."})
                    self.traj.answer = answer
                    self.emit("answer", turn, answer=answer)
                    return True
            else:
                content = f"Error: unknown tool {call.name!r}. Use execute_code or final_answer."
                self.consecutive_errors += 1
            self.traj.messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                                       "content": content})
        return False

    def nudge_text(self, completion: Completion) -> str:
        """What to tell a model that replied without a tool call. An answer written before any
        code ran is named as a guess: small models otherwise repeat it unchanged."""
        if not self.traj.steps and extract_answer_items(completion.content or completion.raw_text):
            return ("You wrote an answer, but no code has run yet, so its values are guesses. Call "
                    "execute_code(comment, code) to compute them from the files first.")
        if self.traj.steps and self.task.format:
            # after code ran, small models tend to restate a result in prose and stop; name the
            # tool and the exact format that would end the task
            return ("You did not call a tool. If the outputs you have seen answer the question, call "
                    f"final_answer(answer) with the answer written as: {self.task.format}\n"
                    "Otherwise call execute_code(comment, code) to run more code.")
        return ("You did not call a tool. Call execute_code(comment, code) to run code, "
                "or final_answer(answer) if the outputs you have seen answer the question.")

    async def take_step(self, turn: int, completion: Completion) -> tuple[str, str] | None:
        """Act on one reply: run its cells / record its answer / tell the model what was wrong.

        Returns (status, detail) when the run ends with this step, else None.
        """
        cfg = self.config
        self.remember_answer_like(completion.content or completion.raw_text)

        calls = list(completion.tool_calls)
        if completion.parse_error and not calls:
            self.counters["parse_errors"] += 1
            self.consecutive_errors += 1
            self.traj.messages.append({"role": "assistant", "content": completion.raw_text})
            self.tell(turn, "Error: your last message could not be used: "
                      f"{completion.parse_error.message}\nCall execute_code(comment, code) to run code, "
                      "or final_answer(answer) when the outputs answer the question.")
        else:
            if not calls:
                calls = self.recover_calls(completion)
            if not calls:
                answer = self.recover_answer(completion)
                if answer is not None:
                    self.traj.messages.append({"role": "assistant", "content": completion.raw_text})
                    self.traj.answer = answer
                    self.emit("answer", turn, answer=answer)
                    return "answered", "answer stated in text"
                self.nudges += 1
                self.counters["nudges"] += 1
                self.traj.messages.append({"role": "assistant", "content": completion.raw_text})
                if self.nudges >= cfg.max_nudges:
                    return "no_tool_call", f"{self.nudges} replies in a row without a tool call"
                self.tell(turn, self.nudge_text(completion))
                return None  # a nudge is not an error: the error limit is not checked
            self.nudges = 0
            if await self.handle_calls(turn, completion, calls):
                return "answered", ""
        if self.consecutive_errors >= cfg.max_consecutive_errors:
            return "max_errors", f"{self.consecutive_errors} errors in a row"
        return None

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> Trajectory:
        cfg = self.config
        t_start = time.monotonic()
        try:
            status = await self._loop()
            self.finish(*status)
        except ModelError as e:
            self.finish("model_error", str(e))
        except KernelError as e:
            self.finish("kernel_error", str(e))
        finally:
            self.traj.wall_s = time.monotonic() - t_start
            self.traj.settings["counters"] = self.counters
        self.emit("end", self.traj.turns, status=self.traj.status, answer=self.traj.answer,
                  detail=self.traj.status_detail)
        return self.traj

    async def _loop(self) -> tuple[str, str]:
        cfg = self.config
        for turn in range(1, cfg.max_turns + 1):
            self.traj.turns = turn
            if self.stop is not None and self.stop.is_set():
                return "cancelled", "stopped by the user"
            if self.remaining() <= 0:
                return "timeout", f"wall time limit of {cfg.max_wall_s:.0f} s reached"
            if cfg.max_total_tokens and self.traj.total_tokens >= cfg.max_total_tokens:
                return "max_tokens", f"token limit of {cfg.max_total_tokens} reached"
            self.emit("turn", turn)
            try:
                completion = await asyncio.wait_for(self.ask(), timeout=self.remaining())
            except asyncio.TimeoutError:
                return "timeout", f"wall time limit of {cfg.max_wall_s:.0f} s reached while the model was writing"
            end = await self.take_step(turn, completion)
            if end is not None:
                return end
        return "max_turns", f"no final answer after {cfg.max_turns} turns"


async def run_agent(
    task: Task,
    model: ChatModel,
    session: KernelSession,
    config: AgentConfig | None = None,
    on_event: EventHandler | None = None,
    stop: asyncio.Event | None = None,
) -> Trajectory:
    """Run the agent on `task` in a started `session` (whose working dir holds the task's files).

    Returns the trajectory whatever happens to the model or the kernel; the status says how
    the run ended. Setting `stop` ends the run after the current step ("cancelled").
    """
    return await _Run(task, model, session, config or AgentConfig(), on_event, stop).run()
