"""Step 2: filters, one small class per rule, each counting what it keeps and why it drops.

Every filter reads the parsed notebook (`notebook_of`), so the JSON is parsed once per document.
A filter that crashes on a strange notebook drops that notebook with reason `filter_error`
(logged with its id) instead of ending the shard.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from loguru import logger

from .notebook import (
    NotebookError,
    ast_nodes,
    called_names,
    cell_output_text,
    code_cells,
    code_text,
    imported_modules,
    kernel_language,
    notebook_of,
    source,
)

TEACHING_DATASETS: dict[str, str] = {
    "iris": r"\biris\b|load_iris",
    "titanic": r"titanic",
    "boston_housing": r"load_boston|boston[_ -]?hous",
    "wine_quality": r"wine[_ -]?quality|load_wine\b",
    "mnist": r"mnist",
    "cifar": r"cifar[-_]?10",
    "digits": r"load_digits",
    "breast_cancer": r"load_breast_cancer",
    "diabetes": r"load_diabetes",
    "california_housing": r"fetch_california_housing",
    "seaborn_samples": r"(?:sns|seaborn)\.load_dataset\(",
}
DEEP_LEARNING_MODULES = ["torch", "tensorflow", "keras", "jax", "flax", "transformers", "torchvision",
                         "pytorch_lightning", "lightning", "fastai", "mxnet", "paddle", "diffusers", "timm"]
EXTERNAL_API_MODULES = ["openai", "anthropic", "cohere", "boto3", "tweepy", "praw", "langchain",
                        "google", "requests", "urllib3", "httpx", "kaggle", "selenium"]
GPU_PATTERNS = [r"\.cuda\(", r"['\"]cuda(?::\d+)?['\"]", r"nvidia-smi", r"tf\.config\.list_physical_devices",
                r"cupy", r"\bcudf\b"]


@dataclass
class FilterConfig:
    """Thresholds and lists of the filters (all overridable from the YAML config)."""

    languages: list[str] = field(default_factory=lambda: ["python"])
    require_in_order: bool = True
    max_unexecuted_fraction: float = 0.0     # share of non-empty code cells without an execution count
    max_error_outputs: int = 0               # cells whose outputs hold an error
    min_code_cells: int = 3
    min_code_chars: int = 200
    min_output_cells: int = 2                # code cells with at least one output
    teaching_datasets: dict[str, str] = field(default_factory=lambda: dict(TEACHING_DATASETS))
    extra_teaching_datasets: dict[str, str] = field(default_factory=dict)
    deep_learning_modules: list[str] = field(default_factory=lambda: list(DEEP_LEARNING_MODULES))
    external_api_modules: list[str] = field(default_factory=lambda: list(EXTERNAL_API_MODULES))
    gpu_patterns: list[str] = field(default_factory=lambda: list(GPU_PATTERNS))


class NotebookFilter(BaseFilter):
    """A filter over the parsed notebook: subclasses implement `check(nb) -> reason or None`."""

    name = "notebook filter"

    def __init__(self, config: FilterConfig | None = None):
        super().__init__()
        self.config = config or FilterConfig()

    def check(self, nb: dict) -> str | None:
        raise NotImplementedError

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        try:
            reason = self.check(notebook_of(doc))
        except NotebookError as e:
            return False, e.reason
        except Exception as e:  # noqa: BLE001 - one odd notebook must not end the shard
            logger.warning(f"{self.name}: dropping {doc.id}: {type(e).__name__}: {e}")
            return False, "filter_error"
        return (True if reason is None else (False, reason))


class ValidNotebookFilter(NotebookFilter):
    """Drops text that is not JSON or not an nbformat-4 notebook (reasons: invalid_json,
    not_a_notebook, bad_nbformat)."""

    name = "valid notebook"

    def check(self, nb: dict) -> str | None:
        return None  # notebook_of raised already if it is not one


class KernelLanguageFilter(NotebookFilter):
    name = "kernel language"

    def check(self, nb: dict) -> str | None:
        lang = kernel_language(nb)
        return None if lang in self.config.languages else "non_python_kernel"


class ExecutionOrderFilter(NotebookFilter):
    """Execution counts must increase down the notebook (no cell re-run out of order)."""

    name = "execution order"

    def check(self, nb: dict) -> str | None:
        if not self.config.require_in_order:
            return None
        counts = [c.get("execution_count") for c in code_cells(nb) if c.get("execution_count") is not None]
        return None if all(a < b for a, b in itertools.pairwise(counts)) else "out_of_order"


class UnexecutedCellsFilter(NotebookFilter):
    name = "unexecuted cells"

    def check(self, nb: dict) -> str | None:
        cells = [c for c in code_cells(nb) if source(c).strip()]
        if not cells:
            return "no_code"
        unexecuted = sum(c.get("execution_count") is None for c in cells)
        return None if unexecuted / len(cells) <= self.config.max_unexecuted_fraction else "unexecuted_cells"


class ErrorOutputFilter(NotebookFilter):
    name = "error outputs"

    def check(self, nb: dict) -> str | None:
        errors = sum(any(o.get("output_type") == "error" for o in c.get("outputs") or []) for c in code_cells(nb))
        return None if errors <= self.config.max_error_outputs else "error_outputs"


class MinContentFilter(NotebookFilter):
    name = "min content"

    def check(self, nb: dict) -> str | None:
        cells = [c for c in code_cells(nb) if source(c).strip()]
        cfg = self.config
        if len(cells) < cfg.min_code_cells:
            return "too_few_code_cells"
        if sum(len(source(c).strip()) for c in cells) < cfg.min_code_chars:
            return "too_little_code"
        if sum(bool(cell_output_text(c).strip() or c.get("outputs")) for c in cells) < cfg.min_output_cells:
            return "too_few_outputs"
        return None


class TeachingDatasetFilter(NotebookFilter):
    """Notebooks on the usual teaching datasets (matched in the code, case-insensitively)."""

    name = "teaching datasets"

    def __init__(self, config: FilterConfig | None = None):
        super().__init__(config)
        table = {**self.config.teaching_datasets, **self.config.extra_teaching_datasets}
        self.names = list(table)
        # one pass over the code: an alternation of named groups g0, g1, ...
        self.pattern = re.compile("|".join(f"(?P<g{i}>{rx})" for i, rx in enumerate(table.values())),
                                  re.IGNORECASE) if table else None

    def check(self, nb: dict) -> str | None:
        m = self.pattern.search(code_text(nb)) if self.pattern else None
        if m is None:
            return None
        return f"teaching_{self.names[int(m.lastgroup[1:])]}"


class DeepLearningFilter(NotebookFilter):
    """Deep-learning, GPU or external-API notebooks: by imported modules and code patterns."""

    name = "deep learning / gpu / api"

    def __init__(self, config: FilterConfig | None = None):
        super().__init__(config)
        self.gpu = re.compile("|".join(self.config.gpu_patterns)) if self.config.gpu_patterns else None

    def check(self, nb: dict) -> str | None:
        nodes = ast_nodes(nb)
        mods = imported_modules(nodes)
        if mods & set(self.config.deep_learning_modules):
            return "deep_learning"
        if self.gpu is not None and self.gpu.search(code_text(nb)):
            return "gpu"
        calls = {c.split(".")[0] for c in called_names(nodes)}
        if (mods | calls) & set(self.config.external_api_modules):
            return "external_api"
        return None


FILTERS: list[type[NotebookFilter]] = [
    ValidNotebookFilter, KernelLanguageFilter, UnexecutedCellsFilter, ExecutionOrderFilter,
    ErrorOutputFilter, MinContentFilter, TeachingDatasetFilter, DeepLearningFilter,
]


def default_filters(config: FilterConfig | None = None) -> list[NotebookFilter]:
    """The filter chain in its default order (cheap checks first)."""
    return [f(config) for f in FILTERS]
