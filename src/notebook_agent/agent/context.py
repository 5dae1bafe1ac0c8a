"""Keeping the conversation inside the model's context window.

Old observations are shortened first (oldest first, head and tail kept), so the model keeps
its own reasoning and the most recent outputs in full. The canonical trajectory keeps every
message whole: only the view sent to the model is shortened.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Message = dict[str, Any]

SHORTENED = "\n[... {n} characters of this earlier output were shortened to fit the context ...]\n"


def message_text(msg: Message) -> str:
    text = msg.get("content") or ""
    if not isinstance(text, str):
        text = json.dumps(text)
    for call in msg.get("tool_calls") or []:
        text += json.dumps(call.get("function", {}))
    return text


def shorten_text(text: str, keep_chars: int) -> str:
    if len(text) <= keep_chars:
        return text
    head = keep_chars // 2
    tail = keep_chars - head
    return text[:head] + SHORTENED.format(n=len(text) - keep_chars) + text[-tail:]


def fit_context(
    messages: list[Message],
    count_tokens: Callable[[str], int],
    budget_tokens: int,
    keep_recent: int = 2,
    keep_chars: int = 300,
) -> tuple[list[Message], int]:
    """A copy of `messages` whose token count fits `budget_tokens` where possible.

    Tool observations older than the last `keep_recent` are shortened to `keep_chars`,
    oldest first, until the total fits. Returns the messages and how many were shortened.
    """
    sizes = [count_tokens(message_text(m)) for m in messages]
    total = sum(sizes)
    if total <= budget_tokens:
        return [dict(m) for m in messages], 0
    out = [dict(m) for m in messages]
    observations = [i for i, m in enumerate(out) if m.get("role") == "tool"]
    candidates = observations[:-keep_recent] if keep_recent else observations
    shortened = 0
    for i in candidates:
        if total <= budget_tokens:
            break
        new = shorten_text(out[i].get("content") or "", keep_chars)
        if new == out[i].get("content"):
            continue
        out[i]["content"] = new
        new_size = count_tokens(new)
        total -= sizes[i] - new_size
        sizes[i] = new_size
        shortened += 1
    return out, shortened
