"""`notebook-agent eval ...`: run a benchmark, score a responses file, compare runs.

    notebook-agent eval BENCH --model M --out runs/NAME [--workers N ...]   (same as `eval run`)
    notebook-agent eval score BENCH --responses FILE
    notebook-agent eval report runs/A [runs/B ...]

BENCH is KIND:PATH with KIND one of dabench, dabstep, nbqa, jsonl. `run` and `score` end
with one JSON line holding the metrics (abq, psaq, uasq as fractions, n, ...).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import typer
from typer.core import TyperGroup

from ..agent.config import AgentConfig, SessionConfig, from_options
from ..tasks.formats.common import BenchmarkError, LoadIssue, LoadResult, read_jsonl
from ..tasks.loaders import benchmark_kind, load_benchmark
from ..tasks.scoring import Metrics, ScoredItem, Scorer, get_scorer, scorer_for, summarize
from ..tasks.task import Task
from .stats import wilson_interval

if TYPE_CHECKING:
    from .runner import AgentFn, EvalSummary, RunConfig
C = TypeVar("C")

RUNNER_SLACK_S = 60.0  # the runner's hard limit = --task-timeout + this (kernel start, close, a last reply)


class _DefaultRunGroup(TyperGroup):
    """`eval BENCH ...` means `eval run BENCH ...`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultRunGroup,
    help="Evaluate agents on benchmarks (`eval BENCH --model M --out DIR` runs one).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _split_ids(ids: list[str] | None) -> list[str] | None:
    if not ids:
        return None
    return [i.strip() for chunk in ids for i in chunk.split(",") if i.strip()]


def _load(bench: str, limit: int | None, ids: list[str] | None) -> LoadResult:
    try:
        result = load_benchmark(bench, limit=limit, ids=_split_ids(ids))
    except BenchmarkError as e:
        _err(f"error: {e}")
        raise typer.Exit(2) from None
    _report_issues(result.errors)
    return result


def _report_issues(issues: list[LoadIssue]) -> None:
    if not issues:
        return
    _err(f"skipped {len(issues)} record(s):")
    for issue in issues[:50]:
        _err(f"  {issue}")
    if len(issues) > 50:
        _err(f"  ... and {len(issues) - 50} more")


def _scorer(bench: str, name: str | None) -> Scorer:
    try:
        return get_scorer(name) if name else scorer_for(benchmark_kind(bench))
    except (ValueError, BenchmarkError) as e:
        _err(f"error: {e}")
        raise typer.Exit(2) from None


def metrics_json(metrics: Metrics, **extra: Any) -> str:
    d = metrics.to_dict()
    d["by_level"] = {k: {x: v[x] for x in ("abq", "psaq", "uasq", "n")} for k, v in d["by_level"].items()}
    d["by_concept"] = {k: {x: v[x] for x in ("abq", "n")} for k, v in d["by_concept"].items()}
    d["abq_ci"] = list(wilson_interval(metrics.overall.n_correct, metrics.n))
    return json.dumps({**d, **extra}, ensure_ascii=False)


def _print_metrics(metrics: Metrics, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=title, title_justify="left")
    for col in ("group", "n", "ABQ", "PSAQ", "UASQ"):
        t.add_column(col, justify="left" if col == "group" else "right")

    def row(name: str, g: Any) -> None:
        t.add_row(name, str(g.n), f"{100 * g.abq:.1f}", f"{100 * g.psaq:.1f}", f"{100 * g.uasq:.1f}")

    row("overall", metrics.overall)
    for lv, g in metrics.by_level.items():
        row(f"level: {lv}", g)
    for c, g in metrics.by_concept.items():
        row(f"concept: {c}", g)
    console.print(t)


