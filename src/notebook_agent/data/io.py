"""Stage folders: each step's output is a folder of gzipped JSONL shards (one per rank), which the
next step reads. Parsed notebooks and other private keys (`_...`) never reach disk."""

from __future__ import annotations

from typing import Any

from datatrove.data import Document
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter


def _adapter(self: Any, document: Document) -> dict[str, Any]:
    meta = {k: v for k, v in document.metadata.items() if not k.startswith("_")}
    return {"id": document.id, "text": document.text, "metadata": meta}


def stage_writer(folder: str) -> JsonlWriter:
    return JsonlWriter(folder, output_filename="${rank}.jsonl.gz", adapter=_adapter)


def stage_reader(folder: str) -> JsonlReader:
    return JsonlReader(folder, glob_pattern="*.jsonl.gz", add_file_path=False)
