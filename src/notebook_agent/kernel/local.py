"""A local ipykernel, started and driven through jupyter_client, inside our sandbox.

The kernel is started from a private kernelspec whose argv is the sandbox command (launcher,
bubblewrap when available, launcher again, then `ipykernel_launcher`). It talks to the host over
ZeroMQ `ipc` sockets: Unix sockets keep working when the kernel has no network namespace, and
need no TCP ports. The sockets live in a directory made fresh for each launch; the kernel must
be able to create them there, so the host connects only once ipykernel (before any user code)
has made all five, after checking each is a socket and not a link, and never reconnects: a
kernel that later swaps a socket for a link to something else finds nobody following it. The
connection file, kernelspec and log stay in the host-private run directory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import psutil
import zmq
import zmq.asyncio
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from .base import KernelDiedError, KernelError
from .cell import CellChannel
from .lifecycle import SandboxedSession
from .sandbox import RUN_DIR, SCRATCH, SandboxPaths, kernel_env, sandbox_command
from .workspace import copy_workdir, make_workdir

log = logging.getLogger(__name__)

KERNEL_NAME = "notebook-agent-python"
IPYKERNEL_ARGV = (sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}")
START_TIMEOUT_S = 60.0
PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


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
    """`CellChannel` over a jupyter_client client."""

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
        return await self.s._alive()

    async def interrupt(self) -> None:
        self.s._interrupt()

    async def kill(self) -> None:
        await self.s._kill(note="killed after ignoring an interrupt")

    def exit_description(self) -> str:
        return self.s._exit_description()


class LocalKernelSession(SandboxedSession):
    """One ipykernel in its own working directory, sandboxed, on this machine.

    Options are `SandboxedSession`'s, plus `kernel_argv` (the kernel's command; "{connection_file}"
    is replaced by the path of the connection file as the kernel sees it).
    """

    backend = "local"

    def __init__(self, *args: Any, kernel_argv: Sequence[str] = IPYKERNEL_ARGV, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kernel_argv = list(kernel_argv)
        self._km: AsyncKernelManager | None = None
        self._kc: Any = None
        self._ctx: zmq.asyncio.Context | None = None
        self._launches = 0

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

    # -- hooks -----------------------------------------------------------------------------------
    async def _launch(self) -> None:
        assert self.run_dir is not None
        self._launches += 1
        n = self._launches
        uid = self.confinement.uid
        # Kernel-writable: the sockets' directory, fresh for each launch.
        sock_dir = self.run_dir / f"sock{n}"
        sock_dir.mkdir(mode=0o700)
        if uid is not None:
            os.chown(sock_dir, uid, uid)
        conn_file = self.run_dir / f"connection{n}.json"
        bwrap = self.confinement.bwrap is not None
        if bwrap:
            paths = SandboxPaths(workdir=self.cwd, writable=[sock_dir],
                                 read_only={conn_file: f"{RUN_DIR}/connection.json"})
            paths.read_only.update(self.identity_files)
            scratch: str | Path = SCRATCH
            argv = [a.replace("{connection_file}", f"{RUN_DIR}/connection.json") for a in self.kernel_argv]
        else:
            paths = SandboxPaths(workdir=self.cwd)
            scratch = self.run_dir / f"scratch{n}"
            argv = list(self.kernel_argv)
        cgroup = self._new_cgroup()
        cmd = sandbox_command(argv, paths, self.limits, self.confinement,
                              cgroup.procs_files if cgroup else ())
        spec_dir = self.run_dir / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {"argv": cmd, "display_name": "notebook-agent (sandboxed)", "language": "python",
                "interrupt_mode": "signal", "env": {}}
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        ksm = KernelSpecManager(kernel_dirs=[str(self.run_dir / "kernels")], ensure_native_kernel=False)
        # No reconnects: a socket path is resolved once, when we know what it is.
        self._ctx = zmq.asyncio.Context()
        self._ctx.setsockopt(zmq.RECONNECT_IVL, -1)
        self._km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm, transport="ipc",
                                      ip=str(sock_dir / "k"), connection_file=str(conn_file),
                                      context=self._ctx)
        self._km.write_connection_file()  # written once, here, and made readable by the kernel's user
        if uid is not None:
            os.chown(conn_file, uid, uid)
        env = kernel_env(self.cwd, scratch, self.limits, self.extra_env)
        with open(self.run_dir / "kernel.log", "ab") as log_file:
            await self._km.start_kernel(env=env, cwd=str(self.cwd), stdout=log_file, stderr=log_file)
        await self._await_sockets(sock_dir)
        self._kc = self._km.client(context=self._ctx)
        self._kc.start_channels(hb=False)
        try:
            await self._kc.wait_for_ready(timeout=START_TIMEOUT_S)
        except (RuntimeError, TimeoutError) as exc:
            raise KernelError(f"kernel failed to start: {exc}\n{self._log_tail()}") from exc

    async def _await_sockets(self, sock_dir: Path) -> None:
        """Wait until the kernel has bound its five sockets; refuse anything but sockets."""
        assert self._km is not None
        info = self._km.get_connection_info()
        names = [f"k-{info[p]}" for p in PORTS]
        end = time.monotonic() + START_TIMEOUT_S
        while True:
            ready = 0
            for name in names:
                try:
                    st = os.lstat(sock_dir / name)
                except FileNotFoundError:
                    continue
                if not stat.S_ISSOCK(st.st_mode):
                    raise KernelError(f"kernel start-up: {name} is not a socket")
                ready += 1
            if ready == len(names):
                return
            if not await self._alive():
                raise KernelError(f"kernel failed to start: {self._exit_description()}\n{self._log_tail()}")
            if time.monotonic() > end:
                raise KernelError(f"kernel failed to start within {START_TIMEOUT_S:g} s\n{self._log_tail()}")
            await asyncio.sleep(0.01)

    async def _startup(self, code: str) -> None:
        reply = await self._kc.execute(code, silent=True, store_history=False, reply=True, timeout=START_TIMEOUT_S)
        content = reply["content"]
        if content.get("status") != "ok":
            raise KernelError(f"startup code failed: {content.get('ename')}: {content.get('evalue')}")

    def _channel(self) -> CellChannel:
        return _JupyterChannel(self)

    async def _alive(self) -> bool:
        return self._km is not None and self._km.has_kernel and await self._km.is_alive()

    def _interrupt(self) -> None:
        """SIGINT to ipykernel itself (a grandchild in its own PID namespace and session, where
        a signal to the launcher's process group would not reach it)."""
        procs = _children(self.pid)
        target = next((p for p in procs if _is_kernel(p)), procs[0] if procs else None)
        if target is None:
            log.warning("interrupt: no kernel process found under %s", self.pid)
            return
        try:
            os.kill(target.pid, signal.SIGINT)
        except OSError as exc:
            log.warning("interrupt failed: %s", exc)

    async def _kill(self, note: str = "") -> None:
        if note:
            self._death_note = note
        self._kill_processes()
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
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None

    def _exit_description(self) -> str:
        if self._death_note:
            return self._death_note
        oom = self._oom_note()
        if oom:
            return oom
        prov = getattr(self._km, "provisioner", None)
        proc = getattr(prov, "process", None)
        return describe_exit(proc.poll() if proc is not None else None)

    def _log_tail(self, n: int = 2000) -> str:
        try:
            return (self.run_dir / "kernel.log").read_text(errors="replace")[-n:]  # type: ignore[operator]
        except OSError:
            return ""

    @property
    def is_alive(self) -> bool:
        if self._km is None or not self._km.has_kernel:
            return False
        proc = getattr(self._km.provisioner, "process", None)
        return proc is not None and proc.poll() is None

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
        copy_workdir(self.cwd, workdir, create=False)
        child._workdir_arg, child.keep_workdir = workdir, False
        await child.start()
        child._own_workdir = True
        for code in self.history:
            res = await child.execute(code)
            if not res.ok:
                log.warning("replaying a cell for fork() failed (%s); the branch may differ", res.status)
        return child


def _is_kernel(proc: psutil.Process) -> bool:
    try:
        return "ipykernel_launcher" in proc.cmdline()[1:3]
    except psutil.Error:
        return False


def _children(pid: int | None) -> list[psutil.Process]:
    """The process and its descendants."""
    try:
        proc = psutil.Process(pid) if pid else None
        return [proc, *proc.children(recursive=True)] if proc else []
    except psutil.Error:
        return []
