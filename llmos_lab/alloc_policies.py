"""Allocation policies: pure functions from (capacity, wants, weights, priorities) to grants.

``fn(capacity[k], want[n, k], weight[n], priority[n]) -> grant[n, k]`` over the resources
(memory, compute, GPUs); one small registry (``register`` as a decorator, ``get``,
``policies``). :func:`llmos_lab.allocator.allocate` adds admission and tenants around them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .registry import Registry

_EPS = 1e-9


Policy = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
POLICIES: Registry[Policy] = Registry("allocation policy")


def register(name: str, policy: Policy | None = None):
    """Add a policy ``f(capacity[R], want[n, R], weight[n], priority[n]) -> grant[n, R]``.
    Usable as a decorator."""
    return POLICIES.register(name, policy)


def get(name: str) -> Policy:
    return POLICIES.get(name)


def policies() -> list[str]:
    return POLICIES.names()


def water_fill(capacity: float, want: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """grant_i = min(want_i, t * weight_i) with t chosen so the grants use the capacity (or
    everyone is satisfied). Sorting by want/weight makes it O(n log n)."""
    want = np.asarray(want, dtype=float)
    if want.sum() <= capacity + _EPS:
        return want.copy()
    weight = np.where(want > 0, np.asarray(weight, dtype=float), 0.0)
    order = np.argsort(np.where(weight > 0, want / np.where(weight > 0, weight, 1), 0))
    w, d = weight[order], want[order]
    level = np.where(w > 0, d / np.where(w > 0, w, 1), 0)  # t at which each is satisfied
    done = np.concatenate([[0.0], np.cumsum(d)[:-1]])  # satisfied before reaching i
    rest = np.cumsum(w[::-1])[::-1]  # weight still growing at level i
    used_at = done + level * rest  # capacity used when t reaches level i
    k = int(np.searchsorted(used_at, capacity, side="right"))
    t = (capacity - done[k]) / rest[k] if k < len(d) and rest[k] > 0 else np.inf
    if k > 0:  # cancellation must not undo the tasks already satisfied below this level
        t = max(t, level[k - 1])
    grant = np.minimum(want, t * weight)
    return grant


@register("max-min")
def max_min(capacity, want, weight, priority):
    return np.column_stack([water_fill(capacity[r], want[:, r], weight)
                            for r in range(want.shape[1])])


@register("proportional")
def proportional(capacity, want, weight, priority):
    prio = np.maximum(priority.astype(float), _EPS)
    return np.column_stack([water_fill(capacity[r], want[:, r], prio * want[:, r])
                            for r in range(want.shape[1])])


@register("drf")
def drf(capacity, want, weight, priority):
    """Weighted progressive filling (Ghodsi et al., 2011): every unfrozen task's dominant
    share / weight rises together; a task freezes when satisfied or when a resource it uses
    runs out. Between events usage is linear in the fill level t, so each phase is one pass of
    cumulative sums over the tasks sorted by the level at which they are satisfied; each phase
    exhausts a resource, so there are at most R + 1 phases."""
    n_res = want.shape[1]
    cap = capacity.astype(float)
    g = _shares(want, cap).max(axis=1)  # dominant share of each full demand
    blocked = ((want > 0) & (cap <= 0)).any(axis=1)  # needs a resource there is none of
    x = np.where((g > 0) | blocked, 0.0, 1.0)  # fraction of its demand each task receives
    active = (g > 0) & ~blocked
    g = np.maximum(g, 1e-300)  # a vanishing want must not overflow weight / g
    fixed = np.zeros(n_res)  # usage of tasks frozen by an exhausted resource
    t_prev = 0.0
    while active.any():
        idx = np.flatnonzero(active)
        rate = weight[idx] / g[idx]  # x_i(t) = rate_i * t while active
        order = np.argsort(1.0 / rate)
        idx, rate = idx[order], rate[order]
        finish = 1.0 / rate
        d = want[idx]
        done = np.vstack([np.zeros(n_res), np.cumsum(d, axis=0)])  # done[k]: first k satisfied
        growing = np.vstack([np.cumsum((rate[:, None] * d)[::-1], axis=0)[::-1],
                             np.zeros(n_res)])  # growing[k]: slope of tasks k..
        at_finish = fixed + done[:-1] + finish[:, None] * growing[:-1]
        over = (at_finish > cap + _EPS * np.maximum(cap, 1)).any(axis=1)
        if not over.any():
            x[idx] = 1.0
            break
        k = int(np.argmax(over))
        with np.errstate(divide="ignore", invalid="ignore"):
            t_r = np.where(growing[k] > 0, (cap - fixed - done[k]) / growing[k], np.inf)
        # a resource found over only at breakpoint k was within tolerance at k - 1: the
        # level cannot fall below where the tasks before k were already satisfied
        t = max(float(t_r.min()), t_prev, float(finish[k - 1]) if k else 0.0)
        x[idx[:k]] = 1.0
        x[idx[k:]] = np.minimum(1.0, t * rate[k:])
        active[idx[:k]] = False
        fixed = fixed + done[k]
        exhausted = t_r <= t * (1 + 1e-9) + _EPS
        stop = idx[k:][(d[k:][:, exhausted] > 0).any(axis=1)]
        active[stop] = False
        fixed = fixed + (x[stop, None] * want[stop]).sum(axis=0)
        t_prev = t
    return x[:, None] * want


@register("priority")
def strict_priority(capacity, want, weight, priority):
    """Higher classes first, each class max-min within what is left."""
    grant = np.zeros_like(want, dtype=float)
    free = capacity.astype(float).copy()
    for level in sorted(set(priority.tolist()), reverse=True):
        rows = np.flatnonzero(priority == level)
        grant[rows] = max_min(free, want[rows], weight[rows], priority[rows])
        free = np.maximum(free - grant[rows].sum(axis=0), 0.0)
    return grant


def _shares(amount: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    cap = np.asarray(capacity, dtype=float)
    return np.divide(amount, cap, out=np.zeros_like(amount, dtype=float), where=cap > 0)


# ----------------------------------------------------------------------------- allocate
