"""A kernel that forks: cheap, independent branches for tree search.

ipykernel cannot be forked (threads, ZeroMQ sockets). Our worker (`fork_worker.py`) is an IPython
`InteractiveShell` in a single-threaded process that talks to the host over a Unix socket, so
magics, `display()`, rich reprs and inline matplotlib PNGs work, and its outputs are nbformat
dicts like ipykernel's. `fork()` asks the worker to `os.fork()`: the child shares memory
copy-on-write, so the cost depends on the process size, not on how many cells ran. The working
directory is copied for the child (files never leak between parent, child and siblings).

All sessions forked from one root share a "family": one supervisor process in one sandbox (one
uid, one cgroup for the whole tree). Closing a session kills only its worker; the family ends
with its last session.

The control channel is a socketpair per worker, never a path: the root worker inherits its end
at start, and each fork's end travels to the parent worker with the fork request (SCM_RIGHTS).
No listening socket exists that user code could connect to. The host learns each worker's pid
from the kernel (SCM_CREDENTIALS), not from what the worker says, and buffers a bounded number
of bytes per worker, so a worker that floods its own channel with forged frames only blocks
itself.
"""

from __future__ import annotations

import array
import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from .base import KernelDiedError, KernelError, Limits
from .cell import CellChannel
from .cgroup import Cgroup
from .lifecycle import SandboxedSession
from .procs import kill_tree, process_tree
from .sandbox import SCRATCH, Confinement, SandboxPaths, kernel_env, private_dir, sandbox_command, write_identity
from .workspace import copy_workdir, remove_tree

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("fork_worker.py")
START_TIMEOUT_S = 60.0
FORK_TIMEOUT_S = 60.0
HELLO_MAX_BYTES = 4096
_EOF: dict[str, Any] = {"type": "eof"}
_UCRED = struct.Struct("3i")


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> tuple[dict[str, Any], int]:
    """One length-prefixed JSON frame and its size; an oversized one is skipped and reported
    as such."""
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    if n > max_bytes:
        left = n
        while left:
            chunk = await reader.read(min(left, 1 << 20))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(chunk)
        return {"type": "oversize", "bytes": n}, 0
    return json.loads(await reader.readexactly(n)), n


def _frame(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj).encode()
    return struct.pack(">I", len(data)) + data


def _channel_pair() -> tuple[socket.socket, socket.socket]:
    """(host end, worker end); the host end reports each sender's credentials."""
    host, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    host.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return host, worker


def _read_hello(sock: socket.socket, timeout: float) -> int:
    """Block for the worker's hello; return its host pid as the kernel reports it."""
    sock.settimeout(timeout)
    head, anc, _, _ = sock.recvmsg(4, socket.CMSG_SPACE(_UCRED.size))
    pid = None
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = _UCRED.unpack(data[:_UCRED.size])[0]
    if len(head) < 4 or pid is None:
        raise KernelError("the worker closed its channel before saying hello")
    (n,) = struct.unpack(">I", head if len(head) == 4 else head + sock.recv(4 - len(head)))
    if n > HELLO_MAX_BYTES:
        raise KernelError("the worker's hello is malformed")
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            raise KernelError("the worker closed its channel during hello")
        body += chunk
    if json.loads(body).get("type") != "hello":
        raise KernelError("the worker's first frame is not a hello")
    sock.settimeout(None)
    sock.setblocking(False)
    return pid


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sock: socket.socket
    pid: int           # the worker's host pid, from SCM_CREDENTIALS


async def _connect(sock: socket.socket, timeout: float, why_dead: Any) -> _Conn:
    try:
        pid = await asyncio.to_thread(_read_hello, sock, timeout)
    except (OSError, ValueError) as exc:
        sock.close()
        raise KernelError(f"no worker answered ({exc}):\n{why_dead()}") from exc
    except BaseException:
        sock.close()
        raise
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    return _Conn(reader, writer, sock, pid)


