"""`notebook-agent ui`: serve the web page (loopback by default)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def ui(
        host: str = typer.Option("127.0.0.1", help="Interface to listen on. The page has no login: "
                                 "use another host only on a network you trust."),
        port: int = typer.Option(8765, help="Port to listen on."),
        runs_dir: Path = typer.Option(Path("runs"), help="Runs are kept under RUNS_DIR/ui/<id>/."),
        reports_dir: Optional[Path] = typer.Option(None, help="Where to look for evaluation run directories "
                                                   "(one or two levels down). Default: RUNS_DIR."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Default model (registry name, GGUF "
                                            "file, URL#model...). Default: the embedded local model."),
        max_upload_mb: float = typer.Option(50.0, help="Largest upload (all files of one request), in MiB."),
        max_turns: int = typer.Option(12, help="Default model calls per run."),
        max_tokens_per_turn: int = typer.Option(1024, help="Tokens the model may write per step."),
        max_wall: float = typer.Option(900.0, help="Seconds a run may take in all."),
        cell_timeout: float = typer.Option(60.0, help="Seconds a cell may run before it is interrupted."),
        max_active_runs: int = typer.Option(2, help="Runs working at once."),
        backend: str = typer.Option("local", help="Kernel backend: local (ipykernel) or forking."),
    ) -> None:
        """Serve a web page to ask questions about data files and watch the notebook grow."""
        try:
            import uvicorn

            from ..agent.loop import AgentConfig
            from .reports import ReportsConfig
            from .runs import RunsConfig
            from .server import UIConfig, create_app
        except ImportError as e:
            typer.echo(f"error: the web page needs the `ui` extra ({e.name} is missing): "
                       "pip install 'notebook-agent[ui]'", err=True)
            raise typer.Exit(2) from None
        if min(max_upload_mb, max_turns, max_active_runs, max_tokens_per_turn, max_wall, cell_timeout) <= 0:
            typer.echo("error: sizes, counts and times must be positive", err=True)
            raise typer.Exit(2)
        config = UIConfig(
            runs=RunsConfig(runs_dir=runs_dir, default_model=model, kernel_backend=backend,
                            max_active_runs=max_active_runs, agent=AgentConfig(max_turns=max_turns, max_tokens_per_turn=max_tokens_per_turn,
                                              max_wall_s=max_wall, cell_timeout_s=cell_timeout)),
            reports=ReportsConfig(root=reports_dir or runs_dir),
            max_upload_mb=max_upload_mb,
        )
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(f"warning: serving on {host}: anyone who can reach it can run code in a kernel here", err=True)
        typer.echo(f"notebook-agent ui on http://{'[' + host + ']' if ':' in host else host}:{port}/  "
                   f"(runs in {config.runs.root}, reports from {config.reports.root})", err=True)
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
