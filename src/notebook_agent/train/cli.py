"""`notebook-agent train sft|value|value-eval`: fine-tune a policy on traces, a value model
on trees or attempts, and measure the value model on held-out states.

    notebook-agent train sft --model smollm2-135m --dataset traces.jsonl --out runs/sft
    notebook-agent train value --model runs/sft --trees trees/ --runs runs/teacher --out runs/value
    notebook-agent train value-eval --model runs/value --runs runs/teacher-heldout --out value-eval.json

Both end with one JSON line (what was trained, losses, where it was saved). torch, TRL, peft
and datasets are imported only when a command runs (`pip install 'notebook-agent[train]'`).
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

app = typer.Typer(help="Train a policy (SFT on traces) or a value model (on search trees).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _need_train_extra() -> None:
    missing = []
    for mod in ("torch", "transformers", "trl", "datasets", "peft"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        print(f"training needs {', '.join(missing)}: pip install torch==2.13.0 'notebook-agent[train]'", file=sys.stderr)
        raise typer.Exit(2)


@app.command()
def sft(
    model: str = typer.Option(..., help="base model: registry name, .gguf file, model directory or HF repo id"),
    dataset: list[str] = typer.Option(..., help="chat JSONL, datasets directory, or Trajectory JSON file(s); "
                                      "repeat to mix sources"),
    out: str = typer.Option(..., help="output directory (the trained model, loadable by TransformersModel)"),
    template: str | None = typer.Option(None, help="qwen2_5, qwen3, smollm2, gemma3 or a .jinja file; default: detected"),
    codec: str | None = typer.Option(None, help="tool-call codec; default: the family's (hermes for Qwen, react else)"),
    epochs: float = 5.0,
    lr: float = typer.Option(2e-5, help="learning rate (about 2e-4 with --lora)"),
    batch_size: int = 8,
    grad_accum: int = 1,
    max_length: int = 4096,
    packing: bool = typer.Option(False, help="BFD packing into max_length rows (padding-free)"),
    padding_free: bool = False,
    neftune_alpha: float = typer.Option(7.0, help="NEFTune noise alpha (0: off)"),
    lora: bool = typer.Option(False, help="train LoRA adapters (merged into the saved model)"),
    lora_r: int = 16,
    lora_alpha: int = 32,
    attn: str | None = typer.Option(None, help="attention implementation (sdpa, flash_attention_2, ...)"),
    gradient_checkpointing: bool = False,
    liger: bool = typer.Option(False, help="Liger kernels (pip install liger-kernel; GPU)"),
    max_steps: int = -1,
    seed: int = 0,
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="default: on with CUDA or a CPU with bf16 support"),
    gguf: bool = typer.Option(True, help="also write OUT/model.gguf (F16, for llama.cpp) when the base is a GGUF"),
    max_examples: Optional[int] = typer.Option(None, help="train on a seeded random subset of this many examples "
                                                "of each --dataset"),
) -> None:
    """Supervised fine-tuning with loss on assistant turns only (TRL SFTTrainer)."""
    _need_train_extra()
    from .chat_data import DatasetError
    from .sft import LoraSettings, SFTSettings, train_sft

    try:
        settings = SFTSettings(model=model, dataset=dataset[0] if len(dataset) == 1 else dataset, out=out, template=template, codec=codec, epochs=epochs,
                               learning_rate=lr, batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
                               packing=packing, padding_free=padding_free, neftune_alpha=neftune_alpha or None,
                               lora=LoraSettings(r=lora_r, alpha=lora_alpha) if lora else None, attn_implementation=attn,
                               gradient_checkpointing=gradient_checkpointing, liger=liger, max_steps=max_steps, seed=seed,
                               bf16=bf16, gguf=gguf, max_examples=max_examples)
        result = train_sft(settings)
    except (DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1)
    print(json.dumps(result.to_dict()))


@app.command()
def value(
    model: str = typer.Option(..., help="backbone: usually the SFT model directory"),
    out: str = typer.Option(..., help="output directory (load with ValueModel.load)"),
    trees: Optional[str] = typer.Option(None, help="a search tree JSON file or a directory of them"),
    runs: Optional[list[str]] = typer.Option(None, "--runs", help="eval run folder(s) over training tasks: every "
                                             "state of each attempt, valued by its outcome (repeatable)"),
    template: str | None = None,
    codec: str | None = None,
    epochs: int = 3,
    lr: float = 1e-5,
    head_lr: float = 1e-3,
    batch_size: int = 8,
    max_length: int = typer.Option(2048, help="most recent tokens kept (same at inference)"),
    pooling: str = typer.Option("mean", help="what the head reads: mean (of the tokens' states), last (the final "
                                "token's state) or mean_last (both)"),
    paths_per_class: int = typer.Option(4, help="correct and incorrect terminal paths sampled per tree"),
    lora: bool = False,
    freeze_backbone: bool = typer.Option(False, help="train the head only"),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="backbone in bfloat16 (default: on CUDA "
                                        "only; recorded, and scoring uses the same dtype)"),
    seed: int = 0,
) -> None:
    """Value model: pooled last hidden state -> linear -> tanh, MSE to node Q or outcome."""
    _need_train_extra()
    from .sft import LoraSettings
    from .value_train import ValueSettings, train_value

    try:
        result = train_value(ValueSettings(model=model, trees=trees, runs=list(runs or []), out=out,
                                           template=template, codec=codec,
                                           epochs=epochs, learning_rate=lr, head_learning_rate=head_lr,
                                           batch_size=batch_size, max_length=max_length,
                                           pooling=pooling, paths_per_class=paths_per_class, lora=LoraSettings() if lora else None,
                                           freeze_backbone=freeze_backbone, bf16=bf16, seed=seed))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1)
    print(json.dumps({"out": str(result.out), "examples": result.examples, "mse_before": result.mse_before,
                      "mse_after": result.mse_after, "wall_s": result.wall_s}))


@app.command("value-eval")
def value_eval(
    runs: Optional[list[str]] = typer.Option(None, "--runs", help="eval run folder(s) over held-out tasks: every "
                                             "state of each attempt (repeatable)"),
    trees: Optional[list[str]] = typer.Option(None, "--trees", help="trees collected on held-out tasks (a JSON "
                                              "file or a directory; repeatable): their answered candidates"),
    model: Optional[str] = typer.Option(None, help="a value model directory (train value); without it, only the "
                                        "heuristic is scored"),
    out: Optional[str] = typer.Option(None, help="write the report (JSON, with every state's score) here"),
    include_root: bool = typer.Option(False, help="also score the state before the first reply"),
    bootstrap: int = typer.Option(1000, help="bootstrap resamples of attempts for the AUC interval (0: none)"),
    batch_size: int = 8,
) -> None:
    """AUC (overall and at depths 1, 3, 5) and calibration of a value model on held-out states,
    beside the no-training heuristic "the latest output is not an error" (alone without --model).
    States: every prefix of the runs' attempts (outcome targets) and the trees' answered
    candidates (reward targets; clustered by tree)."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from .value_data import load_run_examples, load_tree_candidates
    from .value_eval import evaluate_value, last_output_ok

    def heuristic(batch: list) -> list[float]:
        return [last_output_ok(m) for m in batch]

    try:
        if not runs and not trees:
            raise ValueError("give held-out states: --runs and/or --trees")
        examples = load_run_examples(runs, include_root) if runs else []
        for t in trees or []:
            examples += load_tree_candidates(t)
        score = heuristic
        if model:
            _need_train_extra()
            from ..models.value_model import ValueModel

            vm = ValueModel.load(model)
            score = lambda batch: vm.score(batch, batch_size)  # noqa: E731
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1)
    report = evaluate_value(score, examples, bootstrap=bootstrap)
    report["value_model"], report["runs"], report["trees"] = model or "none: the heuristic in both columns", runs, trees
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1))

    def fmt(r: dict) -> str:
        if r.get("auc") is None:
            return "-"
        ci = r.get("auc_ci")
        return f"{r['auc']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    table = Table(title=f"{'value model' if model else 'heuristic'} on {report['model']['states']} held-out states "
                        f"({report['model']['positive']} positive, {report['model']['attempts']} attempts or trees)")
    for col in ("", "states", "positive", "AUC value model", "AUC last output ok", "MSE"):
        table.add_column(col)
    rows = [("all", report["model"], report["heuristic_last_output_ok"])]
    rows += [(f"depth {d}", r, report["heuristic_last_output_ok"]["by_depth"][d]) for d, r in report["model"]["by_depth"].items()]
    for name, r, h in rows:
        table.add_row(name, str(r["states"]), str(r["positive"]),
                      fmt(r), fmt(h), f"{r['mse']:.3f}")
    Console(stderr=True).print(table)
    summary = {k: report["model"][k] for k in ("states", "positive", "attempts", "auc", "auc_ci", "mse")}
    summary["auc_by_depth"] = {d: r["auc"] for d, r in report["model"]["by_depth"].items()}
    summary["heuristic_auc"] = report["heuristic_last_output_ok"]["auc"]
    summary["minus_heuristic"] = report["model_minus_heuristic"]  # paired: the same resampled attempts
    if model and summary["minus_heuristic"]:
        d = summary["minus_heuristic"]
        Console(stderr=True).print(f"value model - heuristic: {d['difference']:+.3f} AUC "
                                   f"[{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}], not better in {d['p_not_better']:.1%} "
                                   "of resamples")
    print(json.dumps(summary))


