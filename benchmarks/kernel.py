"""Benchmark the notebook runtime: per-cell overhead, warm-pool acquisition, fork cost.

    python benchmarks/kernel.py [--quick]

Prints a table, then (last line) one JSON object with:
  exec_overhead_ratio         median trivial-cell round trip through LocalKernelSession.execute
                              / through a bare jupyter_client AsyncKernelClient on an identical
                              kernel (same sandbox, same launcher); target <= 1.5
  pool_acquire_ms             median time to get a ready kernel from a warm pool, with a typical
                              task file (~55 KB) placed in its working directory; <= 50
  fork_ms_depth1/20, fork_depth_ratio
                              ForkingKernelSession.fork() after 1 or 20 cells that each load or
                              transform a ~10 MB data frame; ratio target <= 1.5
  fork_vs_replay_speedup_d10  time to a branch at depth 10 by replay (LocalKernelSession.fork:
                              new kernel + the 10 cells re-run) / by ForkingKernelSession.fork; >= 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jupyter_client.asynchronous import AsyncKernelClient

from notebook_agent.kernel import ForkingKernelSession, KernelPool, LocalKernelSession, Limits
from notebook_agent.kernel.pool import WARM_IMPORTS

LIMITS = Limits(memory_mb=4096)
LOAD = "import pandas as pd\ndf = pd.read_csv('frame.csv')"
TRANSFORM = "df = (df * 1.0001 + {i}).rename(columns=lambda c: c)"  # a new ~10 MB frame each cell


def make_frame(folder: Path) -> Path:
    """A CSV whose data frame is ~10 MB in memory (125k rows x 10 float64 columns)."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.random((125_000, 10)), columns=[f"c{i}" for i in range(10)])
    path = folder / "frame.csv"
    df.to_csv(path, index=False, float_format="%.6f")
    return path


def make_task_file(folder: Path) -> Path:
    """A typical task file: ~55 KB, the median size of the DABench dev tables."""
    rng = np.random.default_rng(1)
    path = folder / "task.csv"
    pd.DataFrame(rng.random((1_000, 5)), columns=list("abcde")).to_csv(path, index=False, float_format="%.6f")
    return path


def depth_cells(depth: int) -> list[str]:
    return [LOAD] + [TRANSFORM.format(i=i) for i in range(1, depth)]


async def bare_roundtrip(kc: AsyncKernelClient, code: str) -> float:
    """One cell through a bare client: execute, wait for the reply and for idle."""
    t0 = time.perf_counter()
    msg_id = kc.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
    while True:
        msg = await kc.get_iopub_msg(timeout=30)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            break
    while True:
        reply = await kc.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    return time.perf_counter() - t0


async def bench_overhead(n: int) -> dict[str, float]:
    ours = LocalKernelSession(limits=LIMITS)
    twin = LocalKernelSession(limits=LIMITS)  # an identical kernel, driven by a bare client
    await asyncio.gather(ours.start(), twin.start())
    twin._kc.stop_channels()  # noqa: SLF001 - only the bare client talks to the twin
    kc = AsyncKernelClient()
    kc.load_connection_info(twin.connection_info)
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    try:
        t_ours, t_bare = [], []
        for i in range(n + 10):
            code = f"x = {i}"
            t0 = time.perf_counter()
            res = await ours.execute(code)
            d_ours = time.perf_counter() - t0
            assert res.ok, res.text
            d_bare = await bare_roundtrip(kc, code)
            if i >= 10:  # warm-up
                t_ours.append(d_ours)
                t_bare.append(d_bare)
        ours_ms, bare_ms = statistics.median(t_ours) * 1e3, statistics.median(t_bare) * 1e3
        return {"exec_ms_ours": ours_ms, "exec_ms_bare": bare_ms, "exec_overhead_ratio": ours_ms / bare_ms}
    finally:
        kc.stop_channels()
        await asyncio.gather(ours.close(), twin.close())


async def bench_pool(n: int, data: Path) -> dict[str, float]:
    pool = KernelPool(lambda: LocalKernelSession(limits=LIMITS, startup_code=WARM_IMPORTS), size=2)
    await pool.start()
    times = []
    try:
        for _ in range(n):
            await pool.wait_ready(timeout=120)
            t0 = time.perf_counter()
            s = await pool.acquire(files=[data])
            times.append(time.perf_counter() - t0)
            r = await s.execute("pd.read_csv('task.csv').shape")  # really ready: pandas imported
            assert r.ok and "1000" in r.text, r.text
            await s.close()
    finally:
        await pool.close()
    return {"pool_acquire_ms": statistics.median(times) * 1e3}


