"""Uploads from the browser: checked names, allowed types, a size limit enforced while streaming.

A file name from the browser never reaches the file system unchecked: `check_name` accepts a
plain base name made of a strict set of characters or raises `UploadRejected` (HTTP 400).
`receive_files` parses the multipart body chunk by chunk (python-multipart's push parser),
writing each file straight to disk, so memory never holds more than one chunk and the body is
refused with 413 as soon as it passes the limit; on any rejection the partial files are removed.
Two more limits answer 413 the same way: the number of files in one request, and the bytes all
kept uploads take together (`StorageBudget`, counted while streaming, concurrent uploads included).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import python_multipart

ALLOWED_EXTENSIONS = ("csv", "tsv", "txt", "json", "jsonl", "xlsx", "xls", "parquet")
# Files the run directory writes itself: an upload may not take their names.
RESERVED_NAMES = frozenset({"events.jsonl", "trajectory.json", "run.json", "notebook.ipynb"})
MAX_NAME_CHARS = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]*")
_MAX_HEADER_BYTES = 16 * 1024      # one part's headers
_MAX_FIELD_BYTES = 64 * 1024       # a non-file form field (kept in memory, so small)


class UploadRejected(Exception):
    """An upload that is refused; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class StoredFile:
    name: str
    size: int
    path: Path


_BATCH = re.compile(r"[0-9a-f]{32}")


class StorageBudget:
    """The bytes all kept uploads under `root` may take together.

    What is on disk is counted when an upload starts and none is under way (so files removed by
    hand are noticed); uploads under way reserve every byte they receive until they end. When an
    upload would pass the limit, upload batches (`root/<32 hex>/`) neither written nor used for
    `keep_s` seconds are removed first, oldest first (None: never).
    """

    def __init__(self, root: Path, limit_bytes: int, keep_s: float | None = None):
        self.root = root
        self.limit = limit_bytes
        self.keep_s = keep_s
        self.stored: int | None = None    # complete uploads on disk
        self.pending = 0                  # bytes received by uploads under way
        self.active = 0

    def _scan(self, root: Path | str | None = None) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.root if root is None else root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass
        return total

    @property
    def used(self) -> int:
        return (self.stored or 0) + self.pending

    def begin(self) -> None:
        if self.active == 0 or self.stored is None:
            self.stored = self._scan()
        self.active += 1

    def check(self, more: int) -> None:
        """Raise 413 unless `more` bytes still fit (after removing idle batches if need be)."""
        if self.used + more > self.limit and self.keep_s is not None:
            self._evict(self.used + more - self.limit)
        if self.used + more > self.limit:
            raise UploadRejected(413, f"upload storage is full: the uploads kept on this server may take "
                                      f"{self.limit / 2**20:g} MiB in all and {self.used / 2**20:.1f} MiB "
                                      "are taken; ask the operator to remove old uploads or raise "
                                      "--max-upload-storage-mb")

    def _evict(self, need: int) -> None:
        """Remove batches idle for more than keep_s, oldest first, until `need` bytes are free."""
        assert self.keep_s is not None
        cutoff = time.time() - self.keep_s
        idle = []
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return
        for entry in entries:
            try:
                if _BATCH.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                    if mtime < cutoff:
                        idle.append((mtime, entry.path))
            except OSError:
                continue
        for _mtime, path in sorted(idle):
            if need <= 0:
                return
            size = self._scan(path)
            shutil.rmtree(path, ignore_errors=True)
            self.stored = max(0, (self.stored or 0) - size)
            need -= size

    def take(self, n: int) -> None:
        self.check(n)
        self.pending += n

    def end(self, taken: int, stored: int) -> None:
        self.pending -= taken
        self.stored = (self.stored or 0) + stored
        self.active -= 1


def check_name(raw: str | None) -> str:
    """The name itself when it is a safe base name with an allowed extension, else raise.

    Rejected (400): empty, any path separator, '..', absolute or drive paths, hidden files,
    characters outside [A-Za-z0-9._ -], over MAX_NAME_CHARS, reserved names. Rejected (415):
    an extension outside ALLOWED_EXTENSIONS.
    """
    if raw is None or not raw.strip():
        raise UploadRejected(400, "the file has no name")
    name = raw
    shown = ascii(raw)[1:-1][:80]
    if "/" in name or "\\" in name or ".." in name or ":" in name or "\x00" in name:
        raise UploadRejected(400, f"file name {shown!r} is a path; send a plain file name")
    if name.startswith("."):
        raise UploadRejected(400, f"file name {shown!r} is hidden (starts with '.')")
    if len(name) > MAX_NAME_CHARS:
        raise UploadRejected(400, f"file name is longer than {MAX_NAME_CHARS} characters")
    if not _NAME.fullmatch(name) or name.endswith((" ", ".")):
        raise UploadRejected(400, f"file name {shown!r} has characters outside letters, digits, "
                                  "'.', '_', '-' and space")
    if name.lower() in RESERVED_NAMES:
        raise UploadRejected(400, f"file name {name!r} is reserved for the run's own files")
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in ALLOWED_EXTENSIONS:
        kind = f"'.{ext}'" if ext else "a file without extension"
        raise UploadRejected(415, f"unsupported file type {kind}: allowed are " +
                             ", ".join("." + e for e in ALLOWED_EXTENSIONS))
    return name


