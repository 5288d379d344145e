"""SchedulerView: who ran when, and whether each task got the share it was entitled to.

A source is a live :class:`~llmos_lab.scheduler.Scheduler` (the view follows its ``sched.*``
events while it runs on its background thread) or a finished
:class:`~llmos_lab.simulation.SimulationResult`. Two sources side by side are a what-if
comparison: the same work under two policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from matplotlib.ticker import MaxNLocator

from llmos_lab.errors import ArgumentTypeError, ConfigError
from llmos_lab.scheduler import Scheduler
from llmos_lab.simulation import SimulationResult

from ._render import View, html_table

MAX_GANTT_TASKS = 30  # more rows than this are unreadable; the rest are counted in the title


class _Source:
    """The same questions asked of a scheduler (live) or a simulation result (static)."""

    def __init__(self, source: Scheduler | SimulationResult, name: str | None):
        if not isinstance(source, (Scheduler, SimulationResult)):
            raise ArgumentTypeError("source", source, "a llmos_lab.Scheduler or a "
                                    "SimulationResult (from lab.simulate)")
        self.source = source
        self.live = isinstance(source, Scheduler)
        self.policy = source.policy.name if self.live else source.policy
        self.name = name or self.policy

    def timeline(self) -> pd.DataFrame:
        return self.source.timeline() if self.live else self.source.timeline

    def metrics(self) -> pd.DataFrame:
        return self.source.metrics() if self.live else self.source.metrics

    def shares(self) -> pd.DataFrame:
        """Measured vs allocated share per task (while all compete), with state and steps; a
        simulation result never changes, so its shares are computed once."""
        cached = getattr(self, "_shares", None)
        if cached is not None:
            return cached
        shares = self.source.shares()
        metrics = self.metrics()
        if len(metrics):
            extra = metrics.set_index("task")[[c for c in ("state", "steps") if c in metrics]]
            shares = shares.join(extra, on="task").pipe(_with_attrs, shares.attrs)
        if not self.live:
            self._shares = shares
        return shares


class SchedulerView(View):
    """A Gantt chart of steps per task above measured vs allocated shares, for one source or
    two side by side; ``.table`` (HTML) lists the shares and Jain's fairness index.

    ``names`` labels the panels (default: the policy names).
    """

    dom_class = "llmos-scheduler-view"

    def __init__(self, source: Scheduler | SimulationResult,
                 other: Scheduler | SimulationResult | None = None, *,
                 names: Sequence[str] | None = None):
        super().__init__()
        raw = [source] if other is None else [source, other]
        names = list(names) if names is not None else [None] * len(raw)
        if len(names) != len(raw):
            raise ConfigError("names", names, f"one per source ({len(raw)})")
        self.sources = [_Source(s, n) for s, n in zip(raw, names, strict=True)]
        if len({s.name for s in self.sources}) < len(self.sources):  # same policy twice
            for s, tag in zip(self.sources, "AB", strict=False):
                s.name = f"{tag}: {s.name}"
        self._colours: dict[str, int] = {}
        self.table = widgets.HTML()
        self.children = [self.image, self.table]
        live = [s.source for s in self.sources if s.live]
        if live:
            self._listen("sched.*", lambda e: any(e.payload.get("scheduler") is s
                                                  for s in live))
        self.refresh()

    def _snapshot(self) -> list[tuple[_Source, pd.DataFrame, pd.DataFrame]]:
        data = [(s, s.timeline(), s.shares()) for s in self.sources]
        self._drawn = {id(s): shares for s, _, shares in data}  # the tables show the same
        return data

    def _colour(self, task: str) -> str:
        with self._lock:
            index = self._colours.setdefault(task, len(self._colours))
        return f"C{index % 10}"

    def _state_key(self):
        """Simulation results never change: only a live scheduler needs redrawing."""
        return None if any(s.live for s in self.sources) else "static"

    def _draw(self):
        data = self._snapshot()
        fig, axes = self._subplots(min(5.6 * len(data), 11.2), 4.8, 2, len(data),
                                   height_ratios=[2, 1])
        for col, (src, timeline, shares) in enumerate(data):
            self._gantt(axes[0, col], src, timeline, shares)
            self._shares(axes[1, col], src, shares)
        title = " vs ".join(s.name for s in self.sources)
        fig.suptitle(f"Scheduling · {title}" + (" (live)" if any(s.live for s in self.sources)
                                                 else ""))
        return fig

    def _gantt(self, ax: Any, src: _Source, timeline: pd.DataFrame,
               shares: pd.DataFrame) -> None:
        first = timeline.groupby("task")["start"].min() if len(timeline) else pd.Series()
        tasks = sorted(shares["task"], key=lambda t: (first.get(t, np.inf), str(t)))
        shown = tasks[:MAX_GANTT_TASKS]
        row = {t: i for i, t in enumerate(shown)}
        rows = timeline[timeline["task"].isin(row)]
        if len(rows):
            scale = (rows["compute"] / max(rows["compute"].max(), 1e-12)).to_numpy() \
                if "compute" in rows else 1.0  # processor sharing: height is the grant
            ax.add_collection(_slices(rows["task"].map(row).to_numpy(float),
                                      rows["start"].to_numpy(float),
                                      rows["end"].to_numpy(float), 0.8 * scale,
                                      [self._colour(t) for t in rows["task"]]))
            ax.set_xlim(0, max(float(rows["end"].max()), 1e-9) * 1.03)
        else:
            ax.text(0.5, 0.5, "no steps yet", transform=ax.transAxes, ha="center",
                    color="grey")
        until = shares.attrs.get("until")
        if until is not None and len(rows):
            ax.axvline(until, color="black", linestyle=":", linewidth=1)
        ax.set_yticks(range(len(shown)), [str(t) for t in shown], fontsize=8)
        ax.set_ylim(len(shown) - 0.5, -0.5)
        ax.set_xlabel("seconds" + (" (dotted: shares measured until here)"
                                   if until is not None and len(rows) else ""))
        ax.set_ylabel("task")
        more = f" (first {len(shown)} of {len(tasks)} tasks)" if len(tasks) > len(shown) else ""
        ax.set_title(f"{src.name}: {len(timeline)} slices{more}", fontsize=10, loc="left")
        ax.xaxis.set_major_locator(MaxNLocator(5))  # fewer tick labels: each costs a redraw
        ax.grid(axis="x", alpha=0.3)

    def _shares(self, ax: Any, src: _Source, shares: pd.DataFrame) -> None:
        shown = shares.head(MAX_GANTT_TASKS)
        x = np.arange(len(shown))
        ax.bar(x - 0.2, shown["share"], width=0.4, label="measured",
               color=[self._colour(t) for t in shown["task"]])
        ax.bar(x + 0.2, shown["allocated_share"], width=0.4, label="allocated",
               color="none", edgecolor="black", hatch="//")
        ax.set_xticks(x, [str(t) for t in shown["task"]], fontsize=8,
                      rotation=45 if len(shown) > 6 else 0, ha="right" if len(shown) > 6
                      else "center")
        ax.set_ylabel("share of busy time")
        top = max(1e-9, shown["share"].max(), shown["allocated_share"].max()) if len(shown) \
            else 1.0
        ax.set_ylim(0, top * 1.45)  # room for the legend above the bars
        ax.yaxis.set_major_locator(MaxNLocator(3))
        ax.legend(fontsize=8, loc="upper right", frameon=False, ncols=2)
        ax.set_title(f"Jain's index {shares.attrs.get('jain', 1.0):.3f} "
                     f"(1 = every task got its share)", fontsize=10, loc="left")

    def _panels(self) -> None:
        self.table.value = self._tables_html()

    def _tables_html(self) -> str:
        parts = []
        drawn = getattr(self, "_drawn", {})
        for src in self.sources:
            s = drawn.get(id(src))
            s = src.shares() if s is None else s
            df = s.set_index("task")[[c for c in ("state", "steps", "busy_seconds", "share",
                                                  "allocated_share") if c in s]]
            with np.errstate(divide="ignore", invalid="ignore"):
                df["measured / allocated"] = (s["share"] / s["allocated_share"]).to_numpy()
            df = df.rename(columns={"share": "measured share", "busy_seconds": "busy s"})
            table = html_table(df, scales={"measured / allocated": (0.0, 2.0, "coolwarm")},
                               formats={"busy s": ".3g", "measured share": ".3f",
                                        "allocated_share": ".3f", "measured / allocated": ".2f"},
                               caption=f"{src.name} · Jain's index "
                                       f"{s.attrs.get('jain', 1.0):.3f}")
            parts.append(f"<div style='margin-right:16px'>{table}</div>")
        return f"<div style='display:flex;flex-wrap:wrap'>{''.join(parts)}</div>"

    def _summary(self) -> list[str]:
        lines = ["SchedulerView: " + " vs ".join(f"{s.name}" for s in self.sources)]
        for src in self.sources:
            s = src.shares()
            lines.append(f"  {src.name}: {len(s)} tasks, {len(src.timeline())} slices, "
                         f"Jain's index {s.attrs.get('jain', 1.0):.3f}")
            lines += [f"    {r.task}: measured share {r.share:.3f} vs allocated "
                      f"{r.allocated_share:.3f}" for r in s.itertuples()]
        return lines

    def _html(self) -> str:
        return self._tables_html()


def _slices(y: np.ndarray, start: np.ndarray, end: np.ndarray, height: Any,
            colours: list[str]) -> PolyCollection:
    """Every slice of the Gantt chart as one collection: one artist to draw instead of a
    rectangle patch per slice (a live run has hundreds)."""
    half = np.broadcast_to(np.asarray(height, dtype=float) / 2, y.shape)
    verts = np.stack([np.stack([start, y - half], 1), np.stack([start, y + half], 1),
                      np.stack([end, y + half], 1), np.stack([end, y - half], 1)], 1)
    return PolyCollection(verts, facecolors=colours, linewidths=0, antialiaseds=False)


def _with_attrs(df: pd.DataFrame, attrs: dict[str, Any]) -> pd.DataFrame:
    df.attrs = dict(attrs)  # a join does not keep them (Jain's index lives there)
    return df
