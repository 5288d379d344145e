"""ResultsView over a real results database (written by the pipelines' own writer)."""

from __future__ import annotations

import pytest
from llmos_lab.widgets import ResultsView

from llmos_lab.errors import ArgumentTypeError, ResultsError
from tests.pipelines.test_database import fill
from tests.test_widgets import PNG


def test_results_view_shows_a_metric_over_nights_and_a_nights_runs(tmp_path):
    db = tmp_path / "r.db"
    fill(db, {"acc": [0.5, 0.6], "loss": [1.0, 0.9]})
    fill(db, {"acc": [0.7, 0.8], "loss": [0.5, 0.4]})
    view = ResultsView(db)
    assert view.night.options == (1, 2) and view.night.value == 2
    assert view.metric.options == ("acc", "loss")
    assert view.png().startswith(PNG)
    runs = view.runs()
    assert list(runs.index) == ["k seed=0", "k seed=1"] and list(runs["acc"]) == [0.7, 0.8]
    assert "night 2: 2 runs, 0 not ok" in view.table.value
    drawn = view.redraws
    view.night.value = 1  # steering redraws and re-reads
    assert view.redraws > drawn and list(view.runs()["acc"]) == [0.5, 0.6]
    bundle = view._repr_mimebundle_()
    assert "ResultsView: night 1, 2 runs" in bundle["text/plain"]
    assert "image/png" in bundle or "text/html" in bundle
    view.close()


def test_results_view_refuses_what_is_not_a_database(tmp_path):
    with pytest.raises(ArgumentTypeError):
        ResultsView(None)
    with pytest.raises(ResultsError, match="no results database"):
        ResultsView(tmp_path / "none.db")
