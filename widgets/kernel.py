"""KernelMonitor: which models are resident, how much of the budget they take, and what the
kernel just did; with buttons to load, evict and pin a model.

The view reads the kernel's own process table (``ps()``) and memory accounting, and follows
``kernel.*`` events; a failed action (evicting a pinned model, a name not loaded) is written to
the event log in red rather than raised from a button callback, where nobody would see it.
"""

from __future__ import annotations

import html
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from llmos_lab import events
from llmos_lab.errors import ArgumentTypeError, ConfigError
from llmos_lab.model_task import ModelTask
from llmos_lab.units import format_bytes

from ._render import View, byte_unit, label_bars

STATE_COLOURS = {"resident": "C0", "host": "C1", "disk": "#999999"}
TASKS = ("auto", *(str(t) for t in ModelTask if t != ModelTask.MASKED_LM))
_logger = logging.getLogger("llmos_lab.widgets")


class _EventLog(widgets.HTML):
    """The ``.log`` panel. Widgets inherit a ``log`` logger from traitlets that ipywidgets
    writes to on protocol errors, so this HTML panel forwards logger calls too."""

    def debug(self, *a: Any, **k: Any) -> None:
        _logger.debug(*a, **k)

    def info(self, *a: Any, **k: Any) -> None:
        _logger.info(*a, **k)

    def warning(self, *a: Any, **k: Any) -> None:
        _logger.warning(*a, **k)

    warn = warning

    def error(self, *a: Any, **k: Any) -> None:
        _logger.error(*a, **k)


