"""The page refuses hostile requests and still serves its own.

Each hostile request here is one another web site, a DNS-rebinding page, a caller without the
token, or a user asking for a model or a disk the operator did not give, could send. Each must
be refused with the status and message the docs promise, and leave nothing behind; the page's
own requests (same origin, loopback name, token when there is one) must keep working.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web page needs the `ui` extra")
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from notebook_agent.models.scripted import ScriptedModel, call
from notebook_agent.ui.reports import ReportsConfig
from notebook_agent.ui.runs import ModelCache, RunManager, RunsConfig
from notebook_agent.ui.security import COOKIE, AccessPolicy, is_loopback, split_host_header
from notebook_agent.ui.server import UIConfig, create_app

SALES = Path(__file__).resolve().parents[2] / "examples" / "sales.csv"
BASE = "http://127.0.0.1:8765"
TOKEN = "s3cret-token-for-the-tests-0123456789"
ANSWER = (call("final_answer", answer="@rows[240]"),)


def scripted(spec: str) -> ScriptedModel:
    return ScriptedModel(list(ANSWER), name=spec)


def make_client(tmp_path: Path, base_url: str = BASE, **ui) -> TestClient:
    config = UIConfig(runs=RunsConfig(runs_dir=tmp_path / "runs"), reports=ReportsConfig(root=tmp_path / "eval"), **ui)
    return TestClient(create_app(config, RunManager(config.runs, load_model=scripted)), base_url=base_url)


def csv_files(n: int, size: int = 10) -> list:
    return [("files", (f"f{i}.csv", b"a\n" + b"1" * size, "text/csv")) for i in range(n)]


def stored(tmp_path: Path) -> list[Path]:
    root = tmp_path / "runs" / "ui" / "_uploads"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# -- Host ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, host", [
    ("127.0.0.1:8765", "127.0.0.1"), ("localhost", "localhost"), ("[::1]:8765", "::1"), ("LocalHost.:80", "localhost"),
    ("evil.example:8765", "evil.example"), ("", None), ("a b", None), ("::1", None), ("[::1", None),
    ("[::1]x", None), ("user@127.0.0.1", None), ("127.0.0.1/x", None),
])
def test_host_headers_are_parsed_strictly(value, host):
    assert split_host_header(value) == host


def test_which_hosts_each_binding_accepts():
    loop = AccessPolicy("127.0.0.1")
    assert all(loop.host_allowed(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(loop.host_allowed(h) for h in ("evil.example", "192.168.1.5", "localhost.evil.example", "0.0.0.0x"))
    lan = AccessPolicy("192.168.1.5", allowed_hosts=("notebook.lan",))
    assert lan.host_allowed("192.168.1.5") and lan.host_allowed("notebook.lan") and not lan.host_allowed("10.0.0.1")
    anywhere = AccessPolicy("0.0.0.0")
    assert anywhere.host_allowed("10.1.2.3") and anywhere.host_allowed("fe80::1")
    assert not anywhere.host_allowed("evil.example")
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org"))


@pytest.mark.parametrize("method, path", [("GET", "/"), ("GET", "/api/config"), ("GET", "/api/runs"),
                                          ("POST", "/api/files"), ("POST", "/api/runs"), ("GET", "/static/app.js")])
def test_a_rebinding_host_is_refused_everywhere(tmp_path, method, path):
    with make_client(tmp_path, base_url="http://attacker.example:8765") as c:
        r = c.request(method, path)
    assert r.status_code == 403
    assert "Host 'attacker.example:8765' is not this server's name" in r.json()["detail"]
    assert "default-src 'self'" in r.headers["content-security-policy"]  # refusals carry the headers too


@pytest.mark.parametrize("base", ["http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"])
def test_loopback_names_are_served(tmp_path, base):
    with make_client(tmp_path, base_url=base) as c:
        assert c.get("/").status_code == 200
        assert c.get("/api/config").status_code == 200


# -- Origin --------------------------------------------------------------------------------------
@pytest.mark.parametrize("origin", ["http://attacker.example", "http://127.0.0.1:3000", "https://127.0.0.1:8765",
                                    "null", "http://localhost:8765", "file://", "http://127.0.0.1:8765.evil.example"])
def test_a_foreign_origin_is_refused(tmp_path, origin):
    with make_client(tmp_path, allowed_models=("scripted",)) as c:
        posted = c.post("/api/files", files=csv_files(1), headers={"Origin": origin})
        started = c.post("/api/runs", json={"question": "q", "model": "scripted"}, headers={"Origin": origin})
        read = c.get("/api/runs", headers={"Origin": origin})
        assert c.get("/api/runs").json() == []
    for r in (posted, started, read):
        assert r.status_code == 403 and "cross-site request refused" in r.json()["detail"]
    assert stored(tmp_path) == []


def test_cross_site_fetches_without_origin_are_refused_but_links_to_the_page_work(tmp_path):
    with make_client(tmp_path) as c:
        for site in ("cross-site", "same-site"):
            r = c.post("/api/files", files=csv_files(1), headers={"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "no-cors"})
            assert r.status_code == 403
            assert c.get("/api/runs", headers={"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "cors"}).status_code == 403
            nav = {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "navigate"}
            assert c.get("/api/runs/" + "0" * 32 + "/notebook.ipynb", headers=nav).status_code == 403
            assert c.get("/", headers=nav).status_code == 200   # someone followed a link to the page
        same = {"Sec-Fetch-Site": "same-origin", "Origin": BASE}
        assert c.post("/api/files", files=csv_files(1), headers=same).status_code == 200
    assert len(stored(tmp_path)) == 1


def test_the_pages_own_requests_pass(tmp_path):
    with make_client(tmp_path, allowed_models=("scripted",)) as c:
        own = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}
        up = c.post("/api/files", files=[("files", ("sales.csv", SALES.read_bytes(), "text/csv"))], headers=own)
        assert up.status_code == 200
        r = c.post("/api/runs", json={"question": "How many rows?", "files": [up.json()["files"][0]["id"]],
                                      "model": "scripted"}, headers=own)
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        with c.stream("GET", f"/api/runs/{run_id}/events", headers={"Sec-Fetch-Site": "same-origin"}) as s:
            assert any('"kind": "done"' in line for line in s.iter_lines())


# -- the token -----------------------------------------------------------------------------------
def test_without_the_token_nothing_is_served(tmp_path):
    with make_client(tmp_path, token=TOKEN, host="0.0.0.0", allowed_models=("scripted",)) as c:
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Cookie": f"{COOKIE}=nope"}, {"Cookie": f"other={TOKEN}"}):
            for method, path in (("GET", "/"), ("GET", "/api/config"), ("GET", "/api/runs"), ("POST", "/api/runs"),
                                 ("POST", "/api/files")):
                r = c.request(method, path, headers=headers)
                assert r.status_code == 401, (method, path, headers)
                assert "token" in r.json()["detail"]
        assert c.get("/?token=wrong", follow_redirects=False).status_code == 401
        assert c.get("/api/runs?token=" + TOKEN).status_code == 401  # the query only works on the page URL
    assert stored(tmp_path) == []


def test_the_token_as_a_header_or_as_the_cookie_the_printed_url_sets(tmp_path):
    with make_client(tmp_path, token=TOKEN, host="0.0.0.0", base_url="http://10.1.2.3:8765",
                     allowed_models=("scripted",)) as c:
        assert c.get("/api/config", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        r = c.get(f"/?token={TOKEN}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}={TOKEN};") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        # the client keeps the cookie, as a browser does: the page and its API work from now on
        assert c.get("/").status_code == 200
        up = c.post("/api/files", files=csv_files(1), headers={"Origin": "http://10.1.2.3:8765"})
        assert up.status_code == 200
        r = c.post("/api/runs", json={"question": "q", "files": [up.json()["files"][0]["id"]], "model": "scripted"})
        assert r.status_code == 201
        # the token does not lift the other checks
        assert c.get("/api/runs", headers={"Origin": "http://attacker.example"}).status_code == 403
    with make_client(tmp_path, token=TOKEN, host="0.0.0.0", base_url="http://attacker.example:8765") as c:
        assert c.get("/api/config", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 403


# -- the CLI: a token and isolation beyond loopback ------------------------------------------------------
@pytest.fixture
def cli(monkeypatch, tmp_path):
    """`notebook-agent ui ...` that builds the app but does not serve it; returns (result, config)."""
    import uvicorn

    from notebook_agent import cli as main_cli
    from notebook_agent.ui import cli as ui_cli

    seen: dict = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: seen.setdefault("app", self.config.app))
    monkeypatch.setattr(ui_cli, "_isolation_problem", lambda backend: seen.get("problem"))
    monkeypatch.delenv("NOTEBOOK_AGENT_UI_TOKEN", raising=False)
    monkeypatch.setattr(os, "_exit", lambda code: None)  # the command exits hard if threads linger

    def run(*args: str, problem: str | None = None, env: dict | None = None):
        seen.clear()
        seen["problem"] = problem
        result = CliRunner().invoke(main_cli.app, ["ui", "--runs-dir", str(tmp_path / "runs"), *args], env=env)
        app = seen.get("app")
        return result, (app.state.config if app is not None else None)

    return run


def test_loopback_needs_no_token_and_isolates_when_it_can(cli):
    result, config = cli()
    assert result.exit_code == 0, result.output
    assert config.token is None and config.runs.sandbox == "auto"
    assert "http://127.0.0.1:8765/ " in result.output


def test_beyond_loopback_a_token_is_made_and_printed_and_isolation_required(cli):
    result, config = cli("--host", "0.0.0.0", "--port", "9000")
    assert result.exit_code == 0, result.output
    assert config.runs.sandbox == "require" and len(config.token) >= 32
    assert f":9000/?token={config.token}" in result.output
    other, config2 = cli("--host", "0.0.0.0")
    assert config2.token != config.token  # a fresh one each start


def test_beyond_loopback_without_isolation_the_server_does_not_start(cli):
    result, config = cli("--host", "0.0.0.0", problem="bubblewrap is not installed")
    assert result.exit_code == 2 and config is None
    assert "kernels must be isolated" in result.output and "--sandbox off" in result.output
    result, config = cli("--host", "0.0.0.0", "--sandbox", "off", problem="bubblewrap is not installed")
    assert result.exit_code == 0 and config.runs.sandbox == "off" and config.token
    assert "unconfined" in result.output


def test_a_given_token_is_used_and_not_printed(cli):
    result, config = cli("--host", "192.168.1.5", env={"NOTEBOOK_AGENT_UI_TOKEN": TOKEN})
    assert result.exit_code == 0 and config.token == TOKEN and TOKEN not in result.output
    result, config = cli("--token", TOKEN)   # on loopback too, when given
    assert config.token == TOKEN
    result, config = cli("--host", "0.0.0.0", "--token", "short")
    assert result.exit_code == 2 and "at least 16 characters" in result.output
    result, config = cli("--host", "0.0.0.0", "--token", "a-long-enough-token; Path=/x")
    assert result.exit_code == 2 and config is None
    result, config = cli("--sandbox", "maybe")
    assert result.exit_code == 2


def test_cli_limits_reach_the_app(cli):
    result, config = cli("--allow-model", "http://127.0.0.1:8000/v1#qwen", "--allow-model", "/models/x.gguf",
                         "--allow-host", "notebook.lan", "--max-files-per-upload", "3",
                         "--max-upload-storage-mb", "100", "--max-models", "1")
    assert result.exit_code == 0, result.output
    assert config.allowed_models == ("http://127.0.0.1:8000/v1#qwen", "/models/x.gguf")
    assert config.allowed_hosts == ("notebook.lan",)
    assert (config.max_files_per_upload, config.max_upload_storage_mb, config.runs.max_models) == (3, 100, 1)


# -- models ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["http://attacker.example:8000/v1#x", "https://api.example/v1", "/etc/passwd",
                                  "../models/x.gguf", "hf:org/name", "org/name", "openai:gpt-4o", "scripted2",
                                  "qwen2.5-coder-1.5b#x"])
def test_models_outside_the_registry_and_the_allowed_list_are_refused(tmp_path, spec):
    loads: list[str] = []
    config = UIConfig(runs=RunsConfig(runs_dir=tmp_path / "runs"), allowed_models=("scripted",))
    manager = RunManager(config.runs, load_model=lambda s: loads.append(s) or scripted(s))
    with TestClient(create_app(config, manager), base_url=BASE) as c:
        r = c.post("/api/runs", json={"question": "q", "model": spec})
        assert c.get("/api/runs").json() == []
    assert r.status_code == 403
    assert "is not allowed here" in r.json()["detail"] and "--allow-model" in r.json()["detail"]
    assert loads == []


def test_registry_allowed_and_default_models_are_accepted_and_listed(tmp_path):
    from notebook_agent.models.registry import known_models

    registry_name = sorted(known_models())[0]
    with make_client(tmp_path, allowed_models=("http://127.0.0.1:8000/v1#qwen",),
                     max_upload_mb=1) as c:
        listed = c.get("/api/config").json()
        assert set(known_models()) < set(listed["models"])
        assert "http://127.0.0.1:8000/v1#qwen" in listed["models"]
        assert listed["default_model"] in listed["models"] and listed["max_files_per_upload"] == 20
        for spec in (registry_name, "http://127.0.0.1:8000/v1#qwen", None, ""):
            r = c.post("/api/runs", json={"question": "q", "model": spec})
            assert r.status_code == 201, (spec, r.text)
            expected = spec or listed["default_model"]
            assert r.json()["record"]["model"] == expected
            while c.get(f"/api/runs/{r.json()['id']}").json()["ended"] is None:
                time.sleep(0.05)


# -- uploads: files per request, storage in all ---------------------------------------------------------------
def test_too_many_files_in_one_upload_are_refused(tmp_path):
    with make_client(tmp_path, max_files_per_upload=3) as c:
        assert c.post("/api/files", files=csv_files(3)).status_code == 200
        r = c.post("/api/files", files=csv_files(4))
    assert r.status_code == 413 and r.json()["detail"] == "too many files in one upload: the limit is 3"
    assert len(stored(tmp_path)) == 3  # the first upload's; nothing of the refused one


def test_uploads_stop_at_the_storage_limit(tmp_path):
    # 0.1 MiB in all; each upload sends one 30 kB file (a little more on the wire)
    with make_client(tmp_path, max_upload_storage_mb=0.1) as c:
        sizes = []
        for _ in range(5):
            r = c.post("/api/files", files=csv_files(1, size=30_000))
            sizes.append(r.status_code)
        assert sizes[:3] == [200, 200, 200] and sizes[3:] == [413, 413]
        assert "upload storage is full" in r.json()["detail"] and "--max-upload-storage-mb" in r.json()["detail"]
        assert len(stored(tmp_path)) == 3
        # files removed by hand make room again
        stored(tmp_path)[0].unlink()
        assert c.post("/api/files", files=csv_files(1, size=30_000)).status_code == 200
    # the limit counts what earlier servers left on disk
    with make_client(tmp_path, max_upload_storage_mb=0.1) as c:
        assert c.post("/api/files", files=csv_files(1, size=30_000)).status_code == 413
    assert len(stored(tmp_path)) == 3


def test_at_the_storage_limit_uploads_idle_for_an_hour_make_room_oldest_first(tmp_path):
    with make_client(tmp_path, max_upload_storage_mb=0.1, allowed_models=("scripted",)) as c:
        ids = [c.post("/api/files", files=csv_files(1, size=30_000)).json()["files"][0]["id"] for _ in range(3)]
        root = tmp_path / "runs" / "ui" / "_uploads"
        hours_ago = time.time() - 2 * 3600
        for age, file_id in enumerate(ids):   # all idle for two hours and more, the first the oldest
            os.utime(root / file_id.split("/")[0], (hours_ago - 60 * (3 - age),) * 2)
        # the third is used by a run now: no longer idle
        r = c.post("/api/runs", json={"question": "q", "files": [ids[2]], "model": "scripted"})
        assert r.status_code == 201
        new = c.post("/api/files", files=csv_files(1, size=30_000))
        assert new.status_code == 200                       # the oldest idle batch made room
        assert not (root / ids[0].split("/")[0]).exists()
        assert (root / ids[1].split("/")[0]).exists() and (root / ids[2].split("/")[0]).exists()
        gone = c.post("/api/runs", json={"question": "q", "files": [ids[0]], "model": "scripted"})
        assert gone.status_code == 400 and "upload it first" in gone.json()["detail"]  # the page re-uploads
        # nothing idle is left but the second batch; two more do not fit after it is gone
        assert c.post("/api/files", files=csv_files(1, size=30_000)).status_code == 200
        assert c.post("/api/files", files=csv_files(1, size=30_000)).status_code == 413
        while c.get(f"/api/runs/{r.json()['id']}").json()["ended"] is None:
            time.sleep(0.05)


def test_a_declared_length_over_the_free_storage_is_refused_before_reading(tmp_path):
    with make_client(tmp_path, max_upload_storage_mb=0.01, max_upload_mb=1) as c:
        r = c.post("/api/files", files=csv_files(1, size=20_000))
    assert r.status_code == 413 and "upload storage is full" in r.json()["detail"]
    assert stored(tmp_path) == []


# -- the model cache ---------------------------------------------------------------------------------
class FakeModel:
    def __init__(self, spec: str, closed: list[str]):
        self.spec, self.closed = spec, closed

    async def aclose(self) -> None:
        self.closed.append(self.spec)


async def test_the_model_cache_keeps_the_most_recently_used_and_closes_the_rest():
    closed: list[str] = []
    loads: list[str] = []
    cache = ModelCache(lambda s: loads.append(s) or FakeModel(s, closed), max_models=2)

    async def use(spec: str) -> FakeModel:
        return await asyncio.create_task(cache.get(spec))  # each in its own task, ended at once

    a = await use("a")
    await use("b")
    assert await use("a") is a          # cached; "a" is now the most recent
    await use("c")                      # over the bound: "b", the least recently used, is closed
    await asyncio.sleep(0)
    assert closed == ["b"] and cache.loaded == ["a", "c"] and loads == ["a", "b", "c"]
    await use("b")
    assert closed == ["b", "a"] and cache.loaded == ["c", "b"]
    await cache.aclose()
    assert sorted(closed) == ["a", "b", "b", "c"]


async def test_a_model_in_use_by_a_running_run_is_never_closed_under_it():
    closed: list[str] = []
    cache = ModelCache(lambda s: FakeModel(s, closed), max_models=1)
    release = asyncio.Event()

    async def run(spec: str) -> None:   # like a run: asks for its model, works, ends
        await cache.get(spec)
        await release.wait()

    first = asyncio.create_task(run("a"))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(run("b"))   # "a" is in use: both stay loaded, over the bound
    await asyncio.sleep(0.05)
    assert closed == [] and cache.loaded == ["a", "b"]
    release.set()
    await asyncio.gather(first, second)
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert closed == ["a"] and cache.loaded == ["b"]   # back within the bound once the runs ended
    await cache.aclose()


# -- in a real browser -----------------------------------------------------------------------------
try:
    from test_e2e import ask, chromium, done, free_port, needs_chromium
except Exception:  # selenium missing: the browser tests skip
    needs_chromium = pytest.mark.skip(reason="the browser test needs selenium (dev extra)")


@pytest.fixture
def token_server(tmp_path):
    import uvicorn

    steps = [call("execute_code", comment="Count.", code="import pandas as pd\nlen(pd.read_csv('sales.csv'))"),
             call("final_answer", answer="@rows[240]")]
    config = UIConfig(runs=RunsConfig(runs_dir=tmp_path / "runs"), reports=ReportsConfig(root=tmp_path / "eval"),
                      token=TOKEN)
    manager = RunManager(config.runs, load_model=lambda spec: ScriptedModel(list(steps), name=spec))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(config, manager), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)


@needs_chromium
def test_the_page_works_with_a_token_and_shows_isolation(token_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium(tmp_path / "profile") as d:
        d.get(token_server + "/")
        assert "needs its token" in d.find_element(By.TAG_NAME, "body").text
        d.get(f"{token_server}/?token={TOKEN}")   # the URL the server printed; redirected to the page
        WebDriverWait(d, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        assert d.current_url == token_server + "/"
        ask(d, token_server, "How many rows?", max_turns=4)   # upload, POST, event stream: all with the cookie
        WebDriverWait(d, 120).until(lambda d: done(d))
        assert done(d) == "answered"
        assert "240" in d.find_element(By.CSS_SELECTOR, "#notebook .cell .outputs").text
        link = d.find_element(By.ID, "download-notebook").get_attribute("href")
        assert d.execute_script("return fetch(arguments[0]).then(r => r.status)", link) == 200
        # the badge, as the page draws it from a run record's "isolation"
        shown = d.execute_script(
            "return [isolationBadge({isolation: {isolated: false, mode: 'off'}}),"
            "        isolationBadge({isolation: {isolated: true, mode: 'require', backend: 'local'}}),"
            "        isolationBadge({})]"
            ".map(b => b && [b.textContent, b.className, b.title])")
        assert shown[0][0] == "NOT isolated" and "not-isolated" in shown[0][1] and "WITHOUT" in shown[0][2]
        assert shown[1][0] == "isolated" and "mode: require" in shown[1][2]
        assert shown[2] is None


def test_the_isolation_check_at_start_is_real(monkeypatch):
    """`_isolation_problem` starts a real kernel with sandbox "require": None where it is isolated,
    the reason where it cannot be."""
    import shutil

    from notebook_agent.kernel import sandbox
    from notebook_agent.ui.cli import _isolation_problem

    if shutil.which("bwrap") is None:
        assert "bubblewrap" in _isolation_problem("local")
        return
    assert _isolation_problem("local") is None
    if not hasattr(sandbox, "bwrap_path"):
        pytest.skip("the kernel's sandbox no longer has bwrap_path to hide")
    monkeypatch.setattr(sandbox, "bwrap_path", lambda *a, **k: None)
    assert "bubblewrap" in _isolation_problem("local")
