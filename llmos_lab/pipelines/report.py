"""The morning report: one self-contained HTML file (images inline) and a short Markdown one.

What a person reads first: every gated metric against its baseline (worse in red, better in
green, with the interval), a chart per gated metric over the last nights, the failures with
their reason and cell, the slowest cells and the peak memory per run. ``report.md`` is short
enough to paste into a pull request.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

import pandas as pd

from .. import _io
from ..units import format_bytes
from .database import DEFAULT_DB, ResultsDB

COLOURS = {"worse": "#fbd5d5", "better": "#d5f5dd", "missing": "#fde9c8"}
NIGHTS_SHOWN = 14


def write_report(db: str | os.PathLike = DEFAULT_DB, out: str | os.PathLike = "report.html",
                 *, night: int | None = None, verdicts: pd.DataFrame | None = None
                 ) -> list[Path]:
    """Write ``out`` (HTML) and its ``.md`` sibling for ``night`` (the latest by default);
    both atomically. Returns their paths."""
    store = ResultsDB(db, create=False)
    night = night if night is not None else store.latest_night()
    out = Path(out)
    if night is None:
        text = "<p>The results database has no nights yet: run <code>llmos-lab nightly " \
               "SUITE</code> first.</p>"
        return [_io.write_text(out, _page("no nights yet", text)),
                _io.write_text(out.with_suffix(".md"), "No nights in the results database "
                               "yet.\n")]
    info = store.nights().set_index("night").loc[night]
    runs = store.runs(night)
    verdicts = verdicts if verdicts is not None else _stored_verdicts(store, night, info)
    body = "".join([_header(night, info, runs), _verdict_table(verdicts),
                    _charts(store, info["suite"], verdicts), _failures(runs),
                    _slowest_cells(runs), _memory(runs)])
    title = f"{info['suite']} night {night}: {info['status']}"
    return [_io.write_text(out, _page(title, body)),
            _io.write_text(out.with_suffix(".md"), markdown(night, info, runs, verdicts))]


def _stored_verdicts(store: ResultsDB, night: int, info: pd.Series) -> pd.DataFrame:
    """Re-judge a past night against what its own baseline would be, from its suite file."""
    from . import gate
    from .suite import load_suite

    try:
        suite = load_suite(info["suite_file"])
    except Exception:  # the suite file moved or changed: report without a gate
        return pd.DataFrame(columns=gate.COLUMNS)
    reference = gate.reference(store, info["suite"], night, info.get("baseline") or "last")
    return gate.compare(store.metrics(night), reference, suite.gates())


def _page(title: str, body: str) -> str:
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:3px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}"
             "code{background:#f3f3f3;padding:0 3px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"{body}</body></html>")


def _header(night: int, info: pd.Series, runs: pd.DataFrame) -> str:
    counts = runs["status"].value_counts().to_dict()
    versions = json.loads(info["versions"] or "{}")
    return (f"<p>suite <b>{html.escape(str(info['suite']))}</b>, night {night}, commit "
            f"<code>{html.escape(str(info['git_commit'] or 'unknown'))[:12]}</code>, "
            f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) +
            f"; baseline: {html.escape(str(info['baseline'] or 'none'))}. Versions: "
            + ", ".join(f"{k} {v}" for k, v in versions.items()) + "</p>")


def _verdict_table(verdicts: pd.DataFrame) -> str:
    if verdicts.empty:
        return "<h2>Gate</h2><p>No gated metrics.</p>"
    rows = []
    for r in verdicts.itertuples():
        colour = COLOURS.get(str(r.verdict).split(" ")[0], "")
        interval = "" if pd.isna(r.ci_low) else f"[{r.ci_low:+.4g}, {r.ci_high:+.4g}]"
        cells = [r.key, r.metric, r.verdict, _num(r.baseline), _num(r.current),
                 _num(r.difference, "+.4g"), interval, _num(r.tolerance),
                 f"{_count(r.n_current)} / {_count(r.n_baseline)}",
                 "higher" if r.higher_is_better else "lower"]
        rows.append(f"<tr style='background:{colour}'>" + "".join(
            f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    head = ["configuration", "metric", "verdict", "baseline", "tonight", "difference",
            "95% interval", "tolerance", "runs (tonight / baseline)", "better is"]
    return ("<h2>Gate</h2><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
            + "".join(rows) + "</table>")


def _num(value, fmt: str = ".4g") -> str:
    return "" if value is None or pd.isna(value) else format(float(value), fmt)


def _count(value) -> str:
    return "0" if value is None or pd.isna(value) else str(int(value))


def _charts(store: ResultsDB, suite: str, verdicts: pd.DataFrame) -> str:
    """Per gated metric: each night's values (dots) and mean (line) over the last nights."""
    if verdicts.empty:
        return ""
    from .. import plots  # matplotlib: only for a report with gated metrics

    nights = store.nights(suite).tail(NIGHTS_SHOWN)["night"].tolist()
    history = pd.concat([store.metrics(n).assign(night=n) for n in nights], ignore_index=True)
    images = []
    for r in verdicts.drop_duplicates(["key", "metric"]).itertuples():
        rows = history[(history["key"] == r.key) & (history["metric"] == r.metric)]
        if rows.empty:
            continue
        fig = plots.new_figure(5.5, 2.6, dpi=90)
        ax = fig.subplots()
        history_chart(ax, rows, f"{r.metric} · {r.key}", r.baseline, r.tolerance)
        images.append(_img(plots.Display(ax)._repr_png_()))
    return "<h2>Over the last nights</h2>" + "".join(images)


