"""benchmarks/bench_learning.py through `llmos-lab bench learning --quick`: one well-formed line
per method with real measurements. Accuracies and speeds are never asserted (they live in the
benchmark's own lines); shapes, counts and consistency are."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

NAMES = ["chinese", "continual", "distill", "ensemble", "multitask", "prompting", "pretrain",
         "prune"]


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> dict[str, dict]:
    proc = subprocess.run([sys.executable, "-m", "llmos_lab", "bench", "learning", "--quick",
                           "--threads", "1"], cwd=tmp_path_factory.mktemp("bench"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    return {line["benchmark"]: line for line in out}


def test_every_method_prints_one_line_with_its_figures(lines):
    assert sorted(lines) == sorted(NAMES)
    for line in lines.values():
        assert "error" not in line and line["quick"] is True
        assert {"ratio", "ratio_of", "threads", "torch", "seconds"} <= set(line)
        for key, value in line.items():
            if key.endswith("accuracy"):
                assert 0 <= value <= 1, key
            if key.endswith("texts_per_s"):
                assert value > 0, key


def test_smaller_models_are_smaller(lines):
    distill, prune = lines["distill"], lines["prune"]
    assert distill["student_distilled_parameters"] < distill["teacher_parameters"]
    assert distill["student_distilled_bytes"] < distill["teacher_bytes"]
    assert prune["structured_0.5_parameters"] < prune["structured_0.3_parameters"] < \
        prune["unpruned_parameters"]
    assert prune["magnitude_0.5_parameters"] == prune["unpruned_parameters"]
    assert prune["magnitude_0.5_sparsity"] == pytest.approx(0.5, abs=0.01)


def test_method_specific_figures_add_up(lines):
    multi = lines["multitask"]
    assert multi["multi_steps_sentiment"] + multi["multi_steps_ner"] == multi["steps"]
    continual = lines["continual"]
    for replay in ("0.0", "0.25"):
        assert continual[f"replay_{replay}_forgetting"] == pytest.approx(
            continual["old_before"] - continual[f"replay_{replay}_old_after"], abs=1e-3)
    chinese = lines["chinese"]
    assert chinese["full_extend_0_added"] == 0 < chinese["full_extend_3000_added"] <= 3000
    assert 0 < chinese["unknown_char_share"] <= 1
    ensemble = lines["ensemble"]
    assert ensemble["adapter_bytes"] < ensemble["base_bytes"]
