"""transformers for a local model directory or GGUF file, on CPU or GPU.

`n` completions come from ONE batched `generate` call (`num_return_sequences=n`), which is
what makes sampling many candidates cheap on a GPU (search expands a node into n children).
Log-probabilities are taken from the raw logits (`output_logits`), i.e. the model's own
distribution before temperature/top-p, the same quantity the other backends report.

torch and transformers are optional (`pip install torch==2.13.0 'notebook-agent[train]'`);
they are imported when a model is created. GGUF files need the `gguf` package and are
dequantized on load.

Constrained tool calls (on by default, `constrain=`) go through a logits processor over
llguidance (`pip install llguidance`): the same GBNF grammar as the other backends, one
matcher per sequence of the batch, a token mask per step. Without llguidance installed the
replies are unconstrained and each completion says so (`constraint="none"`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import threading
from pathlib import Path
from typing import Any

from . import chat_template as templates
from .base import (
    ChatModel,
    Completion,
    Message,
    ModelError,
    SamplingParams,
    ToolSpec,
    Usage,
)
from .codecs import ToolCodec, get_codec
from .completion import call_codec, constraint_for, decode_completion, stops_for
from .constrain import Constraint

log = logging.getLogger(__name__)


class TransformersModel(ChatModel):
    applies_call_codec = True

    def __init__(
        self,
        path_or_dir: str | os.PathLike[str],
        gguf_file: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        codec: str | ToolCodec = "hermes",
        chat_template: str | None = None,
        name: str | None = None,
        constrain: bool = True,
    ):
        try:
            import torch
            import transformers
        except ImportError as e:
            raise ModelError("the transformers backend needs torch and transformers: "
                             "pip install torch==2.13.0 transformers accelerate gguf") from e
        self._torch = torch
        path = Path(path_or_dir)
        if gguf_file is None and path.is_file() and path.suffix == ".gguf":
            path, gguf_file = path.parent, path.name
        if not path.exists():
            raise ModelError(f"model path not found: {path}")
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), gguf_file=gguf_file)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(str(path), gguf_file=gguf_file, dtype=torch_dtype)
        except Exception as e:
            raise ModelError(f"transformers could not load {path / (gguf_file or '')}: {e}") from e
        self.model.to(self.device).eval()
        self.name = name or (Path(gguf_file).stem if gguf_file else path.name)
        tok = self.tokenizer
        self.template = templates.resolve(chat_template) if chat_template else (tok.chat_template or templates.CHATML)
        self.codec = get_codec(codec).for_template(self.template)
        eos = self.model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        if tok.eos_token_id is not None and tok.eos_token_id not in eos_ids:
            eos_ids.append(tok.eos_token_id)
        self._eos_ids = set(eos_ids)
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else (eos_ids[0] if eos_ids else 0)
        self._lock = threading.Lock()
        #: constrained tool calls by default (a call's `SamplingParams.constrain` overrides)
        self.constrain = constrain
        self._lltokenizer: Any = None  # llguidance's view of the tokenizer, made on first use
        self._llguidance_missing = False

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 8192))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def render_prompt(self, messages: list[Message], tools: list[ToolSpec] | None = None,
                      codec: ToolCodec | None = None) -> str:
        msgs, tls = (codec or self.codec).encode(messages, tools)
        try:
            return self.tokenizer.apply_chat_template(
                [{**m, "content": m.get("content") or ""} for m in msgs], tools=tls, chat_template=self.template,
                add_generation_prompt=True, tokenize=False,
            )
        except Exception as e:
            raise ModelError(f"chat template of {self.name} failed to render the conversation: {e}") from e

    async def _complete(self, messages: list[Message], tools: list[ToolSpec] | None, params: SamplingParams) -> list[Completion]:
        prompt = self.render_prompt(messages, tools, call_codec(self.codec, params, self.template))
        return await asyncio.to_thread(self.complete_prompt, prompt, tools, params)

    def complete_prompt(self, prompt: str, tools: list[ToolSpec] | None, params: SamplingParams) -> list[Completion]:
        """n completions of a rendered prompt in one batched generate call (blocking)."""
        torch = self._torch
        if params.n < 1:
            raise ModelError(f"n must be >= 1, got {params.n}")
        codec = call_codec(self.codec, params, self.template)
        constraint = constraint_for(codec, tools, params, self.constrain)
        processor = self._processor(constraint) if constraint else None
        if processor is None:
            constraint = None
        mode = "llguidance" if constraint else "none"
        stops = stops_for(params, codec, constraint is not None)
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        prompt_len = int(enc["input_ids"].shape[1])
        if prompt_len >= self.context_window:
            raise ModelError(f"prompt has {prompt_len} tokens; the context window of {self.name} is {self.context_window}")
        sample = params.temperature > 0
        n_gen = params.n if sample else 1  # greedy samples are all the same: compute one
        kwargs: dict[str, Any] = dict(
            max_new_tokens=min(params.max_tokens, self.context_window - prompt_len),
            do_sample=sample,
            num_return_sequences=n_gen,
            return_dict_in_generate=True,
            output_logits=params.logprobs,
            pad_token_id=self._pad_id,
        )
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if stops:
            kwargs["stopping_criteria"] = [_StopOnStrings(self.tokenizer, stops, prompt_len)]
        if processor is not None:
            kwargs["logits_processor"] = [processor]
        with self._lock, torch.inference_mode():
            torch.manual_seed(params.seed if params.seed is not None else random.randrange(2**31))
            out = self.model.generate(**enc, **kwargs)
        new = out.sequences[:, prompt_len:].tolist()
        logprobs = None
        if params.logprobs:
            # logits: one [n_gen, vocab] tensor per step -> log-softmax -> the chosen tokens
            steps = torch.stack(out.logits, dim=1).float().log_softmax(-1)
            chosen = out.sequences[:, prompt_len:prompt_len + steps.shape[1]].unsqueeze(-1)
            logprobs = steps.gather(-1, chosen).squeeze(-1).tolist()
        completions = []
        for i, tokens in enumerate(new):
            n_tok, finish = len(tokens), "length"
            for j, t in enumerate(tokens):
                if t in self._eos_ids:
                    n_tok, finish = j, "stop"
                    break
            text = self.tokenizer.decode(tokens[:n_tok], skip_special_tokens=True)
            cut = min((k for k in (text.find(s) for s in stops) if k >= 0), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
            lps = logprobs[i][:n_tok] if logprobs is not None else None
            completions.append(decode_completion(text, codec, tools, finish, Usage(prompt_len, n_tok), lps,
                                                 constraint, mode, params.max_tokens))
        while len(completions) < params.n:  # greedy: copies of the one sequence
            completions.append(dataclasses.replace(completions[0]))
        return completions

    def _processor(self, constraint: Constraint) -> Any:
        """A fresh logits processor for one generate call, or None without llguidance."""
        if self._llguidance_missing:
            return None
        try:
            import llguidance
            import llguidance.hf
        except ImportError:
            self._llguidance_missing = True
            log.warning("constrained tool calls with transformers need llguidance (pip install llguidance); "
                        "replies are unconstrained")
            return None
        if self._lltokenizer is None:
            n_vocab = int(self.model.get_output_embeddings().weight.shape[0])
            self._lltokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=n_vocab,
                                                             eos_token=sorted(self._eos_ids) or None)
        grammar = llguidance.grammar_from("gbnf", constraint.grammar)
        return _GrammarProcessor(llguidance, self._lltokenizer, grammar)

    async def aclose(self) -> None:
        with self._lock:
            self.model = None  # type: ignore[assignment]


class _StopOnStrings:
    """Per-sequence stop on strings: decodes only the tail of each sequence (cheap), unlike
    transformers' own `stop_strings`, which precomputes tables over the whole vocabulary."""

    def __init__(self, tokenizer: Any, stops: list[str], prompt_len: int):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, stops, prompt_len
        self.window = max(len(s) for s in stops) + 8

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = []
        for row in input_ids[:, self.prompt_len:].tolist():
            tail = self.tokenizer.decode(row[-self.window:], skip_special_tokens=True)
            done.append(any(s in tail for s in self.stops))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _GrammarProcessor:
    """transformers logits processor: one llguidance matcher per row; each step it feeds the
    row's last sampled token to the matcher and masks every token the grammar forbids.
    Rows whose grammar has finished (end of generation accepted) are left alone."""

    def __init__(self, llguidance: Any, lltokenizer: Any, grammar: str):
        self.ll, self.tok, self.grammar = llguidance, lltokenizer, grammar
        self.matchers: list[Any] | None = None
        self.start = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np
        import torch

        if self.matchers is None:
            self.matchers = [self.ll.LLMatcher(self.tok, self.grammar) for _ in range(input_ids.shape[0])]
            for m in self.matchers:
                if m.is_error():
                    raise ModelError(f"llguidance rejected the tool-call grammar: {m.get_error()}")
            self.start = input_ids.shape[1]
        elif input_ids.shape[1] > self.start:
            last = input_ids[:, -1].tolist()
            for m, t in zip(self.matchers, last):
                if not m.is_stopped():
                    m.consume_token(int(t))
        vocab = scores.shape[-1]
        for i, m in enumerate(self.matchers):
            if m.is_stopped() or m.is_error():
                continue
            bits = np.unpackbits(np.frombuffer(m.compute_bitmask(), dtype=np.uint8), bitorder="little")[:vocab]
            allowed = torch.from_numpy(bits.astype(bool)).to(scores.device)
            if allowed.shape[0] < vocab:
                allowed = torch.cat([allowed, torch.zeros(vocab - allowed.shape[0], dtype=torch.bool, device=scores.device)])
            scores[i] = scores[i].masked_fill(~allowed, float("-inf"))
        return scores
