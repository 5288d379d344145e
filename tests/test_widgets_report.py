"""ReportView: colour-scaled per-class table, confusion heat maps, the difference of two."""

from __future__ import annotations

import pytest
from llmos_lab.widgets import ReportView

from llmos_lab.errors import ConfigError
from llmos_lab.metrics import ClassificationReport
from tests.test_widgets import report
from widgets._render import cell_style


def one_good_one_bad() -> ClassificationReport:
    """Class "good" always right, class "bad" always predicted as "good"."""
    return ClassificationReport.from_labels(["good"] * 6 + ["bad"] * 4, ["good"] * 10)


def test_table_has_a_colour_scale_per_metric():
    view = ReportView(one_good_one_bad())
    table = view.table.value
    assert cell_style(0.0, 0, 1, "RdYlGn") in table  # the bad class's recall and F1
    assert cell_style(1.0, 0, 1, "RdYlGn") in table  # the good class's recall
    assert "accuracy 0.6000" in table
    lines = view._repr_mimebundle_()["text/plain"].splitlines()
    assert lines[0] == "ReportView: A accuracy 0.6000, macro-F1 0.3750"
    assert "  bad: precision 0.000, recall 0.000, f1 0.000, support 4" in lines
    view.close()


def test_difference_is_other_minus_report_and_shown_signed():
    a, b = report(0, 0.6), report(1, 0.95)
    view = ReportView(a, b, names=("full", "lora"))
    diff = view.difference()
    for cls in a.labels:
        assert diff.loc[cls, "f1"] == pytest.approx(b.table.loc[cls, "f1"]
                                                    - a.table.loc[cls, "f1"])
    frame = view.table_frame()
    assert {"f1 full", "f1 lora", "Δ f1"} <= set(frame.columns)
    assert f"{diff.loc['pos', 'f1']:+.3f}" in view.table.value
    text = view._repr_mimebundle_()["text/plain"]
    assert f"macro-F1 {b.macro_f1 - a.macro_f1:+.4f}" in text
    assert "lora - full" in text
    fig = view._draw()
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert "full: confusion" in titles and "lora: confusion" in titles
    assert "per-class change" in titles
    view.close()


def test_reports_with_different_classes_line_up():
    a = ClassificationReport.from_labels(["x", "y"] * 5, ["x"] * 10)
    b = ClassificationReport.from_labels(["x", "z"] * 5, ["x", "z"] * 5)
    view = ReportView(a, b)
    diff = view.difference()
    assert list(diff.index[:3]) == ["x", "y", "z"]
    assert diff.loc["x", "f1"] == pytest.approx(1.0 - a.table.loc["x", "f1"])
    assert diff["f1"].isna().sum() == 2  # y only in A, z only in B: no difference to take
    assert view.png().startswith(b"\x89PNG")
    view.close()


def test_normalise_checkbox_redraws_counts():
    view = ReportView(report(0))
    rows = view.png()
    heat = view._draw().axes[0]
    assert heat.images[0].get_array().max() <= 1.0
    view.normalize.value = False
    assert view.png() != rows
    heat = view._draw().axes[0]
    assert heat.images[0].get_array().max() > 1.0  # counts
    view.close()


def test_many_classes_are_drawn_without_numbers_in_cells():
    tags = [f"t{i}" for i in range(25)]
    big = ClassificationReport.from_labels(tags * 2, tags[1:] + tags[:1] + tags)
    view = ReportView(big)
    heat = view._draw().axes[0]
    assert len(heat.texts) == 0 and len(heat.get_xticks()) == 25
    small = ReportView(report(0))
    assert len(small._draw().axes[0].texts) == 9  # 3 x 3 annotated cells
    view.close()
    small.close()


def test_bad_input_is_refused():
    with pytest.raises(TypeError, match="ClassificationReport"):
        ReportView({"accuracy": 1.0})
    with pytest.raises(ConfigError, match="one per report"):
        ReportView(report(0), report(1), names=("only",))
    view = ReportView(report(0))
    with pytest.raises(ConfigError, match="second report"):
        view.difference()
    view.close()
