"""A local ipykernel, started and driven through jupyter_client, inside our sandbox.

The kernel is started from a private kernelspec whose argv is the sandbox command (launcher with
rlimits and parent-death signal, then bubblewrap when available, then `ipykernel_launcher`).
It talks to the host over ZeroMQ `ipc` sockets in a private runtime directory: Unix sockets keep
working when the kernel has no network namespace, and need no TCP ports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from .base import ExecutionResult, SandboxMode, KernelDiedError, KernelError, KernelSession, Limits, TextViewConfig
from .cell import dead_result, run_cell
from .procs import kill_tree, process_tree
from .sandbox import SandboxPaths, kernel_env, prepare_runtime, sandbox_command, use_bwrap
from .workspace import PathLike, copy_workdir, make_workdir, place_files, remove_tree

log = logging.getLogger(__name__)

KERNEL_NAME = "notebook-agent-python"
IPYKERNEL_ARGV = (sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}")
START_TIMEOUT_S = 60.0


def describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped responding"
    sig = -code if code < 0 else code - 128 if code > 128 else 0
    if sig:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        hint = "; it may have run out of memory" if sig == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with code {code}"


class _JupyterChannel:
    """`CellChannel` over a jupyter_client manager and client."""

    def __init__(self, session: "LocalKernelSession") -> None:
        self.s = session

    async def send(self, code: str) -> str:
        if self.s._kc is None:
            raise KernelDiedError("no kernel")
        return self.s._kc.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)

    async def receive(self, cell_id: str, timeout: float) -> tuple[str, dict[str, Any]] | None:
        kc = self.s._kc
        if kc is None:
            raise KernelDiedError("no kernel")
        end = time.monotonic() + timeout
        while True:
            try:
                msg = await kc.get_iopub_msg(timeout=max(end - time.monotonic(), 0))
            except queue.Empty:
                return None
            if msg["parent_header"].get("msg_id") != cell_id:
                continue  # a previous (interrupted) cell's or a silent request's message
            if msg["msg_type"] == "status":
                if msg["content"].get("execution_state") == "idle":
                    return "done", await self._reply(cell_id)
                continue
            return msg["msg_type"], msg["content"]

    async def _reply(self, cell_id: str) -> dict[str, Any]:
        kc = self.s._kc
        assert kc is not None
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                msg = await kc.get_shell_msg(timeout=max(end - time.monotonic(), 0))
            except queue.Empty:
                break
            if msg["parent_header"].get("msg_id") == cell_id:
                return msg["content"]
        return {}

    async def alive(self) -> bool:
        return await self.s._kernel_alive()

    async def interrupt(self) -> None:
        if self.s._km is not None:
            try:
                await self.s._km.interrupt_kernel()
            except (RuntimeError, OSError) as exc:
                log.warning("interrupt failed: %s", exc)

    async def kill(self) -> None:
        await self.s._kill_kernel(note="killed after ignoring an interrupt")

    def exit_description(self) -> str:
        return self.s._exit_description()


class LocalKernelSession(KernelSession):
    """One ipykernel in its own working directory, sandboxed, on this machine.

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
                 default_timeout: float | None = None, kernel_argv: Sequence[str] = IPYKERNEL_ARGV,
                 extra_env: dict[str, str] | None = None, keep_workdir: bool = False) -> None:
        self.files = list(files)
        self.limits = limits or Limits()
        self.text_view = text_view or TextViewConfig()
        self.startup_code = startup_code
        self.sandbox = sandbox
        self.default_timeout = default_timeout
        self.kernel_argv = list(kernel_argv)
        self.extra_env = dict(extra_env or {})
        self.keep_workdir = keep_workdir
        self._workdir_arg = workdir
        self.cwd = Path(workdir) if workdir is not None else Path()
        self._own_workdir = False
        self._runtime: Path | None = None
        self._km: AsyncKernelManager | None = None
        self._kc: Any = None
        self._bwrap: str | None = None
        self._started = False
        self._closed = False
        self._death_note = ""
        self._lock = asyncio.Lock()
        self.history: list[str] = []  # cells that ran ok, in order (what a replay fork re-runs)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._closed:
            raise KernelError("session is closed")
        if self._started:
            return
        place_check = list(self.files)
        self.cwd, _ = make_workdir(self._workdir_arg)
        self._own_workdir = self._workdir_arg is None  # a directory the caller named is never removed
        self._runtime = Path(tempfile.mkdtemp(prefix="nak-")).resolve()
        try:
            place_files(place_check, self.cwd)
            prepare_runtime(self._runtime)
            self._bwrap = use_bwrap(self.sandbox)
            await self._start_kernel()
        except BaseException:
            await self.close()
            raise
        self._started = True

    @property
    def isolated(self) -> bool:
        """Whether the kernel runs under bubblewrap."""
        return self._bwrap is not None

    @property
    def isolation(self) -> dict[str, Any]:
        return {"isolated": self.isolated, "mode": self.sandbox, "backend": "local"}

    @property
    def pid(self) -> int | None:
        """Host pid of the kernel's top process (the launcher, exec'd into bwrap or the kernel)."""
        prov = getattr(self._km, "provisioner", None)
        proc = getattr(prov, "process", None)
        return proc.pid if proc is not None else None

    @property
    def connection_info(self) -> dict[str, Any]:
        if self._km is None:
            raise KernelError("no kernel running")
        return self._km.get_connection_info()

    async def _start_kernel(self) -> None:
        assert self._runtime is not None
        paths = SandboxPaths(workdir=self.cwd, runtime=self._runtime)
        argv = sandbox_command(self.kernel_argv, paths, self.limits, self._bwrap)
        spec_dir = self._runtime / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {"argv": argv, "display_name": "notebook-agent (sandboxed)", "language": "python",
                # Under bubblewrap the kernel is in its own PID namespace: ask it to interrupt
                # itself (control-channel message) rather than signalling a process group.
                "interrupt_mode": "message" if self._bwrap else "signal", "env": {}}
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        ksm = KernelSpecManager(kernel_dirs=[str(self._runtime / "kernels")], ensure_native_kernel=False)
        self._km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm, transport="ipc",
                                      ip=str(self._runtime / "k"),
                                      connection_file=str(self._runtime / "connection.json"))
        env = kernel_env(self.cwd, self._runtime, self.limits, self.extra_env)
        log_file = open(self._runtime / "kernel.log", "ab")
        try:
            await self._km.start_kernel(env=env, cwd=str(self.cwd), stdout=log_file, stderr=log_file)
        finally:
            log_file.close()
        self._kc = self._km.client()
        self._kc.start_channels()
        try:
            await self._kc.wait_for_ready(timeout=START_TIMEOUT_S)
        except (RuntimeError, TimeoutError) as exc:
            raise KernelError(f"kernel failed to start: {exc}\n{self._log_tail()}") from exc
        self._death_note = ""
        if self.startup_code:
            reply = await self._kc.execute(self.startup_code, silent=True, store_history=False,
                                           reply=True, timeout=START_TIMEOUT_S)
            content = reply["content"]
            if content.get("status") != "ok":
                raise KernelError(f"startup code failed: {content.get('ename')}: {content.get('evalue')}")

    def _log_tail(self, n: int = 2000) -> str:
        try:
            return (self._runtime / "kernel.log").read_text(errors="replace")[-n:]  # type: ignore[operator]
        except OSError:
            return ""

    async def _kernel_alive(self) -> bool:
        return self._km is not None and self._km.has_kernel and await self._km.is_alive()

    def _exit_description(self) -> str:
        if self._death_note:
            return self._death_note
        prov = getattr(self._km, "provisioner", None)
        proc = getattr(prov, "process", None)
        return describe_exit(proc.poll() if proc is not None else None)

    async def _kill_kernel(self, note: str = "") -> None:
        """Kill the kernel and every process it started; keep the working directory."""
        if note:
            self._death_note = note
        pids = process_tree(self.pid)
        if self._kc is not None:
            self._kc.stop_channels()
            self._kc = None
        if self._km is not None:
            if self._km.has_kernel:
                try:
                    await self._km.shutdown_kernel(now=True)
                except Exception as exc:  # noqa: BLE001 - the process may already be gone
                    log.debug("shutdown_kernel: %s", exc)
            self._km = None
        kill_tree(pids)

    async def restart(self) -> None:
        if self._closed:
            raise KernelError("session is closed")
        async with self._lock:
            await self._kill_kernel()
            await self._start_kernel()
            self.history.clear()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._kill_kernel()
        remove_tree(self._runtime)
        if self._own_workdir and not self.keep_workdir:
            remove_tree(self.cwd)

    @property
    def is_alive(self) -> bool:
        if self._km is None or not self._km.has_kernel:
            return False
        proc = getattr(self._km.provisioner, "process", None)
        return proc is not None and proc.poll() is None

    # -- execution -----------------------------------------------------------------------------
    async def execute(self, code: str, timeout: float | None = None) -> ExecutionResult:
        if self._closed or not self._started:
            raise KernelError("session is closed" if self._closed else "session not started: await start() first")
        async with self._lock:
            if not await self._kernel_alive():
                return dead_result(code, self._exit_description(), self.text_view)
            result = await run_cell(_JupyterChannel(self), code,
                                    timeout if timeout is not None else self.default_timeout,
                                    self.limits, self.text_view)
            if result.status == "ok":
                self.history.append(code)
            return result

    async def fork(self) -> "LocalKernelSession":
        """Replay fallback: a new kernel, a copy of the working directory, the ok cells re-run.

        ipykernel cannot fork; this costs as much as re-running the cells. Use the forking backend
        (`ForkingKernelSession`) for tree search.
        """
        if self._closed or not self._started:
            raise KernelError("cannot fork a session that is not running")
        child = LocalKernelSession(limits=self.limits, text_view=self.text_view,
                                   startup_code=self.startup_code, sandbox=self.sandbox,
                                   default_timeout=self.default_timeout, kernel_argv=self.kernel_argv,
                                   extra_env=self.extra_env)
        workdir, _ = make_workdir(None)
        copy_workdir(self.cwd, workdir)
        child._workdir_arg, child.keep_workdir = workdir, False
        await child.start()
        child._own_workdir = True
        for code in self.history:
            res = await child.execute(code)
            if not res.ok:
                log.warning("replaying a cell for fork() failed (%s); the branch may differ", res.status)
        return child
