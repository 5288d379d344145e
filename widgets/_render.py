"""What every view shares: Agg figures to PNG, throttled redraws, event subscriptions, the base.

Events arrive on whatever thread published them (a scheduler's or a trainer's background
thread), so a view only records state under its lock and asks for a redraw; the drawing runs on
a timer thread at most ``interval`` apart, and the last request is always drawn. Charts go
through matplotlib's object-oriented ``Figure`` with the Agg canvas, never pyplot, which is not
thread-safe and would pick up the notebook's backend.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ipywidgets as widgets
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from llmos_lab import events
from llmos_lab.plots import DPI, new_figure

log = logging.getLogger("llmos_lab.widgets")

REDRAW_INTERVAL = 0.25  # seconds: at most four redraws a second
REDRAW_SHARE = 0.1  # and drawing takes at most this share of the time (charts cost ~0.1 s)


def byte_unit(n: float) -> tuple[float, str]:
    """The divisor and unit that show ``n`` bytes as a readable number (as format_bytes)."""
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return float(scale), unit
    return 1.0, "B"


def figure_png(fig: Figure) -> bytes:
    """PNG bytes; zlib level 1 (a third of the encoding time of the default, ~20% larger)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def layout_key(fig: Figure) -> tuple:
    """What decides a figure's constrained layout: its size, its axes and the texts around
    them (tick labels we set, axis labels, titles, legend entries). Automatic numeric tick
    labels change with the data but hardly the layout's margins."""
    parts: list[Any] = [tuple(fig.get_size_inches()), fig._suptitle is not None]
    for ax in fig.axes:
        legend = ax.get_legend()
        parts.append((
            tuple(ax.get_subplotspec().get_geometry()) if ax.get_subplotspec() else None,
            _tick_texts(ax.yaxis), _tick_texts(ax.xaxis), ax.get_ylabel(), ax.get_xlabel(),
            bool(ax.get_title(loc="left")), bool(ax.get_title()),
            tuple(t.get_text() for t in legend.get_texts()) if legend else None,
            ax.yaxis.get_label_position(), ax.yaxis.get_ticks_position()))
    return tuple(parts)


def _tick_texts(axis: Any) -> tuple | None:
    """Tick labels we set (a FixedFormatter); automatic ones are numbers of a steady width."""
    from matplotlib.ticker import FixedFormatter

    formatter = axis.get_major_formatter()
    return tuple(formatter.seq) if isinstance(formatter, FixedFormatter) else None


class LayoutCache:
    """Constrained layout once per figure structure, then fixed positions.

    Laying out costs matplotlib a second pass over every artist on each savefig (half of a
    redraw); a live view redraws the same structure again and again with new data, so the
    positions found the first time are reused while the structure (``layout_key``) stays."""

    def __init__(self, size: int = 8):
        self._positions: dict[tuple, list[Any]] = {}
        self.size = size

    def render(self, fig: Figure) -> bytes:
        key = layout_key(fig)
        cached = self._positions.get(key)
        if cached is None and fig.get_layout_engine() is None:
            fig.set_layout_engine("constrained")  # a reused figure with a new structure
        if cached is not None and len(cached[0]) == len(fig.axes):
            positions, title_y = cached
            fig.set_layout_engine(None)  # "none" keeps a placeholder that savefig lays out
            for ax, position in zip(fig.axes, positions, strict=True):
                ax.set_position(position)
            if fig._suptitle is not None and title_y is not None:
                fig._suptitle.set_y(title_y)
            return figure_png(fig)
        png = figure_png(fig)
        if len(self._positions) >= self.size:
            self._positions.pop(next(iter(self._positions)))
        title_y = fig._suptitle.get_position()[1] if fig._suptitle is not None else None
        self._positions[key] = ([ax.get_position() for ax in fig.axes], title_y)
        return png


def scrub(ax: Any) -> None:
    """Remove what a previous drawing put on ``ax`` but keep the axes and their tick objects
    (creating those is a third of drawing a fresh figure): data artists, legend, limits,
    tick positions and labels go back to their defaults."""
    from matplotlib.ticker import AutoLocator, ScalarFormatter

    for artist in [*ax.patches, *ax.lines, *ax.texts, *ax.collections, *ax.images]:
        artist.remove()
    ax.containers.clear()  # bar containers would hand their old labels to a new legend
    if ax.legend_ is not None:
        ax.legend_.remove()
    ax.relim()
    ax.set_autoscale_on(True)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(AutoLocator())
        axis.set_major_formatter(ScalarFormatter())
        axis.set_tick_params(labelrotation=0)
    ax.set_title("")
    ax.set_title("", loc="left")


