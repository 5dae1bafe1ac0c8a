"""benchmarks/peer_smolagents.py turns a task process's events into our records: canned events,
no model and no smolagents (the script needs smolagents only inside a task's process)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from notebook_agent.eval.report import load_run
from notebook_agent.tasks.records import RETRY_STATUSES
from notebook_agent.tasks.scoring import DABenchScorer
from notebook_agent.tasks.task import Task

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "peer_smolagents.py"


@pytest.fixture(scope="module")
def peer():
    spec = importlib.util.spec_from_file_location("peer_smolagents", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def task(i: str = "7", level: str = "easy") -> Task:
    return Task(id=i, question="Mean fare?", answer=[["mean_fare", "34.65"]], level=level,
                concepts=["Summary Statistics"], benchmark="dabench")


def calls(*pairs: tuple[int, int]) -> list[dict]:
    return [{"kind": "model", "s": 2.0, "prompt_tokens": p, "completion_tokens": c} for p, c in pairs]


def test_an_answered_run_is_scored_with_the_official_scorer(peer):
    events = [{"kind": "start", "startup_s": 1.5}, *calls((2000, 100), (2300, 40)),
              {"kind": "step", "n": 1, "code": "df = pd.read_csv('x.csv')"},
              {"kind": "step", "n": 2, "code": "final_answer('@mean_fare[34.65]')", "final": True},
              {"kind": "end", "status": "answered", "answer": "@mean_fare[34.65]", "forced_answer": False}]
    r = peer.make_record(task(), events, 30.0, DABenchScorer())
    assert (r["status"], r["correct"], r["n_right"], r["n_sub"], r["answered"]) == ("answered", True, 1, 1, True)
    assert (r["prompt_tokens"], r["completion_tokens"], r["total_tokens"]) == (4300, 140, 4440)
    assert (r["turns"], r["steps"], r["model_s"], r["startup_s"], r["scorer"]) == (2, 2, 4.0, 1.5, "dabench")
    assert r["level"] == "easy" and r["concepts"] == ["Summary Statistics"]
    json.dumps(r)  # a results.jsonl line


def test_a_wrong_format_is_wrong_as_the_official_rules_say(peer):
    events = [*calls((10, 1)), {"kind": "end", "status": "answered", "answer": "34.65"}]
    assert peer.make_record(task(), events, 1.0, DABenchScorer())["correct"] is False


def test_a_timeout_keeps_the_tokens_spent_and_is_final(peer):
    events = [*calls((2000, 512), (2600, 512)), {"kind": "step", "n": 1}]
    r = peer.make_record(task(), events, 300.0, DABenchScorer(), timed_out=True, timeout_s=300)
    assert (r["status"], r["answer"], r["correct"], r["total_tokens"], r["turns"]) == ("timeout", None, False, 5624, 2)
    assert "300 s" in r["status_detail"] and r["status"] not in RETRY_STATUSES


def test_a_process_that_died_without_a_result_is_crashed_and_retried(peer):
    r = peer.make_record(task(), calls((5, 5)), 3.0, DABenchScorer(), child_log="Traceback ...\nMemoryError")
    assert r["status"] == "crashed" and r["status"] in RETRY_STATUSES and "MemoryError" in r["error"]


def test_a_forced_answer_at_max_steps_is_scored_as_given(peer):
    events = [*calls(*[(100, 10)] * 7),
              {"kind": "end", "status": "max_turns", "answer": "@mean_fare[34.65]", "forced_answer": True}]
    r = peer.make_record(task(), events, 9.0, DABenchScorer())
    assert (r["status"], r["forced_answer"], r["correct"], r["turns"]) == ("max_turns", True, True, 7)


def test_errors_map_to_our_statuses(peer):
    class BadRequestError(Exception):
        pass

    class APIConnectionError(Exception):
        pass

    overflow = BadRequestError("Requested tokens (9001) exceed context window of 8192")
    assert peer._cause_status(overflow)[0] == "max_tokens"
    wrapped = RuntimeError("Error in generating model output")
    wrapped.__cause__ = APIConnectionError("Connection refused")
    assert peer._cause_status(wrapped)[0] == "model_error"
    assert peer._cause_status(ValueError("bug"))[0] == "crashed"


def test_eval_report_reads_the_records(peer, tmp_path: Path):
    scorer = DABenchScorer()
    right = peer.make_record(task("1", "easy"), [*calls((10, 1)), {"kind": "end", "status": "answered",
                                                                 "answer": "@mean_fare[34.65]"}], 5.0, scorer)
    late = peer.make_record(task("2", "hard"), calls((10, 1)), 300.0, scorer, timed_out=True, timeout_s=300)
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (right, late)))
    run = load_run(tmp_path)
    assert (run.metrics.n, run.metrics.abq, run.status_counts) == (2, 0.5, {"answered": 1, "timeout": 1})
    assert run.mean_tokens == 11 and set(run.metrics.by_level) == {"easy", "hard"}


def test_base_url(peer):
    assert peer.base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080/v1"
    assert peer.base_url("http://127.0.0.1:8080/v1/") == "http://127.0.0.1:8080/v1"
