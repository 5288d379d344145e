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
import contextlib
import functools
import json
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _io
from ..errors import NotebookError, NotebookExecutionError, OutputError, ParameterError

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
    peak_memory: int | None = None  # bytes: the kernel process's largest RSS, sampled
    cell_seconds: list[float] = field(default_factory=list)  # papermill's per-cell durations

    def __repr__(self) -> str:
        recs = ", ".join(f"{k}={v!r}" for k, v in self.records.items())
        return f"RunResult({self.notebook.name} -> {self.output}, {self.seconds:.1f}s, {recs})"


def parameters(notebook: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares in its ``parameters`` cell (papermill's view).
    Read once per version of the file: a suite of N runs of one notebook checks it once."""
    path = _existing(notebook)
    stat = path.stat()
    return dict(_inspect(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=64)
def _inspect(path: str, mtime_ns: int, size: int) -> dict[str, dict[str, Any]]:
    import papermill

    return papermill.inspect_notebook(path)


def run(notebook: str | os.PathLike, params: dict[str, Any] | None = None,
        output_dir: str | os.PathLike = "runs", *, output_name: str | None = None,
        progress: bool = False, timeout: float | None = None,
        deadline: float | None = None) -> RunResult:
    """Execute ``notebook`` with ``params`` and return what it recorded.

    Everything is checked before a kernel starts: the notebook (a readable .ipynb), the
    parameters (declared by the notebook, values of the declared type; strings from the
    command line are converted), the output folder (writable, not a file) and the output name
    (a file name that does not replace the source notebook). ``timeout`` is seconds per cell.
    ``deadline`` is seconds for the whole run: past it the kernel is killed and the run
    fails as a timeout (a nightly suite uses it so that no run can hang the night).
    A failed run (an exception in a cell, a cell timeout, a dead kernel) raises
    :class:`NotebookExecutionError` naming the cell and keeps ``NAME.failed.ipynb``.
    """
    import papermill

    path = _existing(notebook)
    if params is not None and not isinstance(params, Mapping):
        raise ParameterError(f"params must be a dict of parameter name to value, got "
                             f"{type(params).__name__}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0 or not math.isfinite(timeout)):
        raise ParameterError(f"timeout must be None or a number of seconds > 0, got {timeout!r}")
    params = coerce_parameters(path, dict(params or {}))
    final = _output_path(path, output_dir, output_name)
    failed = final.with_name(f"{final.stem}.failed.ipynb")
    _io.clean_stale(final.parent, final.name)  # what a killed run of this notebook left
    partial = _io.temporary_name(final, ".ipynb")
    manager, watched = _watched_kernel_manager(cwd=str(path.parent))
    started = time.perf_counter()
    sampler = _PeakMemory(watched, deadline=deadline)
    try:
        with sampler:
            papermill.execute_notebook(
                str(path), str(partial), parameters=params,
                progress_bar=progress, execution_timeout=timeout, kernel_manager_class=manager,
            )
    except Exception as exc:
        kind, cell, source, cause = _failure(exc, partial, watched, timeout)
        kept = "(nothing was written)"
        if partial.exists():
            kept = str(_io.move(partial, failed))
        raise NotebookExecutionError(str(path), kept, cause, kind=kind, cell=cell,
                                     source=source) from exc
    except BaseException:  # Ctrl-C: no partial file left behind
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    _io.move(partial, final)
    with contextlib.suppress(OSError):
        failed.unlink()  # an earlier failure of this run is stale now
    return RunResult(path, final, params, read_records(final), time.perf_counter() - started,
                     sampler.peak, cell_seconds(final))


def _output_path(source: Path, output_dir: str | os.PathLike, name: str | None) -> Path:
    """The executed notebook's path, checked; its folder is created."""
    if name is not None and (not isinstance(name, str) or Path(name).name != name
                             or name in ("", ".", "..") or not name.endswith(".ipynb")):
        raise ParameterError(f"output_name must be a file name ending in .ipynb, inside the "
                             f"output folder, got {name!r}")
    out_dir = _io.writable_folder(Path(output_dir).resolve())
    final = out_dir / (name or source.name)
    if final == source:
        raise OutputError(final, f"the executed notebook would replace its source "
                          f"{str(source)!r}; choose another output folder or output_name")
    if final.is_dir():
        raise OutputError(final, f"{str(final)!r} is a folder; choose another output_name")
    return final


def _watched_kernel_manager(cwd: str | None = None):
    """A kernel manager class that starts its kernel in ``cwd`` and notes the kernel's pid
    and how its process ended. (papermill's own ``cwd=`` would ``os.chdir`` the whole
    process, which runs on several threads in a nightly suite: each kernel gets its working
    directory at launch instead.)"""
    from jupyter_client import AsyncKernelManager

    watched: dict[str, Any] = {}

    class Watched(AsyncKernelManager):
        async def _async_pre_start_kernel(self, **kw: Any):
            if cwd is not None:
                kw.setdefault("cwd", cwd)
            return await super()._async_pre_start_kernel(**kw)

        async def _async_post_start_kernel(self, **kw: Any) -> None:
            await super()._async_post_start_kernel(**kw)
            process = getattr(self.provisioner, "process", None)
            watched["pid"] = getattr(process, "pid", None)

        post_start_kernel = _async_post_start_kernel

        async def _async_is_alive(self) -> bool:
            alive = await super()._async_is_alive()
            process = getattr(self.provisioner, "process", None)
            if not alive and process is not None and "returncode" not in watched:
                watched["returncode"] = process.poll()
            return alive

        is_alive = _async_is_alive  # the client calls one name, nbclient the other

    return Watched, watched


class _PeakMemory:
    """Samples the kernel process's RSS (and its children's) on a thread while a run goes."""

    def __init__(self, watched: dict[str, Any], every: float = 0.1,
                 deadline: float | None = None):
        self.watched, self.every, self.peak, self.deadline = watched, every, None, deadline
        self._done = threading.Event()
        self._started = time.monotonic()

    def __enter__(self) -> _PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True, name="peak-memory")
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        while True:
            pid = self.watched.get("pid")
            if pid is not None:
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(pid)
                    rss = proc.memory_info().rss + sum(
                        c.memory_info().rss for c in proc.children(recursive=True))
                    self.peak = max(self.peak or 0, rss)
                    if self.deadline is not None and \
                            time.monotonic() - self._started > self.deadline:
                        self.watched["deadline"] = self.deadline
                        proc.kill()  # nbclient sees a dead kernel; _failure says why
            if self._done.wait(self.every):
                return


def _failure(exc: BaseException, partial: Path, watched: dict[str, Any],
             timeout: float | None) -> tuple[str, int | None, str | None, str]:
    """(kind, cell index, the cell's first source line, one line of what went wrong)."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    index, source = _running_cell(partial)
    where = "start-up" if index is None else \
        f"cell {index} ({source[:60]!r})" if source else f"cell {index}"
    if isinstance(exc, PapermillExecutionError):
        return "error", index, source, f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
    if isinstance(exc, CellTimeoutError):
        return "timeout", index, source, f"{where} timed out after {timeout:g} s (timeout " \
            f"per cell)"
    if isinstance(exc, DeadKernelError) and "deadline" in watched:
        return "timeout", index, source, f"the run passed its time limit of " \
            f"{watched['deadline']:g} s during {where}; the kernel was stopped"
    if isinstance(exc, DeadKernelError):
        code = watched.get("returncode")
        how = f"killed by {signal.Signals(-code).name}" if isinstance(code, int) and code < 0 \
            else f"exit status {code}" if code is not None else "it stopped answering"
        hint = " (out of memory?)" if code == -signal.SIGKILL else ""
        return "dead", index, source, f"the kernel died during {where}: {how}{hint}"
    return "error", index, source, f"{where}: {type(exc).__name__}: {exc}"


def _running_cell(partial: Path) -> tuple[int | None, str | None]:
    """The last cell that began (the one that never ended), and its first source line."""
    try:
        nb = json.loads(partial.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    started = [(i, c) for i, c in enumerate(nb.get("cells", []))
               if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    if not started:
        return None, None
    index, cell = started[-1]
    source = "".join(cell.get("source", "")).strip().splitlines()
    return index, (source[0] if source else None)


def cell_seconds(executed: str | os.PathLike) -> list[float]:
    """papermill's duration of every code cell of an executed notebook (None: not run)."""
    nb = json.loads(Path(executed).read_text(encoding="utf-8"))
    return [c.get("metadata", {}).get("papermill", {}).get("duration")
            for c in nb.get("cells", []) if c.get("cell_type") == "code"]


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
    if not isinstance(value, str):
        return _checked_value(key, value, declared)
    if declared == "str":
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


def _checked_value(key: str, value: Any, declared: str) -> Any:
    """A non-string value must already be of the declared type (an int may stand for a
    float); a float is never silently cut to an int."""
    ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": lambda v: isinstance(v, bool),
          "str": lambda v: False}.get(declared)
    if ok is not None and not ok(value):
        raise ParameterError(f"parameter {key!r} is declared {declared}; {value!r} is a "
                             f"{type(value).__name__}")
    return float(value) if declared == "float" else value


def _existing(notebook: str | os.PathLike) -> Path:
    if not isinstance(notebook, (str, os.PathLike)):
        raise ParameterError(f"notebook must be a path to an .ipynb file, got "
                             f"{type(notebook).__name__}")
    path = Path(notebook)
    if path.suffix != ".ipynb" or not path.is_file():
        raise ParameterError(f"notebook {str(path)!r} does not exist or is not an .ipynb file")
    stat = path.stat()
    _readable(str(path), stat.st_mtime_ns, stat.st_size)
    return path.resolve()


@functools.lru_cache(maxsize=64)
def _readable(path: str, mtime_ns: int, size: int) -> None:
    """Raise NotebookError unless nbformat reads the file (checked once per version)."""
    import nbformat

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nbformat.read(path, as_version=4)
    except Exception as exc:  # NotJSONError, ValidationError, AttributeError for a JSON list...
        raise NotebookError(f"notebook {path!r} cannot be read as a Jupyter notebook: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                            ) from None
