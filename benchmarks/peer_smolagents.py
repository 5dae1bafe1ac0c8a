"""The peer users would pick instead: smolagents' CodeAgent on dabench tasks, stored like `eval run`.

    # needs (benchmarks only, not a package dependency): pip install 'notebook-agent[bench]'
    #   (= smolagents[openai], tried with smolagents 1.26.0, and llama-cpp-python[server])
    taskset -c 1 python benchmarks/peer_smolagents.py --model qwen2.5-coder-1.5b \
        --bench dabench:../shared/benchmarks/dabench-dev --max-steps 6 --max-tokens-per-turn 512 \
        --task-timeout 600 --workers 4 --out runs/dev60-smolagents   # resumable: rerun to continue
    notebook-agent eval report runs/dev60-tools-c runs/dev60-smolagents   # ABQ + CI, paired McNemar

Each task runs smolagents' `CodeAgent` (its own system prompt and code format, local Python
executor, no tools but its `final_answer`) with `OpenAIServerModel` against an OpenAI-compatible
server on loopback: by default this script starts `notebook-agent serve` on the registry's GGUF
(`--n-ctx 8192`, `--n-threads 1`, `--parallel` = `--workers`: the batching engine our own eval
runs use, so `--workers 4` here matches `eval.py accuracy --workers 4`) and stops it at the
end; `--server-kind llama_cpp` starts `python -m llama_cpp.server` instead (one request at a
time), and `--server URL` (an OpenAI base URL, `.../v1`) uses a running one.

Same setting as our `benchmarks/eval.py accuracy` runs, as far as the two designs allow:
- the same tasks in the same order (`--limit`, `--per-level`: the same `pick`);
- the task text is our agent's first message (`agent.prompts.first_message`: question,
  constraints, answer format, the file's name, size, columns and first rows), and the file is
  in the current directory (a fresh temporary directory per task, holding a copy);
- greedy decoding (temperature 0), `--max-tokens-per-turn` completion tokens per model call,
  `--max-steps` action steps (our `--max-turns`: one model call each), `--task-timeout` seconds
  of wall time per task, enforced by running each task in its own process and killing it
  (status `timeout`); smolagents cannot be interrupted otherwise;
- scored with the benchmark's official scorer (`scorer_for`), the function our runner uses.

Differences to know when reading the figures: when smolagents reaches max steps without an
answer it makes ONE more model call ("provide an answer from the memory"), whose text is
scored as given (status `max_turns`, `forced_answer: true` in the record; our agent scores
the last answer-like text written after code ran, and makes no extra call). smolagents'
executor is an AST interpreter in the task's process with an import allow-list (`WANTED_IMPORTS`),
not a sandboxed kernel. `wall_s` counts the whole task process (Python start and smolagents
import, a few seconds, included); `model_s` the model calls.

Records (`OUT/results.jsonl`) carry the fields of our runs' records (id, status, answer,
correct, fraction, n_sub, n_right, answered, level, concepts, *_tokens, turns, wall_s, model_s,
...), so `notebook-agent eval report` reads the directory; statuses use our names: answered,
max_turns, timeout, max_tokens (the server refused a prompt longer than its context),
model_error (server unreachable; retried by a rerun) and crashed (the harness; retried).
`OUT/run.json` holds the settings (model, server, smolagents version, limits, git commit).
The last line printed is one JSON object: abq, abq_ci, psaq, uasq, n, by_level, mean_tokens,
mean_task_s, minutes, status_counts.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor, as_completed
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

# What the model's code may import in smolagents' executor (on top of its own safe list): the
# data-science stack a notebook has, those installed here (smolagents refuses to list others;
# importing one fails, as it does in our kernels). `authorized_imports()` is the list used.
WANTED_IMPORTS = ["pandas", "pandas.*", "numpy", "numpy.*", "scipy", "scipy.*", "sklearn", "sklearn.*",
           "statsmodels", "statsmodels.*", "matplotlib", "matplotlib.*", "seaborn", "math", "statistics",
           "collections", "datetime", "itertools", "re", "json", "csv", "functools", "operator", "decimal",
           "fractions"]
SCAFFOLD = "smolagents-codeagent"


def authorized_imports() -> list[str]:
    import importlib.util

    return [m for m in WANTED_IMPORTS if importlib.util.find_spec(m.split(".")[0]) is not None]

OBS_CHARS = 4000  # observations kept per step in the record's trajectory


# ---------------------------------------------------------------------------------------------
# The task process: one smolagents run, its events appended to a JSONL file as they happen.


def _text(content: Any) -> str | None:
    """A chat message's content as text (smolagents may hold a list of text parts)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _cause_status(exc: BaseException) -> tuple[str, str]:
    """Our status for an error that ended a smolagents run: the server's, or ours."""
    chain, e = [], exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    names = {type(x).__name__ for x in chain}
    text = " ".join(str(x) for x in chain).lower()
    if "context" in text and ("exceed" in text or "window" in text or "too long" in text):
        return "max_tokens", "the prompt did not fit the server's context window"
    if names & {"APIConnectionError", "APITimeoutError", "ConnectError", "ConnectionError",
                "InternalServerError", "APIStatusError", "BadRequestError", "RateLimitError"}:
        return "model_error", f"{type(chain[-1]).__name__}: {str(chain[-1])[:300]}"
    if "AgentGenerationError" in names:
        return "model_error", str(exc)[:300]
    return "crashed", f"{type(exc).__name__}: {str(exc)[:300]}"


