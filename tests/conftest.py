"""Shared fixtures. Keep this small: areas put their own fixtures in their own folders."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct GGUF, pulled through the model registry (once per machine) into
    $NOTEBOOK_AGENT_HOME/models (default ~/.cache/notebook-agent/models)."""
    from notebook_agent.models import registry

    return registry.pull("smollm2-135m", progress=False)