class Throttle:
    """Coalesce calls to ``fn`` into at most one run per ``interval`` seconds, on a timer
    thread; a call that arrives while a run is pending is absorbed by it, and a call during or
    after a run schedules a trailing one, so the latest state is always drawn.

    Runs are also spaced so that ``fn`` uses at most ``share`` of the wall time: on a 2-core
    machine a 0.1 s chart redrawn after every 0.3 s training step would otherwise slow the
    training it shows by a third."""

    def __init__(self, fn: Callable[[], Any], interval: float = REDRAW_INTERVAL,
                 share: float = REDRAW_SHARE):
        self.fn, self.interval, self.share = fn, interval, share
        self.spacing = interval  # grows with the measured cost of fn
        self._cond = threading.Condition()
        self._timer: threading.Timer | None = None
        self._runners: list[threading.Thread] = []  # threads inside fn right now
        self._last = float("-inf")
        self._closed = False

    def __call__(self) -> None:
        with self._cond:
            if self._closed or self._timer is not None:
                return
            delay = max(0.0, self._last + self.spacing - time.monotonic())
            self._timer = threading.Timer(delay, self._run)
            self._timer.daemon = False  # exit waits for a drawing rather than killing it
            self._timer.start()

    @property
    def pending(self) -> bool:
        return self._timer is not None

    def flush(self, timeout: float = 30.0) -> None:
        """Run a pending call now, on this thread, or wait for a run under way to finish."""
        with self._cond:
            timer, self._timer = self._timer, None
            if timer is None:
                me = threading.current_thread()
                self._cond.wait_for(lambda: not [t for t in self._runners if t is not me],
                                    timeout)
                return
        timer.cancel()
        self._run(claimed=True)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _run(self, claimed: bool = False) -> None:
        me = threading.current_thread()
        with self._cond:
            self._cond.wait_for(lambda: not self._runners)  # one run at a time
            if not claimed:
                if self._timer is not me:  # this timer was flushed or closed meanwhile
                    return
                delay = self._last + self.spacing - time.monotonic()
                if delay > 1e-3:  # the run we waited for raised the spacing: wait it out
                    self._timer = threading.Timer(delay, self._run)
                    self._timer.daemon = False
                    self._timer.start()
                    return
                self._timer = None
            if self._closed:
                return
            self._last = time.monotonic()
            self._runners.append(me)
        started = time.monotonic()
        try:
            self.fn()
        except Exception:  # a timer thread has no one to raise to
            log.exception("widget redraw failed")
        finally:
            took = time.monotonic() - started
            with self._cond:
                self.spacing = max(self.interval, took / self.share)
                self._runners.remove(me)
                self._cond.notify_all()


