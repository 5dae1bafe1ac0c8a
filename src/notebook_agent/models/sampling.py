"""One sequence's sampler in llama.cpp: its chain (seed, temperature, top-k/p, min-p), its
grammar, and the vocabulary-sized buffer a grammar needs now and then.

A grammar is applied as llama.cpp's own `common_sampler` does: sample from the unconstrained
chain, ask the grammar about that one token, and only when it is rejected mask the whole
vocabulary with the grammar and sample again. llama-cpp-python's `generate(grammar=...)`
puts the grammar first in the chain, which checks every token of the vocabulary at every
step (measured: 31% slower with SmolLM2's 49k tokens). The result is the same distribution:
a token the grammar allows is drawn with p(t) on the first try or with p(t)/A after a
rejection (A = the allowed mass), p(t) + (1 - A) p(t) / A = p(t) / A, exactly the masked one.
"""

from __future__ import annotations

import ctypes
from typing import Any

from .base import ModelError


class Vocab:
    """What every sampler of one model shares: the vocabulary and a scratch array of token
    data (used by one thread, the engine's)."""

    def __init__(self, vocab: Any):
        import llama_cpp as lc
        import numpy as np

        self.lc, self.np, self.vocab = lc, np, vocab
        self.n = lc.llama_vocab_n_tokens(vocab)
        self.full = (lc.llama_token_data * self.n)()
        self.full_np = np.frombuffer(self.full, dtype=np.dtype(
            [("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True))
        self.one = (lc.llama_token_data * 1)()
        self.head = (lc.llama_token_data * HEAD)()
        self.head_np = np.frombuffer(self.head, dtype=self.full_np.dtype)

    def logits(self, ctx: Any, idx: int) -> Any:
        """The logits of batch position `idx` (a view, valid until the next decode)."""
        return self.np.ctypeslib.as_array(self.lc.llama_get_logits_ith(ctx, idx), shape=(self.n,))


#: tokens of highest logit tried first when the grammar rejects a sampled token
HEAD = 256


class Sampler:
    def __init__(self, v: Vocab, *, temperature: float, top_p: float, top_k: int, min_p: float, seed: int,
                 grammar: str | None = None):
        lc = v.lc
        self.v = v
        self.greedy, self.top_k, self.top_p, self.min_p = temperature <= 0, top_k, top_p, min_p
        self.grammar = None
        if grammar is not None:
            self.grammar = lc.llama_sampler_init_grammar(v.vocab, grammar.encode("utf-8"), b"root")
            if not self.grammar:
                raise ModelError("llama.cpp rejected the grammar")
        self.chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if temperature <= 0:
            lc.llama_sampler_chain_add(self.chain, lc.llama_sampler_init_greedy())
        else:
            for s in (lc.llama_sampler_init_top_k(top_k), lc.llama_sampler_init_top_p(top_p, 1),
                      lc.llama_sampler_init_min_p(min_p, 1), lc.llama_sampler_init_temp(temperature),
                      lc.llama_sampler_init_dist(seed & 0xFFFFFFFF)):
                lc.llama_sampler_chain_add(self.chain, s)

    def sample(self, ctx: Any, idx: int) -> int:
        """A token from the logits at batch position `idx`, accepted by the grammar."""
        v, lc = self.v, self.v.lc
        tok = lc.llama_sampler_sample(self.chain, ctx, idx)
        if self.grammar is None:
            return tok
        one = v.one
        one[0].id, one[0].logit, one[0].p = tok, 1.0, 0.0
        arr = lc.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
        lc.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        if not v.np.isfinite(one[0].logit):  # rejected: mask, sample again
            logits = v.logits(ctx, idx)
            tok = self._from_head(logits)
            if tok is None:
                v.full_np["id"] = v.np.arange(v.n, dtype=v.np.int32)
                v.full_np["logit"] = logits
                v.full_np["p"] = 0.0
                arr = lc.llama_token_data_array(data=v.full, size=v.n, selected=-1, sorted=False)
                lc.llama_sampler_apply(self.grammar, ctypes.byref(arr))
                lc.llama_sampler_apply(self.chain, ctypes.byref(arr))
                tok = int(v.full[arr.selected].id)
        lc.llama_sampler_accept(self.grammar, tok)
        return tok

    def _from_head(self, logits: Any) -> int | None:
        """The masked sample from the HEAD tokens of highest logit, when they decide it: the
        chain keeps only the `top_k` highest allowed tokens and, by `min_p`, only those within
        log(min_p) of the best allowed one, so when the head holds enough allowed tokens, or
        the rest of the vocabulary lies below that bound, the tokens outside it cannot be drawn
        (with `top_p` < 1 their mass could shift the cut: then None, and the caller masks the
        whole vocabulary). Checking 256 tokens instead of 150k is what makes a rejection cheap."""
        v, lc, np = self.v, self.v.lc, self.v.np
        ids = np.argpartition(-logits, HEAD)[:HEAD]
        head = v.head_np
        head["id"] = ids
        head["logit"] = logits[ids]
        head["p"] = 0.0
        floor = float(head["logit"].min())
        arr = lc.llama_token_data_array(data=v.head, size=HEAD, selected=-1, sorted=False)
        lc.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        allowed = np.isfinite(head["logit"])
        n = int(allowed.sum())
        if n == 0:
            return None
        best = float(head["logit"][allowed].max())
        decided = self.greedy or n >= self.top_k or (self.top_p >= 1.0 and floor < best + np.log(self.min_p))
        if not decided:
            return None
        lc.llama_sampler_apply(self.chain, ctypes.byref(arr))  # disallowed ones are -inf: never drawn
        return int(v.head[arr.selected].id)

    def logprob(self, ctx: Any, idx: int, tok: int) -> float:
        np = self.v.np
        logits = self.v.logits(ctx, idx)
        top = float(logits.max())
        return float(logits[tok]) - top - float(np.log(np.exp(logits - top).sum()))

    def free(self) -> None:
        lc = self.v.lc
        lc.llama_sampler_free(self.chain)
        if self.grammar is not None:
            lc.llama_sampler_free(self.grammar)


def lookup(history: list[int], length: int, ngram: int = 3) -> list[int]:
    """Prompt lookup: the `length` tokens that followed the latest earlier occurrence of the
    last `ngram` tokens of `history` (falling back to shorter n-grams)."""
    for n in range(ngram, 0, -1):
        if len(history) <= n:
            continue
        tail = history[-n:]
        for i in range(len(history) - n - 1, -1, -1):
            if history[i:i + n] == tail:
                return history[i + n:i + n + length]
    return []
