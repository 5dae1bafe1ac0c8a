"""`notebook-agent serve`: a real server process serving SmolLM2 on loopback, asked through raw
HTTP, our OpenAI-compatible client and the `openai` package.

The in-process tests at the end use a gated test model for what a real model cannot show
deterministically (two requests inside the model at once) or need not reach (refusals).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from notebook_agent.models.base import (
    ChatModel,
    Completion,
    ModelError,
    SamplingParams,
    ToolCall,
    Usage,
)
from notebook_agent.models.resolve import load_model
from notebook_agent.models.serve import make_app

SRC = Path(__file__).resolve().parents[2] / "src"
NAME = "smollm2"
KEY = "test-key-0123456789"
# maxLength bounds each value in the grammar, so a constrained call ends well within max_tokens
TOOLS = [
    {"type": "function", "function": {"name": "execute_code", "description": "Run Python code.", "parameters": {
        "type": "object", "properties": {"comment": {"type": "string", "maxLength": 60},
                                         "code": {"type": "string", "maxLength": 120}},
        "required": ["comment", "code"]}}},
    {"type": "function", "function": {"name": "final_answer", "description": "Answer.", "parameters": {
        "type": "object", "properties": {"answer": {"type": "string", "maxLength": 60}}, "required": ["answer"]}}},
]
REQUIRED = {"execute_code": {"comment", "code"}, "final_answer": {"answer"}}
ASK = [{"role": "user", "content": "Write Python code that prints the sum of 2 and 3."}]
# A request that cannot end early on any machine: the grammar admits one answer, 1 to 400 written
# out (about 1,500 SmolLM2 tokens, one per digit and space, after a prompt as long, since the
# schema is in it: 44 s here), so it outlives a 2 s client however fast the CPU (an
# unconstrained "count to 1000" ended within 3 s on a CI machine).
LONG_ANSWER = " ".join(str(i) for i in range(1, 401))
LONG = {"messages": [{"role": "user", "content": "Count from 1 to 400."}],
        "tools": [{"type": "function", "function": {"name": "final_answer", "description": "Answer.", "parameters": {
            "type": "object", "properties": {"answer": {"const": LONG_ANSWER}}, "required": ["answer"]}}}],
        "tool_choice": "required", "max_tokens": 2000, "temperature": 0.0}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "notebook_agent.cli", "serve", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}


def start(tmp_path: Path, model: Path, *extra: str):
    """A `notebook-agent serve` process; returns (process, base URL, log path, log file)."""
    port = free_port()
    # The log goes to a file, never a pipe: a server blocked on a full pipe never answers.
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    proc = subprocess.Popen(serve_command(str(model), "--port", str(port), "--name", NAME, "--threads", "1", *extra),
                            stdout=log, stderr=subprocess.STDOUT, env=env())
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while "serving" not in log_path.read_text():
        if proc.poll() is not None:
            pytest.fail(f"notebook-agent serve exited: {log_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            stop(proc, log)
            pytest.fail(f"notebook-agent serve did not start within 180 s: {log_path.read_text()[-2000:]}")
        time.sleep(0.3)
    return proc, url, log_path, log


def stop(proc: subprocess.Popen, log) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def server(smollm2_path, tmp_path_factory):
    """SmolLM2 with a 512-token context, decoding two requests at once."""
    proc, url, log_path, log = start(tmp_path_factory.mktemp("serve"), smollm2_path, "--n-ctx", "512", "--parallel", "2")
    assert f"on {url} (OpenAI-compatible)" in log_path.read_text()
    try:
        yield url
    finally:
        stop(proc, log)


def test_a_client_that_goes_away_cancels_its_request(smollm2_path, tmp_path):
    """With one slot, a long request whose client timed out would hold it for its whole
    length; cancelled, it frees the slot for the next request at once."""
    proc, url, log_path, log = start(tmp_path, smollm2_path, "--n-ctx", "4096", "--parallel", "1")
    try:
        with pytest.raises(httpx.TimeoutException):
            chat(url, timeout=2, **LONG)
        t0 = time.monotonic()
        r = chat(url, messages=ASK, max_tokens=4)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
        deadline = time.monotonic() + 30
        while "its request was cancelled" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "client disconnected: its request was cancelled" in log_path.read_text()
        assert time.monotonic() - t0 < 60
    finally:
        stop(proc, log)


@pytest.fixture(scope="module")
def keyed_server(smollm2_path, tmp_path_factory):
    proc, url, _, log = start(tmp_path_factory.mktemp("serve-key"), smollm2_path, "--n-ctx", "512", "--api-key", KEY)
    try:
        yield url
    finally:
        stop(proc, log)


def chat(url: str, timeout: float = 300, **body) -> httpx.Response:
    return httpx.post(url + "/chat/completions", json={"model": NAME, **body}, timeout=timeout)


def assert_valid_call(call: dict) -> None:
    assert call["type"] == "function" and call["id"].startswith("call_") and len(call["id"]) > 10
    name = call["function"]["name"]
    assert name in REQUIRED
    args = json.loads(call["function"]["arguments"])
    assert REQUIRED[name] <= set(args)


# --- the real server ---------------------------------------------------------------------


@pytest.mark.slow
def test_lists_the_model_and_answers_health(server):
    data = httpx.get(server + "/models", timeout=10).json()
    assert [m["id"] for m in data["data"]] == [NAME] and data["data"][0]["owned_by"] == "notebook-agent"
    assert httpx.get(server.removesuffix("/v1") + "/health", timeout=10).json()["status"] == "ok"


@pytest.mark.slow
def test_tool_choice_required_returns_a_call_of_an_offered_tool(server):
    r = chat(server, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=200, temperature=0)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    assert choice["message"]["role"] == "assistant" and len(choice["message"]["tool_calls"]) == 1
    assert_valid_call(choice["message"]["tool_calls"][0])
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] > 100 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.slow
async def test_our_client_gets_a_parsed_tool_call(server):
    model = load_model(f"{server}#{NAME}")
    try:
        history = ASK + [
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "execute_code", "arguments": json.dumps({"comment": "sum", "code": "print(2 + 3)"})}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "5"},
        ]
        out = await model.complete(history, TOOLS, SamplingParams(tool_choice="final_answer", max_tokens=120))
    finally:
        await model.aclose()
    assert len(out) == 1 and out[0].parse_error is None, out[0]
    call = out[0].tool_calls[0]
    assert isinstance(call, ToolCall) and call.name == "final_answer" and isinstance(call.arguments["answer"], str)
    assert out[0].constraint == "server:tool_choice" and model.refused == []


@pytest.mark.slow
def test_plain_chat_returns_text(server):
    r = chat(server, messages=[{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                               {"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hello."}]}],
             max_tokens=8, temperature=0, stop="\n\n")
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"].strip()
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] in ("stop", "length")


@pytest.mark.slow
def test_n2_returns_two_choices_and_counts_the_prompt_once(server):
    r = chat(server, messages=[{"role": "user", "content": "Name a colour."}], n=2, max_tokens=6, temperature=0.9,
             seed=3, logprobs=True)
    assert r.status_code == 200, r.text
    data = r.json()
    assert [c["index"] for c in data["choices"]] == [0, 1]
    single = chat(server, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=1).json()
    assert data["usage"]["prompt_tokens"] == single["usage"]["prompt_tokens"]
    tokens = [len(c["logprobs"]["content"]) for c in data["choices"]]  # one logprob per generated token
    assert data["usage"]["completion_tokens"] == sum(tokens) and all(t > 0 for t in tokens)
    assert all(e["logprob"] <= 0 for c in data["choices"] for e in c["logprobs"]["content"])


@pytest.mark.slow
def test_stream_is_sse_chunks_ending_with_done(server):
    body = {"model": NAME, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 6, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server + "/chat/completions", json=body, timeout=300) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert text.strip() and finishes in (["stop"], ["length"])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.slow
def test_prompt_over_the_context_is_400_and_the_server_goes_on(server):
    r = chat(server, messages=[{"role": "user", "content": "word " * 2000}], max_tokens=4)
    assert r.status_code == 400
    error = r.json()["error"]
    assert "context window" in error["message"] and "512" in error["message"]
    assert error["type"] == "invalid_request_error"
    again = chat(server, messages=[{"role": "user", "content": "Hi."}], max_tokens=2)
    assert again.status_code == 200 and again.json()["choices"][0]["message"]["content"] is not None


@pytest.mark.slow
def test_bad_requests_are_400_with_a_clear_message(server):
    r = httpx.post(server + "/chat/completions", content=b'{"messages": [', timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = chat(server, timeout=30)
    assert r.status_code == 400 and "'messages'" in r.json()["error"]["message"]
    r = chat(server, timeout=30, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "rm"}})
    assert r.status_code == 400 and "'rm'" in r.json()["error"]["message"]
    r = chat(server, timeout=30, messages=ASK, tool_choice="required")
    assert r.status_code == 400 and "needs 'tools'" in r.json()["error"]["message"]
    r = chat(server, timeout=30, messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    assert r.status_code == 400 and "not text" in r.json()["error"]["message"]
    r = chat(server, timeout=30, messages=ASK, grammar="root ::= \"x\"")
    assert r.status_code == 400 and "tool_choice" in r.json()["error"]["message"]
    r = httpx.post(server + "/chat/completions", json={"model": "gpt-4", "messages": ASK}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


@pytest.mark.slow
def test_api_key_is_required_when_set(keyed_server):
    assert httpx.get(keyed_server + "/models", timeout=10).status_code == 401
    wrong = httpx.get(keyed_server + "/models", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    assert httpx.post(keyed_server + "/chat/completions", json={"messages": ASK}, timeout=10).status_code == 401
    assert httpx.get(keyed_server + "/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).status_code == 200
    assert httpx.get(keyed_server.removesuffix("/v1") + "/health", timeout=10).status_code == 200


@pytest.mark.slow
def test_the_openai_package_can_use_it(keyed_server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=keyed_server, api_key=KEY, max_retries=0, timeout=300)
    assert [m.id for m in client.models.list()] == [NAME]
    r = client.chat.completions.create(model=NAME, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=200,
                                       temperature=0)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert_valid_call({"id": call.id, "type": call.type, "function": {"name": call.function.name,
                                                                      "arguments": call.function.arguments}})
    chunks = list(client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hi."}],
                                                 max_tokens=4, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed_server, api_key="wrong", max_retries=0).models.list()


# --- the command --------------------------------------------------------------------------


def test_beyond_loopback_without_a_key_is_refused():
    r = subprocess.run(serve_command("smollm2-135m", "--host", "0.0.0.0", "--port", str(free_port())),
                       capture_output=True, text=True, timeout=120, env={**env(), "NOTEBOOK_AGENT_API_KEY": ""})
    assert r.returncode != 0 and "--api-key" in r.stderr and "loopback" in r.stderr


def test_serve_is_a_top_level_and_a_models_command():
    from notebook_agent.cli import app

    for args in (["serve", "--help"], ["models", "serve", "--help"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0 and "--api-key" in r.output and "--parallel" in r.output


def test_missing_server_extra_says_what_to_install():
    block = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0] == 'starlette':\n"
             "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
             "sys.meta_path.insert(0, Block())\nsys.argv = ['notebook-agent', 'serve', 'x']\n"
             "from notebook_agent.cli import main\nmain()\n")
    r = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=120, env=env())
    assert r.returncode == 2 and "notebook-agent[server]" in r.stderr and "Traceback" not in r.stderr


# --- in process: bookkeeping a real model cannot show deterministically --------------------


class GatedModel(ChatModel):
    """Answers only once `expect` calls are inside `complete` at the same time."""

    def __init__(self, expect: int):
        self.expect, self.inside, self.peak = expect, 0, 0
        self.all_in = asyncio.Event()

    async def _complete(self, messages, tools, params):
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        if self.inside >= self.expect:
            self.all_in.set()
        try:
            await asyncio.wait_for(self.all_in.wait(), timeout=10)
        finally:
            self.inside -= 1
        return [Completion(raw_text="ok", content="ok", usage=Usage(3, 1))] * params.n


async def test_requests_reach_the_model_concurrently():
    model = GatedModel(expect=3)
    transport = httpx.ASGITransport(app=make_app(model, "gated"))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        replies = await asyncio.gather(*(client.post("/v1/chat/completions", json={"messages": ASK}) for _ in range(3)))
    assert [r.status_code for r in replies] == [200, 200, 200] and model.peak == 3


class FailingModel(ChatModel):
    def __init__(self, error: Exception):
        self.error = error

    async def _complete(self, messages, tools, params):
        raise self.error


async def test_errors_body_cap_and_key_in_process():
    async def post(app, **kw):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/v1/chat/completions", **kw)

    busy = await post(make_app(FailingModel(ModelError("server busy", retryable=True)), "m"), json={"messages": ASK})
    assert busy.status_code == 503 and busy.json()["error"]["message"] == "server busy"
    bad = await post(make_app(FailingModel(ModelError("prompt too long")), "m"), json={"messages": ASK})
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "prompt too long"
    big = await post(make_app(GatedModel(1), "m", max_body_bytes=1000), json={"messages": ASK * 50})
    assert big.status_code == 413 and "1000 bytes" in big.json()["error"]["message"]
    keyed = make_app(GatedModel(1), "m", api_key=KEY)
    assert (await post(keyed, json={"messages": ASK})).status_code == 401
    ok = await post(keyed, json={"messages": ASK}, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "ok"
