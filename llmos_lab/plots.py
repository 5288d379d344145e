"""Drawing shared by the core's ``plot()`` methods and the widgets: one function per chart.

Figures are matplotlib's object-oriented ``Figure`` on an Agg canvas of their own, never
pyplot: safe off the main thread (widgets redraw on a timer thread), invisible to the notebook's
backend, and identical under papermill. ``plot()`` returns a :class:`Display` in
scikit-learn's shape (``figure_``, ``ax_``) that shows itself as a PNG in a notebook.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 80


def new_figure(width: float, height: float, dpi: int = DPI) -> Figure:
    """A figure on its own Agg canvas: safe off the main thread, invisible to pyplot."""
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


class Display:
    """What ``plot()`` returns: the axes it drew on (``ax_``) and their figure
    (``figure_``); a notebook shows it as a PNG."""

    def __init__(self, ax: Any):
        self.ax_, self.figure_ = ax, ax.figure

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.figure_.savefig(buf, format="png")
        return buf.getvalue()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.ax_.get_title() or 'figure'}>"


def axes_or_new(ax: Any, width: float, height: float) -> Any:
    return ax if ax is not None else new_figure(width, height, dpi=100).subplots()


def confusion_heatmap(ax: Any, confusion: pd.DataFrame, normalize: bool = True, *,
                      annotate_up_to: int = 20, colorbar: bool = False,
                      fontsize: float = 8) -> Any:
    """Rows true, columns predicted; ``normalize`` shows each row as shares (recall).
    Cells carry their numbers while there are at most ``annotate_up_to`` classes."""
    m = confusion.to_numpy(dtype=float)
    if normalize:
        m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else max(m.max(), 1))
    if colorbar:
        ax.figure.colorbar(image, ax=ax, shrink=0.75,
                           label="share of true class" if normalize else "count")
    ticks = list(range(len(m)))
    ax.set_xticks(ticks, confusion.columns, rotation=45, ha="right", fontsize=fontsize)
    ax.set_yticks(ticks, confusion.index, fontsize=fontsize)
    if len(m) <= annotate_up_to:
        top = max(m.max(), 1e-9)
        for i in ticks:
            for j in ticks:
                ax.text(j, i, f"{m[i, j]:.2f}" if normalize else f"{m[i, j]:.0f}",
                        ha="center", va="center", fontsize=fontsize - 1,
                        color="white" if m[i, j] > 0.6 * top else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return image


def smoothed(loss: pd.Series) -> pd.Series:
    """The training curve's trend: a centred-free rolling mean over a twentieth of the run."""
    return loss.rolling(max(1, len(loss) // 20), min_periods=1).mean()


def loss_curves(ax: Any, history: pd.DataFrame, colour: str = "C0",
                label: str = "loss") -> None:
    """Per-step loss (faint) and its smoothed trend (solid)."""
    ax.plot(history["step"], history["loss"], color=colour, alpha=0.3, linewidth=1)
    ax.plot(history["step"], smoothed(history["loss"]), color=colour, linewidth=2,
            label=label)
