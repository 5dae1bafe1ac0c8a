"""Reading model replies. Every parser returns None (or an empty list) for text it cannot read:
the step counts a parse failure, nothing raises."""

from __future__ import annotations

import json
import re
from typing import Any

from ...tasks.scoring.dabench import extract_answers

_SCORE = re.compile(r"score\s*[:=]?\s*\**\s*([1-5])\b", re.IGNORECASE)
_LONE_DIGIT = re.compile(r"^\s*\**([1-5])\**\s*(?:/\s*5)?\s*$", re.MULTILINE)
_JUSTIFY = re.compile(r"justification\s*[:=]\s*(.+)", re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_score(text: str) -> tuple[int, str] | None:
    m = _SCORE.search(text) or _LONE_DIGIT.search(text)
    if not m:
        return None
    j = _JUSTIFY.search(text)
    return int(m.group(1)), (j.group(1).strip() if j else "")


def parse_verdict(text: str, yes: str, no: str) -> bool | None:
    """True/False when exactly one of the two words appears first-and-only; None otherwise."""
    t = text.upper()
    has_yes, has_no = re.search(rf"\b{yes}\b", t), re.search(rf"\b{no}\b", t)
    if has_yes and not has_no:
        return True
    if has_no and not has_yes:
        return False
    if has_yes and has_no:  # the first word decides ("YES. ... not NO")
        return has_yes.start() < has_no.start()
    return None


def _json_candidates(text: str) -> list[str]:
    out = [m.group(1) for m in _FENCE.finditer(text)]
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        out.append(text[start:end + 1])
    out.extend(m.group(0) for m in re.finditer(r"\{[^{}]*\}", text, re.DOTALL))
    return out


def parse_qa(text: str) -> list[dict[str, Any]]:
    """Question records from a reply: a JSON list (fenced or not), or bare JSON objects."""
    items: list[Any] = []
    for cand in _json_candidates(text):
        try:
            value = json.loads(cand)
        except ValueError:
            continue
        if isinstance(value, list):
            items = value
            break
        if isinstance(value, dict):
            items.append(value)
    return [i for i in items if isinstance(i, dict)]


def normalize_qa(item: dict[str, Any], n_cells: int) -> dict[str, Any] | str:
    """A clean task record, or the reason it is unusable."""
    question = str(item.get("question") or "").strip()
    answer = item.get("answer")
    if isinstance(answer, (int, float)):
        answer = str(answer)
    answer = str(answer or "").strip()
    if not question:
        return "no_question"
    pairs = extract_answers(answer)
    if not pairs:
        return "answer_not_in_format"
    fmt = str(item.get("format") or "").strip()
    if "<" in fmt or not all(f"@{k}[" in fmt for k in pairs):  # missing, bare, a placeholder, other names
        fmt = " ".join(f"@{k}[value]" for k in pairs)
    cells = item.get("source_cells") or []
    if not isinstance(cells, list):
        cells = [cells]
    cells = [int(c) for c in cells if isinstance(c, (int, float)) or (isinstance(c, str) and c.isdigit())]
    cells = [c for c in cells if 0 <= c < n_cells]
    return {"question": question, "constraints": str(item.get("constraints") or "").strip(), "format": fmt,
            "answer": answer, "answer_pairs": [[k, v] for k, v in pairs.items()], "source_cells": cells}
