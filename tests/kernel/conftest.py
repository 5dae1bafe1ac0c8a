"""Fixtures for the runtime's tests: real kernels of each local backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

from notebook_agent.kernel import KernelSession, Limits, make_session

BACKENDS = ["local", "forking"]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    f = tmp_path / "input" / "data.csv"
    f.parent.mkdir()
    f.write_text("a,b\n1,2\n3,4\n")
    return f


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def make(backend: str) -> AsyncIterator[Callable[..., Any]]:
    """A factory of started sessions of the current backend; all are closed after the test."""
    sessions: list[KernelSession] = []

    async def _make(**kw: Any) -> KernelSession:
        kw.setdefault("limits", Limits(memory_mb=2048, interrupt_grace_s=1.0))
        s = make_session(backend, **kw)
        sessions.append(s)
        await s.start()
        return s

    yield _make
    for s in sessions:
        await s.close()
