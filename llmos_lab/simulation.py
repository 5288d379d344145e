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

from . import allocator
from . import scheduler as sched
from .constraints import POSITIVE, Options, check
from .errors import ColumnError, ConfigError, DataError, SimulationError, UnknownNameError
from .units import parse_bytes


@dataclass
class SimulationResult:
    policy: str
    timeline: pd.DataFrame
    metrics: pd.DataFrame
    kind: str = "schedule"  # which registry the policy came from: "schedule" or "allocate"

    def shares(self, until: float | None = None) -> pd.DataFrame:
        """Measured vs entitled shares while every task competes (until the first finishes);
        under an allocation policy, busy time is compute granted x seconds."""
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
    compute: float = 1.0
    steps: int = 0
    busy: float = 0.0
    pass_: float = 0.0
    ema: float | None = None
    last_ran: int = 0
    first_run: float | None = None
    finished: float | None = None


KINDS = ("schedule", "allocate")


def simulate(trace: pd.DataFrame, policy: str = "stride", *, memory: int | str | None = None,
             compute: float = 1.0, quantum: int | None = None,
             kind: str | None = None) -> SimulationResult:
    """Run ``trace`` under a policy with an optional memory capacity; return its timeline
    and per-task metrics.

    ``kind="schedule"``: a *scheduling* policy (fifo, rr, priority, stride) time-slices one
    processor, step by step. ``kind="allocate"``: an *allocation* policy (proportional,
    max-min, drf, priority) shares the machine at once: at every arrival or completion the
    policy re-divides ``compute`` among the admitted tasks by their ``memory`` and ``compute``
    demands, and each runs at ``grant / demand`` of its full speed (processor sharing).
    ``kind=None`` looks the name up among scheduling policies first, so "priority" alone
    means the scheduler's preemptive policy; ``result.kind`` says which ran.
    """
    kind = policy_kind(policy, kind)
    sched.check_quantum(quantum)
    compute = check("compute", compute, (POSITIVE,))
    tasks = _read_trace(trace)
    capacity = None if memory is None else parse_bytes(memory, "memory")
    if capacity is not None:
        for t in tasks:
            if t.memory > capacity:
                raise DataError(f"trace row {t.id!r}: memory {t.memory} exceeds the capacity "
                                f"{capacity}; it could never run")
    if kind == "allocate":
        return _simulate_sharing(tasks, policy, capacity, compute)
    return _simulate_slicing(tasks, sched.get(policy, quantum), capacity)


def policy_kind(policy: str, kind: str | None = None) -> str:
    """Which registry ``policy`` comes from: "schedule" or "allocate"."""
    check("kind", kind, (None, Options(*KINDS)))
    if not isinstance(policy, str):
        raise ConfigError("policy", policy, "a policy name: " + ", ".join(
            sched.policies() + allocator.policies()))
    if kind == "schedule" or (kind is None and policy in sched.POLICIES):
        sched.POLICIES.get(policy)
        return "schedule"
    if kind == "allocate" or policy in allocator.POLICIES:
        allocator.POLICIES.get(policy)
        return "allocate"
    raise UnknownNameError("policy", policy, sched.policies() + allocator.policies())


def _simulate_slicing(tasks: list[_Sim], pol: sched.Policy, capacity: int | None
                      ) -> SimulationResult:
    """Time slices on one processor, from turn to turn: arrivals join the ready heap (ordered
    by the policy's key), the smallest key runs for its turn, and the policy is charged."""
    order = sorted(tasks, key=lambda t: (t.submitted, t.seq))
    ready: list[tuple[Any, int, _Sim]] = []
    now, nxt, tick = 0.0, 0, 0
    slices: list[tuple[str, int, int, float, float]] = []

    def push(t: _Sim) -> None:
        heapq.heappush(ready, (pol.key(t), t.seq, t))

    admission = _Admission(capacity, tasks)
    remaining = len(order)
    budget = _Budget(sum(t.total for t in tasks) + 2 * len(tasks) + 10, pol.name)
    while remaining:
        budget.spend()
        while nxt < len(order) and order[nxt].submitted <= now:
            admission.arrive(order[nxt])
            nxt += 1
        for t in admission.admit():
            push(t)
        if not ready:
            now = order[nxt].submitted  # idle until the next arrival
            continue
        t = heapq.heappop(ready)[2]
        n = _turn(pol, t, order[nxt].submitted - now if nxt < len(order) else None)
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
            admission.release(t)
            remaining -= 1
        else:
            push(t)
    timeline = pd.DataFrame(slices, columns=["task", "step", "steps", "start", "end"])
    timeline["seconds"] = timeline["end"] - timeline["start"]
    entitled = sched.entitled_shares(pol.name, [(t.id, t.weight, t.steps > 0) for t in tasks])
    return SimulationResult(pol.name, timeline, _metrics(tasks, entitled), "schedule")


