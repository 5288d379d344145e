"""AgentView: a live sequence diagram of the messages between agents above a timeline of each
agent's syscalls (running its program, waiting on a model, in a tool, blocked)."""

from __future__ import annotations

import ipywidgets as widgets

from llmos_lab.agents import Runtime
from llmos_lab.errors import ArgumentTypeError

from ._render import View, html_table

KINDS = {"running": "#2ca02c", "model": "#1f77b4", "tool": "#ff7f0e", "blocked": "#c7c7c7"}
MAX_ARROWS = 400  # the newest messages, so a long run stays drawable


class AgentView(View):
    """``.table`` (HTML) is ``runtime.ps()``; the chart follows the runtime's rounds."""

    dom_class = "llmos-agent-view"

    def __init__(self, runtime: Runtime):
        super().__init__()
        if not isinstance(runtime, Runtime):
            raise ArgumentTypeError("runtime", runtime, "a llmos_lab.agents.Runtime")
        self.runtime = runtime
        self.table = widgets.HTML()
        self.children = [self.image, self.table]
        self._listen("agents.round", lambda e: e.payload["runtime"] is runtime)
        self.refresh()

    def _draw(self):
        ps, log, spans = self.runtime.ps(), self.runtime.messages(), self.runtime.timeline()
        names = list(ps["name"]) if len(ps) else []
        fig, axes = self._subplots(8.0, 5.2, 2, 1, height_ratios=[1.3, 1.0])
        seq, lanes = axes[0, 0], axes[1, 0]
        if not names:
            seq.text(0.5, 0.5, "no agents yet", ha="center", transform=seq.transAxes)
            return fig
        where = {name: i for i, name in enumerate(names)}
        start = min([*spans["start"], *log["time"]], default=0.0)
        end = max([*spans["end"], *log["time"], start + 1e-3])
        seq.vlines(range(len(names)), start, end, colors="#bbbbbb", linestyles=":",
                   linewidth=0.8)
        for m in log.tail(MAX_ARROWS).itertuples():
            if m.sender in where and m.receiver in where:
                seq.annotate("", xy=(where[m.receiver], m.time), xytext=(where[m.sender], m.time),
                             arrowprops={"arrowstyle": "->", "color": "#1f77b4", "lw": 0.7})
        seq.set_xticks(range(len(names)), names, fontsize=8,
                       rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6
                       else "center")
        seq.set_xlim(-0.5, len(names) - 0.5)
        seq.set_ylim(end, start)
        seq.set_ylabel("seconds")
        seq.set_title(f"messages ({len(log)})", fontsize=10, loc="left")
        for kind, colour in KINDS.items():
            part = spans[spans["kind"] == kind]
            for name, rows in part.groupby("agent"):
                if name in where:
                    lanes.broken_barh(list(zip(rows["start"], rows["end"] - rows["start"],
                                               strict=True)),
                                      (where[name] - 0.4, 0.8), facecolors=colour, label=kind)
        handles = {h.get_label(): h for h in lanes.containers or lanes.collections}
        if handles:
            lanes.legend(handles.values(), handles.keys(), fontsize=7, loc="upper right")
        lanes.set_yticks(range(len(names)), names, fontsize=8)
        lanes.set_xlim(start, end)
        lanes.set_xlabel("seconds")
        lanes.set_title("syscalls", fontsize=10, loc="left")
        return fig

    def _summary(self) -> list[str]:
        ps = self.runtime.ps()
        lines = [f"AgentView: {len(ps)} agents, {len(self.runtime.messages())} messages, "
                 f"{len(self.runtime.audit())} denied syscalls"]
        for row in ps.itertuples():
            waiting = f" (waiting on {row.waiting_on})" if row.waiting_on else ""
            lines.append(f"  {row.name}: {row.state}{waiting}, {row.syscalls} syscalls, "
                         f"{row.tokens} tokens")
        return lines

    def _panels(self) -> None:
        ps = self.runtime.ps()
        if len(ps):
            table = ps.set_index("name")[["state", "waiting_on", "syscalls", "tokens",
                                          "blocked_seconds", "turnaround_seconds"]]
            self.table.value = html_table(table, formats={"blocked_seconds": ".2f",
                                                          "turnaround_seconds": ".2f"})

    def _html(self) -> str:
        return self.table.value
