"""The remote backend against a real Jupyter Server and a real Kernel Gateway on loopback."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import psutil
import pytest

from notebook_agent.kernel import KernelError, Limits, RemoteKernelSession

LIMITS = Limits(interrupt_grace_s=1.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url: str, token: str, proc: subprocess.Popen[bytes], path: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + path, headers={"Authorization": f"token {token}"}, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not come up")


def _start(argv: list[str], root: Path, url: str, token: str, path: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_TOKEN"}
    env.update(JUPYTER_PLATFORM_DIRS="1", JUPYTER_RUNTIME_DIR=str(root.parent / f"{root.name}-runtime"))
    if os.geteuid() == 0 and "jupyter-server" in argv[0]:
        argv = [*argv, "--allow-root"]
    log = root.parent / f"{root.name}.log"
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_up(url, token, proc, path, log)
    except BaseException:
        proc.kill()
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    kids = psutil.Process(proc.pid).children(recursive=True)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    for k in kids:
        try:
            k.kill()
        except psutil.Error:
            pass


@pytest.fixture(scope="module")
def jupyter_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path, int]]:
    root = tmp_path_factory.mktemp("server-root")
    port, token = _free_port(), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    proc = _start([str(bindir / "jupyter-server"), "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                   f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                   "--FileContentsManager.delete_to_trash=False"], root, url, token, "/api/status")
    yield url, token, root, proc.pid
    _stop(proc)


@pytest.fixture(scope="module")
def kernel_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    root = tmp_path_factory.mktemp("gateway-root")
    port, token = _free_port(), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    proc = _start([str(bindir / "jupyter-kernelgateway"), "--KernelGatewayApp.ip=127.0.0.1",
                   f"--KernelGatewayApp.port={port}", f"--KernelGatewayApp.auth_token={token}"],
                  root, url, token, "/api")
    yield url, token, root
    _stop(proc)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    f = tmp_path / "data.csv"
    f.write_text("a,b\n1,2\n3,4\n")
    return f


async def test_jupyter_server_session(jupyter_server, data_file: Path) -> None:
    url, token, root, server_pid = jupyter_server
    async with RemoteKernelSession(url, token, files=[data_file], limits=LIMITS) as s:
        assert s.has_contents_api
        workdir = root / str(s.cwd)
        assert (workdir / "data.csv").read_text() == data_file.read_text()
        r = await s.execute("import os, pandas as pd\nprint(os.getcwd())\nint(pd.read_csv('data.csv').a.sum())")
        assert r.ok and r.outputs[0]["text"].strip() == str(workdir) and r.outputs[1]["data"]["text/plain"] == "4"
        r = await s.execute("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")
        assert r.ok and any("image/png" in o.get("data", {}) for o in r.outputs)
        r = await s.execute("1/0")
        assert r.status == "error" and r.error["ename"] == "ZeroDivisionError" and "division by zero" in r.text
        r = await s.execute("def f(:")
        assert r.status == "error" and r.error["ename"] == "SyntaxError"

        await s.execute("x = 7")
        r = await s.execute("import time\ntime.sleep(30)", timeout=1)
        assert r.status == "timeout" and "interrupted" in r.text
        assert (await s.execute("x")).outputs[0]["data"]["text/plain"] == "7"

        child = await s.fork()  # replay fallback
        try:
            assert (await child.execute("x")).outputs[0]["data"]["text/plain"] == "7"
            await child.execute("x = 8")
            assert (await s.execute("x")).outputs[0]["data"]["text/plain"] == "7"
        finally:
            await child.close()
    assert not workdir.exists()  # our directory is removed on close
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"token {token}"}) as http:
        assert (await http.get("/api/kernels")).json() == []


async def test_remote_timeout_kill_and_restart(jupyter_server) -> None:
    url, token, _, _ = jupyter_server
    async with RemoteKernelSession(url, token, limits=LIMITS) as s:
        code = "import time\nwhile True:\n    try:\n        time.sleep(0.2)\n    except KeyboardInterrupt:\n        pass"
        r = await s.execute(code, timeout=1)
        assert r.status == "timeout" and "kernel was killed" in r.text
        assert (await s.execute("1")).status == "dead"
        await s.restart()
        assert (await s.execute("2 + 2")).outputs[0]["data"]["text/plain"] == "4"


async def test_remote_kernel_killed_from_outside(jupyter_server) -> None:
    url, token, _, server_pid = jupyter_server
    async with RemoteKernelSession(url, token, limits=LIMITS) as s:
        await s.execute("x = 1")
        kernels = [p for p in psutil.Process(server_pid).children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]
        r_pid = (await s.execute("import os\nos.getpid()")).outputs[0]["data"]["text/plain"]
        victim = next(p for p in kernels if str(p.pid) == r_pid)

        async def kill_soon() -> None:
            await asyncio.sleep(1)
            victim.send_signal(signal.SIGKILL)

        task = asyncio.ensure_future(kill_soon())
        r = await s.execute("import time\ntime.sleep(60)", timeout=30)
        await task
        assert r.status == "dead" and "KernelDied" in r.text
        await s.restart()
        r = await s.execute("'x' in dir()")
        assert r.ok and r.outputs[0]["data"]["text/plain"] == "False"


async def test_bad_token_is_a_clear_error(jupyter_server) -> None:
    url, _, _, _ = jupyter_server
    with pytest.raises(KernelError, match="token"):
        await RemoteKernelSession(url, "wrong-token").start()


async def test_kernel_gateway_session(kernel_gateway, data_file: Path) -> None:
    url, token, root = kernel_gateway
    async with RemoteKernelSession(url, token, files=[data_file], limits=LIMITS) as s:
        assert not s.has_contents_api  # files go through the kernel
        assert (root / str(s.cwd) / "data.csv").read_text() == data_file.read_text()
        r = await s.execute("import pandas as pd\nint(pd.read_csv('data.csv').b.sum())")
        assert r.ok and r.outputs[0]["data"]["text/plain"] == "6"
        r = await s.execute("import time\ntime.sleep(30)", timeout=1)
        assert r.status == "timeout"
        await s.restart()
        r = await s.execute("import os\nsorted(os.listdir('.'))")
        assert r.outputs[0]["data"]["text/plain"] == "['data.csv']"
    assert not (root / str(s.cwd)).exists()
