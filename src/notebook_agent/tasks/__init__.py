"""Tasks: the `Task` record, loaders for benchmark formats, and their official scorers.

    from notebook_agent.tasks import load_benchmark, scorer_for
    result = load_benchmark("dabench:../shared/benchmarks/dabench-dev")   # .tasks, .errors
"""

from .formats import BenchmarkError, LoadIssue, LoadResult
from .loaders import load_benchmark
from .scoring import Score, get_scorer, scorer_for, summarize
from .task import Task

__all__ = ["BenchmarkError", "LoadIssue", "LoadResult", "Score", "Task", "get_scorer", "load_benchmark",
           "scorer_for", "summarize"]
