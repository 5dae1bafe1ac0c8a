"""Supervised fine-tuning on agent traces with TRL's SFTTrainer, loss on assistant turns only.

Every conversation is encoded here (codec, then the family's training template with
`{% generation %}` markers, see encode.py) into `input_ids` + `assistant_masks`; TRL turns
the mask into labels, truncates, optionally packs, and trains. The trained model is saved with
the marker-free template and a `notebook_agent_train.json` that names the codec to serve it
with, so `TransformersModel(out_dir, codec=...)` sees the exact format training saw.

Defaults follow the Jupyter Agent recipe (full-parameter, low learning rate, 5 epochs,
NEFTune alpha 7, assistant-only loss), with the learning rate raised for models of 135M-2B
parameters (they were trained at 5e-6 on a 4B model).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..models.resolve import TRAIN_META_FILE
from .base_model import resolve_source
from .chat_data import Example, load_examples
from .encode import codec_for, tokenize_conversation
from .packing import mask_packed_batches
from .templates import FAMILIES, detect_family, inference_template, load_template

META_FILE = TRAIN_META_FILE  # models/resolve.py reads the codec from it


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


@dataclass
class SFTSettings:
    model: str
    dataset: str | list[str]             # one source, or several mixed (each capped by max_examples)
    out: str
    template: str | None = None          # family name or .jinja path; None: detected from the model
    codec: str | None = None             # tool-call codec; None: the family's (hermes for Qwen, react else)
    epochs: float = 5.0
    learning_rate: float = 2e-5          # full-parameter; use about 2e-4 with LoRA
    lr_scheduler: str = "cosine"
    warmup: float = 0.03                 # a fraction of the steps when < 1, else a step count
    weight_decay: float = 0.0
    batch_size: int = 8                  # per device
    grad_accum: int = 1
    max_length: int = 4096
    truncation: Literal["keep_start", "keep_end"] = "keep_start"
    packing: bool = False                # BFD packing (implies padding-free; without flash attention,
                                         # a block mask per batch keeps the examples apart: packing.py)
    padding_free: bool = False
    neftune_alpha: float | None = 7.0
    lora: LoraSettings | None = None     # None: full-parameter
    bf16: bool | None = None             # None: on with CUDA, or a CPU with bf16 instructions (AVX-512 BF16, AMX)
    attn_implementation: str | None = None  # e.g. sdpa, flash_attention_2, kernels-community/flash-attn3
    gradient_checkpointing: bool = False
    liger: bool = False
    only_answered: bool = True           # Trajectory files: keep answered runs only
    max_examples: int | None = None      # per source: a seeded random subset (to fit a CPU's token budget)
    max_steps: int = -1
    logging_steps: int = 5
    seed: int = 0
    gguf: bool = True                    # also write OUT/model.gguf (F16) when the base model came from a GGUF
    progress: bool = True                # a progress bar with loss and tokens/s (stderr)
    extra_args: dict[str, Any] = field(default_factory=dict)  # more SFTConfig/TrainingArguments fields

    def __post_init__(self) -> None:
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("epochs or max_steps must be positive")
        if self.learning_rate <= 0 or self.batch_size < 1 or self.max_length < 16:
            raise ValueError("learning_rate > 0, batch_size >= 1 and max_length >= 16 are required")
        if self.neftune_alpha is not None and self.neftune_alpha <= 0:
            self.neftune_alpha = None


@dataclass
class SFTResult:
    out: Path
    family: str
    codec: str
    examples: int
    train_tokens: int                    # input tokens training sees (after cuts to max_length)
    trained_tokens: int                  # of those, assistant tokens with loss
    losses: list[float]
    wall_s: float
    gguf: str | None = None              # OUT/model.gguf when one was written
    bf16: bool = False
    tokens_per_s: float | None = None    # non-padding input tokens per second of training
    truncated_examples: int = 0          # examples longer than max_length (cut before training)
    cut_trained_tokens: int = 0          # assistant tokens those cuts removed from the loss

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out)}


def encode_dataset(examples: list[Example], tokenizer: Any, template: str, codec_name: str) -> list[dict[str, list[int]]]:
    codec = codec_for(codec_name, template)
    return [tokenize_conversation(tokenizer, template, codec, ex["messages"], ex["tools"]) for ex in examples]


def truncation_stats(rows: list[dict[str, list[int]]], max_length: int, mode: str) -> dict[str, int]:
    """What training will see of `rows` once each is cut to `max_length` the way TRL cuts it:
    input and assistant tokens kept, examples cut, assistant tokens lost (a cut from the end
    drops the final answer, the turn a trace exists to teach)."""
    keep = slice(None, max_length) if mode == "keep_start" else slice(-max_length, None)
    kept = [r["assistant_masks"][keep] for r in rows]
    trained = sum(sum(m) for m in kept)
    return {"train_tokens": sum(len(m) for m in kept), "trained_tokens": trained,
            "truncated_examples": sum(len(r["input_ids"]) > max_length for r in rows),
            "cut_trained_tokens": sum(sum(r["assistant_masks"]) for r in rows) - trained}


def use_bf16(s: SFTSettings, use_cuda: bool) -> bool:
    """bf16 where the hardware computes it natively: CUDA, or a CPU that oneDNN runs bf16 on
    (measured here: a SmolLM2-135M step 1.8x faster than fp32)."""
    if s.bf16 is not None:
        return s.bf16
    if use_cuda:
        return True
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def sft_config(s: SFTSettings, use_cuda: bool) -> Any:
    from trl import SFTConfig

    bf16 = use_bf16(s, use_cuda)
    return SFTConfig(
        output_dir=s.out,
        num_train_epochs=s.epochs,
        max_steps=s.max_steps,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_scheduler,
        warmup_steps=s.warmup,
        weight_decay=s.weight_decay,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        max_length=s.max_length,
        truncation_mode=s.truncation,
        packing=s.packing,
        padding_free=s.padding_free or s.packing,
        neftune_noise_alpha=s.neftune_alpha,
        assistant_only_loss=False,  # our dataset carries assistant_masks already (see encode.py)
        bf16=bf16,
        use_cpu=bf16 and not use_cuda,  # accelerate refuses bf16 without a GPU unless told it is the CPU's
        gradient_checkpointing=s.gradient_checkpointing,
        use_liger_kernel=s.liger,
        logging_steps=s.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=s.seed,
        dataset_num_proc=None,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",  # tokens/s in the progress bar and the result
        **s.extra_args,
    )


def train_sft(s: SFTSettings) -> SFTResult:
    """Train, save to `s.out`, and return what happened (loss curve, token counts)."""
    import datasets
    import torch
    from trl import SFTTrainer

    from .base_model import load_model, load_tokenizer

    t0 = time.time()
    examples = select_examples(s.dataset, s.max_examples, s.seed, only_answered=s.only_answered)
    tokenizer = load_tokenizer(s.model)
    use_cuda = torch.cuda.is_available()
    bf16 = use_bf16(s, use_cuda)
    model = load_model(s.model, dtype=torch.bfloat16 if bf16 else torch.float32, attn_implementation=s.attn_implementation)
    family = s.template if s.template in FAMILIES else detect_family(tokenizer, model.config.model_type)
    template = load_template(s.template or family)
    codec = s.codec or FAMILIES.get(family, FAMILIES["smollm2"]).codec
    rows = encode_dataset(examples, tokenizer, template, codec)
    counts = truncation_stats(rows, s.max_length, s.truncation)
    if counts["truncated_examples"]:
        print(f"warning: {counts['truncated_examples']} of {len(rows)} examples are longer than max_length "
              f"{s.max_length}; {counts['cut_trained_tokens']} assistant tokens are cut from the loss", file=sys.stderr)
    train = datasets.Dataset.from_list(rows)
    peft_config = None
    if s.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(r=s.lora.r, lora_alpha=s.lora.alpha, lora_dropout=s.lora.dropout,
                                 target_modules=s.lora.target_modules, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=sft_config(s, use_cuda), train_dataset=train, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[progress_callback()] if s.progress else None)
    mask_packed_batches(trainer)  # SDPA / eager: packed examples must not attend to each other (or too long: refused)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    out = Path(s.out)
    meta = {"kind": "sft", "family": family, "codec": codec, "settings": asdict(s), "losses": losses}
    if peft_config is None:
        trainer.save_model(str(out))  # gathers sharded weights (ZeRO-3, FSDP); writes on the main process
        if trainer.accelerator.is_main_process:
            save_model(None, tokenizer, out, template, meta)
    elif trainer.accelerator.is_main_process:
        save_model(trainer.model.merge_and_unload(), tokenizer, out, template, meta)  # plain: loads everywhere
    gguf_file = None
    src, base_gguf = resolve_source(s.model)
    if s.gguf and base_gguf is not None and trainer.accelerator.is_main_process:
        from .gguf import GGUFExportError, export_gguf

        trained = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
        try:
            gguf_file = str(export_gguf(trained.state_dict(), Path(src) / base_gguf, out / "model.gguf"))
        except GGUFExportError as e:  # another architecture: the directory still loads with transformers
            print(f"no GGUF written: {e}", file=sys.stderr)
    return SFTResult(out=out, family=family, codec=codec, examples=len(rows), **counts,
                     losses=[x for x in losses if math.isfinite(x)], wall_s=time.time() - t0,
                     gguf=gguf_file, bf16=bf16, tokens_per_s=_tokens_per_s(trainer))


def select_examples(sources: str | list[str], max_examples: int | None, seed: int,
                    only_answered: bool = True) -> list[Example]:
    """The training examples of one or more sources, in order. `max_examples` caps each source
    with its own seeded draw, so a source contributes the same examples whether it is mixed
    with others or not (canonical-only and canonical + teacher runs share their canonical part)."""
    import random

    out: list[Example] = []
    for source in [sources] if isinstance(sources, str) else sources:
        examples = load_examples(source, only_answered=only_answered)
        if max_examples is not None and len(examples) > max_examples:
            examples = random.Random(seed).sample(examples, max_examples)
        out.extend(examples)
    return out


def _tokens_per_s(trainer: Any) -> float | None:
    seen = getattr(trainer.state, "num_input_tokens_seen", 0)
    runtime = next((h.get("train_runtime") for h in reversed(trainer.state.log_history) if "train_runtime" in h), None)
    return round(seen / runtime, 1) if seen and runtime else None


def source_gguf(spec: str) -> Path:
    """The GGUF file a model spec names (registry name or path)."""
    src, name = resolve_source(spec)
    if name is None:
        raise ValueError(f"{spec} is not a GGUF model")
    return Path(src) / name


def progress_callback() -> Any:
    """A rich progress bar on stderr: step of total, loss, tokens/s (the Trainer's own tqdm is
    off). Built on call: transformers is imported only when training runs."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def __init__(self) -> None:
            self.bar: Any = None
            self.t0 = 0.0

        def on_train_begin(self, args, state, control, **kw):
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("[bold]sft"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                TextColumn("{task.description}"), console=Console(stderr=True))
            self.bar.start()
            self.job = self.bar.add_task("", total=state.max_steps)
            self.t0 = time.monotonic()

        def on_step_end(self, args, state, control, **kw):
            rate = state.num_input_tokens_seen / max(1e-9, time.monotonic() - self.t0)
            loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
            shown = "-" if loss is None else f"{loss:.3f}"  # none logged before `logging_steps` steps
            text = f"loss {shown}, {rate:.0f} tokens/s"
            self.bar.update(self.job, completed=state.global_step, description=text)
            if not self.bar.console.is_terminal:  # a log file: a line per step instead of a live bar
                self.bar.console.print(f"sft step {state.global_step}/{state.max_steps}: {text}")

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.stop()

    return _Progress()


def save_model(model: Any, tokenizer: Any, out: Path, training_template: str, meta: dict[str, Any]) -> None:
    """Weights (unless `model` is None: already saved) + tokenizer with the marker-free
    template + our metadata."""
    out.mkdir(parents=True, exist_ok=True)
    if model is not None:
        model.save_pretrained(str(out))
    tokenizer.chat_template = inference_template(training_template)
    tokenizer.save_pretrained(str(out))
    (out / META_FILE).write_text(json.dumps(meta, indent=1, default=str))


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    """What `train sft` recorded about a saved model (family, codec, settings, losses)."""
    path = Path(model_dir) / META_FILE
    return json.loads(path.read_text()) if path.exists() else {}
