"""The word-embedding table's gradient kept in one buffer across steps.

A dense embedding gradient is a fresh ``(vocabulary, hidden)`` tensor every step. For MiniLM
that is 47 MB, above the C allocator's mmap threshold, so each step maps it from the OS and
faults it in page by page while zero-filling it: 34 ms of a 230 ms step on a 2-core CPU,
although a batch touches a few hundred of its 30,522 rows. Here the forward asks torch for a
sparse gradient (only the rows the batch used) and :meth:`EmbeddingRows.densify` writes it into
one persistent dense buffer, clearing only the rows the previous step wrote. Clipping and the
optimizer then see the same dense gradient as before (equal up to float summation order, tested),
so AdamW's update, weight decay included, is unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class EmbeddingRows:
    """Off (every call a no-op) unless the model's input embedding is a plain trainable
    ``nn.Embedding`` on the CPU in a single process (a GPU's caching allocator has no such
    cost, and DDP would have to reduce sparse gradients)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, world: int = 1) -> None:
        get = getattr(model, "get_input_embeddings", None)
        emb = get() if callable(get) else None
        usable = (device.type == "cpu" and world == 1 and type(emb) is torch.nn.Embedding
                  and emb.weight.requires_grad and not emb.sparse)
        self._emb = emb if usable else None
        self._buffer: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None

    @property
    def active(self) -> bool:
        return self._emb is not None

    @contextlib.contextmanager
    def sparse(self) -> Iterator[None]:
        """Around a training forward: its embedding lookup records a sparse gradient. The
        model is left as it was afterwards (its embedding is not sparse for anyone else)."""
        if self._emb is None:
            yield
            return
        self._emb.sparse = True
        try:
            yield
        finally:
            self._emb.sparse = False

    def densify(self) -> None:
        """After a step's backward passes, before clipping: the sparse gradient becomes the
        dense buffer's rows (the rows of the step before cleared)."""
        weight = self._emb.weight if self._emb is not None else None
        grad = weight.grad if weight is not None else None
        if grad is None or not grad.is_sparse:
            return
        grad = grad.coalesce()  # one row per index: micro-batches' rows summed
        if self._buffer is None:
            self._buffer = torch.zeros_like(weight)
        elif self._rows is not None:
            self._buffer.index_fill_(0, self._rows, 0.0)
        self._rows = grad.indices()[0]
        self._buffer.index_copy_(0, self._rows, grad.values().to(self._buffer.dtype))
        weight.grad = self._buffer

    def clip_(self, parameters, max_norm: float) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` (the same norm, coefficient and scaling) that
        reads and scales only the buffer's written rows: the rest are zeros."""
        grads = [p.grad for p in parameters if p.grad is not None]
        rows = self._rows if self._buffer is not None and any(
            g is self._buffer for g in grads) else None
        if rows is None:
            return torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)
        others = [g for g in grads if g is not self._buffer]
        written = self._buffer.index_select(0, rows)
        norms = [*torch._foreach_norm(others), torch.linalg.vector_norm(written)]
        total = torch.linalg.vector_norm(torch.stack(norms))
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        torch._foreach_mul_(others, coef)
        self._buffer.index_copy_(0, rows, written.mul_(coef))
        return total
