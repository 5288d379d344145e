"""ResultsView: the nightly results database in a notebook, as the morning report shows it.

A chart of one metric over the last nights (every run a dot, each night's mean a line, drawn by
the report's own ``history_chart``) and a table of the chosen night's runs: status, attempts,
seconds, peak memory and every recorded value, failures with their reason.
"""

from __future__ import annotations

import os

import ipywidgets as widgets
import pandas as pd

from llmos_lab.errors import ArgumentTypeError
from llmos_lab.pipelines.database import ResultsDB
from llmos_lab.pipelines.report import NIGHTS_SHOWN, history_chart
from llmos_lab.units import format_bytes

from ._render import View, html_table


class ResultsView(View):
    """``.night`` and ``.metric`` (Dropdowns) choose what ``.table`` (HTML) and the chart
    show; ``refresh()`` re-reads the database (a night still running adds runs)."""

    dom_class = "llmos-results-view"

    def __init__(self, db: str | os.PathLike, suite: str | None = None):
        super().__init__()
        if not isinstance(db, (str, os.PathLike)):
            raise ArgumentTypeError("db", db, "the path of a results database (runs/results.db)")
        self.store, self.suite = ResultsDB(db, create=False), suite
        nights = self.store.nights(suite)["night"].tolist()
        self.night = widgets.Dropdown(options=nights, value=nights[-1] if nights else None,
                                      description="night")
        metrics = self.metrics()
        self.metric = widgets.Dropdown(options=metrics, value=metrics[0] if metrics else None,
                                       description="metric")
        for control in (self.night, self.metric):
            control.observe(lambda _: self.refresh(), names="value")
        self.table = widgets.HTML()
        self.children = [widgets.HBox([self.night, self.metric]), self.image, self.table]
        self.refresh()

    def metrics(self) -> list[str]:
        frame = self.store.query("SELECT DISTINCT m.name FROM metrics m JOIN nights n USING "
                                 "(night) WHERE m.value IS NOT NULL" +
                                 (" AND n.suite=?" if self.suite else "") + " ORDER BY 1",
                                 (self.suite,) if self.suite else ())
        return list(frame["name"])

    def runs(self) -> pd.DataFrame:
        """The chosen night's runs, one column per numeric metric."""
        if self.night.value is None:
            return pd.DataFrame()
        runs = self.store.runs(self.night.value).set_index("run_id")
        values = self.store.metrics(self.night.value)
        wide = values.pivot_table(index="run_id", columns="metric", values="value",
                                  aggfunc="first") if len(values) else pd.DataFrame()
        return runs[["status", "attempts", "seconds", "peak_memory", "reason"]].join(wide)

    def _history(self) -> pd.DataFrame:
        nights = self.store.nights(self.suite).tail(NIGHTS_SHOWN)["night"].tolist()
        frames = [self.store.metrics(n).assign(night=n) for n in nights]
        history = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["key", "metric", "value", "night"])
        return history[history["metric"] == self.metric.value]

    def _draw(self):
        fig, axes = self._subplots(8.0, 3.2, 1, 1)
        ax = axes[0, 0]
        history = self._history()
        if history.empty:
            ax.text(0.5, 0.5, "no recorded values yet", ha="center", transform=ax.transAxes)
            return fig
        for i, (key, rows) in enumerate(history.groupby("key")):
            history_chart(ax, rows, str(key), colour=f"C{i % 10}")
        ax.set_title(f"{self.metric.value} over the last nights", fontsize=10, loc="left")
        return fig

    def _table_html(self) -> str:
        runs = self.runs()
        if runs.empty:
            return "<p>No runs in this night.</p>"
        shown = runs.assign(peak_memory=runs["peak_memory"].map(
            lambda b: "" if pd.isna(b) else format_bytes(int(b))))
        failed = int((runs["status"] != "ok").sum())
        head = f"<div>night {self.night.value}: {len(runs)} runs, {failed} not ok</div>"
        formats = {c: ".4g" for c in shown.columns if shown[c].dtype.kind == "f"}
        return head + html_table(shown, {}, formats)

    def _panels(self) -> None:
        self.table.value = self._table_html()

    def _summary(self) -> list[str]:
        runs = self.runs()
        lines = [f"ResultsView: night {self.night.value}, {len(runs)} runs"]
        for run_id, row in runs.iterrows():
            lines.append(f"  {run_id}: {row['status']}"
                         + (f" ({row['reason']})" if row["status"] != "ok" else ""))
        return lines

    def _html(self) -> str:
        return self._table_html()
