"""Who runs when: tasks advance one step per ``next()``, a policy interleaves their steps.

A :class:`Task` wraps any iterator (``Trainer.steps()``, an inference stream, an evaluation).
The :class:`Scheduler` runs steps in the notebook's process, in the foreground (``run``) or on a
background thread (``start``/``stop``), and preempts only at step boundaries. Every policy is a
*key* (the ready task with the smallest key runs next), a *quantum* (how many steps it keeps
the processor) and a *charge* (how its key moves after running):

- ``fifo``: arrival order, each task to completion;
- ``rr``: least recently run first, ``quantum`` steps (or ``quantum_seconds``) each turn;
- ``priority``: highest priority first, re-decided after every step (preemptive);
- ``stride``: proportional share of busy *time*: a task's pass grows by seconds / weight
  (weights from the allocator's compute grants when there is an allocator).

The same policies drive :func:`llmos_lab.simulation.simulate` over traces.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from . import events
from .allocator import Allocator, Demand, Resources
from .constraints import COUNT, POSITIVE, PRIORITY, Options, check, table
from .errors import ConfigError, UnknownNameError
from .sched_policies import POLICIES, Policy, check_quantum, get, policies, register
from .shares import entitled_shares, task_metrics, window_shares

# what each option accepts: checked by constraints.check, shown by Scheduler.help()
PARAMETERS = {
    "quantum": (None, COUNT),
    "quantum_seconds": (None, POSITIVE),
    "backend": (Options("local", "ray"),),
    "priority": (PRIORITY,),
    "weight": (POSITIVE,),
}

# the policy registry and the share measures live in their own modules; these names stay here
__all__ = ["POLICIES", "Policy", "Scheduler", "Task", "TaskState", "check_quantum",
           "entitled_shares", "get", "policies", "register", "task_metrics", "window_shares"]


@dataclass
class Task:
    """A unit of work that advances one step per ``next()`` on ``steps``.

    ``steps`` is an iterator, or a callable returning one (called when the task first runs,
    with the task's grant when it accepts an argument named ``grant``).
    """

    id: str
    steps: Iterator[Any] | Callable[..., Iterator[Any]]
    kind: str = "task"
    demand: Resources | dict | None = None
    minimum: Resources | dict | None = None
    priority: int = 1
    weight: float = 1.0
    tenant: str | None = None
    total_steps: int | None = None
    output: list[Any] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError("id", self.id, "a non-empty string naming the task")
        if not (callable(self.steps) or isinstance(self.steps, Iterator)):
            raise ConfigError(f"{self.id}.steps", self.steps, "an iterator (e.g. "
                              "trainer.steps(df)) or a callable returning one")
        self.priority = check(f"{self.id}.priority", self.priority, PARAMETERS["priority"])
        self.weight = check(f"{self.id}.weight", self.weight, PARAMETERS["weight"])


@dataclass(eq=False)
class TaskState:
    """What the scheduler knows about a submitted task (the process control block)."""

    task: Task
    seq: int
    priority: int
    weight: float
    submitted: float
    state: str = "ready"  # waiting | ready | done | failed | cancelled
    iterator: Iterator[Any] | None = None
    steps: int = 0
    busy: float = 0.0
    first_run: float | None = None
    finished: float | None = None
    pass_: float = 0.0
    ema: float | None = None  # smoothed step seconds (stride's expected next step)
    last_ran: int = 0
    error: BaseException | None = None
    last: Any = None
    stepping: bool = False  # a next() is running on some thread right now
    cancel_asked: bool = False

    @property
    def id(self) -> str:
        return self.task.id


# ------------------------------------------------------------------------------ scheduler


class Scheduler:
    """Interleave the steps of submitted tasks under a policy.

    With an ``allocator``, each task's ``demand`` is admitted there (a task whose minimum
    does not fit waits until memory frees up) and ``stride`` uses compute grants as weights.
    """

    def __init__(self, policy: str = "stride", allocator: Allocator | None = None, *,
                 quantum: int | None = None,
                 quantum_seconds: float | None = None, backend: str = "local"):
        quantum_seconds = check("quantum_seconds", quantum_seconds,
                                PARAMETERS["quantum_seconds"])
        self.backend = check("backend", backend, PARAMETERS["backend"])
        self.policy = get(policy, check_quantum(quantum))
        self.quantum_seconds = quantum_seconds
        self.allocator = allocator
        self._tasks: dict[str, TaskState] = {}
        self._seq = itertools.count()
        self._tick = itertools.count(1)
        self._slices: list[tuple[str, int, float, float]] = []
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._origin = time.perf_counter()
        self._current: TaskState | None = None
        self._run_left = 0
        self._run_started = 0.0

    # ------------------------------------------------------------------ public API

    @staticmethod
    def help() -> pd.DataFrame:
        """What each option accepts (the declaration the checks use); policies: ``policies()``."""
        return table(PARAMETERS)

    def submit(self, task: Task, priority: int | None = None, weight: float | None = None
               ) -> str:
        if not isinstance(task, Task):
            raise ConfigError("task", task, "a llmos_lab.scheduler.Task")
        priority = task.priority if priority is None else priority
        weight = task.weight if weight is None else weight
        priority = check(f"{task.id}.priority", priority, PARAMETERS["priority"])
        weight = check(f"{task.id}.weight", weight, PARAMETERS["weight"])
        with self._lock:
            if task.id in self._tasks:
                raise ConfigError("task id", task.id, "an id not already submitted")
            if self.allocator is not None:  # first: a refused demand leaves no trace here
                self.allocator.add(Demand(task.id, task.demand or Resources(),
                                          task.minimum, priority, float(weight), task.tenant))
            s = TaskState(task, next(self._seq), priority, float(weight), self._now())
            if self._tasks:  # a newcomer starts at the current minimum pass (no catch-up burst)
                live = [t.pass_ for t in self._tasks.values() if t.state in ("ready", "waiting")]
                s.pass_ = min(live, default=0.0)
            self._tasks[task.id] = s
            if self.allocator is not None:
                self._readmit()
            self._wake.notify_all()
        events.publish("sched.submit", scheduler=self, task=task.id)
        return task.id

    def set_priority(self, task_id: str, priority: int) -> None:
        priority = check(f"{task_id}.priority", priority, PARAMETERS["priority"])
        with self._lock:
            self._get(task_id).priority = priority
            if self.allocator is not None:
                self.allocator.set(task_id, priority=priority)
                self._readmit()
        events.publish("sched.change", scheduler=self, task=task_id, priority=priority)

    def set_weight(self, task_id: str, weight: float) -> None:
        weight = check(f"{task_id}.weight", weight, PARAMETERS["weight"])
        with self._lock:
            self._get(task_id).weight = float(weight)
            if self.allocator is not None:
                self.allocator.set(task_id, weight=float(weight))
                self._readmit()
        events.publish("sched.change", scheduler=self, task=task_id, weight=weight)

    def cancel(self, task_id: str) -> None:
        """Cancel now, or, when one of its steps is running, as soon as that step returns
        (a generator cannot be closed while it executes)."""
        with self._lock:
            s = self._get(task_id)
            if s.state in ("ready", "waiting"):
                if s.stepping:
                    s.cancel_asked = True
                else:
                    self._finish(s, "cancelled")

    def run(self, max_steps: int | None = None, timeout: float | None = None) -> Scheduler:
        """Run in the foreground until every task is done (or a step or time limit)."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        for n in itertools.count():
            if (max_steps is not None and n >= max_steps) or self._stop.is_set() or (
                    deadline is not None and time.perf_counter() >= deadline):
                break
            if not self.step():
                break
        return self

    def start(self) -> Scheduler:
        """Run on a background thread so the notebook stays responsive; new submissions are
        picked up until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                if not self.step():
                    with self._lock:
                        self._wake.wait(timeout=0.1)

        self._thread = threading.Thread(target=loop, name="llmos-lab-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop after the step in progress."""
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
        if wait and self._thread is not None:
            self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every task has finished; True if they did."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while any(s.state in ("ready", "waiting") for s in list(self._tasks.values())):
            if deadline is not None and time.perf_counter() >= deadline:
                return False
            time.sleep(0.01)
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def step(self) -> bool:
        """Run one step of the task the policy picks; False when nothing is ready."""
        with self._lock:
            s = self._pick()
            if s is None:
                return False
            tick = next(self._tick)
            s.stepping = True
        start = time.perf_counter()
        done, failed, value = False, None, None
        try:
            if s.iterator is None:
                s.iterator = self._start(s)
            value = next(s.iterator)
        except StopIteration:
            done = True
        except Exception as exc:  # the task fails; the others go on
            failed = exc
        end = time.perf_counter()
        seconds = end - start
        with self._lock:
            s.stepping = False
            s.first_run = s.first_run if s.first_run is not None else start - self._origin
            s.last_ran = tick
            if failed is not None:
                s.error = failed
                self._finish(s, "failed")
            elif done:
                self._finish(s, "done")
            else:
                s.steps += 1
                s.busy += seconds
                s.last = value
                self.policy.charge(s, seconds)
                self._slices.append((s.id, s.steps, start - self._origin, end - self._origin))
                self._run_left -= 1
                if s.cancel_asked:
                    self._finish(s, "cancelled")
        events.publish("sched.step", scheduler=self, task=s.id, step=s.steps, seconds=seconds,
                       state=s.state, value=value)
        return True

    def shares(self, until: float | None = None) -> pd.DataFrame:
        """Measured vs entitled shares while tasks compete (see :func:`window_shares`)."""
        with self._lock:
            states = list(self._tasks.values())
        return window_shares(self.timeline(), self._allocated_shares(states), until)

    def timeline(self) -> pd.DataFrame:
        """One row per step: task, step, start, end (seconds since the scheduler was made)."""
        with self._lock:
            rows = list(self._slices)
        return pd.DataFrame(rows, columns=["task", "step", "start", "end"]).assign(
            seconds=lambda d: d["end"] - d["start"])

    def metrics(self) -> pd.DataFrame:
        """Per task: steps, busy seconds, measured share of busy time vs allocated share,
        waiting and turnaround; ``attrs`` holds utilisation and Jain's fairness index."""
        with self._lock:
            states = list(self._tasks.values())
            span = (max((e for *_, e in self._slices), default=0.0)
                    - min((b for _, _, b, _ in self._slices), default=0.0))
        allocated = self._allocated_shares(states)
        return task_metrics([{
            "task": s.id, "kind": s.task.kind, "state": s.state, "priority": s.priority,
            "weight": s.weight, "steps": s.steps, "busy_seconds": s.busy,
            "allocated_share": allocated[s.id], "submitted": s.submitted,
            "first_run": s.first_run, "finished": s.finished,
            "error": None if s.error is None else repr(s.error),
        } for s in states], span)

    # ------------------------------------------------------------------ internals

    def _now(self) -> float:
        return time.perf_counter() - self._origin

    def _get(self, task_id: str) -> TaskState:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise UnknownNameError("task", task_id, self._tasks) from None

    def _pick(self) -> TaskState | None:
        cur = self._current
        ready = [s for s in self._tasks.values() if s.state == "ready"]
        if not ready:
            self._current = None
            return None
        keep = cur is not None and cur.state == "ready" and (
            self.policy.quantum is None or self._run_left > 0) and (
            self.quantum_seconds is None
            or time.perf_counter() - self._run_started < self.quantum_seconds)
        if keep and self.policy.preemptive:
            keep = min(ready, key=self.policy.key) is cur
        if keep:
            return cur
        self._current = min(ready, key=self.policy.key)
        self._run_left = self.policy.quantum or 0
        self._run_started = time.perf_counter()
        return self._current

    def _finish(self, s: TaskState, state: str) -> None:
        s.state = state
        s.finished = self._now()
        close = getattr(s.iterator, "close", None)
        if close is not None:  # a generator's finally blocks, a Ray actor's slot
            close()
        s.iterator = None
        if self.allocator is not None and s.id in self.allocator.demands:
            self.allocator.remove(s.id)
            self._readmit()
        events.publish(f"sched.{state}", scheduler=self, task=s.id, error=s.error)

    def _start(self, s: TaskState) -> Iterator[Any]:
        grant = self._grant(s.id)
        if self.backend == "ray":
            from .ray_backend import RemoteSteps

            return RemoteSteps(s.task.steps, grant, s.id)
        return _start(s, grant)

    def _grant(self, task_id: str) -> Resources | None:
        if self.allocator is None:
            return None
        return self.allocator.grant(task_id)

    def _readmit(self) -> None:
        """Tasks the allocator admits become ready; stride weights follow compute grants."""
        allocation = self.allocator.allocation_ or self.allocator.update()
        waiting = set(allocation.waiting)
        for s in self._tasks.values():
            if s.state in ("ready", "waiting"):
                s.state = "waiting" if s.id in waiting else "ready"
                grant = allocation.grants.get(s.id)
                if self.policy.name == "stride" and grant is not None and grant.compute > 0:
                    s.weight = grant.compute

    def _allocated_shares(self, states: list[TaskState]) -> dict[str, float]:
        """The share of busy time each task is entitled to among the tasks that ran: its
        weight's share under stride (weights follow compute grants), an equal share else."""
        return entitled_shares(self.policy.name, [(s.id, s.weight, s.steps > 0)
                                                  for s in states])


def _start(s: TaskState, grant: Resources | None) -> Iterator[Any]:
    steps = s.task.steps
    if callable(steps) and not hasattr(steps, "__next__"):
        import inspect

        params = inspect.signature(steps).parameters
        steps = steps(grant=grant) if "grant" in params else steps()
    return iter(steps)


