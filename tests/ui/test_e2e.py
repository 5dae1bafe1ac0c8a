"""The page end to end in a real headless Chromium: upload a CSV, ask SmolLM2, watch, download.

The server is `notebook-agent ui` in a subprocess on a free loopback port; the model is the real
SmolLM2-135M through llama.cpp; the kernel a real ipykernel. Set NOTEBOOK_AGENT_UI_SCREENSHOT
to a path to keep the mid-run screenshot (docs/screenshot-ui.png is made that way).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest

pytest.importorskip("fastapi", reason="the web page needs the `ui` extra")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (dev extra)")
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SALES = Path(__file__).resolve().parents[2] / "examples" / "sales.csv"
needs_chromium = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="needs Debian's chromium and chromium-driver (scripts/test installs them as root)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ui_server(workdir: Path, model: str, *extra: str) -> Iterator[str]:
    """`notebook-agent ui` on a free loopback port in a subprocess; yields its base URL."""
    port = free_port()
    log = (workdir / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "notebook_agent.cli", "ui", "--host", "127.0.0.1", "--port", str(port),
         "--runs-dir", str(workdir / "runs"), "--model", model, *extra],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/api/config", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start:\n" + (workdir / "server.log").read_text())
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def chromium(profile_dir: Path) -> Iterator[Any]:
    """Headless Debian chromium through its chromedriver (no network, a fresh profile), 1280x900."""
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={profile_dir}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(1280, 900)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(1280 + 1280 - inner[0], 900 + 900 - inner[1])  # a 1280x900 viewport
    try:
        yield driver
    finally:
        driver.quit()


def ask(d, base_url: str, question: str, max_turns: int) -> str:
    """Open the page, upload sales.csv, ask; returns the run id."""
    d.get(base_url + "/")
    WebDriverWait(d, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    d.find_element(By.ID, "files").send_keys(str(SALES))
    d.find_element(By.ID, "question").send_keys(question)
    turns = d.find_element(By.ID, "max-turns")
    turns.clear()
    turns.send_keys(str(max_turns))
    d.find_element(By.ID, "run").click()
    WebDriverWait(d, 30).until(lambda d: d.execute_script("return location.hash").startswith("#run/"))
    return d.execute_script("return location.hash").split("/")[1]


def watch(d, shot: Path, timeout_s: float) -> None:
    """Wait for the run to end, saving a screenshot when the first cell has its outputs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done(d):
        if not shot.exists() and d.find_elements(By.CSS_SELECTOR, ".cell:not(.running) .outputs > *"):
            d.save_screenshot(str(shot))
        time.sleep(0.2)


def done(d) -> str | None:
    """The run's final status once the page shows its end, else None."""
    return d.find_element(By.TAG_NAME, "body").get_attribute("data-run-done")


@pytest.fixture
def server(tmp_path, smollm2_path):
    with ui_server(tmp_path, str(smollm2_path), "--max-turns", "4", "--max-tokens-per-turn", "256",
                   "--max-wall", "240") as url:
        yield url


@pytest.fixture
def browser(tmp_path):
    with chromium(tmp_path / "chrome-profile") as driver:
        yield driver


@pytest.mark.slow
@needs_chromium
def test_upload_ask_watch_and_download(server, browser, tmp_path):
    d = browser
    # SmolLM2 answers this phrasing with a python block (run as a cell) within its first reply.
    run_id = ask(d, server, "Use pandas to read sales.csv and print df.shape.", max_turns=4)
    assert d.find_element(By.ID, "model").get_attribute("value").endswith(".gguf")  # the --model default
    assert not d.find_element(By.ID, "stop").get_property("disabled") or done(d)
    shot = tmp_path / "mid-run.png"
    watch(d, shot, timeout_s=300)
    assert done(d), "the run did not finish in 300 s"
    status = done(d)

    traj = httpx.get(f"{server}/api/runs/{run_id}/trajectory.json", timeout=10).json()
    assert traj["status"] == status
    assert traj["turns"] >= 1 and traj["completion_tokens"] > 0  # the real model wrote something
    steps = traj["steps"]
    cells = d.find_elements(By.CSS_SELECTOR, "#notebook .cell")
    # every executed step is on the page as a code cell with its outputs, errors styled as errors
    assert len(cells) == len(steps)
    for cell, step in zip(cells, steps):
        code = cell.find_element(By.CSS_SELECTOR, "pre.code").text
        assert code.strip() == step["result"]["code"].strip()
        shown = cell.find_elements(By.CSS_SELECTOR, ".outputs > *")
        assert len(shown) >= len(step["result"]["outputs"])
        if step["result"]["status"] == "error":
            assert "failed" in cell.get_attribute("class")
            assert cell.find_elements(By.CSS_SELECTOR, ".outputs pre.error")
    if steps:
        assert shot.exists(), "cells were produced but never seen with their outputs while watching"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        keep = os.environ.get("NOTEBOOK_AGENT_UI_SCREENSHOT")
        if keep:
            shutil.copy(shot, keep)
    assert d.find_element(By.CSS_SELECTOR, "#notebook .end").text.startswith(f"Run ended: {status}")

    # the download links point at the API; the notebook they give is valid
    link = d.find_element(By.ID, "download-notebook").get_attribute("href")
    assert link == f"{server}/api/runs/{run_id}/notebook.ipynb"
    r = httpx.get(link, timeout=10)
    assert r.status_code == 200
    assert "attachment" in r.headers["content-disposition"]
    nb = nbformat.reads(r.text, as_version=4)
    nbformat.validate(nb)
    assert sum(c.cell_type == "code" for c in nb.cells) == len(steps)
    assert d.find_element(By.ID, "download-trajectory").get_attribute("href").endswith("/trajectory.json")

    # the run is in the list of past runs, and it replays from disk in a fresh page
    WebDriverWait(d, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#runs li[data-id='{run_id}']"))
    d.get(f"{server}/?replay#run/{run_id}")  # a new URL: a fresh page load
    WebDriverWait(d, 20).until(lambda d: done(d))
    assert d.find_element(By.ID, "run-question").text.startswith("Use pandas")
    assert len(d.find_elements(By.CSS_SELECTOR, "#notebook .cell")) == len(steps)
    runs = httpx.get(f"{server}/api/runs", timeout=10).json()
    assert runs[0]["id"] == run_id and runs[0]["status"] == status and runs[0]["cells"] == len(steps)
