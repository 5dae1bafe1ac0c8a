"""A cgroup per kernel: a process cap and a memory cap over its whole process tree.

Rlimits are per process (RLIMIT_AS) or per user (RLIMIT_NPROC, which does not bind root); a
cgroup counts every process the kernel starts, daemons included, and holds for root too. We make
one where the host lets us: cgroup v2 when our own cgroup delegates the `memory` and `pids`
controllers to children, else the v1 `memory` and `pids` hierarchies (writable when running as
root in most containers). Where neither works, `Cgroup.create` returns None and the session's
watchdog enforces the same caps by polling (see `lifecycle.py`).

The host creates the cgroup and writes its limits; the kernel's launcher joins it before exec
(`launch.py --cgroup FILE`), so nothing the kernel starts is ever outside it.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, str]:
    """controller ("" for v2) -> our cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    except (OSError, ValueError):
        pass
    return out


class Cgroup:
    """One kernel's cgroup directories (one for v2, one per controller for v1)."""

    def __init__(self, dirs: list[Path], version: int) -> None:
        self.dirs = dirs
        self.version = version

    @property
    def procs_files(self) -> list[str]:
        """What the launcher writes its pid into."""
        return [str(d / "cgroup.procs") for d in self.dirs]

    @classmethod
    def create(cls, memory_mb: int | None, max_processes: int | None) -> "Cgroup | None":
        """A new cgroup with these caps, or None where the host does not let us make one."""
        name = f"notebook-agent-{os.getpid()}-{secrets.token_hex(4)}"
        own = _own_paths()
        for make in (cls._v2, cls._v1):
            try:
                cg = make(name, own, memory_mb, max_processes)
            except OSError as exc:
                log.debug("cgroup (%s) not available: %s", make.__name__, exc)
                continue
            if cg is not None:
                return cg
        return None

    @classmethod
    def _v2(cls, name: str, own: dict[str, str], memory_mb: int | None,
            max_processes: int | None) -> "Cgroup | None":
        if "" not in own or not (ROOT / "cgroup.controllers").exists():
            return None
        parent = ROOT / own[""].lstrip("/")
        if not {"memory", "pids"} <= set((parent / "cgroup.subtree_control").read_text().split()):
            return None
        d = parent / name
        d.mkdir()
        cg = cls([d], 2)
        try:
            if memory_mb:
                (d / "memory.max").write_text(str(memory_mb * 1024 * 1024))
                if (d / "memory.swap.max").exists():
                    (d / "memory.swap.max").write_text("0")
            if max_processes:
                (d / "pids.max").write_text(str(max_processes))
        except OSError:
            cg.remove()
            raise
        return cg

    @classmethod
    def _v1(cls, name: str, own: dict[str, str], memory_mb: int | None,
            max_processes: int | None) -> "Cgroup | None":
        dirs: list[Path] = []
        try:
            for controller, want in (("pids", max_processes), ("memory", memory_mb)):
                if not want:
                    continue
                base = ROOT / controller
                if controller not in own or not (base / "cgroup.procs").exists():
                    return None
                d = base / own[controller].lstrip("/") / name
                d.mkdir()
                dirs.append(d)
                if controller == "pids":
                    (d / "pids.max").write_text(str(max_processes))
                else:
                    limit = str(int(want) * 1024 * 1024)
                    (d / "memory.limit_in_bytes").write_text(limit)
                    if (d / "memory.memsw.limit_in_bytes").exists():  # swap may not escape the cap
                        (d / "memory.memsw.limit_in_bytes").write_text(limit)
        except OSError:
            cls(dirs, 1).remove()
            raise
        return cls(dirs, 1) if dirs else None

    def pids(self) -> list[int]:
        """Host pids of every process in the cgroup."""
        found: set[int] = set()
        for f in self.procs_files:
            try:
                found.update(int(x) for x in Path(f).read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def add(self, pid: int) -> None:
        """Move a process in (the host does this for a forked worker's own cgroup)."""
        for f in self.procs_files:
            Path(f).write_text(str(pid))

    def oom_killed(self) -> bool:
        """Whether the memory cap made the OOM killer act in this cgroup."""
        for d in self.dirs:
            stats = d / ("memory.events" if self.version == 2 else "memory.oom_control")
            try:
                fields = dict(line.split() for line in stats.read_text().splitlines() if line.strip())
                if int(fields.get("oom_kill", 0)) > 0:
                    return True
            except (OSError, ValueError):
                pass
        return False

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup, including ones that left the kernel's tree."""
        for _ in range(20):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and remove the directories (a cgroup with processes cannot go)."""
        self.kill_all()
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # processes still exiting
            else:
                log.warning("could not remove cgroup %s", d)

    def describe(self) -> str:
        return f"cgroup v{self.version}"
