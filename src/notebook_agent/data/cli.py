"""`notebook-agent data build CONFIG.yaml [--steps read,filter,...]`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Mine notebooks into tasks, traces and a training dataset.", no_args_is_help=True)


@app.command()
def build(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="pipeline YAML"),
    steps: str = typer.Option("", help="comma-separated subset of read,filter,dedup,link,score,qa,traces,export"),
    output: str = typer.Option("", help="override `output` of the config"),
    sandbox: Optional[str] = typer.Option(None, help="kernel isolation of the traces step: auto, require or off "
                                          "(default: the config's `traces.sandbox`, auto)"),
) -> None:
    """Run the pipeline (or some of its steps); per-step stats go to OUT/stats.json."""
    from rich.console import Console

    from .build import run_pipeline
    from .config import load_config
    from .traces import check_trace_config

    console = Console(stderr=True)
    try:
        cfg = load_config(config, {"output": output} if output else None)
        if sandbox is not None:
            cfg.traces.sandbox = sandbox  # type: ignore[assignment]
        check_trace_config(cfg.traces)
        stats = run_pipeline(cfg, steps or None, log=lambda m: console.print(f"[bold]data[/]: {m}"))
    except (ValueError, TypeError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    summary = {step: {blk: v["counters"] for blk, v in s.get("blocks", {}).items()} for step, s in stats.items()}
    console.print_json(json.dumps(summary))
