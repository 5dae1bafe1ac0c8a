"""Constrained tool calls: a grammar, built from the offered tools' JSON schemas, that admits
only a valid call of an offered tool in the active codec's wire format.

One grammar text (GBNF, llama.cpp's grammar format) serves every backend:

- llama.cpp in-process: `llama_cpp.LlamaGrammar` (llama.cpp's own grammar sampler);
- llama.cpp's servers: the request's `grammar` field; vLLM: `structured_outputs.grammar`
  (older: `guided_grammar`); SGLang: `ebnf` (both compile GBNF-style EBNF with xgrammar or
  llguidance);
- transformers: a logits processor from llguidance (GBNF converted to its Lark dialect).

What the grammars admit (one call per reply; `tool_choice="auto"` also admits plain text):

- hermes: `<tool_call>\\n{"name": "NAME", "arguments": {...}}\\n</tool_call>` with exactly
  the separators the Qwen templates write (`", "`, `": "`, no free whitespace), arguments
  in the schema's property order, required ones present, string values of required
  arguments non-empty, no unknown keys;
- qwen3_coder: `<tool_call>\\n<function=NAME>\\n<parameter=ARG>\\nvalue\\n</parameter>\\n...
  </function>\\n</tool_call>` with raw (unescaped) text values that cannot contain `</`
  (under a `maxLength` a "<" and the character after it count as one, so such a value may
  exceed the cap by its number of "<");
- react: `Thought: one line\\n` then a ```` ```python ```` block, or `Formatted answer: one
  line` (only the branches whose tools are offered); code cannot contain ```` ``` ````
  (under a `maxLength`, a run of backticks and the character after it count as one).

Bounded: nothing in a grammar is free whitespace or an optional repeat that carries no
content (the classic way a constrained model loops forever is `{"a": 1     ...` with
unlimited spaces); every grammar ends with a fixed closing text after which only
end-of-generation is allowed. A value itself (code, a comment) can still run long: that is
what `max_tokens` is for, and a reply cut there is reported as a parse error by
`truncated_error`, never turned into a half-written call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .base import ParseError, ToolSpec
from .codecs.base import ToolCodec
from .codecs.hermes import HermesCodec
from .codecs.qwen3_coder import Qwen3CoderCodec
from .codecs.react import ReActCodec
from .codecs.tools import functions, properties, required

#: What `tool_choice` may be: a call is required, text or a call, or this one tool.
REQUIRED, AUTO = "required", "auto"


@dataclass(frozen=True)
class Constraint:
    """A grammar for one request, and what it was built for."""

    grammar: str  # GBNF, root rule "root"
    codec: str
    tool_choice: str
    tools: tuple[str, ...]  # the tool names the grammar admits


def gbnf_literal(text: str) -> str:
    """A GBNF string literal for `text`."""
    out = []
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


class _Rules:
    """Named GBNF rules, emitted in insertion order (root first)."""

    BUILTIN = {
        # JSON string body characters: anything but a quote, a backslash or a control char,
        # or an escape. `jchar1` starts a non-empty value with something other than a space.
        "jchar": r'[^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])',
        "jchar1": r'[^"\\\x00-\x20] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])',
        "jstring": r'"\"" jchar* "\""',
        "jstring1": r'"\"" jchar1 jchar* "\""',
        "jint": r'"-"? ("0" | [1-9] [0-9]{0,17})',
        "jnumber": r'jint ("." [0-9]{1,17})? ([eE] [-+]? [0-9]{1,3})?',
        "jbool": r'"true" | "false"',
        "jnull": r'"null"',
        "jvalue": r'jobject | jarray | jstring | jnumber | jbool | jnull',
        "jobject": r'"{" (jstring ": " jvalue (", " jstring ": " jvalue)*)? "}"',
        "jarray": r'"[" (jvalue (", " jvalue)*)? "]"',
        # Raw XML parameter text (Qwen3-Coder): anything without "</" (which would close it).
        "xchar": r'[^<] | "<" [^/]',
        "xchar1": r'[^<\x00-\x20] | "<" [^/]',
        # One line of text; the first character not a space.
        "line": r'[^\n\x00-\x20] [^\n]*',
        # A python code block body: anything without ``` (which would close the block).
        "bchar": r'[^`] | "`" [^`] | "``" [^`]',
    }
    DEPS = {
        "jstring": ["jchar"], "jstring1": ["jchar1", "jchar"], "jnumber": ["jint"],
        "jvalue": ["jobject", "jarray", "jstring", "jnumber", "jbool", "jnull"],
        "jobject": ["jstring", "jvalue"], "jarray": ["jvalue"],
    }

    def __init__(self) -> None:
        self.rules: dict[str, str] = {}

    def add(self, name: str, body: str) -> str:
        self.rules[name] = body
        return name

    def use(self, name: str) -> str:
        if name not in self.rules:
            self.rules[name] = self.BUILTIN[name]
            for dep in self.DEPS.get(name, []):
                self.use(dep)
        return name

    def text(self) -> str:
        return "\n".join(f"{k} ::= {v}" for k, v in self.rules.items()) + "\n"


def _rule_name(*parts: str) -> str:
    """GBNF rule names allow letters, digits and '-' only."""
    return "-".join(re.sub(r"[^A-Za-z0-9]+", "-", p).strip("-") or "x" for p in parts)


def _json_value(schema: Any, name: str, rules: _Rules, nonempty: bool = False) -> str:
    """A GBNF expression for a JSON value matching `schema` (the subset tools use: type,
    enum/const, string/integer/number/boolean/null, arrays with items, objects with
    properties; anything else is any JSON value)."""
    if not isinstance(schema, dict):
        return rules.use("jvalue")
    if "const" in schema:
        return gbnf_literal(json.dumps(schema["const"], ensure_ascii=False))
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return "(" + " | ".join(gbnf_literal(json.dumps(v, ensure_ascii=False)) for v in schema["enum"]) + ")"
    typ = schema.get("type")
    if isinstance(typ, list):
        alts = [_json_value({**schema, "type": t}, _rule_name(name, str(t)), rules) for t in typ]
        return "(" + " | ".join(alts) + ")"
    if typ == "string":
        cap = _max_length(schema)
        if cap is None:
            return rules.use("jstring1" if nonempty else "jstring")
        rules.use("jchar1")
        rules.use("jchar")
        first = "jchar1" if nonempty else "jchar"
        return rules.add(f"jstring-max{cap}{'-1' if nonempty else ''}", f'"\\"" {first} jchar{{0,{cap - 1}}} "\\""')
    if typ == "integer":
        return rules.use("jint")
    if typ == "number":
        return rules.use("jnumber")
    if typ == "boolean":
        return rules.use("jbool")
    if typ == "null":
        return rules.use("jnull")
    if typ == "array":
        item = _json_value(schema.get("items"), _rule_name(name, "item"), rules)
        return rules.add(name, f'"[" ({item} (", " {item})*)? "]"')
    if typ == "object" or "properties" in schema:
        props = schema.get("properties")
        if not isinstance(props, dict) or not props:
            return rules.use("jobject")
        return rules.add(name, _object_body(props, [r for r in schema.get("required") or [] if r in props], name, rules))
    return rules.use("jvalue")


def _max_length(schema: dict[str, Any]) -> int | None:
    """A string's `maxLength` (>= 1), which the grammars honour: the way to bound free text
    such as a comment or an answer, so that a looping model must close the value."""
    cap = schema.get("maxLength")
    return int(cap) if isinstance(cap, int) and cap >= 1 else None


def _xml_text(rules: _Rules, cap: int | None, nonempty: bool) -> str:
    first = rules.use("xchar1") if nonempty else rules.use("xchar")
    rest = rules.use("xchar")
    if cap is None:
        return f"{first} {rest}*"
    return f"{first} {rest}{{0,{cap - 1}}}"


def _line(rules: _Rules, cap: int | None) -> str:
    if cap is None:
        return rules.use("line")
    return rules.add(f"line-max{cap}", f"[^\\n\\x00-\\x20] [^\\n]{{0,{cap - 1}}}")


def _object_body(props: dict[str, Any], req: list[str], name: str, rules: _Rules) -> str:
    """`{...}` with the properties in schema order; required ones present, optional ones
    optional. No unknown keys, fixed separators."""
    pieces = []
    for key, sub in props.items():
        value = _json_value(sub, _rule_name(name, key), rules, nonempty=key in req)
        pieces.append((key in req, gbnf_literal(json.dumps(key, ensure_ascii=False) + ": ") + " " + value))
    if any(is_req for is_req, _ in pieces):
        # Before the first required property an optional one is written with a comma after
        # it; after it, with a comma before it.
        first = next(i for i, (is_req, _) in enumerate(pieces) if is_req)
        out = []
        for i, (is_req, kv) in enumerate(pieces):
            if i < first:
                out.append(f'({kv} ", ")?')
            elif i == first:
                out.append(kv)
            else:
                out.append(f'", " {kv}' if is_req else f'(", " {kv})?')
        return '"{" ' + " ".join(out) + ' "}"'
    # all optional: any subset in schema order (each later one with a leading comma)
    kvs = [kv for _, kv in pieces]
    alts = []
    for i, kv in enumerate(kvs):
        rest = " ".join(f'(", " {k})?' for k in kvs[i + 1:])
        alts.append(f"({kv} {rest})".replace(" )", ")"))
    return '"{" (' + " | ".join(alts) + ')? "}"'


def _chosen(tools: list[ToolSpec] | None, tool_choice: str) -> dict[str, dict[str, Any]]:
    fns = functions(tools)
    if tool_choice in (REQUIRED, AUTO):
        return fns
    return {tool_choice: fns[tool_choice]} if tool_choice in fns else {}


def hermes_grammar(tools: list[ToolSpec] | None, tool_choice: str = REQUIRED) -> Constraint | None:
    fns = _chosen(tools, tool_choice)
    if not fns:
        return None
    rules = _Rules()
    rules.add("root", "")  # placeholder: root first
    alts = []
    for i, (fname, fn) in enumerate(fns.items()):
        args_schema = {"type": "object", "properties": properties(fn), "required": required(fn)}
        if not properties(fn):
            args = '"{}"'
        else:
            args = _json_value(args_schema, _rule_name("args", str(i), fname), rules)
        head = gbnf_literal(json.dumps({"name": fname}, ensure_ascii=False)[:-1] + ', "arguments": ')
        alts.append(rules.add(_rule_name("call", str(i), fname), f'{head} {args} "}}"'))
    rules.add("call", " | ".join(alts))
    call = '"<tool_call>\\n" call "\\n</tool_call>"'
    if tool_choice == AUTO:
        # text that never starts a (malformed) call, or one call; prose may precede the call
        rules.add("prose", '([^<] | "<" [^t])+')
        rules.rules["root"] = f'prose | prose? {call}'
    else:
        rules.rules["root"] = call
    return Constraint(rules.text(), "hermes", tool_choice, tuple(fns))


def qwen3_coder_grammar(tools: list[ToolSpec] | None, tool_choice: str = REQUIRED) -> Constraint | None:
    fns = _chosen(tools, tool_choice)
    if not fns:
        return None
    rules = _Rules()
    rules.add("root", "")
    alts = []
    for i, (fname, fn) in enumerate(fns.items()):
        req = required(fn)
        parts = []
        for pname, p in properties(fn).items():
            if p.get("type") in (None, "string") and "enum" not in p and "const" not in p:
                value = _xml_text(rules, _max_length(p), nonempty=True)
                if pname not in req:
                    value = f"({value})?"
            else:  # non-string values are written as JSON
                value = _json_value(p, _rule_name("p", str(i), fname, pname), rules, nonempty=pname in req)
            piece = f'{gbnf_literal(f"<parameter={pname}>" + chr(10))} {value} "\\n</parameter>\\n"'
            parts.append(piece if pname in req else f"({piece})?")
        body = " ".join(parts) if parts else ""
        alts.append(rules.add(_rule_name("fn", str(i), fname),
                              f'{gbnf_literal(f"<function={fname}>" + chr(10))} {body} "</function>\\n"'.replace("  ", " ")))
    rules.add("call", " | ".join(alts))
    call = '"<tool_call>\\n" call "</tool_call>"'
    if tool_choice == AUTO:
        rules.add("prose", '([^<] | "<" [^t])+')
        rules.rules["root"] = f'prose | prose? {call}'
    else:
        rules.rules["root"] = call
    return Constraint(rules.text(), "qwen3_coder", tool_choice, tuple(fns))


def react_grammar(codec: ReActCodec, tools: list[ToolSpec] | None, tool_choice: str = REQUIRED) -> Constraint | None:
    fns = _chosen(tools, tool_choice)
    branches, names = [], []
    rules = _Rules()
    rules.add("root", "")
    if codec.code_tool in fns:
        rules.use("bchar")
        cap = _max_length(properties(fns[codec.code_tool]).get(codec.code_arg, {}))
        body = "bchar*" if cap is None else f"bchar{{0,{cap - 1}}}"
        rules.add("code", f'"```python\\n" [^`\\x00-\\x20] {body} "\\n```" "\\n"?')
        branches.append("code")
        names.append(codec.code_tool)
    if codec.answer_tool in fns:
        line = _line(rules, _max_length(properties(fns[codec.answer_tool]).get(codec.answer_arg, {})))
        rules.add("answer", f'"Formatted answer: " {line} "\\n"?')
        branches.append("answer")
        names.append(codec.answer_tool)
    if not branches:
        return None
    thought_cap = _max_length(properties(fns.get(codec.code_tool, {})).get(codec.thought_arg, {}))
    rules.rules["root"] = f'"Thought: " {_line(rules, thought_cap)} "\\n" (' + " | ".join(branches) + ")"
    return Constraint(rules.text(), "react", tool_choice, tuple(names))


def grammar_for(codec: ToolCodec, tools: list[ToolSpec] | None, tool_choice: str = REQUIRED) -> Constraint | None:
    """The grammar for `codec`'s wire format and the offered `tools`, or None when there is
    nothing to constrain (no tools, a native codec, an unknown tool_choice)."""
    if not functions(tools) or tool_choice == "none":
        return None
    if isinstance(codec, HermesCodec):
        return hermes_grammar(tools, tool_choice)
    if isinstance(codec, Qwen3CoderCodec):
        return qwen3_coder_grammar(tools, tool_choice)
    if isinstance(codec, ReActCodec):
        return react_grammar(codec, tools, tool_choice)
    return None


def truncated_error(text: str, max_tokens: int) -> ParseError:
    """What the model is told when `max_tokens` cut a constrained reply before the grammar's
    end: the call is incomplete, so none is returned (running half a cell, or recording half
    an answer, would be worse than saying so)."""
    return ParseError(
        f"your reply was cut off at the limit of {max_tokens} tokens before the tool call was complete, "
        "so nothing was run. Write a shorter call: less code per step.",
        raw=text,
    )
