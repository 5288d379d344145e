"""Notebooks as parametrised pipelines: papermill runs them, ``record`` reports from inside.

``record(name, value)`` inside a notebook displays a small JSON output under a MIME type of our
own; ``run`` executes the notebook with papermill (working directory: the notebook's folder),
reads those outputs back from the executed copy and returns them in a :class:`RunResult`.
The executed notebook is written under a temporary name and renamed when the run succeeds; a
failed run is kept as ``<name>.failed.ipynb`` for inspection and raises
:class:`~llmos_lab.errors.NotebookExecutionError`.
"""

from __future__ import annotations

import ast
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NotebookExecutionError, ParameterError

RECORD_MIME = "application/vnd.llmos-lab.record+json"
_records: dict[str, Any] = {}


def record(name: str, value: Any) -> Any:
    """Report a scalar result of this notebook (or script) so a pipeline can collect it.

    Values must be JSON numbers, strings, booleans or None; numpy scalars are converted.
    Returns the value, so ``acc = lab.record("accuracy", report.accuracy)`` reads naturally.
    """
    if not isinstance(name, str) or not name:
        raise ParameterError(f"record name must be a non-empty string, got {name!r}")
    value = _plain(name, value)
    _records[name] = value
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - IPython is a dependency
        shell = None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        from IPython.display import display

        display({RECORD_MIME: {"name": name, "value": value},
                 "text/plain": f"{name} = {value!r}"}, raw=True)
    return value


def records() -> dict[str, Any]:
    """What ``record`` has collected in this process."""
    return dict(_records)


def _plain(name: str, value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParameterError(f"record {name!r}: {value} is not a finite number")
        return value
    raise ParameterError(f"record {name!r}: expected a number, string, bool or None, "
                         f"got {type(value).__name__}")


@dataclass
class RunResult:
    notebook: Path
    output: Path
    parameters: dict[str, Any]
    records: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __repr__(self) -> str:
        recs = ", ".join(f"{k}={v!r}" for k, v in self.records.items())
        return f"RunResult({self.notebook.name} -> {self.output}, {self.seconds:.1f}s, {recs})"


def parameters(notebook: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares in its ``parameters`` cell (papermill's view)."""
    import papermill

    path = _existing(notebook)
    return papermill.inspect_notebook(str(path))


def run(notebook: str | os.PathLike, params: dict[str, Any] | None = None,
        output_dir: str | os.PathLike = "runs", *, output_name: str | None = None,
        progress: bool = False, timeout: float | None = None) -> RunResult:
    """Execute ``notebook`` with ``params`` and return what it recorded.

    Parameters the notebook does not declare raise :class:`ParameterError` before anything
    runs; string values (from the command line) are converted to the declared type.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    path = _existing(notebook)
    params = coerce_parameters(path, params or {})
    out_dir = Path(output_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    name = output_name or path.name
    final = out_dir / name
    partial = out_dir / f".{Path(name).stem}.partial.ipynb"
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(path), str(partial), parameters=params, cwd=str(path.parent),
            progress_bar=progress, execution_timeout=timeout,
        )
    except PapermillExecutionError as exc:
        failed = out_dir / f"{Path(name).stem}.failed.ipynb"
        os.replace(partial, failed)
        raise NotebookExecutionError(str(path), str(failed),
                                     f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}") from exc
    os.replace(partial, final)
    return RunResult(path, final, params, read_records(final), time.perf_counter() - started)


def read_records(executed: str | os.PathLike) -> dict[str, Any]:
    """Recorded values from an executed notebook, in the order recorded (last one wins)."""
    nb = json.loads(Path(executed).read_text(encoding="utf-8"))
    found: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get(RECORD_MIME)
            if isinstance(data, str):
                data = json.loads(data)
            if data:
                found[data["name"]] = data["value"]
    return found


def coerce_parameters(notebook: str | os.PathLike, params: dict[str, Any]) -> dict[str, Any]:
    declared = parameters(notebook)
    out = {}
    for key, value in params.items():
        if key not in declared:
            raise ParameterError(
                f"{Path(notebook).name} declares no parameter {key!r}; "
                f"its parameters are: {', '.join(declared) or '(none)'}")
        out[key] = _coerce(key, value, _declared_type(declared[key]))
    return out


def _declared_type(info: dict[str, Any]) -> str:
    """papermill's inferred type (from a type hint), else the type of the default literal."""
    hinted = info.get("inferred_type_name", "None")
    if hinted != "None":
        return hinted
    try:
        return type(ast.literal_eval(info.get("default", ""))).__name__
    except (ValueError, SyntaxError):
        return "None"


def _coerce(key: str, value: Any, declared: str) -> Any:
    if not isinstance(value, str) or declared == "str":
        return value
    try:
        if declared == "int":
            return int(value)
        if declared == "float":
            return float(value)
        if declared == "bool":
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
            raise ValueError(value)
    except ValueError:
        raise ParameterError(f"parameter {key!r} is declared {declared}; "
                             f"{value!r} is not a {declared}") from None
    try:  # undeclared type (default None, a list, ...): a Python literal, else the string
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _existing(notebook: str | os.PathLike) -> Path:
    path = Path(notebook)
    if path.suffix != ".ipynb" or not path.is_file():
        raise ParameterError(f"notebook {str(path)!r} does not exist or is not an .ipynb file")
    return path.resolve()
