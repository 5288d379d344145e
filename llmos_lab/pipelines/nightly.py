"""A night: every run of a suite, as processes of our own OS, into the results database.

Each run declares its memory (and compute); the project's own :class:`~llmos_lab.Allocator`
admits it against the budget (the machine's available memory unless told), so four 1 GiB
runs on a 2 GiB budget run two at a time instead of exhausting the machine, and ``jobs`` is
the compute capacity. A run whose kernel dies (a signal, an OOM kill) or that passes its time
limit is recorded with the reason, the cell and its first line, keeps its partial notebook,
and is retried up to ``retries`` times; a cell that raises fails at once (it would again).
Every finished run is written to the database as it finishes, so ``resume`` after the
``nightly`` process itself was killed reruns only what had not finished. With
``backend="ray"`` the runs are Ray tasks with the same resource requests.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError, NotebookExecutionError
from ..units import format_bytes, parse_bytes
from . import execute, gate
from .database import DEFAULT_DB, ResultsDB
from .suite import RunSpec, Suite, load_suite

EXIT_OK, EXIT_REGRESSION, EXIT_FAILED, EXIT_INVALID = 0, 1, 2, 3
BACKENDS = ("local", "ray")


@dataclass
class Night:
    """What a nightly run did: its id, every run's row, the gate's verdicts, the exit code."""

    night: int
    suite: str
    runs: pd.DataFrame
    verdicts: pd.DataFrame
    exit_code: int
    baseline: str | None
    peak_concurrent: int = 0
    reports: list[Path] = field(default_factory=list)

    @property
    def status(self) -> str:
        return {EXIT_OK: "passed", EXIT_REGRESSION: "regressed"}.get(self.exit_code, "failed")


def run_suite(suite: Suite | str | os.PathLike, db: str | os.PathLike = DEFAULT_DB, *,
              jobs: int | None = None, memory: int | str | None = None,
              backend: str = "local", baseline: str | None = "last", resume: bool = False,
              output_dir: str | os.PathLike | None = None, report: bool = True,
              mlflow: str | None = None, log=print) -> Night:
    """Run every run of ``suite``, write each to ``db``, gate against ``baseline`` ("last":
    the last passing night of this suite; a saved name; None: no gate), write the report and,
    with ``mlflow`` (a tracking URI), log the runs there too."""
    from ..constraints import COUNT, Options, check

    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    jobs = check("jobs", jobs if jobs is not None else (os.cpu_count() or 1), (COUNT,))
    backend = check("backend", backend, (Options(*BACKENDS),))
    budget = _budget(memory)
    store = ResultsDB(db)
    night, done = _night(store, suite, baseline, resume)
    out_dir = Path(output_dir or Path(store.path).parent / "nightly" / suite.name) / \
        f"night-{night:04d}"
    todo = [r for r in suite.runs if r.run_id not in done]
    log(f"night {night} of suite {suite.name!r}: {len(todo)} runs to do"
        f"{f' ({len(done)} already finished)' if done else ''}; {jobs} at a time within "
        f"{format_bytes(budget)}; results in {store.path}")
    env = _kernel_env(jobs)
    runner = _RayRunner(out_dir, env) if backend == "ray" else \
        _LocalRunner(out_dir, jobs, budget, env)
    for spec, row, records in runner.run(todo):
        row.update(night=night, key=spec.key, notebook=str(spec.notebook), seed=spec.seed,
                   params=spec.params)
        store.write_run(row, records)
        log(f"  {row['status']:<8} {spec.run_id}  {row['seconds'] or 0:.1f} s"
            f"{'  ' + row['reason'] if row.get('reason') else ''}")
    result = _finish(store, suite, night, baseline, runner.peak, report, log)
    if mlflow:
        from .tracking import log_night

        log(f"logged {log_night(mlflow, store, night)} runs to MLflow at {mlflow}")
    return result


def _kernel_env(jobs: int) -> dict[str, str]:
    """Each kernel gets OMP_NUM_THREADS = cores / jobs, so ``jobs`` runs share the cores
    instead of each starting a thread per core (oversubscribed, all of them slower). Set in
    the kernel's own environment at launch, never in this process's; a value the user set
    is kept."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}


def _budget(memory: int | str | None) -> int:
    if memory is not None:
        return parse_bytes(memory, "memory")
    import psutil

    return int(psutil.virtual_memory().available)


def _night(store: ResultsDB, suite: Suite, baseline: str | None,
           resume: bool) -> tuple[int, set[str]]:
    """A new night, or (``resume``) the latest unfinished one and the runs it finished."""
    if resume:
        latest = store.latest_night(suite.name)
        if latest is not None and pd.isna(store.nights(suite.name).set_index("night")
                                          .loc[latest, "finished"]):
            return latest, set(store.runs(latest)["run_id"])
    return store.start_night(suite.name, str(suite.path), baseline), set()


def concurrent(runs: pd.DataFrame) -> int:
    """The most runs that were executing at one moment, from their recorded start and end."""
    moments = sorted([(t, 1) for t in runs["started"]] + [(t, -1) for t in runs["ended"]])
    most = now = 0
    for _, step in moments:  # at equal times an end (-1) sorts before a start
        now += step
        most = max(most, now)
    return most


