"""A session's working directory: created, filled with the task's files, copied, removed."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

PathLike = str | os.PathLike[str]


def make_workdir(workdir: PathLike | None, prefix: str = "na-work-") -> tuple[Path, bool]:
    """The working directory to use, and whether we created it (then we may delete it)."""
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix=prefix)).resolve(), True
    path = Path(workdir).expanduser().resolve()
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    return path, created


def check_files(files: Iterable[PathLike]) -> list[Path]:
    """Validate task files up front, so a bad path fails before a kernel is started."""
    paths = [Path(f).expanduser() for f in files]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"task file(s) not found: {', '.join(missing)}")
    seen: dict[str, Path] = {}
    for p in paths:
        if p.name in seen and seen[p.name].resolve() != p.resolve():
            raise ValueError(f"two task files share the name {p.name!r} ({seen[p.name]} and {p}); "
                             "files are placed in the working directory by base name")
        seen[p.name] = p
    return paths


def place_files(files: Iterable[PathLike], dest: Path) -> list[Path]:
    """Copy each file (or directory) into `dest` under its base name."""
    placed = []
    for src in check_files(files):
        target = dest / src.name
        if src.resolve() == target.resolve():
            placed.append(target)
            continue
        if src.is_dir():
            shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(src, target)
        placed.append(target)
    return placed


def copy_workdir(src: Path, dst: Path) -> None:
    """An independent copy of a working directory (for forks: writes must not leak back)."""
    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)


def remove_tree(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
