"""What only the forking backend does: cheap forks of forks, independent of their parents."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from notebook_agent.kernel import ForkingKernelSession, KernelError, Limits

from kernel_helpers import host_descendants

LIMITS = Limits(memory_mb=2048, interrupt_grace_s=1.0)


async def test_fork_tree_outlives_its_parents() -> None:
    before = host_descendants()
    root = ForkingKernelSession(limits=LIMITS)
    await root.start()
    r = await root.execute("import numpy as np, pandas as pd\ndf = pd.DataFrame({'v': np.arange(5)})\n"
                           "open('log.txt', 'w').write('root\\n')")
    assert r.ok
    count = r.execution_count
    child = await root.fork()
    await child.execute("df['v'] *= 10\nopen('log.txt', 'a').write('child\\n')")
    grandchild = await child.fork()
    await root.close()  # closing ancestors does not touch descendants
    await child.close()
    r = await grandchild.execute("int(df.v.sum()), open('log.txt').read()")
    assert r.ok and r.outputs[0]["data"]["text/plain"] == "(100, 'root\\nchild\\n')"
    assert r.execution_count is not None and count is not None and r.execution_count > count
    great = await grandchild.fork()
    assert (await great.execute("int(df.v.sum())")).outputs[0]["data"]["text/plain"] == "100"
    await grandchild.close()
    await great.close()
    await asyncio.sleep(0.3)
    assert host_descendants() - before == set()


async def test_worker_is_single_threaded_and_fork_safe() -> None:
    async with ForkingKernelSession(limits=LIMITS) as s:
        r = await s.execute("import threading, numpy as np, pandas as pd, matplotlib.pyplot as plt\n"
                            "plt.plot([1]); plt.show()\nthreading.active_count()")
        assert r.outputs[-1]["data"]["text/plain"] == "1"
        kids = [await s.fork() for _ in range(4)]
        results = await asyncio.gather(*(k.execute(f"x = {i}\nx * 2") for i, k in enumerate(kids)))
        assert [r.outputs[0]["data"]["text/plain"] for r in results] == ["0", "2", "4", "6"]
        assert len({k.pid for k in kids} | {s.pid}) == 5
        for k in kids:
            await k.close()


async def test_fork_after_kill_is_a_clear_error() -> None:
    async with ForkingKernelSession(limits=LIMITS) as s:
        code = "import time\nwhile True:\n    try:\n        time.sleep(0.2)\n    except KeyboardInterrupt:\n        pass"
        assert (await s.execute(code, timeout=0.5)).status == "timeout"
        with pytest.raises(KernelError, match="restart"):
            await s.fork()
        await s.restart()
        child = await s.fork()
        assert (await child.execute("1 + 1")).ok
        await child.close()


async def test_fork_copies_nested_files_and_keeps_parent_dir(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    async with ForkingKernelSession(workdir=wd, limits=LIMITS) as s:
        await s.execute("import os\nos.makedirs('out/deep')\nopen('out/deep/a.txt', 'w').write('A')")
        child = await s.fork()
        assert (child.cwd / "out/deep/a.txt").read_text() == "A"
        await child.execute("import shutil\nshutil.rmtree('out')")
        assert (wd / "out/deep/a.txt").exists()
        await child.close()
        assert not child.cwd.exists()  # a fork's directory is temporary
    assert (wd / "out/deep/a.txt").exists()  # the caller's directory is kept
