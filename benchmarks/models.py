"""Tokens/s per backend on this machine, and our llama.cpp backend's overhead.

    .venv/bin/python benchmarks/models.py                      # SmolLM2 + Qwen2.5-Coder-1.5B
    .venv/bin/python benchmarks/models.py --models smollm2-135m --repeats 5

Figures are the best of the repeated runs (this machine is shared; medians are noise).
Backends: llama.cpp in-process (ours), llama-cpp-python called directly (the reference for
the overhead ratio: same GGUF, same prompt tokens, same greedy settings, KV cache reset
before every run so both evaluate the whole prompt, both called from a worker thread), constrained vs unconstrained tool calls (llama.cpp in-process, Hermes codec, the
two agent tools; the prompt is cached so only generation is timed), the OpenAI-compatible backend
against `python -m llama_cpp.server`, and transformers on CPU (SmolLM2 only; n=1 and n=4 in
one batch). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import httpx
from rich.console import Console
from rich.table import Table

from notebook_agent.models import registry
from notebook_agent.models.base import SamplingParams
from notebook_agent.models.llamacpp import LlamaCppModel
from notebook_agent.models.openai_compat import OpenAICompatModel

MESSAGES = [
    {"role": "system", "content": "You are a data analyst working in a Jupyter notebook."},
    {"role": "user", "content": "Write a long, well commented Python script that loads sales.csv with pandas, "
                                "cleans missing values, and prints summary statistics for every column."},
]


def ours_vs_direct(model: LlamaCppModel, max_tokens: int, repeats: int) -> dict[str, float]:
    """Alternating runs; the best run of each (on a shared, busy machine the minimum is the
    least noisy estimate of the intrinsic cost). Both generate the same greedy tokens."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(model.path), n_ctx=model.n_ctx, n_threads=model._llm.n_threads, verbose=False)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    ours_t, direct_t, ours_n, direct_n = [], [], [], []
    prompt_tokens = model.tokenize_prompt(model.render_prompt(MESSAGES))
    for _ in range(repeats):
        model.engine.clear()
        t0 = time.perf_counter()
        c = model.complete_sync(MESSAGES, None, params)[0]  # renders the template + tokenizes, too
        ours_t.append(time.perf_counter() - t0)
        ours_n.append(c.usage.completion_tokens)
        llm.reset()
        t0 = time.perf_counter()
        # In a worker thread like ours: on this VM llama.cpp ran ~5x slower on the main thread
        # than on any other thread, which would flatter our backend.
        r = asyncio.run(asyncio.to_thread(
            llm.create_completion, prompt_tokens, max_tokens=max_tokens, temperature=0.0, top_p=1.0, top_k=40,
            min_p=0.05, repeat_penalty=1.0))
        direct_t.append(time.perf_counter() - t0)
        direct_n.append(r["usage"]["completion_tokens"])
    llm.close()
    ours_tps = max(n / t for n, t in zip(ours_n, ours_t))
    direct_tps = max(n / t for n, t in zip(direct_n, direct_t))
    return {"ours_tps": ours_tps, "direct_tps": direct_tps, "ratio": direct_tps / ours_tps,
            "tokens": max(ours_n), "direct_tokens": max(direct_n)}