def safe_join(directory: Path, name: str) -> Path:
    """directory/name, checked to stay inside directory (a second line of defence)."""
    base = directory.resolve()
    path = (base / name).resolve()
    if path.parent != base:
        raise UploadRejected(400, f"file name {name!r} leaves the upload directory")
    return path


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    """Parse `form-data; name="file"; filename="a.csv"` (quoted-string escapes handled)."""
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for m in re.finditer(r'\s*([\w*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)\s*;?', rest):
        key, val = m.group(1).lower(), m.group(2).strip()
        if val.startswith('"'):
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        params[key] = val
    return kind.strip().lower(), params


class _Receiver:
    """python-multipart callbacks: one open file at a time, counted against the limit."""

    def __init__(self, dest: Path, max_files: int | None = None):
        self.dest = dest
        self.max_files = max_files
        self.body_bytes = 0
        self.taken = 0             # bytes reserved in a StorageBudget
        self.files: list[StoredFile] = []
        self.fields: dict[str, str] = {}
        self._written: list[Path] = []
        self._reset_part()

    def _reset_part(self) -> None:
        self._headers: dict[str, str] = {}
        self._field, self._value = b"", b""
        self._header_bytes = 0
        self._out: IO[bytes] | None = None
        self._current: StoredFile | None = None
        self._field_name: str | None = None
        self._field_value = bytearray()

    # header callbacks
    def on_part_begin(self) -> None:
        self._reset_part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._grow_header(end - start)
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._grow_header(end - start)
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("utf-8", "replace")
        self._field, self._value = b"", b""

    def _grow_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > _MAX_HEADER_BYTES:
            raise UploadRejected(400, "a part's headers are too large")

    def on_headers_finished(self) -> None:
        kind, params = _header_params(self._headers.get("content-disposition", ""))
        if kind != "form-data" or "name" not in params:
            raise UploadRejected(400, "malformed multipart part (no form-data name)")
        if "filename" not in params and "filename*" not in params:
            self._field_name = params["name"]
            return
        raw = params.get("filename")
        if raw is None:  # RFC 5987 form: utf-8''name
            raw = params["filename*"].split("''", 1)[-1]
        if self.max_files is not None and len(self.files) >= self.max_files:
            raise UploadRejected(413, f"too many files in one upload: the limit is {self.max_files}")
        name = check_name(raw)
        if any(f.name == name for f in self.files):
            raise UploadRejected(400, f"two files share the name {name!r}")
        path = safe_join(self.dest, name)
        self.dest.mkdir(parents=True, exist_ok=True)
        self._out = path.open("xb")
        self._written.append(path)
        self._current = StoredFile(name=name, size=0, path=path)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self._out is not None and self._current is not None:
            self._out.write(data[start:end])
            self._current.size += n
        elif self._field_name is not None:
            if len(self._field_value) + n > _MAX_FIELD_BYTES:
                raise UploadRejected(413, "a form field is too large")
            self._field_value += data[start:end]

    def on_part_end(self) -> None:
        if self._out is not None and self._current is not None:
            self._out.close()
            self.files.append(self._current)
        elif self._field_name is not None:
            self.fields[self._field_name] = self._field_value.decode("utf-8", "replace")
        self._reset_part()

    @property
    def in_file(self) -> bool:
        return self._out is not None

    def callbacks(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end",
            "on_headers_finished", "on_part_data", "on_part_end")}

    def discard(self) -> None:
        if self._out is not None:
            self._out.close()
        for path in self._written:
            path.unlink(missing_ok=True)


async def receive_files(content_type: str | None, content_length: str | None, body: AsyncIterator[bytes],
                        dest: Path, max_bytes: int, max_files: int | None = None,
                        storage: StorageBudget | None = None) -> list[StoredFile]:
    """Stream a multipart/form-data body into `dest`; return the stored files.

    Raises UploadRejected: 413 when the body exceeds `max_bytes` (told by Content-Length up
    front, or counted while reading), when it holds more than `max_files` files, or when it
    would take `storage` past its limit (counted the same way); 400 for malformed bodies or bad
    names, 415 for types. Nothing is left in `dest` when it raises.
    """
    kind, params = _header_params(content_type or "")
    if kind != "multipart/form-data" or not params.get("boundary"):
        raise UploadRejected(415, "send the files as multipart/form-data")
    limit_mb = max_bytes / 2**20
    declared = None
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise UploadRejected(400, "bad Content-Length") from None
        if declared > max_bytes:
            raise UploadRejected(413, f"upload too large: {declared / 2**20:.1f} MiB, the limit is {limit_mb:g} MiB")
    receiver = _Receiver(dest, max_files)
    parser = python_multipart.MultipartParser(params["boundary"].encode("latin-1"), receiver.callbacks())
    created = not dest.exists()
    if storage is not None:
        storage.begin()
    try:
        try:
            if storage is not None and declared is not None:
                storage.check(declared)
            async for chunk in body:
                receiver.body_bytes += len(chunk)
                if receiver.body_bytes > max_bytes:
                    raise UploadRejected(413, f"upload too large: more than the limit of {limit_mb:g} MiB")
                if storage is not None:
                    storage.take(len(chunk))
                    receiver.taken += len(chunk)
                parser.write(chunk)
            parser.finalize()
        except python_multipart.exceptions.MultipartParseError as e:
            raise UploadRejected(400, f"malformed multipart body: {e}") from None
        if receiver.in_file:
            raise UploadRejected(400, "the multipart body ended in the middle of a file")
        if not receiver.files:
            raise UploadRejected(400, "no file in the upload")
    except BaseException:  # a refusal, or the client went away: keep nothing
        receiver.discard()
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        if storage is not None:
            storage.end(receiver.taken, 0)
        raise
    if storage is not None:
        storage.end(receiver.taken, sum(f.size for f in receiver.files))
    return receiver.files
