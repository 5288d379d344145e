"""Notebook views over the core (installed as ``llmos_lab.widgets``).

Imports flow one way: these modules import ``llmos_lab``; the core never imports them. Each view
is an ``ipywidgets.VBox`` that follows ``llmos_lab.events`` (live while the work runs, on any
thread), redraws at most four times a second, and keeps a static PNG, HTML and text in its
mimebundle so notebooks run by papermill stay readable:

- :class:`AllocationView` (an Allocator): grants against capacity, policy and sliders;
- :class:`SchedulerView` (a Scheduler or SimulationResult, or two): Gantt chart and shares;
- :class:`TrainingDashboard` (Trainers): live curves, progress, ETA and a Stop button;
- :class:`ReportView` (ClassificationReports): per-class table, confusion, differences;
- :class:`KernelMonitor` (a ModelKernel): models by state against the budget, actions;
- :class:`ResultsView` (a results database): a metric over the nights, a night's runs;
- :class:`AgentView` (an agent Runtime): messages between agents, each agent's syscalls.

Views load on first use, so importing this package stays as light as the core.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AllocationView": "allocation",
    "SchedulerView": "scheduler",
    "TrainingDashboard": "training",
    "ReportView": "report",
    "KernelMonitor": "kernel",
    "ResultsView": "results",
    "AgentView": "agents",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'llmos_lab.widgets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