def _turn(pol: sched.Policy, t: _Sim, until_arrival: float | None) -> int:
    """Steps ``t`` runs now: its quantum, the rest (no quantum), or, under a preemptive
    policy, until the next arrival (the only thing that can preempt it)."""
    left = t.total - t.steps
    if pol.quantum is None or (pol.preemptive and until_arrival is None):
        return left
    if pol.preemptive:
        return max(1, min(left, math.ceil(until_arrival / t.step_seconds)))
    return min(left, pol.quantum)


class _Budget:
    """A bound on event-loop turns: every turn runs a step or reaches an event, so a loop
    past the bound is a bug, reported instead of running (and growing) forever."""

    def __init__(self, turns: int, policy: str):
        self.left, self.policy = turns, policy

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise SimulationError(f"simulation under policy {self.policy!r} made no progress "
                                  f"within its bound of event-loop turns; this is a bug")


class _Admission:
    """The queue of arrived tasks waiting for memory; first fit in priority-then-arrival
    order, as the allocator admits."""

    def __init__(self, capacity: int | None, tasks: list[_Sim]):
        self.capacity, self.used = capacity, 0
        self.smallest = min((t.memory for t in tasks), default=0)
        self.waiting: list[tuple[int, int, _Sim]] = []

    def arrive(self, t: _Sim) -> None:
        bisect.insort(self.waiting, (-t.priority, t.seq, t), key=lambda w: w[:2])

    def release(self, t: _Sim) -> None:
        self.used -= t.memory

    def admit(self) -> list[_Sim]:
        waiting = self.waiting
        out, i = [], 0
        while i < len(waiting):
            if self.capacity is not None and self.capacity - self.used < self.smallest:
                break
            t = waiting[i][2]
            if self.capacity is None or self.used + t.memory <= self.capacity:
                del waiting[i]
                self.used += t.memory
                out.append(t)
            else:
                i += 1
        return out


def _metrics(tasks: list[_Sim], entitled: dict[str, float]) -> pd.DataFrame:
    span = (max((t.finished for t in tasks), default=0.0)
            - min((t.submitted for t in tasks), default=0.0))
    return sched.task_metrics([{
        "task": t.id, "priority": t.priority, "weight": t.weight, "memory": t.memory,
        "steps": t.steps, "busy_seconds": t.busy, "allocated_share": entitled[t.id],
        "submitted": t.submitted, "first_run": t.first_run, "finished": t.finished,
    } for t in tasks], span)


