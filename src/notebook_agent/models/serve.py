"""Any `ChatModel` behind an OpenAI-compatible chat endpoint (`notebook-agent serve MODEL`).

`make_app(model, name)` is a Starlette app with GET /v1/models, GET /health and POST
/v1/chat/completions. A request becomes one `model.complete(...)` call: OpenAI's fields map
to `SamplingParams`, and `tool_choice` to constrained tool calls (models/constrain.py):

- "required" or a named function: always constrained (OpenAI promises a call);
- "auto" (the default when tools are offered): constrained to text or one valid call, unless
  the app was made with `constrain=False` (`--no-constrain`);
- "none" (the default without tools): the tools are not offered.

Requests are not queued here: each awaits the model, which bounds its own concurrency
(llama.cpp decodes one request at a time, or `n_seq` at once where it batches).

`stream=true` is answered once the reply is complete, as server-sent events: one chunk per
choice with its content and tool calls, one with its finish reason, then `data: [DONE]`.
OpenAI clients read it as a stream that arrives all at once.

Raw grammar fields (`grammar`, `structured_outputs`, `guided_*`, `ebnf`, ...) are refused
with 400: the constraint is built here from `tools`, and a ChatModel takes no foreign
grammar. `OpenAICompatModel` with its default `native` codec sends `tools` and `tool_choice`,
which are honoured; with a text codec it is sent no such field (`owned_by` is
"notebook-agent", a server it knows no grammar field for).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .base import ChatModel, Completion, Message, ModelError, SamplingParams, ToolSpec
from .codecs.tools import functions

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_N = 16
OWNED_BY = "notebook-agent"
ROLES = ("system", "developer", "user", "assistant", "tool")
GRAMMAR_FIELDS = ("grammar", "ebnf", "regex", "json_schema", "structured_outputs", "guided_grammar", "guided_json",
                  "guided_regex", "guided_choice")
TOOL_CHOICE_FORMS = "'none', 'auto', 'required' or {\"type\": \"function\", \"function\": {\"name\": NAME}}"


class ApiError(Exception):
    """A request this server cannot answer, as an OpenAI-style error."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.code, self.param, self.headers = status, type_, code, param, headers

    def response(self) -> JSONResponse:
        error = {"message": str(self), "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


def model_error(e: ModelError) -> ApiError:
    """A backend's failure: 503 when trying again may help (the client retries), else 400 (the
    request itself is the problem, e.g. a prompt longer than the context window)."""
    if e.retryable or (e.status or 0) >= 500:
        return ApiError(503, str(e), "server_error", "model_unavailable", headers={"Retry-After": "1"})
    return ApiError(400, str(e), "invalid_request_error", "model_error")


@dataclass
class ChatRequest:
    messages: list[Message]
    tools: list[ToolSpec] | None
    params: SamplingParams
    stream: bool = False
    include_usage: bool = False


def parse_chat(body: Any, name: str, constrain_auto: bool, default_max_tokens: int) -> ChatRequest:
    """An OpenAI chat request -> what `ChatModel.complete` takes; ApiError if it is malformed."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    if body.get("model") not in (None, name):
        raise ApiError(404, f"model {body['model']!r} is not served here; this server serves {name!r}",
                       code="model_not_found", param="model")
    for key in GRAMMAR_FIELDS:
        if body.get(key) is not None:
            raise ApiError(400, f"'{key}' is not supported: this server constrains tool calls itself; send 'tools' "
                           "and 'tool_choice'", param=key)
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise ApiError(400, "only response_format {\"type\": \"text\"} is supported", param="response_format")
    tools = _tools(body.get("tools"))
    choice, constrain = _tool_choice(body.get("tool_choice"), tools, constrain_auto)
    max_tokens = body.get("max_completion_tokens")
    key = "max_completion_tokens" if max_tokens is not None else "max_tokens"
    params = SamplingParams(
        n=_int(body, "n", 1, 1, MAX_N),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        max_tokens=_int(body, key, default_max_tokens, 1, None),
        stop=_stop(body.get("stop")),
        seed=_int(body, "seed", None, None, None),
        logprobs=_flag(body, "logprobs"),
        constrain=constrain,
        tool_choice=choice,
    )
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest(_messages(body.get("messages")), tools if choice != "none" else None, params,
                       _flag(body, "stream"), include_usage)


def _messages(raw: Any) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list of chat messages", param="messages")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ApiError(400, f"{where} must be an object whose role is one of {', '.join(ROLES)}", param=where)
        msg: Message = {"role": "system" if m["role"] == "developer" else m["role"], "content": _text(m.get("content"), where)}
        if isinstance(m.get("name"), str):
            msg["name"] = m["name"]
        if m["role"] == "assistant" and m.get("tool_calls"):
            msg["tool_calls"] = _past_calls(m["tool_calls"], where)
        if m["role"] == "tool":
            msg["tool_call_id"] = str(m.get("tool_call_id") or "")
        out.append(msg)
    return out


def _text(content: Any, where: str) -> str:
    """Message content as text: a string, or a list of text parts joined."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        if all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            return "".join(p["text"] for p in content)
        raise ApiError(400, f"{where}.content has a part that is not text; this model reads text only", param=where)
    raise ApiError(400, f"{where}.content must be a string or a list of text parts", param=where)


def _past_calls(raw: Any, where: str) -> list[dict[str, Any]]:
    ok = isinstance(raw, list) and all(
        isinstance(tc, dict) and isinstance(tc.get("function"), dict) and isinstance(tc["function"].get("name"), str)
        and isinstance(tc["function"].get("arguments", "{}"), (str, dict)) for tc in raw)
    if not ok:
        raise ApiError(400, f"{where}.tool_calls must be a list of {{\"id\", \"type\": \"function\", \"function\": "
                       "{\"name\", \"arguments\"}}", param=where)
    return raw


def _tools(raw: Any) -> list[ToolSpec] | None:
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list):
        raise ApiError(400, "'tools' must be a list of function tools", param="tools")
    for i, t in enumerate(raw):
        fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not (isinstance(fn, dict) and isinstance(fn.get("name"), str) and isinstance(fn.get("parameters", {}), dict)):
            raise ApiError(400, f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                           "\"parameters\": {...}}}}", param=f"tools[{i}]")
    return raw


