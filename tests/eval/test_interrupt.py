"""A real Ctrl-C (SIGINT) to a process running an eval: nothing finished is lost, every
session opened is closed, and a rerun continues with only what is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CHILD = r'''
import asyncio, faulthandler, signal, sys
faulthandler.register(signal.SIGUSR1)
# A job started in the background by a non-interactive shell (as CI may run us) inherits
# SIGINT ignored, and asyncio.run() then installs no Ctrl-C handler: restore Python's.
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
sys.path.insert(0, {helpers!r})
from eval_helpers import fake_factory, make_tasks, scripted_agent
from notebook_agent.eval.runner import run_eval
from notebook_agent.tasks.scoring import get_scorer

out, log, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
calls_file = out.parent / "calls.txt"

async def forever():
    await asyncio.sleep(3600)

class Calls(list):
    def append(self, x):
        with open(calls_file, "a") as f:
            f.write(x + "\n")

tasks = make_tasks(4)
answers = {{t.id: f"@v[{{t.id}}]" for t in tasks}}
hold = {{"2": forever, "3": forever}} if mode == "hang" else None
try:
    asyncio.run(run_eval(tasks, None, out, scorer=get_scorer("dabench"), agent_config={{}}, workers=2,
                         session_factory=fake_factory(log), agent_fn=scripted_agent(answers, calls=Calls(), hold=hold),
                         progress=True))
except KeyboardInterrupt:
    sys.exit(130)
'''


def finish(proc: subprocess.Popen) -> str:
    """The child's stderr once it exits; if it hangs, fail with every thread's stack (SIGUSR1)."""
    try:
        return proc.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1)
        proc.kill()
        raise AssertionError("the child did not exit after SIGINT; its stacks:\n" + proc.communicate()[1][-6000:])


def test_sigint_keeps_finished_work_and_rerun_continues(tmp_path: Path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(helpers=str(Path(__file__).parent)))
    out, log = tmp_path / "run", tmp_path / "sessions.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(log), "hang"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if results.exists() and len(results.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError("the child never finished two tasks: " + proc.communicate()[1])
    time.sleep(0.3)  # tasks 2 and 3 are in flight
    proc.send_signal(signal.SIGINT)
    err = finish(proc)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "rerun" in err
    recs = [json.loads(l) for l in results.read_text().splitlines()]
    assert {r["id"]: r["status"] for r in recs} == {"0": "answered", "1": "answered", "2": "cancelled", "3": "cancelled"}
    lines = log.read_text().split()
    assert sorted(l for l in lines if l.startswith("start")) == [f"start:{i}" for i in range(4)]
    assert sorted(l for l in lines if l.startswith("close")) == [f"close:{i}" for i in range(4)]

    (tmp_path / "calls.txt").unlink()
    done = subprocess.run([sys.executable, str(script), str(out), str(log), "finish"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted((tmp_path / "calls.txt").read_text().split()) == ["2", "3"]
    final = {}
    for l in results.read_text().splitlines():
        r = json.loads(l)
        final[r["id"]] = r
    assert all(final[i]["status"] == "answered" and final[i]["correct"] for i in "0123")


CLI_CHILD = r'''
import asyncio, faulthandler, signal, sys, time
faulthandler.register(signal.SIGUSR1)
from pathlib import Path
sys.path.insert(0, {helpers!r})
from eval_helpers import fake_factory, make_tasks, scripted_agent
from notebook_agent.eval.cli import run_interruptible
from notebook_agent.eval.runner import run_eval
from notebook_agent.tasks.scoring import get_scorer

out, log = Path(sys.argv[1]), Path(sys.argv[2])

async def generating():
    # like an in-process model: a thread busy for a long time that cannot be cancelled
    await asyncio.to_thread(time.sleep, 120)

tasks = make_tasks(3)
run_interruptible(run_eval(tasks, None, out, scorer=get_scorer("dabench"), agent_config={{}}, workers=2,
                           session_factory=fake_factory(log),
                           agent_fn=scripted_agent({{"0": "@v[0]"}}, hold={{"1": generating, "2": generating}}),
                           progress=False))
'''


def test_cli_ctrl_c_exits_at_once_even_with_a_model_thread_busy(tmp_path: Path):
    script = tmp_path / "child.py"
    script.write_text(CLI_CHILD.format(helpers=str(Path(__file__).parent)))
    out, log = tmp_path / "run", tmp_path / "sessions.log"
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(log)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ((out / "results.jsonl").exists()
                                               and (out / "results.jsonl").read_text().strip()):
        time.sleep(0.05)
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    err = finish(proc)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 15          # not the 120 s the busy thread would take
    recs = {json.loads(l)["id"]: json.loads(l)["status"] for l in (out / "results.jsonl").read_text().splitlines()}
    assert recs == {"0": "answered", "1": "cancelled", "2": "cancelled"}
    assert sorted(l for l in log.read_text().split() if l.startswith("close")) == ["close:0", "close:1", "close:2"]
