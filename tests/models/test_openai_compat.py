"""The OpenAI-compatible backend against a real llama.cpp server on loopback.

A small scripted HTTP proxy in front of it injects 503/429 answers for the retry tests
(bookkeeping); the completions themselves always come from the real server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from notebook_agent.models.base import ModelError, SamplingParams
from notebook_agent.models.openai_compat import OpenAICompatModel
from notebook_agent.models.resolve import load_model

TOOLS = [
    {"type": "function", "function": {"name": "execute_code", "description": "Run Python code.", "parameters": {
        "type": "object", "properties": {"comment": {"type": "string"}, "code": {"type": "string"}},
        "required": ["comment", "code"]}}},
    {"type": "function", "function": {"name": "final_answer", "description": "Answer.", "parameters": {
        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}},
]
MESSAGES = [{"role": "user", "content": "Write Python code that prints the sum of 2 and 3."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(smollm2_path, tmp_path_factory):
    """`python -m llama_cpp.server` serving SmolLM2; yields its base URL."""
    port = free_port()
    # The log goes to a file, never a pipe: llama.cpp's loading log alone can fill a pipe's
    # 64 KiB buffer, and a server blocked on a full pipe never answers.
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--model_alias", "smollm2"],
        stdout=subprocess.DEVNULL, stderr=log,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer /v1/models within 180 s: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class ScriptedProxy:
    """Answers chat requests from a script: (status, headers) entries, then forwards to `upstream`
    (or answers a canned reply after `delay` seconds when upstream is None)."""

    def __init__(self, upstream: str | None, script: list[tuple[int, dict[str, str]]] = (), delay: float = 0.0,
                 owned_by: str | None = None):
        self.upstream, self.script, self.delay = upstream, list(script), delay
        self.owned_by = owned_by
        self.bodies: list[dict] = []  # every chat request as sent
        self.requests = 0
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                model = {"id": "canned"} if proxy.owned_by is None else {"id": "canned", "owned_by": proxy.owned_by}
                self._answer(200, {}, json.dumps({"data": [model]}).encode())

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with proxy.lock:
                    proxy.bodies.append(json.loads(body or b"{}"))
                    proxy.requests += 1
                    proxy.inflight += 1
                    proxy.max_inflight = max(proxy.max_inflight, proxy.inflight)
                    step = proxy.script.pop(0) if proxy.script else None
                try:
                    if step is not None:
                        status, headers = step
                        self._answer(status, headers, b'{"error": {"message": "scripted"}}')
                    elif proxy.upstream:
                        r = httpx.post(proxy.upstream + self.path.removeprefix("/v1"), content=body,
                                       headers={"content-type": "application/json"}, timeout=300)
                        self._answer(r.status_code, {}, r.content)
                    else:
                        time.sleep(proxy.delay)
                        reply = {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
                        self._answer(200, {}, json.dumps(reply).encode())
                finally:
                    with proxy.lock:
                        proxy.inflight -= 1

            def _answer(self, status, headers, payload):
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.slow
async def test_text_codec_n2_logprobs_against_real_server(server):
    model = OpenAICompatModel(server, codec="react")  # no model name: taken from /v1/models
    out = await model.complete(MESSAGES, TOOLS, SamplingParams(n=2, temperature=0.9, max_tokens=48, seed=4, logprobs=True))
    assert model.model == "smollm2" and model.name == "smollm2"
    assert len(out) == 2
    # llama.cpp's server ignores `n`: we noticed and asked for the second one separately
    assert model._n_supported is False and model.stats["requests"] >= 3
    for c in out:
        assert c.raw_text and c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 0
        assert c.token_logprobs and len(c.token_logprobs) == c.usage.completion_tokens
        assert all(lp <= 1e-6 for lp in c.token_logprobs)
        assert c.tool_calls or c.parse_error is not None  # decoded through the react codec
    # once known, n>1 goes straight to parallel single requests
    before = model.stats["requests"]
    out = await model.complete(MESSAGES, TOOLS, SamplingParams(n=2, max_tokens=8, seed=1))
    assert len(out) == 2 and model.stats["requests"] - before == 2
    await model.aclose()


@pytest.mark.slow
def test_native_codec_and_sync_use(server):
    model = load_model(server + "#smollm2", codec="native", max_retries=0)
    assert isinstance(model, OpenAICompatModel) and model.model == "smollm2"
    c = model.complete_sync(MESSAGES, TOOLS, SamplingParams(max_tokens=24, temperature=0.0))[0]
    assert c.raw_text and c.usage.completion_tokens > 0
    # a second asyncio.run (new event loop) works: the HTTP client is re-made per loop
    c2 = model.complete_sync(MESSAGES, TOOLS, SamplingParams(max_tokens=24, temperature=0.0))[0]
    assert c2.raw_text == c.raw_text


@pytest.mark.slow
async def test_native_tool_call_from_the_real_server_is_decoded(server):
    """The server returns an OpenAI `tool_calls` message (llama.cpp constrains the reply to the
    named function's JSON schema) and the native codec decodes it into the agent's call."""
    from notebook_agent.agent.tools import EXECUTE_CODE
    from notebook_agent.agent.tools import TOOLS as AGENT_TOOLS

    model = load_model(server + "#smollm2", codec="native", max_retries=0)
    try:
        c = (await model.complete(MESSAGES, AGENT_TOOLS, SamplingParams(max_tokens=96, temperature=0.0,
                                                                        tool_choice=EXECUTE_CODE)))[0]
    finally:
        await model.aclose()
    assert c.parse_error is None and c.finish_reason == "tool_calls", (c.raw_text, c.parse_error)
    assert len(c.tool_calls) == 1 and c.tool_calls[0].name == EXECUTE_CODE and c.tool_calls[0].id
    args = c.tool_calls[0].arguments
    assert isinstance(args, dict) and isinstance(args.get("code"), str) and isinstance(args.get("comment"), str)
    assert c.usage.completion_tokens > 0


@pytest.mark.slow
async def test_retries_503_twice_then_gets_the_real_completion(server):
    proxy = ScriptedProxy(server, [(503, {"retry-after": "0"}), (503, {})])
    try:
        model = OpenAICompatModel(proxy.url, model="smollm2", codec="react", backoff=0.05)
        out = await model.complete(MESSAGES, TOOLS, SamplingParams(max_tokens=16, temperature=0.0))
        assert out[0].raw_text and out[0].usage.completion_tokens > 0
        assert proxy.requests == 3 and model.stats["retries"] == 2
        await model.aclose()
    finally:
        proxy.close()


async def test_retry_after_is_respected_on_429():
    proxy = ScriptedProxy(None, [(429, {"retry-after": "1"})])
    try:
        model = OpenAICompatModel(proxy.url, model="m", backoff=0.01)
        t0 = time.monotonic()
        out = await model.complete(MESSAGES, None, SamplingParams())
        assert out[0].content == "ok" and time.monotonic() - t0 >= 0.95
    finally:
        proxy.close()


async def test_gives_up_after_max_retries_with_the_server_message():
    proxy = ScriptedProxy(None, [(500, {})] * 5)
    try:
        model = OpenAICompatModel(proxy.url, model="m", max_retries=2, backoff=0.01)
        with pytest.raises(ModelError, match="answered 500") as e:
            await model.complete(MESSAGES, None, SamplingParams())
        assert e.value.retryable and proxy.requests == 3
    finally:
        proxy.close()


async def test_client_errors_are_not_retried():
    proxy = ScriptedProxy(None, [(400, {}), (400, {})])
    try:
        model = OpenAICompatModel(proxy.url, model="m", max_retries=3, backoff=0.01)
        with pytest.raises(ModelError, match=r"rejected the request \(400\)") as e:
            await model.complete(MESSAGES, None, SamplingParams())
        assert not e.value.retryable and proxy.requests == 1
    finally:
        proxy.close()


async def test_concurrency_limit_bounds_requests_in_flight():
    proxy = ScriptedProxy(None, delay=0.2)
    try:
        model = OpenAICompatModel(proxy.url, model="m", concurrency=2)
        results = await asyncio.gather(*(model.complete(MESSAGES, None, SamplingParams()) for _ in range(6)))
        assert len(results) == 6 and proxy.requests == 6
        assert proxy.max_inflight == 2
    finally:
        proxy.close()


async def test_down_server_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    model = OpenAICompatModel(url, model="m", max_retries=1, backoff=0.01)
    with pytest.raises(ModelError, match=f"cannot reach model server at {url}"):
        await model.complete(MESSAGES, None, SamplingParams())


def test_api_key_from_the_configured_environment_variable(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    assert OpenAICompatModel("http://x/v1", model="m", api_key_env="MY_KEY")._headers == {"Authorization": "Bearer sk-test"}
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert OpenAICompatModel("http://x/v1", model="m")._headers == {}


# --- constrained tool calls ------------------------------------------------------------------------

CAPPED = json.loads(json.dumps(TOOLS))
CAPPED[0]["function"]["parameters"]["properties"]["comment"]["maxLength"] = 80
CAPPED[0]["function"]["parameters"]["properties"]["code"]["maxLength"] = 160
CAPPED[1]["function"]["parameters"]["properties"]["answer"]["maxLength"] = 40


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["hermes", "qwen3_coder", "react"])
async def test_grammar_forces_a_valid_call_through_the_real_server(server, codec):
    """llama-cpp-python's server (owned_by "me") is detected and takes the GBNF grammar in
    `grammar`: every reply of SmolLM2 is a valid call, greedy and sampled."""
    model = OpenAICompatModel(server, model="smollm2", codec=codec)
    out = await model.complete(MESSAGES, CAPPED, SamplingParams(n=2, temperature=0.8, max_tokens=320, seed=3))
    out += await model.complete(MESSAGES, CAPPED, SamplingParams(temperature=0.0, max_tokens=320))
    assert model.server_kind == "me" and model.refused == []
    for c in out:
        assert c.constraint == "server:grammar"
        assert c.parse_error is None and len(c.tool_calls) == 1, c.raw_text
        call = c.tool_calls[0]
        assert call.name in ("execute_code", "final_answer")
        assert all(v.strip() for v in call.arguments.values())
    # and off: the same server, the same prompt, SmolLM2 writes no Hermes call
    if codec == "hermes":
        free = await model.complete(MESSAGES, CAPPED, SamplingParams(temperature=0.0, max_tokens=48, constrain=False))
        assert free[0].constraint == "none" and free[0].tool_calls == []
    await model.aclose()


@pytest.mark.slow
async def test_native_tool_choice_by_name_through_the_real_server(server):
    """llama-cpp-python's server honours tool_choice in its named-function form (it ignores
    "required" with several tools: then the completion says it was not constrained)."""
    model = OpenAICompatModel(server, model="smollm2", codec="native")
    c = (await model.complete(MESSAGES, CAPPED, SamplingParams(max_tokens=200, tool_choice="final_answer")))[0]
    assert c.constraint == "server:tool_choice"
    assert [t.name for t in c.tool_calls] == ["final_answer"] and c.parse_error is None
    c = (await model.complete(MESSAGES, CAPPED, SamplingParams(max_tokens=16)))[0]
    assert c.constraint == "none" and "tool_choice" in model.refused
    await model.aclose()


@pytest.mark.slow
async def test_refused_grammar_is_retried_once_without_and_remembered(server, caplog):
    """A server that answers 400 to the grammar field: the same request again without it, the
    run goes on, the refusal is logged once and the field is not sent again."""
    proxy = ScriptedProxy(server, [(400, {})])
    try:
        model = OpenAICompatModel(proxy.url, model="smollm2", codec="hermes", guided="grammar")
        with caplog.at_level("WARNING"):
            c = (await model.complete(MESSAGES, TOOLS, SamplingParams(max_tokens=16)))[0]
        assert c.constraint == "none" and c.raw_text and model.refused == ["grammar"]
        assert proxy.requests == 2 and "grammar" in proxy.bodies[0] and "grammar" not in proxy.bodies[1]
        assert "refused constrained decoding (grammar)" in caplog.text
        c = (await model.complete(MESSAGES, TOOLS, SamplingParams(max_tokens=16)))[0]
        assert proxy.requests == 3 and "grammar" not in proxy.bodies[2] and c.constraint == "none"
        await model.aclose()
    finally:
        proxy.close()


@pytest.mark.slow
async def test_vllm_forms_are_tried_in_order(server):
    """A vLLM-like server (owned_by "vllm") that refuses `structured_outputs` gets
    `guided_grammar` next; the real server behind the proxy then answers."""
    proxy = ScriptedProxy(server, [(400, {})], owned_by="vllm")
    try:
        model = OpenAICompatModel(proxy.url, model="smollm2", codec="react")
        c = (await model.complete(MESSAGES, TOOLS, SamplingParams(max_tokens=16)))[0]
        assert model.server_kind == "vllm" and model.refused == ["structured_outputs"]
        assert "grammar" in proxy.bodies[0]["structured_outputs"]
        assert proxy.bodies[1]["guided_grammar"].startswith("root ::=")
        assert c.constraint == "server:guided_grammar"
        await model.aclose()
    finally:
        proxy.close()


async def test_unknown_server_is_not_sent_a_guided_field():
    proxy = ScriptedProxy(None)
    try:
        model = OpenAICompatModel(proxy.url, model="m", codec="hermes")
        c = (await model.complete(MESSAGES, TOOLS, SamplingParams()))[0]
        assert c.constraint == "none" and not (set(proxy.bodies[0]) & {"grammar", "guided_grammar", "ebnf"})
        model = OpenAICompatModel(proxy.url, model="m", codec="native")
        c = (await model.complete(MESSAGES, TOOLS, SamplingParams()))[0]
        assert proxy.bodies[-1]["tool_choice"] == "required" and c.constraint == "server:tool_choice"
    finally:
        proxy.close()


def test_guided_option_is_checked():
    with pytest.raises(ModelError, match="guided must be"):
        OpenAICompatModel("http://x/v1", model="m", guided="outlines")
