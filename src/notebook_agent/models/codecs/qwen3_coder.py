"""Qwen3-Coder XML tool calls.

    <tool_call>
    <function=execute_code>
    <parameter=code>
    print(1)
    </parameter>
    </function>
    </tool_call>

Parameter values are raw text (no JSON escaping, which is why small models get them right
more often); non-string parameters are JSON-decoded when they parse.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..base import Message, ParseError, ToolCall, ToolSpec
from .base import Decoded, ToolCodec
from .tools import (
    call_id,
    check_call,
    functions,
    merge_system,
    message_calls,
    properties,
    required,
    text_of,
    uses_tools,
    with_dict_arguments,
)

_FUNCTION = re.compile(r"<function=([^>\n]*)>(.*?)(?:</function>|(?=<function=)|$)", re.DOTALL)
_PARAM = re.compile(r"<parameter=([^>\n]*)>(.*?)(?:</parameter>|(?=<parameter=)|(?=</function>)|$)", re.DOTALL)
_WRAPPED = re.compile(r"<tool_call>.*?(?:</tool_call>|$)", re.DOTALL)
_BARE = re.compile(r"<function=.*?(?:</function>|$)", re.DOTALL)
_SPECIAL_TAIL = re.compile(r"(<\|im_end\|>|<\|endoftext\|>|<end_of_turn>|</s>)\s*$")

FORMAT = """If you choose to call a function ONLY reply in the following format with NO suffix:

<tool_call>
<function=example_function_name>
<parameter=example_parameter_1>
value_1
</parameter>
<parameter=example_parameter_2>
This is the value for the second parameter
that can span
multiple lines
</parameter>
</function>
</tool_call>

<IMPORTANT>
Reminder:
- Function calls MUST follow the specified format: an inner <function=...></function> block must be nested within <tool_call></tool_call> XML tags
- Required parameters MUST be specified
- You may provide optional reasoning for your function call in natural language BEFORE the function call, but NOT after
- If there is no function call available, answer the question like normal with your current knowledge and do not tell the user about function calls
</IMPORTANT>"""


def tools_block(tools: list[ToolSpec]) -> str:
    lines = ["# Tools", "", "You have access to the following functions:", "", "<tools>"]
    for name, fn in functions(tools).items():
        lines += ["<function>", f"<name>{name}</name>"]
        if fn.get("description"):
            lines.append(f"<description>{fn['description'].strip()}</description>")
        lines.append("<parameters>")
        for pname, p in properties(fn).items():
            lines += ["<parameter>", f"<name>{pname}</name>"]
            if p.get("type"):
                lines.append(f"<type>{p['type']}</type>")
            if p.get("description"):
                lines.append(f"<description>{p['description'].strip()}</description>")
            lines.append("</parameter>")
        if required(fn):
            lines.append(f"<required>{json.dumps(required(fn))}</required>")
        lines += ["</parameters>", "</function>"]
    lines.append("</tools>")
    return "\n".join(lines) + "\n\n" + FORMAT


def render_call(name: str, arguments: dict[str, Any]) -> str:
    parts = ["<tool_call>", f"<function={name}>"]
    for k, v in arguments.items():
        value = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        parts += [f"<parameter={k}>", value, "</parameter>"]
    parts += ["</function>", "</tool_call>"]
    return "\n".join(parts)


def _value(raw: str, schema: dict[str, Any]) -> Any:
    # The template writes "\n" + value + "\n": strip exactly one newline each side.
    v = raw.removeprefix("\n")
    v = v.removesuffix("\n")
    if schema.get("type") not in (None, "string"):
        try:
            return json.loads(v.strip())
        except json.JSONDecodeError:
            return v.strip()
    return v


@dataclass
class Qwen3CoderCodec(ToolCodec):
    template_renders_tools: bool = False
    name = "qwen3_coder"
    native = False
    stop = ["<tool_response>"]

    def for_template(self, template: str) -> Qwen3CoderCodec:
        # Only Qwen3-Coder's own template writes the XML format (Qwen2.5's writes Hermes JSON).
        return Qwen3CoderCodec(template_renders_tools=uses_tools(template) and "<function=" in template)

    def encode(self, messages: list[Message], tools: list[ToolSpec] | None) -> tuple[list[Message], list[ToolSpec] | None]:
        if self.template_renders_tools:
            return [with_dict_arguments(m) if m.get("role") == "assistant" else m for m in messages], tools
        out: list[Message] = []
        pending: list[str] = []

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

    def decode(self, text: str, tools: list[ToolSpec] | None) -> Decoded:
        try:
            return self._decode(text or "", tools)
        except Exception as e:  # never raise
            return Decoded(content=text or "", error=ParseError(f"could not parse tool call: {e!r}", raw=text or ""))

    def _decode(self, text: str, tools: list[ToolSpec] | None) -> Decoded:
        text = _normalise(_SPECIAL_TAIL.sub("", text))
        blocks = _WRAPPED.findall(text) or _BARE.findall(text)
        if not blocks:
            if "<tool_call>" in text:
                return Decoded(content=text.split("<tool_call>")[0].strip(),
                               error=ParseError("a <tool_call> must contain <function=NAME> with <parameter=ARG>value</parameter> blocks", raw=text))
            return Decoded(content=text.strip())
        content = text
        for b in blocks:
            content = content.replace(b, "")
        fns = functions(tools)
        calls: list[ToolCall] = []
        errors: list[str] = []
        i = 0
        for block in blocks:
            fmatches = list(_FUNCTION.finditer(block))
            if not fmatches:
                errors.append("a <tool_call> must contain <function=NAME> ... </function>")
                continue
            for fm in fmatches:
                name = fm.group(1).strip().strip("\"'")
                props = properties(fns.get(name, {}))
                args = {pm.group(1).strip().strip("\"'"): _value(pm.group(2), props.get(pm.group(1).strip(), {}))
                        for pm in _PARAM.finditer(fm.group(2))}
                result = check_call(name, args, tools, call_id(text, i))
                i += 1
                if isinstance(result, ParseError):
                    errors.append(result.message)
                else:
                    calls.append(result)
        errors = list(dict.fromkeys(errors))
        error = ParseError("; ".join(errors), raw=text) if errors else None
        return Decoded(content=content.strip(), tool_calls=calls, error=error)


_MISSHAPED_PARAM = re.compile(r"<parameter>([A-Za-z_][A-Za-z0-9_]*)>")


def _normalise(text: str) -> str:
    """`<parameter>code>...</code>` (seen from Qwen2.5-Coder) -> `<parameter=code>...</parameter>`."""
    for name in set(_MISSHAPED_PARAM.findall(text)):
        text = text.replace(f"<parameter>{name}>", f"<parameter={name}>").replace(f"</{name}>", "</parameter>")
    return text
