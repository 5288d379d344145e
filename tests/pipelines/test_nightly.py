"""Nightly suites end to end: admission, faults, retries, resume, the gate, exit codes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import llmos_lab as lab
from llmos_lab import cli
from llmos_lab.pipelines import run_suite, write_notebook
from llmos_lab.pipelines.database import ResultsDB
from llmos_lab.pipelines.nightly import concurrent
from tests.test_widgets import wait_until

quiet = lambda *a, **k: None  # noqa: E731 - the suite's log line printer


def suite_file(folder: Path, runs: str, name: str = "tiny", defaults: str = "") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"suite: {name}\ndefaults: {{timeout: 120, retries: 1, memory: 100MiB"
                    f"{defaults}}}\nruns:\n{runs}")
    return path


@pytest.fixture
def folder(tmp_path):
    write_notebook(tmp_path / "score.ipynb", "x = 1\nseed = 0",
                   "import llmos_lab as lab\nlab.record('score', x + seed / 10)")
    return tmp_path


GATED = """\
  - notebook: score.ipynb
    grid: {x: [1, 2]}
    seeds: [0, 1]
    gate:
      score: {higher_is_better: true, atol: 0.05}
"""


def test_a_night_records_every_run_and_passes(folder):
    db = folder / "runs" / "results.db"
    night = run_suite(suite_file(folder, GATED), db, jobs=2, memory="1GiB", log=quiet)
    assert night.exit_code == 0 and night.status == "passed"
    runs = night.runs.set_index("run_id")
    assert set(runs.index) == {f"score x={x} seed={s}" for x in (1, 2) for s in (0, 1)}
    assert (runs["status"] == "ok").all() and (runs["attempts"] == 1).all()
    assert (runs["peak_memory"] > 10 * 2**20).all()  # a python kernel's RSS, sampled
    assert all(Path(p).is_file() for p in runs["output"])
    table = lab.pipelines.results(db)
    scores = table.set_index("run_id")["value"]
    assert scores["score x=2 seed=1"] == pytest.approx(2.1)
    assert set(table.columns) >= {"suite", "night", "git_commit", "params", "seed", "status",
                                  "attempts", "seconds", "peak_memory", "metric", "value"}
    assert list(night.verdicts["verdict"]) == ["no baseline"] * 2  # the first night
    assert [p.name for p in night.reports] == ["report.html", "report.md"]
    again = run_suite(suite_file(folder, GATED), db, jobs=2, memory="1GiB", log=quiet)
    assert again.night == night.night + 1 and list(again.verdicts["verdict"]) == ["ok"] * 2


def test_memory_admission_runs_two_at_a_time_on_a_budget_of_two(folder):
    runs = "".join(f"  - notebook: score.ipynb\n    name: r{i}\n    memory: 1GiB\n"
                   for i in range(4))
    night = run_suite(suite_file(folder, runs), folder / "r.db", jobs=4, memory="2GiB",
                      log=quiet)
    assert night.exit_code == 0 and len(night.runs) == 4
    assert night.peak_concurrent == 2
    assert concurrent(night.runs) <= 2  # from the recorded start and end times


def test_a_run_that_cannot_fit_is_refused_not_waited_for(folder):
    runs = "  - notebook: score.ipynb\n    memory: 4GiB\n"
    night = run_suite(suite_file(folder, runs), folder / "r.db", jobs=1, memory="1GiB",
                      log=quiet)
    row = night.runs.iloc[0]
    assert night.exit_code == 2 and row["status"] == "failed" and "never be admitted" in \
        row["reason"]


def test_a_kernel_that_dies_is_recorded_retried_and_the_suite_goes_on(folder):
    write_notebook(folder / "die.ipynb", "x = 1",
                   "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    runs = "  - notebook: die.ipynb\n    retries: 2\n  - notebook: score.ipynb\n"
    night = run_suite(suite_file(folder, runs), folder / "r.db", jobs=1, memory="1GiB",
                      log=quiet)
    assert night.exit_code == 2 and night.status == "failed"
    runs = night.runs.set_index("run_id")
    dead = runs.loc["die"]
    assert dead["status"] == "dead" and dead["attempts"] == 3
    assert "killed by SIGKILL" in dead["reason"] and dead["cell"] == 1
    assert dead["cell_source"] == "import os, signal"
    assert dead["output"].endswith(".failed.ipynb") and Path(dead["output"]).is_file()
    assert runs.loc["score", "status"] == "ok"  # the suite went on
    out = Path(runs.loc["score", "output"]).parent
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no stray partials


def test_a_run_past_its_time_limit_is_stopped_as_a_timeout(folder):
    write_notebook(folder / "slow.ipynb", "x = 1",
                   "import threading\nthreading.Event().wait(600)")
    runs = "  - notebook: slow.ipynb\n    timeout: 3\n    retries: 0\n"
    started = time.monotonic()
    night = run_suite(suite_file(folder, runs), folder / "r.db", jobs=1, memory="1GiB",
                      log=quiet)
    row = night.runs.iloc[0]
    assert row["status"] == "timeout" and row["cell"] == 1 and night.exit_code == 2
    assert time.monotonic() - started < 300  # the cell would wait 600 s: it was stopped


def test_a_cell_that_raises_fails_at_once(folder):
    write_notebook(folder / "bad.ipynb", "x = 1", "raise ValueError('broken on purpose')")
    night = run_suite(suite_file(folder, "  - notebook: bad.ipynb\n    retries: 3\n"),
                      folder / "r.db", jobs=1, memory="1GiB", log=quiet)
    row = night.runs.iloc[0]
    assert row["status"] == "failed" and row["attempts"] == 1
    assert "ValueError: broken on purpose" in row["reason"]


def test_a_baseline_higher_by_a_margin_is_a_regression_and_exit_1(folder):
    db = folder / "r.db"
    path = suite_file(folder, GATED)
    assert cli.main(["nightly", str(path), "--db", str(db), "-j", "2", "--memory",
                     "1GiB"]) == 0
    assert cli.main(["baseline", "save", "frozen", "--db", str(db)]) == 0
    with sqlite3.connect(db) as conn:  # a better past: every frozen score 0.2 higher
        conn.execute("UPDATE baselines SET value = value + 0.2")
    assert cli.main(["nightly", str(path), "--db", str(db), "-j", "2", "--memory", "1GiB",
                     "--baseline", "frozen"]) == 1
    store = ResultsDB(db)
    verdicts = pd.read_sql_query("SELECT * FROM nights", sqlite3.connect(db))
    assert list(verdicts["exit_code"]) == [0, 1] and store.latest_night(passed=True) == 1
    html = (folder / "report.html").read_text()
    assert "#fbd5d5" in html and "worse" in html  # the regression, in red
    assert "worse" in (folder / "report.md").read_text()
    # "last" compares with the last *passing* night, which is the first: no regression
    assert cli.main(["nightly", str(path), "--db", str(db), "-j", "2", "--memory",
                     "1GiB"]) == 0


def test_exit_3_for_an_invalid_suite_and_dry_run_lists_runs(folder, capsys):
    bad = suite_file(folder, "  - notebook: score.ipynb\n    grid: {y: [1]}\n")
    assert cli.main(["nightly", str(bad), "--db", str(folder / "r.db")]) == 3
    assert "key 'grid.y'" in capsys.readouterr().err
    assert not (folder / "r.db").exists()  # nothing ran, nothing written
    assert cli.main(["nightly", str(suite_file(folder, GATED)), "--dry-run"]) == 0
    assert "4 runs" in capsys.readouterr().out


def test_two_suites_writing_one_database_at_once_both_land(folder):
    db = folder / "shared.db"
    paths = [suite_file(folder, GATED, name=n) for n in ("left", "right")]
    nights = []
    threads = [threading.Thread(target=lambda p=p: nights.append(
        run_suite(p, db, jobs=1, memory="1GiB", log=quiet, report=False))) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(n.exit_code for n in nights) == [0, 0]
    table = lab.pipelines.results(db)
    assert table.groupby("suite")["run_id"].nunique().to_dict() == {"left": 4, "right": 4}


def test_resume_after_the_nightly_process_is_killed_reruns_only_unfinished(folder):
    flag = folder / "go"
    write_notebook(folder / "wait.ipynb", f"flag = {str(flag)!r}",
                   "import os, threading\nwhile not os.path.exists(flag):\n"
                   "    threading.Event().wait(0.1)")
    runs = "  - notebook: score.ipynb\n  - notebook: wait.ipynb\n"
    path, db = suite_file(folder, runs), folder / "r.db"
    command = [sys.executable, "-m", "llmos_lab", "nightly", str(path), "--db", str(db),
               "-j", "1", "--memory", "1GiB"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:  # wait for the first run to land, then kill
        assert wait_until(lambda: _finished_runs(db) or proc.poll() is not None, timeout=300)
        assert proc.poll() is None and _finished_runs(db) == 1
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    first = ResultsDB(db).runs(1).set_index("run_id").loc["score", "started"]
    flag.touch()
    assert cli.main([*command[3:], "--resume"]) == 0
    runs = ResultsDB(db).runs(1).set_index("run_id")
    assert set(runs.index) == {"score", "wait"} and (runs["status"] == "ok").all()
    assert runs.loc["score", "started"] == first  # finished before the kill: not rerun
    assert len(ResultsDB(db).nights()) == 1


def _finished_runs(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not there yet
        return 0


def test_ray_backend_runs_the_same_suite_as_tasks(folder):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True,
             log_to_driver=False)
    try:
        night = run_suite(suite_file(folder, GATED), folder / "ray.db", backend="ray",
                          memory="1GiB", log=quiet, report=False)
    finally:
        ray.shutdown()
    assert night.exit_code == 0 and len(night.runs) == 4
    assert (night.runs["status"] == "ok").all()


def test_parallel_runs_never_move_this_processs_working_directory(folder, monkeypatch):
    """Each kernel starts in its notebook's folder with its share of the cores as threads;
    this process's working directory and environment stay as they were (a process-wide
    chdir or environment change from several threads would leak between runs)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    write_notebook(folder / "cwd.ipynb", "seed = 0",
                   "import os\nimport llmos_lab as lab\nlab.record('cwd', os.getcwd())\n"
                   "lab.record('threads', os.environ.get('OMP_NUM_THREADS'))")
    runs = "  - notebook: cwd.ipynb\n    seeds: [0, 1, 2, 3]\n"
    before = os.getcwd()
    night = run_suite(suite_file(folder, runs), folder / "r.db", jobs=2, memory="1GiB",
                      log=quiet, report=False)
    assert os.getcwd() == before and night.exit_code == 0
    assert "OMP_NUM_THREADS" not in os.environ
    recorded = lab.pipelines.results(folder / "r.db")
    assert set(recorded.loc[recorded["metric"] == "cwd", "text"]) == {f'"{folder}"'}
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert set(recorded.loc[recorded["metric"] == "threads", "text"]) == {f'"{threads}"'}
