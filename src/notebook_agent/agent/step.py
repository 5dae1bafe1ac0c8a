"""One agent step, over a public `AgentState`: the loop and tree search share it.

The loop (`loop.run_agent`) is: sample a reply -> `step(state, completion)` -> repeat until the
outcome ends the run. A search samples k replies from one state and applies each to its own
copy in a fork of the kernel:

    state = initial_state(task, model, session, config)
    completions = await sample_steps(state, n=3, logprobs=True)
    child, outcome = await apply_step(state, completions[0], await session.fork(), turn=1)

`step` acts on one reply: runs its cells, records its answer, or tells the model what was
wrong. Nothing the model writes raises: unusable replies are observations, and the limits on
errors and nudges end the run with their own status.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from dataclasses import dataclass

from ..kernel.base import ExecutionResult, KernelError, KernelSession
from ..models.base import Completion, SamplingParams, ToolCall
from ..models.completion import complete_with_codec
from ..tasks.scoring.dabench import extract_answers_whole
from . import prompts
from .context import fit_context
from .state import CONTINUE, AgentState, StepOutcome
from .tools import EXECUTE_CODE, FINAL_ANSWER, TOOLS
from .trajectory import Step

CODE_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
FINAL_TEXT = re.compile(r"(?:final answer|formatted answer)(?: is)?\s*[:：]\s*(.+)", re.IGNORECASE | re.DOTALL)
# The scaffold's text format: "tools" lets the model's own codec carry the calls, "react" is
# JUPITER's Thought / python block / "Formatted answer:" text whatever the model's codec.
SCAFFOLD_CODECS = {"tools": None, "react": "react"}


def extract_answer_items(text: str) -> list[tuple[str, str]]:
    """The `@name[value]` items of a text, each value read whole (`@a[[1,2],[3,4]]` keeps its
    nested brackets: a lazy match would cut it, and a recovered answer would be corrupted)."""
    return list(extract_answers_whole(text or "").items())


# -- sampling ------------------------------------------------------------------------------------
async def sample(state: AgentState, n: int = 1, logprobs: bool = False) -> list[Completion]:
    """`n` candidate next replies for the conversation so far, decoded into tool calls.

    The prompt is fitted to the context; nothing is recorded in the state (see `account`).
    """
    cfg, model = state.config, state.model
    budget = min(cfg.max_context_tokens, model.context_window) - cfg.max_tokens_per_turn
    view, _ = fit_context(state.traj.messages, model.count_tokens, max(budget, 512))
    params = SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens_per_turn, seed=cfg.seed, logprobs=logprobs,
                            constrain=cfg.constrain)
    if state.code_next:  # the tools stay offered (the prompt and its cache do not change); the reply may only run code
        params.tool_choice = EXECUTE_CODE
    return await complete_with_codec(model, view, TOOLS, params, SCAFFOLD_CODECS[cfg.scaffold])


async def sample_steps(state: AgentState, n: int = 1, logprobs: bool = False) -> list[Completion]:
    """`n` candidate next steps (decoded replies) for `state`; the state is not changed.

    One model call with `n` samples; a backend that returns fewer gets the rest asked
    concurrently. Tokens are counted in a state only when a completion is applied to it.
    """
    out = list(await sample(state, n, logprobs))
    if 0 < len(out) < n:
        more = await asyncio.gather(*(sample(state, 1, logprobs) for _ in range(n - len(out))))
        out += [c for batch in more for c in batch]
    # Backends may hand back one object n times (the scripted model does): make them independent.
    return [copy.deepcopy(c) for c in out[:n]]


def account(state: AgentState, completion: Completion, model_s: float = 0.0) -> None:
    """Count one reply's tokens and model time in the trajectory."""
    state.traj.model_s += model_s
    state.traj.prompt_tokens += completion.usage.prompt_tokens
    state.traj.completion_tokens += completion.usage.completion_tokens
    mode = completion.constraint or "none"
    state.traj.constraint[mode] = state.traj.constraint.get(mode, 0) + 1


async def apply_step(state: AgentState, completion: Completion, session: KernelSession, turn: int,
                     model_s: float = 0.0) -> tuple[AgentState, StepOutcome]:
    """A new state: `state` copied into `session` (a fork of its kernel) with `completion` acted on.

    `state` itself is left as it was.
    """
    child = state.copy(session)
    account(child, completion, model_s)
    child.traj.turns = turn
    t0 = time.monotonic()
    outcome = await step(child, completion, turn)
    child.traj.wall_s += time.monotonic() - t0
    child.traj.counters = child.counters.to_dict()
    return child, outcome


