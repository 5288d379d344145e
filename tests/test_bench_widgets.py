"""benchmarks/bench_widgets.py: one well-formed JSON line per view with real measurements
(the 100 ms target is reported by the benchmark, never asserted here)."""

from __future__ import annotations

import json

from benchmarks import bench_widgets


def test_quick_run_prints_one_line_per_view(capsys, tiny_model):
    assert bench_widgets.main(["--quick"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["view"] for line in lines] == list(bench_widgets.VIEWS)
    for line in lines:
        assert "error" not in line and line["quick"] is True
        assert line["median_ms"] > 0 and line["first_ms"] > 0 and line["png_bytes"] > 1000
        assert line["target_ms"] == bench_widgets.TARGET_MS
    static = {line["view"]: line["static"] for line in lines}
    assert static["ReportView"] and static["SchedulerView"]
    assert not static["SchedulerView (live)"] and not static["TrainingDashboard"]
