"""Benchmark the notebook pipeline's steps 1-4 (read, filter, dedup, link).

    taskset -c 1 python benchmarks/data.py [--n 10000] [--dup-rate 0.1] [--work /tmp/bench-data]

Generates N notebooks (random analysis cells over random column names, with outputs; planted
near-duplicates of earlier notebooks, and some truncated / out-of-order / erroring / teaching
ones), writes them as .ipynb files, then times:
- the limit: reading every file and `json.loads` on it, nothing else;
- `run_pipeline(steps="read,filter,dedup,link")`: datatrove's local executor, one task,
  including the executor's start and writing the link stage's gzipped JSONL.
Wall-clock figures suffer when other work shares the core; CPU-time figures (this process's
`time.process_time`, the executor runs the task in-process) do not, and are reported beside.
Dedup precision/recall are measured on the planted duplicates among the notebooks that pass
the filters. Last line: one JSON object (notebooks_per_s, mb_per_s, parse_limit_ratio,
dedup_precision, dedup_recall, ...).
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import random
import shutil
import time
from pathlib import Path

OPS = [
    "print(df['{a}'].describe())",
    "print(round(df['{a}'].mean(), {k}))",
    "g = df.groupby('{c}')['{a}'].sum()\nprint(g.sort_values(ascending=False).head({k}))",
    "print(df[df['{a}'] > {x}].shape[0])",
    "df['{n}'] = df['{a}'] * {x} + df['{b}']\nprint(df['{n}'].max())",
    "print(df[['{a}', '{b}']].corr().round(3))",
    "q = df['{b}'].quantile({p})\nprint('q{k}:', q)",
    "top = df.nlargest({k}, '{a}')[['{c}', '{a}']]\nprint(top)",
    "print(df['{c}'].value_counts().head({k}))",
    "pivot = df.pivot_table(index='{c}', values='{b}', aggfunc='{agg}')\nprint(pivot)",
    "df = df.dropna(subset=['{a}'])\nprint(len(df))",
    "import matplotlib.pyplot as plt\nax = df['{a}'].hist(bins={k})\nplt.title('{n}')",
    "print(df.isna().sum().sum())",
    "ratio = df['{a}'].sum() / df['{b}'].sum()\nprint(round(ratio, {k}))",
    "df['{n}_rank'] = df['{a}'].rank(pct=True)\nprint(df['{n}_rank'].median())",
    "print(df.groupby('{c}').agg({{'{a}': '{agg}', '{b}': 'max'}}))",
    "rolling = df['{a}'].rolling({k}).mean()\nprint(rolling.tail({k}))",
    "print((df['{a}'] - df['{b}']).abs().mean())",
]
WORDS = ("sales price units region city temp rain score age income visits clicks rating weight height volume "
         "month store product channel segment cost margin tax fee speed distance delay duration count share").split()


def rand_name(rng: random.Random) -> str:
    return f"{rng.choice(WORDS)}_{rng.choice(WORDS)}{rng.randint(0, 99)}"


def cell(src: str, count: int | None, out: str | None, error: bool = False) -> dict:
    outputs = []
    if error:
        outputs = [{"output_type": "error", "ename": "KeyError", "evalue": "'x'", "traceback": ["KeyError: 'x'"]}]
    elif out is not None:
        outputs = [{"output_type": "stream", "name": "stdout", "text": out}]
    return {"cell_type": "code", "execution_count": count, "id": f"c{rng_id()}", "metadata": {},
            "outputs": outputs, "source": src}


_ids = iter(range(10**9))


def rng_id() -> int:
    return next(_ids)


def make_cells(rng: random.Random) -> list[str]:
    cols = [rand_name(rng) for _ in range(4)]
    fname = f"{rand_name(rng)}.csv"
    srcs = [f"import pandas as pd\nimport numpy as np\ndf = pd.read_csv('{fname}')\nprint(df.shape)"]
    for _ in range(rng.randint(4, 9)):
        srcs.append(rng.choice(OPS).format(a=cols[0], b=cols[1], c=cols[2], n=cols[3], k=rng.randint(2, 9),
                                           x=round(rng.uniform(0, 100), 2), p=round(rng.random(), 2),
                                           agg=rng.choice(["mean", "sum", "median"])))
        rng.shuffle(cols)
    return srcs


def notebook(srcs: list[str], rng: random.Random, order=None, error_at=None) -> dict:
    counts = order or list(range(1, len(srcs) + 1))
    cells = [{"cell_type": "markdown", "id": f"m{rng_id()}", "metadata": {}, "source": "# Analysis"}]
    for i, (src, c) in enumerate(zip(srcs, counts)):
        out = "\n".join(f"{rng.random():.4f}" for _ in range(rng.randint(1, 12))) + "\n"
        cells.append(cell(src, c, out, error=(i == error_at)))
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                         "language_info": {"name": "python"}}}


def near_duplicate(srcs: list[str], rng: random.Random) -> list[str]:
    out = list(srcs)
    i = rng.randrange(1, len(out))
    out[i] = out[i] + "  # checked"
    out.append("print(df.head())")
    return out


def generate(folder: Path, n: int, dup_rate: float, seed: int = 0) -> dict[str, str]:
    """Write n notebooks; returns {file name: kind} (good, dup, truncated, out_of_order, error, teaching)."""
    rng = random.Random(seed)
    kinds: dict[str, str] = {}
    originals: list[list[str]] = []
    for i in range(n):
        r = rng.random()
        name = f"nb{i:05d}.ipynb"
        if r < dup_rate and originals:
            srcs, kind = near_duplicate(rng.choice(originals), rng), "dup"
            nb = notebook(srcs, rng)
        elif r < dup_rate + 0.02:
            srcs, kind = make_cells(rng), "truncated"
            text = json.dumps(notebook(srcs, rng), indent=1)
            (folder / name).write_text(text[: len(text) // 2])
            kinds[name] = kind
            continue
        elif r < dup_rate + 0.04:
            srcs, kind = make_cells(rng), "out_of_order"
            order = list(range(1, len(srcs) + 1))
            order[1], order[2] = order[2], order[1]
            nb = notebook(srcs, rng, order=order)
        elif r < dup_rate + 0.06:
            srcs, kind = make_cells(rng), "error"
            nb = notebook(srcs, rng, error_at=2)
        elif r < dup_rate + 0.08:
            srcs, kind = make_cells(rng), "teaching"
            srcs[0] = srcs[0].replace("pd.read_csv('", "pd.read_csv('titanic_")
            nb = notebook(srcs, rng)
        else:
            srcs, kind = make_cells(rng), "good"
            originals.append(srcs)
            nb = notebook(srcs, rng)
        (folder / name).write_text(json.dumps(nb, indent=1))
        kinds[name] = kind
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dup-rate", type=float, default=0.1)
    ap.add_argument("--work", default="/tmp/bench-data")
    args = ap.parse_args()

    from notebook_agent.data import load_config, run_pipeline  # noqa: F401 (import time not measured)
    from notebook_agent.data.config import InputConfig, PipelineConfig

    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    nbdir = work / "notebooks"
    nbdir.mkdir(parents=True)
    kinds = generate(nbdir, args.n, args.dup_rate)
    files = sorted(nbdir.glob("*.ipynb"))
    total_bytes = sum(p.stat().st_size for p in files)

    t0, c0 = time.perf_counter(), time.process_time()
    parsed = 0
    for p in files:
        try:
            json.loads(p.read_bytes())
            parsed += 1
        except ValueError:
            pass
    parse_s, parse_cpu = time.perf_counter() - t0, time.process_time() - c0

    cfg = PipelineConfig(output=str(work / "out"), input=InputConfig(path=str(nbdir)))
    cfg.filters.min_output_cells = 2
    t0, c0 = time.perf_counter(), time.process_time()
    stats = run_pipeline(cfg, steps="read,filter,dedup,link", log=lambda m: None)
    pipe_s, pipe_cpu = time.perf_counter() - t0, time.process_time() - c0

    kept = set()
    for p in (work / "out" / "stages" / "link").glob("*.jsonl.gz"):
        for line in gzip.open(p, "rt"):
            kept.add(json.loads(line)["id"])
    passing = {k for k, v in kinds.items() if v in ("good", "dup")}
    dropped = passing - kept
    planted = {k for k, v in kinds.items() if v == "dup"}
    tp = len(dropped & planted)
    precision = tp / len(dropped) if dropped else 1.0
    recall = tp / len(planted) if planted else 1.0
    wrong_kept = {k for k in kept if kinds[k] not in ("good", "dup")}

    mb = total_bytes / 1e6
    rows = [
        ("notebooks", f"{len(files)}"), ("MB", f"{mb:.1f}"),
        ("parse only (s)", f"{parse_s:.2f}"), ("parse only (nb/s)", f"{len(files) / parse_s:.0f}"),
        ("steps 1-4 (s)", f"{pipe_s:.2f}"), ("steps 1-4 (nb/s)", f"{len(files) / pipe_s:.0f}"),
        ("steps 1-4 (MB/s)", f"{mb / pipe_s:.2f}"), ("ratio to parse-only", f"{parse_s / pipe_s:.3f}"),
        ("parse only CPU (s)", f"{parse_cpu:.2f}"), ("steps 1-4 CPU (s)", f"{pipe_cpu:.2f}"),
        ("kept after link", f"{len(kept)}"), ("planted duplicates", f"{len(planted)}"),
        ("dedup precision", f"{precision:.4f}"), ("dedup recall", f"{recall:.4f}"),
        ("bad notebooks kept", f"{len(wrong_kept)}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'metric'.ljust(width)}  value")
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    per_step = {s: {b: v["time_s"] for b, v in stats[s]["blocks"].items()} for s in ("read", "filter", "dedup", "link")}
    print("block times (s):", json.dumps(per_step, ensure_ascii=False))
    print(json.dumps({
        "notebooks": len(files), "mb": round(mb, 2), "notebooks_per_s": round(len(files) / pipe_s, 1),
        "mb_per_s": round(mb / pipe_s, 3), "parse_only_notebooks_per_s": round(len(files) / parse_s, 1),
        "parse_limit_ratio": round(parse_s / pipe_s, 4), "dedup_precision": round(precision, 4),
        "dedup_recall": round(recall, 4), "cpu_s": round(pipe_cpu, 2), "parse_cpu_s": round(parse_cpu, 3),
        "cpu_notebooks_per_s": round(len(files) / pipe_cpu, 1),
        "parse_limit_ratio_cpu": round(parse_cpu / pipe_cpu, 4), "planted_duplicates": len(planted), "bad_kept": len(wrong_kept),
        "machine": platform.platform(),
    }))


if __name__ == "__main__":
    main()
