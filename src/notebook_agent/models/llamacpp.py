"""llama.cpp in-process (llama-cpp-python): the embedded default for GGUF files on CPU.

The prompt is the GGUF's own chat template rendered with the codec's messages; decoding runs
in a `BatchEngine` (models/engine.py) that owns the llama.cpp context, so

- the codec, not llama.cpp's chat handlers, decides the text;
- concurrent calls (eval workers, vote, MCTS children) are decoded together in one batch,
  up to `n_seq` sequences: on a CPU several cost little more than one;
- a call's n samples evaluate the prompt once, and a conversation's next turn reuses the KV
  cache of its longest common prefix, so only new tokens are evaluated;
- log-probabilities come from the logits of each sampled step.

`n_threads` defaults to llama.cpp's choice (half the logical CPUs). Using every core is
faster on an idle machine but collapses when anything else runs: llama.cpp's threads
busy-wait for each other, and on a shared 2-core VM 2 threads fell from ~30 to 0.2 tokens/s
while 1 thread kept ~30.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from pathlib import Path

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
from .engine import BatchEngine, Request


class LlamaCppModel(ChatModel):
    applies_call_codec = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        n_ctx: int = 8192,
        n_threads: int | None = None,
        codec: str | ToolCodec = "hermes",
        chat_template: str | None = None,
        seed: int = 0,
        top_k: int = 40,
        min_p: float = 0.05,
        n_batch: int = 512,
        name: str | None = None,
        constrain: bool = True,
        n_seq: int = 1,
        speculate: int = 0,
        flash_attn: bool = False,
    ):
        """`n_ctx` is one conversation's window; the KV cache holds `n_ctx * n_seq` tokens so
        that `n_seq` conversations decode together. `speculate` > 0 turns on prompt-lookup
        speculation with drafts of that many tokens; `flash_attn` evaluates prompts faster
        (benchmarks/batching.py) with slightly different numbers than llama-cpp-python's default."""
        try:
            import llama_cpp
        except ImportError as e:  # optional extra
            raise ModelError("llama.cpp backend needs llama-cpp-python: pip install 'notebook-agent[local]'") from e
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"GGUF file not found: {self.path}")
        self._llama_cpp = llama_cpp
        try:
            # The Llama object loads the weights and tokenizes; its own context is unused
            # (the engine has one), so it gets the smallest.
            self._llm = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=32,
                n_batch=32,
                n_threads=n_threads,  # None: llama.cpp's default, half the logical CPUs
                seed=seed,
                verbose=False,
            )
        except Exception as e:
            raise ModelError(f"llama.cpp could not load {self.path}: {e}") from e
        self.name = name or self.path.stem
        if n_seq < 1:
            raise ModelError(f"n_seq must be >= 1, got {n_seq}")
        self.engine = BatchEngine(self._llm._model, self._llm.detokenize, n_seq=n_seq, n_ctx=n_ctx * n_seq,
                                  n_batch=n_batch, n_threads=self._llm.n_threads, top_k=top_k, min_p=min_p,
                                  speculate=speculate, flash_attn=flash_attn, name=self.name)
        self.n_ctx = n_ctx
        meta = self._llm.metadata or {}
        self.template = self._pick_template(chat_template, meta)
        self.codec = get_codec(codec).for_template(self.template)
        model = self._llm._model
        self._bos_text = model.token_get_text(self._llm.token_bos()) if self._llm.token_bos() >= 0 else ""
        self._eos_text = model.token_get_text(self._llm.token_eos()) if self._llm.token_eos() >= 0 else ""
        self._grammar_lock = threading.Lock()
        #: constrained tool calls by default (a call's `SamplingParams.constrain` overrides)
        self.constrain = constrain
        self._grammars: set[str] = set()  # grammar texts llama.cpp's parser accepted

    @staticmethod
    def _pick_template(override: str | None, meta: dict[str, str]) -> str:
        if override is not None:
            return templates.resolve(override)
        return meta.get("tokenizer.chat_template") or templates.CHATML

    # --- prompt ---------------------------------------------------------------------------

    def render_prompt(self, messages: list[Message], tools: list[ToolSpec] | None = None,
                      codec: ToolCodec | None = None) -> str:
        """The exact text the model sees (codec-encoded messages through the chat template)."""
        msgs, tls = (codec or self.codec).encode(messages, tools)
        try:
            return templates.render(self.template, msgs, tls, bos_token=self._bos_text, eos_token=self._eos_text)
        except Exception as e:
            raise ModelError(f"chat template of {self.name} failed to render the conversation: {e}") from e

    def tokenize_prompt(self, prompt: str) -> list[int]:
        # The template writes BOS itself when it wants one; never add a second.
        add_bos = not (self._bos_text and prompt.startswith(self._bos_text))
        return self._llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    @property
    def context_window(self) -> int:
        return self.n_ctx

    # --- generation -----------------------------------------------------------------------

    async def _complete(self, messages: list[Message], tools: list[ToolSpec] | None, params: SamplingParams) -> list[Completion]:
        codec = call_codec(self.codec, params, self.template)
        prompt = self.render_prompt(messages, tools, codec)
        req, finish = self._request(prompt, tools, params)
        # cancelling the caller cancels the request: the engine drops it at its next step
        return finish(await asyncio.wrap_future(self.engine.submit(req)))

    def check_grammar(self, constraint: Constraint) -> str:
        """The grammar text, checked by llama.cpp's own parser once (a grammar it rejects
        would crash the sampler chain, not raise)."""
        with self._grammar_lock:
            if constraint.grammar not in self._grammars:
                lc = self._llama_cpp
                probe = lc.llama_sampler_init_grammar(self._llm._model.vocab, constraint.grammar.encode("utf-8"), b"root")
                if not probe:
                    raise ModelError(f"llama.cpp rejected the tool-call grammar for {constraint.codec}:\n{constraint.grammar}")
                lc.llama_sampler_free(probe)
                self._grammars.add(constraint.grammar)
        return constraint.grammar

    def complete_prompt(self, prompt: str, tools: list[ToolSpec] | None, params: SamplingParams) -> list[Completion]:
        """n completions of an already rendered prompt (blocking)."""
        req, finish = self._request(prompt, tools, params)
        return finish(self.engine.generate(req))

    def _request(self, prompt: str, tools: list[ToolSpec] | None, params: SamplingParams):
        """The engine request for a call, and the function that turns its samples into
        completions."""
        if params.n < 1:
            raise ModelError(f"n must be >= 1, got {params.n}")
        codec = call_codec(self.codec, params, self.template)
        constraint = constraint_for(codec, tools, params, self.constrain)
        tokens = self.tokenize_prompt(prompt)
        if len(tokens) >= self.n_ctx:
            raise ModelError(f"prompt has {len(tokens)} tokens; the context window of {self.name} is {self.n_ctx} (raise n_ctx)")
        req = Request(
            tokens=tokens, n=params.n, max_tokens=min(params.max_tokens, self.n_ctx - len(tokens)),
            temperature=params.temperature, top_p=params.top_p,
            seed=params.seed if params.seed is not None else random.randrange(2**31),
            stops=stops_for(params, codec, constraint is not None), logprobs=params.logprobs,
            grammar=self.check_grammar(constraint) if constraint else None,
        )
        mode = "gbnf" if constraint else "none"

        def finish(samples) -> list[Completion]:
            return [decode_completion(s.text, codec, tools, s.finish, Usage(len(tokens), s.n_tokens),
                                      s.logprobs if params.logprobs else None, constraint, mode, params.max_tokens)
                    for s in samples]

        return req, finish

    async def aclose(self) -> None:
        await asyncio.to_thread(self.engine.close)
        close = getattr(self._llm, "close", None)
        if close is not None:
            close()
