"""Notebook JSON as the pipeline sees it: parsed once per document, then read by every step.

A pipeline `Document` holds the notebook's raw JSON in `text`; `notebook_of(doc)` parses it on
first use and keeps the dict in `doc.metadata["_nb"]` (keys starting with "_" never reach disk,
see `io.py`). Everything else here is pure functions over that dict.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from datatrove.data import Document

NB_KEY = "_nb"


class NotebookError(ValueError):
    """The text is not a usable notebook. `reason` is a short stat label."""

    def __init__(self, message: str, reason: str = "invalid_notebook"):
        super().__init__(message)
        self.reason = reason


def parse_notebook(text: str) -> dict[str, Any]:
    """The notebook dict, or NotebookError saying what is wrong with it."""
    try:
        nb = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise NotebookError(f"invalid JSON: {e}", "invalid_json") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise NotebookError("not a notebook: no `cells` list", "not_a_notebook")
    if nb.get("nbformat") != 4:
        raise NotebookError(f"unsupported nbformat {nb.get('nbformat')!r} (need 4)", "bad_nbformat")
    for i, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise NotebookError(f"cell {i} is not a code/markdown/raw cell", "bad_nbformat")
    return nb


def notebook_of(doc: Document) -> dict[str, Any]:
    nb = doc.metadata.get(NB_KEY)
    if nb is None:
        nb = parse_notebook(doc.text)
        doc.metadata[NB_KEY] = nb
    return nb


def source(cell: dict[str, Any]) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else str(s)


def code_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in nb["cells"] if c.get("cell_type") == "code"]


def code_text(nb: dict[str, Any]) -> str:
    """All code cells' sources joined (cached under `_code`)."""
    if "_code" not in nb:
        nb["_code"] = "\n\n".join(source(c) for c in code_cells(nb))
    return nb["_code"]


def output_text(output: dict[str, Any]) -> str:
    """The text a reader sees of one output (stream text, text/plain, or the error line)."""
    kind = output.get("output_type")
    if kind == "stream":
        t = output.get("text", "")
    elif kind in ("execute_result", "display_data"):
        t = (output.get("data") or {}).get("text/plain", "")
    elif kind == "error":
        t = f"{output.get('ename', '')}: {output.get('evalue', '')}"
    else:
        t = ""
    return "".join(t) if isinstance(t, list) else str(t)


def cell_output_text(cell: dict[str, Any]) -> str:
    return "\n".join(output_text(o) for o in cell.get("outputs") or [])


def kernel_language(nb: dict[str, Any]) -> str:
    meta = nb.get("metadata") or {}
    lang = (meta.get("kernelspec") or {}).get("language") or (meta.get("language_info") or {}).get("name") or ""
    if not lang:
        name = (meta.get("kernelspec") or {}).get("name", "")
        lang = "python" if "python" in name.lower() else name
    return str(lang).lower()


def strip_magics(code: str) -> str:
    """Code with IPython magics and shell escapes blanked, so that `ast` can parse it."""
    lines = []
    for line in code.splitlines():
        s = line.lstrip()
        magic = s.startswith(("%", "!", "?")) or (s.endswith("?") and not s.startswith("#"))
        lines.append("" if magic else line)
    return "\n".join(lines)


def parse_cells(nb: dict[str, Any]) -> list[ast.Module]:
    """One AST per code cell that parses (cells with syntax errors are left out). Parsed once:
    the list is kept in the notebook dict under `_trees` (the dict is ours; `doc.text` is what
    reaches disk)."""
    if "_trees" in nb:
        return nb["_trees"]
    trees = []
    for c in code_cells(nb):
        try:
            trees.append(ast.parse(strip_magics(source(c))))
        except (SyntaxError, ValueError):
            continue
    nb["_trees"] = trees
    return trees


def ast_nodes(nb_or_trees: dict[str, Any] | list[ast.Module]) -> list[tuple[int, ast.AST]]:
    """(cell index among parsed cells, node) for every AST node, walked once per notebook
    (cached under `_nodes`): the filters and the linker all read this list."""
    if isinstance(nb_or_trees, dict):
        if "_nodes" not in nb_or_trees:
            nb_or_trees["_nodes"] = ast_nodes(parse_cells(nb_or_trees))
        return nb_or_trees["_nodes"]
    return [(i, n) for i, tree in enumerate(nb_or_trees) for n in ast.walk(tree)]


def imported_modules(nodes: list[tuple[int, ast.AST]]) -> set[str]:
    """Top-level package names imported anywhere (`import a.b` -> "a")."""
    mods: set[str] = set()
    for _, node in nodes:
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            mods.add(node.module.split(".")[0])
    return mods


def dotted_name(node: ast.AST) -> str:
    """`pd.read_csv` for an Attribute chain, `open` for a Name, "" otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def called_names(nodes: list[tuple[int, ast.AST]]) -> set[str]:
    return {dotted_name(n.func) for _, n in nodes if isinstance(n, ast.Call)} - {""}
