"""The `tables` step of `data build`: tasks from the data files the `link` step found beside
mined notebooks, through the same generator as `data tasks` (written to OUT/table_tasks/).
Notebook documents pass through unchanged."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from ...agent.config import SessionConfig
from .exclude import Exclusions
from .generate import GenerateConfig, generate_tasks
from .sources import READERS, Table, slug


@dataclass
class TablesConfig:
    exclude: list[str] = field(default_factory=list)  # benchmark tables to keep out (TSV lists or benchmark folders)
    no_exclude: bool = False                          # run without a list: say so explicitly
    per_table: int = 6
    heldout: float = 0.2
    seed: int = 0
    concurrency: int = 2
    kernel: str = "local"                             # local or forking
    sandbox: str = "auto"

    def check(self) -> None:
        if not self.exclude and not self.no_exclude:
            raise ValueError("tables: set `exclude` (the benchmark tables to keep out, e.g. "
                             "shared/benchmarks/dabench-all-tables.tsv) or `no_exclude: true`")


def linked_table(path: Path) -> Table:
    """A linked file as a table, named by its stem and its path (two notebooks' `data.csv` differ)."""
    digest = hashlib.md5(str(path).encode()).hexdigest()[:6]
    return Table(name=f"{slug(path.stem, 40)}_{digest}", origin=str(path),
                 load=lambda: READERS[path.suffix.lower()](path))


class TableTasksStep(PipelineStep):
    type = "🧮 - TABLES"
    name = "table tasks"

    def __init__(self, output_dir: str, config: TablesConfig | None = None):
        super().__init__()
        self.output_dir = Path(output_dir)
        self.config = config or TablesConfig()
        self.config.check()

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tables: dict[str, Table] = {}
        for doc in data or []:
            for f in doc.metadata.get("files") or []:
                p = Path(f["path"]) if f.get("path") else None
                if p is not None and p.suffix.lower() in READERS and str(p) not in tables:
                    tables[str(p)] = linked_table(p)
            yield doc
        c = self.config
        out = self.output_dir / "table_tasks" / (f"rank{rank:05d}" if world_size > 1 else "")
        config = GenerateConfig(per_table=c.per_table, heldout=c.heldout, seed=c.seed, concurrency=c.concurrency,
                                session=SessionConfig(backend=c.kernel, sandbox=c.sandbox))  # type: ignore[arg-type]
        exclusions = Exclusions.load(c.exclude) if c.exclude else None
        with self.track_time("generate"):
            stats = generate_tasks(list(tables.values()), out, config, exclusions)
        self.stat_update("tables_linked", value=len(tables))
        for fate, n in stats["tables"].items():
            self.stat_update(f"tables_{fate.replace(' ', '_').replace(':', '')}", value=n)
        self.stat_update("tasks", value=stats["tasks"])
