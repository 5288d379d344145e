"""The results database, the gate's statistics and the report, without running notebooks."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

import llmos_lab as lab
from llmos_lab.errors import OutputError, ResultsError
from llmos_lab.pipelines import gate
from llmos_lab.pipelines.database import ResultsDB
from llmos_lab.pipelines.report import write_report
from llmos_lab.pipelines.suite import Gate


def fill(db, values: dict[str, list[float]], suite: str = "s") -> int:
    """One finished night whose runs (key "k", one per seed) recorded ``values``."""
    store = ResultsDB(db)
    night = store.start_night(suite, "/nowhere/suite.yaml")
    n = len(next(iter(values.values())))
    for seed in range(n):
        store.write_run({"night": night, "run_id": f"k seed={seed}", "key": "k",
                         "seed": seed, "status": "ok", "attempts": 1, "started": seed,
                         "ended": seed + 1, "seconds": 1.0, "params": {"seed": seed},
                         "cell_seconds": [0.1, 0.9]},
                        {m: v[seed] for m, v in values.items()} | {"note": "text"})
    store.finish_night(night, "passed", 0)
    return night


def test_runs_and_metrics_round_trip(tmp_path):
    db = tmp_path / "deep" / "r.db"  # the folder is created
    night = fill(db, {"acc": [0.5, 0.6]})
    table = lab.pipelines.results(db)
    assert len(table) == 4 and set(table["metric"]) == {"acc", "note"}
    acc = table[table["metric"] == "acc"].set_index("seed")["value"]
    assert acc.to_dict() == {0: 0.5, 1: 0.6}
    assert table.loc[table["metric"] == "note", "text"].iloc[0] == '"text"'
    store = ResultsDB(db)
    assert store.latest_night("s", finished=True) == night
    assert store.nights().iloc[0]["versions"].startswith("{")
    assert lab.pipelines.results(db, suite="other").empty


def test_a_file_that_is_not_sqlite_is_refused_and_untouched(tmp_path):
    path = tmp_path / "r.db"
    path.write_bytes(b"these are somebody's notes\n" * 10)
    before = path.read_bytes()
    with pytest.raises(ResultsError, match=r"not an SQLite database.*untouched"):
        ResultsDB(path)
    assert path.read_bytes() == before


def test_a_foreign_schema_is_refused_and_untouched(tmp_path):
    path = tmp_path / "r.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
        conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    before = path.read_bytes()
    with pytest.raises(ResultsError, match="holds other tables \\(invoices\\)"):
        ResultsDB(path)
    assert path.read_bytes() == before


def test_a_database_where_no_folder_can_be_made_is_an_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=r"folder of the results database .*file' is a file"):
        ResultsDB(blocker / "r.db")
    with pytest.raises(OutputError, match="cannot create the folder of the results database"):
        ResultsDB(blocker / "deeper" / "r.db")
    with pytest.raises(OutputError, match="is a folder"):
        ResultsDB(tmp_path)
    with pytest.raises(ResultsError, match="no results database"):
        lab.pipelines.results(tmp_path / "missing.db")


def test_baselines_freeze_a_night_by_name(tmp_path):
    db = tmp_path / "r.db"
    first = fill(db, {"acc": [0.5, 0.6]})
    fill(db, {"acc": [0.9, 0.9]})
    store = ResultsDB(db)
    assert store.save_baseline("frozen", "s", first) == first
    assert sorted(store.baseline("frozen", "s")["value"]) == [0.5, 0.6]
    with pytest.raises(ResultsError, match=r"no baseline 'other'.*frozen"):
        store.baseline("other", "s")


def test_bootstrap_interval_covers_the_true_difference():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 0.1, 30), rng.normal(0.5, 0.1, 30)
    low, high = gate.bootstrap_interval(a, b)
    assert low < 0.5 < high and high - low < 0.2


@pytest.mark.parametrize("now, then, rule, verdict", [
    ([0.50, 0.51, 0.49], [0.70, 0.71, 0.69], Gate("m", True, 0.01), "worse"),
    ([0.70, 0.72, 0.68], [0.70, 0.71, 0.69], Gate("m", True, 0.01), "ok"),
    ([0.30, 0.90, 0.50], [0.70, 0.71, 0.69], Gate("m", True, 0.01), "ok"),  # noise, no call
    ([0.90, 0.91, 0.92], [0.70, 0.71, 0.69], Gate("m", True, 0.01), "better"),
    ([2.0, 2.1, 1.9], [1.0, 1.1, 0.9], Gate("t", False, 0.0, 0.25), "worse"),
    ([1.1, 1.2, 1.0], [1.0, 1.1, 0.9], Gate("t", False, 0.0, 0.25), "ok"),  # within rtol
    ([0.5], [0.7], Gate("m", True, 0.01), "worse (1 run)"),
    ([0.695], [0.7], Gate("m", True, 0.01), "ok"),
])
def test_the_gate_needs_the_repeats_to_agree(now, then, rule, verdict):
    assert gate.judge(rule, np.array(now), np.array(then))["verdict"] == verdict


def test_compare_marks_missing_values_and_missing_baselines():
    current = pd.DataFrame({"key": ["a", "a"], "metric": ["m", "m"], "value": [1.0, 1.1]})
    base = pd.DataFrame({"key": ["a"], "metric": ["m"], "value": [1.0]})
    gates = {"a": (Gate("m", True, 0.1), Gate("absent")), "b": (Gate("m"),)}
    out = gate.compare(current, base, gates).set_index(["key", "metric"])["verdict"]
    assert out.to_dict() == {("a", "m"): "ok", ("a", "absent"): "missing",
                             ("b", "m"): "missing"}
    assert gate.compare(current, None, {"a": (Gate("m"),)})["verdict"].tolist() == \
        ["no baseline"]
    assert not gate.regressed(gate.compare(current, base, gates))


def test_a_report_over_an_empty_database_says_so(tmp_path):
    db = tmp_path / "r.db"
    ResultsDB(db)
    html, md = write_report(db, tmp_path / "report.html")
    assert "no nights yet" in html.read_text() and "No nights" in md.read_text()


def test_the_report_is_self_contained(tmp_path):
    db = tmp_path / "r.db"
    fill(db, {"acc": [0.5, 0.6]})
    fill(db, {"acc": [0.2, 0.25]})
    verdicts = gate.compare(ResultsDB(db).metrics(2), ResultsDB(db).metrics(1)
                            [["key", "metric", "value"]], {"k": (Gate("acc", True, 0.01),)})
    html, md = write_report(db, tmp_path / "out" / "report.html", night=2, verdicts=verdicts)
    text = html.read_text()
    assert "data:image/png;base64," in text and "<img src='http" not in text
    assert "#fbd5d5" in text and "Slowest cells" in text and "Peak memory" in text
    assert "| k | acc | worse (1 run) |" not in md.read_text()  # two repeats: an interval
    assert "worse" in md.read_text()


def test_runs_are_logged_to_mlflow_as_well(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from llmos_lab.pipelines.tracking import log_night

    db = tmp_path / "r.db"
    night = fill(db, {"acc": [0.5, 0.6]}, suite="nightly-demo")
    uri = (tmp_path / "mlruns").as_uri()
    assert log_night(uri, ResultsDB(db), night) == 2
    client = mlflow.MlflowClient(tracking_uri=uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading a file store, as logged
    experiment = client.get_experiment_by_name("nightly-demo")
    runs = client.search_runs([experiment.experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"k seed=0", "k seed=1"}
    assert by_name["k seed=1"].data.metrics["acc"] == 0.6
    assert by_name["k seed=0"].data.params == {"seed": "0"}
    assert by_name["k seed=0"].data.tags["llmos.status"] == "ok"
    assert by_name["k seed=0"].info.status == "FINISHED"


def test_writers_opening_a_new_database_at_once_all_see_the_whole_schema(tmp_path):
    """The schema is made in one write transaction: a second opener waits and then finds
    it whole (it once saw a half-made schema and took it for someone else's tables)."""
    import threading

    errors, nights = [], []
    for trial in range(30):
        db = tmp_path / f"r{trial}.db"

        def open_and_start(db=db):
            try:
                nights.append(ResultsDB(db).start_night("s", "x"))
            except Exception as exc:  # collected: the assertion below reports them
                errors.append(exc)

        threads = [threading.Thread(target=open_and_start) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors and len(nights) == 30 * 4
