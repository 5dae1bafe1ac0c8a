"""`notebook-agent search [FILES...] "question"`: grow a tree of notebook states, vote, and leave
the chosen path's notebook and the tree JSON behind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from ..agent.cli import (
    EXIT_ANSWERED,
    EXIT_NO_ANSWER,
    SANDBOX_HELP,
    A,
    check_files,
    config_or_fail,
    default_out_dir,
    fail,
)
from ..agent.config import AgentConfig, SessionConfig
from ..tasks.task import Task
from .config import SEARCH_TEMPERATURE, SearchConfig

S = SearchConfig  # its class attributes are the defaults the help texts quote


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_interspersed_args": True})
    def search(
        args: list[str] = typer.Argument(..., metavar="[FILES]... QUESTION", help="Data files, then the question."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Registry name, GGUF file, model dir, URL#model or HF id. Default: the embedded local model."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write notebook.ipynb, tree.json and run.json."),
        method: str = typer.Option("mcts", help="mcts (tree search) or vote (k independent runs, majority vote)."),
        iterations: Optional[int] = typer.Option(None, help=f"MCTS: selections/expansions at most (default {S.iterations})."),
        k: Optional[int] = typer.Option(None, "--k", help=f"MCTS: children per expansion; vote: number of runs (default {S.k})."),
        c_puct: Optional[float] = typer.Option(None, help=f"Exploration constant (default {S.c_puct:g}, for inference; ~1.25 to collect)."),
        max_depth: Optional[int] = typer.Option(None, help=f"Steps per path at most (default {S.max_depth})."),
        max_errors: Optional[int] = typer.Option(None, help=f"Failing steps in a row that end a path (default {A.max_consecutive_errors})."),
        parse_failure_terminal: Optional[bool] = typer.Option(None, "--parse-failure-terminal/--no-parse-failure-terminal", help="An unparsable reply ends its path (default: no)."),
        aggregate: Optional[str] = typer.Option(None, help="majority (default), value_weighted or best_value."),
        value_model: Optional[Path] = typer.Option(None, help="MCTS: a value model dir (notebook-agent train value) scoring new nodes."),
        value_nodes: Optional[str] = typer.Option(None, help="MCTS: nodes the value model scores: all (default) or terminal (answered ones only)."),
        max_wall: Optional[float] = typer.Option(None, help="Seconds for the whole search."),
        max_tokens: Optional[int] = typer.Option(None, help="Model tokens for the whole search."),
        max_live: Optional[int] = typer.Option(None, help=f"Kernels alive at once at most (the worst open leaves are pruned; default {S.max_live_sessions})."),
        temperature: Optional[float] = typer.Option(None, help=f"Sampling temperature (default {SEARCH_TEMPERATURE:g}: children must differ)."),
        scaffold: Optional[str] = typer.Option(None, help="tools (default) or react."),
        max_tokens_per_turn: Optional[int] = typer.Option(None, help=f"Completion tokens per step (default {A.max_tokens_per_turn})."),
        cell_timeout: Optional[float] = typer.Option(None, help=f"Seconds a cell may run (default {A.cell_timeout_s:g})."),
        seed: Optional[int] = typer.Option(None),
        preview: Optional[bool] = typer.Option(None, "--preview/--no-preview", help="Show the model the columns and first rows of tables (default: on)."),
        constrain: Optional[bool] = typer.Option(None, "--constrain/--no-constrain", help="Constrain replies to the tool protocol where the backend can (default: on)."),
        sandbox: Optional[str] = typer.Option(None, help=SANDBOX_HELP),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the answer."),
    ) -> None:
        """Answer QUESTION about FILES by searching over notebook states (MCTS over kernel forks)."""
        console = Console(stderr=True)
        if method not in ("mcts", "vote"):
            fail(console, f"unknown method {method!r}: use mcts or vote")
        question, files = args[-1], check_files(args[:-1], console)
        if not question.strip():
            fail(console, "the question is empty")
        config = search_config_or_fail(
            console, agent=dict(scaffold=scaffold, max_consecutive_errors=max_errors, max_tokens_per_turn=max_tokens_per_turn,
                                cell_timeout_s=cell_timeout, seed=seed, file_preview=preview, temperature=temperature,
                                constrain=constrain,
                                max_wall_s=max_wall),
            c_puct=c_puct, k=k, max_depth=max_depth, parse_failure_terminal=parse_failure_terminal,
            iterations=iterations, max_wall_s=max_wall, max_tokens=max_tokens, max_live_sessions=max_live,
            aggregate=aggregate, value_nodes=value_nodes)
        session_config = config_or_fail(console, SessionConfig, backend="forking", sandbox=sandbox)
        if value_model is not None and not value_model.is_dir():
            fail(console, f"value model not found: {value_model}")
        code = asyncio.run(_run(Task(id="cli", question=question, files=files), model, out, method, config,
                                session_config, quiet, console, value_model))
        raise typer.Exit(code)


def search_config_or_fail(console: Console, agent: dict[str, Any], **options: Any) -> SearchConfig:
    """The SearchConfig of a command's options (None: the default), its agent settings nested
    (sampling at the search's temperature; a vote run as long as a path may be deep); at least
    `k` kernels may live at once."""
    defaults = {"temperature": SEARCH_TEMPERATURE, "max_turns": options.get("max_depth") or SearchConfig.max_depth}
    agent = {**agent, **{k: v for k, v in defaults.items() if agent.get(k) is None}}
    options["max_live_sessions"] = max(options.get("max_live_sessions") or SearchConfig.max_live_sessions,
                                       options.get("k") or SearchConfig.k)
    return config_or_fail(console, SearchConfig, agent=config_or_fail(console, AgentConfig, **agent), **options)


async def _run(task, model_spec, out, method, config: SearchConfig, session_config, quiet, console,
               value_model=None) -> int:
    from ..agent.save import save_run
    from ..agent.session import SessionStartError, start_error_message, task_session
    from ..models.base import ModelError
    from ..models.resolve import default_model_name, load_model
    from .value import load_value_scorer
    from .display import LiveTreeView
    from .mcts import run_search
    from .vote import run_vote

    try:
        model = load_model(model_spec or default_model_name(), parallel=config.k)  # k branches decode together
    except ModelError as e:
        fail(console, str(e))
    try:
        value_scorer = load_value_scorer(str(value_model) if value_model else None)
    except Exception as e:  # a broken or incompatible model dir: one line, no traceback
        await model.aclose()
        fail(console, f"could not load the value model {value_model}: {e}")
    tree = None
    try:
        async with task_session(task, session_config) as session:
            if method == "vote":
                vote = await run_vote(task, model, session, config)
                traj, answer = vote.trajectory, vote.answer
            elif quiet:
                result = await run_search(task, model, session, config, value_scorer=value_scorer)
                traj, answer, tree = result.trajectory, result.answer, result.tree
            else:
                with LiveTreeView(console) as view:
                    result = await run_search(task, model, session, config, value_scorer=value_scorer, on_event=view)
                traj, answer, tree = result.trajectory, result.answer, result.tree
    except SessionStartError as e:
        fail(console, start_error_message(e))
    finally:
        await model.aclose()
    if traj.status == "model_error":
        fail(console, traj.status_detail)
    out = out or default_out_dir(task.question)
    saved = save_run(traj, out, task=task, copy_files=True)
    tree_path = tree.save(out / "tree.json") if tree is not None else None
    print(answer if answer is not None else "")
    if not quiet:
        console.print(f"answers: {traj.search.get('aggregates')}", highlight=False)
        console.print(f"{traj.total_tokens} tokens, {traj.wall_s:.1f} s; notebook: {saved.notebook}"
                      + (f"; tree: {tree_path}" if tree_path else ""), highlight=False)
    return EXIT_ANSWERED if answer is not None else EXIT_NO_ANSWER