class View(widgets.VBox):
    """Base of every view: an ``.image`` chart, ``refresh()``, ``png()``, ``close()`` and a
    mimebundle that keeps a static PNG, HTML and text for notebooks run without a front end.

    Subclasses implement ``_draw() -> Figure``, ``_summary() -> list[str]`` and optionally
    ``_panels()`` (update their HTML widgets) and ``_html()`` (extra HTML for the snapshot).
    """

    dom_class = "llmos-widget"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.image = widgets.Image(format="png")
        self.image.add_class("llmos-chart")
        self.add_class("llmos-widget")
        self.add_class(self.dom_class)
        self._lock = threading.RLock()  # guards the state that events update
        self._draw_lock = threading.Lock()  # one drawing at a time
        self._unsubscribe: list[Callable[[], None]] = []
        self._throttle = Throttle(self.refresh)
        self._layouts = LayoutCache()
        self._figure: tuple[tuple, Figure, Any] | None = None
        self._static: dict[Any, bytes] = {}  # PNG per state of a view of immutable inputs
        self._png = b""
        self._closed = False
        self.redraws = 0  # how many times the chart was drawn (for tests and debugging)

    # ------------------------------------------------------------------ events

    def _listen(self, pattern: str, handler: Callable[[events.Event], bool | None]) -> None:
        """Subscribe ``handler``; when it returns True (the event changed what we show), a
        throttled redraw follows."""
        def on_event(event: events.Event) -> None:
            if self._closed:
                return
            if handler(event):
                self._throttle()

        self._unsubscribe.append(events.subscribe(pattern, on_event))

    def request_redraw(self) -> None:
        """Ask for a throttled redraw (safe from any thread)."""
        if not self._closed:
            self._throttle()

    # ------------------------------------------------------------------ drawing

    def refresh(self) -> bytes:
        """Redraw now, on this thread; returns the PNG."""
        with self._draw_lock:
            if self._closed:
                return self._png
            key = self._state_key()
            if key is not None and key in self._static:
                png = self._static[key]  # inputs that cannot change: the same picture
            else:
                fig = self._draw()
                png = self._layouts.render(fig)
                if key is not None:
                    self._static[key] = png
                if self._figure is None or fig is not self._figure[1]:
                    fig.clear()  # a one-off figure: free its artists now
            self._png = png
            self.redraws += 1
            self.image.value = png
            self._panels()
        return png

    def png(self) -> bytes:
        """The current snapshot (drawn first if a redraw is pending or none exists yet)."""
        self._throttle.flush()
        return self._png if self._png else self.refresh()

    def _subplots(self, width: float, height: float, nrows: int, ncols: int,
                  **gridspec: Any) -> tuple[Figure, Any]:
        """(figure, 2-d array of axes) for a drawing of this shape: the previous drawing's,
        scrubbed, while the shape is unchanged (live views redraw the same shape with new
        data), else a new one."""
        key = (round(width, 3), round(height, 3), nrows, ncols, repr(sorted(gridspec.items())))
        if self._figure is not None and self._figure[0] == key:
            _, fig, axes = self._figure
            for ax in axes.flat:
                scrub(ax)
            return fig, axes
        fig = new_figure(width, height)
        axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw=gridspec or None)
        self._figure = (key, fig, axes)
        return fig, axes

    def _state_key(self) -> Any:
        """None for a view that follows changing objects (redrawn every time); a hashable
        key for one whose inputs cannot change (a report, a finished simulation), so each
        of its states is drawn once."""
        return None

    def _draw(self) -> Figure:
        raise NotImplementedError

    def _summary(self) -> list[str]:
        raise NotImplementedError

    def _panels(self) -> None:
        """Update the view's text widgets from the current state."""

    def _html(self) -> str:
        return ""

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = {}
        if self.comm is not None:  # live: the front end renders the widget itself
            data = super()._repr_mimebundle_(**kwargs) or {}
        png = self.png()
        encoded = base64.b64encode(png).decode("ascii")
        lines = self._summary()
        data["text/plain"] = "\n".join(lines)
        data["image/png"] = encoded
        data["text/html"] = (
            f'<div class="llmos-snapshot {self.dom_class}">'
            f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(lines[0])}"/>'
            f"{self._html()}</div>")
        return data

    def close(self) -> None:
        """Unsubscribe from every event, stop pending redraws, close the child widgets."""
        if "_throttle" not in self.__dict__:  # refused in __init__: nothing was set up
            return
        self._closed = True
        self._throttle.close()
        with self._draw_lock:  # let a drawing under way finish
            pass
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        for child in _descendants(self):
            child.close()
        super().close()
        self.__dict__.pop("_repr_mimebundle_", None)  # a closed view still shows its snapshot

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> View:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _descendants(box: widgets.Box) -> list[widgets.Widget]:
    out = []
    for child in box.children:
        if isinstance(child, widgets.Box):
            out.extend(_descendants(child))
        out.append(child)
    return out


# ----------------------------------------------------------------------------- HTML tables


def cell_style(value: float, vmin: float, vmax: float, cmap: str) -> str:
    """Inline background colour for ``value`` on a colour scale, with readable text."""
    if pd.isna(value) or vmax <= vmin:
        return ""
    x = min(1.0, max(0.0, (float(value) - vmin) / (vmax - vmin)))
    r, g, b, _ = colormaps[cmap](x)
    text = "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "#fff"
    return f"background:rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f});color:{text}"


def html_table(df: pd.DataFrame, scales: dict[str, tuple[float, float, str]] | None = None,
               formats: dict[str, str] | None = None, caption: str = "") -> str:
    """A compact HTML table; ``scales`` maps a column to (vmin, vmax, colormap) for a colour
    scale, ``formats`` a column to a format spec. The index is the first column."""
    scales, formats = scales or {}, formats or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [df.index.name or "", *df.columns])
    rows = []
    for key, row in df.iterrows():
        cells = [f'<th style="text-align:left">{html.escape(str(key))}</th>']
        for col in df.columns:
            value = row[col]
            style = cell_style(value, *scales[col]) if col in scales else ""
            text = "" if pd.isna(value) else format(value, formats.get(col, "")) \
                if isinstance(value, (int, float)) else str(value)
            cells.append(f'<td style="text-align:right;padding:1px 6px;{style}">'
                         f"{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption \
        else ""
    return (f'<table class="llmos-table" style="border-collapse:collapse;font-size:12px">'
            f"{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def label_bars(ax: Any, names: Sequence[str], lefts: Iterable[float], widths: Iterable[float],
               y: float, total: float, color: str = "white") -> None:
    """Write each segment's name inside it when it is wide enough to read."""
    for name, left, width in zip(names, lefts, widths, strict=True):
        if total > 0 and width / total > 0.07:
            ax.text(left + width / 2, y, name, ha="center", va="center", fontsize=8,
                    color=color, clip_on=True)