# -- acting on a reply ---------------------------------------------------------------------------
def tell(state: AgentState, turn: int, text: str) -> None:
    """A message from the scaffold to the model (not a tool result)."""
    state.traj.messages.append({"role": "user", "content": text})
    state.emit("notice", turn, text=text)


def recover_calls(state: AgentState, completion: Completion) -> list[ToolCall]:
    """A reply with no tool call but a python block: run the block (small models do this)."""
    if not state.config.recover_code_blocks:
        return []
    text = completion.content or completion.raw_text
    m = CODE_FENCE.search(text)
    if not m or not m.group(1).strip():
        return []
    state.counters.recovered_code_blocks += 1
    comment = text[: m.start()].strip() or "Run the code."
    completion.content = comment
    return [ToolCall(EXECUTE_CODE, {"comment": comment, "code": m.group(1)})]


def recover_answer(state: AgentState, completion: Completion) -> str | None:
    """A reply with no tool call that states the answer in text (models do this after computing it)."""
    if not state.config.recover_text_answers or state.successful_cells == 0:
        return None
    text = completion.content or completion.raw_text or ""
    items = extract_answer_items(text)
    if items and "@" in (state.task.format or ""):
        answer = " ".join(f"@{name}[{value}]" for name, value in items)
    else:
        m = FINAL_TEXT.search(text)
        answer = m.group(1).strip() if m else ""
    if not answer or CODE_FENCE.search(text):
        return None
    state.counters.recovered_text_answers += 1
    return answer


async def run_cell(state: AgentState, turn: int, comment: str, code: str) -> str:
    state.emit("cell", turn, comment=comment, code=code)
    timeout = max(1.0, min(state.config.cell_timeout_s, state.remaining()))
    t0 = time.monotonic()
    result: ExecutionResult = await state.session.execute(code, timeout=timeout)
    state.traj.kernel_s += time.monotonic() - t0
    state.traj.steps.append(Step(comment=comment, result=result, turn=turn))
    state.emit("result", turn, result=result)
    observation = result.text or "(no output)"
    if result.ok:
        state.consecutive_errors = 0
        state.successful_cells += 1
        return observation
    state.consecutive_errors += 1
    state.counters.cell_errors += 1
    if result.status == "dead":
        try:
            await state.session.restart()
        except Exception as e:  # the caller gets a kernel_error status, not a crash
            raise KernelError(f"the kernel died and could not be restarted: {e}") from e
        state.counters.kernel_restarts += 1
        observation += "\nThe kernel died and was restarted: all variables are lost; re-load what you need."
    return observation


@dataclass
class Refusal:
    """Why a final answer is refused. `needs_code`: it lacks computed values, so only a cell
    can help (what `AgentConfig.code_after_refusal` acts on)."""

    text: str
    needs_code: bool = False


def check_final(state: AgentState, answer: str, with_code: bool) -> Refusal | None:
    """Why a final answer is refused, or None to accept it."""
    if with_code:
        return Refusal(prompts.rejected_with_code(state.config.scaffold))
    if state.config.require_execution and state.successful_cells == 0:
        return Refusal(prompts.rejected_before_code(state.config.scaffold), needs_code=True)
    if (state.config.check_format and not state.format_reminded and "@" in (state.task.format or "")
            and not extract_answer_items(answer)):
        state.format_reminded = True
        return Refusal(f"Rejected: the answer must follow this format: {state.task.format}")
    if state.config.check_format and (copied := placeholders_copied(answer, state.task.format)):
        return Refusal(f"Rejected: {', '.join(copied)} is the format's placeholder, not a value. "
                       "Print the value with code, then answer with the number or text it printed.", needs_code=True)
    return None


def placeholders_copied(answer: str, fmt: str | None) -> list[str]:
    """Answer values that are the format's own placeholders (`@mean[mean_value]` answered as
    the format writes it): never a computed value. Only placeholders that read as names count
    (`mean_value`, `value`), so a format that shows an allowed value (`@normal[True]`) never does."""
    shown = dict(extract_answer_items(fmt or ""))
    copied = []
    for name, value in extract_answer_items(answer):
        v = value.strip()
        if v and v == shown.get(name, "").strip() and re.fullmatch(r"[A-Za-z_]\w*", v) \
                and ("_" in v or v.lower() in _GENERIC_PLACEHOLDERS):
            copied.append(v)
    return copied


_GENERIC_PLACEHOLDERS = {"value", "answer", "number", "result", "x", "n"}


