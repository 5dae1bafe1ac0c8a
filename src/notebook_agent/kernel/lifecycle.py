"""The lifecycle that every sandboxed backend shares, written once.

`SandboxedSession` owns the working directory, the confinement (sandbox, unprivileged uid,
cgroup), start / restart / close, the locked `execute`, and the watchdog. A backend implements
only what differs, in five hooks:

- `_launch()`: start the kernel under `self.confinement` (called by `start` and `restart`).
- `_startup(code)`: run the startup code silently (called by `_launch`'s caller after launch).
- `_channel()`: the `CellChannel` cells run over (called by `execute`).
- `_kill(note)`: kill the kernel's processes, keep the working directory (called by `restart`,
  `close`, the watchdog and a cell that ignores its interrupt).
- `_alive()`: whether the kernel process is still there (called by `execute`, the watchdog).

The host-private run directory (`run_dir`, mode 0700, never shown to the kernel) holds what the
host writes and rereads: connection files, kernelspecs, logs, the sandbox's passwd. Directories
the kernel can write are only ever touched through `workspace.py`'s descriptor-based helpers.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from pathlib import Path
from typing import Any, Sequence

import psutil

from .base import ExecutionResult, KernelError, KernelSession, Limits, SandboxMode, TextViewConfig
from .cell import CellChannel, dead_result, run_cell
from .cgroup import Cgroup
from .procs import kill_tree, process_tree
from .sandbox import Confinement, private_dir, sandbox_uid, use_bwrap, write_identity
from .workspace import PathLike, make_workdir, own_tree, place_files, remove_tree, tree_bytes

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.5


class SandboxedSession(KernelSession):
    """A kernel on this machine, in its own working directory, confined.

    files: task files copied into the working directory (by base name).
    workdir: where to work; a fresh temporary directory (removed on close) when None. A directory
        you pass is never removed.
    sandbox: "auto" isolates where bubblewrap works here (warning once where not), "require"
        refuses to start without it, "off" never isolates.
    startup_code: run silently after every (re)start, e.g. imports.
    default_timeout: used when `execute` gets no timeout (None = no limit).
    """

    def __init__(self, files: Sequence[PathLike] = (), workdir: PathLike | None = None,
                 limits: Limits | None = None, text_view: TextViewConfig | None = None,
                 startup_code: str | None = None, *, sandbox: SandboxMode = "auto",
                 default_timeout: float | None = None, extra_env: dict[str, str] | None = None,
                 keep_workdir: bool = False) -> None:
        self.files = list(files)
        self.limits = limits or Limits()
        self.text_view = text_view or TextViewConfig()
        self.startup_code = startup_code
        self.sandbox = sandbox
        self.default_timeout = default_timeout
        self.extra_env = dict(extra_env or {})
        self.keep_workdir = keep_workdir
        self._workdir_arg = workdir
        self.cwd = Path(workdir) if workdir is not None else Path()
        self._own_workdir = False
        self.run_dir: Path | None = None
        self.confinement = Confinement(sandbox)
        self._cgroup: Cgroup | None = None
        self.identity_files: dict[Path, str] = {}  # the sandbox's passwd/group: host path -> inside
        self._started = False
        self._closed = False
        self._death_note = ""
        self._lock = asyncio.Lock()
        self._watchdog: asyncio.Task[None] | None = None
        self.history: list[str] = []  # cells that ran ok, in order

    # -- hooks -----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def _launch(self) -> None:
        """Start the kernel under `self.confinement` in `self.cwd`. Called by start and restart."""

    @abc.abstractmethod
    async def _startup(self, code: str) -> None:
        """Run `code` silently; raise KernelError if it fails. Called after each launch."""

    @abc.abstractmethod
    def _channel(self) -> CellChannel:
        """The channel cells run over. Called by execute, under the session's lock."""

    @abc.abstractmethod
    async def _kill(self, note: str = "") -> None:
        """Kill the kernel's processes (not the working directory); `note` says why, for the
        next dead result. Called by restart, close, the watchdog and run_cell."""

    @abc.abstractmethod
    async def _alive(self) -> bool:
        """Whether the kernel is running. Called by execute and the watchdog."""

    backend: str = ""  # the make_session name of the backend ("local", "forking")

    @property
    @abc.abstractmethod
    def pid(self) -> int | None:
        """The host pid of the kernel's top process."""

    # -- confinement -----------------------------------------------------------------------------
    def _confine(self) -> None:
        """Decide how the kernel is confined: sandbox, uid, cgroup (a fresh cgroup per launch)."""
        bwrap = use_bwrap(self.sandbox)
        uid = sandbox_uid() if bwrap else None
        self.confinement = Confinement(self.sandbox, bwrap, uid)
        if uid is not None:
            assert self.run_dir is not None
            self.identity_files = write_identity(self.run_dir, uid, self.cwd)
            own_tree(self.cwd, uid)

    def _new_cgroup(self) -> Cgroup | None:
        if self._cgroup is not None:
            self._cgroup.remove()
        self._cgroup = Cgroup.create(self.limits.memory_mb, self.limits.max_processes)
        self.confinement.cgroup = self._cgroup.describe() if self._cgroup else None
        return self._cgroup

    @property
    def isolated(self) -> bool:
        """Whether the kernel runs in the bubblewrap sandbox."""
        return self.confinement.isolated

    @property
    def isolation(self) -> dict[str, Any]:
        return {**self.confinement.describe(), "backend": self.backend}

    @property
    def sandbox_uid(self) -> int | None:
        """The host uid the kernel runs as when it is not the host's own (root hosts)."""
        return self.confinement.uid

    def add_files(self, files: Sequence[PathLike]) -> list[Path]:
        """Copy host files into the working directory (a warm pool's kernel gets its task's)."""
        return place_files(files, self.cwd, owner=self.confinement.uid)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._closed:
            raise KernelError("session is closed")
        if self._started:
            return
        self.cwd, _ = make_workdir(self._workdir_arg)
        self._own_workdir = self._workdir_arg is None  # a directory the caller named is never removed
        try:
            self.run_dir = private_dir("na-run-")
            self._confine()
            self.add_files(self.files)
            await self._launch_and_start()
        except BaseException:
            await self.close()
            raise
        self._started = True
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def _launch_and_start(self) -> None:
        self._death_note = ""
        await self._launch()
        if self.startup_code:
            await self._startup(self.startup_code)

    async def restart(self) -> None:
        if self._closed:
            raise KernelError("session is closed")
        async with self._lock:
            await self._kill()
            self.history.clear()
            await self._launch_and_start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        await self._kill()
        await self._release()
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None
        remove_tree(self.run_dir)
        if self._own_workdir and not self.keep_workdir:
            remove_tree(self.cwd)

    async def _release(self) -> None:
        """What a backend frees after its kernel is killed at close (shared processes)."""

    # -- execution -------------------------------------------------------------------------------
    async def execute(self, code: str, timeout: float | None = None) -> ExecutionResult:
        if self._closed or not self._started:
            raise KernelError("session is closed" if self._closed else "session not started: await start() first")
        async with self._lock:
            channel = self._channel()
            if not await self._alive():
                return dead_result(code, channel.exit_description(), self.text_view)
            result = await run_cell(channel, code, timeout if timeout is not None else self.default_timeout,
                                    self.limits, self.text_view)
            if result.status == "ok":
                self.history.append(code)
            return result

    # -- the watchdog ----------------------------------------------------------------------------
    def _over_limit(self) -> str | None:
        """Why the kernel must be killed now, if it must: the working directory's total size
        always; processes and memory of the tree where no cgroup counts them."""
        cap = self.limits.max_workdir_mb
        if cap and tree_bytes(self.cwd, stop_at=cap * 1024 * 1024) > cap * 1024 * 1024:
            return f"its working directory grew past the {cap} MB limit"
        if self.confinement.cgroup is None and (self.limits.max_processes or self.limits.memory_mb):
            procs = []
            for pid in process_tree(self.pid):
                try:
                    procs.append(psutil.Process(pid))
                except psutil.Error:
                    pass
            if self.limits.max_processes and len(procs) > self.limits.max_processes:
                return f"it started more than {self.limits.max_processes} processes"
            if self.limits.memory_mb:
                rss = 0
                for p in procs:
                    try:
                        rss += p.memory_info().rss
                    except psutil.Error:
                        pass
                if rss > self.limits.memory_mb * 1024 * 1024:
                    return f"its processes used more than {self.limits.memory_mb} MB of memory"
        return None

    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                why = await asyncio.to_thread(self._over_limit)
            except OSError as exc:
                log.debug("watchdog: %s", exc)
                continue
            if why and not self._closed:
                log.warning("killing kernel %s: %s", self.pid, why)
                # Processes only: a cell running now sees its kernel die and reports why; the
                # channels are torn down by the next restart or close, not under that cell.
                self._death_note = f"killed by the watchdog: {why}"
                self._kill_processes()

    def _kill_processes(self) -> None:
        """SIGKILL the kernel's process tree and everything in its cgroup."""
        kill_tree(process_tree(self.pid))
        if self._cgroup is not None:
            self._cgroup.kill_all()

    def _oom_note(self) -> str:
        if self._cgroup is not None and self._cgroup.oom_killed():
            return f"killed by the kernel's out-of-memory killer: over the {self.limits.memory_mb} MB memory cap"
        return ""

