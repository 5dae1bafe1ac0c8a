"""ReAct text as JUPITER uses it.

    Thought: what to do next
    ```python
    code
    ```

runs the code (`execute_code(comment=thought, code=code)`); the output comes back as a user
turn "Observation:\\n...". "Formatted answer: ..." (or "Final Answer: ...") finishes
(`final_answer(answer=...)`). Generation stops before the model writes an Observation itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..base import Message, ParseError, ToolCall, ToolSpec
from .base import Decoded, ToolCodec
from .tools import call_id, check_call, merge_system, message_calls, text_of

_CODE = re.compile(r"```[ \t]*(python3?|py|ipython)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)
_ANSWER = re.compile(r"(?:formatted|final)[ \t]+answer[ \t]*:[ \t]*", re.IGNORECASE)
_THOUGHT = re.compile(r"^\s*(?:thought|thinking)\s*:\s*", re.IGNORECASE)
_OBSERVATION = re.compile(r"(?:^|\n)[ \t]*Observation[ \t]*:")
_SPECIAL_TAIL = re.compile(r"(<\|im_end\|>|<\|endoftext\|>|<end_of_turn>|</s>)\s*$")

FORMAT_HINT = (
    "Reply with 'Thought: ...' followed by exactly one ```python``` code block, "
    "or with 'Formatted answer: ...' when you know the answer."
)


@dataclass
class ReActCodec(ToolCodec):
    """Maps the ReAct text onto two tools; the names are configurable."""

    code_tool: str = "execute_code"
    thought_arg: str = "comment"
    code_arg: str = "code"
    answer_tool: str = "final_answer"
    answer_arg: str = "answer"
    name = "react"
    native = False
    stop = ["Observation:"]

    def system_block(self) -> str:
        return (
            "# How to respond\n\n"
            "Work step by step in a Jupyter notebook. In each turn write a line that starts with "
            "\"Thought:\" and says what you will do next and why, then one python code block "
            "(three backticks and the word python, your code, three backticks). Variables persist "
            "between steps.\n\n"
            "The code runs and the next message gives its output as \"Observation:\". Never write "
            "the Observation yourself. When you know the answer, write instead:\n\n"
            "Thought: I now know the final answer\n"
            "Formatted answer: the answer, in the format the question asks for"
        )

    # --- encode ---------------------------------------------------------------------------

    def encode(self, messages: list[Message], tools: list[ToolSpec] | None) -> tuple[list[Message], list[ToolSpec] | None]:
        out: list[Message] = []
        pending: list[str] = []

        def flush() -> None:
            if pending:
                out.append({"role": "user", "content": "\n\n".join(pending)})
                pending.clear()

        for m in messages:
            role = m.get("role")
            if role == "tool":
                pending.append("Observation:\n" + text_of(m))
                continue
            flush()
            if role == "assistant" and m.get("tool_calls"):
                out.append({"role": "assistant", "content": self._render(m)})
            else:
                out.append({"role": role, "content": text_of(m)})
        flush()
        return merge_system(out, self.system_block()), None

    def _render(self, m: Message) -> str:
        narration = text_of(m).strip()
        parts = []
        for name, args in message_calls(m):
            if name == self.code_tool:
                thought = str(args.get(self.thought_arg) or narration).strip()
                parts.append(f"Thought: {thought}\n```python\n{args.get(self.code_arg, '')}\n```")
            elif name == self.answer_tool:
                thought = narration or "I now know the final answer"
                parts.append(f"Thought: {thought}\nFormatted answer: {args.get(self.answer_arg, '')}")
            else:  # a tool this format has no syntax for: keep it readable
                parts.append(f"Action: {name}\nAction Input: {json.dumps(args, ensure_ascii=False)}")
        return "\n".join(parts)

    # --- decode ---------------------------------------------------------------------------

    def decode(self, text: str, tools: list[ToolSpec] | None) -> Decoded:
        try:
            return self._decode(text or "", tools)
        except Exception as e:  # never raise
            return Decoded(content=text or "", error=ParseError(f"could not parse reply: {e!r}", raw=text or ""))

    def _decode(self, text: str, tools: list[ToolSpec] | None) -> Decoded:
        raw = text
        obs = _OBSERVATION.search(text)
        if obs:  # the model began to invent the tool output: drop it
            text = text[: obs.start()]
        text = _SPECIAL_TAIL.sub("", text)
        # One code block per step: the first one tagged python, else the first untagged one
        # (later blocks are usually invented outputs or shell commands).
        fences = list(_CODE.finditer(text))
        tagged = [m for m in fences if m.group(1)]
        codes = tagged[:1] or fences[:1]
        answer = _ANSWER.search(text)
        firsts = [m.start() for m in codes[:1]] + ([answer.start()] if answer else [])
        if not firsts:
            return Decoded(content=text.strip(), error=ParseError("no python code block and no 'Formatted answer:'. " + FORMAT_HINT, raw=raw))
        thought = _THOUGHT.sub("", text[: min(firsts)]).strip()
        thought = re.sub(r"\n\s*(?:action|code)\s*:\s*$", "", thought, flags=re.IGNORECASE).strip()
        events: list[tuple[int, ToolCall | ParseError]] = []
        if codes and (answer is None or codes[0].start() < answer.start()):
            code = codes[0].group(2).strip("\n")
            if not code.strip():
                events.append((codes[0].start(), ParseError("the python code block is empty. " + FORMAT_HINT)))
            else:
                args = {self.thought_arg: thought, self.code_arg: code}
                events.append((codes[0].start(), check_call(self.code_tool, args, tools, call_id(raw, 0))))
        if answer is not None:
            rest = text[answer.end():]
            later = _CODE.search(rest)
            value = (rest[: later.start()] if later else rest).strip()
            if not value:
                events.append((answer.start(), ParseError("'Formatted answer:' is empty. " + FORMAT_HINT)))
            else:
                events.append((answer.start(), check_call(self.answer_tool, {self.answer_arg: value}, tools, call_id(raw, 1))))
        calls = [e for _, e in sorted(events, key=lambda x: x[0]) if isinstance(e, ToolCall)]
        errors = [e.message for _, e in events if isinstance(e, ParseError)]
        return Decoded(content=thought, tool_calls=calls, error=ParseError("; ".join(errors), raw=raw) if errors else None)
