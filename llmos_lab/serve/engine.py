"""The serving engine: requests become steps of scheduler tasks, one task per model.

A request is queued with its model; while a model has work, one :class:`~llmos_lab.scheduler.Task`
of kind ``"serve"`` is in the project's :class:`~llmos_lab.scheduler.Scheduler`, and each of its
steps advances every request of that model at once: one token for every sequence of the
running decode batch (continuous batching, ``kernel/decode.py``), or one forward pass over the
classification requests that arrived within ``batch_window``. The task's priority is the highest
priority among its requests, so the scheduling policy weighs a request against a training task
in the same scheduler and preempts at step boundaries. When the queue empties the task ends;
the next request submits a new one. Results go back through each job's ``notify`` callback
(called on the scheduler's thread).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..kernel import DecodeBatch, Sequence
from ..scheduler import Scheduler, Task

Notify = Callable[[str, Any], None]  # ("token", id) | ("done", reason or frame) | ("error", exc)


@dataclass(eq=False)
class Job:
    model: str
    priority: int
    notify: Notify
    tenant: str | None = None
    created: float = field(default_factory=time.perf_counter)
    first_at: float | None = None
    last_at: float | None = None


@dataclass(eq=False)
class GenerationJob(Job):
    seq: Sequence | None = None


@dataclass(eq=False)
class ClassifyJob(Job):
    texts: list[str] = field(default_factory=list)
    adapter: str | None = None


@dataclass(eq=False)
class _ModelQueue:
    model: str
    batch: DecodeBatch | None = None
    jobs: dict[Sequence, GenerationJob] = field(default_factory=dict)
    classify: list[ClassifyJob] = field(default_factory=list)
    task_id: str | None = None
    priority: int = 0

    def has_work(self) -> bool:
        return bool(self.classify) or (self.batch is not None
                                       and (self.batch.running or self.batch.pending))

    def priorities(self) -> list[int]:
        return [j.priority for j in self.classify] + [j.priority for j in self.jobs.values()]


class NullMetrics:
    """What the engine reports to; the server passes a Prometheus-backed one."""

    def first_token(self, seconds: float) -> None: ...
    def token(self, seconds: float) -> None: ...
    def tokens_out(self, n: int) -> None: ...


class ServingEngine:
    """Queue requests per model and serve them as scheduler steps."""

    def __init__(self, kernel, scheduler: Scheduler | None = None, *, max_batch: int = 16,
                 batch_window: float = 0.005, max_texts: int = 256, metrics=None):
        self.kernel = kernel
        self.owns_scheduler = scheduler is None
        self.scheduler = scheduler or Scheduler(policy="priority")
        self.max_batch, self.batch_window, self.max_texts = max_batch, batch_window, max_texts
        self.metrics = metrics or NullMetrics()
        self._queues: dict[str, _ModelQueue] = {}
        self._lock = threading.RLock()
        self._serial = itertools.count(1)
        self.loading: set[str] = set()
        self.scheduler.start()

    # ------------------------------------------------------------------ requests

    def generate(self, model: str, seq: Sequence, notify: Notify, *, priority: int = 1,
                 tenant: str | None = None) -> GenerationJob:
        job = GenerationJob(model, priority, notify, tenant, seq=seq)
        seq.priority = priority
        with self._lock:
            q = self._queue(model)
            if q.batch is None:
                q.batch = self.kernel.decoder(model, self.max_batch)
            q.jobs[seq] = job
            q.batch.add(seq)
            self._wake(q)
        return job

    def classify(self, model: str, texts: list[str], notify: Notify, *, adapter: str | None,
                 priority: int = 1, tenant: str | None = None) -> ClassifyJob:
        job = ClassifyJob(model, priority, notify, tenant, texts=list(texts), adapter=adapter)
        with self._lock:
            q = self._queue(model)
            q.classify.append(job)
            self._wake(q)
        return job

    def cancel(self, job: Job, reason: str = "cancelled") -> None:
        """Take a request out: a generation leaves the batch at its next step."""
        with self._lock:
            q = self._queues.get(job.model)
            if q is None:
                return
            if isinstance(job, GenerationJob) and q.batch is not None:
                q.batch.cancel(job.seq, reason)
            elif job in q.classify:
                q.classify.remove(job)

    def state(self) -> dict[str, Any]:
        """Queued and running requests per model, and models being faulted in."""
        with self._lock:
            out = {}
            for name, q in self._queues.items():
                running = q.batch.running if q.batch else 0
                queued = (q.batch.pending if q.batch else 0) + len(q.classify)
                out[name] = {"running": running, "queued": queued, "task": q.task_id,
                             "cache_bytes": q.batch.cache_bytes() if q.batch else 0}
            return out

    def close(self) -> None:
        """Fail whatever is still queued; stop the scheduler if the engine made it."""
        with self._lock:
            queues = list(self._queues.values())
        for q in queues:
            self._fail(q, RuntimeError("the server is shutting down"))
        if self.owns_scheduler:
            self.scheduler.stop()

    # ------------------------------------------------------------------ tasks

    def _queue(self, model: str) -> _ModelQueue:
        if model not in self._queues:
            self._queues[model] = _ModelQueue(model)
        return self._queues[model]

    def _wake(self, q: _ModelQueue) -> None:
        """A task for the model if none is live; else raise its priority if needed."""
        top = max(q.priorities(), default=1)
        if q.task_id is None:
            q.task_id, q.priority = f"serve:{q.model}:{next(self._serial)}", top
            self.scheduler.submit(Task(q.task_id, self._steps(q, q.task_id), "serve",
                                       priority=top))
        elif top > q.priority:
            q.priority = top
            self.scheduler.set_priority(q.task_id, top)

    def _steps(self, q: _ModelQueue, task_id: str) -> Iterator[int]:
        try:
            while True:
                with self._lock:
                    if not q.has_work():
                        q.task_id = None
                        return
                    self._settle_priority(q)
                yield self._step(q)
        except Exception as exc:  # the model's requests fail, the server goes on
            self._fail(q, exc)
            raise
        finally:  # cancelled from outside: the next request starts a new task
            if q.task_id == task_id:  # no lock here: close() may run under the scheduler's
                q.task_id = None

    def _settle_priority(self, q: _ModelQueue) -> None:
        top = max(q.priorities(), default=1)
        if top != q.priority:
            q.priority = top
            self.scheduler.set_priority(q.task_id, top)

    def _step(self, q: _ModelQueue) -> int:
        record = self.kernel.record(q.model)
        faulting = record.state != "resident"
        if faulting:
            self.loading.add(q.model)
        try:
            n = 0
            if q.batch is not None and (q.batch.running or q.batch.pending):
                n += self._decode_step(q)
            if q.classify:
                n += self._classify_step(q)
            return n
        finally:
            self.loading.discard(q.model)

    def _decode_step(self, q: _ModelQueue) -> int:
        result = q.batch.step()
        now = time.perf_counter()
        for seq, token in result.emitted:
            job = q.jobs.get(seq)
            if job is None:
                continue
            if job.first_at is None:
                job.first_at = now
                self.metrics.first_token(now - job.created)
            else:
                self.metrics.token(now - job.last_at)
            job.last_at = now
            job.notify("token", token)
        self.metrics.tokens_out(len(result.emitted))
        with self._lock:
            finished = [q.jobs.pop(s) for s in result.finished if s in q.jobs]
        for job in finished:
            job.notify("done", job.seq.finish_reason)
        return len(result.emitted)

    def _classify_step(self, q: _ModelQueue) -> int:
        with self._lock:
            first = min((j.created for j in q.classify), default=time.perf_counter())
        wait = first + self.batch_window - time.perf_counter()
        if wait > 0:  # let requests arriving within the window share this forward pass
            time.sleep(wait)
        with self._lock:
            jobs, taken = [], 0
            for job in list(q.classify):
                if jobs and taken + len(job.texts) > self.max_texts:
                    break
                jobs.append(job)
                taken += len(job.texts)
                q.classify.remove(job)
        for adapter in dict.fromkeys(j.adapter for j in jobs):
            group = [j for j in jobs if j.adapter == adapter]
            self._classify_group(q.model, adapter, group)
        return taken

    def _classify_group(self, model: str, adapter: str | None, jobs: list[ClassifyJob]) -> None:
        texts = [t for j in jobs for t in j.texts]
        try:
            frame = self.kernel.infer(model, texts, batch_size=max(len(texts), 1),
                                      adapter=adapter)
        except Exception as exc:
            for job in jobs:
                job.notify("error", exc)
            return
        start = 0
        for job in jobs:
            part = frame.iloc[start:start + len(job.texts)].reset_index(drop=True)
            start += len(job.texts)
            job.notify("done", part)

    def _fail(self, q: _ModelQueue, exc: BaseException) -> None:
        with self._lock:
            jobs: list[Job] = [*q.jobs.values(), *q.classify]
            q.jobs.clear()
            q.classify.clear()
            if q.batch is not None:
                for job in jobs:
                    if isinstance(job, GenerationJob):
                        q.batch.cancel(job.seq)
                q.batch = None
            q.task_id = None
        for job in jobs:
            job.notify("error", exc)
