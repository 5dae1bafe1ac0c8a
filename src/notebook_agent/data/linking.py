"""Step 4: link data files. Find the files a notebook's code reads (AST, not regex), resolve
them against the notebook's folder, the record's `data_files` metadata and a data root, and
mark the notebook executable when every file it reads is here.

What counts as a read: calls whose name ends in one of `READERS` (pd.read_csv, np.load,
open in a read mode, ...), with the path as the first argument or a path keyword. A path is
resolved statically when it is a string constant, a variable assigned one, an
`os.path.join`/`Path(...)`/`/`/`+` of those, or an f-string without fields; anything else is
counted as `dynamic`. URLs are `remote` (never executable offline).
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from loguru import logger

from .notebook import NotebookError, ast_nodes, dotted_name, notebook_of

READERS = {
    "read_csv", "read_table", "read_excel", "read_parquet", "read_json", "read_feather", "read_pickle",
    "read_hdf", "read_stata", "read_sas", "read_spss", "read_fwf", "read_orc", "read_xml", "scan_csv",
    "scan_parquet", "load", "loadtxt", "genfromtxt", "fromfile", "open", "imread", "read_file",
    "ExcelFile", "load_workbook",
}
PATH_KEYWORDS = ("filepath_or_buffer", "path", "io", "file", "fname", "filename", "path_or_buf", "source")
# `load` alone is too common (json.load(f), pickle.load(f) take file objects): only these prefixes.
LOAD_PREFIXES = ("np", "numpy", "joblib", "torch")
REMOTE = ("http://", "https://", "s3://", "gs://", "ftp://", "hf://")


@dataclass
class LinkConfig:
    data_root: str | None = None         # a folder of data files shared by all notebooks
    search_notebook_dir: bool = True     # also look beside the notebook (and in its repository)
    drop_not_executable: bool = False    # keep only notebooks whose reads all resolve
    extra_readers: list[str] = field(default_factory=list)


def _const(node: ast.AST, env: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return env.get(node.id)
    if isinstance(node, ast.JoinedStr):
        parts = [_const(v, env) if not isinstance(v, ast.FormattedValue) else _const(v.value, env)
                 for v in node.values]
        return None if any(p is None for p in parts) else "".join(parts)  # type: ignore[arg-type]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Div)):
        left, right = _const(node.left, env), _const(node.right, env)
        if left is None or right is None:
            return None
        return left + right if isinstance(node.op, ast.Add) else os.path.join(left, right)
    if isinstance(node, ast.Call):
        name = dotted_name(node.func)
        args = [_const(a, env) for a in node.args]
        if name.endswith(("path.join", "Path", "PurePath")) and args and all(a is not None for a in args):
            return os.path.join(*args)  # type: ignore[arg-type]
    return None


def _is_reader(name: str, readers: set[str]) -> bool:
    last = name.rsplit(".", 1)[-1]
    if last not in readers:
        return False
    return last != "load" or name.split(".")[0] in LOAD_PREFIXES


def _read_mode(call: ast.Call) -> bool:
    mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
    if mode is None:
        return True
    m = _const(mode, {})
    return m is None or not any(ch in m for ch in "wax")


def find_reads(code: list[ast.Module] | list[tuple[int, ast.AST]],
               extra_readers: list[str] | tuple[str, ...] = ()) -> tuple[list[str], int]:
    """(the static paths the code reads, in order and unique; how many reads were dynamic).
    `code` is a list of cell ASTs or `notebook.ast_nodes` of them."""
    nodes = ast_nodes(code) if code and isinstance(code[0], ast.Module) else code
    readers = READERS | set(extra_readers)
    env: dict[str, str] = {}
    for _, node in nodes:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = _const(node.value, env)
            if value is not None:
                env[node.targets[0].id] = value
    calls = sorted(((i, n) for i, n in nodes if isinstance(n, ast.Call)),
                   key=lambda x: (x[0], x[1].lineno, x[1].col_offset))
    paths: list[str] = []
    dynamic = 0
    for _, node in calls:
        name = dotted_name(node.func)
        if not _is_reader(name, readers) or (name.endswith("open") and not _read_mode(node)):
            continue
        arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg in PATH_KEYWORDS), None)
        if arg is None:
            continue
        path = _const(arg, env)
        if path is None:
            dynamic += 1
        elif path.strip() and path not in paths:
            paths.append(path)
    return paths, dynamic


class _Index:
    """Files under a folder, by relative path and by base name (built once per folder)."""

    def __init__(self, root: Path, max_files: int = 200_000):
        self.root = root.resolve()
        self.by_name: dict[str, list[Path]] = {}
        n = 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for f in filenames:
                self.by_name.setdefault(f, []).append(Path(dirpath) / f)
                n += 1
            if n > max_files:
                logger.warning(f"stopped indexing {root} after {max_files} files")
                break

    def find(self, ref: str, near: Path | None = None) -> Path | None:
        """The file `ref` names, beside `near` or under the root, or by base name under the root.
        Never a file outside the root (`../../etc/passwd`, `/home/...`): those stay unresolved."""
        for base in ([near] if near else []) + [self.root]:
            cand = (base / ref).resolve()
            if cand.is_file() and cand.is_relative_to(self.root):
                return cand
        hits = self.by_name.get(os.path.basename(ref.rstrip("/")), [])
        return hits[0] if hits else None


class DataFileLinker(PipelineStep):
    """Adds `metadata["files"]` ([{ref, path}]), `metadata["executable"]` and counts."""

    type = "🔗 - LINK"
    name = "data files"

    def __init__(self, config: LinkConfig | None = None):
        super().__init__()
        self.config = config or LinkConfig()

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        indexes: dict[Path, _Index] = {}

        def index(root: Path) -> _Index:
            if root not in indexes:
                indexes[root] = _Index(root)
            return indexes[root]

        for doc in data or []:
            self.stat_update("total")
            try:
                with self.track_time():
                    self.link(doc, index)
            except NotebookError as e:
                self.stat_update("dropped", f"dropped_{e.reason}")
                continue
            except Exception as e:  # noqa: BLE001
                logger.warning(f"linking failed for {doc.id}: {type(e).__name__}: {e}")
                self.stat_update("dropped", "dropped_link_error")
                continue
            if self.config.drop_not_executable and not doc.metadata["executable"]:
                self.stat_update("dropped", "dropped_not_executable")
                continue
            self.stat_update("forwarded")
            yield doc

    def link(self, doc: Document, index: Any) -> None:
        refs, dynamic = find_reads(ast_nodes(notebook_of(doc)), self.config.extra_readers)
        meta = doc.metadata
        source = meta.get("source")
        near = Path(source).parent if source and os.path.exists(source) else None
        roots = []
        if self.config.search_notebook_dir and meta.get("source_dir") and os.path.isdir(meta["source_dir"]):
            roots.append(Path(meta["source_dir"]))
        if self.config.data_root:
            roots.append(Path(self.config.data_root))
        shipped = _shipped(meta.get("data_files"))
        files = []
        for ref in refs:
            path: Path | None = None
            if ref.startswith(REMOTE):
                self.stat_update("remote_refs")
            else:
                path = shipped.get(ref) or shipped.get(os.path.basename(ref))
                for root in roots:
                    if path is None:
                        path = index(root).find(ref, near)
            files.append({"ref": ref, "path": str(path) if path else None})
        resolved = sum(f["path"] is not None for f in files)
        self.stat_update("file_refs", value=len(files))
        self.stat_update("files_resolved", value=resolved)
        self.stat_update("files_missing", value=len(files) - resolved)
        self.stat_update("dynamic_refs", value=dynamic)
        meta["files"] = files
        meta["executable"] = resolved == len(files) and dynamic == 0
        self.stat_update("executable" if meta["executable"] else "not_executable")


def _shipped(data_files: Any) -> dict[str, Path]:
    """Existing files named by a record's metadata, by their name and base name."""
    out: dict[str, Path] = {}
    items = data_files if isinstance(data_files, list) else ([data_files] if isinstance(data_files, str) else [])
    for item in items:
        p = Path(str(item.get("path", "")) if isinstance(item, dict) else str(item)).expanduser()
        if p.is_file():
            out[str(item if not isinstance(item, dict) else item.get("name", p.name))] = p.resolve()
            out[p.name] = p.resolve()
    return out