def run_child(spec: dict[str, Any]) -> None:
    """Run one task (in its work directory) and write its events; never raises."""
    events = open(spec["events"], "a", encoding="utf-8")

    def emit(kind: str, **data: Any) -> None:
        events.write(json.dumps({"kind": kind, "t": time.time(), **data}, default=str) + "\n")
        events.flush()

    t0 = time.monotonic()
    try:
        from smolagents import CodeAgent, OpenAIServerModel
        from smolagents.memory import ActionStep
        from smolagents.monitoring import LogLevel

        class TimedModel(OpenAIServerModel):
            def generate(self, *args: Any, **kwargs: Any) -> Any:
                start = time.monotonic()
                try:
                    msg = super().generate(*args, **kwargs)
                except BaseException as e:
                    emit("model", s=time.monotonic() - start, error=f"{type(e).__name__}: {str(e)[:300]}")
                    raise
                u = msg.token_usage
                emit("model", s=time.monotonic() - start, prompt_tokens=u.input_tokens if u else 0,
                     completion_tokens=u.output_tokens if u else 0)
                return msg

        model = TimedModel(model_id=spec["model_id"], api_base=spec["base_url"], api_key="none",
                           client_kwargs={"max_retries": 0, "timeout": spec["request_timeout"]},
                           flatten_messages_as_text=True, temperature=0.0, max_tokens=spec["max_tokens"])

        def on_step(step: Any) -> None:
            if isinstance(step, ActionStep):
                emit("step", n=step.step_number, model_output=_text(step.model_output), code=step.code_action,
                     observations=(step.observations or "")[:OBS_CHARS] or None,
                     error=str(step.error) if step.error else None, final=step.is_final_answer,
                     output=None if step.action_output is None else str(step.action_output)[:OBS_CHARS])

        agent = CodeAgent(tools=[], model=model, additional_authorized_imports=spec["imports"],
                          max_steps=spec["max_steps"], verbosity_level=LogLevel.OFF, step_callbacks=[on_step])
        emit("start", startup_s=time.monotonic() - t0)
        result = agent.run(spec["prompt"], return_full_result=True)
        forced = result.state != "success"
        output = result.output
        emit("end", status="max_turns" if forced else "answered", forced_answer=forced,
             answer=None if output is None else _text(output) if isinstance(output, list) else str(output),
             detail=f"no final answer after {spec['max_steps']} steps" if forced else "",
             agent_s=time.monotonic() - t0)
    except Exception as e:
        status, detail = _cause_status(e)
        emit("end", status=status, detail=detail, answer=None, error=traceback.format_exc()[-4000:])
    finally:
        events.close()


# ---------------------------------------------------------------------------------------------
# The harness: events -> one record in our format.


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by a kill
    return out


