"""`notebook-agent run [FILES...] "question"`: one agent, one question, a notebook left behind."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..tasks.task import Task

EXIT_ANSWERED, EXIT_NO_ANSWER, EXIT_USAGE = 0, 1, 2


def fail(console: Console, message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


def check_files(paths: list[str], console: Console) -> list[Path]:
    files = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            fail(console, f"file not found: {raw}")
        if not p.is_file():
            fail(console, f"not a regular file: {raw}")
        try:
            with p.open("rb") as f:
                f.read(1)
        except OSError as e:
            fail(console, f"cannot read {raw}: {e.strerror or e}")
        files.append(p.resolve())
    names = [p.name for p in files]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        fail(console, f"two files share the name {sorted(dup)[0]!r}; the kernel's working directory holds files by name")
    return files


def default_out_dir(question: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", question.lower()).strip("-")[:40] or "run"
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_interspersed_args": True})
    def run(
        args: list[str] = typer.Argument(..., metavar="[FILES]... QUESTION", help="Data files, then the question."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Registry name, GGUF file, model dir, URL#model or HF id. Default: the embedded local model."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write notebook.ipynb and trajectory.json."),
        scaffold: str = typer.Option("tools", help="tools (execute_code/final_answer) or react (JUPITER's text format)."),
        max_turns: int = typer.Option(12, help="Model calls at most."),
        max_errors: int = typer.Option(3, help="Failing steps in a row at most."),
        max_tokens: Optional[int] = typer.Option(None, help="Tokens (prompt + completion) for the whole run at most."),
        context_tokens: int = typer.Option(8192, help="Context budget; older outputs are shortened to fit."),
        cell_timeout: float = typer.Option(60.0, help="Seconds a cell may run before it is interrupted."),
        max_wall: float = typer.Option(900.0, help="Seconds for the whole run."),
        temperature: float = typer.Option(0.0),
        seed: Optional[int] = typer.Option(None),
        preview: bool = typer.Option(True, help="Show the model the columns and first rows of tables."),
        backend: str = typer.Option("local", help="Kernel backend: local (ipykernel) or forking."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the answer."),
    ) -> None:
        """Answer QUESTION about FILES with an agent working in a real Jupyter kernel."""
        console = Console(stderr=True)
        if scaffold not in ("tools", "react"):
            fail(console, f"unknown scaffold {scaffold!r}: use tools or react")
        question, files = args[-1], check_files(args[:-1], console)
        if not question.strip():
            fail(console, "the question is empty")
        code = asyncio.run(_run(question, files, model, out, scaffold, max_turns, max_errors, max_tokens,
                                context_tokens, cell_timeout, max_wall, temperature, seed, preview, backend,
                                quiet, console))
        raise typer.Exit(code)


async def _run(question, files, model_spec, out, scaffold, max_turns, max_errors, max_tokens, context_tokens,
               cell_timeout, max_wall, temperature, seed, preview, backend, quiet, console) -> int:
    from ..kernel import make_session
    from ..kernel.base import KernelError
    from ..models.base import ModelError
    from ..models.resolve import default_model_name, load_model
    from .display import TerminalView
    from .loop import AgentConfig, run_agent
    from .notebook import save_notebook, trajectory_to_notebook

    try:
        model = load_model(model_spec or default_model_name())
    except ModelError as e:
        fail(console, str(e))
    config = AgentConfig(scaffold=scaffold, max_turns=max_turns, max_consecutive_errors=max_errors,
                         max_total_tokens=max_tokens, max_context_tokens=context_tokens,
                         cell_timeout_s=cell_timeout, max_wall_s=max_wall, temperature=temperature,
                         seed=seed, file_preview=preview)
    task = Task(id="cli", question=question, files=files)
    out = out or default_out_dir(question)
    session = make_session(backend, files=files)
    try:
        await session.start()
    except KernelError as e:
        fail(console, f"could not start a kernel: {e}")
    try:
        traj = await run_agent(task, model, session, config, on_event=None if quiet else TerminalView(console))
    finally:
        await session.close()
        await model.aclose()
    if traj.status == "model_error":
        fail(console, traj.status_detail)
    out.mkdir(parents=True, exist_ok=True)
    traj.save(out / "trajectory.json")
    nb_path = save_notebook(trajectory_to_notebook(traj), out / "notebook.ipynb")
    for f in files:  # next to the notebook, so that it re-runs top to bottom
        if not (out / f.name).exists():
            shutil.copy2(f, out / f.name)
    print(traj.answer if traj.answer is not None else "")
    if not quiet:
        style = "green" if traj.answered else "yellow"
        console.print(f"[{style}]status: {traj.status}[/] {traj.status_detail}  "
                      f"({traj.turns} turns, {traj.total_tokens} tokens, {traj.wall_s:.1f} s)", highlight=False)
        console.print(f"notebook: {nb_path}", highlight=False)
    return EXIT_ANSWERED if traj.answered else EXIT_NO_ANSWER
