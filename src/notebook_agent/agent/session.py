"""The one way a task's kernel session is opened and closed, for every entry point (`run`,
`search`, `eval run`, `data build`'s traces, the web page).

    async with task_session(task, SessionConfig(backend="forking", sandbox="require")) as session:
        traj = await run_agent(task, model, session, config)

The session holds copies of the task's files in its working directory, is confined as
`SessionConfig.sandbox` says, and is closed on the way out whatever happens (see
`close_session`). A session that cannot start raises `SessionStartError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from ..kernel import KernelError, KernelSession, make_session
from ..tasks.task import Task
from .config import SessionConfig

CLOSE_TIMEOUT_S = 30.0
log = logging.getLogger(__name__)


class SessionStartError(KernelError):
    """The task's kernel could not start (the message says why and what to change)."""


def new_session(task: Task, config: SessionConfig | None = None) -> KernelSession:
    """A not-yet-started session of `config` holding the task's files."""
    config = config or SessionConfig()
    return make_session(config.backend, files=list(task.files), limits=config.limits, sandbox=config.sandbox,
                        **config.options)


async def close_session(session: KernelSession) -> None:
    """Close a session within CLOSE_TIMEOUT_S. A failure to close is logged, never raised over
    the task's outcome; cancelled while closing, it finishes closing (no kernel may outlive its
    run) and then goes on being cancelled."""
    try:
        await asyncio.wait_for(session.close(), CLOSE_TIMEOUT_S)
    except asyncio.CancelledError:
        try:
            await asyncio.wait_for(session.close(), CLOSE_TIMEOUT_S)
        except BaseException:  # noqa: BLE001
            pass
        raise
    except Exception as e:
        log.warning("closing a kernel session failed: %r", e)


@contextlib.asynccontextmanager
async def task_session(task: Task, config: SessionConfig | None = None, *,
                       session: KernelSession | None = None) -> AsyncIterator[KernelSession]:
    """A started session for `task` (or the given not-yet-started `session`, for callers with
    their own kind of session), closed by `close_session` on the way out."""
    try:
        session = session if session is not None else new_session(task, config)
    except KernelError as e:  # a backend that refuses the settings outright (remote + "require")
        raise SessionStartError(f"could not start a kernel: {e}") from e
    try:
        try:
            await session.start()
        except Exception as e:  # whatever the backend raises: one kind of error for every caller
            raise SessionStartError(f"could not start a kernel: {e}") from e
        yield session
    finally:
        await close_session(session)


NO_SANDBOX_HINT = "--sandbox off runs without isolation, if you accept that"


async def check_sandbox(config: SessionConfig) -> dict:
    """Start and close one empty session of `config`; its isolation, or SessionStartError when
    it cannot start as asked (for "require": no isolation here). For commands that must not run
    a single task unconfined (`eval run`), before they start."""
    async with task_session(Task(id="sandbox-check", question=""), config) as session:
        isolation = dict(session.isolation)
    if config.sandbox == "require" and not isolation.get("isolated"):
        raise SessionStartError(f"sandbox 'require': the kernel is not isolated here ({NO_SANDBOX_HINT})")
    return isolation


def start_error_message(error: Exception) -> str:
    """A start failure's message, naming `--sandbox off` when isolation was the cause."""
    text = str(error)
    if "sandbox" in text and "--sandbox off" not in text:
        text += f" ({NO_SANDBOX_HINT})"
    return text
