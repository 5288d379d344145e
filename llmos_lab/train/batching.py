"""Training batches: a length-grouped order, and the micro-batch a memory grant allows.

The micro-batch is measured, not guessed: one forward and backward pass at ``max_length`` with one
and with two examples gives the memory a step holds per example (on CUDA the allocator's peak; on
a CPU the bytes autograd saves for the backward pass, which is what grows with the batch), the
optimizer state is counted from the trainable parameters, and the largest micro-batch that fits is
checked with one more pass at that size. Measurements are cached per model, method, max_length,
device and precision (in memory and in ``$LLMOS_LAB_HOME/micro_batches.json``), so a scheduler
that re-plans a task on every grant change measures once.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from pathlib import Path

import numpy as np
import torch

from .. import _io
from ..inference import autocast
from ..units import parse_bytes

_cache: dict[str, dict[str, int]] = {}
_cache_lock = threading.Lock()


def length_grouped(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                   group: bool = True) -> list[np.ndarray]:
    """One epoch of index batches: shuffled; with ``group``, sorted by length inside chunks of
    50 batches (so padding is short) and the batch order shuffled again."""
    order = rng.permutation(len(lengths))
    if group:
        chunk = batch_size * 50
        order = np.concatenate([
            c[np.argsort(lengths[c], kind="stable")]
            for c in np.array_split(order, max(1, math.ceil(len(order) / chunk)))])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def state_bytes(model: torch.nn.Module) -> int:
    """Bytes a training step holds whatever the batch: every parameter, plus a gradient and
    two AdamW moments (float32) for each trainable one."""
    total = 0
    for p in model.parameters():
        total += p.numel() * p.element_size()
        if p.requires_grad:
            total += p.numel() * (p.element_size() + 8)
    return total


def step_bytes(model: torch.nn.Module, max_length: int, batch: int, device: torch.device,
               precision: str = "fp32") -> int:
    """Measured memory of one forward and backward pass over ``batch`` rows of ``max_length``
    tokens, beyond the model's state. Gradients are cleared and RNG states restored after, so
    measuring never changes a run."""
    vocab = int(getattr(model.config, "vocab_size", 1000))
    ids = torch.randint(min(1000, vocab - 1), vocab, (batch, max_length), device=device,
                        generator=torch.Generator(device=device).manual_seed(0))
    mask = torch.ones_like(ids)
    rng_devices = [device] if device.type == "cuda" else []
    was_training = model.training
    model.train()
    with torch.random.fork_rng(devices=rng_devices):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            _forward_backward(model, ids, mask, device, precision, contextlib.nullcontext())
            torch.cuda.synchronize(device)
            used = torch.cuda.max_memory_allocated(device) - before
        else:
            weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
            saved: dict[int, int] = {}

            def pack(t: torch.Tensor) -> torch.Tensor:
                storage = t.untyped_storage()
                if storage.data_ptr() not in weights:  # counted in state_bytes
                    saved[storage.data_ptr()] = storage.nbytes()
                return t

            hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
            _forward_backward(model, ids, mask, device, precision, hooks)
            used = sum(saved.values())
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return int(used)


def _forward_backward(model, ids, mask, device, precision, hooks) -> None:
    with hooks, autocast(device, precision):
        out = model(input_ids=ids, attention_mask=mask)
        logits = out.logits if hasattr(out, "logits") else out[0]
        loss = logits.float().sum()
    loss.backward()


def micro_batch_for(model: torch.nn.Module, max_length: int, memory: int | str,
                    batch_size: int, *, device: torch.device | str = "cpu",
                    precision: str = "fp32", key: str | None = None) -> int:
    """The largest micro-batch (at most ``batch_size``, at least 1) whose measured training
    memory fits ``memory`` bytes. ``key`` names the model for the cache (a model path and
    method); without it nothing is cached."""
    memory = parse_bytes(memory, "memory")
    device = torch.device(device)
    fixed = state_bytes(model)
    points = _cached(key, max_length, device, precision)

    def measure(b: int) -> int:
        if b not in points:
            points[b] = step_bytes(model, max_length, b, device, precision)
        return points[b]

    room = memory - fixed
    one, two = measure(1), measure(min(2, batch_size))
    if room < one or batch_size == 1:
        best = 1
    else:
        per = max(two - one, 1)
        best = int(min(batch_size, 1 + (room - one) // per))
        # verify the extrapolation; step down along the line through the measured points
        while best > 2 and measure(best) > room:
            per = max((points[best] - one) / (best - 1), 1)
            best = max(1, min(best - 1, int(1 + (room - one) // per)))
    _store(key, max_length, device, precision, points)
    return best


def _cache_key(key: str, max_length: int, device: torch.device, precision: str) -> str:
    return f"{key}|L={max_length}|{device}|{precision}"


def _cache_file() -> Path:
    from ..assets import cache_dir

    return cache_dir() / "micro_batches.json"


def _cached(key: str | None, max_length: int, device: torch.device,
            precision: str) -> dict[int, int]:
    if key is None:
        return {}
    full = _cache_key(key, max_length, device, precision)
    with _cache_lock:
        if not _cache:
            with contextlib.suppress(OSError, ValueError):
                _cache.update(json.loads(_cache_file().read_text()))
        return {int(b): int(v) for b, v in _cache.get(full, {}).items()}


def _store(key: str | None, max_length: int, device: torch.device, precision: str,
           points: dict[int, int]) -> None:
    if key is None:
        return
    with _cache_lock:
        _cache[_cache_key(key, max_length, device, precision)] = {
            str(b): v for b, v in sorted(points.items())}
        # a read-only cache folder only costs a re-measurement
        with contextlib.suppress(OSError):
            _io.write_text(_cache_file(), json.dumps(_cache, indent=1, sort_keys=True))
