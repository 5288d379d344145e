"""What-if scheduling over traces: the live scheduler's policies on simulated time.

A trace is a DataFrame with one row per task: ``arrival`` (seconds), ``steps`` and/or
``duration`` (seconds), and optionally ``step_seconds``, ``memory`` (bytes or "2GiB"),
``priority``, ``weight``, ``tenant`` and ``id``. Time jumps from event to event and every
policy decision is a heap operation, so a 10,000-task trace simulates in about a second.
Memory admission matches the allocator's: a task waits until its memory fits, highest
priority first, then arrival order.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import scheduler as sched
from .errors import ColumnError, DataError
from .units import parse_bytes


@dataclass
class SimulationResult:
    policy: str
    timeline: pd.DataFrame
    metrics: pd.DataFrame

    def shares(self, until: float | None = None) -> pd.DataFrame:
        """Measured vs entitled shares while every task competes (until the first finishes)."""
        entitled = dict(zip(self.metrics["task"], self.metrics["allocated_share"], strict=True))
        return sched.window_shares(self.timeline, entitled, until)

    def summary(self) -> dict[str, float]:
        m = self.metrics
        return {"policy": self.policy, "tasks": len(m),
                "makespan": float(m["finished"].max() - m["submitted"].min()) if len(m) else 0.0,
                "mean_turnaround": float(m["turnaround"].mean()) if len(m) else 0.0,
                "mean_waiting": float(m["waiting"].mean()) if len(m) else 0.0,
                "utilisation": m.attrs.get("utilisation", 0.0),
                "jain": m.attrs.get("jain", 1.0)}


@dataclass(eq=False)
class _Sim:
    """The attributes policy keys read (see scheduler.TaskState), for simulated tasks."""

    id: str
    seq: int
    priority: int
    weight: float
    submitted: float
    total: int
    step_seconds: float
    memory: int
    steps: int = 0
    busy: float = 0.0
    pass_: float = 0.0
    last_ran: int = 0
    first_run: float | None = None
    finished: float | None = None


def simulate(trace: pd.DataFrame, policy: str = "stride", *, memory: int | str | None = None,
             quantum: int | None = None) -> SimulationResult:
    """Run ``trace`` under a scheduling ``policy`` (fifo, rr, priority, stride) with an
    optional memory capacity, and return its timeline and per-task metrics."""
    pol = sched.get(policy, quantum)
    tasks = _read_trace(trace)
    capacity = None if memory is None else parse_bytes(memory, "memory")
    if capacity is not None:
        for t in tasks:
            if t.memory > capacity:
                raise DataError(f"trace row {t.id!r}: memory {t.memory} exceeds the capacity "
                                f"{capacity}; it could never run")
    order = sorted(tasks, key=lambda t: (t.submitted, t.seq))
    ready: list[tuple[Any, int, _Sim]] = []
    waiting: list[tuple[int, int, _Sim]] = []
    used, now, nxt, tick = 0, 0.0, 0, 0
    slices: list[tuple[str, int, int, float, float]] = []

    def push(t: _Sim) -> None:
        heapq.heappush(ready, (pol.key(t), t.seq, t))

    smallest = min((t.memory for t in tasks), default=0)

    def admit() -> None:
        """First fit in priority-then-arrival order, as the allocator admits."""
        nonlocal used
        i = 0
        while i < len(waiting):
            if capacity is not None and capacity - used < smallest:
                return
            t = waiting[i][2]
            if capacity is None or used + t.memory <= capacity:
                del waiting[i]
                used += t.memory
                push(t)
            else:
                i += 1

    remaining = len(order)
    while remaining:
        while nxt < len(order) and order[nxt].submitted <= now:
            t = order[nxt]
            bisect.insort(waiting, (-t.priority, t.seq, t), key=lambda w: w[:2])
            nxt += 1
        admit()
        if not ready:
            now = order[nxt].submitted  # idle until the next arrival
            continue
        t = heapq.heappop(ready)[2]
        left = t.total - t.steps
        if pol.quantum is None:
            n = left
        elif pol.preemptive and nxt < len(order):  # only an arrival can preempt
            n = max(1, min(left, math.ceil((order[nxt].submitted - now) / t.step_seconds)))
        elif pol.preemptive:
            n = left
        else:
            n = min(left, pol.quantum)
        seconds = n * t.step_seconds
        if t.first_run is None:
            t.first_run = now
        slices.append((t.id, t.steps + n, n, now, now + seconds))
        now += seconds
        tick += 1
        t.steps += n
        t.busy += seconds
        t.last_ran = tick
        pol.charge(t, seconds)
        if t.steps >= t.total:
            t.finished = now
            used -= t.memory
            remaining -= 1
        else:
            push(t)
    timeline = pd.DataFrame(slices, columns=["task", "step", "steps", "start", "end"])
    timeline["seconds"] = timeline["end"] - timeline["start"]
    entitled = sched.entitled_shares(pol.name, [(t.id, t.weight, t.steps > 0) for t in tasks])
    span = (max((t.finished for t in tasks), default=0.0)
            - min((t.submitted for t in tasks), default=0.0))
    metrics = sched.task_metrics([{
        "task": t.id, "priority": t.priority, "weight": t.weight, "memory": t.memory,
        "steps": t.steps, "busy_seconds": t.busy, "allocated_share": entitled[t.id],
        "submitted": t.submitted, "first_run": t.first_run, "finished": t.finished,
    } for t in tasks], span)
    return SimulationResult(policy, timeline, metrics)


def compare(trace: pd.DataFrame, policies: list[str] | None = None, **kw: Any) -> pd.DataFrame:
    """One summary row per policy, for what-if comparisons."""
    return pd.DataFrame([simulate(trace, p, **kw).summary()
                         for p in policies or sched.policies()]).set_index("policy")


def _read_trace(trace: pd.DataFrame) -> list[_Sim]:
    if not isinstance(trace, pd.DataFrame):
        raise DataError(f"a trace is a DataFrame, got {type(trace).__name__}")
    if "arrival" not in trace:
        raise ColumnError("arrival", "arrival time", trace.columns)
    if "steps" not in trace and "duration" not in trace:
        raise ColumnError("steps", "steps or duration", trace.columns)
    ids = trace["id"].astype(str).tolist() if "id" in trace else [str(i) for i in trace.index]
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise DataError(f"trace task ids must be unique; {dup!r} appears twice")
    arrival = _numbers(trace, "arrival")
    steps = _numbers(trace, "steps", positive=True) if "steps" in trace else None
    duration = _numbers(trace, "duration", positive=True) if "duration" in trace else None
    if steps is None:
        steps_per = _numbers(trace, "step_seconds", positive=True) if "step_seconds" in trace \
            else np.ones(len(trace))
        steps = np.maximum(1, np.round(duration / steps_per))
    step_seconds = duration / steps if duration is not None else (
        _numbers(trace, "step_seconds", positive=True) if "step_seconds" in trace
        else np.ones(len(trace)))
    prio = trace["priority"].tolist() if "priority" in trace else [1] * len(trace)
    weight = _numbers(trace, "weight", positive=True) if "weight" in trace \
        else np.ones(len(trace))
    mem = [parse_bytes(m, f"trace row {ids[i]!r} memory") for i, m in
           enumerate(trace["memory"])] if "memory" in trace else [0] * len(trace)
    out = []
    for i in range(len(trace)):
        p = prio[i]
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)):
            raise DataError(f"trace row {ids[i]!r}, column 'priority': {p!r} is not an integer")
        out.append(_Sim(ids[i], i, int(p), float(weight[i]), float(arrival[i]), int(steps[i]),
                        float(step_seconds[i]), mem[i]))
    return out


def _numbers(trace: pd.DataFrame, column: str, positive: bool = False) -> np.ndarray:
    values = pd.to_numeric(trace[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values <= 0 if positive else values < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"trace row {trace.index[row]!r}, column {column!r}: "
                        f"{trace[column].iloc[row]!r} is not a finite number "
                        f"{'> 0' if positive else '>= 0'}")
    return values