def _finish(store: ResultsDB, suite: Suite, night: int, baseline: str | None,
            peak: int | None, report: bool, log) -> Night:
    runs = store.runs(night)
    peak = peak if peak is not None else concurrent(runs)
    reference = gate.reference(store, suite.name, night, baseline)
    verdicts = gate.compare(store.metrics(night), reference, suite.gates())
    failed = bool((runs["status"] != "ok").any()) or len(runs) < len(suite.runs)
    code = EXIT_FAILED if failed else EXIT_REGRESSION if gate.regressed(verdicts) else EXIT_OK
    result = Night(night, suite.name, runs, verdicts, code, baseline, peak)
    store.finish_night(night, result.status, code)
    if report:
        from .report import write_report

        result.reports = write_report(store.path, Path(store.path).parent / "report.html",
                                      night=night, verdicts=verdicts)
    for row in verdicts.itertuples():
        if row.verdict != "ok":
            log(f"  gate: {row.key} {row.metric}: {row.verdict}")
    log(f"night {night}: {result.status} (exit {code})"
        + (f"; report {result.reports[0]}" if result.reports else ""))
    return result


def attempt(spec: RunSpec, out_dir: Path, env: dict[str, str] | None = None
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``spec`` until it succeeds, fails in a cell, or has used its retries."""
    attempts, started = 0, time.time()
    while True:
        attempts += 1
        t0 = time.time()
        try:
            result = execute.run(spec.notebook, spec.params, out_dir,
                                 output_name=spec.output_name, timeout=spec.timeout,
                                 deadline=spec.timeout, env=env)
        except NotebookExecutionError as exc:
            if exc.kind in ("dead", "timeout") and attempts <= spec.retries:
                continue
            return ({"run_id": spec.run_id, "status": {"error": "failed"}.get(exc.kind,
                                                                               exc.kind),
                     "kind": exc.kind, "reason": exc.cause, "cell": exc.cell,
                     "cell_source": exc.source, "attempts": attempts, "started": started,
                     "ended": time.time(), "seconds": time.time() - t0,
                     "output": exc.output}, {})
        return ({"run_id": spec.run_id, "status": "ok", "attempts": attempts,
                 "started": started, "ended": time.time(), "seconds": result.seconds,
                 "cell_seconds": result.cell_seconds, "peak_memory": result.peak_memory,
                 "output": str(result.output)}, result.records)


class _LocalRunner:
    """Threads in this process, each driving one papermill run; admission by the Allocator:
    a run starts when its memory and compute fit beside the runs already going."""

    def __init__(self, out_dir: Path, jobs: int, budget: int, env: dict[str, str]):
        from ..allocator import Allocator, Resources

        self.out_dir, self.jobs, self.budget, self.env, self.peak = out_dir, jobs, budget, env, 0
        self.allocator = Allocator(Resources(memory=budget, compute=float(jobs)),
                                   policy="drf")

    def run(self, specs: list[RunSpec]):
        from ..allocator import Demand, Resources

        queued: dict[str, RunSpec] = {}  # admitted or waiting, in suite order
        for spec in specs:
            if spec.memory > self.budget or spec.compute > self.jobs:
                yield spec, _refused(spec, self.budget, self.jobs), {}
                continue
            need = Resources(memory=spec.memory, compute=spec.compute)
            self.allocator.add(Demand(spec.run_id, need, need))
            queued[spec.run_id] = spec
        running: dict[Future, RunSpec] = {}
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="nightly") as pool:
            while queued or running:
                waiting = set(self.allocator.allocation_.waiting)
                for run_id in [r for r in queued if r not in waiting]:
                    spec = queued.pop(run_id)
                    running[pool.submit(attempt, spec, self.out_dir, self.env)] = spec
                self.peak = max(self.peak, len(running))
                if not running:  # nothing admitted: only a policy bug could get here
                    for spec in queued.values():
                        yield spec, _refused(spec, self.budget, self.jobs), {}
                    return
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    spec = running.pop(future)
                    self.allocator.remove(spec.run_id)
                    yield (spec, *future.result())


class _RayRunner:
    """Each run a Ray task asking for its memory and compute (``num_cpus``); Ray's own
    scheduler admits them against the cluster's resources (so the night's peak concurrency
    is read from the recorded times, not counted here)."""

    def __init__(self, out_dir: Path, env: dict[str, str]):
        self.out_dir, self.env, self.peak = out_dir, env, None

    def run(self, specs: list[RunSpec]):
        import ray

        if not ray.is_initialized():
            raise ConfigError("backend", "ray", "a running Ray (call ray.init() first, or "
                              "use backend='local')")
        remote = ray.remote(attempt)
        pending = {remote.options(num_cpus=s.compute, memory=s.memory).remote(
            s, self.out_dir, self.env): s for s in specs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ready[0])
            row, records = ray.get(ready[0])
            yield spec, row, records


def _refused(spec: RunSpec, budget: int, jobs: int) -> dict[str, Any]:
    now = time.time()
    return {"run_id": spec.run_id, "status": "failed", "kind": "refused",
            "reason": f"declares {format_bytes(spec.memory)} and compute {spec.compute:g}; "
                      f"the budget is {format_bytes(budget)} and {jobs} jobs, so it could "
                      f"never be admitted", "attempts": 0, "started": now, "ended": now,
            "seconds": 0.0}
