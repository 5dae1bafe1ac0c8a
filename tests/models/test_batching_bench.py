"""`benchmarks/batching.py --models`: weight files compared in one run, each in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "batching.py"


def test_models_mode_measures_each_weight_file(smollm2_path, tmp_path):
    copy = tmp_path / "smollm2-copy.gguf"
    os.symlink(smollm2_path, copy)
    p = subprocess.run([sys.executable, str(BENCH), "--models", f"{smollm2_path},{copy}", "--levels", "1,2",
                        "--max-tokens", "4", "--repeats", "1", "--prompt-words", "100"],
                       check=False, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    variants = summary["variants"]
    assert set(variants) == {smollm2_path.name, copy.name}
    for v in variants.values():
        assert set(v["decode"]) == {"1", "2"} and all(x > 0 for x in v["decode"].values()) and v["prompt"] > 0
    assert variants[copy.name]["model"] == str(copy)

    same = subprocess.run([sys.executable, str(BENCH), "--models", f"{smollm2_path},{smollm2_path}"],
                          check=False, capture_output=True, text=True, timeout=60)
    assert same.returncode != 0 and "share a label" in same.stderr
