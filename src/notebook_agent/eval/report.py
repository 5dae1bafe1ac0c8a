"""Compare runs: tables (overall, per level, per concept, cost, statuses), a PNG and Markdown.

A run directory is what `run_eval` leaves: `results.jsonl` (the last record of each id
counts; `cancelled` records are unfinished work and are left out) and `run.json`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tasks.records import RESULTS_FILE, load_run_records
from ..tasks.scoring import Metrics, level_key, summarize
from .results import RUN_FILE, scored_item
from .stats import Paired, bootstrap_interval, paired, wilson_interval


@dataclass
class RunReport:
    name: str
    path: Path
    settings: dict[str, Any]
    metrics: Metrics
    status_counts: dict[str, int]
    n_records: int
    mean_tokens: float
    mean_wall_s: float
    total_wall_min: float
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def scored(self) -> list[Any]:
        """The scored items (tasks with a gold answer) of this run."""
        return [it for it in (scored_item(r) for r in self.records) if it.score.scored]

    @property
    def no_data(self) -> bool:
        """A no-data control (`eval run --withhold-files`)."""
        return bool(self.settings.get("withhold_files"))

    def correct_by_id(self) -> dict[str, bool]:
        return {it.id: it.score.correct for it in self.scored()}

    def intervals(self) -> dict[str, tuple[float, float]]:
        """95% intervals of ABQ (Wilson), PSAQ and UASQ (bootstrap over questions)."""
        items = self.scored()
        return {
            "abq": wilson_interval(sum(it.score.correct for it in items), len(items)),
            "psaq": bootstrap_interval([it.score.fraction for it in items]),
            "uasq": bootstrap_interval([it.score.n_right for it in items], [it.score.n_sub for it in items]),
        }


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]


def load_run(run_dir: str | Path, name: str | None = None) -> RunReport:
    path = Path(run_dir)
    if not (path / RESULTS_FILE).exists():
        raise FileNotFoundError(f"{path} is not a run directory: it has no {RESULTS_FILE}")
    settings = json.loads((path / RUN_FILE).read_text()) if (path / RUN_FILE).exists() else {}
    records = [r for r in load_run_records(path).values() if r.get("status") != "cancelled"]
    n = len(records)
    return RunReport(
        name=name or path.name,
        path=path,
        settings=settings,
        metrics=summarize(scored_item(r) for r in records),
        status_counts=dict(Counter(r.get("status", "") for r in records)),
        n_records=n,
        mean_tokens=sum(r.get("total_tokens", 0) for r in records) / n if n else 0.0,
        mean_wall_s=sum(r.get("wall_s", 0.0) for r in records) / n if n else 0.0,
        total_wall_min=sum(r.get("wall_s", 0.0) for r in records) / 60,
        records=records,
    )


def _names(paths: list[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [str(p) for p in paths]


def load_runs(run_dirs: list[str | Path]) -> list[RunReport]:
    paths = [Path(p) for p in run_dirs]
    return [load_run(p, n) for p, n in zip(paths, _names(paths))]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _ci(ci: tuple[float, float]) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def _triple(g: Any) -> str:
    return f"{_pct(g.abq)} / {_pct(g.psaq)} / {_pct(g.uasq)} (n={g.n})" if g and g.n else "-"


def tables(runs: list[RunReport]) -> list[Table]:
    names = [r.name for r in runs]
    agent = [r.settings.get("agent_config") or {} for r in runs]
    cis = [r.intervals() for r in runs]
    overall = Table("Overall (ABQ, PSAQ, UASQ in %, with 95% confidence intervals)", ["", *names], [
        ["tasks scored", *[str(r.metrics.n) for r in runs]],
        ["ABQ", *[_pct(r.metrics.abq) for r in runs]],
        ["ABQ 95% CI (Wilson)", *[_ci(c["abq"]) for c in cis]],
        ["PSAQ", *[_pct(r.metrics.psaq) for r in runs]],
        ["PSAQ 95% CI (bootstrap)", *[_ci(c["psaq"]) for c in cis]],
        ["UASQ", *[_pct(r.metrics.uasq) for r in runs]],
        ["UASQ 95% CI (bootstrap)", *[_ci(c["uasq"]) for c in cis]],
        ["answered", *[f"{r.metrics.n_answered}/{r.metrics.n}" for r in runs]],
        ["mean tokens / task", *[f"{r.mean_tokens:.0f}" for r in runs]],
        ["mean time / task (s)", *[f"{r.mean_wall_s:.1f}" for r in runs]],
        ["total task time (min)", *[f"{r.total_wall_min:.1f}" for r in runs]],
        ["model", *[str(r.settings.get("model", "?")) for r in runs]],
        ["scaffold", *[str(a.get("scaffold", r.settings.get("scaffold", "?"))) for a, r in zip(agent, runs)]],
        ["scorer", *[str(r.settings.get("scorer", "?")) for r in runs]],
        ["benchmark", *[str(r.settings.get("benchmark", "?")) for r in runs]],
    ])
    levels = sorted({lv for r in runs for lv in r.metrics.by_level}, key=level_key)
    by_level = Table("By level: ABQ / PSAQ / UASQ (%)", ["level", *names],
                     [[lv, *[_triple(r.metrics.by_level.get(lv)) for r in runs]] for lv in levels])
    concepts = sorted({c for r in runs for c in r.metrics.by_concept})
    by_concept = Table("By concept: ABQ (%)", ["concept", *names], [
        [c, *[(f"{_pct(g.abq)} (n={g.n})" if (g := r.metrics.by_concept.get(c)) else "-") for r in runs]]
        for c in concepts])
    statuses = sorted({s for r in runs for s in r.status_counts})
    status = Table("Run statuses", ["status", *names],
                   [[s, *[str(r.status_counts.get(s, 0)) for r in runs]] for s in statuses])
    return [t for t in (overall, paired_table(runs), no_data_table(runs), by_level, by_concept, status) if t.rows]


def _guessable(runs: list[RunReport]) -> set[str]:
    """Ids some no-data control got right."""
    return {i for c in runs if c.no_data for i, ok in c.correct_by_id().items() if ok}


def right_without_data(runs: list[RunReport]) -> dict[str, list[str]]:
    """{run name: ids it got right that a no-data control (any run made with
    --withhold-files) also got right}, for every run that is not a control."""
    controls = [r for r in runs if r.no_data]
    if not controls:
        return {}
    guessable = _guessable(runs)
    return {r.name: sorted(i for i, ok in r.correct_by_id().items() if ok and i in guessable)
            for r in runs if not r.no_data}


def no_data_table(runs: list[RunReport]) -> Table:
    """How much of each run's ABQ a no-data control also reaches, and ABQ without those tasks."""
    marked = right_without_data(runs)
    others = [r for r in runs if r.name in marked]
    controls = ", ".join(r.name for r in runs if r.no_data)
    rows: list[list[str]] = []
    if others:
        guessable = _guessable(runs)
        kept = [{i: ok for i, ok in r.correct_by_id().items() if i not in guessable} for r in others]
        rows = [
            ["right, also right without data", *[str(len(marked[r.name])) for r in others]],
            ["ABQ on tasks no control got right", *[f"{_pct(sum(k.values()) / len(k)) if k else '-'} (n={len(k)})" for k in kept]],
            ["tasks right without data", *[_ids(marked[r.name]) for r in others]],
        ]
    return Table(f"Answered right without data (no-data control: {controls})", ["", *[r.name for r in others]], rows)