def make_record(task: Any, events: list[dict[str, Any]], wall_s: float, scorer: Any, *,
                timed_out: bool = False, timeout_s: float | None = None, child_log: str = "") -> dict[str, Any]:
    """One results.jsonl record, with the fields our runner writes, from a task process's events."""
    from notebook_agent.eval.results import safe_score, verdict

    end = next((e for e in reversed(events) if e["kind"] == "end"), None)
    calls = [e for e in events if e["kind"] == "model"]
    steps = [e for e in events if e["kind"] == "step"]
    if timed_out:
        status, detail, answer, error = "timeout", f"task timeout of {timeout_s:g} s reached", None, None
    elif end is None:
        status, detail, answer = "crashed", "the task process ended without a result", None
        error = child_log[-4000:] or None
    else:
        status, detail, answer, error = end["status"], end.get("detail", ""), end.get("answer"), end.get("error")
    prompt_tokens = sum(int(c.get("prompt_tokens") or 0) for c in calls)
    completion_tokens = sum(int(c.get("completion_tokens") or 0) for c in calls)
    start = next((e for e in events if e["kind"] == "start"), None)
    return {
        "id": task.id,
        "status": status,
        "status_detail": detail,
        "answer": answer,
        "scorer": scorer.name,
        **verdict(safe_score(scorer, task, answer)),  # as our runner: a scorer bug counts the task wrong
        "level": task.level,
        "concepts": list(task.concepts),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "turns": len(calls),            # model calls, the forced final answer's included
        "steps": len(steps),            # smolagents action steps
        "forced_answer": bool(end and end.get("forced_answer")),
        "wall_s": round(wall_s, 3),
        "model_s": round(sum(float(c.get("s") or 0.0) for c in calls), 3),
        "startup_s": round(float(start["startup_s"]), 3) if start else None,
        "error": error,
        "notebook": None,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "trajectory": {"scaffold": SCAFFOLD, "steps": steps, "model_calls": calls},
    }


