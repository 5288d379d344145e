"""benchmarks/bench_serving.py: well-formed JSON lines with real measurements from real HTTP
servers (speed targets live in the benchmark's output, never in tests)."""

from __future__ import annotations

import json

from benchmarks import bench_serving


def test_quick_run_prints_one_json_line_per_benchmark(capsys):
    assert bench_serving.main(["--quick"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {line["benchmark"]: line for line in lines}
    assert list(by_name) == ["generate", "classify", "ttft_training", "decode_step"]
    assert all(line["quick"] is True and "error" not in line for line in lines)
    gen = by_name["generate"]
    for name in ("ours", "per_request", "static8"):
        assert gen[f"{name}_tokens_per_s"] > 0 and 0 < gen[f"{name}_p50_s"] <= gen[f"{name}_p99_s"]
    assert gen["greedy_agreement_with_per_request"] == 1.0  # same tokens, another server
    clf = by_name["classify"]
    assert clf["ours_requests_per_s"] > 0 and clf["per_request_requests_per_s"] > 0
    ttft = by_name["ttft_training"]
    assert all(ttft[f"ttft_{m}_median_s"] > 0 for m in ("idle", "priority", "stride"))
    step = by_name["decode_step"]
    assert step["ours_step_ms"] > 0 and step["flop_bound_ms"] > 0
    assert 0 < step["fraction_of_roofline"] <= 1.5
