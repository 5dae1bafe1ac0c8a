"""The web page's HTTP API (FastAPI): uploads, runs with live events (SSE), downloads, reports.

`create_app(config)` builds the app; `notebook-agent ui` serves it with uvicorn. Every path
under the run and report roots is derived from checked ids and names, never from raw input.
Every request passes `security.Guard` first (Host, Origin, the token when there is one); a run
may only use a model of the registry or one the operator allowed (`UIConfig.allowed_models`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from .reports import SERVED_EXTENSIONS, ReportsConfig, list_reports, report, report_dir, safe_child
from .runs import RunManager, RunsConfig, TooManyRuns
from .security import AccessPolicy, Guard
from .uploads import ALLOWED_EXTENSIONS, StorageBudget, UploadRejected, check_name, receive_files

STATIC = Path(__file__).parent / "static"
BATCH_ID = re.compile(r"[0-9a-f]{32}")
# Model and kernel output is shown in sandboxed iframes; this policy is a second fence:
# no script but ours, no network but this server, images from here or data: URLs.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; frame-src 'self' about:; connect-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'self'")


@dataclass
class UIConfig:
    runs: RunsConfig = field(default_factory=RunsConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    max_upload_mb: float = 50.0        # one upload request (all its files together)
    max_files_per_upload: int = 20     # files in one upload request
    max_upload_storage_mb: float = 2048.0   # all kept uploads together (the uploads directory)
    upload_keep_s: float = 3600.0      # at the storage limit, batches idle this long make room first
    # Who may call: the address the server listens on (for the Host check), names also accepted
    # as Host, and the token every request must carry (None: no token, for loopback).
    host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    token: str | None = None
    # Model specs a run may use besides the registry's names and the default model.
    allowed_models: tuple[str, ...] = ()
    sse_keepalive_s: float = 15.0

    @property
    def uploads_dir(self) -> Path:
        return self.runs.root / "_uploads"


class RunRequest(BaseModel):
    question: str = Field(max_length=20_000)
    files: list[str] = Field(default_factory=list, max_length=32)   # ids from POST /api/files
    model: str | None = Field(default=None, max_length=2000)
    max_turns: int | None = Field(default=None, ge=1)


class SecurityHeaders:
    """Adds the CSP and friends to every response (plain ASGI: event streams pass untouched)."""

    HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"no-referrer")]

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _sse(event: dict[str, Any] | None) -> str:
    if event is None:
        return ": keep-alive\n\n"
    return f"id: {event['seq']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"


def create_app(config: UIConfig | None = None, manager: RunManager | None = None) -> FastAPI:
    config = config or UIConfig()
    manager = manager or RunManager(config.runs)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await manager.shutdown()

    app = FastAPI(title="notebook-agent", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config, app.state.manager = config, manager
    # Set when the server is asked to stop: event streams end so that shutdown need not wait for them.
    app.state.closing = asyncio.Event()

    app.add_middleware(Guard, policy=AccessPolicy(config.host, config.token, tuple(config.allowed_hosts)))
    app.add_middleware(SecurityHeaders)   # outermost: refusals carry the headers too
    storage = StorageBudget(config.uploads_dir, int(config.max_upload_storage_mb * 2**20), config.upload_keep_s)

    def default_model() -> str:
        try:
            return manager.default_model()
        except Exception:  # the models package may not know a default
            return ""

    def allowed_models() -> list[str]:
        """Registry names, the operator's --allow-model specs and the default model."""
        names = set(_known_models()) | {m.strip() for m in config.allowed_models if m.strip()}
        if default_model():
            names.add(default_model())
        return sorted(names)

    @app.exception_handler(UploadRejected)
    async def rejected(request: Request, exc: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    # -- the page ----------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/config")
    async def ui_config() -> dict[str, Any]:
        return {"default_model": default_model(), "max_upload_mb": config.max_upload_mb,
                "max_files_per_upload": config.max_files_per_upload,
                "allowed_types": ["." + e for e in ALLOWED_EXTENSIONS], "models": allowed_models(),
                "max_turns": config.runs.agent.max_turns, "max_turns_limit": config.runs.max_turns_limit}

    # -- uploads -----------------------------------------------------------------------------
    @app.post("/api/files")
    async def upload(request: Request) -> dict[str, Any]:
        batch = uuid.uuid4().hex
        stored = await receive_files(request.headers.get("content-type"), request.headers.get("content-length"),
                                     request.stream(), config.uploads_dir / batch,
                                     int(config.max_upload_mb * 2**20), config.max_files_per_upload, storage)
        return {"upload": batch, "files": [{"id": f"{batch}/{f.name}", "name": f.name, "size": f.size}
                                           for f in stored]}

    def staged(file_id: str) -> Path:
        batch, _, name = file_id.partition("/")
        if not BATCH_ID.fullmatch(batch):
            raise HTTPException(400, f"unknown file id {file_id[:80]!r}")
        name = check_name(name)
        path = config.uploads_dir / batch / name
        if not path.is_file():
            raise HTTPException(400, f"unknown file id {file_id[:80]!r}: upload it first")
        with contextlib.suppress(OSError):  # used now: not idle, so not removed to make room
            os.utime(path.parent)
        return path

    # -- runs --------------------------------------------------------------------------------
    @app.post("/api/runs", status_code=201)
    async def start_run(req: RunRequest) -> dict[str, Any]:
        question = req.question.strip()
        if not question:
            raise HTTPException(400, "the question is empty")
        files = [staged(f) for f in req.files]
        names = [p.name for p in files]
        if len(set(names)) != len(names):
            raise HTTPException(400, "two files share a name; the kernel's working directory holds files by name")
        spec = (req.model or "").strip() or default_model()
        if spec not in allowed_models():
            shown = ascii(spec)[1:-1][:200]
            raise HTTPException(403, f"model {shown!r} is not allowed here: use a model of the registry "
                                "(`notebook-agent models list`), or ask the operator to start the server "
                                f"with --allow-model '{shown}'")
        try:
            run = await manager.start(question, files, spec, req.max_turns)
        except TooManyRuns as e:
            raise HTTPException(429, str(e)) from None
        return {"id": run.record.id, "record": run.record.to_dict()}

    @app.get("/api/runs")
    async def runs() -> list[dict[str, Any]]:
        return manager.list()

    def get_run(run_id: str):
        run = manager.get(run_id)
        if run is None:
            raise HTTPException(404, "no such run")
        return run

    @app.get("/api/runs/{run_id}")
    async def run_record(run_id: str) -> dict[str, Any]:
        return get_run(run_id).record.to_dict()

    @app.get("/api/runs/{run_id}/events")
    async def events(run_id: str, request: Request) -> StreamingResponse:
        run = get_run(run_id)
        last = request.headers.get("last-event-id", "")
        after = int(last) if last.isdigit() else -1

        async def stream():
            async for event in run.follow(after, idle_s=config.sse_keepalive_s, until=app.state.closing):
                yield _sse(event)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/api/runs/{run_id}/stop")
    async def stop(run_id: str) -> dict[str, Any]:
        get_run(run_id)
        return {"message": manager.stop(run_id)}

    def run_file(run_id: str, name: str, media_type: str) -> FileResponse:
        run = get_run(run_id)
        path = run.dir / name
        if not path.is_file():
            status = 409 if not run.record.finished else 404
            why = f"{name} is written when the run ends" if status == 409 else f"this run has no {name}"
            raise HTTPException(status, why)
        stem, ext = name.rsplit(".", 1)
        return FileResponse(path, media_type=media_type, filename=f"{stem}-{run_id[:8]}.{ext}")

    @app.get("/api/runs/{run_id}/notebook.ipynb")
    async def notebook(run_id: str) -> FileResponse:
        return run_file(run_id, "notebook.ipynb", "application/x-ipynb+json")

    @app.get("/api/runs/{run_id}/trajectory.json")
    async def trajectory(run_id: str) -> FileResponse:
        return run_file(run_id, "trajectory.json", "application/json")

    # -- evaluation reports ------------------------------------------------------------------------
    @app.get("/api/reports")
    async def reports() -> dict[str, Any]:
        return {"root": str(config.reports.root),
                "reports": list_reports(config.reports.root, config.reports.max_depth)}

    # report names may hold one '/', so the file route comes first
    @app.get("/api/reports/{name:path}/files/{file}")
    async def report_file(name: str, file: str) -> Response:
        d = report_dir(config.reports.root, name, config.reports.max_depth)
        path = safe_child(d, file) if d is not None else None
        if path is None or not path.is_file() or path.suffix.lower() not in SERVED_EXTENSIONS:
            raise HTTPException(404, "no such file")
        media = "text/plain; charset=utf-8" if path.suffix.lower() in (".md", ".jsonl", ".csv") else None
        return FileResponse(path, media_type=media)

    @app.get("/api/reports/{name:path}")
    async def one_report(name: str) -> dict[str, Any]:
        found = report(config.reports.root, name, "/api/reports/{name}/files/{file}", config.reports.max_depth)
        if found is None:
            raise HTTPException(404, "no such report")
        return found

    return app


def _known_models() -> list[str]:
    """Registry names for the model field's suggestions (empty when the registry is unavailable)."""
    try:
        from ..models.registry import known_models

        return sorted(known_models())
    except Exception:  # the page works without suggestions
        return []