# --- score -------------------------------------------------------------------------------------
def read_responses(path: Path) -> dict[str, str]:
    """`{id: response}` from a JSONL of {"id", "response"}, a run's results ({"id", "answer"})
    or a DABStep submission ({"task_id", "agent_answer"}).

    As InfiAgent's script does, the first record of an id with a non-empty response counts.
    """
    if not path.is_file():
        raise BenchmarkError(f"responses file {path} does not exist")
    out: dict[str, str] = {}
    for line in read_jsonl(path):
        if line.record is None:
            _err(f"warning: {line.error}")
            continue
        rec = line.record
        rid = rec.get("id", rec.get("task_id"))
        if rid is None:
            _err(f"warning: line {line.line_no} of {path.name} has no id (nor task_id)")
            continue
        text = next((rec[k] for k in ("response", "answer", "agent_answer") if rec.get(k) not in (None, "")), None)
        if text is None:
            continue
        out.setdefault(str(rid).strip(), text if isinstance(text, str) else json.dumps(text))
    return out


@app.command()
def score(
    bench: str = typer.Argument(..., help="KIND:PATH, e.g. dabench:../shared/benchmarks/dabench-dev"),
    responses: Path = typer.Option(..., "--responses", "-r", help='JSONL of {"id", "response"} records '
                                   '(or {"task_id", "agent_answer"}: a DABStep submission)'),
    scorer: Optional[str] = typer.Option(None, help="scorer name (default: the benchmark's official one)"),
    missing: str = typer.Option("wrong", help="'wrong' (count unanswered as wrong) or 'skip' (InfiAgent script)"),
    limit: Optional[int] = typer.Option(None, help="only the first K tasks"),
    ids: Optional[list[str]] = typer.Option(None, help="only these task ids (comma-separated or repeated)"),
) -> None:
    """Score a responses file against a benchmark's gold answers."""
    if missing not in ("wrong", "skip"):
        _err("error: --missing must be 'wrong' or 'skip'")
        raise typer.Exit(2)
    result = _load(bench, limit, ids)
    sc = _scorer(bench, scorer)
    try:
        resp = read_responses(responses)
    except BenchmarkError as e:
        _err(f"error: {e}")
        raise typer.Exit(2) from None
    known = {t.id for t in result.tasks}
    unknown = [i for i in resp if i not in known]
    if unknown and ids is None and limit is None:
        _err(f"warning: {len(unknown)} response id(s) are not in the benchmark, e.g. {unknown[:5]}")
    items = [ScoredItem(t.id, sc.score(t, resp.get(t.id)), t.level, t.concepts) for t in result.tasks]
    metrics = summarize(items, missing=missing)  # type: ignore[arg-type]
    _print_metrics(metrics, f"{bench} scored with {sc.name} ({len(resp)} responses)")
    print(metrics_json(metrics, scorer=sc.name, n_responses=len(resp), n_load_issues=len(result.errors)), flush=True)


# --- run ---------------------------------------------------------------------------------------
TASKS, AGENT, KERNEL, SEARCH, OUTPUT = "Tasks", "Agent", "Kernel", "Search (--search mcts|vote)", "Output"


def _exit(message: str) -> None:
    _err(f"error: {message}")
    raise typer.Exit(2)


def _config(cls: Callable[..., C], **options: Any) -> C:
    """A config from the options given (None = not given: the config's default); a bad value
    ends the command with status 2."""
    try:
        return from_options(cls, **options)
    except ValueError as e:
        _exit(str(e))
        raise  # unreachable: _exit exits


