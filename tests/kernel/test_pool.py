"""The warm pool: ready kernels with pandas/numpy imported, files placed on acquire."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from notebook_agent.kernel import KernelError, KernelPool, Limits, LocalKernelSession

from kernel_helpers import host_descendants


async def test_acquire_is_ready_fast_and_refills(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n2\n")
    before = host_descendants()
    pool = KernelPool.for_backend("local", size=2, limits=Limits(memory_mb=2048))
    await pool.start()
    await pool.wait_ready(timeout=120)
    t0 = time.perf_counter()
    s1 = await pool.acquire(files=[data])
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5  # a started kernel, not a cold start (the benchmark measures the median)
    r = await s1.execute("int(pd.read_csv('data.csv').a.sum()), np.__name__, plt.__name__")  # no imports needed
    assert r.ok and r.outputs[0]["data"]["text/plain"] == "(3, 'numpy', 'matplotlib.pyplot')"
    with pytest.raises(FileNotFoundError):
        await pool.acquire(files=[tmp_path / "missing.csv"])
    s2 = await pool.acquire()
    assert s2.cwd != s1.cwd and not (s2.cwd / "data.csv").exists()
    await pool.wait_ready(timeout=120)  # refilled in the background
    assert pool.ready == 2
    await pool.close()
    assert s1.is_alive  # acquired sessions belong to the caller
    await s1.close()
    await s2.close()
    await asyncio.sleep(0.3)
    assert host_descendants() - before == set()


async def test_pool_reports_kernels_that_cannot_start() -> None:
    pool = KernelPool(lambda: LocalKernelSession(startup_code="raise ValueError('boom')"), size=1)
    await pool.start()
    with pytest.raises(KernelError, match="boom"):
        await asyncio.wait_for(pool.acquire(), 120)
    await pool.close()
    with pytest.raises(KernelError, match="closed"):
        await pool.acquire()
