"""Benchmarks by name: `load_benchmark("KIND:PATH")` with KIND one of dabench, dabstep, nbqa,
jsonl. Bad records are skipped and reported in `LoadResult.errors` with their ids; only a
benchmark that cannot be read at all raises `BenchmarkError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from .formats import BenchmarkError, LoadIssue, LoadResult, load_dabench, load_dabstep, load_jsonl, load_nbqa

LOADERS: dict[str, Callable[[Path], LoadResult]] = {
    "dabench": load_dabench,
    "dabstep": load_dabstep,
    "nbqa": load_nbqa,
    "jsonl": load_jsonl,
}


def parse_spec(spec: str) -> tuple[str, Path]:
    """`KIND:PATH` -> (kind, path). A bare `.jsonl` path means `jsonl:`."""
    kind, sep, path = spec.partition(":")
    if sep and kind in LOADERS:
        return kind, Path(path).expanduser()
    if spec.endswith(".jsonl") and kind not in LOADERS:
        return "jsonl", Path(spec).expanduser()
    raise BenchmarkError(f"benchmark {spec!r} is not KIND:PATH with KIND one of {', '.join(LOADERS)} "
                         "(for example dabench:/path/to/dabench-dev)")


def select(result: LoadResult, ids: Iterable[str] | None = None, limit: int | None = None) -> LoadResult:
    """Keep the tasks named in `ids` (in file order; unknown ids become issues), then the first
    `limit` of them."""
    tasks = result.tasks
    errors = list(result.errors)
    if ids is not None:
        wanted = [str(i).strip() for i in ids if str(i).strip()]
        known = {t.id for t in tasks} | {e.id for e in result.errors}
        errors += [LoadIssue(i, "not in the benchmark") for i in wanted if i not in known]
        keep = set(wanted)
        tasks = [t for t in tasks if t.id in keep]
        errors = [e for e in errors if e.id in keep]
    if limit is not None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        tasks = tasks[:limit]
    return LoadResult(tasks=tasks, errors=errors)


def load_benchmark(spec: str, limit: int | None = None, ids: Iterable[str] | None = None) -> LoadResult:
    kind, path = parse_spec(spec)
    return select(LOADERS[kind](path), ids=ids, limit=limit)


def benchmark_kind(spec: str) -> str:
    return parse_spec(spec)[0]


__all__ = ["BenchmarkError", "LOADERS", "LoadIssue", "LoadResult", "benchmark_kind", "load_benchmark",
           "parse_spec", "select"]
