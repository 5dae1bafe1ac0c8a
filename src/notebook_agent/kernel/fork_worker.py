"""The forking kernel's worker: an IPython shell in a process that can fork itself.

Runs inside the sandbox, started by path (`python fork_worker.py --fd N`) with only
the standard library and IPython, so that it works whatever the host's import path is.

Process layout (one "family" per root session):

    supervisor (this file's main; child subreaper; tiny, never runs user code)
      |- worker (root session)        <- IPython shell, serves one host connection
      |- worker (a fork of the root)  <- adopted by the supervisor (double fork)
      |- worker (a fork of a fork) ...

Every worker is a direct child of the supervisor, so closing or killing one session never takes
its forks with it. Each worker gets SIGKILL when the supervisor dies, and the supervisor gets
SIGKILL when the host dies (set by the launcher), so nothing outlives the host.

Each worker talks to the host over its own end of a socketpair (fd N for the root worker; a
fork's end arrives with the fork request, as SCM_RIGHTS). Wire protocol: 4-byte big-endian
length, then UTF-8 JSON. Host -> worker:
  {"op": "execute", "id", "code", "silent", "max_output_bytes"}
  {"op": "fork", "id", "cwd"} + the child's channel fd  (the host already copied the working dir to cwd)
  {"op": "shutdown"}
Worker -> host:
  {"type": "hello", "pid"}       (the host takes the pid from the kernel's SCM_CREDENTIALS)
  {"type": "msg", "id", "msg_type", "content"}   (Jupyter-shaped: stream, display_data, error, ...)
  {"type": "done", "id", "status", "execution_count", "ename", "evalue"}
  {"type": "forked", "id"} / {"type": "fork_failed", "id", "error"}
Outputs never go to the real stdout/stderr (those are a log file).
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import signal
import socket
import struct
import sys
import time
from contextlib import contextmanager
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
STREAM_FLUSH_BYTES = 64 * 1024
STREAM_FLUSH_S = 0.05


def _prctl(option: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


# -- framing ---------------------------------------------------------------------------------
def send_frame(sock: socket.socket, obj: dict[str, Any]) -> None:
    data = json.dumps(obj, default=str).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int, fds: list[int] | None = None) -> bytes | None:
    """n bytes; file descriptors that arrive with them are appended to `fds`."""
    buf = bytearray()
    while len(buf) < n:
        if fds is not None:
            chunk, got, _, _ = socket.recv_fds(sock, n - len(buf), 4)
            fds.extend(got)
        else:
            chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> dict[str, Any] | None:
    fds: list[int] = []
    head = _recv_exact(sock, 4, fds)
    if head is None:
        return None
    body = _recv_exact(sock, struct.unpack(">I", head)[0])
    if body is None:
        return None
    msg = json.loads(body)
    msg["fds"] = fds
    return msg


# -- the worker ------------------------------------------------------------------------------
class _Stream(io.TextIOBase):
    """sys.stdout / sys.stderr: text goes to the worker's shared buffer (no threads: fork-safe)."""

    def __init__(self, worker: "Worker", name: str) -> None:
        self.worker, self.stream_name = worker, name

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:  # type: ignore[override]
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if s:
            self.worker.buffer_stream(self.stream_name, s)
        return len(s)

    def flush(self) -> None:
        self.worker.flush_streams()


