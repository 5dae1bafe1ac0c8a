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
# (module, attribute): modules exposing `register(app)` for top-level commands (run, search, ui, serve...).
_COMMANDS = [
    "notebook_agent.agent.cli",
    "notebook_agent.search.cli",
    "notebook_agent.ui.cli",
    "notebook_agent.models.cli",
]


def _missing_extra(name: str, missing: str) -> None:
    """A stand-in command for a group whose optional dependencies are not installed: the rest of
    the command still works, and `notebook-agent NAME ...` says what to install."""

    @app.command(name, help=f"(needs the {name} extra, not installed)", add_help_option=False,
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _explain(ctx: typer.Context) -> None:
        typer.echo(f"error: `notebook-agent {name}` needs the '{name}' extra (missing module {missing!r}): "
                   f"pip install 'notebook-agent[{name}]'", err=True)
        raise typer.Exit(2)


def _mount() -> None:
    for module, attr, name in _GROUPS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue
            if e.name and not e.name.startswith("notebook_agent"):
                _missing_extra(name, e.name)
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
