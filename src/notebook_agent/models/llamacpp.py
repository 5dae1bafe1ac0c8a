"""llama.cpp in-process (llama-cpp-python): the embedded default for GGUF files on CPU.

The prompt is the GGUF's own chat template rendered with the codec's messages; generation
is a raw token loop over `Llama.generate`, so

- the codec, not llama.cpp's chat handlers, decides the text;
- `generate` keeps the KV cache of the longest common prefix with the previous call, so the
  next turn of a conversation (and the 2nd..nth sample of a turn) only evaluates new tokens;
- log-probabilities come from the logits of each sampled step, without `logits_all=True`
  (which would keep n_ctx x n_vocab floats and slow prompt evaluation).

`n_threads` defaults to llama.cpp's choice (half the logical CPUs). Using every core is
faster on an idle machine but collapses when anything else runs: llama.cpp's threads
busy-wait for each other, and on a shared 2-core VM 2 threads fell from ~30 to 0.2 tokens/s
while 1 thread kept ~30.

One `Llama` object is not thread-safe: calls hold a lock and run in a worker thread so the
event loop stays free.
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
    ):
        try:
            import llama_cpp
        except ImportError as e:  # optional extra
            raise ModelError("llama.cpp backend needs llama-cpp-python: pip install 'notebook-agent[local]'") from e
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"GGUF file not found: {self.path}")
        self._llama_cpp = llama_cpp
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=n_ctx,
                n_threads=n_threads,  # None: llama.cpp's default, half the logical CPUs
                n_batch=n_batch,
                seed=seed,
                verbose=False,
            )
        except Exception as e:
            raise ModelError(f"llama.cpp could not load {self.path}: {e}") from e
        self.name = name or self.path.stem
        self.n_ctx = n_ctx
        self.seed = seed
        self.top_k = top_k
        self.min_p = min_p
        meta = self._llm.metadata or {}
        self.template = self._pick_template(chat_template, meta)
        self.codec = get_codec(codec).for_template(self.template)
        model = self._llm._model
        self._bos_text = model.token_get_text(self._llm.token_bos()) if self._llm.token_bos() >= 0 else ""
        self._eos_text = model.token_get_text(self._llm.token_eos()) if self._llm.token_eos() >= 0 else ""
        self._n_vocab = self._llm.n_vocab()
        self._lock = threading.Lock()
        #: constrained tool calls by default (a call's `SamplingParams.constrain` overrides)
        self.constrain = constrain
        self._grammars: dict[str, object] = {}  # grammar text -> LlamaGrammar (checked once)

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
        return await asyncio.to_thread(self.complete_prompt, prompt, tools, params)

    def grammar(self, constraint: Constraint) -> object:
        """The `LlamaGrammar` of a constraint; the text is checked by llama.cpp's own parser
        once (a grammar it rejects would crash the sampler chain, not raise)."""
        g = self._grammars.get(constraint.grammar)
        if g is None:
            lc = self._llama_cpp
            probe = lc.llama_sampler_init_grammar(self._llm._model.vocab, constraint.grammar.encode("utf-8"), b"root")
            if not probe:
                raise ModelError(f"llama.cpp rejected the tool-call grammar for {constraint.codec}:\n{constraint.grammar}")
            lc.llama_sampler_free(probe)
            g = lc.LlamaGrammar.from_string(constraint.grammar, verbose=False)
            self._grammars[constraint.grammar] = g
        return g

    def complete_prompt(self, prompt: str, tools: list[ToolSpec] | None, params: SamplingParams) -> list[Completion]:
        """n completions of an already rendered prompt (blocking; holds the model lock)."""
        if params.n < 1:
            raise ModelError(f"n must be >= 1, got {params.n}")
        codec = call_codec(self.codec, params, self.template)
        constraint = constraint_for(codec, tools, params, self.constrain)
        grammar = self.grammar(constraint) if constraint else None
        mode = "gbnf" if constraint else "none"
        stops = stops_for(params, codec, constraint is not None)
        base_seed = params.seed if params.seed is not None else random.randrange(2**31)
        with self._lock:
            tokens = self.tokenize_prompt(prompt)
            if len(tokens) >= self.n_ctx:
                raise ModelError(f"prompt has {len(tokens)} tokens; the context window of {self.name} is {self.n_ctx} (raise n_ctx)")
            out = []
            for i in range(params.n):
                text, n_out, finish, logprobs = self._sample(tokens, params, stops, base_seed + i, grammar)
                out.append(decode_completion(text, codec, tools, finish, Usage(len(tokens), n_out),
                                             logprobs if params.logprobs else None, constraint, mode, params.max_tokens))
        return out

    def _sample(self, tokens: list[int], params: SamplingParams, stops: list[str], seed: int,
                grammar: object | None = None) -> tuple[str, int, str, list[float]]:
        import numpy as np

        lc, llm = self._llama_cpp, self._llm
        vocab = llm._model.vocab
        max_new = min(params.max_tokens, self.n_ctx - len(tokens))
        llm.set_seed(seed)
        data = b""
        text = ""
        cut = False
        n_out = 0
        logprobs: list[float] = []
        finish = "length"
        longest_stop = max((len(s) for s in stops), default=0)
        if grammar is None:
            stream = llm.generate(tokens, temp=params.temperature, top_p=params.top_p, top_k=self.top_k,
                                  min_p=self.min_p, repeat_penalty=1.0)
        else:
            stream = self._generate_constrained(tokens, params, grammar)
        for tok in stream:
            if lc.llama_token_is_eog(vocab, tok):
                finish = "stop"
                break
            n_out += 1
            if params.logprobs:
                logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(llm.ctx, -1), shape=(self._n_vocab,))
                top = float(logits.max())
                logprobs.append(float(logits[tok]) - top - float(np.log(np.exp(logits - top).sum())))
            data += llm.detokenize([tok])
            if stops:
                before = len(text)
                text = data.decode("utf-8", errors="ignore")
                window = max(0, before - longest_stop)
                hits = [i for i in (text.find(s, window) for s in stops) if i >= 0]
                if hits:
                    text = text[: min(hits)]
                    finish, cut = "stop", True
                    break
            if n_out >= max_new:
                break
        else:
            finish = "stop"  # the generator ended by itself
        if not cut:
            text = data.decode("utf-8", errors="ignore")
        return text, n_out, finish, logprobs

    def _generate_constrained(self, tokens: list[int], params: SamplingParams, grammar: object):
        """Tokens under a grammar, sampled the way llama.cpp's own `common_sampler` does it:
        sample from the unconstrained chain, ask the grammar about that one token, and only
        when it is rejected mask the whole vocabulary with the grammar and sample again.
        llama-cpp-python's `generate(grammar=...)` puts the grammar first in the chain, which
        checks every token of the vocabulary at every step (measured: 31% slower with
        SmolLM2's 49k tokens). The result is the same distribution: a token the grammar
        allows is drawn with p(t) on the first try or with p(t)/A after a rejection
        (A = the allowed mass), p(t) + (1 - A) p(t) / A = p(t) / A, exactly the masked one.
        """
        import ctypes

        import numpy as np

        lc, llm = self._llama_cpp, self._llm
        vocab = llm._model.vocab
        chain = llm._init_sampler(top_k=self.top_k, top_p=params.top_p, min_p=self.min_p,
                                  temp=params.temperature, repeat_penalty=1.0)
        g = grammar  # LlamaGrammar
        gs = lc.llama_sampler_init_grammar(vocab, g._grammar.encode("utf-8"), g._root.encode("utf-8"))
        if not gs:
            raise ModelError("llama.cpp rejected the tool-call grammar")
        if getattr(self, "_full", None) is None:
            self._full = (lc.llama_token_data * self._n_vocab)()
            self._full_np = np.frombuffer(self._full, dtype=np.dtype(
                [("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True))
        one = (lc.llama_token_data * 1)()
        try:
            # reuse the KV cache of the longest common prefix (at least one token is evaluated
            # so that the logits are the prompt's)
            prefix = 0
            for a, b in zip(llm.input_ids[: llm.n_tokens], tokens):
                if a != b:
                    break
                prefix += 1
            llm.n_tokens = min(prefix, len(tokens) - 1)
            llm.eval(tokens[llm.n_tokens:])
            while True:
                tok = chain.sample(llm._ctx, -1)
                one[0].id, one[0].logit, one[0].p = tok, 1.0, 0.0
                arr = lc.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
                lc.llama_sampler_apply(gs, ctypes.byref(arr))
                if not np.isfinite(one[0].logit):  # rejected: mask the vocabulary, sample again
                    logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(llm.ctx, -1), shape=(self._n_vocab,))
                    full = self._full_np
                    full["id"] = np.arange(self._n_vocab, dtype=np.int32)
                    full["logit"] = logits
                    full["p"] = 0.0
                    arr = lc.llama_token_data_array(data=self._full, size=self._n_vocab, selected=-1, sorted=False)
                    lc.llama_sampler_apply(gs, ctypes.byref(arr))
                    lc.llama_sampler_apply(chain.sampler, ctypes.byref(arr))
                    tok = int(self._full[arr.selected].id)
                lc.llama_sampler_accept(gs, tok)
                yield tok
                if lc.llama_token_is_eog(vocab, tok):
                    return
                llm.eval([tok])
        finally:
            lc.llama_sampler_free(gs)

    async def aclose(self) -> None:
        with self._lock:
            close = getattr(self._llm, "close", None)
            if close is not None:
                close()

