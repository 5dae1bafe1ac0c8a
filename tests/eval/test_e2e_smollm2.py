"""`notebook-agent eval` end to end: SmolLM2-135M through llama.cpp, real kernels, three
dabench-dev tasks; interrupted with Ctrl-C after the first result, then resumed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from benchdata import DABENCH_DEV

DEV = DABENCH_DEV
IDS = "0,9,55"


def records(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


@pytest.mark.slow
@pytest.mark.skipif(not (DEV / "labels.jsonl").exists(), reason=f"dabench-dev data not present at {DEV}")
def test_eval_smollm2_three_tasks_interrupt_and_resume(tmp_path: Path, smollm2_path: Path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "notebook_agent.cli", "eval", f"dabench:{DEV}", "--ids", IDS,
           "--model", str(smollm2_path), "--out", str(out), "--workers", "2", "--max-turns", "2",
           "--max-tokens-per-turn", "64", "--task-timeout", "60", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None and not records(out):
        time.sleep(0.2)
    # with 3 tasks on 2 workers, the third is still to come when the first record lands
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    first = records(out)
    assert proc.returncode == 130, stderr[-3000:]
    assert "rerun" in stderr
    finished_first = {r["id"] for r in first if r["status"] != "cancelled"}
    assert finished_first, stderr[-3000:]

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["n"] == 3 and summary["n_resumed"] == len(finished_first)
    assert summary["n_run"] == 3 - len(finished_first)

    final: dict[str, dict] = {}
    for r in records(out):
        final[r["id"]] = r
    assert sorted(final) == sorted(IDS.split(","))
    # the tasks finished before the interruption were not run again
    assert sum(1 for r in records(out) if r["id"] in finished_first and r["status"] != "cancelled") == len(finished_first)
    for r in final.values():
        assert r["status"] not in ("cancelled", "crashed"), r.get("error")
        assert r["n_sub"] >= 1 and r["turns"] >= 1
        nb = nbformat.read(out / r["notebook"], as_version=4)
        nbformat.validate(nb)
    # the printed figures are those of the final records, by the official scorer
    rs = list(final.values())
    assert summary["abq"] == pytest.approx(sum(r["correct"] for r in rs) / 3)
    assert summary["psaq"] == pytest.approx(sum(r["fraction"] for r in rs) / 3)
    assert summary["uasq"] == pytest.approx(sum(r["n_right"] for r in rs) / sum(r["n_sub"] for r in rs))
    assert summary["n_answered"] == sum(1 for r in final.values() if r["answered"])
    # eval requires isolation by default; every record says how its kernel was confined
    assert all(r["isolation"]["mode"] == "require" and r["isolation"]["isolated"] for r in final.values())
    # the model really wrote (a task may time out waiting for the shared model on a busy machine)
    assert sum(r["completion_tokens"] for r in final.values()) > 0
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == str(smollm2_path) and run["agent_config"]["max_turns"] == 2 and len(run["sessions"]) == 2

    rep = subprocess.run([sys.executable, "-m", "notebook_agent.cli", "eval", "report", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    assert (out / "report.md").exists() and (out / "report.png").exists()
