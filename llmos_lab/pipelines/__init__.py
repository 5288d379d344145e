"""Notebooks as pipelines: one run (papermill), and nightly suites of runs with a results
database, baselines that gate, and a morning report.

``execute.py`` runs one notebook and reads back what it ``record``-ed; ``suite.py`` reads and
validates a suite file and expands its grid and seeds; ``nightly.py`` executes the runs as
processes of our own OS (admitted by the Allocator against their memory, retried when a
kernel dies); ``database.py`` is the SQLite results database; ``gate.py`` compares a night
with a baseline, knowing about noise; ``report.py`` writes the HTML and Markdown report.
(Module names differ from the functions they hold, so ``pipelines.run`` and
``pipelines.results`` are always the functions.)
"""

from __future__ import annotations

import importlib
from typing import Any

from .execute import (
    RECORD_MIME,
    RunResult,
    coerce_parameters,
    parameters,
    read_records,
    record,
    records,
    run,
    write_notebook,
)

_LAZY = {"results": "database", "ResultsDB": "database", "DEFAULT_DB": "database",
         "Suite": "suite",
         "load_suite": "suite", "run_suite": "nightly", "compare": "gate",
         "write_report": "report"}

__all__ = ["RECORD_MIME", "RunResult", "coerce_parameters", "parameters", "read_records",
           "record", "records", "run", "write_notebook", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'llmos_lab.pipelines' has no attribute {name!r}")
