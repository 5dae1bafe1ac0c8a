"""Step 1: read notebooks, from folders of `.ipynb` files or from JSONL/Parquet records.

Every document's `text` is the notebook JSON; `metadata["source"]` says where it came from and
`metadata["data_files"]` carries any data-file list shipped with the record. Nothing is
validated here (that is the first filter's job, so a corrupt notebook is counted, not lost),
but an unreadable file or record line is logged with its location and skipped.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from loguru import logger

DATA_FILE_KEYS = ("data_files", "file_names", "files")


class _Progress:
    """A log line every `every` notebooks read, with the rate (datatrove logs per task only)."""

    def __init__(self, name: str, rank: int, every: int):
        self.name, self.rank, self.every, self.n, self.t0 = name, rank, every, 0, time.monotonic()

    def tick(self) -> None:
        self.n += 1
        if self.every > 0 and self.n % self.every == 0:
            rate = self.n / max(time.monotonic() - self.t0, 1e-9)
            logger.info(f"{self.name} rank {self.rank}: {self.n} notebooks read ({rate:.0f}/s)")


class IpynbFolderReader(PipelineStep):
    """Every `*.ipynb` under a folder (recursively); shards by file across ranks."""

    type = "📖 - READER"
    name = "ipynb folder"

    def __init__(self, data_folder: DataFolderLike, glob_pattern: str = "**/*.ipynb", limit: int = -1,
                 progress_every: int = 1000):
        super().__init__()
        self.data_folder = get_datafolder(data_folder)
        self.glob_pattern = glob_pattern
        self.limit = limit
        self.progress_every = progress_every

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        paths = [p for p in self.data_folder.list_files(glob_pattern=self.glob_pattern)
                 if "/.ipynb_checkpoints/" not in f"/{p}"]
        progress = _Progress(self.name, rank, self.progress_every)
        for n, path in enumerate(sorted(paths)[rank::world_size]):
            if 0 <= self.limit <= n:
                break
            try:
                with self.data_folder.open(path, "rb") as f:
                    raw = f.read()
                text = raw.decode("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                logger.warning(f"skipping unreadable notebook {path}: {e}")
                self.stat_update("read_errors")
                continue
            self.stat_update("notebooks")
            self.stat_update("bytes", value=len(raw), unit="doc")
            progress.tick()
            yield Document(text=text, id=path, metadata={
                "source": self.data_folder.resolve_paths(path), "source_dir": self.data_folder.path})


class NotebookRecordsReader(PipelineStep):
    """Records (JSONL, optionally gzipped, or Parquet) whose `notebook_key` field holds the notebook
    (a JSON string or an object). Other fields go to metadata; `data_files`/`file_names`/`files`
    become `metadata["data_files"]`."""

    type = "📖 - READER"
    name = "notebook records"

    def __init__(self, data_folder: DataFolderLike, glob_pattern: str | None = None,
                 notebook_key: str = "notebook", id_key: str = "id", limit: int = -1, progress_every: int = 1000):
        super().__init__()
        self.data_folder = get_datafolder(data_folder)
        self.glob_pattern = glob_pattern
        self.notebook_key, self.id_key, self.limit = notebook_key, id_key, limit
        self.progress_every = progress_every

    def _records(self, path: str) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
        """(location, record or None, error) for every record of one file."""
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            with self.data_folder.open(path, "rb") as f:
                table = pq.ParquetFile(f)
                n = 0
                for batch in table.iter_batches():
                    for rec in batch.to_pylist():
                        yield f"{path}#{n}", rec, ""
                        n += 1
            return
        with self.data_folder.open(path, "rb") as f:
            stream = gzip.open(f) if path.endswith(".gz") else f
            for n, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, dict):
                        raise ValueError("not a JSON object")
                    yield f"{path}:{n}", rec, ""
                except ValueError as e:
                    yield f"{path}:{n}", None, str(e)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        pattern = self.glob_pattern
        paths = sorted(p for p in self.data_folder.list_files(glob_pattern=pattern)
                       if p.endswith((".jsonl", ".jsonl.gz", ".json", ".parquet")))
        count = 0
        progress = _Progress(self.name, rank, self.progress_every)
        for path in paths[rank::world_size]:
            try:
                for where, rec, error in self._records(path):
                    if 0 <= self.limit <= count:
                        return
                    if rec is None:
                        logger.warning(f"skipping unreadable record {where}: {error}")
                        self.stat_update("read_errors")
                        continue
                    doc = self._document(where, rec)
                    if doc is None:
                        logger.warning(f"skipping record {where}: no {self.notebook_key!r} field")
                        self.stat_update("read_errors")
                        continue
                    count += 1
                    self.stat_update("notebooks")
                    self.stat_update("bytes", value=len(doc.text), unit="doc")
                    progress.tick()
                    yield doc
            except OSError as e:
                logger.warning(f"skipping the rest of unreadable file {path}: {e}")
                self.stat_update("read_errors")

    def _document(self, where: str, rec: dict[str, Any]) -> Document | None:
        nb = rec.pop(self.notebook_key, None)
        if nb is None:
            return None
        text = nb if isinstance(nb, str) else json.dumps(nb, ensure_ascii=False)
        doc_id = str(rec.pop(self.id_key, "") or where)
        meta: dict[str, Any] = {"source": rec.pop("source", None) or where}
        for key in DATA_FILE_KEYS:
            if key in rec:
                meta["data_files"] = rec.pop(key)
                break
        meta.update({k: v for k, v in rec.items() if not k.startswith("_")})
        return Document(text=text, id=doc_id, metadata=meta)
