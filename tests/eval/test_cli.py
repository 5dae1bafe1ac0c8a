"""`notebook-agent eval score|report|BENCH` end to end, as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchdata import DABENCH_DEV
from eval_helpers import fake_factory, make_tasks, scripted_agent

from notebook_agent.eval.report import cost_points, load_runs
from notebook_agent.eval.runner import run_eval
from notebook_agent.tasks.scoring import get_scorer

DEV = DABENCH_DEV


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "notebook_agent.cli", "eval", *args], capture_output=True, text=True,
                          timeout=timeout)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    d = tmp_path / "bench"
    (d / "tables").mkdir(parents=True)
    (d / "tables" / "t.csv").write_text("x\n1\n")
    write_jsonl(d / "questions.jsonl", [
        {"id": i, "question": f"q{i}", "file_name": "t.csv", "level": lv, "concepts": cs}
        for i, lv, cs in [(1, "easy", ["A"]), (2, "hard", ["A", "B"]), (3, "hard", ["B"])]])
    write_jsonl(d / "labels.jsonl", [
        {"id": 1, "common_answers": [["a", "1"], ["b", "2"]]},
        {"id": 2, "common_answers": [["a", "1"], ["b", "2"]]},
        {"id": 3, "common_answers": [["c", "x"]]}])
    return d


def test_score_prints_a_table_and_ends_with_one_json_line(tmp_path: Path, bench: Path):
    responses = write_jsonl(tmp_path / "responses.jsonl", [
        {"id": 1, "response": "@a[1] @b[2.0]"},
        {"id": 2, "response": "@a[1] @b[3]"},
        {"id": 2, "response": "@a[1] @b[2]"},      # a second response for an id: the first counts
        "not json",
        {"id": 3, "response": ""},
    ])
    r = cli("score", f"dabench:{bench}", "--responses", str(responses))
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out["n"] == 3 and out["n_answered"] == 2 and out["scorer"] == "dabench"
    assert out["abq"] == pytest.approx(1 / 3) and out["psaq"] == pytest.approx(0.5) and out["uasq"] == pytest.approx(3 / 5)
    assert out["by_level"]["hard"]["n"] == 2 and out["by_concept"]["B"]["abq"] == 0.0
    assert out["abq_ci"] == pytest.approx([0.0615, 0.7923], abs=5e-5)   # Wilson, 1 of 3
    assert "ABQ" in r.stdout and "level: hard" in r.stdout
    assert "bad JSON" in r.stderr
    r = cli("score", f"dabench:{bench}", "--responses", str(responses), "--missing", "skip")
    out = last_json(r.stdout)
    assert (out["n"], out["abq"], out["psaq"], out["uasq"]) == (2, 0.5, 0.75, 0.75)


def test_score_with_a_lenient_scorer_by_name(tmp_path: Path, bench: Path):
    responses = write_jsonl(tmp_path / "r.jsonl", [{"id": 3, "response": "@c[x]"}, {"id": 1, "response": "@a[1.0005] @b[2]"}])
    official = last_json(cli("score", f"dabench:{bench}", "-r", str(responses)).stdout)
    lenient = last_json(cli("score", f"dabench:{bench}", "-r", str(responses), "--scorer", "dabench_lenient").stdout)
    assert official["abq"] == pytest.approx(1 / 3) and lenient["abq"] == pytest.approx(2 / 3)
    assert lenient["scorer"] == "dabench_lenient"


def test_score_accepts_a_runs_results_file(tmp_path: Path, bench: Path):
    results = write_jsonl(tmp_path / "results.jsonl", [
        {"id": "1", "status": "answered", "answer": "@a[1] @b[2]"},
        {"id": "2", "status": "max_turns", "answer": None},
        {"id": "3", "status": "answered", "answer": "@c[x]"}])
    out = last_json(cli("score", f"dabench:{bench}", "-r", str(results)).stdout)
    assert (out["n"], out["n_answered"], out["abq"]) == (3, 2, pytest.approx(2 / 3))


def test_score_bad_input_says_what_is_wrong(tmp_path: Path, bench: Path):
    r = cli("score", f"nope:{bench}", "-r", str(tmp_path / "x.jsonl"))
    assert r.returncode == 2 and "KIND:PATH" in r.stderr
    r = cli("score", f"dabench:{bench}", "-r", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 2 and "does not exist" in r.stderr


@pytest.mark.skipif(not (DEV / "labels.jsonl").exists(), reason=f"dabench-dev data not present at {DEV}")
def test_score_dabench_dev_gold_is_100_percent(tmp_path: Path):
    rows = [{"id": json.loads(l)["id"], "response": " ".join(f"@{n}[{v}]" for n, v in json.loads(l)["common_answers"])}
            for l in (DEV / "labels.jsonl").read_text().splitlines()]
    r = cli("score", f"dabench:{DEV}", "--responses", str(write_jsonl(tmp_path / "gold.jsonl", rows)))
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert (out["abq"], out["psaq"], out["uasq"], out["n"]) == (1.0, 1.0, 1.0, 60)


def test_bare_bench_means_run(tmp_path: Path, bench: Path):
    r = cli(f"dabench:{bench}", "--model", str(tmp_path / "no-such-model.gguf"), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "cannot load model" in r.stderr      # it reached `run`'s model loading
    r = cli("run", "--help")
    assert r.returncode == 0 and "--workers" in r.stdout and "--task-timeout" in r.stdout


async def test_report_compares_runs(tmp_path: Path):
    tasks = make_tasks(6)
    for name, answers in [("A", {t.id: f"@v[{t.id}]" for t in tasks}), ("B", {"0": "@v[0]", "3": "@v[3]"})]:
        await run_eval(tasks, None, tmp_path / name, scorer=get_scorer("dabench"), agent_config={"scaffold": name},
                       session_factory=fake_factory([]), agent_fn=scripted_agent(answers), progress=False,
                       settings={"model": f"model-{name}", "benchmark": "test:x"})
    r = cli("report", str(tmp_path / "A"), str(tmp_path / "B"), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| ABQ | 100.0 | 33.3 |" in md
    assert "| ABQ 95% CI (Wilson) | [61.0, 100.0] | [9.7, 70.0] |" in md   # 6/6 and 2/6, by hand
    # B is right on 0 and 3 only: 4 discordant tasks, all one way -> exact McNemar p = 2/16
    assert "| right only in the first | 4 |" in md and "| right only in the second | 0 |" in md
    assert "| exact McNemar p | 0.125 |" in md and "| ABQ difference (points) | -66.7 |" in md
    assert "- only A (4): 1, 2, 4, 5" in md and "- only B (0): -" in md
    # levels cycle easy/medium/hard over ids 0..5: B answered 0 and 3, both easy
    assert "| easy | 100.0 / 100.0 / 100.0 (n=2) | 100.0 / 100.0 / 100.0 (n=2) |" in md
    assert "| medium | 100.0 / 100.0 / 100.0 (n=2) | 0.0 / 0.0 / 0.0 (n=2) |" in md
    assert "| Summary Statistics | 100.0 (n=3) | 33.3 (n=3) |" in md
    assert "| max_turns | 0 | 4 |" in md
    assert "model-A" in md and "![ABQ by level](report.png)" in md
    assert "![ABQ against tokens per task](report-cost.png)" in md
    points = cost_points(load_runs([tmp_path / "A", tmp_path / "B"]))
    assert [(p.name, round(p.abq, 3)) for p in points] == [("A", 1.0), ("B", 0.333)]
    assert [round(x, 3) for x in points[1].ci] == [0.097, 0.7]       # the Wilson interval of the table above
    for png in ("report.png", "report-cost.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"report: {tmp_path / 'rep' / 'report.md'}" in r.stdout and "Summary Statistics" in r.stdout
    r = cli("report", str(tmp_path / "nope"))
    assert r.returncode == 2 and "not a run directory" in r.stderr


async def test_merge_joins_shards_into_one_run_and_refuses_overlaps_and_mixed_settings(tmp_path: Path):
    """Two shards over disjoint ids become one run that `report` reads as one; an id in two
    shards, or shards with other settings (unless allowed, and then recorded), are errors."""
    tasks = make_tasks(6)
    answers = {t.id: f"@v[{t.id}]" if t.id in "024" else "@v[x]" for t in tasks}

    async def shard(name: str, ids: str, scaffold: str = "tools") -> Path:
        await run_eval([t for t in tasks if t.id in ids], None, tmp_path / name, scorer=get_scorer("dabench"),
                       agent_config={"scaffold": scaffold}, session_factory=fake_factory([]),
                       agent_fn=scripted_agent(answers), progress=False, settings={"model": "m", "benchmark": "test:x"})
        return tmp_path / name

    a, b = await shard("a", "012"), await shard("b", "345")
    r = cli("merge", str(a), str(b), "--out", str(tmp_path / "ab"))
    assert r.returncode == 0, r.stderr
    assert last_json(r.stdout)["records"] == 6
    run = json.loads((tmp_path / "ab" / "run.json").read_text())
    assert [m["records"] for m in run["merged_from"]] == [3, 3] and len(run["sessions"]) == 2
    (merged,) = load_runs([tmp_path / "ab"])
    assert merged.metrics.n == 6 and merged.metrics.overall.n_correct == 3   # ids 0, 2, 4
    again = cli("merge", str(a), str(b), "--out", str(tmp_path / "ab"))
    assert again.returncode == 2 and "already holds a run" in again.stderr
    over = cli("merge", str(a), str(await shard("c", "23")), "--out", str(tmp_path / "ac"))
    assert over.returncode == 2 and "task 2 has a result in both" in over.stderr
    other = await shard("d", "45", scaffold="react")
    mixed = cli("merge", str(a), str(other), "--out", str(tmp_path / "ad"))
    assert mixed.returncode == 2 and "agent_config.scaffold" in mixed.stderr
    ok = cli("merge", str(a), str(other), "--out", str(tmp_path / "ad"), "--allow-changed-settings")
    assert ok.returncode == 0, ok.stderr
    diffs = json.loads((tmp_path / "ad" / "run.json").read_text())["merged_from"][1]["differences"]
    assert diffs == ["agent_config.scaffold: 'tools' -> 'react'"]


def test_score_reads_a_dabstep_submission(tmp_path: Path):
    d = tmp_path / "dabstep"
    (d / "context").mkdir(parents=True)
    (d / "context" / "payments.csv").write_text("x\n1\n")
    write_jsonl(d / "tasks.jsonl", [
        {"task_id": "1", "question": "How many?", "guidelines": "a number", "level": "easy", "answer": "138236"},
        {"task_id": "2", "question": "Which?", "guidelines": "a word", "level": "hard", "answer": "NL"},
        {"task_id": "5", "question": "Share?", "guidelines": "a number", "level": "hard", "answer": "0.5"}])
    # the leaderboard's submission format: task_id, agent_answer (and reasoning_trace)
    sub = write_jsonl(tmp_path / "submission.jsonl", [
        {"task_id": "1", "agent_answer": "138236", "reasoning_trace": "counted"},
        {"task_id": 2, "agent_answer": "BE", "reasoning_trace": ""},
        {"task_id": "5", "agent_answer": "", "reasoning_trace": "gave up"}])
    r = cli("score", f"dabstep:{d}", "--responses", str(sub))
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out["scorer"] == "dabstep" and out["n_responses"] == 2 and "no id" not in r.stderr
    assert (out["n"], out["n_answered"]) == (3, 2) and out["abq"] == pytest.approx(1 / 3)
    assert out["by_level"]["easy"]["abq"] == 1.0 and out["by_level"]["hard"]["abq"] == 0.0


async def test_no_data_control_withholds_files_and_the_report_marks_tasks_right_without_data(tmp_path: Path):
    data = tmp_path / "d.csv"
    data.write_text("x\n1\n")
    tasks = make_tasks(4, files=[data])
    seen: dict[str, list] = {}

    def agent(answers):
        inner = scripted_agent(answers)

        async def fn(task, *a, **k):
            seen.setdefault(answers.get("tag", ""), []).append(list(task.files))
            return await inner(task, *a, **k)
        return fn

    kw = dict(scorer=get_scorer("dabench"), agent_config={}, session_factory=fake_factory([]), progress=False)
    await run_eval(tasks, None, tmp_path / "full", agent_fn=agent({"0": "@v[0]", "1": "@v[1]", "2": "@v[2]"}),
                   settings={"model": "m", "benchmark": "test:x"}, **kw)
    # what `eval run --withhold-files` does: the same tasks without files, recorded in run.json
    import dataclasses
    bare = [dataclasses.replace(t, files=[]) for t in tasks]
    await run_eval(bare, None, tmp_path / "nodata", agent_fn=agent({"tag": "x", "1": "@v[1]", "3": "@v[3]"}),
                   settings={"model": "m", "benchmark": "test:x", "withhold_files": True}, **kw)
    assert seen["x"] == [[]] * 4 and all(f == [data] for f in seen[""])
    r = cli("report", str(tmp_path / "full"), str(tmp_path / "nodata"), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Answered right without data (no-data control: nodata)" in md
    assert "| right, also right without data | 1 |" in md and "| tasks right without data | 1 |" in md
    # full got 0, 1, 2 right; the control 1 and 3: on tasks 0 and 2 full's ABQ is 2/2
    assert "| ABQ on tasks no control got right | 100.0 (n=2) |" in md
    assert "- (1): 1" in md


def test_run_help_offers_withhold_files():
    r = cli("run", "--help")
    assert r.returncode == 0 and "--withhold-files" in r.stdout
