"""The one function that saves a finished run: trajectory, notebook and metadata, for every
entry point. Writes are atomic (a reader never sees half a file)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tasks.task import Task
from .notebook import trajectory_to_notebook
from .trajectory import Trajectory

TRAJECTORY_FILE = "trajectory.json"
NOTEBOOK_FILE = "notebook.ipynb"
METADATA_FILE = "run.json"


@dataclass
class SavedRun:
    notebook: Path
    trajectory: Path | None = None
    metadata: Path | None = None


def run_metadata(traj: Trajectory, **extra: Any) -> dict[str, Any]:
    """What a run's record says about it besides its conversation: who, how it ended, what it
    cost and how its kernel was confined."""
    return {"task_id": traj.task_id, "question": traj.question, "model": traj.model, "status": traj.status,
            "status_detail": traj.status_detail, "answer": traj.answer, "files": traj.files,
            "turns": traj.turns, "prompt_tokens": traj.prompt_tokens, "completion_tokens": traj.completion_tokens,
            "wall_s": round(traj.wall_s, 3), "isolation": traj.isolation, "settings": traj.settings,
            "counters": traj.counters, **({"search": traj.search} if traj.search else {}), **extra}


def write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def save_run(traj: Trajectory, out_dir: str | Path, *, task: Task | None = None,
             notebook: str | Path = NOTEBOOK_FILE, trajectory: str | Path | None = TRAJECTORY_FILE,
             metadata: str | Path | None = METADATA_FILE, extra: dict[str, Any] | None = None,
             copy_files: bool = False) -> SavedRun:
    """Save `traj` under `out_dir`: the notebook (with the task's format and constraints when
    `task` is given; the kernel's isolation in its metadata), the trajectory JSON and the
    run's metadata (`run_metadata` plus `extra`); a name given as None is not written.
    `copy_files` puts the task's files next to the notebook, so that it re-runs top to bottom."""
    import nbformat

    out = Path(out_dir)
    nb = trajectory_to_notebook(traj, task_format=task.format if task else "",
                                constraints=task.constraints if task else "")
    saved = SavedRun(notebook=write_atomic(out / notebook, nbformat.writes(nb)))
    if trajectory is not None:
        saved.trajectory = write_atomic(out / trajectory, json.dumps(traj.to_dict(), ensure_ascii=False, indent=1))
    if metadata is not None:
        saved.metadata = write_atomic(out / metadata, json.dumps(run_metadata(traj, **(extra or {})),
                                                                 ensure_ascii=False, indent=1, default=str))
    if copy_files and task is not None:
        for f in task.files:
            if not (out / f.name).exists():
                shutil.copy2(f, out / f.name)
    return saved
