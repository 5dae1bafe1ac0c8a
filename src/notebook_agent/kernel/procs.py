"""Killing a kernel and everything it started."""

from __future__ import annotations

from typing import Sequence

import psutil


def kill_tree(pids: Sequence[int]) -> None:
    """SIGKILL processes (a snapshot of a kernel and its descendants).

    Our own child is reaped by jupyter_client; orphans are reaped by init, so we do not wait.
    """
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


def process_tree(pid: int | None) -> list[int]:
    if pid is None:
        return []
    try:
        p = psutil.Process(pid)
        return [pid] + [c.pid for c in p.children(recursive=True)]
    except psutil.Error:
        return []