def _tool_choice(raw: Any, tools: list[ToolSpec] | None, constrain_auto: bool) -> tuple[str, bool]:
    """(SamplingParams.tool_choice or "none", whether to constrain)."""
    choice = raw if raw is not None else ("auto" if tools else "none")
    if isinstance(choice, dict):
        fn = choice.get("function") if choice.get("type") == "function" else None
        choice = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(choice, str):
            raise ApiError(400, f"tool_choice must be {TOOL_CHOICE_FORMS}", param="tool_choice")
        if choice not in functions(tools):
            raise ApiError(400, f"tool_choice names {choice!r}, which is not among the offered tools", param="tool_choice")
        return choice, True
    if choice not in ("none", "auto", "required"):
        raise ApiError(400, f"tool_choice must be {TOOL_CHOICE_FORMS}", param="tool_choice")
    if choice == "required" and not tools:
        raise ApiError(400, "tool_choice 'required' needs 'tools'", param="tool_choice")
    return choice, (choice == "required" or (choice == "auto" and constrain_auto))


def _number(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ApiError(400, f"'{key}' must be a number from {lo:g} to {hi:g}", param=key)
    return float(v)


def _int(body: dict[str, Any], key: str, default: Any, lo: int | None, hi: int | None) -> Any:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or (hi is not None and v > hi):
        bounds = f" from {lo} to {hi}" if hi is not None else f" of at least {lo}" if lo is not None else ""
        raise ApiError(400, f"'{key}' must be an integer{bounds}", param=key)
    return v


def _flag(body: dict[str, Any], key: str) -> bool:
    v = body.get(key)
    if v is not None and not isinstance(v, bool):
        raise ApiError(400, f"'{key}' must be true or false", param=key)
    return bool(v)


def _stop(raw: Any) -> list[str] | None:
    if raw is None or isinstance(raw, str):
        return [raw] if raw else None
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return [s for s in raw if s] or None
    raise ApiError(400, "'stop' must be a string or a list of strings", param="stop")


# --- replies -------------------------------------------------------------------------------


def chat_completion(completions: list[Completion], name: str, logprobs: bool) -> dict[str, Any]:
    """The chat.completion object of `completions` (usage as OpenAI counts it: the prompt once)."""
    choices = []
    for i, c in enumerate(completions):
        calls = [{"id": "call_" + secrets.token_hex(12), "type": "function",
                  "function": {"name": tc.name, "arguments": json.dumps(tc.arguments, ensure_ascii=False)}}
                 for tc in c.tool_calls]
        # text that failed to parse as a call is shown as it was written, not dropped
        text = c.content if calls or c.parse_error is None else c.raw_text.strip()
        message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
        if calls:
            message["tool_calls"] = calls
        finish = "tool_calls" if calls else c.finish_reason if c.finish_reason in ("stop", "length") else "stop"
        choices.append({"index": i, "message": message, "logprobs": _logprobs(c) if logprobs else None,
                        "finish_reason": finish})
    prompt = completions[0].usage.prompt_tokens if completions else 0
    generated = sum(c.usage.completion_tokens for c in completions)
    return {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion", "created": int(time.time()),
            "model": name, "choices": choices,
            "usage": {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}}


def _logprobs(c: Completion) -> dict[str, Any] | None:
    """OpenAI's per-token form; backends keep the values, not the tokens' text. A value that
    is not finite is written as OpenAI writes "very unlikely", -9999."""
    if c.token_logprobs is None:
        return None
    return {"content": [{"token": "", "logprob": lp if math.isfinite(lp) else -9999.0, "bytes": None, "top_logprobs": []}
                        for lp in c.token_logprobs]}


def sse_events(reply: dict[str, Any], include_usage: bool) -> str:
    """`reply` as chat.completion.chunk events: each choice whole, then its finish, then [DONE]."""
    def event(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> str:
        chunk = {"id": reply["id"], "object": "chat.completion.chunk", "created": reply["created"],
                 "model": reply["model"], "choices": choices}
        if include_usage:
            chunk["usage"] = usage
        return "data: " + json.dumps(chunk, ensure_ascii=False) + "\n\n"

    out = []
    for ch in reply["choices"]:
        delta = {"role": "assistant", "content": ch["message"]["content"]}
        if ch["message"].get("tool_calls"):
            delta["tool_calls"] = [{"index": j, **tc} for j, tc in enumerate(ch["message"]["tool_calls"])]
        out.append(event([{"index": ch["index"], "delta": delta, "logprobs": ch["logprobs"], "finish_reason": None}]))
    for ch in reply["choices"]:
        out.append(event([{"index": ch["index"], "delta": {}, "logprobs": None, "finish_reason": ch["finish_reason"]}]))
    if include_usage:
        out.append(event([], reply["usage"]))
    return "".join(out) + "data: [DONE]\n\n"


# --- the app -------------------------------------------------------------------------------


def make_app(model: ChatModel, name: str, *, api_key: str | None = None, constrain: bool = True,
             max_body_bytes: int = MAX_BODY_BYTES, disconnect_poll_s: float = 0.5) -> Starlette:
    """The endpoint over `model`, listed as `name`. With `api_key`, every /v1 request must
    carry `Authorization: Bearer KEY` (/health stays open: it says nothing but "ok"). A
    request whose client disconnects is cancelled (checked every `disconnect_poll_s`)."""
    created = int(time.time())
    key = api_key.encode() if api_key else None

    def check_key(request: Request) -> None:
        if key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key)):
            raise ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                           "authentication_error", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def read_json(request: Request) -> Any:
        too_large = ApiError(413, f"the request body is over {max_body_bytes} bytes", code="request_too_large")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise too_large
        data = bytearray()
        async for part in request.stream():
            data += part
            if len(data) > max_body_bytes:
                raise too_large
        try:
            return json.loads(data)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError alike
            raise ApiError(400, f"the request body is not valid JSON: {e}") from None

    async def list_models(request: Request) -> Response:
        try:
            check_key(request)
        except ApiError as e:
            return e.response()
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": OWNED_BY}]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": name})

    async def chat(request: Request) -> Response:
        try:
            check_key(request)
            req = parse_chat(await read_json(request), name, constrain, model.context_window)
            completions = await until_disconnected(request, model.complete(req.messages, req.tools, req.params))
            if completions is None:
                return Response(status_code=499)  # nobody is listening
        except ApiError as e:
            return e.response()
        except ModelError as e:
            return model_error(e).response()
        except Exception as e:  # a backend bug: say so, keep serving
            log.exception("model call failed")
            return ApiError(500, f"the model failed: {type(e).__name__}: {e}", "server_error").response()
        reply = chat_completion(completions, name, req.params.logprobs)
        if req.stream:
            return Response(sse_events(reply, req.include_usage), media_type="text/event-stream",
                            headers={"Cache-Control": "no-cache"})
        return JSONResponse(reply)

    async def until_disconnected(request: Request, call: Any) -> Any:
        """The call's result, or None when the client went away first: the call is then
        cancelled, so a client that timed out does not leave its sequence decoding for nobody
        (in a batching engine it would hold a slot the next requests wait for)."""
        task = asyncio.ensure_future(call)
        while True:
            done, _ = await asyncio.wait({task}, timeout=disconnect_poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                log.warning("client disconnected: its request was cancelled")
                return None

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None).response()

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await model.aclose()

    return Starlette(routes=[
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ], exception_handlers={HTTPException: http_error}, lifespan=lifespan)
