"""The runner: parallel workers, durable records, resume, interruption, crashes, timeouts.

Bookkeeping uses a scripted agent_fn and sessions that only record their lifecycle; the
tests at the end run real kernels (and the real agent loop with a scripted model)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nbformat
import pytest
from eval_helpers import fake_factory, make_tasks, read_results, scripted_agent, wait_for_lines

from notebook_agent.agent.loop import AgentConfig
from notebook_agent.eval.runner import RunLocked, SettingsMismatch, run_eval
from notebook_agent.kernel import make_session
from notebook_agent.models.scripted import ScriptedModel, call
from notebook_agent.tasks.scoring import Score, get_scorer
from notebook_agent.tasks.task import Task

SCORER = get_scorer("dabench")


def right(ids) -> dict[str, str]:
    return {i: f"@v[{i}]" for i in ids}


async def test_parallel_run_writes_records_notebooks_and_settings(tmp_path: Path):
    tasks = make_tasks(6)
    log: list[str] = []
    answers = {**right(["0", "1", "2"]), "3": "@v[wrong]", "4": "no format"}  # "5": no answer at all
    summary = await run_eval(tasks, None, tmp_path, scorer=SCORER, agent_config={"max_turns": 3}, workers=3,
                             session_factory=fake_factory(log), agent_fn=scripted_agent(answers), progress=False,
                             settings={"benchmark": "test:x", "model": "scripted"})
    recs = {r["id"]: r for r in read_results(tmp_path)}
    assert sorted(recs) == [str(i) for i in range(6)]
    assert [recs[i]["correct"] for i in "012345"] == [True, True, True, False, False, False]
    assert recs["5"]["status"] == "max_turns" and recs["5"]["answered"] is False
    r0 = recs["0"]
    assert (r0["prompt_tokens"], r0["completion_tokens"], r0["total_tokens"], r0["turns"]) == (100, 20, 120, 2)
    assert r0["level"] == "easy" and r0["trajectory"]["answer"] == "@v[0]" and r0["wall_s"] >= 0
    nb = nbformat.read(tmp_path / r0["notebook"], as_version=4)
    nbformat.validate(nb)
    assert "@v[0]" in nb.cells[-1].source
    # every session started was closed, one per task
    assert sorted(log) == sorted([f"start:{i}" for i in range(6)] + [f"close:{i}" for i in range(6)])
    assert summary.metrics.n == 6 and summary.metrics.abq == pytest.approx(0.5)
    assert summary.n_run == 6 and summary.n_resumed == 0
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["benchmark"] == "test:x" and run["model"] == "scripted" and run["scorer"] == "dabench"
    assert run["workers"] == 3 and run["agent_config"] == {"max_turns": 3} and len(run["sessions"]) == 1
    assert "git_commit" in run


async def test_workers_really_run_in_parallel(tmp_path: Path):
    running, peak = 0, 0

    async def hold():
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.2)
        running -= 1

    tasks = make_tasks(6)
    await run_eval(tasks, None, tmp_path, scorer=SCORER, agent_config={}, workers=3, session_factory=fake_factory([]),
                   agent_fn=scripted_agent(right("012345"), hold={t.id: hold for t in tasks}), progress=False)
    assert peak == 3


async def test_interrupted_run_loses_nothing_and_resumes(tmp_path: Path):
    tasks = make_tasks(4)
    log: list[str] = []
    forever = asyncio.Event()
    hold = {"2": forever.wait, "3": forever.wait}
    run = asyncio.create_task(run_eval(tasks, None, tmp_path, scorer=SCORER, agent_config={}, workers=2,
                                       session_factory=fake_factory(log),
                                       agent_fn=scripted_agent(right("0123"), hold=hold), progress=False))
    await wait_for_lines(tmp_path / "results.jsonl", 2)
    await asyncio.sleep(0.1)  # tasks 2 and 3 are now in flight
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    recs = read_results(tmp_path)
    assert {r["id"]: r["status"] for r in recs} == {"0": "answered", "1": "answered", "2": "cancelled", "3": "cancelled"}
    assert sorted(x for x in log if x.startswith("close")) == ["close:0", "close:1", "close:2", "close:3"]

    calls: list[str] = []
    summary = await run_eval(tasks, None, tmp_path, scorer=SCORER, agent_config={}, workers=2,
                             session_factory=fake_factory(log), agent_fn=scripted_agent(right("0123"), calls=calls),
                             progress=False)
    assert sorted(calls) == ["2", "3"]                  # finished tasks are not run again
    assert (summary.n_resumed, summary.n_run, summary.metrics.n, summary.metrics.abq) == (2, 2, 4, 1.0)
    assert len(json.loads((tmp_path / "run.json").read_text())["sessions"]) == 2
    # a third run has nothing left to do
    calls.clear()
    summary = await run_eval(tasks, None, tmp_path, scorer=SCORER, agent_config={}, session_factory=fake_factory(log),
                             agent_fn=scripted_agent(right("0123"), calls=calls), progress=False)
    assert calls == [] and summary.n_resumed == 4 and summary.metrics.abq == 1.0


async def test_crash_is_recorded_skipped_and_retried_next_time(tmp_path: Path):
    tasks = make_tasks(3)
    log: list[str] = []
    summary = await run_eval(tasks, None, tmp_path, scorer=SCORER, agent_config={}, workers=2,
                             session_factory=fake_factory(log), agent_fn=scripted_agent(right("012"), fail={"1"}),
                             progress=False)
    recs = {r["id"]: r for r in read_results(tmp_path)}
    assert recs["1"]["status"] == "crashed" and "agent blew up on 1" in recs["1"]["error"]
    assert recs["1"]["correct"] is False and recs["0"]["correct"] and recs["2"]["correct"]
    assert "close:1" in log
    assert summary.status_counts == {"answered": 2, "crashed": 1} and summary.metrics.abq == pytest.approx(2 / 3)
    calls: list[str] = []
    summary = await run_eval(tasks, None, tmp_path, scorer=SCORER, agent_config={}, session_factory=fake_factory(log),
                             agent_fn=scripted_agent(right("012"), calls=calls), progress=False)
    assert calls == ["1"] and summary.metrics.abq == 1.0


async def test_model_errors_are_retried_but_wrong_answers_are_not(tmp_path: Path):
    from notebook_agent.agent.trajectory import Trajectory

    calls: list[str] = []

    async def agent(task, model, session, config, on_event=None):
        calls.append(task.id)
        status = {"0": "model_error", "1": "max_errors"}.get(task.id, "answered")
        return Trajectory(question="q", task_id=task.id, status=status, answer=None if status != "answered" else "@v[x]")

    kw = dict(scorer=SCORER, agent_config={}, session_factory=fake_factory([]), agent_fn=agent, progress=False)
    summary = await run_eval(make_tasks(3), None, tmp_path, **kw)
    assert summary.status_counts == {"model_error": 1, "max_errors": 1, "answered": 1} and summary.metrics.n == 3
    calls.clear()
    await run_eval(make_tasks(3), None, tmp_path, **kw)
    assert calls == ["0"]


async def test_task_timeout_is_final(tmp_path: Path):
    tasks = make_tasks(2)
    log: list[str] = []

    async def slow():
        await asyncio.sleep(30)

    summary = await run_eval(tasks, None, tmp_path, scorer=SCORER, agent_config={}, workers=2, task_timeout_s=0.5,
                             session_factory=fake_factory(log), agent_fn=scripted_agent(right("01"), hold={"1": slow}),
                             progress=False)
    recs = {r["id"]: r for r in read_results(tmp_path)}
    assert recs["1"]["status"] == "timeout" and "0.5" in recs["1"]["status_detail"] and recs["1"]["wall_s"] < 5
    assert recs["0"]["status"] == "answered" and "close:1" in log
    assert summary.metrics.abq == 0.5
    calls: list[str] = []
    await run_eval(tasks, None, tmp_path, scorer=SCORER, agent_config={}, task_timeout_s=0.5,
                   session_factory=fake_factory(log), agent_fn=scripted_agent(right("01"), calls=calls), progress=False)
    assert calls == []  # a timeout is a result, not an accident


async def test_changed_settings_are_refused_unless_allowed(tmp_path: Path):
    tasks = make_tasks(1)
    kw = dict(scorer=SCORER, session_factory=fake_factory([]), agent_fn=scripted_agent(right("0")), progress=False)
    await run_eval(tasks, None, tmp_path, agent_config={"max_turns": 3}, settings={"model": "a"}, **kw)
    with pytest.raises(SettingsMismatch, match="model: 'a' -> 'b'"):
        await run_eval(tasks, None, tmp_path, agent_config={"max_turns": 3}, settings={"model": "b"}, **kw)
    with pytest.raises(SettingsMismatch, match=r"agent_config\.max_turns: 3 -> 4"):
        await run_eval(tasks, None, tmp_path, agent_config={"max_turns": 4}, settings={"model": "a"}, **kw)
    await run_eval(tasks, None, tmp_path, agent_config={"max_turns": 4}, settings={"model": "b"},
                   check_settings=False, **kw)


async def test_two_runs_cannot_share_a_directory_at_once(tmp_path: Path):
    gate = asyncio.Event()
    kw = dict(scorer=SCORER, agent_config={}, session_factory=fake_factory([]), progress=False)
    first = asyncio.create_task(run_eval(make_tasks(1), None, tmp_path, agent_fn=scripted_agent(
        right("0"), hold={"0": gate.wait}), **kw))
    await asyncio.sleep(0.3)
    with pytest.raises(RunLocked, match="another eval is running"):
        await run_eval(make_tasks(1), None, tmp_path, agent_fn=scripted_agent(right("0")), **kw)
    gate.set()
    assert (await first).metrics.abq == 1.0
    await run_eval(make_tasks(1), None, tmp_path, agent_fn=scripted_agent(right("0")), **kw)  # free again


async def test_a_line_cut_short_by_a_crash_is_skipped_and_the_next_record_is_clean(tmp_path: Path):
    tasks = make_tasks(3)
    kw = dict(scorer=SCORER, agent_config={}, session_factory=fake_factory([]), progress=False)
    await run_eval(tasks[:1], None, tmp_path, agent_fn=scripted_agent(right("012")), **kw)
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"id": "1", "status": "answ')          # the machine died mid-write
    calls: list[str] = []
    summary = await run_eval(tasks, None, tmp_path, agent_fn=scripted_agent(right("012"), calls=calls), **kw)
    assert sorted(calls) == ["1", "2"]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4 and lines[1] == '{"id": "1", "status": "answ'   # the fragment stays alone on its line
    assert sorted(r["id"] for r in read_results_tolerant(tmp_path)) == ["0", "1", "2"]
    assert summary.metrics.n == 3 and summary.metrics.abq == 1.0


def read_results_tolerant(out: Path) -> list[dict]:
    good = []
    for line in (out / "results.jsonl").read_text().splitlines():
        try:
            good.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return good


def test_bad_arguments(tmp_path: Path):
    tasks = make_tasks(2)
    with pytest.raises(ValueError, match="workers"):
        asyncio.run(run_eval(tasks, None, tmp_path, scorer=SCORER, agent_config={}, workers=0,
                             session_factory=fake_factory([]), agent_fn=scripted_agent({})))
    with pytest.raises(ValueError, match="duplicate task ids"):
        asyncio.run(run_eval(tasks + tasks[:1], None, tmp_path, scorer=SCORER, agent_config={},
                             session_factory=fake_factory([]), agent_fn=scripted_agent({})))


# --- real kernels --------------------------------------------------------------------------------
@pytest.fixture
def csvs(tmp_path: Path) -> list[Path]:
    out = []
    for i in range(3):
        p = tmp_path / "data" / f"t{i}.csv"
        p.parent.mkdir(exist_ok=True)
        p.write_text("x\n" + "\n".join(str(v) for v in range(i + 2)) + "\n")  # sum = (i+1)(i+2)/2
        out.append(p)
    return out


async def kernel_agent(task: Task, model, session, config, on_event=None):
    """An agent_fn that computes the answer in the real kernel and records the step."""
    from notebook_agent.agent.trajectory import Step, Trajectory

    name = task.files[0].name
    result = await session.execute(f"import pandas as pd\nprint(pd.read_csv({name!r}).x.sum())", timeout=60)
    traj = Trajectory(question=task.question, task_id=task.id, files=[name], turns=1)
    traj.steps.append(Step(comment="Sum the column.", result=result, turn=1))
    traj.answer = f"@total[{result.text.strip()}]" if result.ok else None
    traj.status = "answered" if result.ok else "max_errors"
    return traj


async def test_real_kernels_with_a_bad_task_among_them(tmp_path: Path, csvs: list[Path]):
    tasks = [Task(id=f"t{i}", question="Sum of x?", files=[p], answer=[["total", str((i + 1) * (i + 2) // 2)]])
             for i, p in enumerate(csvs)]
    tasks.append(Task(id="bad", question="Sum of x?", files=[tmp_path / "data" / "missing.csv"],
                      answer=[["total", "1"]]))
    out = tmp_path / "run"
    summary = await run_eval(tasks, None, out, scorer=SCORER, agent_config={}, workers=2,
                             session_factory=lambda t: make_session("local", files=t.files), agent_fn=kernel_agent,
                             progress=False)
    recs = {r["id"]: r for r in read_results(out)}
    assert all(recs[f"t{i}"]["correct"] for i in range(3))
    assert recs["bad"]["status"] == "crashed" and "missing.csv" in recs["bad"]["status_detail"]
    assert summary.metrics.abq == pytest.approx(3 / 4)
    nb = nbformat.read(out / recs["t2"]["notebook"], as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].outputs[0]["text"].strip() == "6"      # the kernel's real output is in the notebook


async def test_real_agent_loop_through_the_runner(tmp_path: Path, csvs: list[Path]):
    """The default agent_fn (run_agent) with a scripted model and real kernels, one worker."""
    tasks = [Task(id=f"t{i}", question="Sum of x?", files=[p], format="@total[value]",
                  answer=[["total", str((i + 1) * (i + 2) // 2)]]) for i, p in enumerate(csvs[:2])]
    script = []
    for t in tasks:
        script += [call("execute_code", comment="Sum x.", code=f"import pandas as pd\nprint(pd.read_csv('{t.files[0].name}').x.sum())"),
                   lambda msgs: call("final_answer", answer=f"@total[{msgs[-1]['content'].strip()}]")]
    out = tmp_path / "run"
    summary = await run_eval(tasks, ScriptedModel(script), out, scorer=SCORER, agent_config=AgentConfig(max_turns=4),
                             workers=1, session_factory=lambda t: make_session("local", files=t.files), progress=False)
    recs = {r["id"]: r for r in read_results(out)}
    assert [recs[t.id]["answer"] for t in tasks] == ["@total[1]", "@total[3]"]
    assert summary.metrics.abq == 1.0 and recs["t1"]["prompt_tokens"] == 20
    assert json.loads((out / "run.json").read_text())["agent_config"]["max_turns"] == 4


async def test_a_resumed_run_with_another_scorer_rescores_the_stored_answers(tmp_path: Path):
    tasks = make_tasks(3)
    answers = {"0": "@v[0]", "1": "@v[1.0005]", "2": "@v[x]"}   # 1: off by 5e-4, right only within 1e-3
    kw = dict(agent_config={}, session_factory=fake_factory([]), progress=False)
    first = await run_eval(tasks, None, tmp_path, scorer=SCORER, agent_fn=scripted_agent(answers), **kw)
    assert first.metrics.abq == pytest.approx(1 / 3) and first.n_rescored == 0
    assert {r["scorer"] for r in read_results(tmp_path)} == {"dabench"}
    calls: list[str] = []
    lenient = get_scorer("dabench_lenient")
    again = await run_eval(tasks, None, tmp_path, scorer=lenient, agent_fn=scripted_agent(answers, calls=calls), **kw)
    assert calls == [] and again.n_resumed == 3 and again.n_rescored == 3      # nothing ran again
    assert again.metrics.abq == pytest.approx(2 / 3)                           # every verdict is the new scorer's
    latest = {r["id"]: r for r in read_results(tmp_path)}
    assert {r["scorer"] for r in latest.values()} == {"dabench_lenient"}
    assert latest["1"]["correct"] and latest["1"]["rescored"] == {"from": "dabench", "verdict_changed": True}
    assert latest["0"]["rescored"] == {"from": "dabench", "verdict_changed": False}
    assert json.loads((tmp_path / "run.json").read_text())["scorer"] == "dabench_lenient"
    n_lines = len(read_results(tmp_path))
    third = await run_eval(tasks, None, tmp_path, scorer=lenient, agent_fn=scripted_agent(answers), **kw)
    assert third.n_rescored == 0 and len(read_results(tmp_path)) == n_lines  # unchanged: nothing appended


async def test_a_changed_rule_under_the_same_scorer_name_rescores_too(tmp_path: Path):
    tasks = make_tasks(2)
    kw = dict(agent_config={}, session_factory=fake_factory([]), progress=False, agent_fn=scripted_agent(right("01")))
    await run_eval(tasks, None, tmp_path, scorer=SCORER, **kw)
    for line in (tmp_path / "results.jsonl").read_text().splitlines():    # a run made before records named their scorer
        assert json.loads(line).pop("scorer") == "dabench"
    (tmp_path / "results.jsonl").write_text("".join(
        json.dumps({k: v for k, v in json.loads(l).items() if k != "scorer"}) + "\n"
        for l in (tmp_path / "results.jsonl").read_text().splitlines()))

    class Stricter:
        name = "dabench"

        def score(self, task, response):
            return Score(False, 0.0, 1, 0, True, {"rule": "stricter"})

    summary = await run_eval(tasks, None, tmp_path, scorer=Stricter(), **kw)
    assert summary.n_rescored == 2 and summary.metrics.abq == 0.0
    latest = {r["id"]: r for r in read_results(tmp_path)}
    assert latest["0"]["rescored"] == {"from": "dabench", "verdict_changed": True}
    assert latest["0"]["score_details"] == {"rule": "stricter"}
