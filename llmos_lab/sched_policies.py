"""Scheduling policies: a key (smallest runs next), a quantum, a charge after running.

One small registry (``register``, ``get``, ``policies``); the live scheduler and the
simulation both take their policies from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .constraints import COUNT, check
from .registry import Registry

TaskState = Any  # a scheduler.TaskState, or simulation._Sim: what the keys read


@dataclass(frozen=True)
class Policy:
    """How the next task is chosen: smallest ``key`` among ready tasks runs for ``quantum``
    steps (None: to completion); ``preemptive`` re-decides after every step."""

    name: str
    key: Callable[[TaskState], Any]
    quantum: int | None = 1
    preemptive: bool = False
    charge: Callable[[TaskState, float], None] = field(default=lambda s, seconds: None)


def _stride_charge(s: TaskState, seconds: float) -> None:
    s.pass_ += seconds / max(s.weight, 1e-12)
    s.ema = seconds if s.ema is None else 0.8 * s.ema + 0.2 * seconds


def _stride_key(s: TaskState) -> tuple[float, int]:
    """Virtual *finish* time: the pass after the expected next step. Ordering by finish
    rather than start time halves how far a task with long steps can run ahead."""
    return s.pass_ + (s.ema or 0.0) / max(s.weight, 1e-12), s.seq


# factories: ``factory(quantum=...) -> Policy``. A separate registry from the allocation
# policies: "priority" here orders who runs next, there it splits capacity.
POLICIES: Registry[Callable[..., Policy]] = Registry("scheduling policy")
POLICIES.register("fifo", lambda quantum=None: Policy("fifo", lambda s: s.seq, None))
POLICIES.register("rr", lambda quantum=1: Policy("rr", lambda s: (s.last_ran, s.seq), quantum))
POLICIES.register("priority",
                  lambda quantum=1: Policy("priority", lambda s: (-s.priority, s.seq), 1, True))
POLICIES.register("stride", lambda quantum=1: Policy("stride", _stride_key, quantum, False,
                                                     _stride_charge))


def register(name: str, factory: Callable[..., Policy] | None = None):
    """Add a scheduling policy: ``factory(quantum=...) -> Policy``; usable as a decorator."""
    return POLICIES.register(name, factory)


def get(name: str, quantum: int | None = None) -> Policy:
    """The policy ``name`` with ``quantum`` steps per turn (None: the policy's default)."""
    check_quantum(quantum)
    factory = POLICIES.get(name)
    return factory() if quantum is None else factory(quantum=quantum)


def check_quantum(quantum: Any) -> int | None:
    """None (the policy's default) or steps per turn."""
    return check("quantum", quantum, (None, COUNT))


def policies() -> list[str]:
    return POLICIES.names()
