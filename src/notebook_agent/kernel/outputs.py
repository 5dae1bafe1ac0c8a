"""Collecting one cell's outputs as nbformat v4 dicts, with a cap on what is kept.

Every backend feeds messages (Jupyter iopub messages, or our forking worker's equivalents) into
an `OutputCollector`. It merges consecutive stream chunks the way a notebook shows them, honours
`clear_output` and `update_display_data`, and stops keeping output past a byte budget so that a
cell printing a gigabyte cannot exhaust the host's memory. Past twice the budget it asks the
caller to interrupt the cell (`wants_interrupt`).
"""

from __future__ import annotations

import json
from typing import Any

OUTPUT_TYPES = ("stream", "display_data", "execute_result", "error")


def output_from_content(msg_type: str, content: dict[str, Any]) -> dict[str, Any] | None:
    """An nbformat v4 output dict from a Jupyter message's type and content (None if not an output)."""
    if msg_type == "stream":
        return {"output_type": "stream", "name": content.get("name", "stdout"), "text": content.get("text", "")}
    if msg_type in ("display_data", "update_display_data"):
        return {"output_type": "display_data", "data": dict(content.get("data", {})),
                "metadata": dict(content.get("metadata", {}))}
    if msg_type == "execute_result":
        return {"output_type": "execute_result", "data": dict(content.get("data", {})),
                "metadata": dict(content.get("metadata", {})),
                "execution_count": content.get("execution_count")}
    if msg_type == "error":
        return {"output_type": "error", "ename": content.get("ename", "Error"),
                "evalue": content.get("evalue", ""), "traceback": list(content.get("traceback", []))}
    return None


def error_output(ename: str, evalue: str, traceback: list[str] | None = None) -> dict[str, Any]:
    return {"output_type": "error", "ename": ename, "evalue": evalue,
            "traceback": traceback if traceback is not None else [f"{ename}: {evalue}"]}


def _size(out: dict[str, Any]) -> int:
    if out["output_type"] == "stream":
        return len(out["text"])
    if out["output_type"] == "error":
        return len(out["evalue"]) + sum(len(t) for t in out["traceback"])
    return sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in out.get("data", {}).values())


class OutputCollector:
    """Accumulates one cell's outputs under a byte budget."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.outputs: list[dict[str, Any]] = []
        self.kept_bytes = 0
        self.seen_bytes = 0
        self.truncated = False
        self.execution_count: int | None = None
        self._clear_on_next = False
        self._display_ids: dict[str, list[int]] = {}

    @property
    def wants_interrupt(self) -> bool:
        """The cell keeps producing output long after the budget was spent."""
        return self.seen_bytes > 2 * self.max_bytes

    def add_message(self, msg_type: str, content: dict[str, Any]) -> None:
        """Feed one Jupyter iopub message (by type and content)."""
        if msg_type == "execute_input":
            self.execution_count = content.get("execution_count", self.execution_count)
        elif msg_type == "clear_output":
            self.clear(wait=bool(content.get("wait")))
        elif msg_type == "update_display_data":
            self.update_display(content)
        else:
            out = output_from_content(msg_type, content)
            if out is not None:
                display_id = (content.get("transient") or {}).get("display_id")
                self.add(out, display_id=display_id)

    def add(self, out: dict[str, Any], display_id: str | None = None) -> None:
        if self._clear_on_next:
            self._clear_now()
        size = _size(out)
        self.seen_bytes += size
        room = self.max_bytes - self.kept_bytes
        if size > room and out["output_type"] != "error":  # errors are always kept
            self.truncated = True
            if out["output_type"] != "stream" or room <= 0:
                return
            out, size = dict(out, text=out["text"][:room]), room  # keep what fits of a stream chunk
        if out["output_type"] == "execute_result" and out.get("execution_count") is None:
            out["execution_count"] = self.execution_count
        last = self.outputs[-1] if self.outputs else None
        if (last is not None and out["output_type"] == "stream" and last["output_type"] == "stream"
                and last["name"] == out["name"]):
            last["_parts"].append(out["text"])  # joined in finish(); += would be quadratic
        else:
            if out["output_type"] == "stream":
                out = dict(out, _parts=[out["text"]])
            if display_id is not None:
                self._display_ids.setdefault(display_id, []).append(len(self.outputs))
            self.outputs.append(out)
        self.kept_bytes += size

    def clear(self, wait: bool = False) -> None:
        if wait:
            self._clear_on_next = True
        else:
            self._clear_now()

    def _clear_now(self) -> None:
        self._clear_on_next = False
        self.outputs.clear()
        self._display_ids.clear()
        self.kept_bytes = 0

    def update_display(self, content: dict[str, Any]) -> None:
        display_id = (content.get("transient") or {}).get("display_id")
        for i in self._display_ids.get(display_id or "", []):
            self.outputs[i]["data"] = dict(content.get("data", {}))
            self.outputs[i]["metadata"] = dict(content.get("metadata", {}))

    def finish(self) -> list[dict[str, Any]]:
        """The outputs, with a note appended (always last) when some were dropped."""
        outs = []
        for out in self.outputs:
            if "_parts" in out:
                parts = out["_parts"]
                out = {k: v for k, v in out.items() if k != "_parts"}
                out["text"] = "".join(parts)
            outs.append(out)
        if self.truncated:
            mb = self.max_bytes / 1e6
            outs.append({"output_type": "stream", "name": "stderr",
                         "text": f"\n[output truncated: the cell produced {self.seen_bytes / 1e6:.1f} MB; "
                                 f"only the first {mb:g} MB were kept]\n"})
        return outs
