"""The canonical solver: a model that plays a task's known solution through the real agent
loop, so a canonical trace has exactly the prompt, tools and output views the agent sees at
inference, with outputs from a real kernel."""

from __future__ import annotations

from ...models.base import (
    ChatModel,
    Completion,
    Message,
    SamplingParams,
    ToolCall,
    ToolSpec,
    Usage,
)
from ...tasks.scoring.dabench import ANSWER_PATTERN
from .templates import Cell


class SolutionModel(ChatModel):
    """Calls `execute_code` for each cell in turn, then `final_answer` with the `@name[value]`
    items the last cell printed (or with nothing, when it printed none: the task is dropped)."""

    name = "canonical"

    def __init__(self, cells: list[Cell]):
        self.cells = list(cells)

    async def _complete(self, messages: list[Message], tools: list[ToolSpec] | None,
                        params: SamplingParams) -> list[Completion]:
        done = sum(1 for m in messages if m.get("role") == "assistant")
        if done < len(self.cells):
            comment, code = self.cells[done]
            call = ToolCall("execute_code", {"comment": comment, "code": code})
        else:
            last = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "tool"), "")
            items = [m.group(0) for m in ANSWER_PATTERN.finditer(str(last))]
            call = ToolCall("final_answer", {"answer": ", ".join(items) or "no answer printed"})
        return [Completion(raw_text="", tool_calls=[call], usage=Usage(0, 0))] * params.n
