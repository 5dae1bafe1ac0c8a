"""Behaviour every local backend must show, on real kernels ("local" = ipykernel, "forking")."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from notebook_agent.kernel import KernelError, Limits, TextViewConfig, make_session

from kernel_helpers import host_descendants, kernel_pids, needs_bwrap


async def test_outputs_of_each_type(make, data_file: Path) -> None:
    s = await make(files=[data_file])
    r = await s.execute("import sys\nprint('out'); print('err', file=sys.stderr)\n6 * 7")
    kinds = [(o["output_type"], o.get("name")) for o in r.outputs]
    assert kinds == [("stream", "stdout"), ("stream", "stderr"), ("execute_result", None)]
    assert r.outputs[2]["data"]["text/plain"] == "42" and r.status == "ok"
    assert r.execution_count == r.outputs[2]["execution_count"]

    r = await s.execute("import pandas as pd\ndf = pd.read_csv('data.csv')\ndf")
    assert r.ok and "text/html" in r.outputs[0]["data"] and "<table" in r.outputs[0]["data"]["text/html"]

    r = await s.execute("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
    [img] = [o for o in r.outputs if o["output_type"] == "display_data"]
    png = base64.b64decode(img["data"]["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[image/png " in r.text and "kept in notebook" in r.text and "iVBOR" not in r.text

    r = await s.execute("from IPython.display import display, HTML\ndisplay(HTML('<b>bold</b>'))")
    assert r.outputs[0]["output_type"] == "display_data" and r.outputs[0]["data"]["text/html"] == "<b>bold</b>"

    r = await s.execute("def f():\n    return 1 / 0\nf()")
    assert r.status == "error"
    err = r.error
    assert err is not None and err["ename"] == "ZeroDivisionError" and err["evalue"] == "division by zero"
    assert err["traceback"] and "ZeroDivisionError: division by zero" in r.text
    assert "\x1b[" not in r.text and "return 1 / 0" in r.text


async def test_invalid_code_is_a_clear_error_and_kernel_survives(make) -> None:
    s = await make()
    r = await s.execute("def f(:\n  pass")
    assert r.status == "error" and r.error["ename"] == "SyntaxError"
    assert "SyntaxError" in r.text
    r = await s.execute("undefined_name")
    assert r.error["ename"] == "NameError"
    assert (await s.execute("1 + 1")).outputs[0]["data"]["text/plain"] == "2"


async def test_text_view_caps_long_output(make) -> None:
    s = await make(text_view=TextViewConfig(max_chars=500))
    r = await s.execute("for i in range(10000): print(f'row {i}')")
    assert r.ok and len(r.outputs[0]["text"]) > 50_000  # the notebook keeps everything
    assert len(r.text) <= 500 and "row 0\n" in r.text and "row 9999" in r.text and "chars elided" in r.text


async def test_environment_is_scrubbed(make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    s = await make()
    r = await s.execute("import os\nsorted(k for k in os.environ if 'KEY' in k or 'TOKEN' in k or 'SECRET' in k)")
    assert r.outputs[0]["data"]["text/plain"] == "[]"
    r = await s.execute("import os\nos.environ.get('OPENAI_API_KEY'), os.environ['HOME'] == os.getcwd()")
    assert r.outputs[0]["data"]["text/plain"] == "(None, True)"
    r = await s.execute("[os.environ[v] for v in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')]")
    assert r.outputs[0]["data"]["text/plain"] == "['1', '1', '1']"


async def test_files_placed_in_own_working_dir(make, data_file: Path) -> None:
    s = await make(files=[data_file])
    assert s.cwd != data_file.parent and (s.cwd / "data.csv").read_text() == data_file.read_text()
    r = await s.execute("import os\nos.getcwd(), sorted(os.listdir('.'))")
    assert r.outputs[0]["data"]["text/plain"] == repr((str(s.cwd), ["data.csv"]))


async def test_missing_file_fails_before_start(backend: str) -> None:
    before = host_descendants()
    s = make_session(backend, files=["/nonexistent/data.csv"])
    with pytest.raises(FileNotFoundError, match="nonexistent/data.csv"):
        await s.start()
    assert host_descendants() == before
    with pytest.raises(KernelError):
        await s.execute("1")


async def test_timeout_interrupts_and_keeps_state(make) -> None:
    s = await make()
    await s.execute("x = 41")
    t0 = time.monotonic()
    r = await s.execute("import time\nfor i in range(100):\n    time.sleep(0.5)", timeout=1.0)
    assert time.monotonic() - t0 < 5
    assert r.status == "timeout" and r.error["ename"] == "TimeoutError"
    assert "time limit" in r.text and "interrupted" in r.text
    assert s.is_alive
    assert (await s.execute("x + 1")).outputs[0]["data"]["text/plain"] == "42"


async def test_cell_ignoring_interrupt_is_killed_then_restart(make, data_file: Path) -> None:
    s = await make(files=[data_file])
    code = "import time\nwhile True:\n    try:\n        time.sleep(0.2)\n    except KeyboardInterrupt:\n        pass"
    t0 = time.monotonic()
    r = await s.execute(code, timeout=1.0)
    assert time.monotonic() - t0 < 10
    assert r.status == "timeout" and "kernel was killed" in r.text and "restart()" in r.text
    assert not s.is_alive
    r = await s.execute("1")
    assert r.status == "dead" and "KernelDied" in r.text
    await s.restart()
    r = await s.execute("import os\nos.listdir('.')")
    assert r.ok and "data.csv" in r.text  # same working directory, fresh kernel


async def test_memory_blowup_fails_inside_kernel(make) -> None:
    host = psutil.Process()
    rss = host.memory_info().rss
    s = await make(limits=Limits(memory_mb=1024))
    r = await s.execute("x = bytearray(50 * 2**30)")
    assert r.status == "error" and r.error["ename"] == "MemoryError"
    # a runaway loop: each step reserves 80 MB more (np.empty: the address-space limit trips
    # without the test spending seconds writing pages)
    r = await s.execute("import numpy as np\nchunks = []\nwhile True:\n    chunks.append(np.empty(10**7))")
    assert r.status == "error" and r.error["ename"] == "MemoryError"
    r = await s.execute("del chunks\nimport gc; gc.collect()\n'alive'")
    assert r.ok and "alive" in r.text
    assert host.memory_info().rss - rss < 200e6


async def test_huge_output_is_capped_and_interrupted(make) -> None:
    host = psutil.Process()
    rss = host.memory_info().rss
    s = await make(limits=Limits(memory_mb=2048, max_output_mb=2, interrupt_grace_s=2))
    t0 = time.monotonic()
    # ~1 GB if it ran to the end
    r = await s.execute("line = 'x' * 999\nfor i in range(1_000_000):\n    print(line)", timeout=120)
    assert time.monotonic() - t0 < 60
    assert r.truncated and r.status == "error" and r.error["ename"] == "OutputLimitExceeded"
    kept = sum(len(o.get("text", "")) for o in r.outputs if o["output_type"] == "stream")
    assert 1_500_000 < kept < 2_200_000
    assert "output truncated" in r.text
    assert host.memory_info().rss - rss < 300e6
    assert (await s.execute("'still here'")).ok


async def test_kernel_killed_from_outside_is_reported_then_restart(make) -> None:
    s = await make()
    await s.execute("x = 1")
    victim = max(kernel_pids(s))  # the innermost python process: the kernel itself

    async def kill_soon() -> None:
        await asyncio.sleep(1.0)
        os.kill(victim, signal.SIGKILL)

    killer = asyncio.ensure_future(kill_soon())
    t0 = time.monotonic()
    r = await s.execute("import time\ntime.sleep(30)")
    await killer
    assert r.status == "dead" and time.monotonic() - t0 < 10
    assert "KernelDied" in r.text and "restart()" in r.text
    assert (await s.execute("x")).status == "dead"
    await s.restart()
    r = await s.execute("x = 2\nx")
    assert r.ok and r.outputs[0]["data"]["text/plain"] == "2"


async def test_limits_applied(make) -> None:
    s = await make(limits=Limits(memory_mb=1536, max_processes=300, max_file_mb=1))
    r = await s.execute("import resource as R\n[R.getrlimit(x)[0] for x in (R.RLIMIT_AS, R.RLIMIT_NPROC, R.RLIMIT_FSIZE)]")
    assert r.outputs[0]["data"]["text/plain"] == str([1536 * 2**20, 300, 2**20])
    r = await s.execute("with open('big.bin', 'wb') as f:\n    f.write(b'x' * 3 * 2**20)")
    assert r.status == "error" and "File too large" in r.text


async def test_close_leaves_no_process(make) -> None:
    before = host_descendants()
    s = await make()
    # the kernel starts a subprocess of its own, and one that escapes into a new session; their
    # durations are unique, so another `sleep 300` on the machine is not taken for a leak
    a, b = (f"{300 + random.random():.9f}" for _ in range(2))
    r = await s.execute(f"import subprocess\np1 = subprocess.Popen(['sleep', '{a}'])\n"
                        f"p2 = subprocess.Popen(['sleep', '{b}'], start_new_session=True)")
    assert r.ok
    assert len(host_descendants() - before) >= 3
    await s.close()
    await s.close()  # idempotent
    await asyncio.sleep(0.3)
    assert host_descendants() - before == set()
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] in (["sleep", a], ["sleep", b])
                and p.status() != psutil.STATUS_ZOMBIE]
    with pytest.raises(KernelError):
        await s.execute("1")


async def test_user_workdir_is_kept(make, tmp_path: Path) -> None:
    wd = tmp_path / "work"
    s = await make(workdir=wd)
    await s.execute("open('result.txt', 'w').write('done')")
    await s.close()
    assert (wd / "result.txt").read_text() == "done"


async def test_fork_has_same_state_and_is_isolated(make, data_file: Path) -> None:
    parent = await make(files=[data_file])
    await parent.execute("x = 1\nopen('notes.txt', 'w').write('parent')")
    child = await parent.fork()
    sibling = await parent.fork()
    try:
        assert child.cwd != parent.cwd and sibling.cwd != child.cwd
        r = await child.execute("x, open('notes.txt').read(), open('data.csv').read()[:3]")
        assert r.outputs[0]["data"]["text/plain"] == "(1, 'parent', 'a,b')"
        await child.execute("x = 2\nopen('notes.txt', 'w').write('child')\nopen('new.txt', 'w').write('c')")
        r = await parent.execute("import os\nx, open('notes.txt').read(), os.path.exists('new.txt')")
        assert r.outputs[0]["data"]["text/plain"] == "(1, 'parent', False)"
        r = await sibling.execute("import os\nx, open('notes.txt').read(), os.path.exists('new.txt')")
        assert r.outputs[0]["data"]["text/plain"] == "(1, 'parent', False)"
        await parent.execute("x = 3")
        assert (await child.execute("x")).outputs[0]["data"]["text/plain"] == "2"
    finally:
        await child.close()
        await sibling.close()


async def test_host_death_leaves_no_kernel(backend: str, tmp_path: Path) -> None:
    """Kill -9 the host process: its kernels must die too (parent-death signal chain)."""
    script = tmp_path / "host.py"
    script.write_text(
        "import asyncio, sys\n"
        "from notebook_agent.kernel import make_session\n"
        "async def main():\n"
        f"    s = make_session({backend!r})\n"
        "    await s.start()\n"
        "    await s.execute('x = 1')\n"
        + ("    c = await s.fork()\n" if backend == "forking" else "")
        + "    print('ready', flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"ready"
    kernels = psutil.Process(proc.pid).children(recursive=True)
    assert kernels
    proc.kill()
    await proc.wait()
    gone, alive = psutil.wait_procs(kernels, timeout=10)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert alive == []


@needs_bwrap
async def test_isolation_no_network_and_readonly_outside(make, tmp_path: Path) -> None:
    s = await make()
    assert s.isolated
    r = await s.execute("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)")
    assert r.status == "error" and r.error["ename"] in ("OSError", "ConnectionRefusedError")
    assert "unreachable" in r.error["evalue"].lower() or "refused" in r.error["evalue"].lower()
    r = await s.execute("import socket\nsocket.getaddrinfo('pypi.org', 443)")
    assert r.status == "error"
    outside = tmp_path / "outside.txt"
    outside.write_text("host")
    r = await s.execute(f"open({str(outside)!r}, 'w').write('kernel')")
    assert r.status == "error" and outside.read_text() == "host"
    r = await s.execute("open('/usr/evil', 'w')")
    assert r.status == "error" and "Read-only file system" in r.text
    r = await s.execute("open('/etc/evil', 'w')")  # /etc is the sandbox's own, not the host's
    assert r.status == "error" and "Permission denied" in r.text and not Path("/etc/evil").exists()
    r = await s.execute("open('/tmp/scratch.txt', 'w').write('private'); 'ok'")
    assert r.ok and not Path("/tmp/scratch.txt").exists()  # /tmp is private to the sandbox
    r = await s.execute("open('mine.txt', 'w').write('ok')")
    assert r.ok and (s.cwd / "mine.txt").exists()


@needs_bwrap
async def test_loopback_listener_unreachable_from_kernel(make) -> None:
    """A server on the host's loopback is not reachable: the kernel has its own network namespace."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        s = await make()
        r = await s.execute(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
        assert r.status == "error"
    finally:
        server.close()


async def test_runs_without_bubblewrap(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    async with make_session(backend, sandbox="off", limits=Limits(memory_mb=1024)) as s:
        assert not s.isolated
        r = await s.execute("import os, resource\nos.environ.get('OPENAI_API_KEY'), resource.getrlimit(resource.RLIMIT_AS)[0]")
        assert r.outputs[0]["data"]["text/plain"] == f"(None, {1024 * 2**20})"
        r = await s.execute("import time\ntime.sleep(30)", timeout=1)
        assert r.status == "timeout" and s.is_alive
        # the seccomp filter holds without bubblewrap too: no new user namespace, no mount
        r = await s.execute("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                            "print(libc.unshare(0x10000000), ctypes.get_errno(), libc.mount(b'x', b'/tmp', b'tmpfs', 0, None))")
        assert r.text.split() == ["-1", "1", "-1"], r.text
