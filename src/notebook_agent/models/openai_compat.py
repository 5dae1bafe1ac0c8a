"""Any OpenAI-compatible chat server: vLLM, SGLang, TGI, llama.cpp's server, Ollama, hosted APIs.

- key from `api_key`, else the environment variable `api_key_env` (default OPENAI_API_KEY);
  no key, no Authorization header (local servers);
- retries with exponential backoff and jitter on 429/5xx and connection errors, honouring
  `Retry-After`; a semaphore bounds the requests in flight;
- `n > 1` is sent as `n`; a server that returns fewer choices (llama.cpp's ignores `n`) gets
  the rest as parallel single requests, and is remembered as such;
- with a text codec (hermes, react, ...) the messages are codec-encoded, `tools` is not sent,
  and the reply text is decoded; with `native` the server parses tool calls;
- constrained tool calls (on by default, `constrain=`): a text codec's grammar goes in the
  server's guided-decoding field (`guided=`: "grammar" for llama.cpp's servers,
  "structured_outputs" or "guided_grammar" for vLLM, "ebnf" for SGLang; "auto" picks by the
  `owned_by` that `/models` reports); the native codec sends `tool_choice`. A server that
  refuses the field (HTTP 400/404/422) gets the request again without it, and is remembered
  as refusing it (logged once); each completion says which constraint it was made under.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from typing import Any

import httpx

from .base import (
    ChatModel,
    Completion,
    Message,
    ModelError,
    ParseError,
    SamplingParams,
    ToolCall,
    ToolSpec,
    Usage,
)
from .codecs import ToolCodec, get_codec
from .codecs.tools import check_call
from .completion import call_codec, decode_completion, stops_for
from .constrain import AUTO, REQUIRED, Constraint, grammar_for

log = logging.getLogger(__name__)

#: How each server takes a GBNF grammar (all compile llama.cpp-style GBNF).
GUIDED_FORMS: dict[str, Any] = {
    "grammar": lambda g: {"grammar": g},                          # llama.cpp server, llama-cpp-python's
    "structured_outputs": lambda g: {"structured_outputs": {"grammar": g}},  # vLLM >= 0.10.2
    "guided_grammar": lambda g: {"guided_grammar": g},            # older vLLM
    "ebnf": lambda g: {"ebnf": g},                                # SGLang
}
_GUIDED_KEYS = {"grammar", "structured_outputs", "guided_grammar", "ebnf"}
#: `owned_by` in /models -> the forms to try, in order.
SERVER_FORMS = {
    "me": ["grammar"],        # llama-cpp-python's server
    "llamacpp": ["grammar"],  # llama.cpp's own server
    "vllm": ["structured_outputs", "guided_grammar"],
    "sglang": ["ebnf"],
}
REFUSED_STATUS = {400, 404, 422}

RETRY_STATUS = {408, 409, 425, 429}
_NETWORK_ERRORS = (httpx.TransportError,)  # connect/read/write/pool timeouts, protocol errors


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class OpenAICompatModel(ChatModel):
    applies_call_codec = True

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        codec: str | ToolCodec = "native",
        timeout: float = 300.0,
        max_retries: int = 4,
        concurrency: int = 8,
        context_window: int = 32768,
        name: str | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        constrain: bool = True,
        guided: str = "auto",
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ModelError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.codec = get_codec(codec)
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._context_window = context_window
        self.name = name or model or self.base_url
        key = api_key or os.environ.get(api_key_env)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._n_supported: bool | None = None  # learnt from the first n>1 reply
        #: constrained tool calls by default (a call's `SamplingParams.constrain` overrides)
        self.constrain = constrain
        if guided not in ("auto", "none", *GUIDED_FORMS):
            raise ModelError(f"guided must be auto, none or one of {', '.join(GUIDED_FORMS)}; got {guided!r}")
        self.guided = guided
        self.server_kind: str | None = None  # `owned_by` of the served model, once asked
        self.refused: list[str] = []  # constraint forms this server refused (not sent again)
        # httpx clients and semaphores belong to one event loop; complete_sync makes a new
        # loop per call, so both are (re)made for the running loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self.stats = {"requests": 0, "retries": 0}

    @property
    def context_window(self) -> int:
        return self._context_window

    def _session(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._loop = loop
            self._client = httpx.AsyncClient(
                headers=self._headers,
                timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
                limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
            )
            self._sem = asyncio.Semaphore(self.concurrency)
        assert self._sem is not None
        return self._client, self._sem

    # --- HTTP with retries --------------------------------------------------------------------

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        client, sem = self._session()
        url = self.base_url + path
        delay = self.backoff
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            try:
                async with sem:
                    self.stats["requests"] += 1
                    response = await client.request(method, url, json=body)
            except _NETWORK_ERRORS as e:
                error = ModelError(f"cannot reach model server at {self.base_url}: {type(e).__name__}: {e}", retryable=True)
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except json.JSONDecodeError as e:
                        raise ModelError(f"model server at {self.base_url} returned invalid JSON: {response.text[:200]!r}") from e
                detail = response.text[:500]
                if response.status_code in RETRY_STATUS or response.status_code >= 500:
                    error = ModelError(f"model server at {self.base_url} answered {response.status_code}: {detail}", retryable=True)
                    wait = _retry_after(response)
                else:
                    hint = " (check the API key)" if response.status_code in (401, 403) else ""
                    raise ModelError(f"model server at {self.base_url} rejected the request ({response.status_code}){hint}: {detail}",
                                     status=response.status_code)
            if attempt == self.max_retries:
                raise error
            self.stats["retries"] += 1
            pause = wait if wait is not None else delay * (1 + random.random())  # jitter
            await asyncio.sleep(min(pause, self.max_backoff))
            delay *= 2
        raise AssertionError("unreachable")

    async def model_name(self) -> str:
        """The model to request: as configured, else the first one the server lists."""
        if self.model is None:
            data = await self._request("GET", "/models")
            models = data.get("data") or []
            if not models:
                raise ModelError(f"model server at {self.base_url} lists no models; pass one as URL#MODEL")
            self.model = models[0]["id"]
            self.server_kind = str(models[0].get("owned_by") or "")
            if self.name == self.base_url:
                self.name = self.model
        return self.model

    # --- completions ------------------------------------------------------------------------

    async def _complete(self, messages: list[Message], tools: list[ToolSpec] | None, params: SamplingParams) -> list[Completion]:
        if params.n < 1:
            raise ModelError(f"n must be >= 1, got {params.n}")
        codec = call_codec(self.codec, params)
        msgs, send_tools = codec.encode(messages, tools)
        body: dict[str, Any] = {
            "model": await self.model_name(),
            "messages": msgs,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        on = self.constrain if params.constrain is None else params.constrain
        constraint: Constraint | None = None
        mode = "none"
        if on and tools:
            if codec.native:
                choice = await self._tool_choice(params.tool_choice, send_tools)
                if choice is not None:
                    body["tool_choice"], mode = choice, "server:tool_choice"
            else:
                constraint = grammar_for(codec, tools, params.tool_choice)
                form = await self._guided_form() if constraint else None
                if form and constraint:
                    body.update(GUIDED_FORMS[form](constraint.grammar))
                    mode = "server:" + form
                else:
                    constraint = None
        stop = stops_for(params, codec, constraint is not None)
        if stop:
            body["stop"] = stop
        if params.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = 1  # llama.cpp's server returns logprobs only when this is set
        if codec.native and send_tools:
            body["tools"] = send_tools

        def with_seed(b: dict[str, Any], i: int) -> dict[str, Any]:
            if params.seed is not None:
                return {**b, "seed": params.seed + i}
            return b

        out: list[Completion] = []
        if params.n == 1 or self._n_supported is not False:
            first, mode = await self._chat(with_seed({**body, "n": params.n}, 0) if params.n > 1 else with_seed(body, 0),
                                           mode, constraint)
            if mode == "none":
                body, constraint = _without_constraint(body), None
            out = self._parse(first, tools, codec, constraint, mode, params.max_tokens)
            if params.n > 1:
                self._n_supported = len(out) >= params.n
        missing = params.n - len(out)
        if missing > 0:  # the server ignored n: the rest in parallel, one each
            replies = await asyncio.gather(*(
                self._chat(with_seed(body, len(out) + i), mode, constraint) for i in range(missing)
            ))
            for r, m in replies:
                out.extend(self._parse(r, tools, codec, constraint if m != "none" else None, m, params.max_tokens)[:1])
        return out[: params.n]

    # --- constraints ------------------------------------------------------------------------

    async def _guided_form(self) -> str | None:
        """How this server takes a grammar: configured, or by its `owned_by` ("auto")."""
        if self.guided == "none":
            return None
        if self.guided != "auto":
            forms = [self.guided]
        else:
            if self.server_kind is None:
                await self._learn_server_kind()
            forms = SERVER_FORMS.get(self.server_kind or "", [])
            if not forms and "unknown-server" not in self.refused:
                self.refused.append("unknown-server")
                log.warning("model server at %s (owned_by %r) has no known guided-decoding field; tool calls are "
                            "not constrained (pass guided='grammar', 'structured_outputs', 'guided_grammar' or "
                            "'ebnf' to choose one)", self.base_url, self.server_kind)
        return next((f for f in forms if f not in self.refused), None)

    async def _learn_server_kind(self) -> None:
        try:
            data = await self._request("GET", "/models")
            models = data.get("data") or []
            self.server_kind = str(models[0].get("owned_by") or "") if models else ""
        except ModelError:
            self.server_kind = ""

    async def _tool_choice(self, choice: str, tools: list[ToolSpec] | None) -> Any:
        """`tool_choice` for the native codec: "required", or the named-function form."""
        if "tool_choice" in self.refused or not tools:
            return None
        names = [(t.get("function") or {}).get("name") for t in tools]
        if choice == AUTO:
            return None
        if choice != REQUIRED:
            return {"type": "function", "function": {"name": choice}} if choice in names else None
        if self.server_kind is None and self.guided == "auto":
            await self._learn_server_kind()
        if self.server_kind == "me":
            # llama-cpp-python's server ignores "required"; it honours the named form only
            if len(names) == 1:
                return {"type": "function", "function": {"name": names[0]}}
            if "tool_choice" not in self.refused:
                self.refused.append("tool_choice")
                log.warning("llama-cpp-python's server ignores tool_choice='required' with several tools; tool "
                            "calls to %s are not constrained (use a text codec such as hermes: its grammar is "
                            "honoured)", self.base_url)
            return None
        return "required"

    async def _chat(self, body: dict[str, Any], mode: str, constraint: Constraint | None) -> tuple[dict[str, Any], str]:
        """POST a chat request; if the server refuses its constraint, once more without it
        (or with the next guided form this server may take), and remember the refusal."""
        while True:
            try:
                return await self._request("POST", "/chat/completions", body), mode
            except ModelError as e:
                if mode == "none" or e.status not in REFUSED_STATUS:
                    raise
                refused = mode.removeprefix("server:")
                if refused not in self.refused:
                    self.refused.append(refused)
                log.warning("model server at %s refused constrained decoding (%s): %s; retrying without it and not "
                            "sending it again", self.base_url, refused, str(e)[:300])
                body = _without_constraint(body)
                mode = "none"
                if refused != "tool_choice" and constraint is not None:
                    form = await self._guided_form()
                    if form:
                        body.update(GUIDED_FORMS[form](constraint.grammar))
                        mode = "server:" + form

    def _parse(self, data: dict[str, Any], tools: list[ToolSpec] | None, codec: ToolCodec | None = None,
               constraint: Constraint | None = None, mode: str = "none", max_tokens: int = 0) -> list[Completion]:
        codec = codec or self.codec
        choices = data.get("choices") or []
        if not choices:
            raise ModelError(f"model server at {self.base_url} returned no choices: {str(data)[:300]}")
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        total_completion = int(usage.get("completion_tokens") or 0)
        out = []
        for ch in choices:
            msg = ch.get("message") or {}
            text = msg.get("content") or ""
            lp = _logprobs(ch.get("logprobs"))
            n_out = len(lp) if lp else total_completion // len(choices)
            u = Usage(prompt_tokens, n_out)
            finish = ch.get("finish_reason") or "stop"
            if codec.native:
                calls, error = _native_calls(msg.get("tool_calls") or [], tools)
                out.append(Completion(raw_text=text, content=text.strip(), tool_calls=calls, parse_error=error,
                                      finish_reason=finish if not calls else "tool_calls", usage=u, token_logprobs=lp,
                                      constraint=mode))
            else:
                out.append(decode_completion(text, codec, tools, finish, u, lp, constraint, mode, max_tokens))
        return out

    async def aclose(self) -> None:
        if self._client is not None:
            try:
                if self._loop is asyncio.get_running_loop():
                    await self._client.aclose()
            finally:
                self._client = None


def _without_constraint(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in _GUIDED_KEYS and k != "tool_choice"}


def _logprobs(block: Any) -> list[float] | None:
    """Chat format ({"content": [{"token", "logprob"}]}) or completions format ({"token_logprobs"})."""
    if not isinstance(block, dict):
        return None
    if isinstance(block.get("content"), list):
        return [float(t.get("logprob", 0.0)) for t in block["content"]]
    if isinstance(block.get("token_logprobs"), list):
        return [float(x) for x in block["token_logprobs"] if x is not None]
    return None


def _native_calls(raw_calls: list[dict[str, Any]], tools: list[ToolSpec] | None) -> tuple[list[ToolCall], ParseError | None]:
    calls: list[ToolCall] = []
    errors: list[str] = []
    for i, tc in enumerate(raw_calls):
        fn = tc.get("function") or {}
        result = check_call(fn.get("name"), fn.get("arguments", {}), tools, tc.get("id") or f"call_{i}")
        if isinstance(result, ParseError):
            errors.append(result.message)
        else:
            calls.append(result)
    return calls, (ParseError("; ".join(errors), raw=json.dumps(raw_calls)[:2000]) if errors else None)