class KernelMonitor(View):
    """Bars of bytes per model by state (resident, host, disk; pinned hatched) against the
    memory budget, and the last ``history`` kernel events.

    Controls: ``.model`` (Combobox: a loaded name, or a new name to load under), ``.source``
    (Text: what to load, default the name), ``.task`` (Dropdown), ``.load_button``,
    ``.evict_button``, ``.pin_button`` (pins the selected model, or unpins a pinned one),
    ``.log`` (HTML).
    """

    dom_class = "llmos-kernel-monitor"

    def __init__(self, kernel: Any, *, history: int = 10):
        if not all(callable(getattr(kernel, a, None)) for a in ("ps", "memory")):
            raise ArgumentTypeError("kernel", kernel, "a llmos_lab.ModelKernel (with ps() and "
                                    "memory())")
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ConfigError("history", history, "an integer >= 1")
        super().__init__()
        self.kernel = kernel
        self._events: deque[tuple[float, str, bool]] = deque(maxlen=history)
        self._table = kernel.ps()
        self.model = widgets.Combobox(placeholder="model name", description="model",
                                      ensure_option=False)
        self.source = widgets.Text(placeholder="what to load (default: the name)",
                                   description="source")
        self.task = widgets.Dropdown(options=TASKS, value="auto", description="task")
        self.load_button = widgets.Button(description="Load", icon="upload")
        self.evict_button = widgets.Button(description="Evict", icon="download")
        self.pin_button = widgets.Button(description="Pin", icon="thumb-tack")
        self._log = _EventLog()
        self.load_button.on_click(lambda _: self._act("load", self._load))
        self.evict_button.on_click(lambda _: self._act("evict", self.kernel.evict))
        self.pin_button.on_click(lambda _: self._act("pin", self._toggle_pin))
        self.model.observe(lambda _: self._update_pin_label(), names="value")
        buttons = widgets.HBox([self.load_button, self.evict_button, self.pin_button])
        self.children = [self.image, widgets.HBox([self.model, self.source, self.task]),
                         buttons, self._log]
        self._listen("kernel.*", self._on_event)
        self.refresh()

    @property
    def log(self) -> widgets.HTML:
        return self._log

    # ------------------------------------------------------------------ actions

    def _act(self, what: str, action: Callable[[str], Any]) -> None:
        name = self.model.value.strip()
        if not name:
            self._note(f"{what}: type or pick a model name first", error=True)
            return
        try:
            action(name)
        except Exception as exc:  # a button callback has no caller to raise to
            self._note(f"{what} {name} failed: {type(exc).__name__}: {exc}", error=True)
        self.refresh()

    def _load(self, name: str) -> None:
        task = None if self.task.value == "auto" else self.task.value
        self.kernel.load(self.source.value.strip() or name, name=name, task=task)

    def _toggle_pin(self, name: str) -> None:
        if self._pinned(name):
            self.kernel.unpin(name)
        else:
            self.kernel.pin(name)

    def _pinned(self, name: str) -> bool:
        rows = self._table[self._table["name"] == name]
        return bool(len(rows) and rows["pinned"].iloc[0])

    def _update_pin_label(self) -> None:
        self.pin_button.description = "Unpin" if self._pinned(self.model.value.strip()) \
            else "Pin"

    def _note(self, text: str, error: bool = False) -> None:
        with self._lock:
            self._events.append((time.time(), text, error))
        self._log.value = self._log_html()

    def _on_event(self, event: events.Event) -> bool:
        p = event.payload
        if p.get("kernel") is not self.kernel:
            return False
        with self._lock:
            self._events.append((event.time, _describe(event), False))
        return True

    # ------------------------------------------------------------------ drawing

    def _draw(self):
        table = self.kernel.ps()
        memory = self.kernel.memory()
        with self._lock:
            self._table = table
        fig, axes = self._subplots(8.5, 1.9 + 0.32 * max(len(table), 1), 2, 1,
                                   height_ratios=[1.2, max(1.2, 0.45 * len(table))])
        top, bottom = axes[:, 0]
        sizes = (table["bytes"] + table["adapter_bytes"]).to_numpy(dtype=float)
        self._draw_memory(top, table, sizes, memory)
        self._draw_models(bottom, table, sizes, memory["budget"])
        handles = [Patch(color=c, label=s) for s, c in STATE_COLOURS.items()]
        handles += [Patch(facecolor="none", edgecolor="k", hatch="xx", label="pinned"),
                    Line2D([], [], color="#c00", linestyle="--", label="budget")]
        top.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1),
                   frameon=False)
        fig.suptitle(f"Model kernel · {len(table)} models · precision {self.kernel.precision}")
        return fig

    def _draw_memory(self, ax: Any, table: Any, sizes: np.ndarray, memory: dict) -> None:
        """Resident models stacked against the budget (and host memory on a GPU)."""
        budget = memory["budget"]
        scale, unit = byte_unit(budget)
        states = ["resident"] + (["host"] if self.kernel.device.type == "cuda"
                                 or (table["state"] == "host").any() else [])
        for y, state in enumerate(states):
            rows = (table["state"] == state).to_numpy()
            values = sizes[rows] / scale
            lefts = np.cumsum(values) - values
            ax.barh(y, values, left=lefts, color=STATE_COLOURS[state], edgecolor="white",
                    height=0.7)
            label_bars(ax, list(table["name"][rows]), lefts, values, y,
                       max(budget / scale, values.sum()))
        ax.axvline(budget / scale, color="#c00", linestyle="--", linewidth=1.5)
        ax.set_yticks(range(len(states)), [f"device ({self.kernel.device})", "host"]
                      [:len(states)], fontsize=8)
        ax.set_ylim(len(states) - 0.4, -0.6)
        ax.set_xlim(0, max(budget, sizes[table["state"].to_numpy() == "resident"].sum())
                    / scale * 1.05)
        ax.set_xlabel(unit, fontsize=8)
        ax.set_title(f"device memory: {format_bytes(memory['used'])} of "
                     f"{format_bytes(budget)} budget used", fontsize=10, loc="left")

    def _draw_models(self, ax: Any, table: Any, sizes: np.ndarray, budget: int) -> None:
        """One bar per model on its own scale, so small models stay readable under a large
        budget; the budget line shows when it is in reach."""
        scale, unit = byte_unit(sizes.max() if len(sizes) else 1)
        values = sizes / scale
        y = np.arange(len(table))
        ax.barh(y, values, color=[STATE_COLOURS.get(s, "grey") for s in table["state"]],
                height=0.7)
        pinned = table["pinned"].to_numpy(dtype=bool)
        ax.barh(y[pinned], values[pinned], height=0.7, color="none", hatch="xx", edgecolor="k")
        reach = max(values.max() if len(values) else 0.0, 1e-9) * 1.15
        if budget / scale <= 2 * reach:
            ax.axvline(budget / scale, color="#c00", linestyle="--", linewidth=1.5)
            reach = max(reach, budget / scale * 1.05)
        ax.set_yticks(y, [f"{n} (pinned)" if p else n
                          for n, p in zip(table["name"], pinned, strict=True)], fontsize=8)
        ax.set_ylim(max(len(table), 1) - 0.5, -0.5)
        ax.set_xlim(0, reach)
        ax.set_xlabel(f"bytes ({unit})")
        ax.set_title("models by state", fontsize=10, loc="left")
        if not len(table):
            ax.text(0.5, 0.5, "no models loaded", transform=ax.transAxes, ha="center",
                    color="grey")

    def _panels(self) -> None:
        with self._lock:
            names = list(self._table["name"])
        if tuple(self.model.options) != tuple(names):
            self.model.options = names
        self._update_pin_label()
        self._log.value = self._log_html()

    def _log_html(self) -> str:
        with self._lock:
            entries = list(self._events)
        if not entries:
            return "<i>no kernel events yet</i>"
        lines = [f"<div style='color:{'#b00' if error else 'inherit'}'>"
                 f"{time.strftime('%H:%M:%S', time.localtime(t))} {html.escape(text)}</div>"
                 for t, text, error in reversed(entries)]
        return "<div style='font-family:monospace;font-size:12px'>" + "".join(lines) + "</div>"

    def _summary(self) -> list[str]:
        with self._lock:
            table = self._table
            entries = list(self._events)
        lines = [f"KernelMonitor: {len(table)} models, budget "
                 f"{format_bytes(self.kernel.memory_budget)} on {self.kernel.device}"]
        for r in table.itertuples():
            lines.append(f"  {r.name}: {r.state}, {format_bytes(r.bytes + r.adapter_bytes)}"
                         + (", pinned" if r.pinned else ""))
        if not len(table):
            lines.append("  no models loaded")
        lines += [f"  event: {text}" for _, text, _ in entries[-3:]]
        return lines

    def _html(self) -> str:
        return self._log_html()


def _describe(event: events.Event) -> str:
    """One line per event: what happened to which model, with its size or time. Each topic's
    fields are declared in ``llmos_lab.events.TOPICS``; this reads them by topic."""
    p = event.payload
    what = event.topic.split(".", 1)[1]
    parts = {
        "load": lambda: [format_bytes(p["bytes"]), f"{p['seconds']:.2f} s"],
        "unload": lambda: [],
        "pin": lambda: [],
        "evict": lambda: [f"{p['source']} -> {p['to']}", format_bytes(p["bytes"])],
        "fault": lambda: [f"from {p['source']}", f"{p['seconds']:.2f} s"],
        "infer": lambda: [*([f"adapter {p['adapter']}"] if p["adapter"] else []),
                          f"{p['n']} inputs", f"{p['seconds']:.2f} s"],
        "generate": lambda: [f"{p['n']} inputs", f"{p['seconds']:.2f} s"],
        "adapter": lambda: [f"adapter {p['adapter']}", format_bytes(p["bytes"])],
    }.get(what, lambda: [])()
    if what == "pin":
        what = "pin" if p["pinned"] else "unpin"
    return " ".join([what, str(p.get("model", "")), *parts])