def history_chart(ax, rows: pd.DataFrame, title: str, baseline: float | None = None,
                  tolerance: float | None = None, colour: str = "C0") -> None:
    """One metric over nights: every run's value (dots), each night's mean (line) and the
    baseline's band. The report and ResultsView both draw with this."""
    from matplotlib.ticker import MaxNLocator

    ax.plot(rows["night"], rows["value"], "o", alpha=0.5, color=colour)
    means = rows.groupby("night")["value"].mean()
    ax.plot(means.index, means.values, "-", color=colour, label="mean")
    if baseline is not None and not pd.isna(baseline):
        width = 0.0 if tolerance is None or pd.isna(tolerance) else tolerance
        ax.axhspan(baseline - width, baseline + width, color="C2", alpha=0.2,
                   label="baseline ± tolerance")
    ax.set_title(title[:80], fontsize=9, loc="left")
    ax.set_xlabel("night")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, frameon=False)


def _img(png: bytes) -> str:
    return f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}'/>"


def _failures(runs: pd.DataFrame) -> str:
    bad = runs[runs["status"] != "ok"]
    if bad.empty:
        return "<h2>Failures</h2><p>None.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(r.run_id)}</td><td>{html.escape(str(r.status))}</td>"
        f"<td>{html.escape(str(r.reason))}</td><td>{'' if pd.isna(r.cell) else int(r.cell)}"
        f"</td><td><code>{html.escape(str(r.cell_source or ''))}</code></td>"
        f"<td>{int(r.attempts or 0)}</td><td>{html.escape(str(r.output or ''))}</td></tr>"
        for r in bad.itertuples())
    return ("<h2>Failures</h2><table><tr><th>run</th><th>status</th><th>reason</th>"
            "<th>cell</th><th>its first line</th><th>attempts</th><th>notebook kept</th></tr>"
            + rows + "</table>")


def _slowest_cells(runs: pd.DataFrame, n: int = 10) -> str:
    cells = [(r.run_id, i, s) for r in runs.itertuples()
             for i, s in enumerate(json.loads(r.cell_seconds) if isinstance(r.cell_seconds, str)
                                   else []) if s is not None]
    if not cells:
        return ""
    cells.sort(key=lambda c: -c[2])
    rows = "".join(f"<tr><td>{html.escape(run)}</td><td>{i}</td><td>{s:.2f}</td></tr>"
                   for run, i, s in cells[:n])
    return ("<h2>Slowest cells</h2><table><tr><th>run</th><th>code cell</th><th>seconds</th>"
            "</tr>" + rows + "</table>")


def _memory(runs: pd.DataFrame) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(r.run_id)}</td><td>"
        f"{'' if pd.isna(r.peak_memory) else format_bytes(int(r.peak_memory))}</td>"
        f"<td>{_num(r.seconds, '.1f')}</td></tr>" for r in runs.itertuples())
    return ("<h2>Peak memory per run</h2><table><tr><th>run</th><th>kernel peak RSS</th>"
            "<th>seconds</th></tr>" + rows + "</table>")


def markdown(night: int, info: pd.Series, runs: pd.DataFrame, verdicts: pd.DataFrame) -> str:
    """A few lines for a pull request: status, regressions, failures."""
    lines = [f"**{info['suite']} night {night}: {info['status']}** ({len(runs)} runs, "
             f"{int((runs['status'] == 'ok').sum())} ok)", ""]
    notable = verdicts[verdicts["verdict"] != "ok"] if not verdicts.empty else verdicts
    if len(notable):
        lines += ["| configuration | metric | verdict | baseline | tonight |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r.key} | {r.metric} | {r.verdict} | {_num(r.baseline)} | "
                  f"{_num(r.current)} |" for r in notable.itertuples()]
    for r in runs[runs["status"] != "ok"].itertuples():
        lines.append(f"- {r.run_id}: {r.status}: {r.reason}")
    if not len(notable) and (runs["status"] == "ok").all():
        lines.append("Every gated metric within its tolerance; no failed runs.")
    return "\n".join(lines) + "\n"


__all__ = ["markdown", "write_report"]
