"""bubblewrap's command line: what the kernel can see and write."""

import sys
from pathlib import Path

from notebook_agent.kernel.base import Limits
from notebook_agent.kernel.sandbox import SandboxPaths, bwrap_args


def _pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_code_under_tmp_stays_visible_read_only(tmp_path: Path, monkeypatch):
    """A checkout or venv under /tmp (CI's case) is re-bound over the private /tmp."""
    code = tmp_path / "checkout" / "site-packages"
    code.mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [*sys.path, str(code), str(code / "inner-missing")])
    work = tmp_path / "work"
    work.mkdir()
    paths = SandboxPaths(workdir=work, runtime=tmp_path / "rt")
    args = bwrap_args("bwrap", paths, Limits())
    ro = _pairs(args, "--ro-bind")
    assert str(code.resolve()) in ro
    assert not any("inner-missing" in p for p in ro)
    # the re-binds come after the tmpfs that would hide them, and the workdir stays writable
    assert args.index(str(code.resolve())) > args.index("/tmp")
    assert str(work) in _pairs(args, "--bind")


def test_nothing_else_under_tmp_is_exposed(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not p.startswith("/tmp")])
    work = tmp_path / "work"
    work.mkdir()
    args = bwrap_args("bwrap", SandboxPaths(workdir=work, runtime=tmp_path / "rt"), Limits())
    exposed = [p for p in _pairs(args, "--ro-bind") if p.startswith("/tmp")]
    # only the interpreter's own prefix or our source, if they live under /tmp
    allowed = {str(Path(p).resolve()) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    import notebook_agent
    allowed.add(str(Path(notebook_agent.__file__).resolve().parents[1]))
    assert set(exposed) <= allowed
