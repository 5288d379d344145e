"""Who gets how much: memory and compute shares under a policy, with admission and quotas.

``allocate(policy, capacity, demands)`` is a pure function; :class:`Allocator` keeps demands
between calls and publishes each new allocation. Policies work on arrays (one row per demand,
one column per resource) so 10,000 demands allocate in milliseconds:

- ``proportional``: share proportional to priority x demand, capped at the demand, the rest
  redistributed (the seed formula made consistent: it is water-filling with those weights);
- ``max-min``: weighted water-filling per resource;
- ``drf``: Dominant Resource Fairness (weighted progressive filling of dominant shares);
- ``priority``: strict classes, higher first; within a class max-min.

Admission reserves each demand's minimum first (highest priority, then arrival order); a demand
whose minimum does not fit waits. Tenants with quotas are allocated as one demand each, capped
at the quota, then split among their tasks by the same policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from . import events
from .alloc_policies import (
    POLICIES,
    Policy,
    _shares,
    drf,
    get,
    max_min,
    policies,
    proportional,
    register,
    strict_priority,
    water_fill,
)
from .constraints import POSITIVE, PRIORITY, Interval, Real, check
from .errors import ConfigError, UnknownNameError, check_keywords, did_you_mean
from .units import format_bytes, parse_bytes

# the policies live in alloc_policies.py; their names stay importable from here
__all__ = [
    "POLICIES",
    "RESOURCES",
    "Allocation",
    "Allocator",
    "Demand",
    "Policy",
    "Resources",
    "allocate",
    "demand_list",
    "drf",
    "get",
    "max_min",
    "policies",
    "proportional",
    "register",
    "strict_priority",
    "water_fill",
]

RESOURCES = ("memory", "compute", "gpus")


@dataclass(frozen=True)
class Resources:
    """Memory in bytes ("8GiB" accepted), a compute share (1.0 = the whole machine), GPUs
    (fractions allowed, as in Ray)."""

    memory: int | str = 0
    compute: float = 0.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory", parse_bytes(self.memory, "memory"))
        for name in ("compute", "gpus"):
            value = check(name, getattr(self, name), (Interval(Real, 0, None),))
            object.__setattr__(self, name, float(value))

    @classmethod
    def of(cls, value: Resources | dict[str, Any] | None) -> Resources:
        if value is None:
            return cls()
        if isinstance(value, Resources):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(RESOURCES), key=str)
            if unknown:
                raise ConfigError(str(unknown[0]), value, f"keys among {RESOURCES}"
                                  f"{did_you_mean(unknown[0], RESOURCES)}")
            return cls(**value)
        raise ConfigError("resources", value, "Resources, a dict or None")

    @classmethod
    def from_array(cls, row: Iterable[float]) -> Resources:
        """From numbers already checked (our own arithmetic): skips parsing, clamps at 0."""
        memory, compute, gpus = row
        new = object.__new__(cls)
        object.__setattr__(new, "memory", max(0, round(memory)))
        object.__setattr__(new, "compute", max(0.0, float(compute)))
        object.__setattr__(new, "gpus", max(0.0, float(gpus)))
        return new

    def to_array(self) -> np.ndarray:
        return np.array([self.memory, self.compute, self.gpus], dtype=float)

    def __add__(self, other: Resources) -> Resources:
        return Resources.from_array(self.to_array() + other.to_array())

    def __sub__(self, other: Resources) -> Resources:
        return Resources.from_array(self.to_array() - other.to_array())

    def __mul__(self, k: float) -> Resources:
        return Resources.from_array(self.to_array() * k)

    __rmul__ = __mul__

    def fits(self, capacity: Resources) -> bool:
        return bool(np.all(self.to_array() <= capacity.to_array() + _EPS))

    def dominant_share(self, capacity: Resources) -> float:
        return float(_shares(self.to_array()[None, :], capacity.to_array()).max(initial=0.0))

    def __str__(self) -> str:
        gpus = f", {self.gpus:g} GPU" if self.gpus else ""
        return f"{format_bytes(self.memory)}, {self.compute:.3g} compute{gpus}"


_EPS = 1e-9


@dataclass
class Demand:
    """What one task asks for: at most ``want``, at least ``minimum`` to run at all."""

    id: str
    want: Resources | dict = field(default_factory=Resources)
    minimum: Resources | dict | None = None
    priority: int = 1
    weight: float = 1.0
    tenant: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError("id", self.id, "a non-empty string")
        self.want = Resources.of(self.want)
        self.minimum = Resources.of(self.minimum)
        if not self.minimum.fits(self.want):
            raise ConfigError(f"{self.id}.minimum", str(self.minimum),
                              f"at most the demand ({self.want})")
        self.priority = check(f"{self.id}.priority", self.priority, (PRIORITY,))
        self.weight = check(f"{self.id}.weight", self.weight, (POSITIVE,))


    @classmethod
    def of(cls, value: Any, task_id: str | None = None) -> Demand:
        """A Demand from a Demand, a dict of Demand fields, or (with ``task_id``, as a value
        of a mapping of task id to demand) Resources or a dict of resources."""
        if isinstance(value, Demand):
            return value
        if isinstance(value, Resources) and task_id is not None:
            return cls(task_id, value)
        if isinstance(value, dict):
            keys = list(value)
            if task_id is not None and keys and set(keys) <= set(RESOURCES):
                return cls(task_id, Resources(**value))
            fields = [f for f in _DEMAND_FIELDS if task_id is None or f != "id"]
            for key in keys:
                if key not in fields:
                    hint = did_you_mean(key, [*fields, *RESOURCES])
                    raise ConfigError(str(key), value[key], f"a Demand field{hint} (one of "
                                      f"{fields}; or resources {RESOURCES})")
            if task_id is None and "id" not in value:
                raise ConfigError("id", None, f"an 'id' key in every demand dict (got keys "
                                  f"{keys}); or pass a mapping of task id to demand")
            return cls(**value) if task_id is None else cls(task_id, **value)
        if isinstance(value, Resources):
            raise ConfigError("demands", value, "Demand(id, Resources(...)), a dict with an "
                              "'id', or a mapping {task id: Resources(...)} (Resources alone "
                              "has no task id)")
        raise ConfigError("demand", value, "a Demand, a dict of Demand fields, or Resources in "
                          "a mapping of task id to demand")


_DEMAND_FIELDS = ("id", "want", "minimum", "priority", "weight", "tenant")


def demand_list(demands: Any) -> list[Demand]:
    """Demands from a list of Demand / dict, or a mapping of task id to demand."""
    if isinstance(demands, Mapping):
        return [Demand.of(v, str(k)) for k, v in demands.items()]
    if demands is None or isinstance(demands, (str, bytes, Resources, Demand)) or \
            not isinstance(demands, Iterable):
        raise ConfigError("demands", demands, "a list of Demand (or dicts with 'id'), or a "
                          "mapping of task id to Resources")
    return [Demand.of(d) for d in demands]


@dataclass
class Allocation:
    """Grants per demand id, the demands that wait for admission, and the capacity used."""

    policy: str
    capacity: Resources
    grants: Mapping[str, Resources]  # a Grants: read like a dict
    waiting: list[str]
    demands: dict[str, Demand] = field(repr=False)

    def table(self) -> pd.DataFrame:
        rows = []
        for d in self.demands.values():
            g = self.grants.get(d.id, Resources())
            rows.append({
                "task": d.id, "tenant": d.tenant, "priority": d.priority, "weight": d.weight,
                "want_memory": d.want.memory, "want_compute": d.want.compute,
                "memory": g.memory, "compute": g.compute, "gpus": g.gpus,
                "memory_share": g.memory / self.capacity.memory if self.capacity.memory else 0.0,
                "compute_share": g.compute / self.capacity.compute
                if self.capacity.compute else 0.0,
                "dominant_share": g.dominant_share(self.capacity),
                "waiting": d.id in self.waiting,
            })
        return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- policies

def allocate(policy: str, capacity: Resources | dict, demands: Iterable[Demand | dict],
             quotas: dict[str, Resources | dict] | None = None) -> Allocation:
    """Grant each demand a share of ``capacity`` under ``policy``; a pure function.

    Minimums are reserved first in priority then arrival order (admission); what is left is
    shared by the policy over each admitted demand's ``want - minimum``. With ``quotas``, each
    tenant is first allocated as one demand capped at its quota, then split among its tasks.
    """
    fn = get(policy)
    capacity = Resources.of(capacity)
    if capacity.memory <= 0 and capacity.compute <= 0 and capacity.gpus <= 0:
        raise ConfigError("capacity", str(capacity), "some memory, compute or GPUs (> 0)")
    demands = demand_list(demands)
    by_id: dict[str, Demand] = {}
    for d in demands:
        if d.id in by_id:
            raise ConfigError("id", d.id, "unique task ids (this one appears twice)")
        by_id[d.id] = d
    quotas = {t: Resources.of(q) for t, q in (quotas or {}).items()}
    if quotas:
        grants, waiting = _allocate_tenants(fn, capacity, demands, quotas)
    else:
        grants, waiting = _allocate_flat(fn, capacity.to_array(), demands)
    return Allocation(policy, capacity, grants, waiting, by_id)


def _allocate_flat(fn: Policy, cap: np.ndarray, demands: list[Demand]
                   ) -> tuple[Grants, list[str]]:
    if not demands:
        return Grants([], np.zeros((0, 3))), []
    table = _pack(demands)  # one pass over the objects; the rest is arrays
    minimum, want_all = table[:, 3:6], table[:, 0:3]
    limit = cap + _EPS
    if np.all(minimum.sum(axis=0) <= limit):  # the common case: everyone is admitted
        admitted = np.ones(len(demands), dtype=bool)
        reserved = minimum.sum(axis=0)
    else:
        admitted = np.zeros(len(demands), dtype=bool)
        reserved = np.zeros(len(cap))
        for i in sorted(range(len(demands)), key=lambda i: -demands[i].priority):
            if np.all(reserved + minimum[i] <= limit):
                reserved += minimum[i]
                admitted[i] = True
    rows = np.flatnonzero(admitted)
    want = want_all[rows] - minimum[rows]
    extra = fn(np.maximum(cap - reserved, 0.0), np.maximum(want, 0.0), table[rows, 6],
               table[rows, 7].astype(int)) if len(rows) else np.zeros((0, len(cap)))
    grant = minimum[rows] + np.minimum(np.maximum(extra, 0.0), want)
    grant[:, 0] = _whole_bytes(grant[:, 0])
    waiting = [demands[i].id for i in np.flatnonzero(~admitted)]
    return Grants([demands[i].id for i in rows], grant), waiting


def _pack(demands: list[Demand]) -> np.ndarray:
    """want (3), minimum (3), weight, priority per demand: one row each."""
    return np.array([(d.want.memory, d.want.compute, d.want.gpus, d.minimum.memory,
                      d.minimum.compute, d.minimum.gpus, d.weight, d.priority)
                     for d in demands], dtype=float)


class Grants(Mapping):
    """Task id -> Resources, kept as one array: a Resources is built when a grant is read,
    so allocating for 10,000 tasks does not make 10,000 objects nobody may look at."""

    def __init__(self, ids: list[str], rows: np.ndarray):
        self._index = {task: i for i, task in enumerate(ids)}
        self._rows = rows

    def __getitem__(self, task_id: str) -> Resources:
        return Resources.from_array(self._rows[self._index[task_id]].tolist())

    def __iter__(self):
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return repr(dict(self.items()))

    def array(self) -> np.ndarray:
        """(tasks, 3): memory, compute, gpus, in iteration order."""
        return self._rows


def _whole_bytes(memory: np.ndarray) -> np.ndarray:
    """Round grants to whole bytes without exceeding their total: floor each, then give the
    bytes left over to the largest remainders (so the capacity stays fully used)."""
    base = np.floor(memory + 1e-6)
    spare = round(float(memory.sum() - base.sum()))
    if spare > 0:
        base[np.argsort(base - memory, kind="stable")[:spare]] += 1
    return base


def _allocate_tenants(fn: Policy, capacity: Resources, demands: list[Demand],
                      quotas: dict[str, Resources]):
    tenants: dict[str | None, list[Demand]] = {}
    for d in demands:
        tenants.setdefault(d.tenant, []).append(d)
    unlimited = Resources(capacity.memory, capacity.compute, capacity.gpus)
    level = []
    for tenant, members in tenants.items():
        quota = quotas.get(tenant, unlimited)
        want = np.minimum(sum((m.want.to_array() for m in members), np.zeros(3)),
                          quota.to_array())
        minimum = np.minimum(sum((m.minimum.to_array() for m in members), np.zeros(3)), want)
        level.append(Demand(f"tenant:{tenant}", Resources.from_array(want),
                            Resources.from_array(minimum),
                            max(m.priority for m in members),
                            float(sum(m.weight for m in members))))
    outer, _ = _allocate_flat(fn, capacity.to_array(), level)
    ids: list[str] = []
    rows: list[np.ndarray] = []
    waiting: list[str] = []
    for members, top in zip(tenants.values(), level, strict=True):
        share = outer.get(top.id)
        if share is None:
            waiting.extend(m.id for m in members)
            continue
        inner, wait = _allocate_flat(fn, share.to_array(), members)
        ids.extend(inner)
        rows.append(inner.array())
        waiting.extend(wait)
    order = {d.id: i for i, d in enumerate(demands)}
    grants = Grants(ids, np.concatenate(rows) if rows else np.zeros((0, 3)))
    return grants, sorted(waiting, key=order.get)


class Allocator:
    """Keeps the demands of running tasks and re-allocates when they change.

    Every change publishes ``alloc.update`` with the new :class:`Allocation`, which the
    allocation widget draws.
    """

    def __init__(self, capacity: Resources | dict, policy: str = "drf",
                 quotas: dict[str, Resources | dict] | None = None):
        get(policy)
        self.capacity = Resources.of(capacity)
        self.policy = policy
        self.quotas = dict(quotas or {})
        self._demands: dict[str, Demand] = {}
        self.allocation_: Allocation | None = None

    def add(self, demand: Demand | dict) -> Allocation:
        demand = Demand.of(demand)
        if demand.id in self._demands:
            raise ConfigError("id", demand.id, "an id not already in the allocator")
        self._demands[demand.id] = demand
        return self.update()

    def remove(self, task_id: str) -> Allocation:
        self._get(task_id)
        del self._demands[task_id]
        return self.update()

    def set(self, task_id: str, **changes: Any) -> Allocation:
        """Change a demand's priority, weight, want or minimum, and re-allocate."""
        check_keywords("Allocator.set", changes, _DEMAND_FIELDS[1:])
        old = self._get(task_id)
        self._demands[task_id] = replace(old, **changes)
        return self.update()

    def set_policy(self, policy: str) -> Allocation:
        get(policy)
        self.policy = policy
        return self.update()

    def update(self) -> Allocation:
        self.allocation_ = allocate(self.policy, self.capacity, self._demands.values(),
                                    self.quotas)
        events.publish("alloc.update", allocator=self, allocation=self.allocation_)
        return self.allocation_

    def grant(self, task_id: str) -> Resources:
        self._get(task_id)
        allocation = self.allocation_ or self.update()
        return allocation.grants.get(task_id, Resources())

    @property
    def demands(self) -> dict[str, Demand]:
        return dict(self._demands)

    def _get(self, task_id: str) -> Demand:
        try:
            return self._demands[task_id]
        except KeyError:
            raise UnknownNameError("task", task_id, self._demands) from None
