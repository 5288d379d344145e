"""AllocationView: who gets how much memory and compute, and what changes when you steer it.

The view never allocates by itself: the policy dropdown and the sliders call the
:class:`~llmos_lab.allocator.Allocator`'s own ``set_policy`` and ``set``, and the chart redraws
from the ``alloc.update`` event that follows, so changes made in code show up the same way.
"""

from __future__ import annotations

import threading
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib import colormaps
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from llmos_lab import allocator as alloc_mod
from llmos_lab import events
from llmos_lab.allocator import Allocation, Allocator
from llmos_lab.errors import ArgumentTypeError, ConfigError, LlmosError

from ._render import View, byte_unit, label_bars

PRIORITY_RANGE = (0, 10)
WEIGHT_RANGE = (0.1, 10.0)


class AllocationView(View):
    """Stacked bars of each task's memory and compute grant (and its tenant's) against the
    capacity, the demands behind them, the waiting tasks, and controls that re-run the policy.

    ``.policy`` (Dropdown), ``.priority`` / ``.weight`` (dicts task id -> slider, one row per
    task, kept in step with the allocator's demands), ``.waiting`` (HTML). With a
    ``scheduler`` that owns the allocator, sliders go through ``Scheduler.set_priority`` /
    ``set_weight`` so its running tasks follow too.
    """

    dom_class = "llmos-allocation-view"

    def __init__(self, allocator: Allocator, *, scheduler: Any = None):
        if not isinstance(allocator, Allocator):
            raise ArgumentTypeError("allocator", allocator, "a llmos_lab.Allocator")
        super().__init__()
        if scheduler is not None and scheduler.allocator is not allocator:
            raise ConfigError("scheduler", scheduler, "one whose allocator is this allocator")
        self.allocator, self.scheduler = allocator, scheduler
        self._allocation: Allocation | None = allocator.allocation_
        self._colours: dict[str, int] = {}
        self._controls_lock = threading.RLock()  # rows are added from publishing threads
        self._following = threading.local()  # set while controls follow the allocator
        self.policy = widgets.Dropdown(options=alloc_mod.policies(), value=allocator.policy,
                                       description="policy")
        self.policy.observe(self._on_policy, names="value")
        self.priority: dict[str, widgets.IntSlider] = {}
        self.weight: dict[str, widgets.FloatSlider] = {}
        self._rows: dict[str, widgets.HBox] = {}
        self.waiting = widgets.HTML()
        self.controls = widgets.VBox()
        self.children = [self.image, widgets.HBox([self.policy, self.waiting]), self.controls]
        self._sync_controls(allocator.policy, allocator.demands)
        self._listen("alloc.update", self._on_update)
        self.refresh()

    # ------------------------------------------------------------------ events and controls

    def _on_update(self, event: events.Event) -> bool:
        if event.payload.get("allocator") is not self.allocator:
            return False
        allocation = event.payload["allocation"]
        with self._lock:
            self._allocation = allocation
        self._sync_controls(allocation.policy, allocation.demands)
        return True

    def _sync_controls(self, policy: str, demands: dict[str, Any]) -> None:
        """One slider row per demand; values follow the allocator (changes made in code).
        While following, the controls' observers do not call back into the allocator (that
        would re-enter it, and could wait on a scheduler's lock held by this thread)."""
        with self._controls_lock:
            self._following.on = True
            try:
                self.policy.value = policy
                for task_id, d in demands.items():
                    if task_id not in self._rows:
                        self._add_row(task_id, d.priority, d.weight)
                    p, w = self.priority[task_id], self.weight[task_id]
                    p.min, p.max = min(p.min, d.priority), max(p.max, d.priority)
                    w.min, w.max = min(w.min, d.weight), max(w.max, d.weight)
                    p.value, w.value = d.priority, d.weight
                for task_id in [t for t in self._rows if t not in demands]:
                    for control in (self.priority.pop(task_id), self.weight.pop(task_id),
                                    self._rows.pop(task_id)):
                        control.close()
                self.controls.children = list(self._rows.values())
            finally:
                self._following.on = False

    def _add_row(self, task_id: str, priority: int, weight: float) -> None:
        style = {"description_width": "55px"}
        p = widgets.IntSlider(value=priority, min=min(PRIORITY_RANGE[0], priority),
                              max=max(PRIORITY_RANGE[1], priority), description="priority",
                              continuous_update=False, style=style)
        w = widgets.FloatSlider(value=weight, min=min(WEIGHT_RANGE[0], weight),
                                max=max(WEIGHT_RANGE[1], weight), step=0.1, description="weight",
                                continuous_update=False, style=style)
        p.observe(lambda change: self._set(task_id, priority=int(change["new"])), names="value")
        w.observe(lambda change: self._set(task_id, weight=float(change["new"])), names="value")
        self.priority[task_id], self.weight[task_id] = p, w
        label = widgets.HTML(f"<b>{task_id}</b>", layout=widgets.Layout(width="140px"))
        self._rows[task_id] = widgets.HBox([label, p, w])

    def _set(self, task_id: str, **change: Any) -> None:
        if getattr(self._following, "on", False):
            return  # the slider is only following the allocator
        try:
            if self.scheduler is not None and task_id in list(
                    self.scheduler.metrics().get("task", [])):
                for key, value in change.items():
                    getattr(self.scheduler, f"set_{key}")(task_id, value)
            else:
                self.allocator.set(task_id, **change)
        except LlmosError as exc:
            self.waiting.value = f"<span style='color:#b00'>{exc}</span>"

    def _on_policy(self, change: dict[str, Any]) -> None:
        if not getattr(self._following, "on", False) and change["new"] != self.allocator.policy:
            try:
                self.allocator.set_policy(change["new"])
            except LlmosError as exc:
                self.waiting.value = f"<span style='color:#b00'>{exc}</span>"

    # ------------------------------------------------------------------ drawing

    def _colour(self, task_id: str) -> str:
        index = self._colours.setdefault(task_id, len(self._colours))
        return f"C{index % 10}"

    def _draw(self):
        with self._lock:
            a = self._allocation
        cap = self.allocator.capacity
        resources = [r for r in ("memory", "compute", "gpus") if getattr(cap, r) > 0]
        demands = list(a.demands.values()) if a else []
        tenants = sorted({d.tenant for d in demands if d.tenant is not None})
        rows = ["granted", "wanted"] + (["tenants"] if tenants else [])
        fig, axes = self._subplots(8.5, 0.9 + len(resources) * (0.55 * len(rows) + 0.5),
                                   len(resources), 1)
        axes = axes[:, 0]
        ids = [d.id for d in demands]
        for ax, r in zip(axes, resources, strict=True):
            scale, unit = _scale(r, getattr(cap, r))
            grant = np.array([getattr(a.grants.get(i), r, 0.0) if a else 0.0 for i in ids])
            want = np.array([getattr(d.want, r) for d in demands], dtype=float)
            grant, want = grant / scale, want / scale
            colours = [self._colour(i) for i in ids]
            y = {name: len(rows) - 1 - k for k, name in enumerate(rows)}
            for name, values, alpha in (("granted", grant, 1.0), ("wanted", want, 0.4)):
                lefts = np.cumsum(values) - values
                ax.barh(y[name], values, left=lefts, color=colours, alpha=alpha,
                        edgecolor="white", height=0.7)
                label_bars(ax, ids, lefts, values, y[name], max(want.sum(), 1e-12),
                           "white" if alpha == 1.0 else "black")
            if tenants:
                by_tenant = [grant[[d.tenant == t for d in demands]].sum() for t in tenants]
                lefts = np.cumsum(by_tenant) - np.asarray(by_tenant)
                ax.barh(y["tenants"], by_tenant, left=lefts, height=0.7, edgecolor="white",
                        color=[colormaps["Dark2"](k % 8) for k in range(len(tenants))], hatch="//")
                label_bars(ax, tenants, lefts, by_tenant, y["tenants"], sum(by_tenant))
            capacity = getattr(cap, r) / scale
            ax.axvline(capacity, color="#c00", linestyle="--", linewidth=1.5, label="capacity")
            ax.set_yticks(list(y.values()), list(y.keys()))
            ax.set_xlim(0, max(capacity, want.sum(), 1e-12) * 1.05)
            ax.xaxis.set_major_locator(MaxNLocator(6))  # each tick label costs a redraw
            ax.set_xlabel(f"{r} ({unit})" if unit else f"{r} (share of the machine)")
            ax.set_title(f"{r}: {grant.sum():.3g} of {capacity:.3g}{' ' + unit if unit else ''}"
                         " granted", fontsize=10, loc="left")
        handles = [Patch(color=self._colour(i), label=i) for i in ids[:12]]
        handles.append(Line2D([], [], color="#c00", linestyle="--", label="capacity"))
        axes[0].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1),
                       frameon=False, title="tasks" if ids else None)
        waiting = f" · waiting: {', '.join(a.waiting)}" if a and a.waiting else ""
        fig.suptitle(f"Allocation · policy {self.allocator.policy} · {len(ids)} tasks{waiting}")
        return fig

    def _panels(self) -> None:
        with self._lock:
            a = self._allocation
        waiting = a.waiting if a else []
        self.waiting.value = ("<b>waiting for admission:</b> " + ", ".join(waiting)) if waiting \
            else "no task waiting"

    def _summary(self) -> list[str]:
        with self._lock:
            a = self._allocation
        cap = self.allocator.capacity
        lines = [f"AllocationView: policy {self.allocator.policy}, capacity {cap}; "
                 f"{len(a.demands) if a else 0} tasks, {len(a.waiting) if a else 0} waiting"]
        if not (a and a.demands):
            lines.append("  no tasks")
        for d in (a.demands.values() if a else []):
            g = a.grants.get(d.id)
            got = "waiting" if g is None else f"granted {g}"
            tenant = f", tenant {d.tenant}" if d.tenant is not None else ""
            lines.append(f"  {d.id}: {got} (wants {d.want}; priority {d.priority}, "
                         f"weight {d.weight:g}{tenant})")
        return lines

    def _html(self) -> str:
        return f"<div>{self.waiting.value}</div>"


def _scale(resource: str, capacity: float) -> tuple[float, str]:
    if resource != "memory":
        return 1.0, "GPUs" if resource == "gpus" else ""
    return byte_unit(capacity)
