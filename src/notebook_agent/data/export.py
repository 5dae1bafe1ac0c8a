"""Step 7: export. Each rank writes its rows (one per kept trace) and its NbQA task records;
`finalize` merges them into a Hugging Face `datasets` dataset in chat format, in a thinking
variant (the assistant's narration inside `<think>...</think>`) and a non-thinking one (tool
calls only; each call's required `comment` still narrates), and into `tasks/nbqa.jsonl` with
the data files under `tasks/files/<notebook>/`, which `notebook_agent.tasks` loads as `nbqa:`.
Tasks of notebooks whose data is missing give rows only (`executor_types` can drop those rows),
no NbQA task: the harness could not run it.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from loguru import logger

MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name")


@dataclass
class ExportConfig:
    max_output_chars: int = 2000     # tool results longer than this keep head and tail
    min_cells: int = 1               # traces with fewer executed cells are trivial
    require_correct: bool = False    # keep only traces whose answer matches the task's
    thinking_variants: bool = True
    executor_types: list[str] = field(default_factory=lambda: ["jupyter", "llm"])  # rows kept, by who ran the cells


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"


def normalize_message(m: dict[str, Any], limit: int, thinking: bool) -> dict[str, Any]:
    """One message with every column present (Arrow needs one schema), tool output truncated."""
    content = m.get("content") or ""
    if not isinstance(content, str):
        content = json.dumps(content, ensure_ascii=False)
    if m.get("role") == "tool":
        content = truncate(content, limit)
    elif m.get("role") == "assistant":
        content = f"<think>\n{content.strip()}\n</think>" if thinking and content.strip() else ("" if not thinking else content)
    calls = []
    for c in m.get("tool_calls") or []:
        fn = c.get("function", {})
        args = fn.get("arguments", "")
        calls.append({"id": str(c.get("id", "")), "type": "function",
                      "function": {"name": fn.get("name", ""),
                                   "arguments": args if isinstance(args, str) else json.dumps(args)}})
    return {"role": m.get("role", ""), "content": content, "tool_calls": calls,
            "tool_call_id": str(m.get("tool_call_id") or ""), "name": str(m.get("name") or "")}


def packages_used(cells: list[str]) -> list[str]:
    mods: set[str] = set()
    for code in cells:
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                mods.add(node.module.split(".")[0])
    return sorted(mods)


class ExportStep(PipelineStep):
    type = "💾 - EXPORT"
    name = "export"

    def __init__(self, output_dir: str, config: ExportConfig | None = None):
        super().__init__()
        self.output_dir = Path(output_dir)
        self.config = config or ExportConfig()

    def rows(self, doc: Any, rec: dict[str, Any]) -> list[dict[str, Any]] | str:
        trace = rec.get("trace")
        if not trace:
            return "no_trace"
        traj = trace["trajectory"]
        cells = [s["result"]["code"] for s in traj.get("steps", [])]
        if len(cells) < self.config.min_cells or not trace.get("predicted"):
            return "trivial"
        if self.config.require_correct and not trace.get("correct"):
            return "incorrect"
        executor = trace.get("executor_type", "jupyter")
        if executor not in self.config.executor_types:
            return f"executor_{executor}"
        base = {
            "task_id": rec["id"], "question": rec["question"], "answer": rec["answer"],
            "predicted_answer": trace.get("predicted") or "",
            "tools": json.dumps(traj.get("tools") or []),
            "files_used": [Path(f).name for f in traj.get("files", [])],
            "packages_used": packages_used(cells),
            "edu_score": int(doc.metadata.get("edu_score") or 0),
            "executor_type": executor,
            "correct": bool(trace.get("correct")),
            "source": str(doc.metadata.get("source") or doc.id),
        }
        variants = [False, True] if self.config.thinking_variants else [False]
        return [{**base, "thinking": t, "messages": [normalize_message(m, self.config.max_output_chars, t)
                                                     for m in traj.get("messages", [])]} for t in variants]

    def task_record(self, doc: Any, rec: dict[str, Any], files_dir: Path) -> dict[str, Any]:
        digest = hashlib.md5(doc.id.encode()).hexdigest()[:10]
        names = []
        for f in doc.metadata.get("files") or []:
            if f.get("path") and Path(f["path"]).is_file():
                dest = files_dir / digest / Path(f["path"]).name
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not dest.exists():
                    shutil.copyfile(f["path"], dest)
                names.append(f"{digest}/{dest.name}")
        return {"id": rec["id"], "question": rec["question"], "constraints": rec.get("constraints", ""),
                "format": rec.get("format", ""), "file_names": names, "answer": rec["answer"],
                "source": str(doc.metadata.get("source") or doc.id), "source_cells": rec.get("source_cells", []),
                "edu_score": doc.metadata.get("edu_score"),
                "agent_answer": (rec.get("trace") or {}).get("predicted"),
                "agent_correct": (rec.get("trace") or {}).get("correct")}

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        rows_dir, tasks_dir = self.output_dir / "export_rows", self.output_dir / "tasks"
        rows_dir.mkdir(parents=True, exist_ok=True)
        (tasks_dir / "shards").mkdir(parents=True, exist_ok=True)
        with open(rows_dir / f"{rank:05d}.jsonl", "w") as rows_f, \
                open(tasks_dir / "shards" / f"{rank:05d}.jsonl", "w") as tasks_f:
            for doc in data or []:
                self.stat_update("notebooks")
                # A notebook whose data is missing (traced by the LLM interpreter) gives rows, but no
                # NbQA task: the harness could not run it without its files.
                no_data = doc.metadata.get("executable") is False
                for rec in doc.metadata.get("tasks") or []:
                    try:
                        if no_data:
                            self.stat_update("tasks_skipped_no_data")
                        else:
                            tasks_f.write(json.dumps(self.task_record(doc, rec, tasks_dir / "files")) + "\n")
                            self.stat_update("tasks")
                        rows = self.rows(doc, rec)
                    except Exception as e:  # noqa: BLE001
                        logger.warning(f"export failed for task {rec.get('id')}: {type(e).__name__}: {e}")
                        self.stat_update("dropped", "dropped_export_error")
                        continue
                    if isinstance(rows, str):
                        self.stat_update("dropped", f"dropped_{rows}")
                        continue
                    self.stat_update("forwarded")
                    rows_f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
                yield doc


def finalize(output_dir: str | Path) -> dict[str, Any]:
    """Merge the ranks' shards: `dataset/{non_thinking,thinking}` (datasets.save_to_disk) and
    `tasks/nbqa.jsonl`. Returns counts."""
    out = Path(output_dir)
    rows = [json.loads(line) for p in sorted((out / "export_rows").glob("*.jsonl")) for line in p.open()]
    counts: dict[str, Any] = {"rows": len(rows)}
    with open(out / "tasks" / "nbqa.jsonl", "w") as f:
        n = 0
        for p in sorted((out / "tasks" / "shards").glob("*.jsonl")):
            for line in p.open():
                f.write(line)
                n += 1
    counts["tasks"] = n
    import datasets

    for thinking in (False, True):
        subset = [r for r in rows if r["thinking"] == thinking]
        if not subset:
            continue
        name = "thinking" if thinking else "non_thinking"
        ds = datasets.Dataset.from_list(copy.deepcopy(subset))
        target = out / "dataset" / name
        if target.exists():
            shutil.rmtree(target)
        ds.save_to_disk(str(target))
        counts[name] = len(subset)
    return counts
