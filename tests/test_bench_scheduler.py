"""benchmarks/bench_scheduler.py: well-formed JSON lines with real measurements (speed targets
live in the benchmark output, never in tests)."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_scheduler


def test_quick_run_prints_one_json_line_per_benchmark(capsys):
    assert bench_scheduler.main(["--quick"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {line["benchmark"]: line for line in lines}
    assert list(by_name) == ["allocate", "simulate", "overhead", "share"]
    alloc = by_name["allocate"]
    assert set(alloc["ms_per_policy"]) == {"drf", "max-min", "priority", "proportional"}
    assert all(ms > 0 for ms in alloc["ms_per_policy"].values())
    assert alloc["peer_ms"] > 0 and alloc["ratio"] > 0
    assert alloc["compute_grant_relative_difference"] < 0.05  # the peer agrees with us
    assert set(by_name["simulate"]["seconds_per_policy"]) >= {"fifo", "rr", "stride", "drf"}
    overhead = by_name["overhead"]
    assert overhead["plain_seconds"] > 0 and overhead["scheduler_seconds"] > 0
    share = by_name["share"]
    assert sum(share["measured_share"].values()) == pytest.approx(1.0, abs=1e-3)
    assert all(line["quick"] is True and "error" not in line for line in lines)


def test_naive_drf_peer_matches_the_allocator_on_a_textbook_case():
    import numpy as np

    got = bench_scheduler.naive_drf(np.array([18.0, 9.0, 1.0]),
                                    np.array([[12.0, 3.0, 0.0], [2.0, 9.0, 0.0]]),
                                    np.array([1.0, 1.0]), step=1e-3)
    np.testing.assert_allclose(got[:, 1], [3.0, 6.0], atol=0.02)
