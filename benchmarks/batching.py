"""The batching engine (models/engine.py) on this machine: what decoding many sequences at once buys.

    taskset -c 1 .venv/bin/python benchmarks/batching.py --model qwen2.5-coder-1.5b
    .venv/bin/python benchmarks/batching.py --model smollm2-135m --quick

Four measurements, each compared within one run (the machine is shared; ratios, not absolutes):

1. total generated tokens/s with 1, 2, 4, 8 concurrent requests (different prompts, greedy,
   `--max-tokens` each; the prompts are evaluated beforehand, so this is decoding);
2. n=3 samples of one agent step (one request, temperature 0.8) against 3 separate calls
   one after the other: the prompt is evaluated once and the 3 sequences decode together;
3. prompt-lookup speculation on an agent turn that copies earlier code (greedy), drafts of 4
   and 8 tokens against none; whether the text is the same is reported (a draft is checked in
   a batch of several tokens, whose floating-point sums differ from one token's, so greedy
   text may part where two tokens are nearly tied);
4. flash attention on and off for prompt evaluation.

`--builds default,/path/to/other` compares llama.cpp builds (e.g. the portable AVX2 wheel
against one compiled with AVX-512 VNNI): each build runs decoding (`--levels`) and prompt
evaluation in a child process of its own (`PYTHONPATH=BUILD`; `default` is the installed
one), the builds alternating `--repeats` times so that both see the same load; the best of
each is compared.

    taskset -c 1 .venv/bin/python benchmarks/batching.py --builds default,/opt/llama512 --levels 1,4

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from notebook_agent.models import registry
from notebook_agent.models.base import SamplingParams
from notebook_agent.models.llamacpp import LlamaCppModel

from models import TOOLS  # benchmarks/models.py: the agent's two tools

PROMPTS = [
    "Write Python code that loads data.csv with pandas and prints the mean of each numeric column.",
    "Write a Python function that returns the n-th Fibonacci number, with a docstring.",
    "Write Python code that reads sales.csv and plots monthly totals with matplotlib.",
    "Write Python code that computes the Pearson correlation between columns a and b of df.",
    "Write Python code that removes outliers beyond 3 standard deviations from column x.",
    "Write Python code that fits a linear regression of y on x with scikit-learn and prints R^2.",
    "Write Python code that counts missing values per column in a pandas DataFrame.",
    "Write Python code that groups df by 'city' and prints the median 'price' per city.",
]
# An agent turn after a cell failed on a typo: the fix copies most of the earlier code.
CODE = ("import pandas as pd\ndf = pd.read_csv('titanic.csv')\nsurvived = df[df['Survived'] == 1]\n"
        "by_class = survived.groupby('Pclass')['Fare'].agg(['mean', 'median', 'std'])\nprint(by_class.round(2))\n")
AGENT_TURN = [
    {"role": "system", "content": "You are a data analyst working in a Jupyter notebook."},
    {"role": "user", "content": "For passengers who survived, give the mean, median and standard deviation of the fare "
                                "per class, rounded to 2 decimals."},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "execute_code", "arguments": json.dumps({"comment": "Fare statistics per class for survivors.",
                                                         "code": CODE.replace("'Fare'", "'fare'")})}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "KeyError: 'fare'\nThe column names are: PassengerId, Survived, "
                                                       "Pclass, Name, Sex, Age, SibSp, Parch, Ticket, Fare, Cabin, Embarked"},
]


def user(q: str) -> list[dict]:
    return [{"role": "user", "content": q}]


async def concurrency(model: LlamaCppModel, levels: list[int], max_tokens: int) -> dict[int, dict[str, float]]:
    out = {}
    g = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    for n in levels:
        msgs = [user(PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS))) for i in range(n)]
        model.engine.clear()
        # prompts evaluated beforehand (each slot keeps its own): the timed part is decoding
        await asyncio.gather(*[model.complete(m, None, SamplingParams(max_tokens=1)) for m in msgs])
        t0 = time.perf_counter()
        res = await asyncio.gather(*[model.complete(m, None, g) for m in msgs])
        wall = time.perf_counter() - t0
        gen = sum(r[0].usage.completion_tokens for r in res)
        out[n] = {"wall_s": wall, "tokens": gen, "tokens_per_s": gen / wall}
    return out


async def samples_vs_calls(model: LlamaCppModel, max_tokens: int, repeats: int) -> dict[str, float]:
    """Best of `repeats` each, alternating; both with the prompt evaluated from scratch."""
    one_t, three_t, tok_one, tok_three = [], [], 0, 0
    for r in range(repeats):
        p = SamplingParams(n=3, temperature=0.8, max_tokens=max_tokens, seed=100 + r)
        model.engine.clear()
        t0 = time.perf_counter()
        res = await model.complete(AGENT_TURN, TOOLS, p)
        one_t.append(time.perf_counter() - t0)
        tok_one = sum(c.usage.completion_tokens for c in res)
        model.engine.clear()
        t0 = time.perf_counter()
        calls = []
        for i in range(3):  # what a caller without n does: one call after another
            if i:
                model.engine.clear()  # a separate call does not find the prompt cached by luck
            calls += await model.complete(AGENT_TURN, TOOLS, SamplingParams(temperature=0.8, max_tokens=max_tokens,
                                                                           seed=100 + r + i))
        three_t.append(time.perf_counter() - t0)
        tok_three = sum(c.usage.completion_tokens for c in calls)
    return {"n3_s": min(one_t), "three_calls_s": min(three_t), "ratio": min(one_t) / min(three_t),
            "n3_tokens": tok_one, "three_calls_tokens": tok_three}


async def speculation(path: str, n_threads: int | None, drafts: list[int], max_tokens: int) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    texts = {}
    g = SamplingParams(temperature=0.0, max_tokens=max_tokens, codec="hermes")
    for d in drafts:
        m = LlamaCppModel(path, n_ctx=4096, n_threads=n_threads, speculate=d)
        try:
            await m.complete(AGENT_TURN, TOOLS, SamplingParams(max_tokens=1, codec="hermes"))  # prompt cached
            st = m.engine.stats
            gen0, steps0 = st.generated, st.steps
            t0 = time.perf_counter()
            c = (await m.complete(AGENT_TURN, TOOLS, g))[0]
            wall = time.perf_counter() - t0
            texts[d] = c.raw_text
            out[d] = {"tokens_per_s": c.usage.completion_tokens / wall, "tokens": c.usage.completion_tokens,
                      "steps": st.steps - steps0, "accepted": st.accepted, "drafted": st.drafted,
                      "same_text": texts[d] == texts[drafts[0]]}
            assert st.generated - gen0 == c.usage.completion_tokens
        finally:
            await m.aclose()
    return out


async def flash_attention(path: str, n_threads: int | None, prompt_tokens: int) -> dict[str, float]:
    out = {}
    for fa in (False, True):
        m = LlamaCppModel(path, n_ctx=4096, n_threads=n_threads, flash_attn=fa)
        try:
            msg = user("word " * prompt_tokens)
            t0 = time.perf_counter()
            c = (await m.complete(msg, None, SamplingParams(max_tokens=1)))[0]
            out["on" if fa else "off"] = c.usage.prompt_tokens / (time.perf_counter() - t0)
        finally:
            await m.aclose()
    return out


def table(title: str, cols: list[str], rows: list[list[str]]) -> None:
    t = Table(title=title)
    for i, c in enumerate(cols):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*r)
    Console(width=160).print(t)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--levels", default="1,2,4,8")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--n-threads", type=int, default=1)
    ap.add_argument("--drafts", default="0,4,8")
    ap.add_argument("--prompt-words", type=int, default=600, help="prompt length for the prompt-evaluation part")
    ap.add_argument("--quick", action="store_true", help="levels 1,4; one repeat")
    ap.add_argument("--parts", default="concurrency,samples,speculation,flash",
                    help="which measurements, comma-separated")
    ap.add_argument("--builds", help="compare llama.cpp builds: 'default' and/or folders holding llama_cpp/")
    ap.add_argument("--models", help="compare weight files (registry names or GGUF paths, e.g. the same model "
                                     "quantized two ways) with each build")
    args = ap.parse_args()
    if args.builds or args.models:
        return compare_variants(args)
    parts = set(args.parts.split(","))
    levels = [1, 4] if args.quick else [int(x) for x in args.levels.split(",")]
    repeats = 1 if args.quick else args.repeats
    path = args.model if args.model.endswith(".gguf") else str(registry.pull(args.model))
    load = os.getloadavg()[0]
    model = LlamaCppModel(path, n_ctx=2048, n_threads=args.n_threads, n_seq=max(levels + [3]), codec="hermes")
    conc: dict = {}
    nvs: dict = {}
    spec: dict = {}
    fa: dict = {}
    try:
        await model.complete(user("hi"), None, SamplingParams(max_tokens=2))  # warm up
        if "concurrency" in parts:
            conc = await concurrency(model, levels, args.max_tokens)
        if "samples" in parts:
            nvs = await samples_vs_calls(model, args.max_tokens, repeats)
    finally:
        await model.aclose()
    if "speculation" in parts:
        spec = await speculation(path, args.n_threads, [int(x) for x in args.drafts.split(",")], 4 * args.max_tokens)
    if "flash" in parts:
        fa = await flash_attention(path, args.n_threads, args.prompt_words)
    import llama_cpp

    summary: dict = {"model": args.model, "n_threads": args.n_threads, "load_avg_at_start": round(load, 2),
                     "llama_cpp": os.path.dirname(llama_cpp.__file__),
                     "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip()}
    if conc:
        report_concurrency(args, load, levels, conc, summary)
    if nvs:
        table("n=3 samples of one agent step vs 3 calls (best of repeats)", ["setting", "s", "tokens"],
              [["n=3 in one request", f"{nvs['n3_s']:.1f}", str(nvs["n3_tokens"])],
               ["3 calls, one after another", f"{nvs['three_calls_s']:.1f}", str(nvs["three_calls_tokens"])],
               ["ratio", f"{nvs['ratio']:.2f}", ""]])
        summary["n3_vs_three_calls"] = round(nvs["ratio"], 3)
    if spec:
        table("prompt-lookup speculation on an agent turn (greedy)",
              ["draft", "tokens/s", "tokens", "steps", "accepted/drafted", "same text"],
              [[str(d), f"{r['tokens_per_s']:.2f}", str(r["tokens"]), str(r["steps"]), f"{r['accepted']}/{r['drafted']}",
                str(r["same_text"])] for d, r in spec.items()])
        summary["speculation_tokens_per_s"] = {d: round(r["tokens_per_s"], 2) for d, r in spec.items()}
        summary["speculation_same_text"] = all(r["same_text"] for r in spec.values())
    if fa:
        table(f"prompt evaluation, {args.prompt_words}-word prompt", ["flash attention", "prompt tokens/s"], [[k, f"{v:.1f}"] for k, v in fa.items()])
        summary["flash_attn_prompt_speedup"] = round(fa["on"] / fa["off"], 2)
        summary["prompt_tokens_per_s"] = {k: round(v, 2) for k, v in fa.items()}
    print(json.dumps(summary))


def compare_variants(args: argparse.Namespace) -> None:
    """Each (build, weights) variant in a child process (one process loads one llama_cpp),
    alternating over repeats, so that every variant sees the same load."""
    builds = (args.builds or "default").split(",")
    models = (args.models or args.model).split(",")
    variants = [(b, m) for b in builds for m in models]

    def name(build: str, model: str) -> str:
        """What tells this variant apart: its build, its weight file, or both."""
        parts = ([build] if len(builds) > 1 else []) + ([os.path.basename(model)] if len(models) > 1 else [])
        return " / ".join(parts) or build

    label = {v: name(*v) for v in variants}
    if len(set(label.values())) < len(variants):
        raise SystemExit("two variants would share a label: give the weight files distinct names")
    runs: dict[tuple[str, str], list[dict]] = {v: [] for v in variants}
    for r in range(max(1, args.repeats)):
        for b, m in variants:
            env = dict(os.environ)
            if b != "default":
                if not os.path.isdir(os.path.join(b, "llama_cpp")):
                    raise SystemExit(f"{b}: no llama_cpp/ package in it")
                env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(b), env.get("PYTHONPATH", "")])
            cmd = [sys.executable, __file__, "--model", os.path.abspath(m) if m.endswith(".gguf") else m,
                   "--levels", args.levels, "--max-tokens", str(args.max_tokens), "--n-threads", str(args.n_threads),
                   "--repeats", "1", "--parts", "concurrency,flash", "--prompt-words", str(args.prompt_words)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=os.path.dirname(__file__))
            if out.returncode != 0:
                raise SystemExit(f"{label[(b, m)]} failed:\n{out.stderr[-2000:]}")
            runs[(b, m)].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"repeat {r + 1}, {label[(b, m)]}: {runs[(b, m)][-1]['tokens_per_s_by_sequences']}", file=sys.stderr)
    levels = [str(int(x)) for x in args.levels.split(",")]
    best = {label[v]: {"build": v[0], "model": v[1],
                       "decode": {n: max(x["tokens_per_s_by_sequences"][n] for x in rs) for n in levels},
                       "prompt": max(x["prompt_tokens_per_s"]["off"] for x in rs),
                       "avx512": "AVX512 = 1" in rs[0]["system_info"]} for v, rs in runs.items()}
    ref = next(iter(best.values()))
    table(f"llama.cpp builds and weights ({args.n_threads} thread(s), best of {args.repeats}, alternating)",
          ["variant", "AVX-512", *[f"decode x{n} tok/s" for n in levels], "prompt tok/s",
           *[f"decode x{n} vs first" for n in levels], "prompt vs first"],
          [[k, str(v["avx512"]), *[f"{v['decode'][n]:.2f}" for n in levels], f"{v['prompt']:.1f}",
            *[f"{v['decode'][n] / ref['decode'][n]:.2f}x" for n in levels], f"{v['prompt'] / ref['prompt']:.2f}x"]
           for k, v in best.items()])
    print(json.dumps({"model": args.model, "n_threads": args.n_threads, "repeats": args.repeats, "variants": best}))


def report_concurrency(args: argparse.Namespace, load: float, levels: list[int], conc: dict, summary: dict) -> None:
    base = conc[levels[0]]["tokens_per_s"]
    table(f"{args.model}: concurrent requests ({args.max_tokens} tokens each, {args.n_threads} thread(s), load {load:.1f})",
          ["sequences", "wall s", "tokens", "tokens/s", "vs 1"],
          [[str(n), f"{r['wall_s']:.1f}", str(r["tokens"]), f"{r['tokens_per_s']:.2f}", f"{r['tokens_per_s'] / base:.2f}x"]
           for n, r in conc.items()])
    summary["tokens_per_s_by_sequences"] = {n: round(r["tokens_per_s"], 2) for n, r in conc.items()}
    summary["speedup_max_sequences"] = round(conc[levels[-1]]["tokens_per_s"] / base, 2)


if __name__ == "__main__":
    asyncio.run(main())