class Worker:
    def __init__(self, supervisor_pid: int) -> None:
        self.supervisor_pid = supervisor_pid
        self.sock: socket.socket | None = None
        self.cell_id: int | None = None
        self.max_output_bytes = 64_000_000
        self.executing = False
        self.pending_interrupt = False
        self.stdout = _Stream(self, "stdout")
        self.stderr = _Stream(self, "stderr")
        self._pending: list[tuple[str, list[str]]] = []  # (stream name, chunks), in order
        self._pending_size = 0
        self._pending_since = 0.0
        self._intermediates: list[int] = []
        self.shell = self._make_shell()
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    # -- plumbing ---
    def connect(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self._send({"type": "hello", "pid": os.getpid()})

    def _send(self, obj: dict[str, Any]) -> None:
        assert self.sock is not None
        # A SIGINT arriving mid-frame must not raise inside sendall (the stream would be corrupt):
        # while we send, the handler only records it, and we raise it afterwards.
        if self.executing:
            signal.signal(signal.SIGINT, self._defer_sigint)
        try:
            send_frame(self.sock, obj)
        except OSError:
            os._exit(0)  # the host is gone
        finally:
            if self.executing:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.pending_interrupt and self.executing:
            self.pending_interrupt = False
            raise KeyboardInterrupt

    def _defer_sigint(self, signum: int, frame: Any) -> None:
        self.pending_interrupt = True

    def _set_executing(self, on: bool) -> None:
        """While a cell runs, SIGINT raises KeyboardInterrupt in it; otherwise it is ignored."""
        self.executing = on
        self.pending_interrupt = False
        signal.signal(signal.SIGINT, signal.default_int_handler if on else signal.SIG_IGN)

    def send_msg(self, msg_type: str, content: dict[str, Any]) -> None:
        if self.cell_id is None:
            return  # output outside a cell (e.g. at shutdown) has nowhere to go
        if msg_type != "stream":
            self.flush_streams()
            size = len(json.dumps(content.get("data", content), default=str))
            if size > self.max_output_bytes:
                msg_type, content = "stream", {"name": "stderr", "text":
                    f"[{msg_type} of {size / 1e6:.1f} MB dropped: over the output limit]\n"}
        self._send({"type": "msg", "id": self.cell_id, "msg_type": msg_type, "content": content})

    def buffer_stream(self, name: str, text: str) -> None:
        """Buffer printed text (stdout and stderr in one ordered buffer); send it in chunks."""
        if not self._pending:
            self._pending_since = time.monotonic()
        if self._pending and self._pending[-1][0] == name:
            self._pending[-1][1].append(text)
        else:
            self._pending.append((name, [text]))
        self._pending_size += len(text)
        if self._pending_size >= STREAM_FLUSH_BYTES or time.monotonic() - self._pending_since > STREAM_FLUSH_S:
            self.flush_streams()

    def flush_streams(self) -> None:
        pending, self._pending, self._pending_size = self._pending, [], 0
        for name, chunks in pending:
            self.send_msg("stream", {"name": name, "text": "".join(chunks)})

    # -- IPython ---
    def _make_shell(self) -> Any:
        from IPython.core.displayhook import DisplayHook
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config

        worker = self

        class Hook(DisplayHook):
            """The value of a cell's last expression -> execute_result."""

            def start_displayhook(self) -> None:
                self._out: dict[str, Any] | None = None
                super().start_displayhook()

            def write_output_prompt(self) -> None:
                pass

            def write_format_data(self, format_dict: dict, md_dict: dict | None = None) -> None:
                self._out = {"data": format_dict, "metadata": md_dict or {},
                             "execution_count": self.prompt_count}

            def finish_displayhook(self) -> None:
                self._is_active = False
                if self._out is not None:
                    worker.send_msg("execute_result", self._out)

        class Publisher(DisplayPublisher):
            """display() -> display_data (images arrive base64-encoded from IPython's formatters)."""

            def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):  # type: ignore[override]
                self._is_publishing = True
                try:
                    worker.send_msg("update_display_data" if update else "display_data",
                                    {"data": data, "metadata": metadata or {}, "transient": transient or {}})
                finally:
                    self._is_publishing = False

            def clear_output(self, wait: bool = False) -> None:
                worker.send_msg("clear_output", {"wait": wait})

        class Shell(InteractiveShell):
            def _showtraceback(self, etype, evalue, stb):  # type: ignore[override]
                worker.send_msg("error", {"ename": getattr(etype, "__name__", str(etype)),
                                          "evalue": str(evalue), "traceback": list(stb)})

            @contextmanager
            def _tee(self, channel):  # type: ignore[override]
                # IPython 9 copies all printed text into its history; we keep none (memory).
                yield

        config = Config()
        config.HistoryManager.enabled = False  # no SQLite file, and no history-saving thread
        shell = Shell.instance(config=config, displayhook_class=Hook, display_pub_class=Publisher)
        sys.stdout, sys.stderr = self.stdout, self.stderr  # type: ignore[assignment]
        return shell

    # -- requests ---
    def serve(self) -> None:
        assert self.sock is not None
        while True:
            msg = recv_frame(self.sock)
            if msg is None or msg.get("op") == "shutdown":
                os._exit(0)
            self.reap_intermediates()
            if msg["op"] == "execute":
                self.execute(msg)
            elif msg["op"] == "fork":
                self.fork(msg)

    def execute(self, msg: dict[str, Any]) -> None:
        self.cell_id = msg["id"]
        self.max_output_bytes = int(msg.get("max_output_bytes") or self.max_output_bytes)
        silent = bool(msg.get("silent"))
        done: dict[str, Any] = {"type": "done", "id": msg["id"], "status": "ok"}
        try:
            self._set_executing(True)  # from here a SIGINT raises KeyboardInterrupt
            result = self.shell.run_cell(msg["code"], store_history=not silent, silent=silent)
            self._set_executing(False)
            err = result.error_before_exec or result.error_in_exec
            done["execution_count"] = None if silent else result.execution_count
            if err is not None:
                done.update(status="error", ename=type(err).__name__, evalue=str(err))
        except KeyboardInterrupt:  # landed in IPython's own code rather than the user's
            self._set_executing(False)
            self.send_msg("error", {"ename": "KeyboardInterrupt", "evalue": "", "traceback": ["KeyboardInterrupt"]})
            done.update(status="error", ename="KeyboardInterrupt", evalue="")
        finally:
            if self.executing:
                self._set_executing(False)
        self.flush_streams()
        self.cell_id = None
        self._send(done)

    def fork(self, msg: dict[str, Any]) -> None:
        """Double fork: the new worker is adopted by the supervisor, not a child of this one.

        The reply goes out as soon as the intermediate exists; it is reaped at the next request
        (its exit, which tears down a copy of the address space, is off the critical path).
        """
        self.flush_streams()
        if len(msg.get("fds") or []) != 1:
            for fd in msg.get("fds") or []:
                os.close(fd)
            self._send({"type": "fork_failed", "id": msg["id"], "error": "no channel came with the request"})
            return
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(msg["fds"][0])
            self._send({"type": "fork_failed", "id": msg["id"], "error": str(exc)})
            return
        if pid == 0:  # intermediate
            try:
                intermediate = os.getpid()  # not getppid() in the grandchild: we may be gone by then
                if os.fork() == 0:
                    self._become_fork(msg, intermediate)
            finally:
                os._exit(0)
        os.close(msg["fds"][0])  # the child's end is the child's
        self._intermediates.append(pid)
        self._send({"type": "forked", "id": msg["id"]})

    def reap_intermediates(self) -> None:
        for pid in list(self._intermediates):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid  # user code reaped it
            if done:
                self._intermediates.remove(pid)

    def _become_fork(self, msg: dict[str, Any], intermediate: int) -> None:
        # A session of its own (and so a process group for killpg): with the kernel's
        # autogroup scheduling, forks otherwise share their root's one CPU share.
        os.setsid()
        assert self.sock is not None
        self.sock.close()  # the parent's connection: close our copy only (no shutdown())
        self._intermediates = []
        cwd = msg["cwd"]
        os.chdir(cwd)
        os.environ["HOME"] = os.environ["PWD"] = cwd
        # Wait to be adopted by the supervisor (the intermediate exits at once) BEFORE the
        # hello: until then we are in the parent worker's process tree, and a host that
        # closes the parent right after fork() returns would kill us with it.
        deadline = time.monotonic() + 10
        while os.getppid() == intermediate:
            if time.monotonic() > deadline:
                os._exit(1)
            time.sleep(0.0002)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != self.supervisor_pid:
            os._exit(1)  # the supervisor (and so the host) died meanwhile
        self.connect(msg["fds"][0])
        self.serve()


def run_worker(fd: int, supervisor_pid: int) -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != supervisor_pid:
        os._exit(1)
    os.setpgid(0, 0)
    worker = Worker(supervisor_pid)
    worker.connect(fd)
    worker.serve()


def supervise(fd: int) -> None:
    """Start the root worker, then adopt and reap every worker forked from it."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    me = os.getpid()
    if os.fork() == 0:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            run_worker(fd, me)
        finally:
            os._exit(1)
    os.close(fd)  # the worker's alone: its death is the host's EOF
    while True:
        try:
            os.wait()
        except ChildProcessError:
            os._exit(0)  # every worker is gone: the family is over
        except InterruptedError:
            continue


def main() -> None:
    parser = argparse.ArgumentParser(prog="fork_worker.py")
    parser.add_argument("--fd", type=int, required=True, help="the root worker's channel")
    args = parser.parse_args()
    supervise(args.fd)


if __name__ == "__main__":
    main()
