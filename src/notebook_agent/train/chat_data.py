"""SFT examples in the chat format the data pipeline exports, from the files people have.

One example is `{"messages": [...], "tools": [...]}`: OpenAI-format messages (assistant
`tool_calls`, `tool` results) and OpenAI tool specs. Accepted sources:

- a `.jsonl` file, one example per line (`tools` may be a list or a JSON string);
- a Hugging Face `datasets` directory (`save_to_disk`, or parquet/jsonl files), split `train`;
- notebook_agent `Trajectory` JSON files (agent/trajectory.py), one file or a directory of them.

Bad rows raise `DatasetError` naming the file and row, before any training starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Example = dict[str, Any]
ROLES = {"system", "user", "assistant", "tool"}


class DatasetError(ValueError):
    pass


def load_examples(source: str | Path, only_answered: bool = False) -> list[Example]:
    """Every example of a dataset file or directory, validated and normalized."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset not found: {path}")
    if path.is_file() and path.suffix == ".jsonl":
        rows = [(f"{path}:{i + 1}", r) for i, r in enumerate(_read_jsonl(path))]
    elif path.is_file() and path.suffix == ".json":
        rows = [(str(path), _read_json(path))]
    elif path.is_dir() and _is_hf_dataset(path):
        rows = [(f"{path}[{i}]", r) for i, r in enumerate(_read_hf(path))]
    elif path.is_dir():
        files = sorted(path.glob("*.json")) + sorted(path.glob("*.jsonl"))
        if not files:
            raise DatasetError(f"{path} holds no .json/.jsonl files and is not a datasets directory")
        return [ex for f in files for ex in load_examples(f, only_answered)]
    else:
        raise DatasetError(f"{path}: expected a .jsonl file, trajectory .json file(s) or a datasets directory")
    out = []
    for where, row in rows:
        if only_answered and _is_trajectory(row) and row.get("status", "answered") != "answered":
            continue
        out.append(normalize(row, where))
    if not out:
        raise DatasetError(f"{path}: no examples")
    return out


def normalize(row: dict[str, Any], where: str = "example") -> Example:
    """A validated `{"messages", "tools"}` example from a chat row or a Trajectory dict."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
        raise DatasetError(f"{where}: expected an object with a 'messages' list")
    tools = row.get("tools") or []
    if isinstance(tools, str):
        try:
            tools = json.loads(tools) if tools.strip() else []
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: 'tools' is a string but not JSON: {e}") from e
    if not isinstance(tools, list):
        raise DatasetError(f"{where}: 'tools' must be a list of tool specs")
    messages = [_clean_message(m, where, i) for i, m in enumerate(row["messages"])]
    if not any(m["role"] == "assistant" for m in messages):
        raise DatasetError(f"{where}: no assistant message, nothing to train on")
    return {"messages": messages, "tools": tools}


def trajectory_to_example(trajectory: Any) -> Example:
    """A `Trajectory` (or its dict) as an SFT example: its messages and tools."""
    d = trajectory.to_dict() if hasattr(trajectory, "to_dict") else trajectory
    return normalize({"messages": d["messages"], "tools": d.get("tools", [])}, f"trajectory {d.get('task_id', '')}")


def _clean_message(m: Any, where: str, i: int) -> dict[str, Any]:
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise DatasetError(f"{where}: message {i} must be an object with role in {sorted(ROLES)}")
    # Arrow fills absent struct fields with None (tool_calls: None on user turns): drop them.
    out = {k: v for k, v in m.items() if v is not None}
    out.setdefault("content", "")
    for j, tc in enumerate(out.get("tool_calls") or []):
        fn = tc.get("function", tc) if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise DatasetError(f"{where}: message {i} tool call {j} has no function name")
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                json.loads(args or "{}")
            except json.JSONDecodeError as e:
                raise DatasetError(f"{where}: message {i} tool call {j} arguments are not JSON: {e}") from e
    return out


def _is_trajectory(row: dict[str, Any]) -> bool:
    return "steps" in row and "question" in row


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}:{i + 1}: not JSON: {e}") from e
    return rows


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not JSON: {e}") from e


def _is_hf_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").exists() or (path / "state.json").exists() or any(path.glob("*.parquet")) \
        or any(path.glob("*/*.parquet")) or any(path.glob("*/*.arrow"))


def _read_hf(path: Path) -> list[dict[str, Any]]:
    import datasets

    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        ds = datasets.load_from_disk(str(path))
    else:
        ds = datasets.load_dataset(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DatasetError(f"{path}: no 'train' split (splits: {', '.join(ds)})")
        ds = ds["train"]
    return list(ds)
