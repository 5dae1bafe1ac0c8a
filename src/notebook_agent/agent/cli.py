"""`notebook-agent run [FILES...] "question"`: one agent, one question, a notebook left behind."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any, Optional, TypeVar

import typer
from rich.console import Console

from ..tasks.task import Task
from .config import AgentConfig, SessionConfig, from_options

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


SANDBOX_HELP = ("Kernel isolation: auto (where the OS allows it), require (refuse to run without it) "
                "or off. Default: auto.")


A = AgentConfig  # its class attributes are the defaults the help texts quote
C = TypeVar("C")


def config_or_fail(console: Console, cls: Callable[..., C], **options: Any) -> C:
    """The config of a command's options (None: the config's default); bad values end the
    command with status 2."""
    try:
        return from_options(cls, **options)
    except ValueError as e:
        fail(console, str(e))
        raise  # unreachable: fail exits


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_interspersed_args": True})
    def run(
        args: list[str] = typer.Argument(..., metavar="[FILES]... QUESTION", help="Data files, then the question."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Registry name, GGUF file, model dir, URL#model or HF id. Default: the embedded local model."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write notebook.ipynb, trajectory.json and run.json."),
        scaffold: Optional[str] = typer.Option(None, help="tools (execute_code/final_answer, the default) or react (JUPITER's text format)."),
        max_turns: Optional[int] = typer.Option(None, help=f"Model calls at most (default {A.max_turns})."),
        max_errors: Optional[int] = typer.Option(None, help=f"Failing steps in a row at most (default {A.max_consecutive_errors})."),
        max_tokens: Optional[int] = typer.Option(None, help="Tokens (prompt + completion) for the whole run at most."),
        context_tokens: Optional[int] = typer.Option(None, help=f"Context budget; older outputs are shortened to fit (default {A.max_context_tokens})."),
        cell_timeout: Optional[float] = typer.Option(None, help=f"Seconds a cell may run before it is interrupted (default {A.cell_timeout_s:g})."),
        max_wall: Optional[float] = typer.Option(None, help=f"Seconds for the whole run (default {A.max_wall_s:g})."),
        temperature: Optional[float] = typer.Option(None, help=f"Sampling temperature (default {A.temperature:g})."),
        seed: Optional[int] = typer.Option(None),
        preview: Optional[bool] = typer.Option(None, "--preview/--no-preview", help="Show the model the columns and first rows of tables (default: on)."),
        constrain: Optional[bool] = typer.Option(None, "--constrain/--no-constrain", help="Constrain replies to the tool protocol where the backend can (default: on)."),
        refuse_repeats: Optional[bool] = typer.Option(None, "--refuse-repeats/--no-refuse-repeats", help="Do not run a cell identical to the one just run; tell the model to use its output (default: off)."),
        code_after_refusal: Optional[bool] = typer.Option(None, "--code-after-refusal/--no-code-after-refusal", help="After an answer refused for want of computed values, the next reply must run code (constrained; default: off)."),
        backend: Optional[str] = typer.Option(None, help="Kernel backend: local (ipykernel, the default) or forking."),
        sandbox: Optional[str] = typer.Option(None, help=SANDBOX_HELP),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the answer."),
    ) -> None:
        """Answer QUESTION about FILES with an agent working in a real Jupyter kernel."""
        console = Console(stderr=True)
        config = config_or_fail(console, AgentConfig, scaffold=scaffold, max_turns=max_turns,
                                max_consecutive_errors=max_errors, max_total_tokens=max_tokens, max_context_tokens=context_tokens,
                                      cell_timeout_s=cell_timeout, max_wall_s=max_wall, temperature=temperature,
                                      seed=seed, file_preview=preview, constrain=constrain,
                                      refuse_repeats=refuse_repeats, code_after_refusal=code_after_refusal)
        session_config = config_or_fail(console, SessionConfig, backend=backend, sandbox=sandbox)
        question, files = args[-1], check_files(args[:-1], console)
        if not question.strip():
            fail(console, "the question is empty")
        task = Task(id="cli", question=question, files=files)
        code = asyncio.run(_run(task, model, out, config, session_config, quiet, console))
        raise typer.Exit(code)


async def _run(task: Task, model_spec: str | None, out: Path | None, config: AgentConfig,
               session_config: SessionConfig, quiet: bool, console: Console) -> int:
    from ..models.base import ModelError
    from ..models.resolve import default_model_name, load_model
    from .display import TerminalView
    from .loop import run_agent
    from .save import save_run
    from .session import SessionStartError, start_error_message, task_session

    try:
        model = load_model(model_spec or default_model_name())
    except ModelError as e:
        fail(console, str(e))
    try:
        async with task_session(task, session_config) as session:
            traj = await run_agent(task, model, session, config, on_event=None if quiet else TerminalView(console))
    except SessionStartError as e:
        fail(console, start_error_message(e))
    finally:
        await model.aclose()
    if traj.status == "model_error":
        fail(console, traj.status_detail)
    saved = save_run(traj, out or default_out_dir(task.question), task=task, copy_files=True)
    print(traj.answer if traj.answer is not None else "")
    if not quiet:
        style = "green" if traj.answered else "yellow"
        console.print(f"[{style}]status: {traj.status}[/] {traj.status_detail}  "
                      f"({traj.turns} turns, {traj.total_tokens} tokens, {traj.wall_s:.1f} s)", highlight=False)
        console.print(f"notebook: {saved.notebook}", highlight=False)
    return EXIT_ANSWERED if traj.answered else EXIT_NO_ANSWER
