"""Helpers for the runtime's tests (importable as `kernel_helpers`)."""

from __future__ import annotations

from typing import Any

import psutil
import pytest

from notebook_agent.kernel.sandbox import bwrap_path


def host_descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.status() != psutil.STATUS_ZOMBIE}


def kernel_pids(session: Any) -> list[int]:
    """The session's processes that run user code (python, not the bwrap/launcher wrappers)."""
    pid = session.pid
    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    return [p.pid for p in procs if p.name().startswith("python")]


needs_bwrap = pytest.mark.skipif(bwrap_path() is None,
                                 reason="bubblewrap is not installed or cannot create a sandbox here")


