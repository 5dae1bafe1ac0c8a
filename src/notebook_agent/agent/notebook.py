"""Render a `Trajectory` as a Jupyter notebook (nbformat v4, validated).

The question (with constraints and format) is the first markdown cell, each step's comment a
markdown cell followed by its code cell with the real outputs (images included), and the
final answer the last cell.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from .trajectory import Trajectory


def _clean_outputs(outputs: list[dict]) -> list[nbformat.NotebookNode]:
    """nbformat nodes from output dicts, dropping transient keys the schema does not allow."""
    nodes = []
    for out in outputs:
        out = copy.deepcopy(out)
        out.pop("transient", None)
        if out.get("output_type") in ("execute_result", "display_data"):
            out.setdefault("metadata", {})
        if out.get("output_type") == "execute_result":
            out.setdefault("execution_count", None)
        nodes.append(nbformat.from_dict(out))
    return nodes


def trajectory_to_notebook(traj: Trajectory, task_format: str = "", constraints: str = "") -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["notebook_agent"] = {
        "task_id": traj.task_id,
        "model": traj.model,
        "status": traj.status,
        "files": traj.files,
        "isolation": traj.isolation,   # how the kernel that made the outputs was confined
    }
    header = f"# Question\n\n{traj.question.strip()}"
    if constraints:
        header += f"\n\n**Constraints:** {constraints.strip()}"
    if task_format:
        header += f"\n\n**Answer format:** {task_format.strip()}"
    if traj.files:
        header += "\n\n**Files:** " + ", ".join(f"`{f}`" for f in traj.files)
    nb.cells.append(new_markdown_cell(header))
    for step in traj.steps:
        if step.comment.strip():
            nb.cells.append(new_markdown_cell(step.comment.strip()))
        cell = new_code_cell(step.result.code, execution_count=step.result.execution_count)
        cell.outputs = _clean_outputs(step.result.outputs)
        if step.result.status != "ok":
            cell.metadata["notebook_agent"] = {"status": step.result.status}
        nb.cells.append(cell)
    if traj.answer is not None:
        label = "Answer" if traj.status == "answered" else f"Best-effort answer (run ended: {traj.status})"
        nb.cells.append(new_markdown_cell(f"## {label}\n\n{traj.answer}"))
    else:
        nb.cells.append(new_markdown_cell(f"## No answer\n\nThe run ended with status `{traj.status}`. "
                                          f"{traj.status_detail}"))
    nbformat.validate(nb)
    return nb


def save_notebook(nb: nbformat.NotebookNode, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path
