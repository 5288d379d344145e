"""ReportView: a classification report read at a glance, and what changed between two.

Per-class precision, recall and F1 on a colour scale, the confusion matrix as a heat map, and
with a second report (say LoRA against a full fine-tune) the per-class difference
``other - report``, so a better macro-F1 that hides a class that got worse is visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd

from llmos_lab import plots
from llmos_lab.errors import ArgumentTypeError, ConfigError
from llmos_lab.metrics import ClassificationReport

from ._render import View, html_table, new_figure

METRICS = ("precision", "recall", "f1")
AVERAGES = ("macro avg", "weighted avg")
ANNOTATE_UP_TO = 20  # classes; more cells than this are unreadable with numbers in them


class ReportView(View):
    """``.table`` (HTML, colour-scaled per-class metrics and, with ``other``, their
    differences), a chart of confusion heat map(s) and per-class F1 (or its change), and
    ``.normalize`` (Checkbox: heat maps as row-normalised recall or as counts)."""

    dom_class = "llmos-report-view"

    def __init__(self, report: ClassificationReport, other: ClassificationReport | None = None,
                 *, names: Sequence[str] = ("A", "B")):
        super().__init__()
        for i, r in enumerate((report, other)):
            if (i == 0 or r is not None) and not isinstance(r, ClassificationReport):
                raise ArgumentTypeError("report", r, "a ClassificationReport (from "
                                        "trainer.evaluate or ClassificationReport.from_labels)")
        if len(names) < (2 if other is not None else 1):
            raise ConfigError("names", list(names), "one per report")
        self.report, self.other, self.names = report, other, list(names)
        self.normalize = widgets.Checkbox(value=True, description="normalise rows (recall)",
                                          indent=False)
        self.normalize.observe(lambda _: self.refresh(), names="value")
        self.table = widgets.HTML()
        self.children = [self.image, self.normalize, self.table]
        self.refresh()

    @property
    def reports(self) -> list[tuple[str, ClassificationReport]]:
        pairs = [(self.names[0], self.report)]
        if self.other is not None:
            pairs.append((self.names[1], self.other))
        return pairs

    def difference(self) -> pd.DataFrame:
        """Per class (and averages): ``other - report`` for precision, recall, F1, support."""
        if self.other is None:
            raise ConfigError("other", None, "a second report: difference() needs one")
        a, b = self.report.table, self.other.table
        averages = [i for i in dict.fromkeys([*a.index, *b.index]) if i in AVERAGES]
        index = [*dict.fromkeys([*self.report.labels, *self.other.labels]), *averages]
        return b.reindex(index)[[*METRICS, "support"]] - a.reindex(index)[[*METRICS,
                                                                             "support"]]

    # ------------------------------------------------------------------ drawing

    def _state_key(self):
        return ("normalize", self.normalize.value)  # reports are immutable

    def _draw(self):
        pairs = self.reports
        n = max(len(r.confusion) for _, r in pairs)
        side = min(6.0, 2.2 + 0.35 * n)
        fig = new_figure(side * len(pairs) + 4.0, side)
        axes = fig.subplots(1, len(pairs) + 1, squeeze=False,
                            gridspec_kw={"width_ratios": [side] * len(pairs) + [4.0]})[0]
        for ax, (name, report) in zip(axes, pairs, strict=False):
            self._heatmap(ax, name, report)
        if self.other is None:
            self._f1_bars(axes[-1])
        else:
            self._difference_bars(axes[-1])
        title = " vs ".join(f"{name}: accuracy {r.accuracy:.3f}, macro-F1 {r.macro_f1:.3f}"
                            for name, r in pairs)
        fig.suptitle(title, fontsize=11)
        return fig

    def _heatmap(self, ax: Any, name: str, report: ClassificationReport) -> None:
        plots.confusion_heatmap(ax, report.confusion, self.normalize.value,
                                annotate_up_to=ANNOTATE_UP_TO, colorbar=True)
        ax.set_title(f"{name}: confusion", fontsize=10, loc="left")

    def _f1_bars(self, ax: Any) -> None:
        t = self.report.table.drop(index=list(AVERAGES), errors="ignore")
        y = np.arange(len(t))
        for k, metric in enumerate(METRICS):
            ax.barh(y + (k - 1) * 0.27, t[metric], height=0.27, label=metric, color=f"C{k}")
        ax.set_yticks(y, t.index, fontsize=8)
        ax.set_ylim(len(t) - 0.5, -0.5)
        ax.set_xlim(0, 1)
        ax.set_xlabel("score")
        ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  ncols=3)
        ax.set_title("per class", fontsize=10, loc="left")

    def _difference_bars(self, ax: Any) -> None:
        d = self.difference()
        y = np.arange(len(d))
        for k, metric in enumerate(METRICS):
            values = d[metric].fillna(0.0)
            ax.barh(y + (k - 1) * 0.27, values, height=0.27, label=metric, color=f"C{k}")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, d.index, fontsize=8)
        ax.set_ylim(len(d) - 0.5, -0.5)
        reach = max(0.05, float(np.nanmax(np.abs(d[list(METRICS)].to_numpy()))) * 1.1) \
            if len(d) else 0.05
        ax.set_xlim(-reach, reach)
        ax.set_xlabel(f"{self.names[1]} - {self.names[0]}")
        ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  ncols=3)
        ax.set_title("per-class change", fontsize=10, loc="left")

    # ------------------------------------------------------------------ text

    def table_frame(self) -> pd.DataFrame:
        """The table ``.table`` shows: metrics per class, per report, and their change."""
        if self.other is None:
            return self.report.table[[*METRICS, "support"]]
        a, b = self.names[0], self.names[1]
        d = self.difference()
        parts = {f"{m} {a}": self.report.table[m] for m in METRICS}
        parts.update({f"{m} {b}": self.other.table[m] for m in METRICS})
        parts.update({f"Δ {m}": d[m] for m in METRICS})
        parts["support"] = self.report.table["support"]
        return pd.DataFrame(parts).reindex(d.index)

    def _table_html(self) -> str:
        frame = self.table_frame()
        scales: dict[str, tuple[float, float, str]] = {}
        formats = {c: ".3f" for c in frame.columns if c != "support"}
        for c in frame.columns:
            if c.startswith("Δ"):
                reach = max(0.05, float(np.nanmax(np.abs(frame[c].to_numpy(dtype=float)))))
                scales[c] = (-reach, reach, "RdYlGn")
                formats[c] = "+.3f"
            elif c != "support":
                scales[c] = (0.0, 1.0, "RdYlGn")
        head = " · ".join(f"<b>{n}</b> accuracy {r.accuracy:.4f}, macro-F1 {r.macro_f1:.4f}"
                          for n, r in self.reports)
        return f"<div>{head}</div>" + html_table(frame, scales, formats)

    def _panels(self) -> None:
        self.table.value = self._table_html()

    def _summary(self) -> list[str]:
        pairs = self.reports
        lines = ["ReportView: " + "; ".join(
            f"{n} accuracy {r.accuracy:.4f}, macro-F1 {r.macro_f1:.4f}" for n, r in pairs)]
        if self.other is None:
            for cls, row in self.report.table.iterrows():
                lines.append(f"  {cls}: precision {row['precision']:.3f}, recall "
                             f"{row['recall']:.3f}, f1 {row['f1']:.3f}, support "
                             f"{int(row['support'])}")
            return lines
        lines.append(f"  change ({self.names[1]} - {self.names[0]}): accuracy "
                     f"{self.other.accuracy - self.report.accuracy:+.4f}, macro-F1 "
                     f"{self.other.macro_f1 - self.report.macro_f1:+.4f}")
        frame = self.table_frame()
        a, b = self.names[0], self.names[1]
        for cls, row in frame.iterrows():
            lines.append(f"  {cls}: f1 {row[f'f1 {a}']:.3f} -> {row[f'f1 {b}']:.3f} "
                         f"({row['Δ f1']:+.3f})")
        return lines

    def _html(self) -> str:
        return self._table_html()
