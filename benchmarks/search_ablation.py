"""The search ablation: one run, majority vote and MCTS settings on the same tasks, side by side.

    python benchmarks/search_ablation.py --bench dabench:../shared/benchmarks/dabench-dev \
        --row one=runs/abl-one-run --row vote3=runs/abl-vote3 --row mcts-v0-all=runs/abl-mcts-v0-all \
        [--row NAME=DIR ...] [--baseline one] [--vote vote3] [--out docs/reports/search-ablation]

Each row is an `eval run` folder over the same task ids (rows are compared on the ids all of
them scored). Per row: ABQ with its Wilson interval, mean tokens (prompt + completion: the
budget the rows are matched on) and seconds per task, model and kernel seconds, run statuses,
and for tree search the mean iterations and nodes. Each row is paired with the baseline and
with the vote row (exact McNemar).

For MCTS rows, every candidate answer the tree reached is scored against the gold answer
(evaluation only: the search never sees it), so the table also says how often a right
answer was in the tree but not chosen, and how well the candidates' values (the value
model's, where one was used) rank right candidates above wrong ones (AUC), with the
highest-valued wrong candidates as examples, and how many tasks each way of picking among
the same candidates (majority, value-weighted vote, best value) would have got right.

`--out` writes `eval report`'s files for the rows (report.md, report.png, report-cost.png)
and `ablation.json`. Prints a table; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from notebook_agent.eval.report import RunReport, load_run, make_report
from notebook_agent.eval.results import safe_score
from notebook_agent.eval.stats import paired, wilson_interval
from notebook_agent.tasks.loaders import load_benchmark
from notebook_agent.tasks.scoring import scorer_for
from notebook_agent.train.value_eval import auc


def _id_key(i: str) -> tuple[int, str]:
    return (len(i), i)  # numeric ids in numeric order, any others too


def _mean(xs: list[float], digits: int = 3) -> float | None:
    return round(sum(xs) / len(xs), digits) if xs else None


def _search(record: dict[str, Any]) -> dict[str, Any]:
    return (record.get("trajectory") or {}).get("search") or {}


def candidates(records: list[dict[str, Any]], tasks: dict[str, Any], scorer: Any) -> list[dict[str, Any]]:
    """Every candidate answer of every task's tree, scored: {id, answer, value, right}."""
    out = []
    for r in records:
        task = tasks.get(str(r["id"]))
        if task is None:
            continue
        for c in _search(r).get("candidates") or []:
            right = safe_score(scorer, task, c.get("answer")).correct
            out.append({"id": str(r["id"]), "answer": c.get("answer"), "value": c.get("value"), "right": right})
    return out


def right_by_aggregate(records: list[dict[str, Any]], tasks: dict[str, Any], scorer: Any) -> dict[str, int]:
    """Tasks right if the search had picked with each aggregation (majority, value-weighted,
    best value), from the answers its record stores for all of them."""
    out: Counter[str] = Counter()
    for r in records:
        task = tasks.get(str(r["id"]))
        for method, answer in (_search(r).get("aggregates") or {}).items():
            out[method] += bool(task is not None and answer is not None and safe_score(scorer, task, answer).correct)
    return dict(sorted(out.items()))


