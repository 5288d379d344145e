"""Residency: which model sits where, and the moves between device, host and disk.

The mechanism behind :class:`~llmos_lab.kernel.ModelKernel`'s calls: hold a model resident
for a call (faulting it in), make room within the budget by evicting the least recently used
idle, unpinned model (device -> host on CUDA -> disk), wait for models in use rather than fail,
and measure what each placement costs. The kernel decides; this moves.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import time
from collections.abc import Iterator

import torch

from .. import events, loading
from ..errors import MemoryBudgetError, ModelStateError, UnknownNameError
from ..units import format_bytes
from . import runtimes
from .swap import ModelRecord

WAIT_FOR_BUSY_SECONDS = 600.0


class Residency:
    """Mixed into ModelKernel: expects ``_models``, ``_lock``, ``_idle``, ``_clock``,
    ``swap``, ``device``, ``memory_budget`` and ``host_budget``."""

    def _get(self, name: str) -> ModelRecord:
        try:
            return self._models[name]
        except KeyError:
            raise UnknownNameError("loaded model", name, self._models) from None

    def _touch(self, rec: ModelRecord) -> None:
        rec.tick, rec.last_used = next(self._clock), time.time()

    def _used(self, state: str) -> int:
        return sum(r.total_bytes for r in self._models.values() if r.state == state)

    @contextlib.contextmanager
    def _use(self, name: str) -> Iterator[ModelRecord]:
        """Fault the model in if needed and hold it resident for the duration of a call."""
        with self._lock:
            rec = self._get(name)
            if rec.state != "resident":
                self._make_room(rec.total_bytes, name)  # may wait, releasing the lock
                if self._models.get(name) is not rec:
                    raise UnknownNameError("loaded model", name, self._models)
            if rec.state == "resident":  # already, or faulted in by a call we waited for
                rec.hits += 1
            else:
                self._fault_in(rec)
            self._touch(rec)
            rec.active += 1
        try:
            yield rec
        finally:
            with self._lock:
                rec.active -= 1
                self._idle.notify_all()

    def _wait_idle(self, rec: ModelRecord, what: str) -> None:
        """Wait (holding the kernel lock between checks) until no call uses ``rec``: an
        evict or unload never pulls the weights from under a running infer."""
        deadline = time.monotonic() + WAIT_FOR_BUSY_SECONDS
        while rec.active:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ModelStateError(f"cannot {what} model {rec.name!r}: still in use by "
                                      f"{rec.active} call(s) after {WAIT_FOR_BUSY_SECONDS:g} s")
            self._idle.wait(timeout=left)
        if self._models.get(rec.name) is not rec:
            raise UnknownNameError("loaded model", rec.name, self._models)

    def _make_room(self, needed: int, for_model: str) -> None:
        if needed > self.memory_budget:
            raise MemoryBudgetError(
                f"model {for_model!r} needs {format_bytes(needed)}, more than the whole memory "
                f"budget of {format_bytes(self.memory_budget)}; raise memory_budget or load it "
                f"with quantize='int8' / a smaller dtype")
        deadline = time.monotonic() + WAIT_FOR_BUSY_SECONDS
        while self._used("resident") + self._still_needed(for_model, needed) \
                > self.memory_budget:
            victims = [r for r in self._models.values() if r.state == "resident"
                       and not r.pinned and r.active == 0 and r.name != for_model]
            busy = [r for r in self._models.values() if r.state == "resident"
                    and not r.pinned and r.active and r.name != for_model]
            if not victims and busy and time.monotonic() < deadline:
                # a model in use is freed when its call returns: wait, as a process waits
                # for memory, rather than fail
                self._idle.wait(timeout=max(0.0, deadline - time.monotonic()))
                continue
            if not victims:
                missing = self._used("resident") + self._still_needed(for_model, needed) \
                    - self.memory_budget
                pinned = [f"{r.name} ({format_bytes(r.total_bytes)})"
                          for r in self._models.values() if r.pinned]
                busy = [r.name for r in self._models.values() if r.active and not r.pinned]
                raise MemoryBudgetError(
                    f"no room for {for_model!r}: {format_bytes(missing)} missing in a budget of "
                    f"{format_bytes(self.memory_budget)}; pinned: {', '.join(pinned) or 'none'}"
                    + (f"; in use: {', '.join(busy)}" if busy else ""))
            self._evict(min(victims, key=lambda r: r.tick))

    def _still_needed(self, name: str, needed: int) -> int:
        """After a wait, another call may have faulted the model in already."""
        rec = self._models.get(name)
        return 0 if rec is not None and rec.state == "resident" else needed

    def _evict(self, rec: ModelRecord, to: str | None = None) -> None:
        if rec.state == "disk" or rec.state == to:
            return
        target = to or ("host" if self.device.type == "cuda" and rec.state == "resident"
                        else "disk")
        previous = rec.state
        with rec.lock:
            if target == "host":
                if self.host_budget is not None:
                    self._make_host_room(rec.total_bytes)
                rec.model.to("cpu")
            else:
                self.swap.write_base(rec)
                self.swap.write_adapters(rec)
                rec.model = None
            rec.state = target
        release_memory(self.device)
        events.publish("kernel.evict", kernel=self, model=rec.name, source=previous,
                       to=target, bytes=rec.total_bytes)

    def _make_host_room(self, needed: int) -> None:
        while self._used("host") + needed > self.host_budget:
            on_host = [r for r in self._models.values() if r.state == "host" and r.active == 0]
            if not on_host:
                return
            self._evict(min(on_host, key=lambda r: r.tick), "disk")

    def _fault_in(self, rec: ModelRecord) -> None:
        started, previous = time.perf_counter(), rec.state
        with rec.lock:
            if rec.state == "disk" and rec.runtime != "torch":  # its graph is its image
                rec.model = runtimes.session_model(rec, self.swap)
            elif rec.state == "disk":
                model, _ = loading.load_weights(loading.Source(str(rec.image)), rec.task,
                                                rec.head, rec.dtype)
                if rec.quantize:
                    model = loading.quantize_int8(model)
                with loading.quiet():
                    model = self.swap.attach_adapters(model, rec)
                rec.model = model.eval()
            self._place(rec)
            rec.faults += 1
        events.publish("kernel.fault", kernel=self, model=rec.name, source=previous,
                       seconds=time.perf_counter() - started)

    def _place(self, rec: ModelRecord) -> None:
        """Move to the device and measure: parameters and buffers, and the CUDA delta."""
        before = torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0
        rec.model.to(self.device)
        if self.device.type == "cuda":
            rec.cuda_bytes = torch.cuda.memory_allocated(self.device) - before
        rec.bytes = loading.module_bytes(base_model(rec.model)) - sum(rec.adapters.values())
        rec.state = "resident"


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def release_memory(device: torch.device | None = None) -> None:
    """Return freed memory to the OS: collect cycles, trim glibc's heap, empty CUDA's cache."""
    gc.collect()
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
