"""The value model: a causal LM backbone, its last hidden state pooled, linear, tanh.

Pooling (`ValueModelConfig.pooling`): "mean" over the tokens; "last", the final token's
state (the only one that attends to the whole state, as in reward models); "mean_last", both
concatenated.

`ValueModel.score(batch)` maps conversations (OpenAI-format messages) to values in [-1, 1]
(search/value.py's `ValueScorer`). It lives in models/ because search loads it at inference;
train/ builds and trains it (train/value_train.py) and imports it from here. Training and inference share one `encode`: render with the
backbone's chat template (after the tool-call codec), tokenize, keep the most recent
`max_length` tokens. Saved as `backbone/` (a plain transformers model), the tokenizer,
`value_head.pt` and `value_config.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .chat_template import codec_for, render_text, strip_generation_markers

CONFIG_FILE = "value_config.json"
HEAD_FILE = "value_head.pt"
POOLINGS = ("mean", "last", "mean_last")


@dataclass
class ValueModelConfig:
    template: str            # chat template the conversations are rendered with (markers allowed)
    codec: str = "react"
    max_length: int = 2048   # keep the most recent tokens: the same at training and inference
    pooling: str = "mean"    # mean | last | mean_last (see the module docstring)
    dtype: str = "float32"   # the backbone's dtype at training: load() scores in the same one


class ValueModel(nn.Module):
    def __init__(self, backbone: Any, tokenizer: Any, config: ValueModelConfig):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        if config.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {config.pooling!r}")
        hidden = backbone.config.get_text_config().hidden_size * (2 if config.pooling == "mean_last" else 1)
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=0.01 / hidden**0.5)  # starts near 0: a neutral value
        self._codec = codec_for(config.codec, config.template)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    # -- the one encoding path ----------------------------------------------------------
    def token_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        text = render_text(self.tokenizer, self.config.template, self._codec, messages)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-self.config.max_length:]

    def encode(self, batch: list[list[dict[str, Any]]]) -> dict[str, torch.Tensor]:
        return self.pad([self.token_ids(m) for m in batch])

    def pad(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        """Token rows as one right-padded batch with its attention mask."""
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Each row's last hidden state pooled over its tokens (the head's input; rows are
        right-padded, so a row's final token is at mask.sum() - 1)."""
        # logits_to_keep=1: the LM head's full-vocabulary logits are not needed, only hidden states
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, logits_to_keep=1)
        last = out.hidden_states[-1]
        m = attention_mask.unsqueeze(-1).to(last.dtype)
        mean = (last * m).sum(1) / m.sum(1).clamp(min=1.0)
        if self.config.pooling == "mean":
            return mean
        end = last[torch.arange(last.shape[0], device=last.device), attention_mask.sum(1).clamp(min=1) - 1]
        return end if self.config.pooling == "last" else torch.cat([mean, end], dim=-1)

    def value(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(pooled.float()).squeeze(-1))  # the head stays fp32 (small updates survive)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.value(self.pooled(input_ids, attention_mask))

    @torch.no_grad()
    def features(self, batch: list[list[dict[str, Any]]], batch_size: int = 8) -> torch.Tensor:
        """Pooled states of many conversations, batched by length (less padding), in input order."""
        was_training = self.training
        self.eval()
        ids = [self.token_ids(m) for m in batch]  # rendered and tokenized once
        order = sorted(range(len(batch)), key=lambda i: len(ids[i]))
        rows: list[torch.Tensor] = [torch.empty(0)] * len(batch)
        for i in range(0, len(order), batch_size):
            chunk = order[i: i + batch_size]
            for j, row in zip(chunk, self.pooled(**self.pad([ids[j] for j in chunk]))):
                rows[j] = row
        self.train(was_training)
        return torch.stack(rows) if rows else torch.empty(0)

    @torch.no_grad()
    def score(self, batch: list[list[dict[str, Any]]], batch_size: int = 8) -> list[float]:
        if not batch:
            return []
        return self.value(self.features(batch, batch_size)).tolist()

    # -- persistence --------------------------------------------------------------------
    def save(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        backbone = self.backbone
        if hasattr(backbone, "merge_and_unload"):  # LoRA: save a plain model
            backbone = backbone.merge_and_unload()
            self.backbone = backbone
        backbone.save_pretrained(str(out / "backbone"))
        self.tokenizer.chat_template = strip_generation_markers(self.config.template)
        self.tokenizer.save_pretrained(str(out / "backbone"))
        torch.save(self.head.state_dict(), out / HEAD_FILE)
        (out / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=1))
        return out

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", dtype: torch.dtype | None = None) -> ValueModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / CONFIG_FILE).exists():
            raise ValueError(f"{path} is not a saved value model (no {CONFIG_FILE})")
        config = ValueModelConfig(**json.loads((path / CONFIG_FILE).read_text()))
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        dtype = dtype or getattr(torch, config.dtype)  # as trained: the head learned on those states
        backbone = AutoModelForCausalLM.from_pretrained(str(path / "backbone"), dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(path / "backbone"))
        model = cls(backbone, tokenizer, config)
        model.head.load_state_dict(torch.load(path / HEAD_FILE, map_location="cpu"))
        return model.to(dev).eval()


def load_value_scorer(path: str | None) -> ValueModel | None:
    """The value model saved by `notebook-agent train value` at `path` (None: no value model)."""
    return ValueModel.load(path) if path else None
