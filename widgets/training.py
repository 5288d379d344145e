"""TrainingDashboard: loss and metric curves of one or several runs while they train.

The dashboard follows ``train.*`` events, so it works the same whether ``fit`` runs in the cell,
on a thread or inside the scheduler. The Stop button calls ``Trainer.stop()``, which ends a run
after the step under way; a click reaches the kernel only between cells, so to stop a run from
the button, train on a background thread (``threading.Thread(target=trainer.fit, ...)``) or
through ``Scheduler.start()``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from llmos_lab import events, plots
from llmos_lab.errors import ArgumentTypeError, ConfigError, NotFittedError

from ._render import View, html_table

_RUNNING = ("running", "stopping")


@dataclass(eq=False)
class _Run:
    trainer: Any
    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int | None = None
    state: str = "waiting"  # waiting | running | stopping | stopped | early-stopped | done
    note: str = ""

    @property
    def step(self) -> int:
        return int(self.rows[-1]["step"]) if self.rows else 0

    def status(self) -> dict[str, Any]:
        """step/total, ETA, samples/s and the latest value of every metric."""
        total = self.total or 0
        out: dict[str, Any] = {"state": self.state, "step": f"{self.step}/{total or '?'}"}
        if self.rows:  # .get: rows from older histories may lack a column
            per_step = float(self.rows[-1].get("seconds", 0.0)) / len(self.rows)
            left = max(0, total - self.step) if self.state in _RUNNING else 0
            out["ETA"] = _duration(per_step * left) if left else "-"
            rates = [r["samples_per_s"] for r in self.rows[-10:] if "samples_per_s" in r]
            if rates:
                out["samples/s"] = float(np.mean(rates))
            out["loss"] = float(self.rows[-1]["loss"])
            for r in reversed(self.rows):
                for k, v in r.items():
                    if k.startswith("eval_") and k not in out and not _missing(v):
                        out[k] = float(v)
        return out


def _check_trainer(trainer: Any) -> None:
    if not (hasattr(trainer, "config") and callable(getattr(trainer, "stop", None))):
        raise ArgumentTypeError("trainer", trainer, "a llmos_lab.Trainer")


class TrainingDashboard(View):
    """Live loss (raw and smoothed) and evaluation curves of every watched run on one chart,
    progress, ETA and samples/s, and a Stop button.

    ``.progress`` is one IntProgress over all runs (steps done / steps planned); the per-run
    detail is in ``.status`` (HTML). ``.stop_button`` stops every watched run still running.
    """

    dom_class = "llmos-training-dashboard"

    def __init__(self, *trainers: Any, names: list[str] | None = None):
        for trainer in trainers:
            _check_trainer(trainer)
        super().__init__()
        if names is not None and len(names) != len(trainers):
            raise ConfigError("names", names, f"one per trainer ({len(trainers)})")
        self.runs: list[_Run] = []
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="0/0",
                                            style={"description_width": "70px"})
        self.stop_button = widgets.Button(description="Stop", icon="stop",
                                          button_style="danger",
                                          tooltip="stop every run after its current step")
        self.stop_button.on_click(lambda _: self.stop())
        self.status = widgets.HTML()
        self.children = [self.image, widgets.HBox([self.progress, self.stop_button]),
                         self.status]
        for i, trainer in enumerate(trainers):
            self.watch(trainer, names[i] if names else None, redraw=False)
        self._listen("train.*", self._on_event)
        self.refresh()

    def watch(self, trainer: Any, name: str | None = None, *, redraw: bool = True) -> None:
        """Follow another run (a trainer that already trained shows its history)."""
        _check_trainer(trainer)
        cfg = trainer.config
        name = name or f"{cfg.model} · {cfg.method}"
        with self._lock:
            taken = {r.name for r in self.runs}
            base, k = name, 2
            while name in taken:
                name, k = f"{base} #{k}", k + 1
            run = _Run(trainer, name, total=getattr(trainer, "total_steps_", None))
            with contextlib.suppress(NotFittedError):
                run.rows = trainer.history_.to_dict("records")
            if run.rows:
                run.state = "running" if getattr(trainer, "_training", False) else "done"
            self.runs.append(run)
        if redraw:
            self.request_redraw()

    def stop(self) -> list[str]:
        """Ask every running run to stop after its current step; returns their names."""
        with self._lock:
            running = [r for r in self.runs if r.state == "running"]
            for run in running:
                run.trainer.stop()
                run.state, run.note = "stopping", "stop requested: ends after this step"
        if not running:
            with self._lock:
                for run in self.runs:
                    run.note = run.note or "nothing running to stop"
        self.request_redraw()
        return [r.name for r in running]

    def _on_event(self, event: events.Event) -> bool:
        p = event.payload
        with self._lock:
            run = next((r for r in self.runs if r.trainer is p.get("trainer")), None)
            if run is None:
                return False
            topic = event.topic
            if topic == "train.start":
                run.rows, run.total, run.state, run.note = [], p["total_steps"], "running", ""
            elif topic == "train.step":
                run.rows.append({k: v for k, v in p.items()
                                 if k not in ("trainer", "total_steps")})
                run.total = p["total_steps"]
                if run.state == "waiting":
                    run.state = "running"
            elif topic == "train.early_stop":
                run.state = "early-stopped"
                run.note = f"early stop at step {p['step']}: best {p['metric']} {p['best']:.4g}"
            elif topic == "train.stopped":
                run.state, run.note = "stopped", f"stopped at step {p['step']}"
            elif topic == "train.end":
                run.total = run.step if run.state != "running" else run.total
                run.state = "done" if run.state in _RUNNING else run.state
            elif topic == "train.oom":
                run.note = f"out of memory at step {p['step']}: micro-batch {p['micro_batch']}"
        return True

    # ------------------------------------------------------------------ drawing

    def _snapshot(self) -> list[tuple[str, pd.DataFrame, str]]:
        with self._lock:
            return [(r.name, pd.DataFrame(list(r.rows)), r.state) for r in self.runs]

    def _draw(self):
        runs = self._snapshot()
        metrics = sorted({c for _, h, _ in runs for c in h.columns
                          if c.startswith("eval_") and h[c].notna().any()})
        fig, axes = self._subplots(10 if metrics else 7.5, 3.6, 1, 2 if metrics else 1)
        axes = axes[0]
        loss_ax = axes[0]
        for i, (name, h, _) in enumerate(runs):
            if not len(h):
                continue
            colour = f"C{i % 10}"
            plots.loss_curves(loss_ax, h, colour, label=name)
        loss_ax.set_xlabel("step")
        loss_ax.set_ylabel("training loss")
        loss_ax.set_title("loss (faint: per step, solid: smoothed)", fontsize=10, loc="left")
        loss_ax.grid(alpha=0.3)
        for axis in (loss_ax.xaxis, loss_ax.yaxis):
            axis.set_major_locator(MaxNLocator(5))  # each tick label costs a redraw
        if any(len(h) for _, h, _ in runs):
            loss_ax.legend(fontsize=8, frameon=False)
        else:
            loss_ax.text(0.5, 0.5, "waiting for the first step", transform=loss_ax.transAxes,
                         ha="center", color="grey")
        if metrics:
            ax, styles = axes[1], ["-", "--", ":", "-."]
            for i, (name, h, _) in enumerate(runs):
                for j, col in enumerate(m for m in metrics if m in h):
                    rows = h.dropna(subset=[col])
                    ax.plot(rows["step"], rows[col], styles[j % 4], marker="o", markersize=3,
                            color=f"C{i % 10}", label=f"{name}: {col[5:]}")
            ax.set_xlabel("step")
            ax.set_ylabel("evaluation metric")
            values = pd.concat([h[m] for _, h, _ in runs for m in metrics if m in h]).dropna()
            if len(values) and values.between(0, 1).all():
                ax.set_ylim(0, 1.02)  # accuracy and F1 read against their whole range
            ax.set_title("evaluation", fontsize=10, loc="left")
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.legend(fontsize=8, frameon=False)
        fig.suptitle("Training · " + (" vs ".join(n for n, _, _ in runs) or "no runs"))
        return fig

    def _panels(self) -> None:
        with self._lock:
            runs = list(self.runs)
            done = sum(r.step for r in runs)
            total = sum(max(r.total or 0, r.step) for r in runs)
            states = {r.state for r in runs}
            table = self._status_frame(runs)
            notes = [f"<b>{r.name}</b>: {r.note}" for r in runs if r.note]
        self.progress.max = max(1, total)
        self.progress.value = min(done, self.progress.max)
        self.progress.description = f"{done}/{total}"
        self.progress.bar_style = "success" if states == {"done"} else \
            "warning" if states & {"stopped", "early-stopped", "stopping"} else ""
        self.status.value = (html_table(table, formats={"samples/s": ".1f", "loss": ".4f"})
                             if len(table) else "no runs watched") + "".join(
            f"<div>{n}</div>" for n in notes)

    @staticmethod
    def _status_frame(runs: list[_Run]) -> pd.DataFrame:
        frame = pd.DataFrame([r.status() for r in runs], index=[r.name for r in runs])
        frame.index.name = "run"
        floats = [c for c in frame.columns if c.startswith("eval_")]
        return frame.astype({c: float for c in floats})

    def _summary(self) -> list[str]:
        with self._lock:
            runs = list(self.runs)
            lines = [f"TrainingDashboard: {len(runs)} runs"]
            for r in runs:
                s = r.status()
                extra = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in s.items() if k not in ("state", "step"))
                lines.append(f"  {r.name}: {s['state']}, step {s['step']}"
                             + (f", {extra}" if extra else "") + (f" ({r.note})" if r.note
                                                                  else ""))
        return lines

    def _html(self) -> str:
        return self.status.value


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"
