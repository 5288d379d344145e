"""Continuous batching: sequences join the running decode batch at the next token step and
leave it when they finish, as vLLM's scheduler does, instead of waiting for a static batch.

Each :class:`Sequence` keeps its own KV cache, preallocated for its prompt plus its token
budget, so joining or leaving never copies another sequence's cache. A step (``DecodeBatch.step``)
prefills the newcomers one by one, then decodes one token for every running sequence: the
linear layers see the whole batch at once (that is where the FLOPs are), attention runs per
sequence over that sequence's own cache. Two choices keep a greedy sequence's tokens the same
whether it runs alone or in a busy batch: no padding anywhere (per-sequence attention), and the
batch never shrinks to one row (BLAS takes a different path for a single row).

Llama-architecture models (Llama, SmolLM2, Mistral, Qwen2) take the fast path of
``llama.py``. A sequence on
an adapter, an int8 model or another architecture decodes through the model's own forward with
a cache of its own (correct, one row at a time). The mechanism is here; who joins a full batch
first is the caller's policy (``DecodeBatch.add`` takes a priority).
"""

from __future__ import annotations

import inspect
import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import events
from .llama import (
    KVCache,
    _fast_path_ok,
    _llama_decode,
    _llama_prefill,
    _new_cache,
    prepare_layout,
)


@dataclass(eq=False)
class Sequence:
    """One generation request: prompt ids in, tokens out one step at a time."""

    prompt: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    seed: int | None = None
    stop_ids: frozenset[int] = frozenset()
    adapter: str | None = None
    priority: int = 1
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # stop | length | cancelled
    cache: Any = field(default=None, repr=False)
    generator: torch.Generator | None = field(default=None, repr=False)
    order: int = 0
    added: float = 0.0
    preemptions: int = 0
    preempt_asked: str | None = None  # "keep" (the KV cache) or "drop" (recompute it)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.tokens)


@dataclass
class StepResult:
    """What one step did: tokens emitted (sequence, token id; a stop token is not emitted),
    sequences that finished (any reason), how many joined, the batch size it ran at."""

    emitted: list[tuple[Sequence, int]]
    finished: list[Sequence]
    prefilled: int
    batch: int