def repeats_last_cell(state: AgentState, code: str) -> bool:
    """The cell is the one just run, unchanged: its output would be the same (or the same error)."""
    return bool(state.traj.steps) and state.traj.steps[-1].result.code.strip() == code.strip()


async def handle_calls(state: AgentState, turn: int, completion: Completion, calls: list[ToolCall]) -> bool:
    """Run the calls in order; True when the run is answered."""
    traj = state.traj
    for i, c in enumerate(calls):
        c.id = c.id or f"call_{turn}_{i}"
    traj.messages.append({"role": "assistant", "content": completion.content or None,
                          "tool_calls": [c.to_openai() for c in calls]})
    if completion.content:
        state.emit("assistant", turn, text=completion.content)
    with_code = any(c.name == EXECUTE_CODE for c in calls)
    for call in calls:
        if call.name == EXECUTE_CODE:
            code = str(call.arguments.get("code") or "")
            comment = str(call.arguments.get("comment") or "")
            if not code.strip():
                content = "Error: execute_code needs a non-empty `code` argument."
                state.consecutive_errors += 1
            elif state.config.refuse_repeats and repeats_last_cell(state, code):
                content = prompts.repeated_cell(state.config.scaffold)
                state.counters.refused_repeats += 1
                state.emit("notice", turn, text=content)
            else:
                content = await run_cell(state, turn, comment, code)
        elif call.name == FINAL_ANSWER:
            answer = str(call.arguments.get("answer", "")).strip()
            refusal = check_final(state, answer, with_code)
            if refusal:
                state.counters.rejected_answers += 1
                if answer and not with_code and state.successful_cells > 0:
                    state.best_effort = answer  # an answer refused for its format; never a guess
                if refusal.needs_code and state.config.code_after_refusal:
                    state.code_next = True
                content = refusal.text
                state.emit("notice", turn, text=content)
            else:
                traj.messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                                      "content": "Answer recorded."})
                traj.answer = answer
                state.emit("answer", turn, answer=answer)
                return True
        else:
            content = f"Error: unknown tool {call.name!r}. Use execute_code or final_answer."
            state.consecutive_errors += 1
        traj.messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content})
    return False


def nudge_text(state: AgentState, completion: Completion) -> str:
    """What to tell a model that replied without a tool call (see `prompts.nudge`)."""
    guessed = not state.traj.steps and bool(extract_answer_items(completion.content or completion.raw_text))
    return prompts.nudge(state.config.scaffold, guessed=guessed,
                         answer_format=state.task.format if state.traj.steps else None)


async def step(state: AgentState, completion: Completion, turn: int | None = None) -> StepOutcome:
    """Act on one reply in place: run its cells / record its answer / tell the model what was
    wrong. The outcome's status is set when the run ends with this step."""
    turn = state.traj.turns if turn is None else turn
    if state.code_next:  # this reply was sampled under tool_choice execute_code
        state.code_next = False
        state.counters.forced_code += 1
    text = completion.content or completion.raw_text
    if text and extract_answer_items(text) and state.successful_cells > 0:
        state.best_effort = text.strip()  # stated after code ran; one written before is a guess
    calls = list(completion.tool_calls)
    if completion.parse_error and not calls:
        state.counters.parse_errors += 1
        state.consecutive_errors += 1
        state.traj.messages.append({"role": "assistant", "content": completion.raw_text})
        tell(state, turn, prompts.unusable(state.config.scaffold, completion.parse_error.message))
    else:
        if not calls:
            calls = recover_calls(state, completion)
        if not calls:
            return _no_tool_call(state, turn, completion)
        state.nudges = 0
        if await handle_calls(state, turn, completion, calls):
            return StepOutcome("answered")
    if state.consecutive_errors >= state.config.max_consecutive_errors:
        return StepOutcome("max_errors", f"{state.consecutive_errors} errors in a row")
    return CONTINUE


def _no_tool_call(state: AgentState, turn: int, completion: Completion) -> StepOutcome:
    """A reply with neither a tool call nor a python block: an answer stated in text, or a nudge
    (a nudge is not an error: the error limit is not checked)."""
    state.traj.messages.append({"role": "assistant", "content": completion.raw_text})
    answer = recover_answer(state, completion)
    if answer is not None:
        state.traj.answer = answer
        state.emit("answer", turn, answer=answer)
        return StepOutcome("answered", "answer stated in text")
    state.nudges += 1
    state.counters.nudges += 1
    if state.nudges >= state.config.max_nudges:
        return StepOutcome("no_tool_call", f"{state.nudges} replies in a row without a tool call")
    tell(state, turn, nudge_text(state, completion))
    return CONTINUE