class _Family:
    """One supervisor process in one sandbox, and the directory forks work in."""

    def __init__(self, limits: Limits, confinement: Confinement, extra_env: dict[str, str]) -> None:
        self.limits, self.confinement, self.extra_env = limits, confinement, extra_env
        self.run_dir = private_dir("na-fam-")
        # Forks' working directories: the host makes each (random name, owned by the sandbox's
        # user); the directory itself stays the host's, so the kernel cannot add names to it.
        self.forks_dir = self.run_dir / "forks"
        self.forks_dir.mkdir(mode=0o755)
        self.proc: subprocess.Popen[bytes] | None = None
        self.cgroup: Cgroup | None = None
        self.members = 0

    async def start(self, workdir: Path) -> _Conn:
        uid = self.confinement.uid
        self.cgroup = Cgroup.create(self.limits.memory_mb, self.limits.max_processes)
        self.confinement.cgroup = self.cgroup.describe() if self.cgroup else None
        host_end, worker_end = _channel_pair()
        fd = worker_end.fileno()
        argv = [sys.executable, "-I", str(WORKER), "--fd", str(fd)]
        if self.confinement.bwrap:
            paths = SandboxPaths(workdir=workdir, writable=[self.forks_dir])
            if uid is not None:
                paths.read_only.update(write_identity(self.run_dir, uid, workdir))
            scratch: str | Path = SCRATCH
        else:
            paths, scratch = SandboxPaths(workdir=workdir), self.run_dir / "scratch"
        cmd = sandbox_command(argv, paths, self.limits, self.confinement,
                              self.cgroup.procs_files if self.cgroup else ())
        env = kernel_env(workdir, scratch, self.limits, self.extra_env)
        try:
            with open(self.run_dir / "worker.log", "ab") as log_file:
                self.proc = subprocess.Popen(cmd, env=env, cwd="/", stdin=subprocess.DEVNULL,
                                             stdout=log_file, stderr=log_file, start_new_session=True,
                                             pass_fds=(fd,))
        finally:
            worker_end.close()
        return await _connect(host_end, START_TIMEOUT_S, self.log_tail)

    def new_fork_dir(self) -> Path:
        return self.forks_dir / f"f-{secrets.token_hex(8)}"

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.run_dir / "worker.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    async def release(self) -> None:
        self.members -= 1
        if self.members <= 0:
            await self.close()

    async def close(self) -> None:
        if self.proc is not None:
            kill_tree(process_tree(self.proc.pid))
            if self.cgroup is not None:
                self.cgroup.kill_all()
            try:
                await asyncio.to_thread(self.proc.wait, 5)
            except subprocess.TimeoutExpired:
                log.warning("forking kernel supervisor %d did not exit", self.proc.pid)
            self.proc = None
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        remove_tree(self.run_dir)


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
            if frame.get("type") == "done":
                return "done", frame
            if frame.get("type") == "msg" and isinstance(frame.get("content"), dict):
                return str(frame.get("msg_type")), frame["content"]

    async def alive(self) -> bool:
        return await self.s._alive()

    async def interrupt(self) -> None:
        self.s._signal(signal.SIGINT)

    async def kill(self) -> None:
        await self.s._kill("killed after ignoring an interrupt")

    def exit_description(self) -> str:
        return self.s._death_note or "its process exited or was killed; it may have run out of memory"


