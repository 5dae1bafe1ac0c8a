"""The package's shape, as docs/architecture.md states it: imports follow the flow, and no
module is over 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "notebook_agent"
OURS = {"kernel", "models", "tasks", "agent", "search", "eval", "data", "train", "ui"}
MAY_IMPORT = {
    "kernel": set(),
    "models": set(),
    "tasks": set(),
    "agent": {"kernel", "models", "tasks"},
    "search": {"agent", "kernel", "models", "tasks"},
    "eval": {"agent", "search", "kernel", "models", "tasks"},
    "data": {"agent", "kernel", "models", "tasks"},
    "train": {"models", "tasks"},
    "ui": {"agent", "kernel", "models", "tasks"},
}


def imported_packages(path: Path) -> set[str]:
    """Our top-level packages a module imports (absolute or relative, at any depth of the file)."""
    rel = path.relative_to(PKG).parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] == "notebook_agent" and len(parts) > 1:
                    out.add(parts[1])
            else:
                base = list(rel[:-1])[: len(rel) - node.level]
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    out.add(target[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "notebook_agent" and len(parts) > 1:
                    out.add(parts[1])
    return out & OURS


def test_imports_follow_the_flow():
    wrong = []
    for path in sorted(PKG.rglob("*.py")):
        package = path.relative_to(PKG).parts[0]
        if package not in MAY_IMPORT or path.name == "cli.py":  # command shells mount anything
            continue
        for other in imported_packages(path) - {package} - MAY_IMPORT[package]:
            wrong.append(f"{path.relative_to(PKG)} imports {other}/")
    assert not wrong, "imports against the flow (see docs/architecture.md):\n" + "\n".join(wrong)


def test_no_module_is_over_500_lines():
    long = [f"{p.relative_to(PKG)}: {n}" for p in sorted(PKG.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > 500]
    assert not long, long
