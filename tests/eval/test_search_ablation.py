"""benchmarks/search_ablation.py on hand-made run folders: ABQ, pairing and the candidates'
verdicts (scored against the gold answers by the real dabench scorer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_run(d: Path, search: str, rows: list[tuple[int, bool, str | None, list[tuple[str, float]]]],
             aggregates: dict[int, dict[str, str]] | None = None) -> Path:
    """A run folder: per task (id, right, chosen answer, [(candidate answer, value)]), and
    the answer each aggregation would pick (`aggregates[id]`)."""
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"search": search, "benchmark": "dabench:x", "model": "m"}))
    write_jsonl(d / "results.jsonl", [
        {"id": i, "status": "answered" if ans else "max_turns", "answer": ans, "correct": ok,
         "fraction": float(ok), "n_sub": 1, "n_right": int(ok), "answered": ans is not None,
         "level": "easy", "concepts": [], "total_tokens": 1000 * (k + 1), "wall_s": 10.0 * (k + 1),
         "model_s": 9.0, "kernel_s": 1.0,
         "trajectory": {"search": {"candidates": [{"answer": a, "value": v} for a, v in cands],
                                   "aggregates": (aggregates or {}).get(i, {}),
                                   "stats": {"iterations": 2, "nodes": 7}} if search == "mcts" else None}}
        for k, (i, ok, ans, cands) in enumerate(rows)])
    return d


def test_ablation_table_pairs_rows_and_scores_every_candidate(tmp_path: Path):
    bench = tmp_path / "bench"
    (bench / "tables").mkdir(parents=True)
    (bench / "tables" / "t.csv").write_text("x\n1\n")
    write_jsonl(bench / "questions.jsonl", [{"id": i, "question": f"q{i}", "file_name": "t.csv", "level": "easy",
                                             "concepts": ["A"]} for i in (1, 2, 3)])
    write_jsonl(bench / "labels.jsonl", [{"id": 1, "common_answers": [["a", "1"]]},
                                         {"id": 2, "common_answers": [["b", "2"]]},
                                         {"id": 3, "common_answers": [["c", "3"]]}])
    one = make_run(tmp_path / "one", "none", [(1, True, "@a[1]", []), (2, False, "@b[0]", []), (3, False, None, [])])
    vote = make_run(tmp_path / "vote", "vote", [(1, True, "@a[1]", []), (2, True, "@b[2]", []), (3, False, None, [])])
    # MCTS: task 1 chose a wrong answer valued above the right one it also found; task 2 right.
    mcts = make_run(tmp_path / "mcts", "mcts", [(1, False, "@a[9]", [("@a[1]", 0.2), ("@a[9]", 0.9)]),
                                                (2, True, "@b[2]", [("@b[2]", 0.8)]), (3, False, None, [])],
                    aggregates={1: {"majority": "@a[9]", "best_value": "@a[1]"},
                                2: {"majority": "@b[2]", "best_value": "@b[2]"}})
    out = tmp_path / "rep"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_ablation.py"), "--bench", f"dabench:{bench}",
                        "--row", f"one={one}", "--row", f"vote={vote}", "--row", f"mcts={mcts}", "--vote", "vote",
                        "--out", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    line = json.loads(p.stdout.strip().splitlines()[-1])
    assert line["tasks"] == 3
    rows = line["rows"]
    assert [round(rows[n]["abq"], 3) for n in ("one", "vote", "mcts")] == [0.333, 0.667, 0.333]
    assert rows["vote"]["vs_one"] == 33.3 and rows["mcts"]["vs_one"] == 0.0 and rows["mcts"]["vs_vote"] == -33.3
    assert rows["one"]["mean_tokens"] == 2000 and rows["one"]["mean_wall_s"] == 20.0
    full = json.loads((out / "ablation.json").read_text())["rows"]["mcts"]
    c = full["candidates"]
    assert (c["n"], c["right"], c["tasks_with_a_right_candidate"]) == (3, 2, 2)
    assert c["right_in_tree_not_chosen"] == ["1"]
    assert c["value_auc"] == 0.0  # both right candidates (0.2, 0.8) valued below the wrong one (0.9)
    assert (c["mean_value_right"], c["mean_value_wrong"]) == (0.5, 0.9)
    assert c["top_valued_wrong"] == [{"id": "1", "value": 0.9, "answer": "@a[9]"}]
    assert c["right_by_aggregate"] == {"best_value": 2, "majority": 1}
    assert full["vs_one"]["only_ref"] == ["1"] and full["vs_one"]["only_row"] == ["2"]
    assert (out / "report.md").exists() and (out / "report-cost.png").stat().st_size > 1000
    assert "candidate-value AUC 0.000" in p.stdout
