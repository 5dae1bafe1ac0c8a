"""Helpers shared by the text codecs: tool schemas, argument checks, lenient JSON.

Small models write almost-JSON: raw newlines inside strings, single quotes, a missing
closing brace, a code fence around the object, junk after it. `loads_lenient` tries the
repairs in order of how little they change the text, so valid JSON is never rewritten.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import textwrap
from typing import Any

from ..base import Message, ParseError, ToolCall, ToolSpec

_FENCE = re.compile(r"```[a-zA-Z0-9_+-]*\s*\n?(.*?)(?:```|$)", re.DOTALL)


# --- tool schemas --------------------------------------------------------------------------


def functions(tools: list[ToolSpec] | None) -> dict[str, dict[str, Any]]:
    """name -> function spec ({name, description, parameters}); accepts OpenAI tool dicts
    ({"type": "function", "function": {...}}) or bare function specs."""
    out: dict[str, dict[str, Any]] = {}
    for t in tools or []:
        fn = t.get("function", t) if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out[fn["name"]] = fn
    return out


def properties(fn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    params = fn.get("parameters") or {}
    props = params.get("properties") or {}
    return props if isinstance(props, dict) else {}


def required(fn: dict[str, Any]) -> list[str]:
    req = (fn.get("parameters") or {}).get("required") or []
    return [r for r in req if isinstance(r, str)]


def known_names(tools: list[ToolSpec] | None) -> str:
    names = list(functions(tools))
    return ", ".join(names) if names else "(none)"


def call_id(text: str, index: int) -> str:
    """Deterministic id: the same text decodes to the same ids (reproducible trajectories)."""
    return "call_" + hashlib.sha1(f"{index}:{text}".encode()).hexdigest()[:12]


def _coerce(value: Any, schema: dict[str, Any]) -> Any:
    """Fix the type mismatches small models make for string parameters."""
    if schema.get("type") == "string" and not isinstance(value, str):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return "\n".join(value)  # code written as a list of lines
        if value is None:
            return ""
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if schema.get("type") in ("integer", "number") and isinstance(value, str):
        try:
            return int(value) if schema["type"] == "integer" else float(value)
        except ValueError:
            return value
    return value


def check_call(name: Any, arguments: Any, tools: list[ToolSpec] | None, cid: str) -> ToolCall | ParseError:
    """Validate one call against the tool specs: known name, dict arguments, required args."""
    fns = functions(tools)
    if not isinstance(name, str) or not name:
        return ParseError(f"tool call has no function name; known tools: {known_names(tools)}")
    if fns and name not in fns:
        return ParseError(f"unknown tool '{name}'; known tools: {known_names(tools)}")
    if isinstance(arguments, str):
        parsed, err = loads_lenient(arguments) if arguments.strip() else ({}, None)
        if err is not None or not isinstance(parsed, dict):
            return ParseError(f"arguments of '{name}' are not a JSON object: {err or type(parsed).__name__}")
        arguments = parsed
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return ParseError(f"arguments of '{name}' must be a JSON object, got {type(arguments).__name__}")
    fn = fns.get(name, {})
    props = properties(fn)
    args = {k: _coerce(v, props.get(k, {})) for k, v in arguments.items()}
    missing = [r for r in required(fn) if r not in args]
    if missing:
        return ParseError(f"tool '{name}' is missing required argument(s): {', '.join(missing)}")
    return ToolCall(name=name, arguments=args, id=cid)


def message_calls(message: Message) -> list[tuple[str, dict[str, Any]]]:
    """(name, arguments dict) for each tool call of a canonical assistant message."""
    out = []
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function", tc)
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                args = {"_raw": args}
        out.append((fn.get("name", ""), args if isinstance(args, dict) else {"_raw": args}))
    return out


def with_dict_arguments(message: Message) -> Message:
    """A copy of an assistant message whose tool-call arguments are dicts (what HF-style
    chat templates expect: they apply `tojson` to them)."""
    if not message.get("tool_calls"):
        return message
    calls = []
    for (name, args), tc in zip(message_calls(message), message["tool_calls"]):
        calls.append({"id": tc.get("id", ""), "type": "function", "function": {"name": name, "arguments": args}})
    return {**message, "tool_calls": calls, "content": message.get("content") or ""}


def text_of(message: Message) -> str:
    """Message content as text (OpenAI content may be a list of parts)."""
    c = message.get("content")
    if c is None:
        return ""
    if isinstance(c, list):
        return "".join(p.get("text", "") for p in c if isinstance(p, dict))
    return str(c)


def merge_system(messages: list[Message], block: str) -> list[Message]:
    """Append `block` to the system message (creating one if there is none)."""
    if messages and messages[0].get("role") == "system":
        head = text_of(messages[0]).rstrip()
        return [{"role": "system", "content": (head + "\n\n" + block) if head else block}] + messages[1:]
    return [{"role": "system", "content": block}] + messages


def uses_tools(template: str) -> bool:
    """Does a chat template (Jinja source) use the `tools` variable?"""
    return re.search(r"\btools\b", template or "") is not None


# --- lenient JSON --------------------------------------------------------------------------


def strip_fences(text: str) -> str:
    m = _FENCE.search(text)
    if m and "{" in m.group(1):
        return m.group(1)
    return text


_TRIPLE = re.compile(r'"""(.*?)(?:"""|$)|\'\'\'(.*?)(?:\'\'\'|$)', re.DOTALL)


def _triple_quotes_to_json(s: str) -> str:
    """Python triple-quoted strings ("code": \"\"\"...\"\"\") -> JSON strings, dedented.
    Qwen2.5-Coder writes code arguments this way."""

    def repl(m: re.Match[str]) -> str:
        body = m.group(1) if m.group(1) is not None else m.group(2)
        return json.dumps(textwrap.dedent(body).strip("\n"), ensure_ascii=False)

    return _TRIPLE.sub(repl, s)


def _escape_controls_in_strings(s: str) -> str:
    """Escape raw newlines/tabs inside JSON strings (the commonest small-model mistake)."""
    out = []
    in_str = False
    esc = False
    for ch in s:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            elif ch == "\n":
                out.append("\\n")
                continue
            elif ch == "\r":
                out.append("\\r")
                continue
            elif ch == "\t":
                out.append("\\t")
                continue
        elif ch == '"':
            in_str = True
        out.append(ch)
    return "".join(out)


def _balanced_end(s: str, start: int) -> int | None:
    """Index just past the brace that closes s[start] ('{'), honouring both quote styles."""
    depth = 0
    quote: str | None = None
    esc = False
    for i in range(start, len(s)):
        ch = s[i]
        if quote:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _raw_decode(s: str) -> Any:
    return json.JSONDecoder(strict=False).raw_decode(s)[0]


def loads_lenient(text: str) -> tuple[Any, str | None]:
    """Parse the first JSON object in `text`. Returns (value, None) or (None, reason)."""
    s = strip_fences(text).strip()
    start = s.find("{")
    if start < 0:
        return None, "no JSON object found"
    s = s[start:]
    first_error = ""
    # 1. as is (trailing junk ignored); strict=False accepts raw control characters in strings.
    for candidate in (s, _escape_controls_in_strings(s)):
        try:
            return _raw_decode(candidate), None
        except json.JSONDecodeError as e:
            first_error = first_error or f"{e.msg} at line {e.lineno} column {e.colno}"
    # 2. Python triple-quoted strings as values.
    if '"""' in s or "'''" in s:
        value, err = loads_lenient(_triple_quotes_to_json(s))
        if err is None:
            return value, None
    # 3. python-dict style (single quotes, True/None).
    end = _balanced_end(s, 0)
    body = s[:end] if end else s
    for candidate in (body, re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", body)))):
        try:
            value = ast.literal_eval(candidate)
            if isinstance(value, dict):
                return value, None
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            pass
    # 4. truncated object: close what is open.
    fixed = _escape_controls_in_strings(s.rstrip())
    for suffix in ("}", "}}", '"}', '"}}', "]}", "]}}"):
        try:
            return _raw_decode(fixed + suffix), None
        except json.JSONDecodeError:
            continue
    return None, f"invalid JSON ({first_error})"


def salvage_call(text: str, tools: list[ToolSpec] | None) -> tuple[str, dict[str, Any]] | None:
    """Last resort for JSON broken by unescaped quotes inside string arguments (code!).

    Uses the tool schema: finds `"name": "TOOL"`, then each known parameter key, and takes
    a string value to run up to the last quote before the next key or the closing braces.
    """
    m = re.search(r"""["']name["']\s*:\s*["']([A-Za-z0-9_.-]+)["']""", text)
    if not m:
        return None
    name = m.group(1)
    fn = functions(tools).get(name)
    if fn is None:
        return name, {}
    keys: list[tuple[int, int, str]] = []  # (key start, value start, param)
    for param in properties(fn):
        for km in re.finditer(r"""["']%s["']\s*:\s*""" % re.escape(param), text):
            keys.append((km.start(), km.end(), param))
    keys.sort()
    args: dict[str, Any] = {}
    for i, (_, vstart, param) in enumerate(keys):
        stop = keys[i + 1][0] if i + 1 < len(keys) else len(text)
        chunk = text[vstart:stop].rstrip()
        if not chunk:
            continue
        if chunk[0] in "\"'":
            q = chunk[0]
            # strip trailing `,` / `}` / `</tool_call>` and the closing quote
            tail = re.sub(r"""\s*(</tool_call>)?\s*$""", "", chunk)
            tail = re.sub(r"""[\s,}\]]*$""", "", tail)
            if tail.endswith(q) and len(tail) > 1:
                tail = tail[:-1]
            raw = tail[1:]
            try:
                args[param] = json.loads('"' + _escape_controls_in_strings('"' + raw + '"')[1:-1] + '"')
            except json.JSONDecodeError:
                args[param] = raw.replace("\\n", "\n").replace('\\"', '"').replace("\\t", "\t")
        else:
            v = re.sub(r"""[\s,}\]]*$""", "", chunk)
            try:
                args[param] = json.loads(v)
            except json.JSONDecodeError:
                args[param] = v
    return name, args
