"""Benchmark search expansion: fork vs replay, at depths 1, 5 and 10 of the same tree.

    python benchmarks/search.py [--repeats R] [--k K]

A scripted model (no model time) writes one typical analysis cell per depth, so the search
grows the same chain-shaped tree every time (c_puct = 0, ties to the older child) and only
the runtime is timed. One expansion = k children of one node, each made by getting a kernel
in the parent's state and running the new cell:

  fork    ForkingKernelSession.fork() of the parent (what run_search does);
  replay  a fresh kernel with every cell of the path re-run from the root, then the new cell
          (JUPITER's approach). The fresh kernels are started beforehand, untimed, so replay
          is charged only for re-running cells, never for kernel start-up.

Prints a table, then (last line) one JSON object with expand_ms_d1, expand_ms_d5,
expand_ms_d10 (fork), replay_ms_d1/d5/d10, fork_over_replay_speedup_d10 and the settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from notebook_agent.agent.loop import AgentConfig
from notebook_agent.kernel import ForkingKernelSession, KernelSession
from notebook_agent.models.scripted import ScriptedModel, call
from notebook_agent.search import SearchConfig, SearchEvent, run_search
from notebook_agent.tasks.task import Task

SALES = Path(__file__).resolve().parents[1] / "examples" / "sales.csv"
DEPTHS = (1, 5, 10)

# One typical agent cell per depth (the cell a child of a node at depth d runs is CELLS[d]).
CELLS = [
    "import pandas as pd\nimport numpy as np\ndf = pd.read_csv('sales.csv')\nprint(df.shape)",
    "df['revenue'] = df.units * df.unit_price\nprint(df.describe())",
    "by_region = df.groupby('region').revenue.sum()\nprint(by_region)",
    "df['month'] = pd.to_datetime(df.date).dt.to_period('M')\nprint(df.groupby('month').units.sum().tail())",
    "import matplotlib.pyplot as plt\nby_region.plot.bar()\nplt.show()",
    "print(df[['units', 'unit_price', 'revenue']].corr())",
    "x = np.random.default_rng(0).normal(size=(200_000, 8))\nprint(x.mean(0).round(3))",
    "print(df.pivot_table(index='region', columns='product', values='units', aggfunc='sum'))",
    "print(df.sort_values('revenue', ascending=False).head(10))",
    "print(df.revenue.quantile([0.25, 0.5, 0.75]))",
    "print(df.groupby('product').revenue.mean().round(2))",
    "print(len(df))",
]


def policy(messages: list[dict[str, Any]]) -> Any:
    d = sum(m["role"] == "assistant" for m in messages)
    return call("execute_code", comment=f"step {d + 1}", code=CELLS[min(d, len(CELLS) - 1)])


class ReplaySession(KernelSession):
    """A session whose `fork()` is a replay: a fresh kernel (pre-started) re-runs the path."""

    def __init__(self, inner: ForkingKernelSession, cells: list[str], spares: asyncio.Queue):
        self.inner, self.cells, self.spares = inner, cells, spares
        self.cwd = inner.cwd

    async def start(self) -> None:
        await self.inner.start()

    async def execute(self, code: str, timeout: float | None = None):
        result = await self.inner.execute(code, timeout)
        if result.ok:
            self.cells = [*self.cells, code]
        return result

    async def fork(self) -> ReplaySession:
        fresh: ForkingKernelSession = self.spares.get_nowait()
        for code in self.cells:
            r = await fresh.execute(code, timeout=120)
            if not r.ok:
                raise RuntimeError(f"replay failed: {r.text}")
        return ReplaySession(fresh, list(self.cells), self.spares)

    async def restart(self) -> None:
        await self.inner.restart()
        self.cells = []

    async def close(self) -> None:
        await self.inner.close()

    @property
    def is_alive(self) -> bool:
        return self.inner.is_alive


async def grow(mode: str, k: int, max_depth: int) -> dict[int, float]:
    """Grow the chain; return {depth of the expanded node: expansion ms}."""
    task = Task(id="bench", question="Describe the sales.", files=[SALES])
    model = ScriptedModel([policy] * (max_depth + 2))
    root = ForkingKernelSession(files=[SALES])
    await root.start()
    spares: asyncio.Queue = asyncio.Queue()
    session: KernelSession = root
    if mode == "replay":  # started before the clock runs: replay is charged for re-running cells only
        fresh = [ForkingKernelSession(files=[SALES]) for _ in range(k * (max_depth + 1))]
        await asyncio.gather(*(s.start() for s in fresh))
        for s in fresh:
            spares.put_nowait(s)
        session = ReplaySession(root, [], spares)
    times: dict[int, float] = {}
    started: dict[str, float] = {}

    def on_event(e: SearchEvent) -> None:
        if e.kind == "iteration":
            started["t"] = time.perf_counter()
        elif e.kind == "expand":
            times[e.tree.nodes[e.data["node"]].depth] = (time.perf_counter() - started["t"]) * 1000

    cfg = SearchConfig(k=k, iterations=max_depth + 1, max_depth=max_depth + 1, c_puct=0.0, logprobs=False,
                       max_live_sessions=4 * k, agent=AgentConfig(require_execution=False, temperature=0.8))
    try:
        result = await run_search(task, model, session, cfg, on_event=on_event)
        assert result.tree.max_depth() == max_depth + 1, result.tree.stats
    finally:
        await root.close()
        while not spares.empty():
            await spares.get_nowait().close()
    return times


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=3)
    args = ap.parse_args()
    max_depth = max(DEPTHS)
    runs: dict[str, list[dict[int, float]]] = {"fork": [], "replay": []}
    for _ in range(args.repeats):
        for mode in ("fork", "replay"):  # interleaved, so both see the same machine load
            runs[mode].append(await grow(mode, args.k, max_depth))
    med = {mode: {d: statistics.median(r[d] for r in rs) for d in range(max_depth + 1)} for mode, rs in runs.items()}

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"search expansion: k={args.k} children, median of {args.repeats} (ms)")
    for col in ("depth", "fork", "replay", "replay / fork"):
        t.add_column(col, justify="right")
    for d in range(max_depth + 1):
        t.add_row(str(d), f"{med['fork'][d]:.1f}", f"{med['replay'][d]:.1f}", f"{med['replay'][d] / med['fork'][d]:.1f}")
    Console().print(t)
    out: dict[str, Any] = {}
    for d in DEPTHS:
        out[f"expand_ms_d{d}"] = round(med["fork"][d], 2)
    for d in DEPTHS:
        out[f"replay_ms_d{d}"] = round(med["replay"][d], 2)
    out["fork_over_replay_speedup_d5"] = round(med["replay"][5] / med["fork"][5], 2)
    out["fork_over_replay_speedup_d10"] = round(med["replay"][10] / med["fork"][10], 2)
    out["fork_depth_ratio_d10_d1"] = round(med["fork"][10] / med["fork"][1], 3)
    out.update({"k": args.k, "repeats": args.repeats, "python": platform.python_version()})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