def drain(base_url: str, model_id: str, timeout_s: float = 900.0) -> None:
    """Wait until the server finished the request a killed task left running (llama_cpp.server
    serves one at a time and does not stop on a client's disconnect), so the next task's time
    is its own. Not needed with `notebook-agent serve`, which cancels a gone client's request."""
    import httpx

    try:
        httpx.post(base_url.rstrip("/") + "/chat/completions", timeout=timeout_s,
                   json={"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    except httpx.HTTPError:
        pass


def run_task(task: Any, prompt: str, spec: dict[str, Any], scorer: Any, timeout_s: float) -> dict[str, Any]:
    """Run one task in a fresh directory and a process of its own; never raises."""
    tmp = Path(tempfile.mkdtemp(prefix="peer-smolagents-"))
    work = tmp / "work"
    work.mkdir()
    try:
        for f in task.files:
            shutil.copy2(f, work / Path(f).name)
        events_path, spec_path, log_path = tmp / "events.jsonl", tmp / "spec.json", tmp / "task.log"
        spec_path.write_text(json.dumps({**spec, "prompt": prompt, "events": str(events_path)}))
        t0 = time.monotonic()
        timed_out = False
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                                    cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except BaseException:  # Ctrl-C: take the task process down with us
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        wall = time.monotonic() - t0
        events = read_events(events_path)
        if any(e["kind"] == "end" for e in events):
            timed_out = False  # it finished just as the limit came
        record = make_record(task, events, wall, scorer, timed_out=timed_out, timeout_s=timeout_s,
                             child_log=log_path.read_text(errors="replace"))
        if timed_out and spec.get("drain", True):
            drain(spec["base_url"], spec["model_id"])
        return record
    except Exception as e:  # the harness failed on this task: a `crashed` record, retried by a rerun
        rec = make_record(task, [], 0.0, scorer)
        rec.update(status="crashed", status_detail=f"{type(e).__name__}: {e}", error=traceback.format_exc())
        return rec
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The server.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(gguf: Path, n_ctx: int, n_threads: int, log: Path, kind: str = "ours", parallel: int = 1,
                 name: str = "model") -> tuple[subprocess.Popen, str, list[str]]:
    """On loopback, returning once it answers /v1/models: `notebook-agent serve` (kind "ours":
    the same batching engine our own eval runs use, `parallel` sequences at once) or
    `python -m llama_cpp.server` (one request at a time)."""
    import httpx

    port = free_port()
    if kind == "ours":
        cmd = [sys.executable, "-m", "notebook_agent.cli", "serve", str(gguf), "--host", "127.0.0.1", "--port", str(port),
               "--n-ctx", str(n_ctx), "--threads", str(n_threads), "--parallel", str(parallel), "--name", name]
    else:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
               "--n_ctx", str(n_ctx), "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads)]
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                return proc, url, cmd
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"the model server did not start (see {log})")
        time.sleep(0.5)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def base_url(url: str) -> str:
    """An OpenAI base URL: `http://host:port` becomes `http://host:port/v1`."""
    from urllib.parse import urlparse

    return url.rstrip("/") + "/v1" if urlparse(url).path.strip("/") == "" else url.rstrip("/")


# ---------------------------------------------------------------------------------------------
# The run.


def print_summary(args: argparse.Namespace, out: Path, minutes: float, n_run: int) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    from notebook_agent.eval.report import load_run
    from notebook_agent.tasks.scoring import level_key

    run = load_run(out)
    m, ci = run.metrics, run.intervals()
    table = Table(title=f"{args.bench} with {args.model}: smolagents CodeAgent ({args.max_steps} steps, "
                  f"{args.max_tokens_per_turn} tokens/call, {args.task_timeout:g} s/task)", title_justify="left")
    for i, h in enumerate(["level", "n", "ABQ %", "ABQ 95% CI", "PSAQ %", "UASQ %"]):
        table.add_column(h, justify="left" if i == 0 else "right")
    table.add_row("overall", str(m.n), f"{100 * m.abq:.1f}", f"[{100 * ci['abq'][0]:.1f}, {100 * ci['abq'][1]:.1f}]",
                  f"{100 * m.psaq:.1f}", f"{100 * m.uasq:.1f}")
    from notebook_agent.eval.stats import wilson_interval

    for lv, g in sorted(m.by_level.items(), key=lambda kv: level_key(kv[0])):
        lo, hi = wilson_interval(g.n_correct, g.n)
        table.add_row(lv, str(g.n), f"{100 * g.abq:.1f}", f"[{100 * lo:.1f}, {100 * hi:.1f}]",
                      f"{100 * g.psaq:.1f}", f"{100 * g.uasq:.1f}")
    Console().print(table)
    print(f"mean tokens/task {run.mean_tokens:.0f}, mean time/task {run.mean_wall_s:.1f} s, "
          f"task-minutes {run.total_wall_min:.1f}, wall minutes (this call) {minutes:.1f}, "
          f"statuses {run.status_counts}")
    return {"abq": m.abq, "abq_ci": list(ci["abq"]), "psaq": m.psaq, "uasq": m.uasq, "n": m.n,
            "by_level": {k: {"abq": g.abq, "psaq": g.psaq, "uasq": g.uasq, "n": g.n} for k, g in m.by_level.items()},
            "mean_tokens": run.mean_tokens, "mean_task_s": run.mean_wall_s, "task_minutes": run.total_wall_min,
            "minutes": minutes, "run_now": n_run, "status_counts": run.status_counts, "model": args.model,
            "scaffold": SCAFFOLD, "machine": platform.platform()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--model", default="qwen2.5-coder-1.5b", help="a registry model or a GGUF path")
    p.add_argument("--bench", default="dabench:../shared/benchmarks/dabench-dev")
    p.add_argument("--out")
    p.add_argument("--per-level", type=int, default=None, help="first K tasks of each level")
    p.add_argument("--limit", "--tasks", dest="limit", type=int, default=None, help="first K tasks")
    p.add_argument("--max-steps", type=int, default=6, help="smolagents action steps (our --max-turns)")
    p.add_argument("--max-tokens-per-turn", type=int, default=512, help="max_tokens of each model call")
    p.add_argument("--task-timeout", type=float, default=300.0, help="wall seconds per task (killed after)")
    p.add_argument("--no-preview", action="store_true", help="no columns/rows preview of tables in the task text")
    p.add_argument("--server", default=None, help="an OpenAI-compatible base URL to use instead of starting one")
    p.add_argument("--n-ctx", type=int, default=8192)
    p.add_argument("--n-threads", type=int, default=1, help="llama.cpp threads of the server this script starts")
    p.add_argument("--workers", type=int, default=1, help="tasks run at once (the server decodes them together)")
    p.add_argument("--server-kind", choices=["ours", "llama_cpp"], default="ours",
                   help="the server this script starts: `notebook-agent serve` (batching, as our runs) or llama_cpp.server")
    p.add_argument("--allow-changed-settings", action="store_true")
    args = p.parse_args()
    if args.child:
        here = Path(__file__).resolve().parent  # benchmarks/ holds models.py, data.py...: not importable there
        sys.path = [p for p in sys.path if p and Path(p).resolve() != here]
        run_child(json.loads(Path(args.child).read_text()))
        return
    if not args.out:
        p.error("--out is required")

    from importlib.metadata import version

    from eval import pick  # benchmarks/eval.py: the same task selection as our accuracy runs
    from notebook_agent.agent.prompts import first_message
    from notebook_agent.eval.runner import SettingsMismatch, _exclusive, _prepare_run_file, git_commit
    from notebook_agent.models import registry
    from notebook_agent.tasks.loaders import benchmark_kind, load_benchmark
    from notebook_agent.tasks.records import RESULTS_FILE, ResultsWriter, is_final, latest_by_id, read_records
    from notebook_agent.tasks.scoring import scorer_for

    loaded = load_benchmark(args.bench)
    if loaded.errors:
        print(f"skipped {len(loaded.errors)} record(s): {[str(e) for e in loaded.errors[:5]]}", file=sys.stderr)
    tasks = pick(loaded.tasks, args.per_level, args.limit)
    scorer = scorer_for(benchmark_kind(args.bench))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    with _exclusive(out):
        previous = latest_by_id(read_records(out / RESULTS_FILE)[0])
        todo = [t for t in tasks if not (t.id in previous and is_final(previous[t.id]))]
        gguf = None if args.server else (Path(args.model) if args.model.endswith(".gguf") else registry.pull(args.model))
        settings = {
            "benchmark": args.bench, "model": args.model, "benchmark_tool": "peer_smolagents.py", "scorer": scorer.name,
            "scaffold": SCAFFOLD,
            "agent_config": {"scaffold": SCAFFOLD, "max_turns": args.max_steps, "max_wall_s": args.task_timeout,
                             "max_tokens_per_turn": args.max_tokens_per_turn, "temperature": 0.0,
                             "file_preview": not args.no_preview, "authorized_imports": authorized_imports()},
            "smolagents_version": version("smolagents"),
            "server": {"url": args.server, "started": args.server is None, "gguf": str(gguf) if gguf else None,
                       "n_ctx": None if args.server else args.n_ctx,
                       "n_threads": None if args.server else args.n_threads,
                       "kind": None if args.server else args.server_kind},
            "workers": args.workers, "task_timeout_s": args.task_timeout, "git_commit": git_commit(),
            "python": platform.python_version(), "platform": platform.platform(),
        }
        try:
            _prepare_run_file(out, settings, len(tasks), len(todo), loaded.errors,
                              check_settings=not args.allow_changed_settings)
        except SettingsMismatch as e:
            sys.exit(str(e))
        print(f"{len(tasks)} task(s), {len(tasks) - len(todo)} already done, {len(todo)} to run", flush=True)
        server = None
        if todo:
            if args.server:
                url = base_url(args.server)
            else:
                server, url, cmd = start_server(gguf, args.n_ctx, args.n_threads, out / "server.log", args.server_kind,
                                                args.workers, args.model)
                print(f"server: {' '.join(cmd)}", flush=True)
            # only llama_cpp.server keeps decoding for a killed client: ours cancels on disconnect,
            # and a drain request would only take a slot and evict a cached prompt prefix
            drains = bool(args.server) or args.server_kind != "ours"
            spec = {"base_url": url, "model_id": args.model, "max_steps": args.max_steps, "drain": drains,
                    "max_tokens": args.max_tokens_per_turn, "imports": authorized_imports(),
                    "request_timeout": args.task_timeout + 60}
        try:
            with ResultsWriter(out / RESULTS_FILE) as writer, ThreadPoolExecutor(max(1, args.workers)) as pool:
                futures = [pool.submit(run_task, task, first_message(task, preview=not args.no_preview), spec, scorer,
                                       args.task_timeout) for task in todo]
                for i, fut in enumerate(as_completed(futures), 1):
                    rec = fut.result()
                    task = next(t for t in todo if t.id == rec["id"])
                    writer.append(rec)
                    verdict = "unscored" if not rec["n_sub"] else ("right" if rec["correct"] else "wrong")
                    print(f"[{i}/{len(todo)}] {task.id} ({task.level}): {rec['status']}, {verdict} "
                          f"({rec['n_right']}/{rec['n_sub']}), {rec['wall_s']:.0f} s, {rec['total_tokens']} tokens, "
                          f"{rec['turns']} model calls, answer {str(rec['answer'])[:80]!r}", flush=True)
                    if server is not None and server.poll() is not None:
                        for f in futures:
                            f.cancel()
                        sys.exit(f"the model server exited (see {out / 'server.log'}); rerun to continue")
        except KeyboardInterrupt:
            print("\ninterrupted: finished tasks are saved; rerun the same command to continue.", file=sys.stderr)
            raise
        finally:
            if server is not None:
                stop_server(server)
    print(json.dumps(print_summary(args, out, (time.monotonic() - t_start) / 60, len(todo))))


if __name__ == "__main__":
    main()
