"""benchmarks/bench_pipelines.py: one well-formed JSON line per measurement (the targets are
reported by the benchmark, never asserted here; admission is behaviour, so it is)."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_pipelines


def test_quick_run_prints_its_lines(capsys):
    assert bench_pipelines.main(["--quick"]) == 0
    lines = {line["benchmark"]: line for line in
             map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(lines) == {"suite_wall", "overhead", "admission"}
    wall = lines["suite_wall"]
    assert wall["nightly_j2_s"] > 0 and wall["papermill_loop_s"] > 0 and wall["quick"]
    assert wall["speedup_vs_papermill_loop"] == pytest.approx(
        wall["papermill_loop_s"] / wall["nightly_j2_s"], rel=0.01)
    assert lines["admission"]["all_ok"] and 1 <= lines["admission"]["peak_concurrent"] <= 2
