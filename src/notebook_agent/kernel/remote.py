"""A kernel on a remote Jupyter Server or Kernel Gateway, over its REST and websocket API.

    POST   /api/kernels                      start a kernel (in our directory, on Jupyter Server)
    WS     /api/kernels/{id}/channels        the Jupyter messaging protocol, JSON frames
    POST   /api/kernels/{id}/interrupt       on timeout
    POST   /api/kernels/{id}/restart         restart()
    DELETE /api/kernels/{id}                 kill after a failed interrupt, close()
    PUT    /api/contents/{dir}/{file}        task files (Jupyter Server)

Kernel Gateway has no contents API: there the task files are written by the kernel itself
(base64 chunks in silent cells) into a fresh directory it then `chdir`s into.

The sandbox and resource limits of a remote kernel are the server's business; `Limits` here
gives the timeout/interrupt/kill policy and the output cap.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Sequence
from urllib.parse import quote

import httpx
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from .base import ExecutionResult, KernelDiedError, KernelError, KernelSession, Limits, SandboxMode, TextViewConfig
from .cell import dead_result, run_cell
from .workspace import PathLike, check_files

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
UPLOAD_CHUNK = 1 << 20      # raw bytes per cell when uploading through the kernel
ALIVE_CHECK_S = 2.0         # how often a silent cell asks the server whether its kernel lives


class _RemoteChannel:
    """`CellChannel` over the websocket."""

    def __init__(self, session: "RemoteKernelSession") -> None:
        self.s = session
        self._last_check = time.monotonic()

    async def send(self, code: str) -> str:
        return await self.s._send_shell("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": False})

    async def receive(self, cell_id: str, timeout: float) -> tuple[str, dict[str, Any]] | None:
        end = time.monotonic() + timeout
        while True:
            msg = await self.s._next_iopub(max(end - time.monotonic(), 0))
            if msg is None:
                return None
            if msg["parent_header"].get("msg_id") != cell_id:
                continue
            if msg["msg_type"] == "status":
                if msg["content"].get("execution_state") == "idle":
                    reply = await self.s._shell_reply(cell_id, 5.0)
                    return "done", (reply or {}).get("content", {})
                continue
            return msg["msg_type"], msg["content"]

    async def alive(self) -> bool:
        if time.monotonic() - self._last_check < ALIVE_CHECK_S:
            return True
        self._last_check = time.monotonic()
        return await self.s._kernel_alive()

    async def interrupt(self) -> None:
        await self.s._post(f"/api/kernels/{self.s.kernel_id}/interrupt")

    async def kill(self) -> None:
        await self.s._delete_kernel("killed after ignoring an interrupt")

    def exit_description(self) -> str:
        return self.s._death_note or "the server reports it is gone"


class RemoteKernelSession(KernelSession):
    """One kernel on a Jupyter Server (or Kernel Gateway) at `base_url`, authenticated by `token`."""

    def __init__(self, base_url: str, token: str | None = None, files: Sequence[PathLike] = (),
                 limits: Limits | None = None, text_view: TextViewConfig | None = None,
                 startup_code: str | None = None, *, kernel_name: str = "python3",
                 default_timeout: float | None = None, keep_workdir: bool = False,
                 request_timeout: float = 30.0, sandbox: SandboxMode = "auto") -> None:
        if sandbox == "require":
            raise KernelError("sandbox 'require' cannot be met by the remote backend: a remote "
                              "kernel is confined by its server, not by us (use --sandbox auto or off)")
        self.sandbox = sandbox
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.files = list(files)
        self.limits = limits or Limits()
        self.text_view = text_view or TextViewConfig()
        self.startup_code = startup_code
        self.kernel_name = kernel_name
        self.default_timeout = default_timeout
        self.keep_workdir = keep_workdir
        self.request_timeout = request_timeout
        self.cwd = PurePosixPath(f"na-{uuid.uuid4().hex[:12]}")  # type: ignore[assignment]
        self.kernel_id: str | None = None
        self.has_contents_api = False
        self._http: httpx.AsyncClient | None = None
        self._ws: WebSocketClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._iopub: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._shell: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._session_id = uuid.uuid4().hex
        self._dead = False
        self._death_note = ""
        self._started = False
        self._closed = False
        self._lock = asyncio.Lock()
        self.history: list[str] = []

    @property
    def isolation(self) -> dict[str, Any]:
        return {"isolated": False, "mode": self.sandbox, "backend": "remote",
                "note": "confined by the server at " + self.base_url}

    # -- HTTP ----------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        assert self._http is not None
        try:
            return await self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise KernelError(f"{method} {self.base_url}{path} failed: {exc}") from exc

    async def _post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return await self._request("POST", path, json=body or {})

    @staticmethod
    def _check(resp: httpx.Response, what: str) -> httpx.Response:
        if resp.status_code >= 400:
            raise KernelError(f"{what}: HTTP {resp.status_code} {resp.text[:500]}")
        return resp

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._closed:
            raise KernelError("session is closed")
        if self._started:
            return
        paths = check_files(self.files)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers(),
                                       timeout=self.request_timeout)
        try:
            resp = await self._request("GET", "/api/contents", params={"content": "0"})
            if resp.status_code in (401, 403):
                raise KernelError(f"the server refused our token (HTTP {resp.status_code})")
            self.has_contents_api = resp.status_code == 200
            if self.has_contents_api:
                await self._upload_contents(paths)
            await self._start_kernel()
            if not self.has_contents_api:
                await self._upload_through_kernel(paths)
        except BaseException:
            await self.close()
            raise
        self._started = True

    async def _upload_contents(self, paths: list[Path]) -> None:
        d = quote(str(self.cwd))
        self._check(await self._request("PUT", f"/api/contents/{d}", json={"type": "directory"}),
                    "creating the working directory")
        for p in paths:
            if p.is_dir():
                raise KernelError(f"{p}: directories cannot be uploaded to a remote kernel; pass files")
            body = {"type": "file", "format": "base64", "content": base64.b64encode(p.read_bytes()).decode()}
            self._check(await self._request("PUT", f"/api/contents/{d}/{quote(p.name)}", json=body),
                        f"uploading {p.name}")

    async def _upload_through_kernel(self, paths: list[Path]) -> None:
        for p in paths:
            if p.is_dir():
                raise KernelError(f"{p}: directories cannot be uploaded to a remote kernel; pass files")
            data = p.read_bytes()
            await self._silent(f"open({p.name!r}, 'wb').close()")
            for i in range(0, len(data), UPLOAD_CHUNK):
                chunk = base64.b64encode(data[i:i + UPLOAD_CHUNK]).decode()
                await self._silent(f"import base64 as _b\nwith open({p.name!r}, 'ab') as _f:\n"
                                   f"    _f.write(_b.b64decode({chunk!r}))\ndel _b, _f")

    async def _start_kernel(self) -> None:
        body: dict[str, Any] = {"name": self.kernel_name}
        if self.has_contents_api:
            body["path"] = str(self.cwd)
        resp = self._check(await self._post("/api/kernels", body), "starting a kernel")
        self.kernel_id = resp.json()["id"]
        await self._connect()
        if not self.has_contents_api:  # Kernel Gateway: make and enter our own directory
            d = str(self.cwd)
            await self._silent(f"import os as _os\n_os.makedirs({d!r}, exist_ok=True)\n_os.chdir({d!r})\ndel _os")
        if self.startup_code:
            await self._silent(self.startup_code)

    async def _connect(self) -> None:
        ws_url = self.base_url.replace("http", "ws", 1) + \
            f"/api/kernels/{self.kernel_id}/channels?session_id={self._session_id}"
        req = HTTPRequest(ws_url, headers=self._headers(), connect_timeout=self.request_timeout,
                          request_timeout=self.request_timeout)
        max_size = int(max(64e6, 4 * self.limits.max_output_mb * 1e6))
        try:
            self._ws = await websocket_connect(req, max_message_size=max_size)
        except Exception as exc:  # noqa: BLE001 - tornado raises several kinds
            raise KernelError(f"websocket to kernel {self.kernel_id} failed: {exc}") from exc
        self._iopub, self._shell = asyncio.Queue(), asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(self._ws))
        self._dead, self._death_note = False, ""
        msg_id = await self._send_shell("kernel_info_request", {})
        if await self._shell_reply(msg_id, START_TIMEOUT_S) is None:
            raise KernelError(f"kernel {self.kernel_id} did not answer kernel_info within {START_TIMEOUT_S:g} s")

    async def _read_loop(self, ws: WebSocketClientConnection) -> None:
        try:
            while True:
                raw = await ws.read_message()
                if raw is None:
                    break
                msg = json.loads(raw)
                channel = msg.get("channel")
                if channel == "iopub":
                    state = msg["content"].get("execution_state") if msg["msg_type"] == "status" else None
                    if state in ("restarting", "dead"):
                        self._dead = True
                        self._death_note = f"the server reports the kernel {state} (it died)"
                    self._iopub.put_nowait(msg)
                elif channel == "shell":
                    self._shell.put_nowait(msg)
        except Exception as exc:  # noqa: BLE001 - any failure ends the connection
            log.debug("websocket reader stopped: %s", exc)
        finally:
            self._iopub.put_nowait(None)
            self._shell.put_nowait(None)

    async def _send_shell(self, msg_type: str, content: dict[str, Any]) -> str:
        if self._ws is None or self._dead:
            raise KernelDiedError(self._death_note or "not connected")
        msg_id = uuid.uuid4().hex
        msg = {"header": {"msg_id": msg_id, "msg_type": msg_type, "session": self._session_id,
                          "username": "notebook-agent", "version": "5.3",
                          "date": dt.datetime.now(dt.timezone.utc).isoformat()},
               "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": []}
        try:
            await self._ws.write_message(json.dumps(msg))
        except Exception as exc:  # noqa: BLE001 - a closed websocket
            raise KernelDiedError(f"websocket closed: {exc}") from exc
        return msg_id

    async def _next_iopub(self, timeout: float) -> dict[str, Any] | None:
        try:
            msg = await asyncio.wait_for(self._iopub.get(), timeout) if timeout > 0 else self._iopub.get_nowait()
        except (asyncio.TimeoutError, asyncio.QueueEmpty):
            return None
        if msg is None:
            self._iopub.put_nowait(None)
            self._dead = True
            raise KernelDiedError(self._death_note or "the websocket to the kernel closed")
        if self._dead:
            raise KernelDiedError(self._death_note)
        return msg

    async def _shell_reply(self, msg_id: str, timeout: float) -> dict[str, Any] | None:
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                msg = await asyncio.wait_for(self._shell.get(), left)
            except asyncio.TimeoutError:
                return None
            if msg is None:
                self._shell.put_nowait(None)
                return None
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg
        return None

    async def _silent(self, code: str) -> None:
        """Run set-up code; raise KernelError if it fails."""
        msg_id = await self._send_shell("execute_request", {
            "code": code, "silent": True, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})
        reply = await self._shell_reply(msg_id, START_TIMEOUT_S)
        if reply is None:
            raise KernelError("set-up code got no reply from the remote kernel")
        content = reply["content"]
        if content.get("status") != "ok":
            raise KernelError(f"set-up code failed: {content.get('ename')}: {content.get('evalue')}")

    async def _kernel_alive(self) -> bool:
        if self._dead or self.kernel_id is None or self._http is None:
            return False
        try:
            resp = await self._http.get(f"/api/kernels/{self.kernel_id}")
        except httpx.HTTPError:
            return False
        return resp.status_code == 200 and resp.json().get("execution_state") not in ("dead",)

    async def _disconnect(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None

    async def _delete_kernel(self, note: str = "") -> None:
        if note:
            self._death_note = note
        self._dead = True
        await self._disconnect()
        if self.kernel_id is not None and self._http is not None:
            try:
                await self._http.delete(f"/api/kernels/{self.kernel_id}")
            except httpx.HTTPError as exc:
                log.warning("could not delete remote kernel %s: %s", self.kernel_id, exc)
            self.kernel_id = None

    @property
    def is_alive(self) -> bool:
        return self._started and not self._closed and not self._dead and self.kernel_id is not None

    async def restart(self) -> None:
        if self._closed or self._http is None:
            raise KernelError("session is closed" if self._closed else "session not started")
        async with self._lock:
            self.history.clear()
            if self.kernel_id is not None:
                resp = await self._post(f"/api/kernels/{self.kernel_id}/restart")
                if resp.status_code < 400:
                    await self._disconnect()
                    await self._connect()
                    if not self.has_contents_api:
                        d = str(self.cwd)
                        await self._silent(f"import os as _os\n_os.makedirs({d!r}, exist_ok=True)\n"
                                           f"_os.chdir({d!r})\ndel _os")
                    if self.startup_code:
                        await self._silent(self.startup_code)
                    return
                await self._delete_kernel()
            await self._disconnect()
            await self._start_kernel()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._http is None:
            return
        if not self.keep_workdir and not self.has_contents_api and self.is_alive_connection:
            try:  # Kernel Gateway: the kernel removes its own directory
                await self._silent(f"import os as _os, shutil as _sh\n_os.chdir('..')\n_sh.rmtree({str(self.cwd)!r})")
            except (KernelError, KernelDiedError) as exc:
                log.warning("could not remove remote directory %s: %s", self.cwd, exc)
        await self._delete_kernel()
        if self.has_contents_api and not self.keep_workdir:
            await self._delete_contents(str(self.cwd))
        await self._http.aclose()
        self._http = None

    @property
    def is_alive_connection(self) -> bool:
        return self._ws is not None and not self._dead

    async def _delete_contents(self, path: str) -> None:
        """Delete a directory through the contents API (bottom-up: servers refuse non-empty dirs)."""
        assert self._http is not None
        try:
            resp = await self._http.get(f"/api/contents/{quote(path)}")
            if resp.status_code == 200 and resp.json().get("type") == "directory":
                for item in resp.json().get("content") or []:
                    await self._delete_contents(item["path"])
            await self._http.delete(f"/api/contents/{quote(path)}")
        except httpx.HTTPError as exc:
            log.warning("could not delete remote %s: %s", path, exc)

    # -- execution -----------------------------------------------------------------------------
    async def execute(self, code: str, timeout: float | None = None) -> ExecutionResult:
        if self._closed or not self._started:
            raise KernelError("session is closed" if self._closed else "session not started: await start() first")
        async with self._lock:
            if not self.is_alive:
                return dead_result(code, self._death_note or "no kernel", self.text_view)
            result = await run_cell(_RemoteChannel(self), code,
                                    timeout if timeout is not None else self.default_timeout,
                                    self.limits, self.text_view)
            if result.status == "dead":
                self._dead = True
            if result.status == "ok":
                self.history.append(code)
            return result

    async def fork(self) -> "RemoteKernelSession":
        """Replay fallback: a new remote kernel with the same task files, the ok cells re-run.

        Files the cells wrote are re-created by the replay; other remote files are not copied.
        """
        if self._closed or not self._started:
            raise KernelError("cannot fork a session that is not running")
        child = RemoteKernelSession(self.base_url, self.token, self.files, self.limits, self.text_view,
                                    self.startup_code, kernel_name=self.kernel_name,
                                    default_timeout=self.default_timeout, request_timeout=self.request_timeout)
        await child.start()
        for code in self.history:
            res = await child.execute(code)
            if not res.ok:
                log.warning("replaying a cell for fork() failed (%s); the branch may differ", res.status)
        return child
