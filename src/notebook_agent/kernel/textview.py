"""The model-facing text of a cell's outputs.

A notebook keeps everything a cell produced (images, HTML, megabytes of text). A model needs a
short, faithful summary: printed text, the plain-text repr of results, a placeholder for each
image, and for errors the exception plus the end of the traceback (where the useful frames are),
with ANSI colour codes stripped. Long text keeps its head and its tail; the middle is replaced by
a marker saying how much was cut.
"""

from __future__ import annotations

import base64
import re
import struct
from typing import Any, Iterable

from .base import TextViewConfig

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml", "application/pdf")
MAX_TRACEBACK_LINES = 30


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def collapse_carriage_returns(text: str) -> str:
    """Keep what a terminal would show: on each line, only the text after the last '\\r'.

    Progress bars (tqdm and friends) rewrite one line many times; the model needs the last state.
    """
    if "\r" not in text:
        return text
    text = text.replace("\r\n", "\n")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _png_size(b64: str) -> tuple[int, int] | None:
    try:
        head = base64.b64decode(b64[:44] + "=" * (-len(b64[:44]) % 4), validate=False)
    except (ValueError, TypeError):
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n" or len(head) < 24:
        return None
    return struct.unpack(">II", head[16:24])


def image_placeholder(mime: str, data: Any, metadata: dict[str, Any] | None = None) -> str:
    size = None
    if mime == "image/png" and isinstance(data, str):
        size = _png_size(data)
    if size is None and metadata:
        meta = metadata.get(mime, metadata) if isinstance(metadata.get(mime), dict) else metadata
        if isinstance(meta, dict) and "width" in meta and "height" in meta:
            size = (meta["width"], meta["height"])
    dims = f" {size[0]}x{size[1]}" if size else ""
    return f"[{mime}{dims}, kept in notebook]"


def _rich_text(out: dict[str, Any]) -> str:
    data: dict[str, Any] = out.get("data", {})
    images = [m for m in _IMAGE_TYPES if m in data]
    if images:
        return "\n".join(image_placeholder(m, data[m], out.get("metadata")) for m in images) + "\n"
    text = data.get("text/plain")
    if text is not None:
        text = "".join(text) if isinstance(text, list) else str(text)
        return text + "\n"
    if data:
        mime = sorted(data)[0]
        return f"[{mime} output, {len(str(data[mime]))} chars, kept in notebook]\n"
    return ""


def _error_text(out: dict[str, Any], max_lines: int) -> str:
    ename, evalue = out.get("ename", "Error"), out.get("evalue", "")
    lines = strip_ansi("\n".join(out.get("traceback") or [])).splitlines()
    lines = [ln for ln in lines if ln.strip() and not set(ln.strip()) <= {"-"}]
    last = f"{ename}: {evalue}" if evalue else ename
    if lines and lines[-1].strip().startswith(ename):
        lines = lines[:-1]  # IPython ends the traceback with the exception line; we add our own
    if len(lines) > max_lines:
        lines = [f"[... {len(lines) - max_lines} earlier traceback lines omitted ...]"] + lines[-max_lines:]
    return "\n".join(lines + [last]) + "\n"


def output_text(out: dict[str, Any], max_traceback_lines: int = MAX_TRACEBACK_LINES) -> str:
    kind = out.get("output_type")
    if kind == "stream":
        text = out.get("text", "")
        text = "".join(text) if isinstance(text, list) else text
        return collapse_carriage_returns(strip_ansi(text))
    if kind in ("execute_result", "display_data"):
        return _rich_text(out)
    if kind == "error":
        return _error_text(out, max_traceback_lines)
    return ""


def elide(text: str, config: TextViewConfig) -> str:
    """Keep the head and the tail of `text` within `config.max_chars`, marking the cut."""
    limit = max(config.max_chars, 0)
    if len(text) <= limit:
        return text
    # The marker's length depends on the count it shows; reserve room for the widest one.
    reserve = len(f"\n[... {len(text)} chars elided ...]\n")
    budget = max(limit - reserve, 0)
    n_head = int(budget * min(max(config.head_fraction, 0.0), 1.0))
    n_tail = budget - n_head
    head = text[:n_head]
    tail = text[len(text) - n_tail :] if n_tail else ""
    # Cut at line boundaries when one is close, so the model does not see half lines.
    nl = head.rfind("\n")
    if nl >= 0 and n_head - nl < 200:
        head = head[: nl + 1]
    nl = tail.find("\n")
    if 0 <= nl < 200 and nl < len(tail) - 1:
        tail = tail[nl + 1 :]
    cut = len(text) - len(head) - len(tail)
    sep = "" if head.endswith("\n") or not head else "\n"
    return f"{head}{sep}[... {cut} chars elided ...]\n{tail}"


def text_view(outputs: Iterable[dict[str, Any]], config: TextViewConfig | None = None) -> str:
    """The model-facing text of a list of nbformat outputs."""
    config = config or TextViewConfig()
    text = ""
    for part in (output_text(o) for o in outputs):
        if text and not text.endswith("\n") and part:
            text += "\n"  # a new output starts on its own line
        text += part
    return elide(text, config)