def comparisons(runs: list[RunReport]) -> list[tuple[RunReport, RunReport, Paired]]:
    """Each run after the first, paired with the first (the baseline) on the tasks both scored."""
    if len(runs) < 2:
        return []
    base = runs[0]
    return [(base, r, paired(base.correct_by_id(), r.correct_by_id())) for r in runs[1:]]


def _ids(ids: list[str], limit: int = 10) -> str:
    return ", ".join(ids[:limit]) + (f", ... ({len(ids)})" if len(ids) > limit else "") if ids else "-"


def paired_table(runs: list[RunReport]) -> Table:
    """Paired comparison with the first run: discordant tasks and the exact McNemar p-value."""
    comps = comparisons(runs)
    header = ["", *[f"{b.name} vs {a.name}" for a, b, _ in comps]]
    rows = [
        ["common tasks", *[str(p.n_common) for _, _, p in comps]],
        ["right in both", *[str(p.both) for _, _, p in comps]],
        ["right in neither", *[str(p.neither) for _, _, p in comps]],
        ["right only in the first", *[str(len(p.only_a)) for _, _, p in comps]],
        ["right only in the second", *[str(len(p.only_b)) for _, _, p in comps]],
        ["ABQ difference (points)", *[f"{100 * p.abq_diff:+.1f}" for _, _, p in comps]],
        ["exact McNemar p", *[f"{p.p_value:.3g}" for _, _, p in comps]],
        ["only the first right", *[_ids(p.only_a) for _, _, p in comps]],
        ["only the second right", *[_ids(p.only_b) for _, _, p in comps]],
    ] if comps else []
    return Table("Paired comparison with the first run (same tasks)", header, rows)


