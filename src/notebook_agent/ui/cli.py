"""`notebook-agent ui`: serve the web page (loopback by default)."""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from ..agent.config import AgentConfig, from_options
from .security import MIN_TOKEN_CHARS, TOKEN_ENV, WILDCARD_HOSTS, is_loopback, new_token, normalize_host


def _isolation_problem(backend: str) -> str | None:
    """None when a kernel of `backend` starts isolated (sandbox "require"), else why not."""
    import asyncio

    from ..kernel import make_session

    async def probe() -> str | None:
        session = make_session(backend, sandbox="require")
        try:
            await session.start()
            if not session.isolation.get("isolated"):
                return f"the {backend} kernel started without isolation"
            return None
        except Exception as e:
            return str(e) or type(e).__name__
        finally:
            await session.close()

    return asyncio.run(probe())


def register(app: typer.Typer) -> None:
    @app.command()
    def ui(
        host: str = typer.Option("127.0.0.1", help="Interface to listen on. Beyond loopback every request "
                                 "needs a token (printed at start) and kernels must be isolated."),
        port: int = typer.Option(8765, help="Port to listen on."),
        runs_dir: Path = typer.Option(Path("runs"), help="Runs are kept under RUNS_DIR/ui/<id>/."),
        reports_dir: Optional[Path] = typer.Option(None, help="Where to look for evaluation run directories "
                                                   "(one or two levels down). Default: RUNS_DIR."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Default model (registry name, GGUF "
                                            "file, URL#model...). Default: the embedded local model."),
        allow_model: Optional[list[str]] = typer.Option(None, "--allow-model", metavar="SPEC", help="A model "
                                                        "spec the page may use besides the registry's names "
                                                        "and --model (repeatable)."),
        token: Optional[str] = typer.Option(None, envvar=TOKEN_ENV, help="The token every request must "
                                            "carry. Default: none on loopback, a new random one otherwise."),
        allow_host: Optional[list[str]] = typer.Option(None, "--allow-host", metavar="NAME", help="Another "
                                                       "name the page may be reached by (Host header), "
                                                       "e.g. behind a proxy (repeatable)."),
        sandbox: Optional[str] = typer.Option(None, help="Kernel isolation: auto, require or off. Default: "
                                              "auto on loopback, require beyond it."),
        max_upload_mb: float = typer.Option(50.0, help="Largest upload (all files of one request), in MiB."),
        max_files_per_upload: int = typer.Option(20, help="Most files in one upload request."),
        max_upload_storage_mb: float = typer.Option(2048.0, help="All kept uploads together "
                                                    "(RUNS_DIR/ui/_uploads), in MiB."),
        max_models: int = typer.Option(2, help="Models kept loaded at once (least recently used closed first)."),
        max_turns: Optional[int] = typer.Option(None, help=f"Default model calls per run (default "
                                                f"{AgentConfig.max_turns})."),
        max_tokens_per_turn: Optional[int] = typer.Option(None, help="Tokens the model may write per step "
                                                          f"(default {AgentConfig.max_tokens_per_turn})."),
        max_wall: Optional[float] = typer.Option(None, help=f"Seconds a run may take in all (default "
                                                 f"{AgentConfig.max_wall_s:g})."),
        cell_timeout: Optional[float] = typer.Option(None, help="Seconds a cell may run before it is "
                                                     f"interrupted (default {AgentConfig.cell_timeout_s:g})."),
        max_active_runs: int = typer.Option(2, help="Runs working at once."),
        backend: str = typer.Option("local", help="Kernel backend: local (ipykernel) or forking."),
    ) -> None:
        """Serve a web page to ask questions about data files and watch the notebook grow."""
        try:
            import uvicorn

            from .reports import ReportsConfig
            from .runs import RunsConfig
            from .server import UIConfig, create_app
        except ImportError as e:
            typer.echo(f"error: the web page needs the `ui` extra ({e.name} is missing): "
                       "pip install 'notebook-agent[ui]'", err=True)
            raise typer.Exit(2) from None
        agent = from_options(AgentConfig, max_turns=max_turns, max_tokens_per_turn=max_tokens_per_turn,
                             max_wall_s=max_wall, cell_timeout_s=cell_timeout)
        if min(max_upload_mb, agent.max_turns, max_active_runs, agent.max_tokens_per_turn, agent.max_wall_s,
               agent.cell_timeout_s, max_files_per_upload, max_upload_storage_mb, max_models) <= 0:
            typer.echo("error: sizes, counts and times must be positive", err=True)
            raise typer.Exit(2)
        loopback = is_loopback(host)
        sandbox = sandbox or ("auto" if loopback else "require")
        if sandbox not in ("auto", "require", "off"):
            typer.echo(f"error: --sandbox {sandbox!r}: use auto, require or off", err=True)
            raise typer.Exit(2)
        if token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{%d,}" % MIN_TOKEN_CHARS, token.strip()):
            typer.echo(f"error: the token must have at least {MIN_TOKEN_CHARS} characters, all letters, "
                       "digits or . _ ~ - (it travels in a URL and a cookie)", err=True)
            raise typer.Exit(2)
        given_token = token is not None
        if token is None and not loopback:
            token = new_token()
        config = UIConfig(
            runs=RunsConfig(runs_dir=runs_dir, default_model=model, kernel_backend=backend, sandbox=sandbox,
                            max_models=max_models, max_active_runs=max_active_runs, agent=agent),
            reports=ReportsConfig(root=reports_dir or runs_dir),
            max_upload_mb=max_upload_mb, max_files_per_upload=max_files_per_upload,
            max_upload_storage_mb=max_upload_storage_mb,
            host=host, allowed_hosts=tuple(allow_host or ()), token=token.strip() if token else None,
            allowed_models=tuple(allow_model or ()),
        )
        if sandbox == "require":
            why = _isolation_problem(backend)
            if why is not None:
                typer.echo(f"error: {'--host ' + host + ' is beyond loopback, so ' if not loopback else ''}kernels "
                           f"must be isolated, and they cannot be here: {why}\n(install bubblewrap, or pass "
                           "--sandbox off to run kernels unisolated anyway)", err=True)
                raise typer.Exit(2)
        elif sandbox == "off" and not loopback:
            typer.echo(f"warning: serving on {host} with --sandbox off: whoever has the token runs code "
                       "unconfined on this machine", err=True)
        shown_host = socket.gethostname() if normalize_host(host) in WILDCARD_HOSTS else host
        url = f"http://{'[' + shown_host + ']' if ':' in shown_host else shown_host}:{port}/"
        if config.token:
            url += "?token=" + ("<the token you gave>" if given_token else config.token)
        typer.echo(f"notebook-agent ui on {url}  (runs in {config.runs.root}, reports from {config.reports.root}; "
                   f"kernels: sandbox {sandbox})", err=True)
        app = create_app(config)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                               timeout_graceful_shutdown=5))
        on_signal = server.handle_exit

        def handle_exit(sig, frame) -> None:  # end the event streams, then uvicorn stops the runs
            app.state.closing.set()
            on_signal(sig, frame)

        server.handle_exit = handle_exit  # type: ignore[method-assign]
        try:
            server.run()
        finally:
            # The runs were stopped and their kernels closed, but a model call already running in a
            # worker thread cannot be interrupted: exit without waiting for it to finish its reply.
            if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
                sys.stderr.flush()
                os._exit(0)
