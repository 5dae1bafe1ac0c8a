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


def test_a_value_model_that_is_not_one_is_a_one_line_error(tmp_path):
    bench = tmp_path / "t.jsonl"
    bench.write_text('{"id": "a", "question": "q?"}\n')
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    base = ["eval", "run", f"jsonl:{bench}", "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(app, [*base, "--search", "vote", "--value-model", str(not_a_model)])
    assert r.exit_code == 2 and "--value-model needs --search mcts" in r.output
    r = CliRunner().invoke(app, [*base, "--search", "mcts", "--value-model", str(not_a_model)])
    assert r.exit_code == 2 and "could not load the value model" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["search", str(SALES), "q?", "--value-model", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "value model not found" in r.output
    assert not (tmp_path / "o").exists()


def test_collect_needs_mcts_without_a_value_model(tmp_path):
    bench = tmp_path / "t.jsonl"
    bench.write_text('{"id": "a", "question": "q?"}\n')
    base = ["eval", "run", f"jsonl:{bench}", "--out", str(tmp_path / "o"), "--collect"]
    for extra in ([], ["--search", "vote"], ["--search", "mcts", "--value-model", str(tmp_path)]):
        r = CliRunner().invoke(app, [*base, *extra])
        assert r.exit_code == 2 and "--collect needs --search mcts" in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_sandbox_modes_are_checked_by_every_command(tmp_path):
    bench = tmp_path / "t.jsonl"
    bench.write_text('{"id": "a", "question": "q?"}\n')
    for args in (["run", str(SALES), "q?"], ["search", str(SALES), "q?"], ["eval", "run", f"jsonl:{bench}"]):
        r = CliRunner().invoke(app, [*args, "--sandbox", "maybe", "--out", str(tmp_path / "o")])
        assert r.exit_code == 2 and "unknown sandbox mode 'maybe'" in r.output, (args, r.output)
    assert not (tmp_path / "o").exists()
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("output: out\ntraces: {sandbox: maybe}\n")
    r = CliRunner().invoke(app, ["data", "build", str(pipeline), "--steps", "traces"])
    assert r.exit_code == 2 and "traces: unknown sandbox mode 'maybe'" in r.output, r.output
    r = CliRunner().invoke(app, ["data", "build", str(pipeline), "--steps", "traces", "--sandbox", "perhaps"])
    assert r.exit_code == 2 and "unknown sandbox mode 'perhaps'" in r.output, r.output
    assert "[default: require]" in CliRunner().invoke(app, ["eval", "run", "--help"], terminal_width=200).output
