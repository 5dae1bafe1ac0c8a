"""The `notebook-agent` command: a thin shell over the packages.

Each concept owns its sub-command in its own `cli.py` (models/cli.py, eval/cli.py, ...);
this file only mounts them.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="notebook-agent",
    help="Data-analysis agents that work in real Jupyter notebooks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# (module, attribute, name): sub-apps that register themselves as command groups.
_GROUPS = [
    ("notebook_agent.models.cli", "app", "models"),
    ("notebook_agent.eval.cli", "app", "eval"),
    ("notebook_agent.train.cli", "app", "train"),
    ("notebook_agent.data.cli", "app", "data"),
]
# (module, attribute): modules exposing `register(app)` for top-level commands (run, search, ui...).
_COMMANDS = [
    "notebook_agent.agent.cli",
    "notebook_agent.search.cli",
    "notebook_agent.ui.cli",
]


def _mount() -> None:
    for module, attr, name in _GROUPS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue
            raise
        app.add_typer(getattr(mod, attr), name=name)
    for module in _COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue
            raise
        mod.register(app)


_mount()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
