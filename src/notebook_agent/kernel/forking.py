"""A kernel that forks: cheap, independent branches for tree search.

ipykernel cannot be forked (threads, ZeroMQ sockets). Our worker (`fork_worker.py`) is an IPython
`InteractiveShell` in a single-threaded process that talks to the host over a Unix socket, so
magics, `display()`, rich reprs and inline matplotlib PNGs work, and its outputs are nbformat
dicts like ipykernel's. `fork()` asks the worker to `os.fork()`: the child shares memory
copy-on-write, so the cost depends on the process size, not on how many cells ran. The working
directory is copied for the child (files never leak between parent, child and siblings).

All sessions forked from one root share a "family": one supervisor process in one sandbox, and
one listening socket on the host. Closing a session kills only its worker; the family ends with
its last session.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import psutil

from .base import ExecutionResult, SandboxMode, KernelDiedError, KernelError, KernelSession, Limits, TextViewConfig
from .cell import dead_result, run_cell
from .procs import kill_tree, process_tree
from .sandbox import SandboxPaths, kernel_env, prepare_runtime, sandbox_command, use_bwrap
from .workspace import PathLike, copy_workdir, make_workdir, place_files, remove_tree

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("fork_worker.py")
START_TIMEOUT_S = 60.0
FORK_TIMEOUT_S = 60.0
_EOF: dict[str, Any] = {"type": "eof"}


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> dict[str, Any]:
    """One length-prefixed JSON frame; an oversized one is skipped and reported as such."""
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    if n > max_bytes:
        left = n
        while left:
            left -= len(await reader.read(min(left, 1 << 20)) or b"x" * left)
        return {"type": "oversize", "bytes": n}
    return json.loads(await reader.readexactly(n))


def write_frame(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    data = json.dumps(obj).encode()
    writer.write(struct.pack(">I", len(data)) + data)


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int           # the worker's pid as the host sees it (SO_PEERCRED), even across PID namespaces
    cwd: str


class _Family:
    """One supervisor process (in one sandbox) and the host socket its workers connect to."""

    def __init__(self, limits: Limits, bwrap: str | None, extra_env: dict[str, str]) -> None:
        self.limits, self.bwrap, self.extra_env = limits, bwrap, extra_env
        self.runtime = Path(tempfile.mkdtemp(prefix="naf-")).resolve()
        self.forks_dir = self.runtime / "forks"
        self.sock_path = str(self.runtime / "s")
        self.proc: subprocess.Popen[bytes] | None = None
        self.server: asyncio.AbstractServer | None = None
        self.members = 0
        self._pending: dict[str, asyncio.Future[_Conn]] = {}
        self._fork_ids = itertools.count(1)

    async def start(self, workdir: Path) -> None:
        prepare_runtime(self.runtime)
        self.forks_dir.mkdir()
        self.server = await asyncio.start_unix_server(self._on_connect, path=self.sock_path)
        argv = [sys.executable, str(WORKER), "--socket", self.sock_path, "--token", "root"]
        paths = SandboxPaths(workdir=workdir, runtime=self.runtime)
        cmd = sandbox_command(argv, paths, self.limits, self.bwrap)
        env = kernel_env(workdir, self.runtime, self.limits, self.extra_env)
        with open(self.runtime / "worker.log", "ab") as log_file:
            self.proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdin=subprocess.DEVNULL,
                                         stdout=log_file, stderr=log_file, start_new_session=True)

    def expect(self, token: str) -> asyncio.Future[_Conn]:
        fut: asyncio.Future[_Conn] = asyncio.get_running_loop().create_future()
        self._pending[token] = fut
        return fut

    async def wait_for(self, token: str, fut: asyncio.Future[_Conn], timeout: float) -> _Conn:
        """The connection of a new worker; fails fast if the supervisor dies first."""
        end = time.monotonic() + timeout
        try:
            while True:
                done, _ = await asyncio.wait({fut}, timeout=0.1)
                if done:
                    return fut.result()
                if self.proc is None or self.proc.poll() is not None:
                    raise KernelError(f"the forking kernel exited during start-up:\n{self.log_tail()}")
                if time.monotonic() > end:
                    raise KernelError(f"no worker connected within {timeout:g} s:\n{self.log_tail()}")
        finally:
            self._pending.pop(token, None)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = await asyncio.wait_for(read_frame(reader, 1 << 20), 30)
            raw = writer.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             struct.calcsize("3i"))
            pid = struct.unpack("3i", raw)[0]
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, struct.error):
            writer.close()
            return
        fut = self._pending.get(str(hello.get("token")))
        if fut is None or fut.done():
            writer.close()  # nobody asked for this worker
            return
        fut.set_result(_Conn(reader, writer, pid, str(hello.get("cwd", ""))))

    def new_fork_dir(self) -> Path:
        return self.forks_dir / f"f{next(self._fork_ids)}"

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.runtime / "worker.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    async def release(self) -> None:
        self.members -= 1
        if self.members <= 0:
            await self.close()

    async def close(self) -> None:
        if self.proc is not None:
            kill_tree(process_tree(self.proc.pid))
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("forking kernel supervisor %d did not exit", self.proc.pid)
            self.proc = None
        if self.server is not None:
            self.server.close()
            self.server = None
        for fut in self._pending.values():
            fut.cancel()
        remove_tree(self.runtime)


class _WorkerChannel:
    """`CellChannel` over a worker connection."""

    def __init__(self, session: "ForkingKernelSession") -> None:
        self.s = session

    async def send(self, code: str) -> str:
        return str(await self.s._send_op("execute", code=code))

    async def receive(self, cell_id: str, timeout: float) -> tuple[str, dict[str, Any]] | None:
        end = time.monotonic() + timeout
        while True:
            frame = await self.s._next_frame(max(end - time.monotonic(), 0))
            if frame is None:
                return None
            if frame.get("type") == "oversize":
                return "stream", {"name": "stderr", "text": f"[an output of {frame['bytes'] / 1e6:.1f} MB was dropped]\n"}
            if str(frame.get("id")) != cell_id:
                continue
            if frame["type"] == "done":
                return "done", frame
            if frame["type"] == "msg":
                return frame["msg_type"], frame["content"]

    async def alive(self) -> bool:
        return self.s.is_alive

    async def interrupt(self) -> None:
        self.s._signal(signal.SIGINT)

    async def kill(self) -> None:
        await self.s._kill_worker("killed after ignoring an interrupt")

    def exit_description(self) -> str:
        return self.s._death_note or "its process exited or was killed; it may have run out of memory"


class ForkingKernelSession(KernelSession):
    """A session on our forking IPython worker. Same options as `LocalKernelSession`."""

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
        self._family: _Family | None = None
        self._conn: _Conn | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1024)
        self._reader_task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._started = False
        self._closed = False
        self._death_note = ""
        self.history: list[str] = []  # cells that ran ok (for reference; forks do not replay them)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._closed:
            raise KernelError("session is closed")
        if self._started:
            return
        self.cwd, _ = make_workdir(self._workdir_arg)
        self._own_workdir = self._workdir_arg is None  # a directory the caller named is never removed
        try:
            place_files(self.files, self.cwd)
            await self._start_family()
        except BaseException:
            await self.close()
            raise
        self._started = True

    async def _start_family(self) -> None:
        family = _Family(self.limits, use_bwrap(self.sandbox), self.extra_env)
        self._family = family
        family.members += 1
        fut = family.expect("root")
        await family.start(self.cwd)
        self._attach(await family.wait_for("root", fut, START_TIMEOUT_S))
        if self.startup_code:
            await self._run_startup()

    async def _run_startup(self) -> None:
        cell_id = await self._send_op("execute", code=self.startup_code, silent=True)
        while True:
            frame = await self._next_frame(START_TIMEOUT_S)
            if frame is None or frame is _EOF:
                raise KernelError(f"startup code did not finish: {self._death_note or 'no reply'}")
            if frame.get("type") == "done" and frame.get("id") == cell_id:
                if frame.get("status") != "ok":
                    raise KernelError(f"startup code failed: {frame.get('ename')}: {frame.get('evalue')}")
                return

    def _attach(self, conn: _Conn) -> None:
        self._conn = conn
        self._death_note = ""
        self._inbox = asyncio.Queue(maxsize=1024)
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(conn, self._inbox))

    async def _read_loop(self, conn: _Conn, inbox: asyncio.Queue[dict[str, Any]]) -> None:
        max_frame = int(2 * self.limits.max_output_mb * 1e6) + (1 << 20)
        try:
            while True:
                await inbox.put(await read_frame(conn.reader, max_frame))
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            pass
        finally:
            try:
                inbox.put_nowait(_EOF)
            except asyncio.QueueFull:
                pass

    async def _next_frame(self, timeout: float) -> dict[str, Any] | None:
        """The next frame from the worker, None on timeout; raises KernelDiedError at EOF."""
        try:
            frame = await asyncio.wait_for(self._inbox.get(), timeout) if timeout > 0 else self._inbox.get_nowait()
        except (asyncio.TimeoutError, asyncio.QueueEmpty):
            return None
        if frame is _EOF:
            self._inbox.put_nowait(_EOF)  # stays dead for later readers
            raise KernelDiedError(self._death_note or "worker connection closed")
        return frame

    async def _send_op(self, op: str, **fields: Any) -> int:
        if self._conn is None:
            raise KernelDiedError("no worker")
        msg_id = next(self._ids)
        fields.setdefault("max_output_bytes", int(self.limits.max_output_mb * 1e6))
        write_frame(self._conn.writer, {"op": op, "id": msg_id, **fields})
        try:
            await self._conn.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise KernelDiedError(str(exc)) from exc
        return msg_id

    @property
    def pid(self) -> int | None:
        """The worker's host pid."""
        return self._conn.pid if self._conn else None

    @property
    def isolated(self) -> bool:
        return self._family is not None and self._family.bwrap is not None

    @property
    def isolation(self) -> dict[str, Any]:
        return {"isolated": self.isolated, "mode": self.sandbox, "backend": "forking"}

    @property
    def is_alive(self) -> bool:
        if self._conn is None:
            return False
        try:
            return psutil.Process(self._conn.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _signal(self, sig: int) -> None:
        if self._conn is None:
            return
        try:
            os.killpg(os.getpgid(self._conn.pid), sig)  # the worker and what it started
        except OSError:
            try:
                os.kill(self._conn.pid, sig)
            except OSError:
                pass

    async def _kill_worker(self, note: str = "") -> None:
        if note:
            self._death_note = note
        conn, self._conn = self._conn, None
        if conn is None:
            return
        pids = process_tree(conn.pid)
        self._signal_pid_group(conn.pid)
        kill_tree(pids)
        conn.writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            self._reader_task = None
        try:
            self._inbox.put_nowait(_EOF)
        except asyncio.QueueFull:
            pass

    @staticmethod
    def _signal_pid_group(pid: int) -> None:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except OSError:
            pass

    async def restart(self) -> None:
        if self._closed:
            raise KernelError("session is closed")
        async with self._lock:
            await self._kill_worker()
            if self._family is not None:
                await self._family.release()
            self.history.clear()
            await self._start_family()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._kill_worker()
        if self._family is not None:
            await self._family.release()
            self._family = None
        if self._own_workdir and not self.keep_workdir:
            remove_tree(self.cwd)

    # -- execution -----------------------------------------------------------------------------
    async def execute(self, code: str, timeout: float | None = None) -> ExecutionResult:
        if self._closed or not self._started:
            raise KernelError("session is closed" if self._closed else "session not started: await start() first")
        async with self._lock:
            if not self.is_alive:
                return dead_result(code, _WorkerChannel(self).exit_description(), self.text_view)
            result = await run_cell(_WorkerChannel(self), code,
                                    timeout if timeout is not None else self.default_timeout,
                                    self.limits, self.text_view)
            if result.status == "ok":
                self.history.append(code)
            return result

    async def fork(self) -> "ForkingKernelSession":
        """A child with the same variables (copy-on-write) and a copy of the working directory."""
        if self._closed or not self._started:
            raise KernelError("cannot fork a session that is not running")
        async with self._lock:
            family = self._family
            if family is None or not self.is_alive:
                raise KernelError(f"cannot fork: the kernel is dead ({self._death_note or 'exited'}); restart() first")
            new_cwd = family.new_fork_dir()
            await asyncio.to_thread(copy_workdir, self.cwd, new_cwd)
            token = secrets.token_hex(8)
            fut = family.expect(token)
            try:
                fork_id = await self._send_op("fork", cwd=str(new_cwd), token=token, socket=family.sock_path)
                while True:
                    frame = await self._next_frame(FORK_TIMEOUT_S)
                    if frame is None:
                        raise KernelError("the worker did not answer the fork request")
                    if frame.get("id") == fork_id and frame["type"] in ("forked", "fork_failed"):
                        break
                if frame["type"] == "fork_failed":
                    raise KernelError(f"fork failed in the worker: {frame.get('error')}")
                conn = await family.wait_for(token, fut, FORK_TIMEOUT_S)
            except KernelDiedError as exc:
                remove_tree(new_cwd)
                raise KernelError(f"cannot fork: the kernel died ({exc})") from exc
            except BaseException:
                remove_tree(new_cwd)
                raise
        child = ForkingKernelSession(limits=self.limits, text_view=self.text_view,
                                     startup_code=self.startup_code, sandbox=self.sandbox,
                                     default_timeout=self.default_timeout, extra_env=self.extra_env)
        child.cwd, child._own_workdir = new_cwd, True
        child._family = family
        family.members += 1
        child._attach(conn)
        child.history = list(self.history)
        child._started = True
        return child
