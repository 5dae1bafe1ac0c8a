"""Bad search settings on the command line are refused with a clear message, before any work."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from notebook_agent.cli import app

SALES = Path(__file__).resolve().parents[2] / "examples" / "sales.csv"


def test_search_command_refuses_bad_settings(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["search", str(SALES), "q?", "--method", "beam", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown method 'beam'" in r.output
    r = runner.invoke(app, ["search", str(SALES), "q?", "--k", "0", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "k (children per expansion) must be >= 1" in r.output
    r = runner.invoke(app, ["search", str(tmp_path / "missing.csv"), "q?"])
    assert r.exit_code == 2 and "file not found" in r.output
    assert not (tmp_path / "o").exists()


def test_eval_refuses_an_unknown_search(tmp_path):
    bench = tmp_path / "t.jsonl"
    bench.write_text('{"id": "a", "question": "q?"}\n')
    r = CliRunner().invoke(app, ["eval", "run", f"jsonl:{bench}", "--out", str(tmp_path / "o"), "--search", "beam"])
    assert r.exit_code == 2 and "--search must be none, mcts or vote" in r.output
    r = CliRunner().invoke(app, ["eval", "run", f"jsonl:{bench}", "--out", str(tmp_path / "o"), "--search", "mcts",
                                 "--aggregate", "median"])
    assert r.exit_code == 2 and "unknown aggregation" in r.output