def _search_setup(search: str, agent: AgentConfig, task_timeout: float, out: Path, scorer: Scorer,
                  value_model: Path | None, collect: bool, **given: Any) -> tuple[RunConfig, AgentFn | None]:
    """(run config, agent_fn) for `--search`: the agent's config itself for "none", else a
    SearchRunConfig nesting it and the search adapter. Bad combinations end the command."""
    if search not in ("none", "mcts", "vote"):
        _exit("--search must be none, mcts or vote")
    if collect and (search != "mcts" or value_model is not None):
        _exit("--collect needs --search mcts and no --value-model (the scorer values answered nodes)")
    if search == "none":
        return agent, None
    from ..search.config import SEARCH_TEMPERATURE, SearchConfig
    from ..search.value import load_value_scorer
    from .search_fn import SearchRunConfig, search_agent_fn

    temperature = given.pop("temperature")
    agent = dataclasses.replace(agent, temperature=SEARCH_TEMPERATURE if temperature is None else temperature)
    config = _config(SearchConfig, agent=agent, max_wall_s=task_timeout, **given)
    if value_model is not None and search != "mcts":
        _exit("--value-model needs --search mcts")
    try:
        value_scorer = load_value_scorer(str(value_model) if value_model else None)
    except Exception as e:  # a broken or incompatible model dir: one line, no traceback
        _exit(f"could not load the value model {value_model}: {e}")
    run_config = SearchRunConfig(method=search, search=config,  # type: ignore[arg-type]
                                 value_model=str(value_model) if value_model else None, collect=collect)
    return run_config, search_agent_fn(out / "trees", value_scorer, reward_scorer=scorer)  # used when collecting


async def _run(tasks: list[Task], issues: list[LoadIssue], bench: str, model_spec: str | None, out: Path,
               workers: int, task_timeout: float, run_config: RunConfig, scorer: Scorer,
               session_config: SessionConfig, progress: bool, check_settings: bool, agent_fn: AgentFn | None = None,
               search: str = "none", withhold_files: bool = False) -> EvalSummary:
    from ..agent.session import check_sandbox
    from ..models.resolve import load_model
    from .runner import run_eval

    # an in-process model decodes the workers' turns (and each search's k branches) together
    k = getattr(getattr(run_config, "search", None), "k", 1)
    model = load_model(model_spec, parallel=workers * k)
    try:
        await check_sandbox(session_config)  # no task may run less confined than asked
        return await run_eval(
            tasks, model, out,
            scorer=scorer,
            agent_config=run_config,
            workers=workers,
            task_timeout_s=task_timeout + RUNNER_SLACK_S,
            session_config=session_config,
            agent_fn=agent_fn,
            progress=progress,
            settings={"benchmark": bench, "model": model_spec or getattr(model, "name", ""),
                      "model_name": getattr(model, "name", ""), "kernel_backend": session_config.backend,
                      "sandbox": session_config.sandbox, "search": search, "withhold_files": withhold_files},
            load_issues=issues,
            check_settings=check_settings,
        )
    finally:
        await model.aclose()