async def forking_parent(depth: int, data: Path) -> ForkingKernelSession:
    s = ForkingKernelSession(files=[data], limits=LIMITS)
    await s.start()
    for code in depth_cells(depth):
        r = await s.execute(code)
        assert r.ok, r.text
    return s


async def time_forks(parent: ForkingKernelSession, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        child = await parent.fork()
        times.append(time.perf_counter() - t0)
        r = await child.execute("float(df.iloc[0, 0])")
        assert r.ok, r.text
        await child.close()
    return statistics.median(times) * 1e3


async def bench_fork(n: int, data: Path) -> dict[str, float]:
    p1 = await forking_parent(1, data)
    p20 = await forking_parent(20, data)
    try:
        await time_forks(p1, 1)  # warm-up (thread pool, page cache)
        d1, d20 = [], []
        for _ in range(3):  # interleave the two depths so that load on the machine hits both alike
            d1.append(await time_forks(p1, n))
            d20.append(await time_forks(p20, n))
        ms1, ms20 = statistics.median(d1), statistics.median(d20)
    finally:
        await asyncio.gather(p1.close(), p20.close())
    return {"fork_ms_depth1": ms1, "fork_ms_depth20": ms20, "fork_depth_ratio": ms20 / ms1}


async def bench_replay(n: int, data: Path) -> dict[str, float]:
    fparent = await forking_parent(10, data)
    lparent = LocalKernelSession(files=[data], limits=LIMITS)
    await lparent.start()
    for code in depth_cells(10):
        assert (await lparent.execute(code)).ok
    try:
        fork_ms = await time_forks(fparent, n)
        replay = []
        for _ in range(max(1, n // 5)):
            t0 = time.perf_counter()
            child = await lparent.fork()
            replay.append(time.perf_counter() - t0)
            r = await child.execute("float(df.iloc[0, 0])")
            assert r.ok, r.text
            await child.close()
        replay_ms = statistics.median(replay) * 1e3
    finally:
        await asyncio.gather(fparent.close(), lparent.close())
    return {"fork_ms_depth10": fork_ms, "replay_ms_depth10": replay_ms,
            "fork_vs_replay_speedup_d10": replay_ms / fork_ms}


async def main(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data = make_frame(Path(tmp))
        res: dict[str, Any] = {}
        res.update(await bench_overhead(40 if quick else 300))
        res.update(await bench_pool(3 if quick else 9, make_task_file(Path(tmp))))
        res.update(await bench_fork(5 if quick else 15, data))
        res.update(await bench_replay(5 if quick else 10, data))
    return res


def table(res: dict[str, Any], elapsed: float, quick: bool) -> str:
    rows = [
        ("trivial cell, our session (ms)", res["exec_ms_ours"], ""),
        ("trivial cell, bare jupyter_client (ms)", res["exec_ms_bare"], ""),
        ("exec_overhead_ratio", res["exec_overhead_ratio"], "<= 1.5"),
        ("pool_acquire_ms", res["pool_acquire_ms"], "<= 50"),
        ("fork_ms_depth1", res["fork_ms_depth1"], ""),
        ("fork_ms_depth20", res["fork_ms_depth20"], ""),
        ("fork_depth_ratio", res["fork_depth_ratio"], "<= 1.5"),
        ("fork_ms_depth10", res["fork_ms_depth10"], ""),
        ("replay_ms_depth10", res["replay_ms_depth10"], ""),
        ("fork_vs_replay_speedup_d10", res["fork_vs_replay_speedup_d10"], ">= 10"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"kernel benchmark ({'quick' if quick else 'full'}, {elapsed:.0f} s, "
             f"python {platform.python_version()}, {platform.machine()})",
             f"{'metric':<{width}}  {'value':>10}  target", "-" * (width + 22)]
    lines += [f"{name:<{width}}  {value:>10.3f}  {target}" for name, value, target in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (under a minute)")
    args = parser.parse_args()
    t0 = time.time()
    results = asyncio.run(main(args.quick))
    print(table(results, time.time() - t0, args.quick))
    print(json.dumps({k: round(v, 4) for k, v in results.items()}))
    sys.stdout.flush()