class DecodeBatch:
    """The running batch of one causal LM in a :class:`~llmos_lab.kernel.ModelKernel`.

    Thread-safe: ``add`` and ``cancel`` may come from any thread; ``step`` from one at a time.
    Every step holds the model resident through the kernel (faulting it in if it was evicted;
    the caches live here, so an eviction between steps loses nothing).
    """

    def __init__(self, kernel, model: str, max_batch: int = 16):
        self.kernel, self.model, self.max_batch = kernel, model, int(max_batch)
        self._pending: list[Sequence] = []
        self._running: list[Sequence] = []
        self._parked: list[Sequence] = []  # preempted, waiting for resume()
        self._lock = threading.Lock()
        self._order = itertools.count()

    # ------------------------------------------------------------------ queue

    def add(self, seq: Sequence) -> Sequence:
        """Queue a sequence: it joins at the next step with room (higher priority first)."""
        if seq.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        seq.order, seq.added = next(self._order), time.perf_counter()
        if seq.temperature > 0:
            seq.generator = torch.Generator().manual_seed(0 if seq.seed is None else seq.seed)
        with self._lock:
            self._pending.append(seq)
        return seq

    def cancel(self, seq: Sequence, reason: str = "cancelled") -> None:
        """Leave at the next step (a client went away, a stop string matched); its cache is
        dropped then."""
        with self._lock:
            if seq in self._pending:
                self._pending.remove(seq)
                self._finish(seq, reason)
            elif seq.finish_reason is None:
                seq.finish_reason = reason

    def preempt(self, seq: Sequence, keep_cache: bool = True) -> None:
        """Take a sequence out at the next step and park it until ``resume``. With its KV
        cache kept it goes on exactly where it was; dropped (memory is short), the cache is
        rebuilt from its tokens when it rejoins (the same tokens up to floating-point
        rounding)."""
        with self._lock:
            if seq in self._pending:
                self._pending.remove(seq)
                self._park(seq, keep_cache)
            elif not seq.done:
                seq.preempt_asked = "keep" if keep_cache else "drop"

    def resume(self, seq: Sequence) -> None:
        """A parked sequence queues again (by priority) for the next step with room."""
        with self._lock:
            seq.preempt_asked = None
            if seq in self._parked:
                self._parked.remove(seq)
                self._pending.append(seq)

    def _park(self, seq: Sequence, keep_cache: bool) -> None:
        seq.preempt_asked, seq.preemptions = None, seq.preemptions + 1
        if not keep_cache:
            seq.cache = None
        self._parked.append(seq)

    def _admit(self) -> list[Sequence]:
        """Under the lock: who joins this step. Higher priority first; a waiting sequence of
        higher priority than the lowest running one takes its place (that one waits with its
        KV cache while the memory budget has room for it, else recomputes it), as vLLM
        preempts."""
        for seq in [s for s in self._running if s.preempt_asked]:
            self._running.remove(seq)
            self._park(seq, seq.preempt_asked == "keep")
        self._pending.sort(key=lambda s: (-s.priority, s.order))
        while self._pending and self._running and len(self._running) >= self.max_batch:
            low = min(self._running, key=lambda s: (s.priority, -s.order))
            if self._pending[0].priority <= low.priority:
                break
            self._running.remove(low)  # waits, first in line for room
            low.preemptions += 1
            if not self._cache_fits(low):  # memory is short: recompute it when it rejoins
                low.cache = None
            self._pending.append(low)
            self._pending.sort(key=lambda s: (-s.priority, s.order))
        room = max(self.max_batch - len(self._running), 0)
        joining, self._pending = self._pending[:room], self._pending[room:]
        return joining

    def _cache_fits(self, seq: Sequence) -> bool:
        """Whether a waiting sequence may keep its KV cache: the kernel's free memory (its
        budget less the resident models) must hold it and the other waiting caches."""
        if not isinstance(seq.cache, KVCache):
            return True
        waiting = sum(s.cache.nbytes for s in [*self._pending, *self._parked]
                      if isinstance(s.cache, KVCache))
        return waiting + seq.cache.nbytes <= self.kernel.memory()["free"]

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def cache_bytes(self) -> int:
        with self._lock:
            return sum(s.cache.nbytes for s in self._running if isinstance(s.cache, KVCache))

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.finish_reason = seq.finish_reason or reason
        seq.cache = None

    # ------------------------------------------------------------------ step

    def step(self) -> StepResult:
        """Admit newcomers (prefill), then decode one token for every running sequence."""
        with self._lock:
            finished = [s for s in self._running if s.done]
            self._running = [s for s in self._running if not s.done]
            joining = self._admit()
        for s in finished:
            self._finish(s, "cancelled")
        if not joining and not self._running:
            return StepResult([], finished, 0, 0)
        chosen: list[tuple[Sequence, int]] = []
        with self.kernel._use(self.model) as rec, rec.lock:
            fast = _fast_path_ok(rec)
            if fast:
                prepare_layout(rec.model)
            old = list(self._running)
            resumed = [s for s in joining if s.cache is not None]  # preempted with their KV
            for seq in joining:
                if seq.cache is None:
                    token = self._prefill(rec, seq, fast)
                    if not seq.tokens:  # a rebuilt cache re-predicts a token already out
                        chosen.append((seq, token))
            chosen += self._decode(rec, old + resumed, fast)
        done, emitted = [], []
        for seq, token in chosen:
            if self._accept(seq, token):
                emitted.append((seq, token))
            if seq.done:
                done.append(seq)
                self._finish(seq, seq.finish_reason)
        with self._lock:
            self._running = [s for s in old + joining if not s.done]
        if done:  # what the kernel's log shows: sequences completed by this step
            events.publish("kernel.generate", kernel=self.kernel, model=self.model, n=len(done),
                           seconds=time.perf_counter() - min(s.added for s in done))
        return StepResult(emitted, finished + done, len(joining), len(old) + len(joining))

    def _accept(self, seq: Sequence, token: int) -> bool:
        if seq.done:  # cancelled while the step ran
            return False
        if token in seq.stop_ids:
            seq.finish_reason = "stop"
            return False
        seq.tokens.append(token)
        if len(seq.tokens) >= seq.max_new_tokens:
            seq.finish_reason = "length"
        return True

    def _prefill(self, rec, seq: Sequence, fast: bool) -> int:
        """The prompt (and, after a preemption that dropped the cache, every token but the
        last, which the next decode step feeds) through the model at once."""
        context = seq.prompt + seq.tokens[:-1]
        ids = torch.tensor([context], dtype=torch.long, device=self.kernel.device)
        if fast and seq.adapter is None:
            seq.cache = _new_cache(rec.model, len(seq.prompt) + seq.max_new_tokens)
            logits = _llama_prefill(rec.model, ids, seq.cache)
        else:
            with self.kernel._adapter(rec, seq.adapter):
                out = rec.model(input_ids=ids, use_cache=True)
            seq.cache, logits = returned_cache(out), out.logits[0, -1]
        return _choose(logits, seq)

    def _decode(self, rec, seqs: list[Sequence], fast: bool) -> list[tuple[Sequence, int]]:
        live = [s for s in seqs if not s.done]
        quick = [s for s in live if fast and isinstance(s.cache, KVCache)]
        out = []
        if quick:
            logits = _llama_decode(rec.model, quick, self.kernel.device)
            best = logits.argmax(-1).tolist()  # one call for every greedy row
            out += [(s, best[i] if s.temperature <= 0 else _choose(logits[i], s))
                    for i, s in enumerate(quick)]
        for s in live:
            if s in quick:
                continue
            last = torch.tensor([[s.tokens[-1]]], dtype=torch.long, device=self.kernel.device)
            with self.kernel._adapter(rec, s.adapter):
                o = rec.model(input_ids=last, use_cache=True, **cache_kwarg(rec.model, s.cache))
            s.cache = returned_cache(o)
            out.append((s, _choose(o.logits[0, -1], s)))
        return out


def cache_kwarg(model, cache) -> dict[str, Any]:
    """transformers 5 renamed ``past_key_values`` to ``cache``; take whichever it has."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    params = inspect.signature(base.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def returned_cache(output) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _choose(logits: torch.Tensor, seq: Sequence) -> int:
    if seq.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / seq.temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=seq.generator))


def run_to_end(batch: DecodeBatch, seqs: Iterable[Sequence]) -> list[Sequence]:
    """Add the sequences and step until they are all done (tests, benchmarks, kernel use)."""
    seqs = [batch.add(s) for s in seqs]
    while not all(s.done for s in seqs):
        batch.step()
    return seqs
