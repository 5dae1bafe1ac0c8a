"""The notebook runtime: live, sandboxed kernels that run an agent's cells.

    from notebook_agent.kernel import make_session
    async with make_session("local", files=["data.csv"]) as s:
        r = await s.execute("import pandas as pd; pd.read_csv('data.csv').shape", timeout=30)
        print(r.status, r.text)

Backends: "local" (ipykernel via jupyter_client), "forking" (our IPython worker that forks
cheaply, for tree search), "remote" (a Jupyter Server or Kernel Gateway over HTTP/websocket).
Backends are imported lazily so that a kernel worker importing this package stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (SANDBOX_MODES, ExecStatus, ExecutionResult, KernelDiedError, KernelError, KernelSession,
                   Limits, SandboxMode, TextViewConfig)
from .textview import text_view

if TYPE_CHECKING:
    from .forking import ForkingKernelSession
    from .local import LocalKernelSession
    from .pool import KernelPool
    from .remote import RemoteKernelSession

_LAZY = {"LocalKernelSession": ".local", "ForkingKernelSession": ".forking",
         "RemoteKernelSession": ".remote", "KernelPool": ".pool"}

__all__ = ["SANDBOX_MODES", "SandboxMode", "ExecStatus", "ExecutionResult", "KernelDiedError", "KernelError", "KernelSession",
           "Limits", "TextViewConfig", "text_view", "make_session",
           "LocalKernelSession", "ForkingKernelSession", "RemoteKernelSession", "KernelPool"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_session(backend: str = "local", **kwargs: Any) -> KernelSession:
    """A (not yet started) session of the given backend: "local", "forking" or "remote".

    Keyword arguments go to the backend's constructor (files, workdir, limits, text_view,
    startup_code, ...; `base_url` and `token` for "remote").
    """
    if backend == "local":
        from .local import LocalKernelSession
        return LocalKernelSession(**kwargs)
    if backend == "forking":
        from .forking import ForkingKernelSession
        return ForkingKernelSession(**kwargs)
    if backend == "remote":
        from .remote import RemoteKernelSession
        return RemoteKernelSession(**kwargs)
    raise ValueError(f"unknown kernel backend {backend!r}: use 'local', 'forking' or 'remote'")
