"""A nightly suite file: which notebooks run, over which grid and seeds, gated how.

```yaml
suite: nightly
defaults: {timeout: 900, retries: 1, memory: 1GiB}
runs:
  - notebook: 01_quickstart.ipynb          # relative to the suite file
    grid: {lr: [1e-4, 3e-4]}               # every combination runs
    params: {n_train: 200}                 # the same for every combination
    seeds: [0, 1, 2]                       # repeats, passed as the notebook's `seed`
    gate:
      accuracy: {higher_is_better: true, atol: 0.01}
```

Everything is checked before anything runs, and each error names the file, the line (from
the YAML loader), the run and the key: unknown keys, a missing notebook, a parameter the
notebook does not declare, a value of the wrong type, a gate on a metric the notebook never
records.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LlmosError, SuiteError, did_you_mean
from ..units import parse_bytes
from . import execute

SUITE_KEYS = ("suite", "defaults", "runs")
RUN_KEYS = ("notebook", "name", "grid", "params", "seeds", "gate", "timeout", "retries",
            "memory", "compute")
DEFAULT_KEYS = ("timeout", "retries", "memory", "compute")
GATE_KEYS = ("higher_is_better", "atol", "rtol")
DEFAULTS = {"timeout": 900.0, "retries": 1, "memory": "1GiB", "compute": 1.0}


@dataclass(frozen=True)
class Gate:
    """When a metric counts as worse: beyond ``atol + rtol * |baseline|`` in its direction."""

    metric: str
    higher_is_better: bool = True
    atol: float = 0.0
    rtol: float = 0.0


@dataclass(frozen=True)
class RunSpec:
    """One expanded run: a notebook with its parameters and seed."""

    run_id: str  # unique within the suite: the configuration and the seed
    key: str  # the configuration without the seed: what a baseline is compared by
    notebook: Path
    params: dict[str, Any]
    seed: int | None
    timeout: float
    retries: int
    memory: int
    compute: float
    gates: tuple[Gate, ...] = ()

    @property
    def output_name(self) -> str:
        digest = hashlib.sha1(self.run_id.encode()).hexdigest()[:8]
        return f"{self.notebook.stem}-{digest}.ipynb"


@dataclass
class Suite:
    name: str
    path: Path
    runs: list[RunSpec] = field(default_factory=list)

    def gates(self) -> dict[str, tuple[Gate, ...]]:
        """The gates of each configuration key."""
        return {r.key: r.gates for r in self.runs}

    def table(self):
        import pandas as pd

        return pd.DataFrame([{"run_id": r.run_id, "notebook": r.notebook.name,
                              "params": json.dumps(r.params, sort_keys=True),
                              "seed": "" if r.seed is None else r.seed,
                              "memory": r.memory, "timeout": r.timeout, "retries": r.retries,
                              "gates": ", ".join(g.metric for g in r.gates)}
                             for r in self.runs])


class _Loader:
    """PyYAML's SafeLoader, with each mapping's key lines kept (for error messages)."""

    @staticmethod
    def load(text: str, file: str) -> Any:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        def mapping(loader, node):
            loader.flatten_mapping(node)
            out = _Lines()
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                out[key] = loader.construct_object(value_node, deep=True)
                out.lines[key] = key_node.start_mark.line + 1
            out.line = node.start_mark.line + 1
            return out

        Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
        try:
            return yaml.load(text, Loader=Loader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise SuiteError(file, f"not valid YAML: {getattr(exc, 'problem', exc)}",
                             line=mark.line + 1 if mark else None) from None


class _Lines(dict):
    line: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[Any, int] = {}


def _line(mapping: Any, key: Any = None) -> int | None:
    if isinstance(mapping, _Lines):
        return mapping.lines.get(key, mapping.line) if key is not None else mapping.line
    return None


def load_suite(path: str | os.PathLike) -> Suite:
    """Read, check and expand a suite file; raises SuiteError before anything runs."""
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise SuiteError(file, "no such suite file")
    data = _Loader.load(path.read_text(encoding="utf-8"), file)
    if not isinstance(data, dict):
        raise SuiteError(file, "expected a mapping with 'suite' and 'runs'")
    _known(data, SUITE_KEYS, file, None, "")
    name = data.get("suite")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
        raise SuiteError(file, "'suite' must be a name (letters, digits, _ . -)",
                         line=_line(data, "suite"), key="suite")
    defaults = dict(DEFAULTS)
    given = data.get("defaults") or {}
    if not isinstance(given, dict):
        raise SuiteError(file, "'defaults' must be a mapping", line=_line(data, "defaults"))
    _known(given, DEFAULT_KEYS, file, None, "defaults.")
    defaults.update(given)
    runs = data.get("runs")
    if not isinstance(runs, list) or not runs:
        raise SuiteError(file, "'runs' must be a non-empty list", line=_line(data, "runs"),
                         key="runs")
    suite = Suite(name, path.resolve())
    for index, entry in enumerate(runs, start=1):
        suite.runs.extend(_expand(entry, index, defaults, path, file))
    ids = [r.run_id for r in suite.runs]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise SuiteError(file, f"two runs expand to the same configuration {duplicate!r}; "
                         f"give one a different 'name'")
    return suite


def _known(mapping: dict, keys: tuple[str, ...], file: str, run: str | None,
           prefix: str) -> None:
    for key in mapping:
        if key not in keys:
            raise SuiteError(file, f"unknown key{did_you_mean(str(key), keys)} (known: "
                             f"{', '.join(keys)})", line=_line(mapping, key), run=run,
                             key=prefix + str(key))


def _expand(entry: Any, index: int, defaults: dict, path: Path, file: str) -> list[RunSpec]:
    """One suite entry as its runs: every grid combination times every seed."""
    if not isinstance(entry, dict):
        raise SuiteError(file, "each run must be a mapping with a 'notebook'", run=str(index))
    label = f"{index} ({entry.get('notebook', '?')})"
    _known(entry, RUN_KEYS, file, label, "")
    notebook = _notebook(entry, path, file, label)
    declared = _declared(notebook, file, label)
    grid, params = entry.get("grid") or {}, entry.get("params") or {}
    for what, mapping in (("grid", grid), ("params", params)):
        if not isinstance(mapping, dict):
            raise SuiteError(file, f"'{what}' must be a mapping of parameter to value"
                             f"{'s' if what == 'grid' else ''}", line=_line(entry, what),
                             run=label, key=what)
        for key in mapping:
            if key not in declared:
                raise SuiteError(file, f"{notebook.name} declares no parameter {key!r}"
                                 f"{did_you_mean(str(key), declared)} (its parameters: "
                                 f"{', '.join(declared)})", line=_line(mapping, key),
                                 run=label, key=f"{what}.{key}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SuiteError(file, "a grid value must be a non-empty list",
                             line=_line(grid, key), run=label, key=f"grid.{key}")
    seeds = _seeds(entry, declared, file, label)
    opts = _options(entry, defaults, file, label)
    gates = _gates(entry.get("gate") or {}, notebook, file, label, entry)
    out = []
    for combo in itertools.product(*grid.values()) if grid else [()]:
        chosen = {**params, **dict(zip(grid, combo, strict=True))}
        for seed in seeds:
            given = {**chosen, **({"seed": seed} if seed is not None else {})}
            values = {}
            for key, value in given.items():  # one at a time, so an error names its key
                try:
                    values.update(execute.coerce_parameters(notebook, {key: value}))
                except LlmosError as exc:
                    where = grid if key in grid else params
                    raise SuiteError(file, str(exc), line=_line(where, key) or _line(entry),
                                     run=label, key=key) from None
            config = " ".join(f"{k}={v!r}" for k, v in sorted(values.items())
                              if k != "seed" or seed is None)
            key = f"{entry.get('name') or notebook.stem}" + (f" {config}" if config else "")
            run_id = key + (f" seed={seed}" if seed is not None else "")
            out.append(RunSpec(run_id, key, notebook, values, seed, gates=gates, **opts))
    return out


def _notebook(entry: dict, path: Path, file: str, label: str) -> Path:
    name = entry.get("notebook")
    if not isinstance(name, str) or not name:
        raise SuiteError(file, "'notebook' is required (a path relative to the suite file)",
                         line=_line(entry), run=label, key="notebook")
    notebook = (path.parent / name).resolve()
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        raise SuiteError(file, f"notebook {name!r} does not exist ({notebook})",
                         line=_line(entry, "notebook"), run=label, key="notebook")
    return notebook


def _declared(notebook: Path, file: str, label: str) -> list[str]:
    try:
        return list(execute.parameters(notebook))
    except LlmosError as exc:
        raise SuiteError(file, str(exc), run=label, key="notebook") from None


def _seeds(entry: dict, declared: list[str], file: str, label: str) -> list[int | None]:
    seeds = entry.get("seeds")
    if seeds is None:
        return [None]
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds) or \
            len(set(seeds)) < len(seeds):
        raise SuiteError(file, "'seeds' must be a list of distinct integers",
                         line=_line(entry, "seeds"), run=label, key="seeds")
    if "seed" not in declared:
        raise SuiteError(file, "the notebook declares no 'seed' parameter to repeat over",
                         line=_line(entry, "seeds"), run=label, key="seeds")
    return list(seeds)


def _options(entry: dict, defaults: dict, file: str, label: str) -> dict[str, Any]:
    from ..constraints import COUNT, NATURAL, POSITIVE, check

    out = {}
    for key, shape in (("timeout", POSITIVE), ("retries", NATURAL), ("compute", POSITIVE)):
        try:
            out[key] = check(key, entry.get(key, defaults[key]), (shape,))
        except LlmosError as exc:
            raise SuiteError(file, str(exc), line=_line(entry, key), run=label,
                             key=key) from None
    try:
        out["memory"] = check("memory", parse_bytes(entry.get("memory", defaults["memory"]),
                                                    "memory"), (COUNT,))
    except LlmosError as exc:
        raise SuiteError(file, str(exc), line=_line(entry, "memory"), run=label,
                         key="memory") from None
    out["timeout"] = float(out["timeout"])
    return out


_RECORDED = re.compile(r"""record\(\s*["']([^"']+)["']""")


def recorded_names(notebook: Path) -> tuple[set[str], bool]:
    """The metric names a notebook records literally, and whether it also records names it
    computes (an f-string), which no static check can know."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return set(_RECORDED.findall(source)), bool(re.search(r"record\(\s*f[\"']", source))


def _gates(spec: Any, notebook: Path, file: str, label: str, entry: dict) -> tuple[Gate, ...]:
    if not isinstance(spec, dict):
        raise SuiteError(file, "'gate' must map metric names to {higher_is_better, atol, "
                         "rtol}", line=_line(entry, "gate"), run=label, key="gate")
    names, dynamic = recorded_names(notebook)
    gates = []
    for metric, rule in spec.items():
        line = _line(spec, metric)
        if metric not in names and not dynamic:
            raise SuiteError(file, f"gate on {metric!r}, which {notebook.name} never "
                             f"records{did_you_mean(str(metric), names)} (it records: "
                             f"{', '.join(sorted(names)) or 'nothing'})", line=line,
                             run=label, key=f"gate.{metric}")
        rule = rule or {}
        if not isinstance(rule, dict):
            raise SuiteError(file, "a gate is a mapping {higher_is_better, atol, rtol}",
                             line=line, run=label, key=f"gate.{metric}")
        _known(rule, GATE_KEYS, file, label, f"gate.{metric}.")
        direction = rule.get("higher_is_better", True)
        tol = {k: rule.get(k, 0.0) for k in ("atol", "rtol")}
        if not isinstance(direction, bool) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                for v in tol.values()):
            raise SuiteError(file, "higher_is_better is true/false; atol and rtol are "
                             "numbers >= 0", line=line, run=label, key=f"gate.{metric}")
        gates.append(Gate(str(metric), direction, float(tol["atol"]), float(tol["rtol"])))
    return tuple(gates)
