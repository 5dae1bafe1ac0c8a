"""A continuous-batching decoder over one llama.cpp context.

On a CPU, decoding is bound by memory bandwidth: one `llama_decode` over the tokens of
several sequences reads the weights once, so it costs little more than decoding one. The
engine owns a context with `n_seq` sequence slots over one unified KV cache and runs a loop
in its own thread; callers `submit` requests from any thread and wait on a future.

- Requests join and leave between steps. Each step puts one token of every decoding
  sequence and a chunk of any prompt that is being evaluated into one batch.
- Every sequence has its own sampler (models/sampling.py: seed, temperature, top-p, grammar),
  stop strings and log-probabilities.
- The n samples of one request evaluate the prompt once: the others copy its KV cells.
- A slot keeps what it evaluated after its request ends; a new request takes the free slot
  whose cache shares the longest prefix with its prompt (a next turn, or the same system
  prompt, evaluates only the new tokens; an unrelated prompt takes the emptiest slot).
- Prompt-lookup speculation (`speculate > 0`): a decoding sequence proposes the tokens that
  followed the last occurrence of its latest n-gram, all are checked in the same batch, and
  the longest prefix that the sampler itself draws is kept. Exact for any sampler: every
  kept token is sampled from the model's own distribution at its position.
- Memory is bounded: the KV cache holds `n_ctx` cells, split evenly between the slots (or,
  `unified=True`, shared: then a request is admitted only when its prompt plus `max_tokens`
  for each sample fits beside the running ones, and idle slots' prefixes are dropped to make
  room). A request that can never fit fails alone with a clear error.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from .base import ModelError
from .sampling import Sampler, Vocab, lookup


@dataclass
class Sample:
    """What one sequence produced."""

    text: str
    n_tokens: int
    finish: str  # "stop" | "length"
    logprobs: list[float]


@dataclass
class Request:
    """A prompt to complete `n` times. Built by the caller, owned by the engine once submitted."""

    tokens: list[int]
    n: int = 1
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0  # sample i uses seed + i
    stops: list[str] = field(default_factory=list)
    logprobs: bool = False
    grammar: str | None = None  # GBNF text, root rule "root"
    future: Future = field(default_factory=Future)
    #: filled in by the engine: prompt tokens found in a slot's cache (not evaluated again)
    cached_tokens: int = 0
    _results: list[Sample | None] = field(default_factory=list, repr=False)
    _pending: int = 0  # samples not yet given a slot
    _running: int = 0

    def cancel(self) -> None:
        """Stop this request at the next step; the others go on."""
        self.future.cancel()


@dataclass
class Stats:
    """Counters since the engine started (public, read by benchmarks and tests)."""

    steps: int = 0
    batch_tokens: int = 0
    prompt_tokens: int = 0  # prompt tokens evaluated
    cached_tokens: int = 0  # prompt tokens taken from a slot's cache
    generated: int = 0
    drafted: int = 0  # speculative tokens proposed
    accepted: int = 0  # speculative tokens kept
    max_sequences: int = 0  # most sequences in one step


class _Slot:
    def __init__(self, seq_id: int):
        self.seq_id = seq_id
        self.cached: list[int] = []  # tokens in the KV cache at positions 0..len-1
        self.used = 0.0
        self.seq: _Seq | None = None


class _Seq:
    """One sample being generated in a slot."""

    def __init__(self, req: Request, index: int, slot: _Slot, sampler: Sampler):
        self.req, self.index, self.slot, self.sampler = req, index, slot, sampler
        self.feed: list[int] = []  # tokens to evaluate at the next step
        self.draft: list[int] = []  # speculative part of `feed`
        self.history: list[int] = []  # prompt + generated, for prompt lookup
        self.out: list[int] = []
        self.data = b""
        self.text = ""
        self.logprobs: list[float] = []
        self.finish = "length"
        self.done = False
        self.cut = False  # the text was cut at a stop string


class BatchEngine:
    """One owner of a llama.cpp context; many sequences decoded together.

    `model` is a loaded `llama_cpp._internals.LlamaModel` (shared with the `Llama` that
    tokenizes); `detokenize(tokens) -> bytes` turns tokens into text.
    """

    def __init__(self, model: Any, detokenize: Any, *, n_seq: int = 1, n_ctx: int = 8192, n_batch: int = 512,
                 n_threads: int | None = None, top_k: int = 40, min_p: float = 0.05, speculate: int = 0,
                 unified: bool = False, flash_attn: bool = False, prefill_chunk: int = 0, prefill_every: int = 64,
                 name: str = "model"):
        import llama_cpp as lc

        self._lc = lc
        self.name = name
        self.n_seq, self.n_ctx, self.n_batch = n_seq, n_ctx, n_batch
        self.top_k, self.min_p, self.speculate = top_k, min_p, speculate
        #: Prompt tokens per step while other sequences are decoding. On a CPU a step costs
        #: about what its prompt chunk costs, and each decoding sequence gets one token per
        #: step, so a prompt evaluated beside them slows every one of them to its pace; by
        #: default (0) decoding goes first and prompts are evaluated when no sequence decodes,
        #: or in full `n_batch` chunks once one has waited `prefill_every` steps.
        self.prefill_chunk, self.prefill_every = prefill_chunk, prefill_every
        self._prompt_waited = 0
        self._model = model
        self._vocab = model.vocab
        self._v = Vocab(model.vocab)
        self._detok = detokenize
        p = lc.llama_context_default_params()
        p.n_ctx = n_ctx
        p.n_batch = p.n_ubatch = n_batch
        p.n_seq_max = n_seq
        # Split (default): each slot has n_ctx / n_seq cells of its own, and attention reads
        # only them. Unified: slots share all cells (a copied prompt costs none), but every
        # sequence attends over the whole cache, idle slots' prefixes included.
        p.kv_unified = unified
        p.no_perf = True
        # llama.cpp's default (auto) turns flash attention on, which on a CPU changes the
        # numbers (log-probabilities by ~0.1) but not the speed here; off, as llama-cpp-python has it
        p.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if n_threads is not None:
            p.n_threads = p.n_threads_batch = n_threads
        self._ctx = lc.llama_init_from_model(model.model, p)
        if not self._ctx:
            raise ModelError(f"llama.cpp could not create a context of {n_ctx} tokens for {n_seq} sequences")
        self.n_ctx = lc.llama_n_ctx(self._ctx)
        self.unified = unified
        #: the most tokens one sequence can hold
        self.seq_ctx = self.n_ctx if unified else self.n_ctx // n_seq
        self._mem = lc.llama_get_memory(self._ctx)
        self._batch = lc.llama_batch_init(n_batch, 0, 1)
        self.slots = [_Slot(i) for i in range(n_seq)]
        self.stats = Stats()
        self._queue: deque[Request] = deque()
        self._active: list[_Seq] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"llama-engine-{name}", daemon=True)
        self._thread.start()

    # --- callers ---------------------------------------------------------------------------

    def submit(self, req: Request) -> Future:
        """Queue `req`; its future gets a list of `Sample`s (or a ModelError)."""
        if req.n < 1:
            raise ModelError(f"n must be >= 1, got {req.n}")
        if not req.tokens:
            raise ModelError("empty prompt")
        if len(req.tokens) >= self.seq_ctx:
            raise ModelError(f"prompt has {len(req.tokens)} tokens; the context window of {self.name} is {self.seq_ctx} "
                             "(raise n_ctx)")
        req.max_tokens = max(1, min(req.max_tokens, self.seq_ctx - len(req.tokens)))
        req._results = [None] * req.n
        req._pending = req.n
        with self._cv:
            if self._closed:
                raise ModelError(f"{self.name} is closed")
            self._queue.append(req)
            self._cv.notify()
        return req.future

    def generate(self, req: Request) -> list[Sample]:
        """Submit and wait (blocking)."""
        return self.submit(req).result()

    def clear(self) -> None:
        """Forget every idle slot's cached prefix (benchmarks: make the next prompt evaluate in full)."""
        with self._cv:
            for slot in self.slots:
                if slot.seq is None:
                    self._lc.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
                    slot.cached = []

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()
        lc = self._lc
        lc.llama_batch_free(self._batch)
        lc.llama_free(self._ctx)
        self._ctx = None

    # --- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._queue and not self._active:
                    self._cv.wait()
                if self._closed:
                    break
            try:
                self._drop_cancelled()
                self._admit()
                if self._active:
                    self._step()
            except Exception as e:  # a bug or a llama.cpp failure: fail what runs, keep serving
                self._fail_all(ModelError(f"{self.name}: decoding failed: {e}"))
        self._fail_all(ModelError(f"{self.name} is closed"), queued=True)

    def _reserved(self) -> int:
        """Cells the running requests may still need (prompt + max_tokens per sample)."""
        reqs = {id(s.req): s.req for s in self._active}.values()
        return sum(len(r.tokens) + r.max_tokens * (r.n - r._pending) for r in reqs)

    def _admit(self) -> None:
        """Give free slots to queued requests, oldest first (a request that does not fit yet
        waits, and so do the ones behind it: no starvation)."""
        with self._cv:
            while self._queue:
                req = self._queue[0]
                free = [s for s in self.slots if s.seq is None]
                if not free:
                    return
                new = req._pending == req.n
                if not new and self._prefilling(req):
                    return  # further samples copy the prompt once it is evaluated
                need = (len(req.tokens) if new else 0) + req.max_tokens
                if self.unified and self._reserved() + need > self.n_ctx:
                    if not self._active:  # alone and still too big: it can never run
                        self._queue.popleft()
                        self._finish_error(req, ModelError(
                            f"prompt of {len(req.tokens)} tokens plus {req.max_tokens} new tokens does not fit the "
                            f"{self.n_ctx}-token context of {self.name}"))
                        continue
                    return
                try:
                    self._start(req, self._pick_slot(free, req.tokens))
                except Exception as e:  # this request's own fault (a grammar llama.cpp rejects)
                    self._queue.popleft()
                    for s in [s for s in self._active if s.req is req]:
                        self._forget(s)
                    self._finish_error(req, e if isinstance(e, ModelError) else ModelError(str(e)))
                    continue
                if req._pending == 0:
                    self._queue.popleft()

    def _prefilling(self, req: Request) -> bool:
        return any(s.req is req and not s.out for s in self._active)

    def _holder(self, tokens: list[int], exclude: _Slot) -> _Slot | None:
        """A slot whose cache starts with all but the prompt's last token."""
        head = tokens[:-1]
        for sl in self.slots:
            if sl is not exclude and len(sl.cached) >= len(head) and sl.cached[: len(head)] == head:
                return sl
        return None

    @staticmethod
    def _common(a: list[int], b: list[int]) -> int:
        """Length of the common prefix."""
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    def _pick_slot(self, free: list[_Slot], tokens: list[int]) -> _Slot:
        """The free slot sharing the longest prefix with the prompt; if none shares a real part
        (half the prompt, or 64 tokens), the emptiest: it must not evict a reusable prefix."""
        best = max(free, key=lambda s: (self._common(s.cached, tokens), -s.used))
        ok = self._common(best.cached, tokens) >= min(64, len(tokens) // 2)
        return best if ok else min(free, key=lambda s: (len(s.cached), s.used))

    def _start(self, req: Request, slot: _Slot) -> None:
        lc = self._lc
        index = req.n - req._pending
        sampler = Sampler(self._v, temperature=req.temperature, top_p=req.top_p, top_k=self.top_k, min_p=self.min_p,
                          seed=req.seed + index, grammar=req.grammar)
        seq = _Seq(req, index, slot, sampler)
        L = len(req.tokens)
        keep = min(self._common(slot.cached, req.tokens), L - 1)  # evaluate >= 1 token for logits
        source = None if keep == L - 1 or index == 0 else self._holder(req.tokens, slot)
        if source is not None:
            keep = 0
        if not lc.llama_memory_seq_rm(self._mem, slot.seq_id, keep, -1):
            lc.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
            keep = 0
        slot.cached = slot.cached[:keep]
        if source is not None:  # a further sample: a copy of the prompt's cells but the last
            # (between split slots llama.cpp copies whole sequences only: copy, then trim)
            lc.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
            lc.llama_memory_seq_cp(self._mem, source.seq_id, slot.seq_id, -1, -1)
            lc.llama_memory_seq_rm(self._mem, slot.seq_id, L - 1, -1)
            slot.cached = list(req.tokens[: L - 1])
            keep = L - 1
        if index == 0:
            req.cached_tokens = keep
        self.stats.cached_tokens += keep
        seq.feed = list(req.tokens[keep:])
        seq.history = list(req.tokens)
        slot.seq = seq
        slot.used = time.monotonic()
        req._pending -= 1
        req._running += 1
        self._active.append(seq)

    def _step(self) -> None:
        """One `llama_decode` over a token of every decoding sequence and prompt chunks."""
        lc = self._lc
        b = self._batch
        b.n_tokens = 0
        placed: list[tuple[_Seq, int, int]] = []  # (seq, first batch index, count)
        room = self.n_batch
        decoding = sum(1 for s in self._active if len(s.feed) == 1)
        waiting = any(len(s.feed) > 1 for s in self._active)
        if not decoding or self._prompt_waited >= self.prefill_every:
            prompt_room, self._prompt_waited = self.n_batch, 0
        else:
            prompt_room = min(self.n_batch, decoding + self.prefill_chunk)
            self._prompt_waited += waiting
        # decoding sequences first (one token each, plus a draft), then prompt chunks
        for s in sorted(self._active, key=lambda s: len(s.feed) > 1):
            if len(s.feed) > 1:
                room = min(room, prompt_room - b.n_tokens)
            if room <= 0:
                break
            if len(s.feed) == 1 and self.speculate and s.out:
                s.draft = lookup(s.history, self.speculate)[: max(0, min(room - 1, s.req.max_tokens - len(s.out) - 1))]
                s.feed = s.feed + s.draft
            take = s.feed[:room]
            whole = len(take) == len(s.feed)
            start, pos0 = b.n_tokens, len(s.slot.cached)
            for j, tok in enumerate(take):
                i = b.n_tokens
                b.token[i] = tok
                b.pos[i] = pos0 + j
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = s.slot.seq_id
                # logits for the last token, and for every token of a draft and the one before it
                b.logits[i] = whole and j >= len(take) - 1 - len(s.draft)
                b.n_tokens += 1
            room -= len(take)
            placed.append((s, start, len(take)))
        if not placed:
            return
        rc = lc.llama_decode(self._ctx, b)
        while rc == 1:  # no room in the KV cache: drop an idle slot's cached prefix and retry
            idle = [sl for sl in self.slots if sl.seq is None and sl.cached]
            if not idle:
                # cells are reserved per request, so only fragmentation gets here: the
                # newest request fails alone and the others go on at the next step
                newest = self._active[-1].req
                for s in [s for s in self._active if s.req is newest]:
                    self._forget(s)
                self._finish_error(newest, ModelError(f"{self.name}: the KV cache is full"))
                for s, _, _ in placed:  # nothing was evaluated: take the drafts back
                    if s.draft:
                        del s.feed[-len(s.draft):]
                        s.draft = []
                return
            victim = min(idle, key=lambda sl: sl.used)
            lc.llama_memory_seq_rm(self._mem, victim.seq_id, -1, -1)
            victim.cached = []
            rc = lc.llama_decode(self._ctx, b)
        if rc != 0:
            raise ModelError(f"llama_decode returned {rc}")
        st = self.stats
        st.steps += 1
        st.batch_tokens += b.n_tokens
        st.max_sequences = max(st.max_sequences, len(placed))
        for s, start, count in placed:
            s.slot.cached.extend(s.feed[:count])
            s.feed = s.feed[count:]
            if not s.out:
                st.prompt_tokens += count
            if not s.feed:
                self._advance(s, start, count)

    def _advance(self, s: _Seq, start: int, count: int) -> None:
        """Sample after the tokens just evaluated; with a draft, keep what the sampler agrees
        with and remove the rest from the cache."""
        draft, s.draft = s.draft, []
        first = start + count - 1 - len(draft)  # logits after the last non-draft token
        for k in range(len(draft) + 1):
            tok = s.sampler.sample(self._ctx, first + k)
            if s.req.logprobs:
                s.logprobs.append(s.sampler.logprob(self._ctx, first + k, tok))
            if self._emit(s, tok) or k == len(draft) or tok != draft[k]:
                break
            self.stats.accepted += 1
        self.stats.drafted += len(draft)
        # the cache holds the prompt and every generated token but the last (fed next step)
        extra = len(s.slot.cached) - (len(s.req.tokens) + max(0, len(s.out) - 1))
        if extra > 0:
            self._lc.llama_memory_seq_rm(self._mem, s.slot.seq_id, len(s.slot.cached) - extra, -1)
            del s.slot.cached[-extra:]
        if s.done:
            self._retire(s)
        else:
            s.feed = [s.out[-1]]

    def _emit(self, s: _Seq, tok: int) -> bool:
        """Append a sampled token; True when the sequence is finished."""
        if self._lc.llama_vocab_is_eog(self._vocab, tok):
            if s.req.logprobs:
                s.logprobs.pop()  # the end token is not part of the text
            s.finish, s.done = "stop", True
            return True
        s.out.append(tok)
        s.history.append(tok)
        self.stats.generated += 1
        s.data += self._detok([tok])
        stops = s.req.stops
        if stops:
            before = len(s.text)
            s.text = s.data.decode("utf-8", errors="ignore")
            window = max(0, before - max(len(x) for x in stops))
            hits = [i for i in (s.text.find(x, window) for x in stops) if i >= 0]
            if hits:
                s.text = s.text[: min(hits)]
                s.finish, s.done, s.cut = "stop", True, True
                return True
        if len(s.out) >= s.req.max_tokens:
            s.finish, s.done = "length", True
            return True
        return False

    # --- endings ---------------------------------------------------------------------------

    def _release(self, s: _Seq) -> None:
        s.sampler.free()
        s.slot.seq = None
        s.slot.used = time.monotonic()
        self._active.remove(s)
        s.req._running -= 1

    def _forget(self, s: _Seq) -> None:
        """Release a sequence whose cache contents are not to be trusted or kept."""
        self._release(s)
        self._lc.llama_memory_seq_rm(self._mem, s.slot.seq_id, -1, -1)
        s.slot.cached = []

    def _retire(self, s: _Seq) -> None:
        text = s.text if s.cut else s.data.decode("utf-8", errors="ignore")
        s.req._results[s.index] = Sample(text, len(s.out), s.finish, s.logprobs)
        self._release(s)
        req = s.req
        if req._pending == 0 and req._running == 0:
            try:
                req.future.set_result(list(req._results))
            except InvalidStateError:  # cancelled meanwhile
                pass

    def _drop_cancelled(self) -> None:
        """Requests cancelled (or failed) by their callers leave; their prefixes stay cached."""
        for s in [s for s in self._active if s.req.future.done()]:
            s.slot.cached = s.slot.cached[: len(s.req.tokens) + max(0, len(s.out) - 1)]
            self._lc.llama_memory_seq_rm(self._mem, s.slot.seq_id, len(s.slot.cached), -1)
            self._release(s)
        with self._cv:
            for r in [r for r in self._queue if r.future.done()]:
                self._queue.remove(r)

    @staticmethod
    def _finish_error(req: Request, err: Exception) -> None:
        try:
            req.future.set_exception(err)
        except InvalidStateError:
            pass

    def _fail_all(self, err: Exception, queued: bool = False) -> None:
        for s in list(self._active):
            self._finish_error(s.req, err)
            self._forget(s)  # what a failed step left in the cache is unknown
        if queued:
            with self._cv:
                while self._queue:
                    self._finish_error(self._queue.popleft(), err)