def _simulate_sharing(tasks: list[_Sim], policy: str, capacity: int | None,
                      compute: float) -> SimulationResult:
    """Processor sharing under an allocation policy, from event to event."""
    fn = allocator.get(policy)
    order = sorted(tasks, key=lambda t: (t.submitted, t.seq))
    admission = _Admission(capacity, tasks)
    active: list[_Sim] = []
    work = {t.id: t.total * t.step_seconds for t in tasks}  # seconds at full speed
    segments: list[tuple[str, float, float, float, float]] = []
    now, nxt = 0.0, 0
    budget = _Budget(4 * len(tasks) + 10, policy)
    while nxt < len(order) or admission.waiting or active:
        budget.spend()
        while nxt < len(order) and order[nxt].submitted <= now:
            t = order[nxt]
            admission.arrive(t)
            nxt += 1
        for t in admission.admit():
            t.first_run = now
            active.append(t)
        if not active:
            now = order[nxt].submitted
            continue
        grant, rate = _rates(fn, active, capacity, compute)
        left = np.array([work[t.id] for t in active])
        with np.errstate(divide="ignore"):
            finish = np.where(rate > 0, left / rate, np.inf)
        dt = min(float(finish.min()), (order[nxt].submitted - now) if nxt < len(order)
                 else np.inf)
        if not np.isfinite(dt):
            raise DataError(f"policy {policy!r} gives the admitted tasks no compute "
                            f"(capacity compute={compute}); nothing can finish")
        still = []
        for t, r, g, f in zip(active, rate, grant, finish, strict=True):
            done = f <= dt * (1 + 1e-12)
            ran = f if done else dt
            work[t.id] -= r * ran
            t.busy += g * ran
            t.steps = t.total if done else int((t.total * t.step_seconds - work[t.id])
                                               / t.step_seconds)
            segments.append((t.id, now, now + ran, float(g), float(r)))
            if done:
                t.finished = now + ran
                admission.release(t)
            else:
                still.append(t)
        active = still
        now += dt
    timeline = pd.DataFrame(segments, columns=["task", "start", "end", "compute", "rate"])
    timeline["seconds"] = timeline["end"] - timeline["start"]
    total = sum(t.busy for t in tasks) or 1.0
    entitled = {t.id: t.busy / total for t in tasks}  # what the policy granted, over the run
    return SimulationResult(policy, timeline, _metrics(tasks, entitled), "allocate")


def _rates(fn: Any, active: list[_Sim], capacity: int | None, compute: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """Each active task's compute grant under the policy ``fn``, and the speed that gives
    it (grant / its compute demand; a task demanding no compute runs at full speed)."""
    want = np.array([[t.memory, t.compute, 0.0] for t in active])
    cap = np.array([float(capacity if capacity is not None else want[:, 0].sum()),
                    compute, 0.0])
    grant = fn(cap, want, np.array([t.weight for t in active]),
               np.array([t.priority for t in active]))[:, 1]
    rate = np.where(want[:, 1] > 0, grant / np.where(want[:, 1] > 0, want[:, 1], 1), 1.0)
    return grant, rate


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
    n = len(trace)
    arrival = _numbers(trace, "arrival")
    steps = _numbers(trace, "steps", positive=True, integer=True) if "steps" in trace else None
    duration = _numbers(trace, "duration", positive=True) if "duration" in trace else None
    per = _numbers(trace, "step_seconds", positive=True) if "step_seconds" in trace else None
    if steps is None:
        steps = np.maximum(1, np.round(duration / (per if per is not None else np.ones(n))))
    step_seconds = duration / steps if duration is not None else (
        per if per is not None else np.ones(n))
    weight = _numbers(trace, "weight", positive=True) if "weight" in trace else np.ones(n)
    compute = _numbers(trace, "compute") if "compute" in trace else np.ones(n)
    prio = _numbers(trace, "priority", integer=True, signed=True) if "priority" in trace \
        else np.ones(n)
    mem = [parse_bytes(m, f"trace {_row(trace, i)}, column 'memory'")
           for i, m in enumerate(trace["memory"])] if "memory" in trace else [0] * n
    return [_Sim(ids[i], i, int(prio[i]), float(weight[i]), float(arrival[i]), int(steps[i]),
                 float(step_seconds[i]), mem[i], float(compute[i])) for i in range(n)]


def _row(trace: pd.DataFrame, i: int) -> str:
    """'row 1' (its position), with the task id when the trace has one."""
    return f"row {i} (id {trace['id'].iloc[i]!r})" if "id" in trace else f"row {i}"


def _numbers(trace: pd.DataFrame, column: str, positive: bool = False, integer: bool = False,
             signed: bool = False) -> np.ndarray:
    raw = trace[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | np.array([isinstance(v, bool) for v in raw])
    if not signed:
        bad |= values <= 0 if positive else values < 0
    if integer:
        bad |= np.isfinite(values) & (values != np.round(values))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = raw.iloc[i].item() if hasattr(raw.iloc[i], "item") else raw.iloc[i]
        kind = "an integer" if integer else "a finite number"
        bound = "" if signed else " > 0" if positive else " >= 0"
        raise DataError(f"trace {_row(trace, i)}, column {column!r}: {value!r} is not "
                        f"{kind}{bound}")
    return values