def run_interruptible(coro: Coroutine[Any, Any, Any]) -> Any:
    """`asyncio.run`, except for Ctrl-C: the first cancels the run (the runner records what is
    finished and closes the kernels), then the process exits at once with status 130 instead
    of waiting for a model thread still generating a reply nobody will read. A second Ctrl-C
    exits immediately."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(coro)
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        if interrupted:
            os._exit(130)
        interrupted = True
        main.cancel()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        return loop.run_until_complete(main)
    except asyncio.CancelledError:
        if not interrupted:
            raise
        _err("interrupted; finished tasks are saved. Rerun the same command to continue.")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


def _opt(default: Any, *names: str, panel: str, help: str) -> Any:
    return typer.Option(default, *names, help=help, rich_help_panel=panel)


@app.command()
def run(
    bench: str = typer.Argument(..., help="KIND:PATH, e.g. dabench:../shared/benchmarks/dabench-dev"),
    model: Optional[str] = _opt(None, "--model", "-m", panel=AGENT, help="registry name, GGUF file, model dir, "
                                "URL#model or HF id (default: the embedded default model)"),
    out: Path = _opt(..., "--out", "-o", panel=OUTPUT, help="run directory (rerun the same command to continue)"),
    workers: int = _opt(1, "--workers", "-w", panel=OUTPUT, help="tasks run in parallel, one kernel each"),
    limit: Optional[int] = _opt(None, panel=TASKS, help="only the first K tasks"),
    ids: Optional[list[str]] = _opt(None, panel=TASKS, help="only these task ids (comma-separated or repeated)"),
    scorer: Optional[str] = _opt(None, panel=TASKS, help="scorer name (default: the benchmark's official one)"),
    withhold_files: bool = _opt(False, "--withhold-files", panel=TASKS, help="no-data control: run the same tasks "
                                "with their data files withheld (`eval report` marks tasks answered right without data)"),
    scaffold: Optional[str] = _opt(None, panel=AGENT, help="tools (tool calls, the default) or react "
                                   "(Thought / code / Formatted answer)"),
    max_turns: Optional[int] = _opt(None, panel=AGENT, help="model turns per task (default: the agent's)"),
    task_timeout: Optional[float] = _opt(None, panel=AGENT, help="seconds per task: the agent stops itself at this "
                                         f"limit (default: the agent's wall-time limit, {AgentConfig.max_wall_s:g})"),
    cell_timeout: Optional[float] = _opt(None, panel=AGENT, help="seconds per cell (default: the agent's)"),
    max_tokens_per_turn: Optional[int] = _opt(None, panel=AGENT, help="completion tokens per model call"),
    temperature: Optional[float] = _opt(None, panel=AGENT, help="sampling temperature (default: the agent's, "
                                        "0; with --search, 0.8)"),
    seed: Optional[int] = _opt(None, panel=AGENT, help="sampling seed"),
    preview: Optional[bool] = _opt(None, "--preview/--no-preview", panel=AGENT,
                                   help="show the model the columns and first rows of tables (default: on)"),
    constrain: Optional[bool] = _opt(None, "--constrain/--no-constrain", panel=AGENT,
                                     help="constrain replies to the tool protocol where the backend can (default: on)"),
    refuse_repeats: Optional[bool] = _opt(None, "--refuse-repeats/--no-refuse-repeats", panel=AGENT,
                                          help="a cell identical to the one just run is not run again; the model is told "
                                          "to use its output (default: off)"),
    code_after_refusal: Optional[bool] = _opt(None, "--code-after-refusal/--no-code-after-refusal", panel=AGENT,
                                              help="after an answer refused for want of computed values (no cell ran, "
                                              "placeholders copied), the next reply must run code (constrained; "
                                              "default: off)"),
    backend: Optional[str] = _opt(None, panel=KERNEL, help="kernel backend (default: local; forking with --search)"),
    sandbox: str = _opt("require", panel=KERNEL, help="kernel isolation: require (the default here: a benchmark's "
                        "labels must never be reachable from a kernel), auto or off"),
    search: str = _opt("none", panel=SEARCH, help="none (one agent run), mcts (tree search) or vote (k runs, majority)"),
    k: Optional[int] = _opt(None, "--k", panel=SEARCH, help="children per expansion (mcts) or runs (vote); default: the search's"),
    iterations: Optional[int] = _opt(None, panel=SEARCH, help="mcts: iterations per task (default: the search's)"),
    c_puct: Optional[float] = _opt(None, panel=SEARCH, help="mcts: exploration constant (default: the search's, 0, for inference)"),
    max_depth: Optional[int] = _opt(None, panel=SEARCH, help="mcts: steps per path (default: the search's)"),
    search_temperature: Optional[float] = _opt(None, panel=SEARCH, help="same as --temperature, kept for old commands"),
    aggregate: Optional[str] = _opt(None, panel=SEARCH, help="mcts: majority (default), value_weighted or best_value"),
    search_tokens: Optional[int] = _opt(None, panel=SEARCH, help="mcts: model tokens per task"),
    value_model: Optional[Path] = _opt(None, panel=SEARCH, help="mcts: value model dir (notebook-agent train value)"),
    value_nodes: Optional[str] = _opt(None, panel=SEARCH, help="mcts: nodes the value model scores: all (default) or "
                                      "terminal (answered ones only; inner nodes get 0)"),
    collect: bool = _opt(False, "--collect", panel=SEARCH, help="mcts: collect training trees (out/trees): answered "
                         "nodes are rewarded by the scorer, which reads the gold answer, so the scores are not "
                         "evaluation figures; use --c-puct 1.25 and training tasks, never the test set"),
    progress: bool = _opt(True, "--progress/--no-progress", panel=OUTPUT, help="live progress bar"),
    allow_changed_settings: bool = _opt(False, panel=OUTPUT, help="continue a run dir made with other settings"),
) -> None:
    """Run the agent on every task of BENCH and score it; rerun to continue an interrupted run."""
    if workers < 1:
        _exit("--workers must be >= 1")
    agent = _config(AgentConfig, max_wall_s=task_timeout, scaffold=scaffold, max_turns=max_turns,
                    cell_timeout_s=cell_timeout, max_tokens_per_turn=max_tokens_per_turn, seed=seed,
                    file_preview=preview, constrain=constrain, refuse_repeats=refuse_repeats,
                    code_after_refusal=code_after_refusal,
                    temperature=temperature if search == "none" else None)
    task_timeout = agent.max_wall_s  # the agent's limit is the task's (the runner adds RUNNER_SLACK_S)
    result = _load(bench, limit, ids)
    if not result.tasks:
        _exit("no task to run")
    if withhold_files:  # the no-data control: same questions, no files in the kernel
        result.tasks = [dataclasses.replace(t, files=[]) for t in result.tasks]
    sc = _scorer(bench, scorer)
    config, agent_fn = _search_setup(search, agent, task_timeout, out, sc, value_model, collect,
                                     temperature=search_temperature if search_temperature is not None else temperature,
                                     k=k, iterations=iterations, c_puct=c_puct, max_depth=max_depth,
                                     aggregate=aggregate, max_tokens=search_tokens, value_nodes=value_nodes)
    session_config = _config(SessionConfig, backend=backend or ("forking" if search != "none" else "local"),
                             sandbox=sandbox)
    from ..agent.session import SessionStartError, start_error_message
    from ..models.base import ModelError
    from .runner import RunLocked, SettingsMismatch

    try:
        summary = run_interruptible(_run(result.tasks, result.errors, bench, model, out, workers, task_timeout, config,
                                         sc, session_config, progress, not allow_changed_settings, agent_fn, search,
                                         withhold_files))
    except SessionStartError as e:
        _exit(start_error_message(e))
    except (SettingsMismatch, RunLocked, ModelError) as e:
        _exit(str(e))
    _print_metrics(summary.metrics, f"{bench}: {out} ({summary.n_run} run now, {summary.n_resumed} resumed)")
    print(f"results: {out / 'results.jsonl'}  notebooks: {out / 'notebooks'}")
    print(metrics_json(summary.metrics, n_tasks=summary.n_tasks, n_run=summary.n_run, n_resumed=summary.n_resumed,
                       n_rescored=summary.n_rescored, status_counts=summary.status_counts, scorer=sc.name), flush=True)


# --- merge -------------------------------------------------------------------------------------
@app.command()
def merge(
    run_dirs: list[Path] = typer.Argument(..., help="run directories over disjoint task ids"),
    out: Path = typer.Option(..., "--out", "-o", help="the merged run's folder (new)"),
    allow_changed_settings: bool = typer.Option(False, help="merge runs whose identity settings differ "
                                                "(recorded in run.json's merged_from)"),
) -> None:
    """One run from shards run apart (other cores, machines or sessions), for reports and paired tests."""
    from .merge import merge_runs
    from .runner import SettingsMismatch

    try:
        summary = merge_runs(run_dirs, out, allow_changed_settings)
    except (FileNotFoundError, FileExistsError, ValueError, SettingsMismatch) as e:
        _err(f"error: {e}")
        raise typer.Exit(2) from None
    print(json.dumps(summary))


# --- report ------------------------------------------------------------------------------------
@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="run directories to compare"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="where report.md and report.png go"),
) -> None:
    """Compare runs: tables on the terminal, a PNG plot and a Markdown report."""
    from .report import make_report, print_tables

    try:
        files = make_report(list(run_dirs), out)
    except FileNotFoundError as e:
        _err(f"error: {e}")
        raise typer.Exit(2) from None
    print_tables(files.tables)
    print(f"report: {files.markdown}")
    print(f"plots: {files.plot} {files.cost_plot}")