class ForkingKernelSession(SandboxedSession):
    """A session on our forking IPython worker. Same options as `SandboxedSession`."""

    backend = "forking"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._family: _Family | None = None
        self._conn: _Conn | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._inbox_bytes = 0
        self._inbox_room = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None
        self._ids = iter(range(1, 1 << 62))

    @property
    def pid(self) -> int | None:
        """The worker's host pid."""
        return self._conn.pid if self._conn else None

    @property
    def _buffer_budget(self) -> int:
        """Bytes of frames buffered per worker before the host stops reading it."""
        return int(2 * self.limits.max_output_mb * 1e6) + (1 << 20)

    # -- hooks -----------------------------------------------------------------------------------
    async def _launch(self) -> None:
        if self._family is not None:
            await self._family.release()
        family = _Family(self.limits, Confinement(self.confinement.mode, self.confinement.bwrap,
                                                  self.confinement.uid), self.extra_env)
        self._family = family
        family.members += 1
        self._attach(await family.start(self.cwd))
        self.confinement = family.confinement

    async def _startup(self, code: str) -> None:
        cell_id = await self._send_op("execute", code=code, silent=True)
        while True:
            frame = await self._next_frame(START_TIMEOUT_S)
            if frame is None or frame is _EOF:
                raise KernelError(f"startup code did not finish: {self._death_note or 'no reply'}")
            if frame.get("type") == "done" and frame.get("id") == cell_id:
                if frame.get("status") != "ok":
                    raise KernelError(f"startup code failed: {frame.get('ename')}: {frame.get('evalue')}")
                return

    def _channel(self) -> CellChannel:
        return _WorkerChannel(self)

    async def _alive(self) -> bool:
        return self.is_alive

    async def _kill(self, note: str = "") -> None:
        if note:
            self._death_note = note
        conn, self._conn = self._conn, None
        if conn is None:
            return
        pids = process_tree(conn.pid)
        try:
            os.killpg(os.getpgid(conn.pid), signal.SIGKILL)  # the worker and what it started
        except OSError:
            pass
        kill_tree(pids)
        conn.writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            self._reader_task = None
        self._inbox.put_nowait(_EOF)

    async def _release(self) -> None:
        if self._family is not None:
            await self._family.release()
            self._family = None

    # -- the channel -----------------------------------------------------------------------------
    def _attach(self, conn: _Conn) -> None:
        self._conn = conn
        self._inbox = asyncio.Queue()
        self._inbox_bytes = 0
        self._inbox_room = asyncio.Event()
        self._inbox_room.set()
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(conn))

    async def _read_loop(self, conn: _Conn) -> None:
        inbox = self._inbox
        try:
            while True:
                await self._inbox_room.wait()
                frame, size = await read_frame(conn.reader, self._buffer_budget)
                if not isinstance(frame, dict):
                    raise ValueError("a frame that is not an object")
                frame["_bytes"] = size
                self._inbox_bytes += size
                if self._inbox_bytes > self._buffer_budget:
                    self._inbox_room.clear()  # the worker blocks on its writes until we catch up
                inbox.put_nowait(frame)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            pass
        finally:
            inbox.put_nowait(_EOF)

    async def _next_frame(self, timeout: float) -> dict[str, Any] | None:
        """The next frame from the worker, None on timeout; raises KernelDiedError at EOF."""
        try:
            frame = await asyncio.wait_for(self._inbox.get(), timeout) if timeout > 0 else self._inbox.get_nowait()
        except (asyncio.TimeoutError, asyncio.QueueEmpty):
            return None
        if frame is _EOF:
            self._inbox.put_nowait(_EOF)  # stays dead for later readers
            raise KernelDiedError(self._death_note or "worker connection closed")
        self._inbox_bytes -= frame.pop("_bytes", 0)
        if self._inbox_bytes <= self._buffer_budget:
            self._inbox_room.set()
        return frame

    async def _send_op(self, op: str, fds: tuple[int, ...] = (), **fields: Any) -> int:
        if self._conn is None:
            raise KernelDiedError("no worker")
        msg_id = next(self._ids)
        fields.setdefault("max_output_bytes", int(self.limits.max_output_mb * 1e6))
        data = _frame({"op": op, "id": msg_id, **fields})
        writer = self._conn.writer
        try:
            if not fds:
                writer.write(data)
                await writer.drain()
                return msg_id
            await writer.drain()
            while writer.transport.get_write_buffer_size():
                await asyncio.sleep(0.001)
            await asyncio.to_thread(_send_with_fds, self._conn.sock, data, fds)
        except (ConnectionError, OSError) as exc:
            raise KernelDiedError(str(exc)) from exc
        return msg_id

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

    # -- forking ---------------------------------------------------------------------------------
    async def fork(self) -> "ForkingKernelSession":
        """A child with the same variables (copy-on-write) and a copy of the working directory."""
        if self._closed or not self._started:
            raise KernelError("cannot fork a session that is not running")
        async with self._lock:
            family = self._family
            if family is None or not self.is_alive:
                raise KernelError(f"cannot fork: the kernel is dead ({self._death_note or 'exited'}); restart() first")
            new_cwd = family.new_fork_dir()
            try:
                await asyncio.to_thread(copy_workdir, self.cwd, new_cwd, self.confinement.uid)
                host_end, worker_end = _channel_pair()
                try:
                    fork_id = await self._send_op("fork", fds=(worker_end.fileno(),), cwd=str(new_cwd))
                finally:
                    worker_end.close()
                while True:
                    frame = await self._next_frame(FORK_TIMEOUT_S)
                    if frame is None:
                        host_end.close()
                        raise KernelError("the worker did not answer the fork request")
                    if frame.get("id") == fork_id and frame.get("type") in ("forked", "fork_failed"):
                        break
                if frame["type"] == "fork_failed":
                    host_end.close()
                    raise KernelError(f"fork failed in the worker: {frame.get('error')}")
                conn = await _connect(host_end, FORK_TIMEOUT_S, family.log_tail)
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
        child.confinement = self.confinement
        child.run_dir = private_dir("na-run-")
        child._family = family
        family.members += 1
        child._attach(conn)
        child.history = list(self.history)
        child._started = True
        child._watchdog = asyncio.get_running_loop().create_task(child._watch())
        return child


def _send_with_fds(sock: socket.socket, data: bytes, fds: tuple[int, ...]) -> None:
    """Send one frame with file descriptors attached to its first byte."""
    end = time.monotonic() + 10
    sent = 0
    while sent < len(data):
        try:
            if sent == 0:
                sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            else:
                sent += sock.send(data[sent:])
        except BlockingIOError:
            if time.monotonic() > end:
                raise OSError("the worker is not reading its channel") from None
            time.sleep(0.001)
