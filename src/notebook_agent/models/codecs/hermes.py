"""Hermes-style tool calls: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` in text.

Used by Qwen2.5, Qwen3 and most open models. When the model's chat template renders tools
itself (Qwen's does), `encode` keeps `tools` and canonical `tool_calls` so the template
writes them its own way; otherwise it writes the same text the Qwen2.5 template would.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..base import Message, ParseError, ToolCall, ToolSpec
from .base import Decoded, ToolCodec
from .tools import (
    call_id,
    check_call,
    functions,
    known_names,
    loads_lenient,
    merge_system,
    message_calls,
    salvage_call,
    text_of,
    uses_tools,
    with_dict_arguments,
)

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
FORMAT_HINT = 'Write each call as <tool_call>{"name": "...", "arguments": {...}}</tool_call> with valid JSON.'

_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|(?=<tool_call>)|$)", re.DOTALL)
# Tags small models wrap a bare JSON call in (Qwen2.5-Coder-1.5B writes `<tools>{...}`, copying
# the system prompt). Left in the content, the history shows them and the model repeats the
# tag alone and stops.
_WRAPPER_TAG = re.compile(r"</?(?:tools?|tool_calls?|function_calls?|functions?)>")
_SPECIAL_TAIL = re.compile(r"(<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|<end_of_turn>|</s>)\s*$")


def tools_block(tools: list[ToolSpec]) -> str:
    lines = [json.dumps({"type": "function", "function": fn}, ensure_ascii=False) for fn in functions(tools).values()]
    return TOOLS_PREAMBLE + "".join("\n" + line for line in lines) + TOOLS_POSTAMBLE


def render_call(name: str, arguments: dict) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "\n</tool_call>"


@dataclass
class HermesCodec(ToolCodec):
    #: True when the chat template renders `tools` and assistant `tool_calls` (Qwen2.5/3).
    template_renders_tools: bool = False
    name = "hermes"
    native = False
    stop = ["<tool_response>"]

    def for_template(self, template: str) -> HermesCodec:
        # Qwen2.5/Qwen3 templates write the tool list and <tool_call> JSON themselves.
        return HermesCodec(template_renders_tools=uses_tools(template) and "<tool_call>" in template)

    # --- encode ---------------------------------------------------------------------------

    def encode(self, messages: list[Message], tools: list[ToolSpec] | None) -> tuple[list[Message], list[ToolSpec] | None]:
        if self.template_renders_tools:
            return [with_dict_arguments(m) if m.get("role") == "assistant" else m for m in messages], tools
        out: list[Message] = []
        pending: list[str] = []  # consecutive tool results go into one user turn

        def flush() -> None:
            if pending:
                out.append({"role": "user", "content": "\n".join(pending)})
                pending.clear()

        for m in messages:
            role = m.get("role")
            if role == "tool":
                pending.append("<tool_response>\n" + text_of(m) + "\n</tool_response>")
                continue
            flush()
            if role == "assistant" and m.get("tool_calls"):
                parts = [text_of(m).strip()] + [render_call(n, a) for n, a in message_calls(m)]
                out.append({"role": "assistant", "content": "\n".join(p for p in parts if p)})
            else:
                out.append({"role": role, "content": text_of(m)})
        flush()
        if tools:
            out = merge_system(out, tools_block(tools))
        return out, None

    # --- decode ---------------------------------------------------------------------------

    def decode(self, text: str, tools: list[ToolSpec] | None) -> Decoded:
        try:
            return self._decode(text or "", tools)
        except Exception as e:  # never raise: a parse failure is an observation for the model
            return Decoded(content=text or "", error=ParseError(f"could not parse tool call: {e!r}", raw=text or ""))

    def _decode(self, text: str, tools: list[ToolSpec] | None) -> Decoded:
        text = _SPECIAL_TAIL.sub("", text)
        segments = [m.group(1) for m in _CALL.finditer(text)]
        if segments:
            content = _CALL.sub("", text).strip()
        else:
            bare = _bare_call(text)
            if bare is None:
                return Decoded(content=text.strip())
            content, segments = bare
            content = _WRAPPER_TAG.sub("", content).strip()
        calls: list[ToolCall] = []
        errors: list[str] = []
        for i, seg in enumerate(segments):
            result = _parse_segment(seg, tools, call_id(text, i))
            if isinstance(result, ParseError):
                errors.append(result.message)
            else:
                calls.append(result)
        error = None
        errors = list(dict.fromkeys(errors))
        if errors:
            error = ParseError("; ".join(errors) + (" " + FORMAT_HINT if any("JSON" in e for e in errors) else ""), raw=text)
        return Decoded(content=content, tool_calls=calls, error=error)


def _bare_call(text: str) -> tuple[str, list[str]] | None:
    """A call written without tags: a JSON object with "name" and "arguments"."""
    for m in re.finditer(r"\{", text):
        obj, err = loads_lenient(text[m.start():])
        if err is None and isinstance(obj, dict) and _is_call(obj):
            head = text[: m.start()]
            head = re.sub(r"```[a-zA-Z]*\s*$", "", head).strip()
            return head, [text[m.start():]]
        if err is None:
            continue
        if re.match(r"""\{\s*["']name["']\s*:""", text[m.start():]):
            return text[: m.start()].strip(), [text[m.start():]]
    return None


def _is_call(obj: dict) -> bool:
    """A call, not a tool *definition* echoed back (those carry a description or a schema)."""
    if "name" not in obj or "description" in obj:
        return False
    if "arguments" in obj:
        return True
    params = obj.get("parameters")
    return isinstance(params, dict) and "properties" not in params


def _parse_segment(seg: str, tools: list[ToolSpec] | None, cid: str) -> ToolCall | ParseError:
    obj, err = loads_lenient(seg)
    if err is None and isinstance(obj, dict):
        if isinstance(obj.get("function"), dict):  # OpenAI-shaped call written as text
            obj = obj["function"]
        name = obj.get("name")
        args = obj.get("arguments", obj.get("parameters", obj.get("args", {})))
        return check_call(name, args, tools, cid)
    salvaged = salvage_call(seg, tools)
    if salvaged is not None:
        name, args = salvaged
        if name not in functions(tools) and functions(tools):
            return ParseError(f"unknown tool '{name}'; known tools: {known_names(tools)}")
        result = check_call(name, args, tools, cid)
        if isinstance(result, ToolCall):
            return result
    if err is None:
        return ParseError(f"tool call must be a JSON object, got {type(obj).__name__}")
    return ParseError(f"could not parse tool call: {err}")