TOOLS = [
    {"type": "function", "function": {"name": "execute_code", "description": "Run Python code in the notebook.",
                                      "parameters": {"type": "object", "properties": {
                                          "comment": {"type": "string"}, "code": {"type": "string"}},
                                          "required": ["comment", "code"]}}},
    {"type": "function", "function": {"name": "final_answer", "description": "Give the final answer.", "parameters": {
        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}},
]
TOOL_MESSAGES = [
    {"role": "system", "content": "You are a data analyst working in a Jupyter notebook."},
    {"role": "user", "content": "Load sales.csv with pandas, clean missing values and print summary statistics "
                                "for every column, with comments."},
]


def constrained_vs_free(model: LlamaCppModel, max_tokens: int, repeats: int) -> dict[str, float]:
    """Tokens/s of generation with and without the tool-call grammar, alternating, best run
    of each. The prompt is evaluated once beforehand (the KV cache keeps it), so the times
    are generation only: the grammar's cost per token, plus its per-call set-up."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    tokens: dict[bool, int] = {True: 0, False: 0}
    params = {on: SamplingParams(temperature=0.0, max_tokens=max_tokens, codec="hermes", constrain=on) for on in (True, False)}
    model.complete_sync(TOOL_MESSAGES, TOOLS, SamplingParams(max_tokens=1, constrain=False, codec="hermes"))  # warm the cache
    for _ in range(repeats):
        for on in (False, True):
            t0 = time.perf_counter()
            c = model.complete_sync(TOOL_MESSAGES, TOOLS, params[on])[0]
            rates[on].append(c.usage.completion_tokens / (time.perf_counter() - t0))
            tokens[on] = max(tokens[on], c.usage.completion_tokens)
            assert c.constraint == ("gbnf" if on else "none")
    free, constrained = max(rates[False]), max(rates[True])
    return {"free_tps": free, "constrained_tps": constrained, "constrained_overhead": 1 - constrained / free,
            "free_tokens": tokens[False], "constrained_tokens": tokens[True]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_tps(path: str, max_tokens: int, repeats: int, n_threads: int | None) -> float:
    port = free_port()
    threads = ["--n_threads", str(n_threads)] if n_threads else []
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", path, "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "4096", *threads],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("llama_cpp.server did not start")
            time.sleep(0.5)
        model = OpenAICompatModel(url, codec="native")
        rates = []
        for i in range(repeats):
            # a different user turn each time so the server cannot reuse the whole prompt
            msgs = MESSAGES[:-1] + [{"role": "user", "content": f"({i}) " + MESSAGES[-1]["content"]}]
            t0 = time.perf_counter()
            c = model.complete_sync(msgs, None, SamplingParams(temperature=0.0, max_tokens=max_tokens))[0]
            rates.append(c.usage.completion_tokens / (time.perf_counter() - t0))
        return max(rates)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def transformers_tps(path: str, max_tokens: int) -> dict[str, float]:
    from pathlib import Path

    import torch

    from notebook_agent.models.transformers_backend import TransformersModel

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    m = TransformersModel(Path(path).parent, gguf_file=Path(path).name, device="cpu", codec="native")
    load_s = time.perf_counter() - t0
    out: dict[str, float] = {"load_s": load_s}
    for n in (1, 4):
        rates = []
        for seed in range(2):
            t0 = time.perf_counter()
            cs = m.complete_sync(MESSAGES, None, SamplingParams(n=n, temperature=0.8, max_tokens=max_tokens, seed=seed))
            rates.append(sum(c.usage.completion_tokens for c in cs) / (time.perf_counter() - t0))
        out[f"n{n}_tps"] = max(rates)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-coder-1.5b"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--n-threads", type=int, default=None, help="llama.cpp threads (default: its own, half the CPUs)")
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--only-constrained", action="store_true", help="only the constrained vs unconstrained comparison")
    args = ap.parse_args()

    console = Console(stderr=True)
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, float]] = {}
    for name in args.models:
        path = str(registry.pull(name))
        max_tokens = args.max_tokens if "smol" in name else max(32, args.max_tokens // 2)
        console.print(f"[bold]{name}[/bold]: llama.cpp in-process vs direct ({args.repeats} runs, {max_tokens} tokens)")
        model = LlamaCppModel(path, n_ctx=4096, n_threads=args.n_threads, codec="native")
        res: dict[str, float] = {}
        if not args.only_constrained:
            r = ours_vs_direct(model, max_tokens, args.repeats)
            res = {"llamacpp_tps": r["ours_tps"], "direct_tps": r["direct_tps"], "overhead_ratio": r["ratio"]}
        console.print(f"{name}: constrained vs unconstrained tool calls ({args.repeats} runs each, {max_tokens} tokens)")
        cf = constrained_vs_free(model, max_tokens, args.repeats)
        res.update({"unconstrained_tps": cf["free_tps"], "constrained_tps": cf["constrained_tps"],
                    "constrained_overhead": cf["constrained_overhead"],
                    "unconstrained_tokens": cf["free_tokens"], "constrained_tokens": cf["constrained_tokens"]})
        asyncio.run(model.aclose())
        if args.only_constrained:
            results[name] = res
            continue
        if not args.skip_server:
            console.print(f"{name}: OpenAI-compatible backend against llama_cpp.server")
            res["openai_compat_tps"] = server_tps(path, max_tokens, max(1, args.repeats - 1), args.n_threads)
        if not args.skip_transformers and "smol" in name:
            try:
                console.print(f"{name}: transformers on CPU (load + n=1 + n=4 batched)")
                t = transformers_tps(path, max_tokens)
                res.update({"transformers_load_s": t["load_s"], "transformers_n1_tps": t["n1_tps"],
                            "transformers_n4_tps": t["n4_tps"]})
            except ImportError as e:
                console.print(f"transformers skipped: {e}")
        results[name] = res

    table = Table(title=f"models: tokens/s, best of {args.repeats} ({os.cpu_count()} CPUs, "
                        f"llama.cpp threads {args.n_threads or 'default'}, load avg {load_before:.1f} at start)")
    cols = ["llamacpp_tps", "direct_tps", "overhead_ratio", "unconstrained_tps", "constrained_tps",
            "constrained_overhead", "openai_compat_tps", "transformers_n1_tps", "transformers_n4_tps", "transformers_load_s"]
    table.add_column("model")
    for c in cols:
        table.add_column(c, justify="right")
    for name, res in results.items():
        table.add_row(name, *(f"{res[c]:.2f}" if c in res else "-" for c in cols))
    Console(width=200).print(table)
    summary = {
        "llamacpp_overhead_ratio": (round(max(r["overhead_ratio"] for r in results.values()), 3)
                                    if not args.only_constrained else None),
        "constrained_overhead": round(max(r["constrained_overhead"] for r in results.values()), 3),
        "constrained_overhead_per_model": {name: round(r["constrained_overhead"], 3) for name, r in results.items()},
        "tokens_per_s": {f"{name}/{k.removesuffix('_tps')}": round(v, 2) for name, r in results.items()
                         for k, v in r.items() if k.endswith("_tps")},
        "overhead_ratio_per_model": {name: round(r["overhead_ratio"], 3) for name, r in results.items()
                                     if "overhead_ratio" in r},
        "load_avg_at_start": round(load_before, 2),
        "llamacpp_threads": args.n_threads or "default",
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