def print_tables(ts: list[Table], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    console = console or Console()
    for t in ts:
        rt = RichTable(title=t.title, title_justify="left")
        for i, h in enumerate(t.header):
            rt.add_column(h, justify="left" if i == 0 else "right")
        for row in t.rows:
            rt.add_row(*row)
        console.print(rt)


def markdown(runs: list[RunReport], ts: list[Table], plot_name: str | None, cost_plot_name: str | None = None) -> str:
    lines = ["# Evaluation report", ""]
    lines += [f"- **{r.name}**: `{r.path}` (git {r.settings.get('git_commit') or '?'})" for r in runs]
    lines.append("")
    if plot_name:
        lines += [f"![ABQ by level]({plot_name})", ""]
    if cost_plot_name:
        lines += [f"![ABQ against tokens per task]({cost_plot_name})", ""]
    for t in ts:
        lines += [f"## {t.title}", "", "| " + " | ".join(t.header) + " |",
                  "|" + "|".join(["---"] + ["---:"] * (len(t.header) - 1)) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t.rows]
        lines.append("")
    for a, b, p in comparisons(runs):
        lines += [f"## Tasks only one of {a.name} and {b.name} got right", "",
                  f"- only {a.name} ({len(p.only_a)}): {', '.join(p.only_a) or '-'}",
                  f"- only {b.name} ({len(p.only_b)}): {', '.join(p.only_b) or '-'}", ""]
    for name, ids in right_without_data(runs).items():
        lines += [f"## Tasks {name} got right that the no-data control also got right", "",
                  f"- ({len(ids)}): {', '.join(ids) or '-'}", ""]
    return "\n".join(lines)


def _error_bars(values: list[float], cis: list[tuple[float, float]]) -> list[list[float]]:
    """Matplotlib's yerr (below, above) for percentages `values` with intervals `cis` in [0, 1].
    Never negative: matplotlib rejects that, and rounding can put a bound a hair past the value."""
    return [[max(0.0, v - 100 * lo) for v, (lo, _) in zip(values, cis)],
            [max(0.0, 100 * hi - v) for v, (_, hi) in zip(values, cis)]]


def plot_levels(runs: list[RunReport], path: Path) -> Path:
    """Grouped bars: ABQ per level (and overall), one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({lv for r in runs for lv in r.metrics.by_level}, key=level_key) + ["overall"]
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(levels) * max(1, len(runs)) / 2 + 3), 4))
    for i, r in enumerate(runs):
        groups = [r.metrics.overall if lv == "overall" else r.metrics.by_level.get(lv) for lv in levels]
        values = [100 * g.abq if g else 0.0 for g in groups]
        cis = [wilson_interval(g.n_correct, g.n) if g and g.n else (0.0, 0.0) for g in groups]
        err = _error_bars(values, cis)
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(levels))]
        bars = ax.bar(xs, values, width, label=r.name, yerr=err, capsize=3, ecolor="0.3")
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(levels)), levels)
    ax.set_ylabel("ABQ (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Accuracy by question, per level (95% Wilson intervals)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@dataclass
class CostPoint:
    name: str
    mean_tokens: float
    abq: float
    ci: tuple[float, float]


def cost_points(runs: list[RunReport]) -> list[CostPoint]:
    """Each run's ABQ (with its Wilson interval) against its mean tokens per task: what a
    search setting buys for what it spends."""
    return [CostPoint(r.name, r.mean_tokens, r.metrics.abq, wilson_interval(r.metrics.overall.n_correct, r.metrics.overall.n))
            for r in runs]


def plot_cost(runs: list[RunReport], path: Path) -> Path:
    """One point per run: mean tokens per task (x) against ABQ (y), 95% Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for p in cost_points(runs):
        y = 100 * p.abq
        ax.errorbar([p.mean_tokens], [y], yerr=_error_bars([y], [p.ci]), fmt="o", capsize=3)
        ax.annotate(p.name, (p.mean_tokens, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("mean tokens per task (prompt + completion)")
    ax.set_ylabel("ABQ (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.set_title("Accuracy against cost (95% Wilson intervals)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def default_out_dir(run_dirs: list[Path]) -> Path:
    if len(run_dirs) == 1:
        return run_dirs[0]
    name = "compare-" + "-vs-".join(p.name for p in run_dirs)
    return run_dirs[0].parent / name[:120]


@dataclass
class ReportFiles:
    markdown: Path
    plot: Path
    cost_plot: Path
    tables: list[Table]
    runs: list[RunReport]


def make_report(run_dirs: list[str | Path], out_dir: str | Path | None = None) -> ReportFiles:
    runs = load_runs(run_dirs)
    out = Path(out_dir) if out_dir else default_out_dir([r.path for r in runs])
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_levels(runs, out / "report.png")
    cost_plot = plot_cost(runs, out / "report-cost.png")
    ts = tables(runs)
    md = out / "report.md"
    md.write_text(markdown(runs, ts, plot.name, cost_plot.name))
    return ReportFiles(markdown=md, plot=plot, cost_plot=cost_plot, tables=ts, runs=runs)
