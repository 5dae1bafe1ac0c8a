"""How the page shows real kernel outputs in headless Chromium: tables, images, errors, hostile HTML.

The server runs in-process (uvicorn in a thread) with a real kernel; a ScriptedModel plays the
agent's steps so that every kind of output appears, quickly and always. Hostile HTML from the
kernel and hostile text from the model must not run or become markup in the page.
"""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the web page needs the `ui` extra")
pytest.importorskip("selenium", reason="the browser test needs selenium (dev extra)")
import uvicorn
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from test_e2e import ask, chromium, done, free_port, needs_chromium

from notebook_agent.models.scripted import ScriptedModel, call
from notebook_agent.ui.reports import ReportsConfig
from notebook_agent.ui.runs import RunManager, RunsConfig
from notebook_agent.ui.server import UIConfig, create_app

HOSTILE = "<img src=x onerror=\"window.top.document.title='pwned'\"><script>window.top.document.title='pwned'</script>"
STEPS = [
    call("execute_code", comment=f"Load the table. {HOSTILE}", code="import pandas as pd\ndf = pd.read_csv('sales.csv')\ndf.head(3)"),
    call("execute_code", comment="Plot units by region.",
         code="import matplotlib.pyplot as plt\ndf.groupby('region').units.sum().plot.bar()\nplt.show()"),
    call("execute_code", comment="Hostile output.",
         code=f"from IPython.display import HTML, display\ndisplay(HTML({HOSTILE!r} + '<b id=\"inside\">bold</b>'))"),
    call("execute_code", comment="A failing cell.", code="df['nope']"),
    call("final_answer", answer="@rows[240] <b>not bold</b>"),
]


SLOW = [call("execute_code", comment="Wait.", code="import time; time.sleep(4); print('waited')")] * 8


@pytest.fixture
def server(tmp_path, request):
    steps = getattr(request, "param", STEPS)
    config = UIConfig(runs=RunsConfig(runs_dir=tmp_path / "runs"), reports=ReportsConfig(root=tmp_path / "eval"))
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
def test_outputs_are_shown_safely(server, tmp_path):
    with chromium(tmp_path / "profile") as d:
        ask(d, server, "Show me everything", max_turns=8)
        WebDriverWait(d, 120).until(lambda d: done(d))
        assert done(d) == "answered"
        assert d.title == "notebook-agent"  # nothing from the model or the kernel ran in the page
        notebook = d.find_element(By.ID, "notebook")
        assert not notebook.find_elements(By.CSS_SELECTOR, "script, img[onerror], b")
        assert HOSTILE in notebook.find_element(By.CSS_SELECTOR, ".comment").text  # the model's text, as text
        cells = notebook.find_elements(By.CSS_SELECTOR, ".cell")
        assert len(cells) == 4

        # 1: the DataFrame's HTML table, in a sandboxed iframe without scripts
        frame = cells[0].find_element(By.CSS_SELECTOR, ".outputs iframe")
        assert frame.get_attribute("sandbox") == "allow-same-origin"
        d.switch_to.frame(frame)
        assert len(d.find_elements(By.CSS_SELECTOR, "table tbody tr")) == 3
        d.switch_to.default_content()
        # 2: the figure as a data: URL image that really decodes
        img = cells[1].find_element(By.CSS_SELECTOR, ".outputs img")
        assert img.get_attribute("src").startswith("data:image/png;base64,")
        assert d.execute_script("return arguments[0].naturalWidth", img) > 100
        # 3: hostile HTML stays in its sandbox; its script and onerror did not run
        frame = cells[2].find_element(By.CSS_SELECTOR, ".outputs iframe")
        d.switch_to.frame(frame)
        assert d.find_element(By.ID, "inside").text == "bold"
        d.switch_to.default_content()
        time.sleep(0.5)
        assert d.title == "notebook-agent"
        # 4: the error, styled as one
        assert "failed" in cells[3].get_attribute("class")
        assert "KeyError" in cells[3].find_element(By.CSS_SELECTOR, "pre.error").text
        # the answer is text, not markup
        assert d.find_element(By.CSS_SELECTOR, ".answer div").text == "@rows[240] <b>not bold</b>"


@needs_chromium
@pytest.mark.parametrize("server", [SLOW], indirect=True)
def test_stop_button_ends_the_run_after_the_running_cell(server, tmp_path):
    with chromium(tmp_path / "profile") as d:
        ask(d, server, "Wait a lot", max_turns=8)
        WebDriverWait(d, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".cell.running"))
        d.find_element(By.ID, "stop").click()
        WebDriverWait(d, 10).until(lambda d: "a cell is running" in d.find_element(By.ID, "form-message").text)
        WebDriverWait(d, 60).until(lambda d: done(d))
        assert done(d) == "cancelled"
        cells = d.find_elements(By.CSS_SELECTOR, "#notebook .cell")
        assert len(cells) == 1 and "waited" in cells[0].find_element(By.CSS_SELECTOR, ".outputs").text
        assert "Stop requested" in d.find_element(By.CSS_SELECTOR, "#notebook .notice").text
        assert d.find_element(By.ID, "download-notebook").is_displayed()
        assert not d.find_element(By.ID, "run").get_property("disabled")