@app.command("export-gguf")
def export_gguf_cmd(
    model: str = typer.Option(..., help="a trained model directory, or a registry name / .gguf file (its weights "
                              "as training loads them: dequantized)"),
    out: str = typer.Option(..., help="the .gguf file to write (F16)"),
    base: Optional[str] = typer.Option(None, help="the GGUF the model was trained from (default: the one its "
                                       "training recorded, or MODEL itself)"),
) -> None:
    """Write a model as F16 GGUF for llama.cpp (Llama-family models)."""
    _need_train_extra()
    from pathlib import Path

    from .base_model import load_model
    from .gguf import GGUFExportError, export_gguf
    from .sft import META_FILE, read_meta, source_gguf

    meta = read_meta(model)
    try:
        origin = base or meta.get("settings", {}).get("model") or model
        written = export_gguf(load_model(model).state_dict(), source_gguf(origin), out)
    except (GGUFExportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1)
    # the codec to serve it with, as `train sft` records it (registry models: their own)
    codec = meta.get("codec")
    if codec is None:
        from ..models import registry

        entry = registry.known_models().get(model)
        codec = getattr(entry, "codec", None)
    if codec and not (written.parent / META_FILE).exists():
        (written.parent / META_FILE).write_text(json.dumps({"kind": "export", "codec": codec, "source": model}))
    print(json.dumps({"gguf": str(written), "codec": codec, "bytes": written.stat().st_size}))

