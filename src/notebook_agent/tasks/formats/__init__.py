"""One loader per benchmark format; `tasks.loaders.load_benchmark` picks one by name."""

from .common import BenchmarkError, LoadIssue, LoadResult
from .dabench import load_dabench
from .dabstep import load_dabstep
from .jsonl import load_jsonl
from .nbqa import load_nbqa

__all__ = ["BenchmarkError", "LoadIssue", "LoadResult", "load_dabench", "load_dabstep", "load_jsonl", "load_nbqa"]
