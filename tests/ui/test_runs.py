"""The run manager and the HTTP API around it, with a real kernel.

The model here is a ScriptedModel: it only drives the bookkeeping (events, files, stop, SSE);
the real model is exercised end to end in test_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("fastapi", reason="the web page needs the `ui` extra")
from fastapi.testclient import TestClient

from notebook_agent.models.base import ModelError
from notebook_agent.models.scripted import ScriptedModel, call
from notebook_agent.ui.reports import ReportsConfig, render_markdown
from notebook_agent.ui.runs import RunManager, RunsConfig
from notebook_agent.ui.server import UIConfig, create_app

SALES = Path(__file__).resolve().parents[2] / "examples" / "sales.csv"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c63f8ffff3f0005fe02fea7d6a4b60000000049454e44ae426082")


def scripted(*steps):
    return lambda spec: ScriptedModel(list(steps), name=spec)


ANSWERING = (
    call("execute_code", comment="Load the table.", code="import pandas as pd\ndf = pd.read_csv('sales.csv')\ndf.head(3)"),
    call("execute_code", comment="Count the rows.", code="print(len(df)); 1/0"),
    call("execute_code", comment="Count again.", code="len(df)"),
    call("final_answer", answer="@rows[240]"),
)


async def collect(run, after=-1):
    return [e async for e in run.follow(after)]


async def test_a_run_leaves_its_files_and_late_readers_get_the_backlog(tmp_path):
    manager = RunManager(RunsConfig(runs_dir=tmp_path), load_model=scripted(*ANSWERING))
    run = await manager.start("How many rows?", [SALES], "scripted", 6)
    early = asyncio.create_task(collect(run))
    await run.task
    late = await collect(run)            # subscribes after the end: the whole backlog
    resumed = await collect(run, after=4)
    events = await early
    assert events == late and resumed == events[5:]
    kinds = [e["kind"] for e in events]
    assert kinds[:3] == ["status", "status", "turn"] and kinds[-2:] == ["end", "done"]
    assert kinds.count("cell") == kinds.count("result") == 3
    assert [e["seq"] for e in events] == list(range(len(events)))
    failed = [e for e in events if e["kind"] == "result"][1]["data"]["result"]
    assert failed["status"] == "error" and failed["outputs"][-1]["ename"] == "ZeroDivisionError"
    assert events[-1]["data"] == {"status": "answered", "detail": "", "answer": "@rows[240]",
                                  "notebook": True, "trajectory": True}

    d = tmp_path / "ui" / run.record.id
    assert sorted(p.name for p in d.iterdir()) == ["events.jsonl", "notebook.ipynb", "run.json", "sales.csv",
                                                   "trajectory.json"]
    assert [json.loads(x) for x in (d / "events.jsonl").read_text().splitlines()] == events
    nb = nbformat.read(d / "notebook.ipynb", as_version=4)
    nbformat.validate(nb)
    assert [c.source for c in nb.cells if c.cell_type == "code"][2] == "len(df)"
    # finished runs are read back from disk, identical
    assert run.record.id not in manager.live
    again = manager.get(run.record.id)
    assert again.events == events and again.record.status == "answered" and again.record.cells == 3
    listed = manager.list()
    assert listed[0]["id"] == run.record.id and listed[0]["answer"] == "@rows[240]"


async def test_stop_while_a_cell_runs_ends_after_the_cell(tmp_path):
    steps = [call("execute_code", comment="Slow.", code="import time; time.sleep(3); print('slept')")] * 5
    manager = RunManager(RunsConfig(runs_dir=tmp_path), load_model=scripted(*steps))
    run = await manager.start("Sleep", [], "scripted", 5)
    async for e in run.follow():
        if e["kind"] == "cell":
            break
    message = manager.stop(run.record.id)
    assert "a cell is running" in message
    t0 = time.monotonic()
    await run.task
    assert time.monotonic() - t0 < 15
    assert run.record.status == "cancelled"
    results = [e for e in run.events if e["kind"] == "result"]
    assert len(results) == 1 and "slept" in results[0]["data"]["result"]["text"]  # the cell finished
    assert any(e["kind"] == "notice" and "Stop requested" in e["data"]["text"] for e in run.events)
    assert (run.dir / "notebook.ipynb").exists()
    assert manager.stop(run.record.id) == "the run has already finished"


async def test_a_model_that_fails_to_load_ends_the_run_with_its_reason(tmp_path):
    def broken(spec):
        raise ModelError(f"cannot load model {spec!r}: no such file")

    manager = RunManager(RunsConfig(runs_dir=tmp_path), load_model=broken)
    run = await manager.start("Anything?", [], "nope.gguf", 2)
    await run.task
    done = run.events[-1]
    assert done["kind"] == "done" and done["data"]["status"] == "model_error"
    assert "no such file" in done["data"]["detail"] and not done["data"]["notebook"]


async def test_too_many_runs_are_refused_and_shutdown_stops_the_rest(tmp_path):
    steps = [call("execute_code", comment="Slow.", code="import time; time.sleep(1)")] * 50
    manager = RunManager(RunsConfig(runs_dir=tmp_path, max_active_runs=1), load_model=scripted(*steps))
    run = await manager.start("one", [], "scripted", 50)
    from notebook_agent.ui.runs import TooManyRuns

    with pytest.raises(TooManyRuns):
        await manager.start("two", [], "scripted", 50)
    async for e in run.follow():
        if e["kind"] == "result":
            break
    await manager.shutdown(grace_s=15)
    assert run.record.status == "cancelled" and (run.dir / "notebook.ipynb").exists()


# -- through HTTP -------------------------------------------------------------------------------------
@pytest.fixture
def app_client(tmp_path):
    def make(*steps):
        config = UIConfig(runs=RunsConfig(runs_dir=tmp_path / "runs"), reports=ReportsConfig(root=tmp_path / "eval"),
                          allowed_models=("scripted",))
        app = create_app(config, RunManager(config.runs, load_model=scripted(*steps)))
        return TestClient(app, base_url="http://127.0.0.1:8765")  # the Host check wants a loopback name
    return make


def sse_events(response) -> list[dict]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
    return events


def test_the_api_runs_streams_and_serves_the_notebook(app_client):
    with app_client(*ANSWERING) as client:
        page = client.get("/")
        assert page.status_code == 200 and "notebook-agent" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/static/app.js").status_code == 200
        up = client.post("/api/files", files=[("files", ("sales.csv", SALES.read_bytes(), "text/csv"))]).json()
        r = client.post("/api/runs", json={"question": "How many rows?", "files": [up["files"][0]["id"]],
                                           "model": "scripted", "max_turns": 6})
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        with client.stream("GET", f"/api/runs/{run_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = sse_events(stream)
        assert events[-1]["kind"] == "done" and events[-1]["data"]["status"] == "answered"
        # a reconnecting reader (Last-Event-ID) gets only what it missed
        with client.stream("GET", f"/api/runs/{run_id}/events", headers={"Last-Event-ID": "6"}) as stream:
            assert sse_events(stream) == events[7:]
        nb = client.get(f"/api/runs/{run_id}/notebook.ipynb")
        assert nb.status_code == 200 and "attachment" in nb.headers["content-disposition"]
        nbformat.validate(nbformat.reads(nb.text, as_version=4))
        traj = client.get(f"/api/runs/{run_id}/trajectory.json").json()
        assert traj["answer"] == "@rows[240]" and len(traj["steps"]) == 3
        runs = client.get("/api/runs").json()
        assert [r["id"] for r in runs] == [run_id] and runs[0]["status"] == "answered"
        assert client.get("/api/runs/" + "0" * 32).status_code == 404
        assert client.get("/api/runs/../../etc/passwd/events").status_code == 404
        assert client.post(f"/api/runs/{run_id}/stop").json()["message"] == "the run has already finished"


def test_reports_are_listed_and_rendered_escaped(app_client, tmp_path):
    d = tmp_path / "eval" / "qwen-dabench-20250101"
    d.mkdir(parents=True)
    (d / "results.jsonl").write_text('{"id": 1}\n{"id": 2}\n')
    (d / "accuracy.png").write_bytes(PNG)
    (d / "report.md").write_text("# Accuracy\n\n<script>alert(1)</script>\n\n| model | acc |\n|---|---|\n"
                                 "| qwen | **0.42** |\n\n![plot](accuracy.png)\n\n[x](javascript:alert(1))\n")
    (tmp_path / "eval" / "empty-dir").mkdir()
    nested = tmp_path / "eval" / "sweep" / "w4"
    nested.mkdir(parents=True)
    (nested / "results.jsonl").write_text('{"id": 1}\n')
    (tmp_path / "eval" / "a" / "b" / "c").mkdir(parents=True)  # too deep: not listed
    (tmp_path / "eval" / "a" / "b" / "c" / "report.md").write_text("# deep")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "report.md").write_text("# secret")
    with app_client() as client:
        listed = client.get("/api/reports").json()["reports"]
        assert sorted((r["name"], r["results"], r["plots"]) for r in listed) == [
            ("qwen-dabench-20250101", 2, ["accuracy.png"]), ("sweep/w4", 1, [])]
        assert client.get("/api/reports/sweep/w4").json()["results"] is True
        assert client.get("/api/reports/a/b/c").status_code == 404
        rep = client.get("/api/reports/qwen-dabench-20250101").json()
        assert "<script>" not in rep["html"] and "&lt;script&gt;" in rep["html"]
        assert "<td><strong>0.42</strong></td>" in rep["html"]
        assert '<img alt="plot" src="/api/reports/qwen-dabench-20250101/files/accuracy.png">' in rep["html"]
        assert "javascript" not in rep["html"].replace("&lt;script&gt;", "")
        png = client.get("/api/reports/qwen-dabench-20250101/files/accuracy.png")
        assert png.status_code == 200 and png.content == PNG
        for bad in ["/api/reports/..%2F..%2Fetc/files/passwd", "/api/reports/..%2Fsecret", "/api/reports/../secret",
                    "/api/reports/sweep/..%2F..%2Fsecret", "/api/reports/%2Fetc", "/api/reports/qwen-dabench-20250101/files/..%2Freport.md",
                    "/api/reports/nope", "/api/reports/qwen-dabench-20250101/files/secret.py"]:
            assert client.get(bad).status_code == 404, bad


def test_markdown_renderer_handles_lists_code_and_headings():
    html = render_markdown("## Title\n\n- a `x<y`\n- b\n\n```\n<b>raw</b>\n```\n\ntext *em*")
    assert "<h2>Title</h2>" in html
    assert "<ul><li>a <code>x&lt;y</code></li><li>b</li></ul>" in html
    assert "<pre><code>&lt;b&gt;raw&lt;/b&gt;</code></pre>" in html
    assert "<p>text <em>em</em></p>" in html
