"""Train a value model on search trees (node Q) and/or agent attempts (their outcome): MSE
between tanh(head(pooled state)) and the target."""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .sft import LoraSettings
from .value_data import ValueExample, load_run_examples, load_value_examples


@dataclass
class ValueSettings:
    model: str                       # the SFT model (or any causal LM) used as the backbone
    out: str
    trees: str | None = None         # a tree JSON file or a directory of them
    runs: list[str] = field(default_factory=list)  # eval run folders: every state of each attempt
    template: str | None = None      # family or .jinja path; None: detected
    codec: str | None = None         # None: the family's codec (or the SFT model's recorded one)
    epochs: int = 3
    learning_rate: float = 1e-5      # backbone (full or LoRA); the head uses head_learning_rate
    head_learning_rate: float = 1e-3
    batch_size: int = 8
    max_length: int = 2048           # most recent tokens kept, at training and at inference
    pooling: str = "mean"            # mean | last | mean_last: what the head reads (models/value_model.py)
    paths_per_class: int = 4         # correct and incorrect terminal paths sampled per tree
    include_root: bool = False
    lora: LoraSettings | None = None
    freeze_backbone: bool = False    # train the head only
    bf16: bool | None = None         # None: on CUDA only (recorded; scoring uses the same dtype)
    seed: int = 0


@dataclass
class ValueResult:
    out: Path
    examples: int
    mse_before: float
    mse_after: float
    losses: list[float]
    wall_s: float


def build_value_model(s: ValueSettings) -> Any:
    import torch

    from .base_model import load_model, load_tokenizer
    from .sft import read_meta
    from .templates import FAMILIES, detect_family, load_template
    from ..models.value_model import ValueModel, ValueModelConfig

    use_cuda = torch.cuda.is_available()
    bf16 = use_cuda if s.bf16 is None else s.bf16
    tokenizer = load_tokenizer(s.model)
    backbone = load_model(s.model, dtype=torch.bfloat16 if bf16 else torch.float32)
    meta = read_meta(s.model) if Path(s.model).is_dir() else {}
    family = s.template if s.template in FAMILIES else meta.get("family") or detect_family(tokenizer, backbone.config.model_type)
    template = load_template(s.template or family)
    codec = s.codec or meta.get("codec") or FAMILIES.get(family, FAMILIES["smollm2"]).codec
    if s.lora is not None:
        from peft import LoraConfig, get_peft_model

        backbone = get_peft_model(backbone, LoraConfig(r=s.lora.r, lora_alpha=s.lora.alpha, lora_dropout=s.lora.dropout,
                                                       target_modules=s.lora.target_modules))
    elif s.freeze_backbone:
        backbone.requires_grad_(False)
    config = ValueModelConfig(template=template, codec=codec, max_length=s.max_length, pooling=s.pooling,
                              dtype="bfloat16" if bf16 else "float32")
    model = ValueModel(backbone, tokenizer, config)
    return model.to("cuda" if use_cuda else "cpu")


def mse(model: Any, examples: list[ValueExample], batch_size: int = 8, features: Any = None) -> float:
    """Mean squared error of the model's values (from `features`, pooled states, when given)."""
    if features is not None:
        import torch

        with torch.no_grad():
            scores = model.value(features).tolist()
    else:
        scores = model.score([e.messages for e in examples], batch_size=batch_size)
    return sum((p - e.target) ** 2 for p, e in zip(scores, examples)) / len(examples)


def frozen_features(model: Any, examples: list[ValueExample], batch_size: int = 8) -> Any:
    """The pooled states when the backbone is frozen (they never change), else None."""
    if any(p.requires_grad for p in model.backbone.parameters()):
        return None
    return model.features([e.messages for e in examples], batch_size)


def fit(model: Any, examples: list[ValueExample], s: ValueSettings, features: Any = None) -> list[float]:
    """The training loop (AdamW, MSE); returns the loss of every step. With the backbone
    frozen, each state goes through it once: the head trains on the cached pooled states."""
    import torch

    torch.manual_seed(s.seed)
    rng = random.Random(s.seed)
    head = list(model.head.parameters())
    body = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": head, "lr": s.head_learning_rate}]
    if body:
        groups.append({"params": body, "lr": s.learning_rate})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    cached = None if body else (features if features is not None else frozen_features(model, examples, s.batch_size))
    targets = torch.tensor([e.target for e in examples], device=model.device)
    model.train()
    losses = []
    order = list(range(len(examples)))
    for _ in range(s.epochs):
        rng.shuffle(order)
        for i in range(0, len(order), s.batch_size):
            chunk = order[i: i + s.batch_size]
            if cached is None:
                pred = model(**model.encode([examples[j].messages for j in chunk]))
            else:
                pred = model.value(cached[chunk])
            loss = torch.nn.functional.mse_loss(pred, targets[chunk])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            opt.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def load_examples(s: ValueSettings) -> list[ValueExample]:
    """The training states: sampled tree paths and every state of the runs' attempts."""
    if not s.trees and not s.runs:
        raise ValueError("give search trees, eval runs, or both")
    examples = load_value_examples(s.trees, s.paths_per_class, s.include_root, s.seed) if s.trees else []
    return examples + (load_run_examples(s.runs, s.include_root) if s.runs else [])


def train_value(s: ValueSettings) -> ValueResult:
    t0 = time.time()
    examples = load_examples(s)
    model = build_value_model(s)
    features = frozen_features(model, examples, s.batch_size)  # computed once for the head-only case
    before = mse(model, examples, s.batch_size, features)
    losses = fit(model, examples, s, features)
    after = mse(model, examples, s.batch_size, features)
    out = model.save(s.out)
    (out / "value_train.json").write_text(json.dumps({"settings": asdict(s), "examples": len(examples),
                                                      "positive": sum(e.target > 0 for e in examples),
                                                      "mse_before": before, "mse_after": after, "losses": losses},
                                                     indent=1, default=str))
    return ValueResult(out, len(examples), before, after, losses, time.time() - t0)
