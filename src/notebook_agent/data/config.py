"""The pipeline's configuration: one YAML file mapped onto dataclasses (unknown keys are errors)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .dedup import DedupConfig
from .export import ExportConfig
from .filters import FilterConfig
from .linking import LinkConfig
from .llm.client import LLMConfig
from .tables.step import TablesConfig
from .traces import TraceConfig


@dataclass
class InputConfig:
    path: str = ""
    format: str = "ipynb"            # "ipynb" (a folder of notebooks) or "records" (JSONL/Parquet)
    glob: str | None = None
    notebook_key: str = "notebook"   # records: the field holding the notebook
    id_key: str = "id"
    limit: int = -1


@dataclass
class ExecutorConfig:
    """`local` (default), `slurm` or `ray`; `options` go to datatrove's executor constructor
    (e.g. partition, time, cpus_per_task for Slurm)."""

    kind: str = "local"
    tasks: int = 1
    workers: int = 1
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineConfig:
    output: str = "data_out"
    input: InputConfig = field(default_factory=InputConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    tables: TablesConfig = field(default_factory=TablesConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    traces: TraceConfig = field(default_factory=TraceConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        kwargs[name] = _build(type(default), value, f"{where}.{name}") if dataclasses.is_dataclass(default) else value
    return cls(**kwargs)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """A PipelineConfig from YAML; relative paths in it are taken from the file's folder."""
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    data.update(overrides or {})
    cfg = _build(PipelineConfig, data, path.name)
    base = path.parent
    cfg.output = str((base / cfg.output).resolve())
    if cfg.input.path and "://" not in cfg.input.path:
        cfg.input.path = str((base / cfg.input.path).resolve())
    cfg.tables.exclude = [str((base / p).resolve()) for p in cfg.tables.exclude]
    if cfg.link.data_root:
        cfg.link.data_root = str((base / cfg.link.data_root).resolve())
    return cfg
