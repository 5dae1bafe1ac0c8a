"""SFT throughput: TRL's SFTTrainer defaults against our tuned settings, same model, same data.

    python benchmarks/train.py [--model smollm2-135m|PATH] [--examples 2000] [--steps 60]   # GPU (H100)
    taskset -c 1 python benchmarks/train.py --tiny                                      # CPU smoke run

Both runs train the same chat examples (agent-shaped conversations: a question, tool calls
with code, tool outputs of varied length; or --dataset FILE) for the same number of steps:

- `trl_defaults`: `SFTConfig()` as shipped (padding to the longest in the batch, no packing,
  TRL's batch size, NEFTune off); the dataset is given as `messages` and TRL tokenizes it.
- `tuned`: our pipeline (assistant-only masks, see notebook_agent/train) plus BFD packing
  (padding-free rows of --max-length tokens), a larger batch, the best attention kernel
  installed (flash-attn 2, else SDPA with a block mask per packed row, train/packing.py; --attn
  overrides), bf16 (on a CPU too, where it computes bf16 natively, as `train sft` does), Liger
  kernels when installed.

tokens/s counts real (non-pad) tokens, from TRL's own `num_tokens`, after --warmup steps.
MFU = tokens/s * FLOPs/token / peak, FLOPs/token = 6 * params + 12 * layers * hidden * mean
sequence length (PaLM's estimate, tied embeddings counted once, as the LM-head matmul); peak
is 989 TFLOP/s for an H100/H200 (bf16 dense) or --peak-tflops. On CPU without --peak-tflops
MFU is null. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TOOLS = [
    {"type": "function", "function": {"name": "execute_code", "description": "Run Python code in the notebook.",
     "parameters": {"type": "object", "properties": {"comment": {"type": "string"}, "code": {"type": "string"}},
                    "required": ["comment", "code"]}}},
    {"type": "function", "function": {"name": "final_answer", "description": "Give the final answer.",
     "parameters": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}},
]
COLS = ["units", "price", "revenue", "age", "score", "duration", "count", "weight", "rating", "income"]
OPS = ["print(df['{a}'].describe())", "print(df.groupby('{b}')['{a}'].mean().round(2))",
       "print(df[df['{a}'] > {x}].shape[0])", "print(df[['{a}', '{b}']].corr().round(3))",
       "print(df.nlargest({k}, '{a}'))", "print(df['{b}'].value_counts().head({k}))"]


def make_examples(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Agent-shaped conversations of varied length (1-4 cells, outputs of 1-40 lines)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.sample(COLS, 2)
        msgs: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a data analyst. Use execute_code to run Python in a Jupyter notebook "
                                          "and final_answer to answer."},
            {"role": "user", "content": f"In data_{i}.csv, what is the relation between {a} and {b}? "
                                        f"Answer as @answer[value]."}]
        for j in range(rng.randint(1, 4)):
            code = f"import pandas as pd\ndf = pd.read_csv('data_{i}.csv')\n" if j == 0 else ""
            code += rng.choice(OPS).format(a=a, b=b, x=rng.randint(1, 99), k=rng.randint(2, 9))
            cid = f"c{i}_{j}"
            msgs.append({"role": "assistant", "content": "", "tool_calls": [{"id": cid, "type": "function", "function": {
                "name": "execute_code", "arguments": json.dumps({"comment": f"Step {j + 1}: look at {a} and {b}.",
                                                                  "code": code})}}]})
            lines = [f"{rng.choice(COLS):>10} {rng.random() * 1000:10.3f} {rng.randint(0, 10**6):>9}"
                     for _ in range(rng.randint(1, 40))]
            msgs.append({"role": "tool", "tool_call_id": cid, "content": "\n".join(lines)})
        msgs.append({"role": "assistant", "content": "", "tool_calls": [{"id": f"f{i}", "type": "function", "function": {
            "name": "final_answer", "arguments": json.dumps({"answer": f"@answer[{rng.random():.3f}]"})}}]})
        msgs.append({"role": "tool", "tool_call_id": f"f{i}", "content": "Answer recorded."})
        msgs.append({"role": "assistant", "content": f"The correlation of {a} and {b} is weak."})
        out.append({"messages": msgs, "tools": TOOLS})
    return out


def best_attention(cuda: bool, requested: str | None) -> str:
    """--attn, else flash-attn 2 when installed, else SDPA (hub kernels need network)."""
    if requested:
        return requested
    if not cuda:
        return "sdpa"
    try:
        import flash_attn  # noqa: F401
        return "flash_attention_2"
    except ImportError:
        return "sdpa"


class Clock:
    """A TrainerCallback recording (time, TRL's num_tokens) at every log."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def callback(self) -> Any:
        from transformers import TrainerCallback

        clock = self

        class _CB(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "num_tokens" in logs:
                    import torch

                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    clock.marks.append((time.perf_counter(), float(logs["num_tokens"])))

        return _CB()

    def rate(self, warmup: int) -> tuple[float, float]:
        m = self.marks[warmup:] if len(self.marks) > warmup + 1 else self.marks
        if len(m) < 2:
            return 0.0, 0.0
        return (m[-1][1] - m[0][1]) / (m[-1][0] - m[0][0]), m[-1][0] - m[0][0]


def run(name: str, args: argparse.Namespace, examples: list[dict[str, Any]], model_spec: str, cuda: bool) -> dict[str, Any]:
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    from notebook_agent.train.base_model import load_model, load_tokenizer
    from notebook_agent.train.sft import SFTSettings, encode_dataset, use_bf16
    from notebook_agent.train.templates import FAMILIES, detect_family, load_template

    tok = load_tokenizer(model_spec)
    common: dict[str, Any] = {"output_dir": tempfile.mkdtemp(prefix=f"bench-{name}-"), "max_steps": args.steps,
                              "logging_steps": 1, "save_strategy": "no", "report_to": "none", "disable_tqdm": True, "seed": 0}
    if not cuda:
        common.update(bf16=False, use_cpu=True)
    if name == "trl_defaults":
        model = load_model(model_spec, dtype=torch.float32)  # TRL's own default dtype (float32 weights, bf16 autocast)
        cfg = SFTConfig(**common)
        data = datasets.Dataset.from_list([{"messages": ex["messages"], "tools": json.dumps(ex["tools"])} for ex in examples])
        if not tok.chat_template:
            raise SystemExit("the model has no chat template; TRL's defaults need one")
        attn = getattr(model.config, "_attn_implementation", "?")
    else:
        attn = best_attention(cuda, args.attn)
        # what `train sft` does: bf16 on CUDA and on a CPU that computes it natively (AVX-512 BF16, AMX)
        bf16 = use_bf16(SFTSettings(model=model_spec, dataset="", out=""), cuda)
        model = load_model(model_spec, dtype=torch.bfloat16 if bf16 else torch.float32, attn_implementation=attn)
        if not cuda:
            common.update(bf16=bf16)
        try:
            import liger_kernel  # noqa: F401
            liger = cuda
        except ImportError:
            liger = False
        family = detect_family(tok, model.config.model_type)
        template = load_template(family)
        data = datasets.Dataset.from_list(encode_dataset(examples, tok, template, FAMILIES[family].codec))
        cfg = SFTConfig(**common, per_device_train_batch_size=args.tuned_batch, max_length=args.max_length,
                        packing=True, packing_strategy="bfd", padding_free=True, use_liger_kernel=liger,
                        gradient_checkpointing=False, dataloader_num_workers=2 if cuda else 0,
                        dataloader_pin_memory=cuda)
        name = f"tuned (bfd packing {args.max_length}, batch {args.tuned_batch}, {attn}, liger={liger})"
    clock = Clock()
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok, callbacks=[clock.callback()])
    if name != "trl_defaults":
        from notebook_agent.train.packing import mask_packed_batches

        mask_packed_batches(trainer)  # what `train sft` does: SDPA must not attend across packed examples
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    tps, secs = clock.rate(args.warmup)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    rows = trainer.train_dataset
    mean_len = sum(len(r) for r in rows["input_ids"]) / len(rows)
    cfgm = model.config.get_text_config()
    n_params = sum(p.numel() for p in model.parameters())
    flops_per_token = 6 * n_params + 12 * cfgm.num_hidden_layers * cfgm.hidden_size * mean_len
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (989e12 if cuda and any(
        g in torch.cuda.get_device_name() for g in ("H100", "H200")) else None)
    return {"name": name, "batch": cfg.per_device_train_batch_size, "max_length": cfg.max_length, "packing": cfg.packing,
            "attn": attn, "bf16": bool(cfg.bf16), "tokens_per_s": tps, "timed_s": secs,
            "mfu": tps * flops_per_token / peak if peak else None, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None, "mean_row_tokens": mean_len,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None}


def tiny_model(tmp: Path) -> str:
    """A tiny random Llama with SmolLM2's real tokenizer (for the CPU smoke run)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from notebook_agent.train.base_model import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    return str(tmp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="registry name, .gguf file or model directory")
    ap.add_argument("--dataset", help="chat JSONL / datasets dir / trajectories (default: generated examples)")
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    ap.add_argument("--tuned-batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--attn", help="attention implementation for the tuned run (default: flash_attention_2 if "
                    "installed, else sdpa; e.g. kernels-community/flash-attn3 where the hub is reachable)")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny random model, few steps")
    args = ap.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    model_spec = args.model
    if args.tiny:
        torch.set_num_threads(1)
        model_spec = tiny_model(Path(tempfile.mkdtemp(prefix="bench-tiny-")))
        args.examples, args.steps, args.warmup, args.tuned_batch, args.max_length = 24, 4, 1, 2, 1024
    if args.dataset:
        from notebook_agent.train.chat_data import load_examples

        examples = load_examples(args.dataset)
    else:
        examples = make_examples(args.examples)
    results = [run("trl_defaults", args, examples, model_spec, cuda), run("tuned", args, examples, model_spec, cuda)]
    base, tuned = results
    print(f"\n{'run':<70} {'batch':>5} {'tokens/s':>10} {'MFU':>7} {'loss first->last':>18}")
    for r in results:
        mfu = f"{r['mfu'] * 100:.2f}%" if r["mfu"] is not None else "-"
        print(f"{r['name']:<70} {r['batch']:>5} {r['tokens_per_s']:>10.0f} {mfu:>7} "
              f"{r['loss_first'] or 0:>8.3f} -> {r['loss_last'] or 0:.3f}")
    device = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, 1 thread)"
    print(json.dumps({"benchmark": "train_sft_throughput", "model": args.model if not args.tiny else "tiny-llama(smollm2 tokenizer)",
                      "device": device, "examples": len(examples), "steps": args.steps,
                      "trl_defaults_tokens_per_s": base["tokens_per_s"], "tuned_tokens_per_s": tuned["tokens_per_s"],
                      "speedup": tuned["tokens_per_s"] / base["tokens_per_s"] if base["tokens_per_s"] else None,
                      "trl_defaults_mfu": base["mfu"], "tuned_mfu": tuned["mfu"], "runs": results}))


if __name__ == "__main__":
    main()
