"""Where the shared benchmark data is: $NOTEBOOK_AGENT_DABENCH_DEV, else `shared/` beside the
checkout, else the workplace's /work/shared (a checkout elsewhere, e.g. under /tmp, still finds it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _dabench_dev() -> Path:
    if "NOTEBOOK_AGENT_DABENCH_DEV" in os.environ:
        return Path(os.environ["NOTEBOOK_AGENT_DABENCH_DEV"])
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "dabench-dev",
                  Path("/work/shared/benchmarks/dabench-dev")]
    return next((c for c in candidates if (c / "labels.jsonl").exists()), candidates[0])


DABENCH_DEV = _dabench_dev()
needs_dabench_dev = pytest.mark.skipif(not (DABENCH_DEV / "labels.jsonl").exists(),
                                       reason=f"dabench-dev data not present at {DABENCH_DEV}")
