"""`notebook-agent search [FILES...] "question"`: grow a tree of notebook states, vote, and leave
the chosen path's notebook and the tree JSON behind."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..agent.cli import (
    EXIT_ANSWERED,
    EXIT_NO_ANSWER,
    check_files,
    default_out_dir,
    fail,
)
from ..tasks.task import Task


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_interspersed_args": True})
    def search(
        args: list[str] = typer.Argument(..., metavar="[FILES]... QUESTION", help="Data files, then the question."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Registry name, GGUF file, model dir, URL#model or HF id. Default: the embedded local model."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write notebook.ipynb and tree.json."),
        method: str = typer.Option("mcts", help="mcts (tree search) or vote (k independent runs, majority vote)."),
        iterations: int = typer.Option(40, help="MCTS: selections/expansions at most."),
        k: int = typer.Option(3, "--k", help="MCTS: children per expansion; vote: number of runs."),
        c_puct: float = typer.Option(0.0, help="Exploration constant (0 at inference, ~1.25 to collect)."),
        max_depth: int = typer.Option(10, help="Steps per path at most."),
        max_errors: int = typer.Option(3, help="Failing steps in a row that end a path."),
        parse_failure_terminal: bool = typer.Option(False, help="An unparsable reply ends its path."),
        aggregate: str = typer.Option("majority", help="majority, value_weighted or best_value."),
        value_model: Optional[Path] = typer.Option(None, help="MCTS: a value model dir (notebook-agent train value) scoring new nodes."),
        max_wall: Optional[float] = typer.Option(None, help="Seconds for the whole search."),
        max_tokens: Optional[int] = typer.Option(None, help="Model tokens for the whole search."),
        max_live: int = typer.Option(32, help="Kernels alive at once at most (the worst open leaves are pruned)."),
        temperature: float = typer.Option(0.8, help="Sampling temperature (children must differ)."),
        scaffold: str = typer.Option("tools", help="tools or react."),
        max_tokens_per_turn: int = typer.Option(1024, help="Completion tokens per step."),
        cell_timeout: float = typer.Option(60.0, help="Seconds a cell may run."),
        seed: Optional[int] = typer.Option(None),
        preview: bool = typer.Option(True, help="Show the model the columns and first rows of tables."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the answer."),
    ) -> None:
        """Answer QUESTION about FILES by searching over notebook states (MCTS over kernel forks)."""
        from .config import SearchConfig

        console = Console(stderr=True)
        if method not in ("mcts", "vote"):
            fail(console, f"unknown method {method!r}: use mcts or vote")
        if scaffold not in ("tools", "react"):
            fail(console, f"unknown scaffold {scaffold!r}: use tools or react")
        question, files = args[-1], check_files(args[:-1], console)
        if not question.strip():
            fail(console, "the question is empty")
        try:
            config = SearchConfig(c_puct=c_puct, k=k, max_depth=max_depth, max_consecutive_errors=max_errors,
                                  parse_failure_terminal=parse_failure_terminal, iterations=iterations,
                                  max_wall_s=max_wall, max_tokens=max_tokens, temperature=temperature,
                                  max_live_sessions=max(max_live, k), aggregate=aggregate)  # type: ignore[arg-type]
        except ValueError as e:
            fail(console, str(e))
        from ..agent.loop import AgentConfig

        agent_config = AgentConfig(scaffold=scaffold, max_consecutive_errors=max_errors,  # type: ignore[arg-type]
                                   max_tokens_per_turn=max_tokens_per_turn, cell_timeout_s=cell_timeout, seed=seed,
                                   file_preview=preview, max_turns=max_depth,
                                   max_wall_s=max_wall if max_wall is not None else 900.0)
        if value_model is not None and not value_model.is_dir():
            fail(console, f"value model not found: {value_model}")
        code = asyncio.run(_run(Task(id="cli", question=question, files=files), model, out, method, config,
                                agent_config, quiet, console, value_model))
        raise typer.Exit(code)


async def _run(task, model_spec, out, method, config, agent_config, quiet, console, value_model=None) -> int:
    from ..agent.notebook import save_notebook, trajectory_to_notebook
    from ..kernel import make_session
    from ..kernel.base import KernelError
    from ..models.base import ModelError
    from ..models.resolve import default_model_name, load_model
    from .display import LiveTreeView
    from .mcts import run_search
    from .value import load_value_scorer
    from .vote import run_vote

    try:
        model = load_model(model_spec or default_model_name())
    except ModelError as e:
        fail(console, str(e))
    try:
        value_scorer = load_value_scorer(str(value_model) if value_model else None)
    except Exception as e:  # a broken or incompatible model dir: one line, no traceback
        await model.aclose()
        fail(console, f"could not load the value model {value_model}: {e}")
    out = out or default_out_dir(task.question)
    session = make_session("forking", files=task.files)
    try:
        await session.start()
    except KernelError as e:
        await model.aclose()
        fail(console, f"could not start a kernel: {e}")
    tree = None
    try:
        if method == "vote":
            vote = await run_vote(task, model, session, agent_config, k=config.k, temperature=config.temperature)
            traj, answer = vote.trajectory, vote.answer
        elif quiet:
            result = await run_search(task, model, session, config, agent_config, value_scorer=value_scorer)
            traj, answer, tree = result.trajectory, result.answer, result.tree
        else:
            with LiveTreeView(console) as view:
                result = await run_search(task, model, session, config, agent_config, value_scorer=value_scorer,
                                            on_event=view)
            traj, answer, tree = result.trajectory, result.answer, result.tree
    finally:
        await session.close()
        await model.aclose()
    if traj.status == "model_error":
        fail(console, traj.status_detail)
    out.mkdir(parents=True, exist_ok=True)
    traj.save(out / "trajectory.json")
    nb_path = save_notebook(trajectory_to_notebook(traj), out / "notebook.ipynb")
    tree_path = tree.save(out / "tree.json") if tree is not None else None
    for f in task.files:  # next to the notebook, so that it re-runs top to bottom
        if not (out / f.name).exists():
            shutil.copy2(f, out / f.name)
    print(answer if answer is not None else "")
    if not quiet:
        search = traj.settings.get("search", {})
        console.print(f"answers: {search.get('aggregates')}", highlight=False)
        console.print(f"{traj.total_tokens} tokens, {traj.wall_s:.1f} s; notebook: {nb_path}"
                      + (f"; tree: {tree_path}" if tree_path else ""), highlight=False)
    return EXIT_ANSWERED if answer is not None else EXIT_NO_ANSWER
