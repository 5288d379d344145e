"""Nightly suites against the ways people run notebooks without us, one JSON line each.

    python -m benchmarks.bench_pipelines            # 8 runs per contender
    python -m benchmarks.bench_pipelines --quick    # 2 runs (the tests)
    llmos-lab bench pipelines

``suite_wall``: the same N runs of a small notebook (it imports pandas and records a value)
three ways, side by side in one process tree: ``llmos-lab nightly -j 2`` (admission, the
results database, the report), a Python loop of ``papermill.execute_notebook`` calls, and
``llmos-lab run`` once per run. Target: nightly >= 1.6x the papermill loop on 2 cores.
``overhead``: ``nightly -j 1`` against the papermill loop, per run: what our bookkeeping costs
(target <= 5%). ``admission``: 4 runs declaring 1 GiB on a 2 GiB budget with -j 4: the most
that ran at once, from the recorded start and end times (target <= 2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmos_lab.pipelines import ResultsDB, write_notebook
from llmos_lab.pipelines.nightly import concurrent

PARAMS = "x = 1\nseed = 0"
BODY = ("import pandas as pd\nimport llmos_lab as lab\n"
        "frame = pd.DataFrame({'v': range(1000)})\n"
        "lab.record('score', float(frame['v'].mean()) + x + seed)")


def _notebook(folder: Path) -> Path:
    return write_notebook(folder / "small.ipynb", PARAMS, BODY)


def _suite(folder: Path, n: int, memory: str = "256MiB", name: str = "bench") -> Path:
    runs = "".join(f"  - notebook: small.ipynb\n    name: run{i}\n    params: {{seed: {i}}}\n"
                   f"    memory: {memory}\n" for i in range(n))
    path = folder / f"{name}.yaml"
    path.write_text(f"suite: {name}\ndefaults: {{timeout: 300, retries: 0}}\nruns:\n{runs}")
    return path


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _nightly(folder: Path, n: int, jobs: int, memory: str = "8GiB", per_run: str = "256MiB",
             name: str = "bench") -> tuple[float, Path]:
    db = folder / f"{name}-{jobs}-{time.monotonic_ns()}.db"
    seconds = _timed([sys.executable, "-m", "llmos_lab", "nightly",
                      str(_suite(folder, n, per_run, name)), "--db", str(db), "-j", str(jobs),
                      "--memory", memory, "--baseline", "none"])
    return seconds, db


def _papermill_loop(folder: Path, notebook: Path, n: int) -> float:
    script = ("import papermill, sys\n"
              f"for i in range({n}):\n"
              f"    papermill.execute_notebook({str(notebook)!r}, "
              f"{str(folder / 'pm')!r} + f'/out{{i}}.ipynb', parameters={{'seed': i}}, "
              "progress_bar=False, cwd=" + repr(str(folder)) + ")\n")
    (folder / "pm").mkdir(exist_ok=True)
    return _timed([sys.executable, "-c", script])


def _run_loop(folder: Path, notebook: Path, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        subprocess.run([sys.executable, "-m", "llmos_lab", "run", str(notebook), "-p", "seed",
                        str(i), "-o", str(folder / "one")], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def bench_suite_wall(n: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        notebook = _notebook(folder)
        _papermill_loop(folder, notebook, 1)  # warm the page cache and the kernel spec
        loop = _papermill_loop(folder, notebook, n)
        nightly2, _ = _nightly(folder, n, 2)
        nightly1, _ = _nightly(folder, n, 1)
        one_by_one = _run_loop(folder, notebook, n)
    return [
        {"benchmark": "suite_wall", "runs": n, "cpus": os.cpu_count(),
         "nightly_j2_s": round(nightly2, 2), "papermill_loop_s": round(loop, 2),
         "llmos_lab_run_loop_s": round(one_by_one, 2),
         "speedup_vs_papermill_loop": round(loop / nightly2, 3),
         "speedup_vs_run_loop": round(one_by_one / nightly2, 3), "target": 1.6},
        {"benchmark": "overhead", "runs": n, "nightly_j1_s": round(nightly1, 2),
         "papermill_loop_s": round(loop, 2),
         "overhead_per_run_s": round((nightly1 - loop) / n, 3),
         "overhead_fraction": round((nightly1 - loop) / loop, 4), "target": 0.05},
    ]


def bench_admission() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _notebook(folder)
        seconds, db = _nightly(folder, 4, 4, memory="2GiB", per_run="1GiB", name="admit")
        runs = ResultsDB(db).runs(1)
    return [{"benchmark": "admission", "runs": 4, "declared": "1GiB each", "budget": "2GiB",
             "jobs": 4, "peak_concurrent": concurrent(runs), "target": 2,
             "seconds": round(seconds, 2), "all_ok": bool((runs["status"] == "ok").all())}]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 runs per contender")
    args = parser.parse_args(argv)
    n = 2 if args.quick else 8
    failed = 0
    for name, fn in (("suite_wall", lambda: bench_suite_wall(n)),
                     ("admission", bench_admission)):
        try:
            lines = fn()
        except Exception as exc:  # one broken benchmark must not hide the others
            traceback.print_exc()
            lines, failed = [{"benchmark": name, "error": f"{type(exc).__name__}: {exc}"}], 1
        for line in lines:
            print(json.dumps({**line, "quick": args.quick}), flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
