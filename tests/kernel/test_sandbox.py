"""bubblewrap's command line: a view built up from nothing, not carved out of the host."""

import sys
from pathlib import Path

from notebook_agent.kernel.base import Limits
from notebook_agent.kernel.sandbox import SandboxPaths, bwrap_args, code_roots


def _pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_the_view_holds_the_interpreter_and_package_and_nothing_of_the_import_path(tmp_path: Path, monkeypatch):
    """A test directory or checkout on sys.path is not shown: only prefixes and the package."""
    extra = tmp_path / "checkout" / "tests"
    extra.mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [*sys.path, str(extra)])
    work = tmp_path / "work"
    work.mkdir()
    args = bwrap_args("bwrap", SandboxPaths(workdir=work), Limits(), privileged=False)
    ro = _pairs(args, "--ro-bind")
    import notebook_agent
    assert str(Path(notebook_agent.__file__).resolve().parent) in ro or any(
        Path(notebook_agent.__file__).resolve().is_relative_to(r) for r in ro)
    assert str(Path(sys.base_prefix).resolve()) in ro or Path(sys.base_prefix).resolve().is_relative_to("/usr")
    assert not any(str(extra) in p for p in ro)
    assert "/" not in ro and "/etc" not in ro and "/home" not in ro and "/root" not in ro
    assert {"/etc/passwd", "/etc/shadow", "/etc/group"}.isdisjoint(ro)
    assert _pairs(args, "--bind") == [str(work)]
    # the re-binds come after the tmpfs that would hide them
    assert all(args.index(str(r)) > args.index("/tmp") for r in code_roots())


def test_no_capabilities_no_network_new_session(tmp_path: Path):
    for privileged in (False, True):
        args = bwrap_args("bwrap", SandboxPaths(workdir=tmp_path), Limits(), privileged=privileged)
        assert {"--unshare-pid", "--unshare-net", "--new-session", "--die-with-parent"} <= set(args)
        assert _pairs(args, "--cap-drop") == ["ALL"]
        if privileged:  # only what the inner launcher needs to become the sandbox's user
            assert set(_pairs(args, "--cap-add")) == {"CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"}
        else:
            assert "--unshare-user" in args and "--disable-userns" in args
    assert "--unshare-net" not in bwrap_args("bwrap", SandboxPaths(workdir=tmp_path), Limits(network=True),
                                             privileged=False)


def test_tmp_and_shm_are_capped(tmp_path: Path):
    args = bwrap_args("bwrap", SandboxPaths(workdir=tmp_path), Limits(tmp_mb=64), privileged=False)
    for mount in ("/tmp", "/dev/shm"):
        i = args.index(mount)
        assert args[i - 1] == "--tmpfs" and args[i - 3] == "--size" and args[i - 2] == str(64 * 1024 * 1024)