def row_summary(run: RunReport, ids: set[str], tasks: dict[str, Any], scorer: Any) -> dict[str, Any]:
    recs = [r for r in run.records if str(r["id"]) in ids]
    n = len(recs)
    right = sum(bool(r.get("correct")) for r in recs)
    stats = [_search(r).get("stats") or {} for r in recs]

    def mean(key: str, rows: list[dict[str, Any]]) -> float | None:
        return _mean([x[key] for x in rows if isinstance(x.get(key), (int, float))], 2)

    row: dict[str, Any] = {
        "tasks": n, "right": right, "abq": right / n if n else 0.0, "abq_ci": wilson_interval(right, n),
        "mean_tokens": mean("total_tokens", recs), "mean_wall_s": mean("wall_s", recs),
        "mean_model_s": mean("model_s", recs), "mean_kernel_s": mean("kernel_s", recs),
        "statuses": dict(sorted(Counter(r.get("status") for r in recs).items())),
        "mean_iterations": mean("iterations", stats), "mean_nodes": mean("nodes", stats),
        "search": run.settings.get("search", "none"),
    }
    if row["search"] == "mcts":
        cands = candidates(recs, tasks, scorer)
        with_right = {c["id"] for c in cands if c["right"]}
        valued = [c for c in cands if isinstance(c["value"], (int, float))]
        wrong = sorted((c for c in valued if not c["right"]), key=lambda c: -c["value"])
        row["candidates"] = {
            "n": len(cands), "right": sum(c["right"] for c in cands),
            "tasks_with_a_right_candidate": len(with_right),
            "right_in_tree_not_chosen": sorted(with_right - {str(r["id"]) for r in recs if r.get("correct")}, key=_id_key),
            "value_auc": auc([c["value"] for c in valued], [c["right"] for c in valued]),
            "mean_value_right": _mean([c["value"] for c in valued if c["right"]]),
            "mean_value_wrong": _mean([c["value"] for c in valued if not c["right"]]),
            "top_valued_wrong": [{k: c[k] for k in ("id", "value", "answer")} for c in wrong[:5]],
            # what each way of picking among the same candidates would have scored (the
            # search ran with one of them; the others are read off its tree, post hoc)
            "right_by_aggregate": right_by_aggregate(recs, tasks, scorer),
        }
    return row


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", required=True, help="KIND:PATH of the tasks the rows ran")
    ap.add_argument("--row", action="append", required=True, help="NAME=RUN_DIR (repeatable, in table order)")
    ap.add_argument("--baseline", help="row every other is paired with (default: the first)")
    ap.add_argument("--vote", help="the majority-vote row, also paired with every other")
    ap.add_argument("--out", type=Path, help="folder for report.md, the plots and ablation.json")
    args = ap.parse_args()

    named = [tuple(spec.split("=", 1)) for spec in args.row]
    if any(len(x) != 2 for x in named):
        ap.error("--row takes NAME=RUN_DIR")
    runs = {name: load_run(path, name) for name, path in named}
    loaded = load_benchmark(args.bench)
    tasks = {t.id: t for t in loaded.tasks}
    scorer = scorer_for(args.bench.split(":", 1)[0])
    ids = set.intersection(*({str(r["id"]) for r in run.records} for run in runs.values()))
    rows = {name: row_summary(run, ids, tasks, scorer) for name, run in runs.items()}
    base = args.baseline or named[0][0]
    for ref in [x for x in (base, args.vote) if x]:
        ref_right = {i: c for i, c in runs[ref].correct_by_id().items() if i in ids}
        for name, run in runs.items():
            if name != ref:
                p = paired(ref_right, {i: c for i, c in run.correct_by_id().items() if i in ids})
                rows[name][f"vs_{ref}"] = {"diff_points": round(100 * p.abq_diff, 1), "only_ref": p.only_a,
                                          "only_row": p.only_b, "mcnemar_p": round(p.p_value, 4)}

    print(f"{len(ids)} tasks every row scored")
    head = f"{'row':<16}{'ABQ':>6} {'95% CI':<14}{'tokens':>8}{'s/task':>8}{'model s':>9}{'iters':>7}  paired"
    print(head)
    for name, r in rows.items():
        ci = f"[{_pct(r['abq_ci'][0])}, {_pct(r['abq_ci'][1])}]"
        pairs = "; ".join(f"{k[3:]} {v['diff_points']:+.1f} (p={v['mcnemar_p']:.3g})"
                          for k, v in r.items() if k.startswith("vs_"))
        print(f"{name:<16}{_pct(r['abq']):>6} {ci:<14}{r['mean_tokens'] or 0:>8.0f}{r['mean_wall_s'] or 0:>8.0f}"
              f"{r['mean_model_s'] or 0:>9.0f}{r['mean_iterations'] or 0:>7.1f}  {pairs}")
    for name, r in rows.items():
        if "candidates" in r:
            c = r["candidates"]
            a = "-" if c["value_auc"] is None else f"{c['value_auc']:.3f}"
            print(f"{name}: {c['n']} candidates ({c['right']} right); a right one in {c['tasks_with_a_right_candidate']} "
                  f"trees, not chosen in {c['right_in_tree_not_chosen']}; candidate-value AUC {a} (mean value: right "
                  f"{c['mean_value_right']}, wrong {c['mean_value_wrong']}); right if picked by "
                  + ", ".join(f"{k} {v}" for k, v in c["right_by_aggregate"].items()))
    if args.out:
        make_report([runs[n].path for n, _ in named], args.out)
        (args.out / "ablation.json").write_text(json.dumps({"tasks": sorted(ids, key=_id_key), "rows": rows}, indent=1))
    print(json.dumps({"bench": args.bench, "tasks": len(ids),
                      "rows": {n: {k: r[k] for k in ("abq", "abq_ci", "mean_tokens", "mean_wall_s")} |
                               {k: v["diff_points"] for k, v in r.items() if k.startswith("vs_")}
                               for n, r in rows.items()}}))


if __name__ == "__main__":
    main()
