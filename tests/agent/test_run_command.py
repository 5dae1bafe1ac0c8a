"""`notebook-agent run`: clear one-line errors, and a real run with SmolLM2 through llama.cpp."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
SALES = ROOT / "examples" / "sales.csv"


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "notebook_agent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "120"})


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr  # progress lines may come before it
    return errors[0]


def test_missing_file_is_a_one_line_error(tmp_path):
    line = one_line_error(cli("run", str(tmp_path / "nope.csv"), "How many rows?"))
    assert "file not found" in line and "nope.csv" in line


def test_unreadable_file_is_a_one_line_error(tmp_path):
    d = tmp_path / "adir.csv"
    d.mkdir()
    assert "not a regular file" in one_line_error(cli("run", str(d), "How many rows?"))


def test_unknown_model_is_a_one_line_error():
    line = one_line_error(cli("run", str(SALES), "How many rows?", "--model", "no-such-model-xyz"))
    assert "no-such-model-xyz" in line


def test_model_server_down_is_a_one_line_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = one_line_error(cli("run", str(SALES), "How many rows?", "--model", f"http://127.0.0.1:{port}/v1#m",
                              "--max-turns", "1"))
    assert f"127.0.0.1:{port}" in line


@pytest.mark.slow
def test_real_run_with_smollm2_writes_a_valid_notebook(tmp_path, smollm2_path):
    out = tmp_path / "run"
    proc = cli("run", str(SALES), "How many rows does the table have?", "--model", str(smollm2_path),
               "--out", str(out), "--max-turns", "4", "--max-wall", "240")
    assert proc.returncode in (0, 1), proc.stderr  # answered or stopped at a limit: both are valid runs
    nb = nbformat.read(out / "notebook.ipynb", as_version=4)
    nbformat.validate(nb)
    traj = json.loads((out / "trajectory.json").read_text())
    assert traj["turns"] >= 1 and traj["completion_tokens"] > 0
    assert traj["messages"][1]["role"] == "user" and "sales.csv" in traj["messages"][1]["content"]
    assert (out / "sales.csv").exists()
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code_cells) == len(traj["steps"])
    assert "step 1" in proc.stderr  # live view of the steps
