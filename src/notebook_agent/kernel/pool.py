"""A warm pool of started sessions, so a new task does not wait for a kernel to start.

    pool = KernelPool.for_backend("local", size=2)
    await pool.start()
    session = await pool.acquire(files=["data.csv"])   # ready, pandas/numpy already imported
    ...
    await session.close()                              # the caller owns acquired sessions
    await pool.close()

Each acquired session is replaced in the background. Sessions are created by a factory, so any
backend (and any limits or sandbox options) can be pooled.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Sequence

from .base import KernelError, KernelSession
from .workspace import PathLike, check_files, place_files

log = logging.getLogger(__name__)

WARM_IMPORTS = "import numpy as np\nimport pandas as pd\nimport matplotlib\nimport matplotlib.pyplot as plt"


class KernelPool:
    """Keeps `size` started sessions ready. `factory()` returns a new, unstarted session."""

    def __init__(self, factory: Callable[[], KernelSession], size: int = 2, max_failures: int = 3) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.factory = factory
        self.size = size
        self.max_failures = max_failures
        self._ready: asyncio.Queue[KernelSession | BaseException] = asyncio.Queue()
        self._starting: set[asyncio.Task[None]] = set()
        self._failures = 0
        self._closed = False

    @classmethod
    def for_backend(cls, backend: str = "local", size: int = 2, **session_kwargs: Any) -> "KernelPool":
        """A pool of `make_session(backend, ...)` sessions with numpy, pandas and pyplot imported."""
        from . import make_session

        session_kwargs.setdefault("startup_code", WARM_IMPORTS)
        return cls(lambda: make_session(backend, **session_kwargs), size)

    async def start(self) -> None:
        """Begin filling the pool (returns at once; `wait_ready()` waits for it to be full)."""
        for _ in range(self.size - self._ready.qsize() - len(self._starting)):
            self._spawn()

    def _spawn(self) -> None:
        task = asyncio.get_running_loop().create_task(self._start_one())
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _start_one(self) -> None:
        session = self.factory()
        try:
            await session.start()
        except asyncio.CancelledError:
            await session.close()
            raise
        except Exception as exc:  # noqa: BLE001 - reported to whoever waits in acquire()
            await session.close()
            self._failures += 1
            log.warning("pool: a kernel failed to start (%s)", exc)
            if self._failures >= self.max_failures:
                self._ready.put_nowait(KernelError(f"kernels keep failing to start: {exc}"))
            elif not self._closed:
                self._spawn()
            return
        if self._closed:
            await session.close()
            return
        self._failures = 0
        self._ready.put_nowait(session)

    @property
    def ready(self) -> int:
        """How many started sessions are waiting."""
        return self._ready.qsize()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the pool holds `size` started sessions."""
        async def _wait() -> None:
            while self._ready.qsize() < self.size:
                if not self._starting:
                    await self.start()
                await asyncio.sleep(0.02)
        await asyncio.wait_for(_wait(), timeout)

    async def acquire(self, files: Sequence[PathLike] = ()) -> KernelSession:
        """A started session with `files` copied into its working directory."""
        if self._closed:
            raise KernelError("the pool is closed")
        paths = check_files(files)  # fail on bad input before taking a kernel
        if self._ready.empty() and not self._starting:
            self._spawn()
        while True:
            item = await self._ready.get()
            if isinstance(item, BaseException):
                self._failures = 0
                raise item
            if item.is_alive:
                break
            await item.close()  # died while waiting in the pool
            self._spawn()
        if not self._closed:
            self._spawn()  # replace it in the background
        add = getattr(item, "add_files", None)  # sandboxed sessions copy as the kernel's owner
        add(paths) if add is not None else place_files(paths, item.cwd)
        return item

    async def close(self) -> None:
        """Stop filling and close the sessions still waiting (acquired ones are the caller's)."""
        self._closed = True
        for task in list(self._starting):
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        while not self._ready.empty():
            item = self._ready.get_nowait()
            if isinstance(item, KernelSession):
                await item.close()

    async def __aenter__(self) -> "KernelPool":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
